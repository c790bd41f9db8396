"""The warm pool: containers of the default sandbox spec started ahead of need, with their shell
running, so provisioning for a session is a bind (milliseconds) instead of a `docker run`.

It sizes itself to demand: it holds as many containers as sessions asked this host for in the
busiest `BUCKET_S` seconds of the last `window_s` (every provision of the pool's spec counts,
taken from the pool or not), never fewer than `min_size` nor more than `max_size`. It refills off
the critical path: once no session has asked for a container or run a call for `QUIET_S` (a
burst's own provisions and calls go first; below `min_size` it refills at once), several at once;
and it gives back what a quieter period no longer needs, one container at a time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import docker.errors
import structlog

from durable_agents.contracts import SandboxSpec
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes

log = structlog.get_logger("pool")

BUCKET_S = 60.0
QUIET_S = 0.5


class WarmPool:
    def __init__(
        self,
        sandboxes: DockerSandboxes,
        size: int,
        spec: SandboxSpec | None = None,
        max_size: int | None = None,
        window_s: float = 300.0,
        parallel: int = 4,
    ) -> None:
        self.sandboxes = sandboxes
        self.min_size = size
        self.max_size = size if max_size is None or size == 0 else max(size, max_size)  # 0: no pool at all
        self.window_s = window_s
        self.parallel = max(1, parallel)  # containers started at once while refilling
        self.spec = spec or SandboxSpec()
        self.ready: list[str] = []
        self.held: set[str] = set()  # every container the pool answers for (the reaper leaves them)
        self.starting = 0
        self._asked: deque[float] = deque()  # when sessions asked for a container of the pool's spec
        self._busy_at = 0.0  # when a session's call last ran on this host
        self._lock = threading.Lock()
        self._closed = False

    def matches(self, spec: SandboxSpec) -> bool:
        return self.max_size > 0 and spec.container_key() == self.spec.container_key()

    def note_busy(self) -> None:
        """A session's call ran on this host just now: the pool's refill waits for a quiet moment."""
        self._busy_at = time.monotonic()

    def quiet(self) -> bool:
        """No session has asked for a container or run a call on this host for QUIET_S."""
        now = time.monotonic()
        with self._lock:
            asked = self._asked[-1] if self._asked else 0.0
        return now - max(asked, self._busy_at) >= QUIET_S

    def target(self, now: float | None = None) -> int:
        """How many ready containers the pool aims at: the recent peak of demand, within its bounds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._asked and self._asked[0] < now - self.window_s:
                self._asked.popleft()
            asked = list(self._asked)
        # The most asks within any BUCKET_S of the window (a sliding window over the sorted times).
        peak, first = 0, 0
        for last, at in enumerate(asked):
            while at - asked[first] >= BUCKET_S:
                first += 1
            peak = max(peak, last - first + 1)
        return max(self.min_size, min(self.max_size, peak))

    def take(self, session_id: str) -> str | None:
        """A warm container bound to `session_id`, or None when the pool is empty (the ask counts)."""
        with self._lock:
            self._asked.append(time.monotonic())
            if not self.ready:
                return None
            container_id = self.ready.pop()
        try:
            self.sandboxes.bind(container_id, session_id)
        except Exception:  # noqa: BLE001 - a broken pool container is dropped; the caller goes cold
            self.sandboxes.destroy(container_id)
            return None
        finally:
            self.held.discard(container_id)
        return container_id

    def _add_one(self) -> None:
        container = self.sandboxes.create(None, self.spec)
        container_id = container.id or ""
        self.held.add(container_id)
        try:
            self.sandboxes.warm(container_id)
        except Exception:
            self.held.discard(container_id)
            self.sandboxes.destroy(container_id)
            raise
        with self._lock:
            if not self._closed:
                self.ready.append(container_id)
                return
        self.held.discard(container_id)  # drained while this one was starting
        self.sandboxes.destroy(container_id)

    async def _start_one(self) -> None:
        try:
            await asyncio.to_thread(self._add_one)
        except (docker.errors.APIError, OSError, RuntimeError) as e:
            log.warning("warm pool could not add a container", error=str(e))
            await asyncio.sleep(5)
        finally:
            self.starting -= 1

    def _trim_one(self) -> bool:
        """Give back one ready container the pool no longer needs."""
        with self._lock:
            if len(self.ready) <= self.target():
                return False
            container_id = self.ready.pop(0)  # the oldest
        self.held.discard(container_id)
        self.sandboxes.destroy(container_id)
        return True

    async def run(self) -> None:
        """Keep the pool at its target: refill several at once, shrink one at a time."""
        if self.max_size == 0:
            return
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                want = self.target() - len(self.ready) - self.starting
                if len(self.ready) + self.starting >= self.min_size and not self.quiet():
                    want = min(want, 0)  # sessions are asking now: their provisions first
                while want > 0 and self.starting < self.parallel:
                    self.starting += 1
                    want -= 1
                    task = asyncio.create_task(self._start_one())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if want < 0 and not self.starting:
                    await asyncio.to_thread(self._trim_one)
                await asyncio.sleep(0.1)
        finally:
            for task in tasks:
                task.cancel()

    def drain(self) -> None:
        """Remove the pool's containers; one still starting removes itself when it is up."""
        with self._lock:
            self._closed = True
            ready, self.ready = self.ready, []
        for container_id in ready:
            self.sandboxes.destroy(container_id)
            self.held.discard(container_id)
