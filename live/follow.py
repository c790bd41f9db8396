"""Following a session (`da follow`): where its events come from and when to stop.

Two sources give the same items: the live relay's SSE stream (`SseSource`: durable events,
the deltas of the model call in progress, state changes; it reconnects with `Last-Event-ID`
when the connection drops), or the session log read straight from Temporal (`TemporalSource`:
durable events and state only, no tokens). `follow` reads the session and, as their
`subagent_started` events appear, its subagents, and hands every item to a renderer
(`live.render`) until the session is idle or has ended and every subagent is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, aconnect_sse
from temporalio.client import Client

from durable_agents import session_log
from durable_agents.contracts import LiveDelta, SessionEvent, SessionState, SubagentStarted, parse_event
from durable_agents.errors import UserError
from durable_agents.live.relay import PING_S

TERMINAL = ("done", "failed")
SETTLED = ("idle", "done", "failed")  # nothing more happens until someone sends a message
POLL_S = 0.25


class FollowError(UserError):
    """The session cannot be followed (unknown, a bad offset, the live server lost); the message says why."""


@dataclass
class Item:
    """One thing a follower receives: a durable event, a delta, a state change, or the end."""

    session: str
    kind: Literal["event", "delta", "state", "end"]
    received_at: float  # when the follower received it (Unix time)
    sse_id: str | None = None
    event: SessionEvent | None = None
    delta: LiveDelta | None = None
    state: SessionState | None = None
    started_at: datetime | None = None  # state: when the session started
    status: str | None = None  # end: how it ended


class Source(Protocol):
    live: bool  # whether it brings deltas

    def items(self, session_id: str, start: int) -> AsyncIterator[Item]: ...


class TemporalSource:
    """The session log read from Temporal with queries (no history); durable events only."""

    live = False

    def __init__(self, client: Client, poll_s: float = POLL_S) -> None:
        self.client = client
        self.poll_s = poll_s

    async def items(self, session_id: str, start: int) -> AsyncIterator[Item]:
        offset = start
        last: SessionState | None = None
        first = await session_log.read_events(self.client, session_id, 0, 1)
        started_at = first[0].at if first else None
        while True:
            state, events = await session_log.read_new(self.client, session_id, offset)
            if offset > state.events:
                end = f"{state.events} events"
                raise FollowError(f"offset {offset} is past the end of the log of {session_id!r} ({end})")
            now = time.time()
            for event in events:
                yield Item(session_id, "event", now, str(event.offset), event=event)
                offset = event.offset + 1
            if state != last and offset >= state.events:
                last = state
                yield Item(session_id, "state", now, state=state, started_at=started_at)
            if state.status in TERMINAL and offset >= state.events:
                yield Item(session_id, "end", now, status=state.status)
                return
            await asyncio.sleep(self.poll_s)


def _item(session_id: str, name: str, data: str, sse_id: str | None) -> Item | None:
    now = time.time()
    if name == "event":
        body = json.loads(data)
        body.pop("session", None)
        return Item(session_id, "event", now, sse_id, event=parse_event(body))
    if name == "delta":
        return Item(session_id, "delta", now, sse_id, delta=LiveDelta.model_validate_json(data))
    if name == "state":
        body = json.loads(data)
        body.pop("session", None)
        started = body.pop("started_at", None)
        started_at = datetime.fromisoformat(started) if started else None
        return Item(session_id, "state", now, state=SessionState.model_validate(body), started_at=started_at)
    if name == "end":
        return Item(session_id, "end", now, status=json.loads(data).get("status"))
    return None  # a kind this follower does not know: newer servers may add some


class SseSource:
    """The live relay's stream of a session; reconnects with Last-Event-ID when it drops."""

    live = True

    def __init__(self, base_url: str, *, reconnects: int = 20) -> None:
        self.base_url = base_url.rstrip("/")
        self.reconnects = reconnects

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(10.0, read=PING_S * 3)  # the server pings every PING_S

    async def reachable(self) -> str | None:
        """None if the server answers, else why not."""
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                (await http.get(self.base_url + "/health")).raise_for_status()
        except httpx.HTTPError as e:
            return str(e) or type(e).__name__
        return None

    async def items(self, session_id: str, start: int) -> AsyncIterator[Item]:
        url = f"{self.base_url}/sessions/{quote(session_id, safe='/')}/events"
        last_id: str | None = None
        failures = 0
        async with httpx.AsyncClient(timeout=self._timeout()) as http:
            while True:
                headers = {"Last-Event-ID": last_id} if last_id else {}
                params = None if last_id else {"from": str(start)}
                try:
                    async with aconnect_sse(http, "GET", url, params=params, headers=headers) as source:
                        response = source.response
                        if response.status_code != 200:
                            await response.aread()
                            raise FollowError(_error_text(response))
                        async for sse in source.aiter_sse():
                            failures = 0
                            item = _item(session_id, sse.event, sse.data, sse.id or None)
                            if sse.id:
                                last_id = sse.id
                            if item is None:
                                continue
                            yield item
                            if item.kind == "end":
                                return
                    problem = "the server closed the stream"
                except (httpx.TransportError, SSEError) as e:
                    problem = str(e) or type(e).__name__
                failures += 1
                if failures > self.reconnects:
                    raise FollowError(f"lost the live server at {self.base_url}: {problem}")
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"the live server answered {response.status_code}: {response.text[:200]}"


class Renderer(Protocol):
    def show(self, item: Item) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Failed:
    session: str
    error: BaseException


async def follow(source: Source, session_id: str, start: int, renderer: Renderer) -> None:
    """Render the session from offset `start`, and its subagents nested, until it is idle or has
    ended (and its subagents are done). Raises FollowError (or Temporal's RPCError) if it cannot."""
    queue: asyncio.Queue[Item | _Failed] = asyncio.Queue()
    pumps: dict[str, asyncio.Task[None]] = {}
    offsets: dict[str, int] = {}
    states: dict[str, SessionState] = {}
    ended: set[str] = set()

    async def pump(sid: str, first: int) -> None:
        try:
            async with contextlib.aclosing(source.items(sid, first)) as items:
                async for item in items:
                    await queue.put(item)
        except Exception as e:  # noqa: BLE001 - handed to the loop below, which raises it
            await queue.put(_Failed(sid, e))

    def watch(sid: str, first: int) -> None:
        offsets[sid] = first
        pumps[sid] = asyncio.create_task(pump(sid, first), name=f"follow {sid}")

    def finished(sid: str, settled: tuple[str, ...]) -> bool:
        state = states.get(sid)
        return sid in ended or (state is not None and state.status in settled and offsets[sid] >= state.events)

    watch(session_id, start)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Failed):
                raise item.error
            renderer.show(item)
            sid = item.session
            if item.event is not None:
                offsets[sid] = item.event.offset + 1
                child = item.event.child if isinstance(item.event, SubagentStarted) else None
                if child and child not in offsets:
                    watch(child, 0)
            elif item.state is not None:
                states[sid] = item.state
            elif item.kind == "end":
                ended.add(sid)
            if finished(session_id, SETTLED) and all(finished(s, TERMINAL) for s in offsets if s != session_id):
                return
    finally:
        for task in pumps.values():
            task.cancel()
        await asyncio.gather(*pumps.values(), return_exceptions=True)
        renderer.close()
