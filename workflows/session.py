"""SessionWorkflow: the harness loop. Its history is the session's durable log.

The loop of DESIGN.md: wait for a user message; build the model's context from the session's
events; call the model; route each tool call (sandbox, MCP, subagent, client, skill; asking
first where the policy says so); record the results; repeat until the model ends its turn;
idle. Each capability lives in a module named after it, with the activity options it needs;
the decisions are pure functions (`workflows.harness`, `workflows.context`, `workflows.routing`).
This module wires them together and holds the handlers that clients call.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agents.contracts import (
        APPROVE,
        CONTEXT_TOO_LONG,
        DENY,
        END_SESSION,
        GET_EVENTS,
        GET_MODEL_CONTEXT,
        GET_STATE,
        INTERRUPT,
        REFRESH_TOOLS,
        SEND_MESSAGE,
        SESSION_WORKFLOW,
        SET_BUDGET,
        TOOL_RESULT,
        ModelContext,
        Outcome,
        OutcomeState,
        SessionCarry,
        SessionEvent,
        SessionInput,
        SessionResult,
        SessionState,
        SessionStatus,
        UserInput,
        unresolved_agent,
    )
    from durable_agents.workflows.compaction import Compaction
    from durable_agents.workflows.continuation import continue_as_new, should_continue
    from durable_agents.workflows.core import Session
    from durable_agents.workflows.episodes import index_episodes
    from durable_agents.workflows.failures import error_type, failure_message
    from durable_agents.workflows.harness import parse_tool_uses, text_of, tool_error
    from durable_agents.workflows.mcp import Mcp
    from durable_agents.workflows.model_calls import ModelCalls
    from durable_agents.workflows.outcomes import Outcomes
    from durable_agents.workflows.sandbox import Sandbox
    from durable_agents.workflows.start import begin
    from durable_agents.workflows.subagents import Subagents
    from durable_agents.workflows.tools import Tools
    from durable_agents.workflows.waiting import Waiting

INTERRUPTED = "Interrupted by the user before this call finished."


# A session input that does not validate (a plain client's JSON) fails the workflow with the
# reason, instead of failing its first workflow task over and over.
@workflow.defn(name=SESSION_WORKFLOW, failure_exception_types=[ValidationError])
class SessionWorkflow:
    @workflow.init
    def __init__(self, inp: SessionInput) -> None:
        first = [UserInput(text=inp.task, outcome=inp.outcome)] if inp.task else []
        state = inp.carry or SessionCarry(pending=first)
        if inp.carry is None and inp.shared_sandbox is not None:
            state.sandbox.handle, state.sandbox.owns = inp.shared_sandbox, False  # the parent's sandbox
        # An agent named by agent_ref is resolved at the start; until then a placeholder of that name.
        self.session = Session(inp, state, inp.agent or unresolved_agent(inp.agent_ref or "?"))
        session = self.session
        self.model = ModelCalls(session)
        self.compaction = Compaction(session, self.model)
        self.sandbox = Sandbox(session)
        self.mcp = Mcp(session)
        self.waiting = Waiting(session)
        self.subagents = Subagents(session, self.sandbox)
        self.tools = Tools(session, self.sandbox, self.mcp, self.subagents, self.waiting)
        self.outcomes = Outcomes(session, self.sandbox)
        self.continuing = False

    @workflow.run
    async def run(self, inp: SessionInput) -> SessionResult:
        session, state = self.session, self.session.state
        await begin(session, self.sandbox, self.mcp)
        try:
            while not session.stop_reason:  # set at the start when the session cannot run (unknown secret)
                if should_continue(session):
                    self.continuing = True
                    break
                if not state.resume and not await self._next_message():
                    break
                state.resume = False
                await self._answer()
                if self.continuing:  # in the middle of the answer: the next run goes on with it
                    break
                if inp.one_shot or session.stop_reason:
                    break
                await self.sandbox.snapshot_when_idle()
                await index_episodes(session)
                session.set_status("idle")
                session.details()
        finally:
            # The next run keeps the sandbox. A run that the worker evicted from its cache is closed
            # outside its event loop: it does nothing then (its replay rebuilds it).
            if not self.continuing and workflow.in_workflow():
                await self.sandbox.destroy()
                await index_episodes(session)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.continuing:
            continue_as_new(session)
        final: SessionStatus = "failed" if (inp.one_shot and state.last_error) or session.stop_reason else "done"
        session.set_status(final)
        return SessionResult(
            status=final,
            answer=state.last_answer,
            turns=state.turns,
            usage=state.usage,
            error=session.stop_reason or state.last_error,
            cost_usd=state.cost_usd,
        )

    async def _next_message(self) -> bool:
        """Idle until a user message (queued ones are taken together), the end, or the idle
        timeout; a refresh of the MCP tools is done while idle. False: the session ends."""
        session, state = self.session, self.session.state
        while True:
            try:
                await workflow.wait_condition(
                    lambda: bool(state.pending) or session.ending or self.mcp.refresh_requested,
                    timeout=timedelta(seconds=session.agent.limits.idle_timeout_s),
                    timeout_summary="idle: waiting for a user message",
                )
            except TimeoutError:  # the idle timeout
                return False
            if self.mcp.refresh_requested and not session.ending:
                await self.mcp.refresh()
                if should_continue(session):
                    self.continuing = True
                    return False
                continue
            if session.ending or not state.pending:
                return False
            # One event per message (each keeps its client's id); the model reads them as one.
            taken, state.pending = state.pending, []
            for message in taken:
                if message.outcome is None:
                    session.record("user_message", text=message.text, message_id=message.id)
                    continue
                defined = session.record("outcome_defined", outcome=message.outcome, message_id=message.id)
                self.outcomes.define(OutcomeState(outcome=message.outcome, defined_at=defined.offset))
            session.set_status("running")
            session.context.add_user_text("\n\n".join(m.text for m in taken), at=session.next_offset - 1)
            state.response_turns = 0
            return True

    # --- the answer: model and tools until the model ends its turn -----------------------------

    async def _answer(self) -> None:
        """The answer to the messages taken up, cut short by an interrupt."""
        session = self.session
        session.interrupt_requested = False
        session.turn = asyncio.create_task(self._respond())
        try:
            await session.turn
        except asyncio.CancelledError:
            if not session.interrupt_requested:
                raise  # the session itself is being cancelled
            # Every tool_use needs a tool_result, or the next request is invalid.
            missing = [c for c in self.tools.calls if c.id not in self.tools.results]
            if missing:
                cut = [tool_error(c, INTERRUPTED) for c in missing]
                for result in cut:
                    session.record("tool_result", tool_result=result)
                session.context.add_tool_results(cut, at=session.next_offset - 1)
            session.state.last_error = None
            text = f"interrupted by the user; {len(missing)} tool call(s) cut short"
            session.record("interrupted", text=text, client_id=session.interrupt_client_id)
            self.outcomes.interrupted()
        finally:
            session.turn = None
            self.tools.calls, self.tools.results = [], {}

    async def _respond(self) -> None:
        """Model and tools until the model ends its turn (or the turn budget runs out)."""
        session, state = self.session, self.session.state
        limits = session.agent.limits
        state.last_error = None
        retried_too_long = False  # the API's "prompt is too long": compact, then one more try
        while state.response_turns < limits.max_turns:
            if state.response_turns and should_continue(session):
                state.resume = self.continuing = True
                return
            if self.mcp.refresh_requested:
                await self.mcp.refresh()
            if self.compaction.over_budget():
                await self.compaction.compact()
            request = session.context.request(session.id, session.agent.model)
            try:
                turn = await self.model.call(request, f"model: {request.model}")
            except ActivityError as e:
                session.raise_if_interrupted()  # a call the interrupt cancelled: an interrupt, not a failure
                if error_type(e) == CONTEXT_TOO_LONG and not retried_too_long:
                    retried_too_long = True
                    session.error(f"{failure_message(e)}; compacting the context and trying again")
                    await self.compaction.compact(forced=True)
                    continue
                state.last_error = f"model call failed: {failure_message(e)}"
                session.error(state.last_error)
                return
            retried_too_long = False
            state.turns += 1
            state.response_turns += 1
            session.spend(turn.usage, session.agent.model.cost(turn.usage))
            # Whatever shape the model's tool_use blocks have: malformed ones get an error result, not a crash.
            calls, content, malformed = parse_tool_uses(turn.content, str(session.next_offset))
            session.context.model_answered(
                content, turn.usage.total_tokens - turn.usage.output_tokens, session.next_offset
            )
            session.record(
                "model_turn",
                content=turn.content,
                text=text_of(turn.content) or None,
                tool_calls=calls or None,
                usage=turn.usage,
                model=turn.model,
                stop_reason=turn.stop_reason,
            )
            session.details()
            if not calls:
                state.last_answer = text_of(turn.content)
                # The answer stands; a spent budget ends the session after it. With an outcome open,
                # a grader judges the answer; its feedback makes the next turn.
                if session.over_budget() or not await self.outcomes.evaluate(state.last_answer):
                    return
                continue
            if session.over_budget():
                return
            self.tools.calls, self.tools.results = calls, {}
            results = await asyncio.gather(*(self.tools.run(call, malformed.get(call.id)) for call in calls))
            session.context.add_tool_results(list(results), at=session.next_offset - 1)
            self.tools.calls = []
            if session.over_budget():  # subagents spend too
                return
        state.last_error = f"the turn limit ({limits.max_turns} model calls) was reached"
        session.error(state.last_error)

    # --- handlers ---------------------------------------------------------------------------

    @workflow.update(name=SEND_MESSAGE)
    async def send_message(self, text: str, message_id: str | None = None, outcome: Outcome | None = None) -> int:
        """Queue a user message (`message_id`: the client's id for it; `outcome`: the message
        defines it, and is its description); returns the offset the session log had when it arrived."""
        self.session.state.pending.append(UserInput(text=text, id=message_id, outcome=outcome))
        return self.session.next_offset

    @send_message.validator
    def _validate_message(self, text: str, message_id: str | None = None, outcome: Outcome | None = None) -> None:
        session = self.session
        if not text or not text.strip():
            raise ValueError("the message is empty")
        if session.ending or session.state.status in ("done", "failed"):
            raise ValueError(f"the session is {'ending' if session.ending else session.state.status}; start a new one")
        if session.input.one_shot:
            raise ValueError("this is a one-shot session; it takes no further messages")

    # Each update may carry the id its client gave it (`client_id`: the API's event id), which the
    # event it leads to keeps.

    @workflow.update(name=APPROVE)
    def approve(self, tool_use_id: str, client_id: str | None = None) -> int:
        self.waiting.decide(tool_use_id, None, client_id)
        return self.session.next_offset

    @approve.validator
    def _validate_approve(self, tool_use_id: str, client_id: str | None = None) -> None:
        self.waiting.check_decision(tool_use_id)

    @workflow.update(name=DENY)
    def deny(self, tool_use_id: str, reason: str, client_id: str | None = None) -> int:
        self.waiting.decide(tool_use_id, reason.strip() or "no reason given", client_id)
        return self.session.next_offset

    @deny.validator
    def _validate_deny(self, tool_use_id: str, reason: str, client_id: str | None = None) -> None:
        self.waiting.check_decision(tool_use_id)

    @workflow.update(name=TOOL_RESULT)
    def tool_result(self, tool_use_id: str, result: dict[str, Any], client_id: str | None = None) -> int:
        self.waiting.post(tool_use_id, result, client_id)
        return self.session.next_offset

    @tool_result.validator
    def _validate_tool_result(self, tool_use_id: str, result: dict[str, Any], client_id: str | None = None) -> None:
        self.waiting.check_post(tool_use_id, result)

    @workflow.update(name=INTERRUPT)
    async def interrupt(self, client_id: str | None = None) -> int:
        """Cancel the model call, tool runs and subagents in flight; the session goes idle."""
        session = self.session
        session.interrupt_client_id = client_id
        session.interrupt_requested = True
        if session.turn is not None:
            session.turn.cancel()
        await workflow.wait_condition(lambda: session.turn is None)
        return session.next_offset

    @interrupt.validator
    def _validate_interrupt(self, client_id: str | None = None) -> None:
        turn = self.session.turn
        if turn is None or turn.done():
            raise ValueError(f"nothing to interrupt: the session is {self.session.state.status}")

    @workflow.update(name=SET_BUDGET)
    def set_budget(self, max_cost_usd: float | None) -> int:
        """A new cost budget for the rest of the session (the API's sessions.update)."""
        agent = self.session.agent
        limits = agent.limits.model_copy(update={"max_cost_usd": max_cost_usd})
        self.session.agent = agent.model_copy(update={"limits": limits})
        return self.session.next_offset

    @set_budget.validator
    def _validate_budget(self, max_cost_usd: float | None) -> None:
        if max_cost_usd is not None and max_cost_usd <= 0:
            raise ValueError(f"a budget is more than $0, not ${max_cost_usd}")
        if self.session.state.status in ("done", "failed"):
            raise ValueError(f"the session is {self.session.state.status}")

    @workflow.update(name=REFRESH_TOOLS)
    async def refresh_tools(self) -> int:
        """Re-list the MCP servers' tools (bypassing the workers' caches) before the next model call;
        answers once done, with the offset of the new `mcp_tools` event."""
        self.mcp.refresh_requested = True
        await workflow.wait_condition(lambda: not self.mcp.refresh_requested)
        return self.mcp.refreshed_at

    @refresh_tools.validator
    def _validate_refresh(self) -> None:
        if not self.session.agent.mcp_servers:
            raise ValueError("this session's agent lists no MCP servers")
        if self.session.state.status in ("done", "failed"):
            raise ValueError(f"the session is {self.session.state.status}")

    @workflow.signal(name=END_SESSION)
    def end_session(self) -> None:
        self.session.ending = True

    @workflow.query(name=GET_EVENTS)
    def get_events(self, start: int = 0, stop: int | None = None) -> list[SessionEvent]:
        """Events by offset; this run holds those from first_offset on (earlier runs, the others)."""
        return self.session.events_between(start, stop)

    @workflow.query(name=GET_STATE)
    def get_state(self) -> SessionState:
        session, state = self.session, self.session.state
        return SessionState(
            status=state.status,
            agent=session.agent.name,
            turns=state.turns,
            events=session.next_offset,
            usage=state.usage,
            last_answer=state.last_answer,
            sandbox=state.sandbox.handle,
            cost_usd=state.cost_usd,
            awaiting_approval=list(self.waiting.approvals.values()),
            awaiting_client=list(self.waiting.client_calls.values()),
            first_offset=state.first_offset,
            run=state.run,
            context_tokens=session.context.estimated_tokens(),
            error=session.stop_reason or state.last_error,
            outcomes=[o.model_copy(update={"grader_messages": []}) for o in state.outcomes],
        )

    @workflow.query(name=GET_MODEL_CONTEXT)
    def model_context(self) -> ModelContext:
        context = self.session.context
        return ModelContext(system=context.system, tools=context.tools, messages=context.messages)
