"""Running the tool calls of a model turn: each call is routed once (`workflows.routing.route`),
refused with an error result, asked about (always_ask), and handed to the capability that runs
it; its result is recorded. Loading a skill lives here too (it may write files in the sandbox)."""

from __future__ import annotations

from durable_agents.contracts import ToolCall, ToolResult
from durable_agents.workflows.core import Session
from durable_agents.workflows.harness import tool_error, tool_summary
from durable_agents.workflows.mcp import Mcp
from durable_agents.workflows.routing import route
from durable_agents.workflows.sandbox import Sandbox
from durable_agents.workflows.subagents import Subagents
from durable_agents.workflows.waiting import Waiting


class Tools:
    def __init__(self, session: Session, sandbox: Sandbox, mcp: Mcp, subagents: Subagents, waiting: Waiting) -> None:
        self.session = session
        self.sandbox = sandbox
        self.mcp = mcp
        self.subagents = subagents
        self.waiting = waiting
        # This turn's calls and the results they have so far (an interrupt answers the rest).
        self.calls: list[ToolCall] = []
        self.results: dict[str, ToolResult] = {}

    async def run(self, call: ToolCall, malformed: str | None = None) -> ToolResult:
        session = self.session
        where = route(call, session.agent, session.tools, session.mcp_tools, malformed)
        problem = where.problem or session.loop_guard.check(call)
        if problem is None and where.policy == "always_ask":
            denial = await self.waiting.approval(call)
            if denial is not None:
                problem = f"The user denied this {call.name} call: {denial}"
        if problem is not None:
            result = tool_error(call, problem)
        elif where.kind == "client":
            result = await self.waiting.client_result(call)
        elif where.kind == "mcp":
            result = await self.mcp.call(call)
        elif where.kind == "spawn":
            result = await self.subagents.spawn(call)
        else:  # skill, sandbox: in the sandbox, one call at a time
            async with self.sandbox.lock:
                result = await (self._load_skill(call) if where.kind == "skill" else self.sandbox.run(call))
        self.results[call.id] = result
        session.record("tool_result", tool_result=result, client_id=self.waiting.client_ids.pop(call.id, None))
        session.details(tool_summary(call))
        return result

    async def _load_skill(self, call: ToolCall) -> ToolResult:
        """A skill's instructions; with copy_files, its files written to /workspace/skills/<name>/."""
        skills = self.session.agent.skills
        name = str(call.input["name"])
        skill = next((s for s in skills if s.name == name), None)
        if skill is None:
            return tool_error(call, f"Unknown skill {name!r} ({', '.join(s.name for s in skills)}).")
        note = ""
        if call.input.get("copy_files") and skill.files:
            for i, (rel, content) in enumerate(sorted(skill.files.items())):
                write = ToolCall(
                    id=f"{call.id}-file-{i}",
                    name="write_file",
                    input={"path": f"/workspace/skills/{name}/{rel}", "content": content},
                )
                written = await self.sandbox.run(write)
                if written.is_error:
                    return tool_error(call, written.output)
            copied = ", ".join(sorted(skill.files))
            note = f"\n\n[{len(skill.files)} file(s) copied to /workspace/skills/{name}/: {copied}]"
        self.session.record("skill_loaded", text=name)
        return ToolResult(call_id=call.id, name=call.name, output=skill.body + note)
