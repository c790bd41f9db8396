"""Subagents: a `spawn_agent` call runs the subagent as a child SessionWorkflow (one-shot, in its
own context window, optionally in the parent's sandbox); its final answer is the tool result and
its spending counts against the parent's budget. Limits (depth, how many, how many at once) are
checked first by `workflows.harness.spawn_refusal`."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ActivityError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

from durable_agents.contracts import (
    SA_AGENT_NAME,
    SA_AGENT_VERSION,
    SA_PARENT_SESSION,
    SA_SESSION_STATUS,
    SESSION_WORKFLOW,
    AgentSpec,
    SessionInput,
    SessionResult,
    ToolCall,
    ToolResult,
    agent_version,
    attribute_pairs,
)
from durable_agents.workflows.core import Session
from durable_agents.workflows.failures import failure_message
from durable_agents.workflows.harness import session_summary, spawn_refusal, tool_error
from durable_agents.workflows.sandbox import Sandbox


class Subagents:
    def __init__(self, session: Session, sandbox: Sandbox) -> None:
        self.session = session
        self.sandbox = sandbox
        self.running = 0

    async def spawn(self, call: ToolCall) -> ToolResult:
        """Run a subagent as a child SessionWorkflow; its final answer is the tool result."""
        session, state = self.session, self.session.state
        name, task = str(call.input["agent"]), str(call.input["task"])
        sub = session.agent.subagent(name)
        limits = session.agent.limits
        refusal = spawn_refusal(sub, name, session.input.depth, limits, state.children_started, self.running)
        if refusal is not None or sub is None or sub.spec is None:
            return tool_error(call, refusal or "")
        share = call.input.get("share_sandbox")
        shared = None
        if sub.share_sandbox if share is None else share:
            try:
                async with self.sandbox.lock:
                    shared = await self.sandbox.ensure()
            except ActivityError as e:
                return tool_error(call, f"No sandbox to share could be provisioned: {failure_message(e)}")
        state.children_started += 1
        self.running += 1
        child_id = f"{session.id}/sub-{state.children_started}"
        session.record("subagent_started", child=child_id, text=f"{name}: {task}", sandbox=shared)
        try:
            result: SessionResult = await workflow.execute_child_workflow(
                SESSION_WORKFLOW,
                SessionInput(
                    agent=sub.spec,
                    task=task,
                    one_shot=True,
                    search_attributes=session.search_attributes,
                    parent_session=session.id,
                    depth=session.input.depth + 1,
                    shared_sandbox=shared,
                    # Sharing the sandbox, it shares its memory mounts (and memory_search over them);
                    # what it writes there is saved with its own calls, as its own.
                    memory=session.input.memory if shared is not None else [],
                ),
                id=child_id,
                task_queue=workflow.info().task_queue,
                result_type=SessionResult,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                static_summary=session_summary(sub.spec.name, task),
                search_attributes=self._attributes(sub.spec),
            )
        except ChildWorkflowError as e:
            session.raise_if_interrupted()
            reason = failure_message(e.cause) if e.cause else str(e)
            session.record("subagent_finished", child=child_id, status="failed", text=reason)
            return tool_error(call, f"Subagent {child_id} ({name}) failed: {reason}")
        finally:
            self.running -= 1
            if shared is not None:  # it worked in this session's sandbox: what it changed is unsaved
                state.sandbox.unsaved = True
        session.spend(result.usage, result.cost_usd)
        session.record(
            "subagent_finished",
            child=child_id,
            status=result.status,
            usage=result.usage,
            text=result.answer if result.status == "done" else result.error,
        )
        if result.status != "done":
            return tool_error(call, f"Subagent {child_id} ({name}) failed: {result.error}")
        return ToolResult(
            call_id=call.id, name=call.name, output=f"Subagent {child_id} ({name}) answered:\n{result.answer or ''}"
        )

    def _attributes(self, agent: AgentSpec) -> TypedSearchAttributes | None:
        setting = self.session.search_attributes
        if not setting:
            return None
        return attribute_pairs(
            setting,
            {
                SA_AGENT_NAME: agent.name,
                SA_SESSION_STATUS: "running",
                SA_AGENT_VERSION: agent_version(agent),
                SA_PARENT_SESSION: self.session.id,
            },
        )
