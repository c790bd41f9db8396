"""What every capability of one session run shares: its input and agent, its state (carried
whole into the next run), the event log with its offsets, the status the UI shows, spending,
and whether the user interrupted the turn. Workflow code; no activities here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from durable_agents.contracts import (
        EVENT_TYPES,
        MEMORY_SEARCH,
        SA_SESSION_STATUS,
        AgentSpec,
        EventKind,
        McpTool,
        SessionCarry,
        SessionEvent,
        SessionInput,
        SessionStatus,
        Usage,
        attribute_allowed,
    )
    from durable_agents.workflow_cache import note_run
    from durable_agents.workflows.context import ContextBuilder
    from durable_agents.workflows.harness import (
        LoopGuard,
        available_tools,
        budget_exhausted,
        system_prompt,
        tool_definitions,
    )

STATUS_KEY = SearchAttributeKey.for_keyword(SA_SESSION_STATUS)


def event_bytes(event: SessionEvent) -> int:
    """About how much text an event holds: its text, a tool's output, a model turn's text blocks
    (characters; what a long session's log is made of)."""
    size = len(getattr(event, "text", None) or "")
    result = getattr(event, "tool_result", None)
    if result is not None:
        size += len(result.output)
    for block in getattr(event, "content", None) or ():
        size += len(block.get("text") or "") if isinstance(block, dict) else 0
    return size


class Session:
    """One run of a session: the shared core the loop and each capability work on."""

    def __init__(self, inp: SessionInput, state: SessionCarry, agent: AgentSpec) -> None:
        self.input = inp
        self.state = state
        self.use_agent(agent)
        self.search_attributes = inp.search_attributes  # None: asked at the start (a plain client's session)
        self.events: list[SessionEvent] = []  # this run's; earlier runs hold those before first_offset
        self.log_bytes = 0  # about what this run's events hold of text (event_bytes)
        self.stop_reason: str | None = None  # the session cannot go on (a budget ran out, it cannot start)
        self.ending = False
        self.turn: asyncio.Task[None] | None = None  # the answer in progress, which an interrupt cancels
        self.interrupt_requested = False
        self.interrupt_client_id: str | None = None  # the id the client's interrupt had

    @property
    def id(self) -> str:
        return workflow.info().workflow_id

    # --- the agent and what the model sees ----------------------------------------------------

    def use_agent(self, agent: AgentSpec) -> None:
        """The agent this session runs (known at once, or once its agent_ref is resolved)."""
        self.agent = agent
        recall = self.input.memory or agent.memory.sessions
        self.base_tools = available_tools(agent) + ([MEMORY_SEARCH] if recall else [])
        self.system = system_prompt(agent, self.input.memory)
        self.base_definitions = tool_definitions(self.base_tools, agent.subagents, agent.skills, agent.custom_tools)
        self.loop_guard = LoopGuard(agent.limits.loop_limit, self.state.loop)
        self.use_mcp_tools(self.state.mcp_tools)

    def use_mcp_tools(self, tools: list[McpTool], changed: bool = False) -> None:
        """These MCP tools after the built-in ones (in discovery order: a stable prompt prefix).
        changed: a new list mid-session, so the API's count of the old prefix no longer holds."""
        self.mcp_tools = {t.name: t for t in tools if t.name not in self.base_tools}
        self.state.mcp_tools = list(self.mcp_tools.values())
        if changed:
            self.state.context.measured_tokens = self.state.context.measured_count = 0
        definitions = self.base_definitions + [t.definition() for t in self.mcp_tools.values()]
        self.context = ContextBuilder(self.system, definitions, self.state.context)

    @property
    def tools(self) -> list[str]:
        return [*self.base_tools, *self.mcp_tools]

    # --- the log ----------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        """The offset the next event gets (earlier runs hold those before first_offset)."""
        return self.state.first_offset + len(self.events)

    def record(self, kind: EventKind, **fields: Any) -> SessionEvent:
        """Append an event of this kind, with the fields its model has (a wrong field is a bug)."""
        event: SessionEvent = EVENT_TYPES[kind](offset=self.next_offset, at=workflow.now(), **fields)  # type: ignore[assignment]
        self.events.append(event)
        self.log_bytes += event_bytes(event)
        return event

    def error(self, text: str) -> SessionEvent:
        return self.record("error", text=text)

    def events_between(self, start: int, stop: int | None) -> list[SessionEvent]:
        lo = max(0, start - self.state.first_offset)
        hi = None if stop is None else max(0, stop - self.state.first_offset)
        return self.events[lo:hi]

    # --- what the Temporal UI shows ---------------------------------------------------------

    def set_status(self, status: SessionStatus) -> None:
        if status == self.state.status:
            return
        self.state.status = status
        self.record("status", status=status)
        if attribute_allowed(self.search_attributes, SA_SESSION_STATUS):
            workflow.upsert_search_attributes([STATUS_KEY.value_set(status)])
        self.details()  # the UI's current details show the new status (a done session: "done")

    def details(self, last: str | None = None) -> None:
        u = self.state.usage
        tokens_in = u.total_tokens - u.output_tokens  # cached or not
        text = f"status: {self.state.status} · turn {self.state.turns} · tokens in {tokens_in} / out {u.output_tokens}"
        if last:
            text += f" · last: {last}"
        workflow.set_current_details(text)
        # What the worker's cache may evict (a session waiting on someone), and what it weighs.
        note_run(waiting=self.state.status in ("idle", "waiting"))

    # --- spending ---------------------------------------------------------------------------

    def spend(self, usage: Usage, cost_usd: float | None) -> None:
        s = self.state
        s.usage = s.usage + usage
        s.cost_usd = None if cost_usd is None or s.cost_usd is None else s.cost_usd + cost_usd

    def over_budget(self) -> bool:
        """A spent budget stops the session (recorded once, with the reason)."""
        reason = budget_exhausted(self.agent.limits, self.state.usage, self.state.cost_usd)
        if reason is not None:
            self.stop_reason = reason
            self.error(f"stopped: {reason}")
        return reason is not None

    # --- interrupts -------------------------------------------------------------------------

    def raise_if_interrupted(self) -> None:
        """A cancellation that arrived as an activity or child failure still cuts the turn short."""
        if self.interrupt_requested and self.turn is not None:
            raise asyncio.CancelledError
