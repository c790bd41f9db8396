"""The harness worker's workflow cache, bounded in bytes as well as in count.

A Temporal worker keeps every workflow run it executes in a cache (the run's state, and the SDK's
state machines for it), so that the run's next task needs no replay; the SDK bounds that cache by
count only (`max_cached_workflows`). A long session costs megabytes there, and a worker holding a
thousand long idle sessions would run out of memory well before the count.

So each session notes here, as it goes (each status change, model turn and tool result), the size
of its history so far and whether it now waits on someone (idle: for a user message; waiting: for
an approval or a client's tool result). The history is what the run's cache entry is built from
(every model turn, tool output and message the run holds came in through it, and the SDK's state
machines keep the activity inputs it records), so its size is the measure of an entry here; a
cached session's resident memory grows with it: about 2-3x its size where tool outputs dominate
(`bench/session_memory.py`, 100 turns of 5 KB: 2.9 MB of RSS for 1.28 MB of history), up to ~8x
for many small turns (100 turns of 16 B: 1.75 MB for ~0.23 MB), where per-turn overhead dominates.

A governor beside the harness worker (started by `durable_agents.worker.run`) sums the sizes of the
runs the worker holds and, above the budget (DA_HARNESS_CACHE_MB), asks the SDK to evict the runs
that have waited for MIN_IDLE_S or more, least recently active first, until the rest fit. A running
session (a model call or tool run in flight) is never chosen: it would be replayed within seconds.
Once the evicted runs are gone, it hands the freed memory back to the system (glibc keeps it
resident otherwise).

Why an eviction changes nothing but cost: an evicted run is rebuilt on its next task (a message, a
query such as the session log's, a timer) by replaying its history through the same workflow code,
which Temporal guarantees gives the same state; the run's durable state is its history, never the
cache. The SDK itself evicts the same way when its cache is full or a task fails.

The Python SDK has no public call to evict one run; its core has one (`request_workflow_eviction`,
which queues an eviction activation: a run with a task in flight is evicted once that task is
done), reached here through the worker's bridge. Should a later SDK move the attributes read
here, the governor says so once and stops; the count bound still holds.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

import structlog
from temporalio import workflow
from temporalio.worker import Worker

log = structlog.get_logger("workflow_cache")

SWEEP_EVERY_S = 1.0
# A session that has just gone idle, or was just replayed, stays this long: one that is followed or
# written to is not replayed over and over.
MIN_IDLE_S = 30.0


@dataclass(frozen=True)
class _Run:
    bytes: int
    waiting: bool  # on a user, a client or an approval: nothing of its own in flight
    seq: int  # when it was last noted (a larger number: more recently)
    at: float  # the same, on the monotonic clock


class CacheLedger:
    """What each cached run weighs and whether it waits. Written from workflow code (the worker's
    workflow threads), read by the governor (the event loop): hence the lock."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def note(self, run_id: str, history_bytes: int, waiting: bool) -> None:
        with self._lock:
            self._runs[run_id] = _Run(history_bytes, waiting, next(self._seq), time.monotonic())

    def forget(self, run_ids: Collection[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                self._runs.pop(run_id, None)

    def held_bytes(self, held: Collection[str]) -> int:
        with self._lock:
            return sum(r.bytes for run_id, r in self._runs.items() if run_id in held)

    def to_evict(self, held: Collection[str], budget_bytes: int, min_idle_s: float = MIN_IDLE_S) -> list[str]:
        """The runs to evict so that the held ones fit in `budget_bytes`: runs that have waited at
        least `min_idle_s`, least recently active first; as many as needed, or all of those if even
        that is not enough."""
        with self._lock:
            runs = {run_id: r for run_id, r in self._runs.items() if run_id in held}
        total = sum(r.bytes for r in runs.values())
        settled = time.monotonic() - min_idle_s
        chosen: list[str] = []
        for run_id, r in sorted(runs.items(), key=lambda item: item[1].seq):
            if total <= budget_bytes:
                break
            if r.waiting and r.at <= settled:
                chosen.append(run_id)
                total -= r.bytes
        return chosen

    def prune(self, held: Collection[str]) -> None:
        """Forget runs the worker no longer holds (finished, continued as new, evicted by the SDK)."""
        with self._lock:
            for run_id in [r for r in self._runs if r not in held]:
                del self._runs[run_id]


LEDGER = CacheLedger()


def note_run(waiting: bool) -> None:
    """From workflow code: this run's history size now, and whether it waits on someone. A side
    note outside the workflow's state (nothing the workflow does depends on it), so replay-safe."""
    info = workflow.info()
    LEDGER.note(info.run_id, info.get_current_history_size(), waiting)


def release_free_memory() -> bool:
    """Hand the allocator's free pages back to the system (glibc's malloc_trim; elsewhere nothing).
    What evicted sessions held is free once they are gone, but glibc keeps it resident until asked."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim(0)
    return True


class CacheGovernor:
    """Keeps one worker's cached runs within a byte budget by evicting the waiting ones."""

    def __init__(
        self, worker: Worker, budget_bytes: int, ledger: CacheLedger = LEDGER, min_idle_s: float = MIN_IDLE_S
    ) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"a cache budget is more than 0 bytes, not {budget_bytes}")
        self.worker = worker
        self.budget_bytes = budget_bytes
        self.ledger = ledger
        self.min_idle_s = min_idle_s
        self.evicted = 0
        self._leaving: set[str] = set()  # asked to go; once they are gone, free memory is released

    def held(self) -> Collection[str]:
        """The run ids this worker holds in its cache now."""
        running: dict[str, object] = self.worker._workflow_worker._running_workflows  # type: ignore[union-attr]
        return running.keys()

    def sweep(self) -> list[str]:
        """Evict what does not fit; returns the run ids asked to go."""
        held = set(self.held())
        if self._leaving and not self._leaving & held:
            self._leaving.clear()
            release_free_memory()
        self.ledger.prune(held)
        chosen = self.ledger.to_evict(held, self.budget_bytes, self.min_idle_s)
        bridge = self.worker._bridge_worker
        for run_id in chosen:
            bridge.request_workflow_eviction(run_id)
        self.ledger.forget(chosen)  # noted again if it is replayed
        self._leaving.update(chosen)
        self.evicted += len(chosen)
        return chosen

    async def run(self, every_s: float = SWEEP_EVERY_S) -> None:
        """Sweep every `every_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            try:
                chosen = self.sweep()
            except AttributeError as e:  # the SDK's internals moved: keep the count bound only
                log.error(
                    "workflow cache: cannot evict by size with this SDK; only the count bound holds", error=str(e)
                )
                return
            if chosen:
                log.info("workflow cache: evicted waiting sessions", runs=len(chosen), budget_bytes=self.budget_bytes)
