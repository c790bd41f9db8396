"""Waiting on people and clients: tool calls that need an approval (`always_ask`) and custom
tools the client runs. The session records the request, waits durably (hours or days, across
worker restarts) and goes on when an update answers; the updates' validators refuse an answer
for a call that is not waiting, so a wrong id changes nothing."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from temporalio import workflow

from durable_agents.contracts import ClientToolResult, ToolCall, ToolResult
from durable_agents.workflows.core import Session
from durable_agents.workflows.harness import tool_summary, validation_problems

RESULT_SHAPE = '{"content": string, "is_error": bool (optional)}'


def _check_waiting(
    tool_use_id: str, waiting: dict[str, ToolCall], answered: dict[str, Any], noun: str, what: str
) -> None:
    """An update validator's refusal: nothing with this id waits for an answer (or it has one)."""
    if tool_use_id not in waiting or tool_use_id in answered:
        listing = ", ".join(f"{i} ({c.name})" for i, c in waiting.items()) or "none"
        raise ValueError(f"no {noun} {tool_use_id!r} is waiting for {what} (waiting: {listing})")


class Waiting:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.approvals: dict[str, ToolCall] = {}  # tool calls waiting for approval, by tool-use id
        self.decisions: dict[str, str | None] = {}  # tool-use id -> None (approved) or the denial reason
        self.client_calls: dict[str, ToolCall] = {}  # custom tool calls waiting for the client's result
        self.client_results: dict[str, ClientToolResult] = {}
        self.client_ids: dict[str, str] = {}  # tool-use id -> the id the client gave its answer

    async def _wait(
        self, call: ToolCall, waiting: dict[str, ToolCall], answers: dict[str, Any], kind: Any, what: str
    ) -> Any:
        session = self.session
        waiting[call.id] = call
        session.record(kind, tool_calls=[call], text=tool_summary(call))
        session.set_status("waiting")
        session.details(f"{what}: {tool_summary(call)}")
        try:
            await workflow.wait_condition(lambda: call.id in answers)
        finally:
            waiting.pop(call.id, None)
            if not self.approvals and not self.client_calls and session.state.status == "waiting":
                session.set_status("running")
        return answers.pop(call.id)

    async def approval(self, call: ToolCall) -> str | None:
        """Wait for approve (None) or deny (the reason)."""
        denial: str | None = await self._wait(
            call, self.approvals, self.decisions, "approval_requested", "waiting for approval"
        )
        client_id = self.client_ids.pop(call.id, None)
        if denial is None:
            self.session.record("approval_granted", tool_calls=[call], text=tool_summary(call), client_id=client_id)
        else:
            self.session.record("approval_denied", tool_calls=[call], text=denial, client_id=client_id)
        return denial

    async def client_result(self, call: ToolCall) -> ToolResult:
        """A custom tool: the client runs it and posts the result."""
        posted: ClientToolResult = await self._wait(
            call, self.client_calls, self.client_results, "tool_requested", "waiting for the client"
        )
        return ToolResult(call_id=call.id, name=call.name, output=posted.content, is_error=posted.is_error)

    # --- what the updates do, and their validators -------------------------------------------

    def decide(self, tool_use_id: str, denial: str | None, client_id: str | None = None) -> None:
        self.decisions[tool_use_id] = denial
        if client_id:
            self.client_ids[tool_use_id] = client_id

    def check_decision(self, tool_use_id: str) -> None:
        _check_waiting(tool_use_id, self.approvals, self.decisions, "tool call", "approval")

    def post(self, tool_use_id: str, result: dict[str, Any], client_id: str | None = None) -> None:
        self.client_results[tool_use_id] = ClientToolResult.model_validate(result)
        if client_id:
            self.client_ids[tool_use_id] = client_id

    def check_post(self, tool_use_id: str, result: dict[str, Any]) -> None:
        _check_waiting(tool_use_id, self.client_calls, self.client_results, "custom tool call", "a result")
        try:
            ClientToolResult.model_validate(result)
        except ValidationError as e:
            problems = validation_problems(e, "result")
            raise ValueError(f"a tool result is a JSON object {RESULT_SHAPE}: {problems}") from None
