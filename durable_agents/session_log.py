"""The session log as a Python API: events by offset across continue-as-new runs, and export.
(What changes a session — messages, approvals, custom tool results — is in `durable_agents.client`.)

A session is one workflow id and one or more runs: each run continues the one before when its
history grows long (continue-as-new). Offsets are global and gap-free. A run's memo says where
its events start (`first_offset`) and which run it continues (`previous_run_id`), so finding the
runs for a slice costs a `describe` per run; the events themselves are read with a query, which
Temporal answers for a closed run by replaying that run's history on a harness worker.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from temporalio.client import Client

from durable_agents.contracts import GET_EVENTS, GET_STATE, SessionEvent, SessionState
from durable_agents.errors import UserError

EXPORT_CHUNK = 500


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


async def session_state(client: Client, session_id: str) -> SessionState:
    return await client.get_workflow_handle(session_id).query(GET_STATE, result_type=SessionState)


async def read_events(client: Client, session_id: str, start: int = 0, stop: int | None = None) -> list[SessionEvent]:
    """Events with offsets in [start, stop), in order, from every run that holds some of them."""
    if start < 0 or (stop is not None and stop < start):
        raise SessionLogError(f"no event range [{start}, {stop}): offsets start at 0 and stop >= start")
    handle = client.get_workflow_handle(session_id)
    latest = await handle.query(GET_STATE, result_type=SessionState)
    if start >= latest.first_offset:  # the common case (follow): only the current run
        return await handle.query(GET_EVENTS, args=[start, stop], result_type=list[SessionEvent])
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
        run_handle = client.get_workflow_handle(session_id, run_id=run.run_id)
        events += await run_handle.query(GET_EVENTS, args=[lo, hi], result_type=list[SessionEvent])
    return events


async def read_new(client: Client, session_id: str, start: int) -> tuple[SessionState, list[SessionEvent]]:
    """The session's state and its events from `start` up to what that state counts: one query
    when nothing is new, two when something is (what followers poll)."""
    handle = client.get_workflow_handle(session_id)
    state = await handle.query(GET_STATE, result_type=SessionState)
    if start >= state.events:
        return state, []
    if start >= state.first_offset:
        return state, await handle.query(GET_EVENTS, args=[start, state.events], result_type=list[SessionEvent])
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
