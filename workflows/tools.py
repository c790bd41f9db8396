"""Running the tool calls of a model turn: each call is routed once (`workflows.routing.route`),
refused with an error result, asked about (always_ask), and handed to the capability that runs
it; its result is recorded. Loading a skill lives here too (it may write files in the sandbox)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from durable_agents.contracts import SAVE_LEARNED_SKILL, SaveSkillRequest, ToolCall, ToolResult
from durable_agents.workflows.core import Session
from durable_agents.workflows.failures import failure_message
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
        elif where.kind == "save_skill":
            async with self.sandbox.lock:  # it reads the files it keeps from the sandbox
                result = await self._save_skill(call)
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
        if skill.learned and name not in self.session.state.learned_loaded:
            self.session.state.learned_loaded.append(name)  # its outcome counts for the skill
        return ToolResult(call_id=call.id, name=call.name, output=skill.body + note)

    async def _save_skill(self, call: ToolCall) -> ToolResult:
        """The procedure into the agent's skill registry, with the workspace files it names."""
        session = self.session
        files: dict[str, str] = {}
        for i, path in enumerate(call.input.get("files") or []):
            read = await self.sandbox.run(ToolCall(id=f"{call.id}-file-{i}", name="read_file", input={"path": path}))
            if read.is_error:
                return tool_error(call, f"Could not read {path} to keep with the skill: {read.output}")
            files[str(path).removeprefix("/workspace/").lstrip("/")] = read.output
        request = SaveSkillRequest(
            agent=session.agent.name,
            name=str(call.input["name"]),
            description=str(call.input["description"]),
            triggers=[str(t) for t in call.input.get("triggers") or []],
            instructions=str(call.input["instructions"]),
            files=files,
            session_id=session.id,
        )
        try:
            version: int = await workflow.execute_activity(
                SAVE_LEARNED_SKILL,
                request,
                result_type=int,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
                summary=f"save skill: {request.name}",
            )
        except ActivityError as e:
            session.raise_if_interrupted()
            return tool_error(call, f"The skill could not be saved: {failure_message(e)}")
        kept = f", with {', '.join(sorted(files))}" if files else ""
        text = f"Saved skill {request.name!r} (version {version}{kept}); later sessions of {request.agent} can load it."
        return ToolResult(call_id=call.id, name=call.name, output=text)
