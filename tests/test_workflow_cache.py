"""The harness worker's workflow cache bounded in bytes: which sessions the governor evicts, and
that an evicted session is replayed into the same state and goes on as if it had stayed cached.
The session runs on fake activities (no model, no Docker), as in test_workflow_fakes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from durable_agents.contracts import SANDBOXES_QUEUE, SessionResult
from durable_agents.worker import WORKFLOW_RUNNER
from durable_agents.workflow_cache import CacheGovernor, CacheLedger
from durable_agents.workflows.session import SessionWorkflow
from tests.helpers import wait_for
from tests.test_workflow_fakes import Fakes, _answered, _status, agent, bash, events, new_fakes, start, text


def test_the_ledger_evicts_waiting_runs_least_recently_active_first_until_the_rest_fit() -> None:
    ledger = CacheLedger()
    ledger.note("old-idle", 100, waiting=True)
    ledger.note("working", 100, waiting=False)
    ledger.note("new-idle", 100, waiting=True)
    ledger.note("other-worker", 10_000, waiting=True)
    held = {"old-idle", "working", "new-idle"}
    assert ledger.held_bytes(held) == 300
    assert ledger.to_evict(held, 300, min_idle_s=0) == []
    assert ledger.to_evict(held, 250, min_idle_s=0) == ["old-idle"]
    assert ledger.to_evict(held, 50, min_idle_s=0) == ["old-idle", "new-idle"]  # never the working one
    assert ledger.to_evict(held, 50, min_idle_s=3600) == []  # none has waited an hour yet
    ledger.note("old-idle", 100, waiting=False)  # it took a message: now working, and the newest
    assert ledger.to_evict(held, 250, min_idle_s=0) == ["new-idle"]
    ledger.prune(held)
    assert ledger.held_bytes({"other-worker"}) == 0


def test_a_budget_is_more_than_zero() -> None:
    with pytest.raises(ValueError, match="more than 0 bytes"):
        CacheGovernor(None, 0)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def session_worker(client: Client, fakes: Fakes) -> AsyncIterator[tuple[str, Worker]]:
    queue = f"cache-{uuid.uuid4().hex[:8]}"
    harness = Worker(
        client,
        task_queue=queue,
        workflows=[SessionWorkflow],
        activities=[fakes.call_model],
        workflow_runner=WORKFLOW_RUNNER,
    )
    sandboxes = [
        Worker(client, task_queue=SANDBOXES_QUEUE, activities=[fakes.provision_sandbox, fakes.provision_and_execute]),
        Worker(
            client,
            task_queue=fakes.host_queue,
            activities=[fakes.execute, fakes.snapshot_workspace, fakes.destroy_sandbox],
        ),
    ]
    async with contextlib.AsyncExitStack() as stack:
        for w in [harness, *sandboxes]:
            await stack.enter_async_context(w)
        yield queue, harness


async def test_an_idle_session_evicted_for_its_size_is_replayed_into_the_same_log_and_goes_on(
    chaos_client: Client,
) -> None:
    fakes = new_fakes(bash("echo one", "t1"), text("idle now"), bash("echo two", "t2"), text("done"))
    async with session_worker(chaos_client, fakes) as (queue, worker):
        roomy, tight = CacheGovernor(worker, 1 << 40, min_idle_s=0), CacheGovernor(worker, 1, min_idle_s=0)
        handle = await start(chaos_client, queue, agent(), "work")
        await wait_for(lambda: _status(handle, "idle"), 20, "the first answer")
        run_id = (await handle.describe()).run_id
        before = await events(handle)
        assert run_id in roomy.held() and roomy.sweep() == []  # it fits: it stays
        assert tight.sweep() == [run_id]

        async def evicted() -> bool:
            return run_id not in tight.held()

        await wait_for(evicted, 20, "the eviction")
        calls, executed = len(fakes.requests), list(fakes.executed)
        # The query replays the run from its history: the same log, and nothing is run again.
        assert await events(handle) == before
        assert run_id in tight.held()
        assert len(fakes.requests) == calls and fakes.executed == executed
        # Evicted again, it takes the next message and goes on where it was.
        await wait_for(lambda: _status(handle, "idle"), 20, "the idle status after replay")
        assert tight.sweep() == [run_id]
        await wait_for(evicted, 20, "the second eviction")
        await handle.execute_update("send_message", "again")
        await wait_for(lambda: _answered(handle, "done"), 20, "the second answer")
        await handle.signal("end_session")
        result: SessionResult = await handle.result()
        log = await events(handle)
    assert result.status == "done" and result.answer == "done" and result.turns == 4
    assert fakes.executed == ["echo one", "echo two"]
    assert log[: len(before)] == before
    assert [e.offset for e in log] == list(range(len(log)))
    assert [e.kind for e in log].count("user_message") == 2
