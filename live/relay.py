"""The live relay (`da serve`): a session's events as Server-Sent Events, for `follow`
and web clients, with the deltas of the model call in progress woven in.

Durable events come from the session log (`session_log`, queries: no history), read by one
poller per watched session; deltas come from the harness workers (`POST /live/deltas`, see
`live.publisher`) and are kept, per session and model call (the newest attempt), until the
call's durable event is recorded (then that event stands for them). The event of a call is held back
from followers until the call's `end` delta has arrived (at most HOLD_S), so a follower gets all
of a call's deltas before its event, even when the event is read first. SSE ids make a resume
exact:

    id: 41        durable event 41
    id: 41.2.17   delta 17 of attempt 2 of the model call whose event will be 41

A client that reconnects with `Last-Event-ID` gets what follows that id: no gap, no duplicate
(deltas of an earlier attempt are superseded by the retry's, which start again from 0).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import structlog
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from durable_agents import session_log
from durable_agents.contracts import LiveBatch, LiveDelta, SessionEvent, SessionState
from durable_agents.live.publisher import DELTAS_PATH

log = structlog.get_logger("live")

DEFAULT_PORT = 8780
POLL_S = 0.2  # how often a watched session's log is read
FAST_POLL_S = 0.02  # after a call's stream ended, until its event is recorded (at most FAST_POLL_FOR_S)
FAST_POLL_FOR_S = 2.0
HOLD_S = 0.5  # how long a call's event waits for the call's last deltas (its `end`) to arrive
OPEN_CHECK_S = 5.0  # how often a quiet session is checked for having ended without a final status
CACHE_EVENTS = 1_000  # newest durable events kept per watched session; older ones are read again
READ_CHUNK = 500
MAX_CALL_DELTAS = 50_000  # deltas kept for one model call
MAX_OPEN_CALLS = 8  # calls kept per session whose events are not out yet (the newest)
MAX_FEEDS = 10_000  # sessions with deltas kept; the least recently used without followers go first
FEED_TTL_S = 900.0  # a session without followers whose deltas stopped this long ago is forgotten
PING_S = 15
TERMINAL = ("done", "failed")
_NUMBER = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Cursor:
    """What a client has: the durable events below `offset` and, of the model call whose event
    will be `offset`, the deltas up to `delta` = (attempt, seq)."""

    offset: int
    delta: tuple[int, int] | None = None

    @classmethod
    def parse(cls, last_event_id: str | None, start: str | None) -> Cursor:
        """From a reconnect's Last-Event-ID (it wins) or `?from=N`; ValueError says what is wrong."""
        if last_event_id and last_event_id.strip():
            parts = last_event_id.strip().split(".")
            if all(_NUMBER.fullmatch(p) for p in parts):
                if len(parts) == 1:
                    return cls(int(parts[0]) + 1)
                if len(parts) == 3 and int(parts[1]) >= 1:
                    return cls(int(parts[0]), (int(parts[1]), int(parts[2])))
            raise ValueError(
                f"Last-Event-ID {last_event_id!r} is not an id of this stream: N for event N, N.ATTEMPT.SEQ for a delta"
            )
        if start is None:
            return cls(0)
        if not _NUMBER.fullmatch(start):
            raise ValueError(f"from={start!r}: an offset is a whole number, 0 or more")
        return cls(int(start))


class _Call:
    """The retained deltas of one attempt of the model call whose event will be `offset`."""

    def __init__(self, offset: int, attempt: int) -> None:
        self.offset = offset
        self.attempt = attempt
        self.deltas: list[LiveDelta] = []
        self.ended_at: float | None = None  # when its `end` delta arrived (monotonic)

    def after(self, position: tuple[int, int] | None) -> list[LiveDelta]:
        """The deltas a client at `position` has not had (all of them after an earlier attempt's)."""
        if position is None or position[0] < self.attempt:
            return list(self.deltas)
        if position[0] > self.attempt:
            return []
        return self.deltas[bisect.bisect_right(self.deltas, position[1], key=lambda d: d.seq) :]


def _sse_event(session_id: str, event: SessionEvent) -> ServerSentEvent:
    data = json.dumps({"session": session_id, **event.model_dump(mode="json")}, ensure_ascii=False)
    return ServerSentEvent(data=data, event="event", id=str(event.offset))


def _sse_delta(delta: LiveDelta) -> ServerSentEvent:
    return ServerSentEvent(data=delta.model_dump_json(exclude_none=True), event="delta", id=delta.sse_id)


class SessionFeed:
    """One session as the relay sees it: the newest durable events, the model call in progress,
    the state; followers wait on `changed`."""

    def __init__(self, relay: Relay, session_id: str) -> None:
        self.relay = relay
        self.session_id = session_id
        self.calls: dict[int, _Call] = {}  # by the offset their event will get
        self.known: int | None = None  # events below this offset are recorded and released (None: not read yet)
        self.cache: deque[SessionEvent] = deque(maxlen=CACHE_EVENTS)  # contiguous, ending at known - 1
        self._held: list[SessionEvent] = []  # read, not yet released: a call's event waits for its end
        self._hold_until: float | None = None
        self._read_to: int | None = None  # the next offset to read from Temporal
        self.state: SessionState | None = None
        self.started_at: str | None = None
        self.closed = False  # the workflow has ended and every event has been read
        self.subscribers = 0
        self.touched = time.monotonic()
        self.error: str | None = None
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._open_checked = time.monotonic()

    @property
    def cache_start(self) -> int:
        return (self.known or 0) - len(self.cache)

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def add(self, delta: LiveDelta) -> bool:
        """Keep a delta of a call whose event is not out yet; False if it is late (the event is
        out, or a later attempt has begun), repeated, or over the bound."""
        self.touched = time.monotonic()
        if self.known is not None and delta.offset < self.known:
            return False
        call = self.calls.get(delta.offset)
        if call is None or delta.attempt > call.attempt:
            call = self.calls[delta.offset] = _Call(delta.offset, delta.attempt)
            for stale in sorted(self.calls)[:-MAX_OPEN_CALLS]:
                del self.calls[stale]
        elif delta.attempt < call.attempt:
            return False
        if (call.deltas and delta.seq <= call.deltas[-1].seq) or len(call.deltas) >= MAX_CALL_DELTAS:
            return False
        call.deltas.append(delta)
        if delta.kind == "end":
            call.ended_at = time.monotonic()
        if self.known is not None and (delta.offset > self.known or delta.kind == "end"):
            self._wake.set()  # events the poller has not read yet, or the call's own event, are due
        return True

    def wake(self) -> None:
        """Read the session now (something was just sent to it), not at the next poll."""
        self._wake.set()

    def newest_call(self, at_least: int = 0) -> _Call | None:
        return next((self.calls[o] for o in sorted(self.calls, reverse=True) if o >= at_least), None)

    # --- the poller: one per watched session --------------------------------------------------

    def _subscribe(self) -> None:
        self.subscribers += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop(), name=f"poll {self.session_id}")

    def _unsubscribe(self) -> None:
        self.subscribers -= 1
        self.touched = time.monotonic()

    async def _poll_loop(self) -> None:
        while self.subscribers > 0 and not self.closed:
            self._wake.clear()
            try:
                await self.poll()
                self.error = None
            except Exception as e:  # noqa: BLE001 - a failed read is tried again at the next poll
                if self.error != str(e):
                    log.warning("reading the session failed", session=self.session_id, error=str(e))
                self.error = str(e)
            now = time.monotonic()
            ending = any(c.ended_at is not None and now - c.ended_at < FAST_POLL_FOR_S for c in self.calls.values())
            fast = ending or bool(self._held)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FAST_POLL_S if fast else self.relay.poll_s)

    async def poll(self) -> None:
        client = self.relay.client
        if self._read_to is None:  # the first read: from now on (older events are read for whoever asks)
            state, events = await session_log.session_state(client, self.session_id), []
            self._read_to = self.known = state.events
            changed = True
        else:
            state, events = await session_log.read_new(client, self.session_id, self._read_to)
            self._read_to += len(events)
            changed = state != self.state
        if self.started_at is None:
            first = await session_log.read_events(client, self.session_id, 0, 1)
            self.started_at = first[0].at.isoformat() if first else None
        self._held += events
        changed = bool(self._release()) or changed
        self.state = state
        closed = state.status in TERMINAL and (self.known or 0) >= state.events
        if not closed and not events and time.monotonic() - self._open_checked > OPEN_CHECK_S:
            # Terminated, cancelled or timed out: no final status event says so.
            self._open_checked = time.monotonic()
            status = (await client.get_workflow_handle(self.session_id).describe()).status
            closed = status not in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)
        if closed and not self.closed:
            self.closed = changed = True
        if changed:
            self.notify()

    def _release(self) -> list[SessionEvent]:
        """Hand read events to followers, except that the event of a call still streaming (and
        those after it) waits for the call's `end`, up to HOLD_S."""
        cut = len(self._held)
        for i, event in enumerate(self._held):
            call = self.calls.get(event.offset)
            if call is not None and call.ended_at is None:
                if self._hold_until is None:
                    self._hold_until = time.monotonic() + HOLD_S
                if time.monotonic() < self._hold_until:
                    cut = i
                break
        if cut == len(self._held):
            self._hold_until = None
        released, self._held = self._held[:cut], self._held[cut:]
        self.cache.extend(released)
        self.known = (self.known or 0) + len(released)
        for offset in [o for o in self.calls if o < self.known]:
            del self.calls[offset]  # its event is out: the event stands for the deltas
        return released

    # --- one follower -------------------------------------------------------------------------

    async def follow(self, cursor: Cursor) -> AsyncIterator[FeedItem]:
        """Durable events from the cursor on, the deltas of the call in progress, state changes,
        and `end` once the session has ended and everything was given: what every stream of a
        session is made of (ours below; the Managed Agents API's in durable_agents.api.events)."""
        self._subscribe()
        offset, position = cursor.offset, cursor.delta
        sent_state: SessionState | None = None
        try:
            while True:
                changed = self._changed
                if self.known is None:  # the first poll has not answered yet
                    await changed.wait()
                    continue
                if offset < self.cache_start:  # older than what is kept: read them again
                    stop = min(self.cache_start, offset + READ_CHUNK)
                    older = await session_log.read_events(self.relay.client, self.session_id, offset, stop)
                    if not older:  # not readable just now: never skip over them
                        await asyncio.sleep(self.relay.poll_s)
                    for event in older:
                        yield FeedItem(event=event)
                        offset, position = event.offset + 1, None
                    continue  # the cache may have moved on meanwhile
                for event in [e for e in self.cache if e.offset >= offset]:
                    yield FeedItem(event=event)
                    offset, position = event.offset + 1, None
                call = self.calls.get(offset)
                if call is not None:
                    for delta in call.after(position):
                        yield FeedItem(delta=delta)
                        position = (delta.attempt, delta.seq)
                state = self.state
                if state is not None and state != sent_state and offset >= state.events:
                    sent_state = state
                    yield FeedItem(state=state)
                if self.closed and offset >= (self.known or 0):
                    yield FeedItem(ended=True, end=state.status if state is not None else None)
                    return
                await changed.wait()
        finally:
            self._unsubscribe()

    async def stream(self, cursor: Cursor) -> AsyncIterator[ServerSentEvent]:
        """The session as our Server-Sent Events (ids N and N.ATTEMPT.SEQ, then `state`, `end`)."""
        async for item in self.follow(cursor):
            if item.event is not None:
                yield _sse_event(self.session_id, item.event)
            elif item.delta is not None:
                yield _sse_delta(item.delta)
            elif item.state is not None:
                data = {"session": self.session_id, "started_at": self.started_at, **item.state.model_dump(mode="json")}
                yield ServerSentEvent(data=json.dumps(data), event="state")
            elif item.ended:
                yield ServerSentEvent(data=json.dumps({"session": self.session_id, "status": item.end}), event="end")


@dataclass(frozen=True)
class FeedItem:
    """One thing a follower of a session gets: a durable event, a delta, a new state, or the end."""

    event: SessionEvent | None = None
    delta: LiveDelta | None = None
    state: SessionState | None = None
    ended: bool = False  # the session has ended and everything was given
    end: str | None = None  # its final status


class Relay:
    """Every session the relay knows: those with followers, and those whose deltas it keeps."""

    def __init__(self, client: Client, *, poll_s: float = POLL_S) -> None:
        if poll_s <= 0:
            raise ValueError("poll_s must be > 0")
        self.client = client
        self.poll_s = poll_s
        self.feeds: dict[str, SessionFeed] = {}
        self.received = 0
        self.rejected = 0
        self._swept = time.monotonic()

    def feed(self, session_id: str, *, following: bool = False) -> SessionFeed:
        """The session's feed; for a new follower, a fresh one if the session it knew has ended
        (a workflow id can be used again by a new session)."""
        feed = self.feeds.get(session_id)
        if feed is None or (following and feed.closed):
            feed = self.feeds[session_id] = SessionFeed(self, session_id)
        return feed

    def accept(self, batch: LiveBatch) -> None:
        touched: dict[str, SessionFeed] = {}
        for delta in batch.deltas:
            feed = self.feed(delta.session)
            if feed.add(delta):
                self.received += 1
                touched[delta.session] = feed
            else:
                self.rejected += 1
        for feed in touched.values():
            feed.notify()
        self._sweep()

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < 10 and len(self.feeds) <= MAX_FEEDS:
            return
        self._swept = now
        idle = sorted((f for f in self.feeds.values() if f.subscribers == 0), key=lambda f: f.touched)
        excess = len(self.feeds) - MAX_FEEDS
        for i, feed in enumerate(idle):
            if i < excess or now - feed.touched > FEED_TTL_S:
                del self.feeds[feed.session_id]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _temporal_error(e: RPCError, session_id: str) -> JSONResponse:
    if e.status == RPCStatusCode.NOT_FOUND:
        return _error(404, f"no session {session_id!r}")
    return _error(503, f"cannot read session {session_id!r}: Temporal said: {e.message}")


def create_app(relay: Relay, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The relay's HTTP API: POST /live/deltas (workers), GET /sessions/{id}/events (SSE),
    GET /sessions/{id} (JSON state), GET /health; and `routes` beside them (the /v1 API)."""

    async def post_deltas(request: Request) -> Response:
        try:
            batch = LiveBatch.model_validate_json(await request.body())
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return _error(400, f"not a batch of deltas: {where}: {first['msg']} ({e.error_count()} problem(s))")
        relay.accept(batch)
        return Response(status_code=204)

    async def session_events(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            cursor = Cursor.parse(request.headers.get("last-event-id"), request.query_params.get("from"))
        except ValueError as e:
            return _error(400, str(e))
        try:
            state = await session_log.session_state(relay.client, session_id)
        except RPCError as e:
            return _temporal_error(e, session_id)
        if cursor.offset > state.events:
            return _error(
                400, f"offset {cursor.offset} is past the end of the log of {session_id!r} ({state.events} events)"
            )
        return EventSourceResponse(
            relay.feed(session_id, following=True).stream(cursor),
            ping=PING_S,
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        try:
            state = await session_log.session_state(relay.client, session_id)
        except RPCError as e:
            return _temporal_error(e, session_id)
        feed = relay.feeds.get(session_id)
        call = feed.newest_call(at_least=state.events) if feed is not None else None
        live = None if call is None else {"offset": call.offset, "attempt": call.attempt, "deltas": len(call.deltas)}
        return JSONResponse({"session": session_id, "state": state.model_dump(mode="json"), "live_call": live})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"ok": True, "sessions": len(relay.feeds), "deltas_received": relay.received, "deltas_late": relay.rejected}
        )

    return Starlette(
        routes=[
            *routes,
            Route(DELTAS_PATH, post_deltas, methods=["POST"]),
            Route("/sessions/{session_id:path}/events", session_events, methods=["GET"]),
            Route("/sessions/{session_id:path}", session, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
