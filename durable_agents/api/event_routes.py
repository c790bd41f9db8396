"""`client.beta.sessions.events` over HTTP: list, send and stream a session's events as the
pinned SDK speaks them, and the same for a session's threads (its subagents).

- `GET  /v1/sessions/{id}/events`: the session log mapped to Managed Agents events
  (`durable_agents.api.events`), filtered (`types[]`, `created_at[gte|gt|lte|lt]` against
  `processed_at`), ordered (`order`, default `asc`) and paged (`limit`, `page` / `next_page`).
- `POST /v1/sessions/{id}/events`: `{"events": [...]}` — `user.message`, `user.interrupt`,
  `user.tool_confirmation`, `user.custom_tool_result`, applied in order as the workflow's
  updates, each with the id the echo gives it (the log's event keeps that id). Every event is
  checked before any is applied: bad input changes nothing.
- `GET  /v1/sessions/{id}/events/stream`: new events as Server-Sent Events (`event: <type>`),
  with `event_start` / `event_delta` previews of `agent.message` when `event_deltas[]` asks.
- `GET  /v1/sessions/{id}/threads`, `…/threads/{thread_id}`, `…/threads/{thread_id}/events`,
  `…/threads/{thread_id}/stream`: each subagent is a thread (`sthr_sub-N`), its events carry
  `session_thread_id`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from durable_agents import session_log
from durable_agents.api.events import EventMapper, Mapped, message_event_id, thread_id
from durable_agents.api.http import ApiError, Gate, guarded, invalid, not_found, query_int, query_time
from durable_agents.contracts import (
    APPROVE,
    DENY,
    INTERRUPT,
    SEND_MESSAGE,
    TOOL_RESULT,
    LiveDelta,
    Outcome,
    SessionEvent,
    SessionState,
    SubagentFinished,
    SubagentStarted,
)
from durable_agents.live.relay import Cursor, Relay

PING_S = 15
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000  # the SDK's session runner lists a backlog 1,000 at a time
CLOSED = ("done", "failed")
MAX_KEPT_LOGS = 256  # sessions whose mapped events the server keeps between requests


# --- what a client sends -------------------------------------------------------------------


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Text(_Param):
    type: Literal["text"]
    text: str


class _UserMessage(_Param):
    type: Literal["user.message"]
    content: list[dict[str, Any]] = Field(min_length=1)


class _Interrupt(_Param):
    type: Literal["user.interrupt"]
    session_thread_id: str | None = None


class _Confirmation(_Param):
    type: Literal["user.tool_confirmation"]
    tool_use_id: str = Field(min_length=1)
    result: Literal["allow", "deny"]
    deny_message: str | None = None


class _CustomResult(_Param):
    type: Literal["user.custom_tool_result"]
    custom_tool_use_id: str = Field(min_length=1)
    content: list[dict[str, Any]] | None = None
    is_error: bool | None = None


class _TextRubric(_Param):
    type: Literal["text"]
    content: str = Field(min_length=1, max_length=200_000)


class _FileRubric(_Param):
    type: Literal["file"]
    file_id: str


class _DefineOutcome(_Param):
    type: Literal["user.define_outcome"]
    description: str = Field(min_length=1)
    rubric: _TextRubric | _FileRubric = Field(discriminator="type")
    max_iterations: int | None = Field(default=None, ge=1, le=20)


PARAMS: dict[str, type[_Param]] = {
    "user.message": _UserMessage,
    "user.define_outcome": _DefineOutcome,
    "user.interrupt": _Interrupt,
    "user.tool_confirmation": _Confirmation,
    "user.custom_tool_result": _CustomResult,
}
NOT_YET = {
    "user.tool_result": "self-hosted tool results (environments.work) are not supported",
    "system.message": "system messages are not supported yet",
}


def _texts(blocks: list[dict[str, Any]], where: str) -> str:
    """Text content as one string; other block types are refused, naming the first."""
    parts = []
    for i, block in enumerate(blocks):
        if block.get("type") != "text":
            raise invalid(f"{where}.{i}.type: {block.get('type')!r} content is not supported yet (text only)")
        try:
            parts.append(_Text.model_validate(block).text)
        except ValidationError as e:
            raise invalid(f"{where}.{i}: {_problems(e)}") from None
    return "\n".join(parts)


def _problems(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}" for err in e.errors())


def parse_events(body: Any) -> list[_Param]:
    """The events of a send, each checked; the first problem names its place (`events.2.result`)."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list) or not body["events"]:
        raise invalid("events: a non-empty list of events is required")
    parsed = []
    for i, raw in enumerate(body["events"]):
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind in NOT_YET:
            raise invalid(f"events.{i}.type: {kind!r}: {NOT_YET[kind]}")
        model = PARAMS.get(str(kind))
        if model is None:
            raise invalid(f"events.{i}.type: {kind!r} is not an event a client sends (one of {', '.join(PARAMS)})")
        try:
            event = model.model_validate(raw)
        except ValidationError as e:
            raise invalid("; ".join(f"events.{i}.{p}" for p in _problems(e).split("; "))) from None
        if isinstance(event, _UserMessage):
            _texts(event.content, f"events.{i}.content")
        if isinstance(event, _CustomResult):
            _texts(event.content or [], f"events.{i}.content")
        if isinstance(event, _DefineOutcome) and isinstance(event.rubric, _FileRubric):
            raise invalid(f"events.{i}.rubric: file rubrics need the files API, which is not supported yet; send the "
                          "rubric as {type: text, content}")  # fmt: skip
        parsed.append(event)
    return parsed


# --- reading the log -------------------------------------------------------------------------


@dataclass
class _MappedLog:
    """A session's events read so far, mapped, and the mapper that goes on from there."""

    mapper: EventMapper
    mapped: list[Mapped] = field(default_factory=list)
    read: int = 0  # events below this offset are mapped


class SessionEvents:
    """The routes, on a Temporal client (sessions are workflows) and the live relay (deltas)."""

    def __init__(self, client: Client, relay: Relay) -> None:
        self.client = client
        self.relay = relay
        self.logs: OrderedDict[str, _MappedLog] = OrderedDict()  # sessions read lately, least recent first
        self._reading: dict[str, asyncio.Lock] = {}  # per session kept: held while its log is read

    async def _state(self, session_id: str) -> SessionState:
        try:
            return await session_log.session_state(self.client, session_id)
        except RPCError as e:
            if e.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise not_found(f"no session {session_id!r}") from None
            raise ApiError(503, "api_error", f"cannot read session {session_id!r}: {e.message}") from None

    async def _log(self, session_id: str, stop: int | None = None) -> list[SessionEvent]:
        try:
            return await session_log.read_events(self.client, session_id, 0, stop)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise not_found(f"no session {session_id!r}") from None
            raise ApiError(503, "api_error", f"cannot read session {session_id!r}: {e.message}") from None

    async def mapped(self, session_id: str, thread: str | None = None) -> list[Mapped]:
        """The session's events so far, mapped; what was read before is kept (the log only grows),
        so paging through a long session reads each event once. One read of a session at a time:
        two at once (a list beside a stream opening) would map the same new events twice."""
        lock = self._reading.setdefault(session_id, asyncio.Lock())
        async with lock:
            return await self._mapped(session_id, thread)

    async def _mapped(self, session_id: str, thread: str | None) -> list[Mapped]:
        try:
            new = await session_log.read_new(self.client, session_id, self._known(session_id))
        except RPCError as e:
            if e.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise not_found(f"no session {session_id!r}") from None
            raise ApiError(503, "api_error", f"cannot read session {session_id!r}: {e.message}") from None
        state, events = new
        kept = self.logs.get(session_id)
        if kept is None or state.events < kept.read:  # a new session under a used id starts again
            kept = self.logs[session_id] = _MappedLog(EventMapper(session_id, thread=thread))
            events = await self._log(session_id, state.events)
        elif kept.read < state.first_offset or (events and events[0].offset != kept.read):
            events = await self._log_between(session_id, kept.read, state.events)
        for e in events:
            kept.mapped += kept.mapper.map(e)
        kept.read = max(kept.read, events[-1].offset + 1 if events else kept.read)
        self.logs.move_to_end(session_id)
        while len(self.logs) > MAX_KEPT_LOGS:
            forgotten, _ = self.logs.popitem(last=False)
            self._reading.pop(forgotten, None)
        return kept.mapped

    def _known(self, session_id: str) -> int:
        kept = self.logs.get(session_id)
        return kept.read if kept is not None else 0

    async def _log_between(self, session_id: str, start: int, stop: int) -> list[SessionEvent]:
        try:
            return await session_log.read_events(self.client, session_id, start, stop)
        except RPCError as e:
            raise ApiError(503, "api_error", f"cannot read session {session_id!r}: {e.message}") from None

    async def _thread_session(self, session_id: str, thread: str) -> str:
        """The child session a thread id names (one of this session's subagents), from the log as
        list keeps it (a closed session's log is read again only by replaying it)."""
        await self.mapped(session_id)
        for child in self.logs[session_id].mapper.threads:
            if thread_id(child) == thread:
                return child
        raise not_found(f"session {session_id!r} has no thread {thread!r}")

    # --- list ---------------------------------------------------------------------------------

    async def list_events(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        return await self._list(request, await self.mapped(session_id))

    async def _list(self, request: Request, mapped: list[Mapped]) -> Response:
        q = request.query_params
        order = q.get("order", "asc")
        if order not in ("asc", "desc"):
            raise invalid(f"order: {order!r} is not one of asc, desc")
        limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        types = set(q.getlist("types[]") + q.getlist("types"))
        bounds = {op: query_time(request, f"created_at[{op}]") for op in ("gt", "gte", "lt", "lte")}
        chosen = [m for m in mapped if (not types or m.data["type"] in types) and _within(m, bounds)]
        if order == "desc":
            chosen.reverse()
        start = 0
        if page := q.get("page"):
            start = next((i for i, m in enumerate(chosen) if m.cursor == page), -1)
            if start < 0:
                raise invalid(f"page: {page!r} is not a page of this list")
        items = chosen[start : start + limit]
        after = chosen[start + limit] if start + limit < len(chosen) else None
        first = chosen[start - 1].cursor if start > 0 else None
        body = {"data": [m.data for m in items], "next_page": after.cursor if after else None, "prev_page": first}
        return JSONResponse(body)

    # --- send ---------------------------------------------------------------------------------

    async def send_events(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            body = await request.json()
        except json.JSONDecodeError as e:
            raise invalid(f"the body is not JSON: {e.msg} at line {e.lineno}") from None
        events = parse_events(body)
        state = await self._state(session_id)
        described = await self.client.get_workflow_handle(session_id).describe()
        if state.status in CLOSED or described.status != WorkflowExecutionStatus.RUNNING:
            raise invalid(f"session {session_id!r} is terminated: it takes no more events")
        waiting_approval = {c.id for c in state.awaiting_approval}
        waiting_client = {c.id for c in state.awaiting_client}
        for i, event in enumerate(events):  # every event checked before any is applied
            if isinstance(event, _Confirmation) and event.tool_use_id not in waiting_approval:
                listing = ", ".join(sorted(waiting_approval)) or "none"
                raise invalid(f"events.{i}.tool_use_id: {event.tool_use_id!r} is not waiting for a confirmation "
                              f"(waiting: {listing})")  # fmt: skip
            if isinstance(event, _CustomResult) and event.custom_tool_use_id not in waiting_client:
                listing = ", ".join(sorted(waiting_client)) or "none"
                raise invalid(f"events.{i}.custom_tool_use_id: {event.custom_tool_use_id!r} is not a custom tool use "
                              f"waiting for a result (waiting: {listing})")  # fmt: skip
        echoes = [await self._apply(session_id, i, event) for i, event in enumerate(events)]
        if (feed := self.relay.feeds.get(session_id)) is not None:
            feed.wake()  # its streams hear of it now, not at the next poll
        return JSONResponse({"data": echoes})

    async def _apply(self, session_id: str, i: int, event: _Param) -> dict[str, Any]:
        handle = self.client.get_workflow_handle(session_id)
        event_id = f"sevt_{uuid.uuid4().hex[:24]}"
        echo: dict[str, Any] = {"id": event_id, **event.model_dump(exclude_none=True), "processed_at": None}
        try:
            if isinstance(event, _UserMessage):
                await handle.execute_update(SEND_MESSAGE, args=[_texts(event.content, "content"), event_id])
            elif isinstance(event, _DefineOutcome):
                outcome = Outcome(
                    id=f"outc_{uuid.uuid4().hex[:24]}",
                    description=event.description,
                    rubric=event.rubric.content,  # type: ignore[union-attr]  # file rubrics are refused above
                    max_iterations=event.max_iterations or 3,
                )
                echo["outcome_id"] = outcome.id
                await handle.execute_update(SEND_MESSAGE, args=[outcome.description, event_id, outcome])
            elif isinstance(event, _Interrupt):
                state = await self._state(session_id)
                if state.status == "running" or state.status == "waiting":
                    await handle.execute_update(INTERRUPT, args=[event_id])
            elif isinstance(event, _Confirmation):
                if event.result == "allow":
                    await handle.execute_update(APPROVE, args=[event.tool_use_id, event_id])
                else:
                    await handle.execute_update(DENY, args=[event.tool_use_id, event.deny_message or "", event_id])
            elif isinstance(event, _CustomResult):
                text = _texts(event.content or [], "content")
                result = {"content": text, "is_error": bool(event.is_error)}
                await handle.execute_update(TOOL_RESULT, args=[event.custom_tool_use_id, result, event_id])
        except WorkflowUpdateFailedError as e:
            cause = e.cause
            raise invalid(f"events.{i}: refused: {getattr(cause, 'message', None) or cause}") from None
        return echo

    # --- stream -------------------------------------------------------------------------------

    async def stream_events(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        return await self._stream(request, session_id, None)

    async def _stream(self, request: Request, session_id: str, thread: str | None) -> Response:
        await self._state(session_id)
        wanted = set(request.query_params.getlist("event_deltas[]") + request.query_params.getlist("event_deltas"))
        unknown = wanted - {"agent.message", "agent.thinking"}
        if unknown:
            raise invalid(f"event_deltas: {sorted(unknown)[0]!r} is not one of agent.message, agent.thinking")
        # What came before (who waits, why idle) from the log as list reads and keeps it: a stream
        # opened beside a list (the SDK's recipe, the console) reads the session once, not twice.
        await self.mapped(session_id, thread=thread)
        kept = self.logs[session_id]
        mapper, start = copy.deepcopy(kept.mapper), kept.read
        return EventSourceResponse(
            self._frames(session_id, start, mapper, "agent.message" in wanted),
            ping=PING_S,
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _frames(
        self, session_id: str, start: int, mapper: EventMapper, deltas: bool
    ) -> AsyncIterator[ServerSentEvent]:
        """New events only, from `start` on (the SDK's runners list the backlog themselves)."""
        feed = self.relay.feed(session_id, following=True)
        async for item in feed.follow(Cursor(start)):
            if item.event is not None:
                for m in mapper.map(item.event):
                    yield ServerSentEvent(data=json.dumps(m.data), event=m.data["type"], id=m.cursor)
            elif item.delta is not None and deltas:
                frame = _delta_frame(item.delta, mapper.thread)
                if frame is not None:
                    yield ServerSentEvent(data=json.dumps(frame), event=frame["type"])
            elif item.ended:
                return

    # --- threads --------------------------------------------------------------------------------

    async def list_threads(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        threads = await self._threads(session_id)
        statuses = set(request.query_params.getlist("statuses[]"))
        data = [t for t in threads if not statuses or t["status"] in statuses]
        return JSONResponse({"data": data, "next_page": None})

    async def get_thread(self, request: Request) -> Response:
        session_id, wanted = request.path_params["session_id"], request.path_params["thread_id"]
        for t in await self._threads(session_id):
            if t["id"] == wanted:
                return JSONResponse(t)
        raise not_found(f"session {session_id!r} has no thread {wanted!r}")

    async def _threads(self, session_id: str) -> list[dict[str, Any]]:
        threads: dict[str, dict[str, Any]] = {}
        for e in await self._log(session_id):
            if isinstance(e, SubagentStarted):
                threads[e.child] = {
                    "id": thread_id(e.child),
                    "type": "session_thread",
                    "session_id": session_id,
                    "parent_thread_id": None,
                    "status": "running",
                    "agent": {"type": "inline", "name": e.text.split(":", 1)[0], **_INLINE_AGENT},
                    "created_at": e.at.isoformat(),
                    "updated_at": e.at.isoformat(),
                    "archived_at": None,
                }
            elif isinstance(e, SubagentFinished) and e.child in threads:
                threads[e.child].update(status="terminated", updated_at=e.at.isoformat())
        return list(threads.values())

    async def list_thread_events(self, request: Request) -> Response:
        session_id, thread = request.path_params["session_id"], request.path_params["thread_id"]
        child = await self._thread_session(session_id, thread)
        return await self._list(request, await self.mapped(child, thread=thread))

    async def stream_thread_events(self, request: Request) -> Response:
        session_id, thread = request.path_params["session_id"], request.path_params["thread_id"]
        child = await self._thread_session(session_id, thread)
        return await self._stream(request, child, thread)

    def routes(self, gate: Gate) -> list[Route]:
        base = "/v1/sessions/{session_id}"
        return [
            Route(f"{base}/events/stream", guarded(gate, self.stream_events), methods=["GET"]),
            Route(f"{base}/events", guarded(gate, self.list_events), methods=["GET"]),
            Route(f"{base}/events", guarded(gate, self.send_events), methods=["POST"]),
            Route(f"{base}/threads", guarded(gate, self.list_threads), methods=["GET"]),
            Route(f"{base}/threads/{{thread_id}}", guarded(gate, self.get_thread), methods=["GET"]),
            Route(f"{base}/threads/{{thread_id}}/events", guarded(gate, self.list_thread_events), methods=["GET"]),
            Route(f"{base}/threads/{{thread_id}}/stream", guarded(gate, self.stream_thread_events), methods=["GET"]),
        ]


_INLINE_AGENT: dict[str, Any] = {
    "description": None,
    "execution_identity": {"type": "service_account"},
    "mcp_servers": [],
    "model": {"id": "inline"},
    "skills": [],
    "system": None,
    "tools": [],
}


def _delta_frame(delta: LiveDelta, thread: str | None) -> dict[str, Any] | None:
    """A live delta as the SDK's preview events: event_start, then event_delta with the text."""
    event_id = message_event_id(delta.offset)
    if delta.kind == "start":
        return {"type": "event_start", "event": {"type": "agent.message", "id": event_id}}
    if delta.kind == "text" and delta.text:
        content = {"type": "text", "text": delta.text}
        return {
            "type": "event_delta",
            "event_id": event_id,
            "delta": {"type": "content_delta", "index": delta.index, "content": content},
        }  # noqa: E501
    return None


def _within(m: Mapped, bounds: dict[str, datetime | None]) -> bool:
    at = datetime.fromisoformat(m.data["processed_at"])
    gt, gte, lt, lte = bounds["gt"], bounds["gte"], bounds["lt"], bounds["lte"]
    return (
        (gt is None or at > gt)
        and (gte is None or at >= gte)
        and (lt is None or at < lt)
        and (lte is None or at <= lte)
    )
