"""Tool calls and results, and the requests of the MCP activities. No I/O."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from durable_agents.contracts._base import SharedText, _Strict
from durable_agents.contracts.agent import McpServer


class ToolCall(_Strict):
    id: str
    name: str
    input: dict[str, Any]


class ToolResult(_Strict):
    call_id: str
    name: str
    output: SharedText
    is_error: bool = False


class ClientToolResult(_Strict):
    """What a client posts for a custom tool call: the output text the model sees."""

    content: str
    is_error: bool = False


class McpTool(_Strict):
    """A tool discovered on an MCP server, as the model sees it."""

    name: str  # <server>__<tool>
    server: str
    tool: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class McpDiscoverRequest(_Strict):
    servers: list[McpServer]
    refresh: bool = False


class McpDiscovery(_Strict):
    tools: list[McpTool] = Field(default_factory=list)
    failures: dict[str, str] = Field(default_factory=dict, description="server -> why its tools are missing")


class McpCallRequest(_Strict):
    server: McpServer
    tool: str
    input: dict[str, Any]
    call_id: str
    output_cap: int


class SecretCheck(_Strict):
    names: list[str]
    uses: dict[str, str] = Field(default_factory=dict, description="secret -> what needs it (for the message)")


class LearnedSkillsRequest(_Strict):
    """The skills an agent learned, and which of them suit this task."""

    agent: str
    task: str = ""


class SaveSkillRequest(_Strict):
    agent: str
    name: str
    description: str
    triggers: list[str]
    instructions: str
    files: dict[str, str] = Field(default_factory=dict)
    session_id: str


class SkillResults(_Strict):
    """How a session that loaded these learned skills ended its outcome."""

    agent: str
    names: list[str]
    succeeded: bool
    session_id: str
