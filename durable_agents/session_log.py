"""The session log as a Python API: events by offset across continue-as-new runs, and export.
(What changes a session — messages, approvals, custom tool results — is in `durable_agents.client`.)

A session is one workflow id and one or more runs: each run continues the one before when its
history grows long (continue-as-new). Offsets are global and gap-free. A run's memo says where
its events start (`first_offset`) and which run it continues (`previous_run_id`), so finding the
runs for a slice costs a `describe` per run; the events themselves are read with a query, which
Temporal answers for a closed run by replaying that run's history on a harness worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from durable_agents.contracts import GET_EVENTS, GET_STATE, SessionEvent, SessionState
from durable_agents.errors import UserError

EXPORT_CHUNK = 500
# How long a query waits for the server to see a harness worker poll the session's task queue.
POLLER_WAIT_S = 30.0
# A replay that stalled past the SDK's deadlock timeout: the query is asked this many times more.
DEADLOCK_RETRIES = 2
DEADLOCK_MARK = "Potential deadlock detected"


class SessionLogError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Run:
    run_id: str
    first_offset: int
    previous_run_id: str | None
    number: int


async def _run(client: Client, session_id: str, run_id: str | None) -> Run:
    description = await client.get_workflow_handle(session_id, run_id=run_id).describe()
    memo = await description.memo()
    return Run(
        run_id=description.run_id,
        first_offset=int(memo.get("first_offset", 0)),
        previous_run_id=memo.get("previous_run_id"),
        number=int(memo.get("run", 1)),
    )


async def runs(client: Client, session_id: str, back_to: int = 0) -> list[Run]:
    """The session's runs, oldest first, back to the run that holds offset `back_to`."""
    found = [await _run(client, session_id, None)]
    while found[-1].first_offset > back_to and found[-1].previous_run_id:
        found.append(await _run(client, session_id, found[-1].previous_run_id))
    return found[::-1]


async def query(handle: WorkflowHandle[Any, Any], name: str, result_type: Any, args: Sequence[Any] = ()) -> Any:
    """A query of the session's log or state, asked again where the failure says nothing about it:
    - the server refuses one ("no poller seen for task queue recently") where it has not seen a
      harness worker poll the session's queue for a while: a closed run's query goes to the normal
      queue, which a worker busy with a burst, or one whose server node was just lost, may not have
      polled lately. Asked again for up to POLLER_WAIT_S.
    - a closed run answers by replaying its history on a harness worker, and the SDK fails the query
      ("Potential deadlock detected", TMPRL1101) where one step of that replay took over 2 s of wall
      time, which a full garbage collection in a busy worker process can (measured: 2.7 s). A query
      changes nothing, so it is asked again (the worker replays afresh), up to DEADLOCK_RETRIES times."""
    deadline = time.monotonic() + POLLER_WAIT_S
    stalled = 0
    while True:
        try:
            return await handle.query(name, args=list(args), result_type=result_type)
        except RPCError as e:
            unpolled = e.status == RPCStatusCode.FAILED_PRECONDITION and "no poller seen" in e.message
            if not unpolled or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        except WorkflowQueryFailedError as e:
            stalled += 1
            if DEADLOCK_MARK not in str(e) or stalled > DEADLOCK_RETRIES:
                raise


async def session_state(client: Client, session_id: str) -> SessionState:
    state: SessionState = await query(client.get_workflow_handle(session_id), GET_STATE, SessionState)
    return state


async def read_events(client: Client, session_id: str, start: int = 0, stop: int | None = None) -> list[SessionEvent]:
    """Events with offsets in [start, stop), in order, from every run that holds some of them."""
    if start < 0 or (stop is not None and stop < start):
        raise SessionLogError(f"no event range [{start}, {stop}): offsets start at 0 and stop >= start")
    if start == stop:
        return []
    handle = client.get_workflow_handle(session_id)

    async def in_current_run() -> list[SessionEvent]:
        found: list[SessionEvent] = await query(handle, GET_EVENTS, list[SessionEvent], [start, stop])
        return found

    # The common case (follow, or a session that never continued): the current run holds them all,
    # and one query says so. A closed session answers each query by replaying its history.
    current = await in_current_run()
    if current and current[0].offset == start:
        return current
    # Some: they start at the current run's first offset, and earlier runs hold the rest. None: the
    # state says where the run starts (each query of a closed run is a replay: asked only then).
    if not current:
        latest: SessionState = await query(handle, GET_STATE, SessionState)
        if start >= latest.events:  # nothing at `start` yet
            return []
        if start >= latest.first_offset:  # the run continued since the first query: asked again
            return await in_current_run()
    chain = await runs(client, session_id, back_to=start)
    events: list[SessionEvent] = []
    for i, run in enumerate(chain):
        end = chain[i + 1].first_offset if i + 1 < len(chain) else None
        if end is not None and end <= start:
            continue
        if stop is not None and run.first_offset >= stop:
            break
        lo = max(start, run.first_offset)
        hi = stop if end is None else (end if stop is None else min(stop, end))
        if end is None and current and current[0].offset == run.first_offset:
            events += current  # the run asked first (none continued it since): read already
            continue
        run_handle = client.get_workflow_handle(session_id, run_id=run.run_id)
        events += await query(run_handle, GET_EVENTS, list[SessionEvent], [lo, hi])
    return events


async def read_new(client: Client, session_id: str, start: int) -> tuple[SessionState, list[SessionEvent]]:
    """The session's state and its events from `start` up to what that state counts: one query
    when nothing is new, two when something is (what followers poll)."""
    handle = client.get_workflow_handle(session_id)
    state: SessionState = await query(handle, GET_STATE, SessionState)
    if start >= state.events:
        return state, []
    if start >= state.first_offset:
        return state, await query(handle, GET_EVENTS, list[SessionEvent], [start, state.events])
    return state, await read_events(client, session_id, start, state.events)


async def iter_events(client: Client, session_id: str, start: int = 0) -> AsyncIterator[SessionEvent]:
    """Every event from `start` on, in chunks (a run is replayed once per chunk it holds)."""
    offset = start
    while True:
        chunk = await read_events(client, session_id, offset, offset + EXPORT_CHUNK)
        for event in chunk:
            yield event
        if len(chunk) < EXPORT_CHUNK:
            return
        offset += len(chunk)


async def export(client: Client, session_id: str, out: IO[str]) -> int:
    """The whole log as JSON Lines (one event per line, offsets 0..n-1); returns the count. The
    file outlives Temporal's retention period, which otherwise ends the record of closed runs."""
    count = 0
    async for event in iter_events(client, session_id):
        if event.offset != count:
            raise SessionLogError(f"{session_id}: the log has a gap: expected offset {count}, got {event.offset}")
        out.write(json.dumps(event.model_dump(mode="json"), ensure_ascii=False) + "\n")
        count += 1
    return count
