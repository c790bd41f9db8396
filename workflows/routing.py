"""Routing a tool call, decided once and purely: which capability handles it and under which
policy, or why it may not run (an error result the model sees instead). No I/O, no Temporal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from durable_agents.contracts import LOAD_SKILL, SAVE_SKILL, SPAWN_AGENT, AgentSpec, McpTool, ToolCall, ToolPolicy
from durable_agents.workflows.harness import check_tool_call, is_sandbox_tool, web_fetch_refusal

ToolKind = Literal["refused", "client", "mcp", "spawn", "skill", "save_skill", "sandbox"]


@dataclass(frozen=True)
class Route:
    kind: ToolKind
    policy: ToolPolicy = "always_allow"
    problem: str | None = None  # kind "refused": the error result the model gets instead


def route(
    call: ToolCall, agent: AgentSpec, tools: list[str], mcp_tools: Mapping[str, McpTool], malformed: str | None = None
) -> Route:
    """Where `call` goes: a malformed or unknown call, or one whose input fails its schema, is refused,
    as is a web_fetch to a host the sandbox may not reach. The others go to the client (custom tools),
    an MCP server, a subagent, the skill loader or the sandbox, each under the agent's policy."""
    problem = malformed or check_tool_call(call, tools, [*agent.custom_tools, *mcp_tools.values()])
    if problem is None and call.name == "web_fetch":
        problem = web_fetch_refusal(str(call.input["url"]), agent.sandbox)
    if problem is not None:
        return Route("refused", problem=problem)
    kind: ToolKind
    if agent.custom_tool(call.name) is not None:
        kind = "client"
    elif call.name in mcp_tools:
        kind = "mcp"
    elif call.name == SPAWN_AGENT:
        kind = "spawn"
    elif call.name == LOAD_SKILL:
        kind = "skill"
    elif call.name == SAVE_SKILL:
        kind = "save_skill"
    elif is_sandbox_tool(call.name):
        kind = "sandbox"
    else:  # pragma: no cover - check_tool_call admits no other tool
        return Route("refused", problem=f"Tool {call.name!r} has no handler.")
    return Route(kind, policy=agent.policy(call.name))
