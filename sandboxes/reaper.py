"""The host's side of a session's end, and the orphan reaper.

Release: a session that has answered and closed leaves its sandbox to its host, so that the
answer never waits for Docker. Every `release_every_s` the host asks Temporal which of its
session containers' sessions still run (one visibility query per 50 sessions; a describe confirms
each one that seems closed) and releases the others: the last snapshot of /workspace where it has
unsaved changes, then the container removed (SandboxActivities.release). The containers are the
state: a worker killed meanwhile finds them at its next start, and releases them then.

Orphans: every `every_s`, this host's containers that no session uses any more go — stopped ones
(a dead sandbox is never used again), those whose session has ended or vanished (released, with
their last snapshot), and those whose session runs with another sandbox (one it replaced). So no
container outlives its session by more than about a second, or `every_s` where Temporal could not
be asked.

While the host is busy (`quiet` says sessions are provisioning or running calls on it), release
passes wait — a burst's own calls go first — but never more than `defer_s` after the last pass,
so no container outlives its session by more than that and a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import docker.errors
import structlog
from docker.models.containers import Container
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from durable_agents.contracts import GET_STATE, ReleaseResult, SessionState
from durable_agents.sandboxes.docker_sandbox import SESSION_LABEL, DockerSandboxes
from durable_agents.sandboxes.memory_mounts import MemoryMounts

log = structlog.get_logger("reaper")

Release = Callable[[str, str], Awaitable[ReleaseResult]]  # (container id, session id) -> how it went
QUERY_BATCH = 50
FRESH_S = 2.0  # a container this new is its session's: its session runs (not asked about yet)
RELEASES_AT_ONCE = 8  # (their removals are bounded again by DockerGates.removals)
DEFER_S = 15.0  # while the host is busy, a release pass waits at most this long after the last one


class Reaper:
    def __init__(
        self,
        client: Client,
        sandboxes: DockerSandboxes,
        every_s: float = 30,
        grace_s: float = 60,
        keep: set[str] | None = None,
        memory: MemoryMounts | None = None,
        release: Release | None = None,
        release_every_s: float = 1.0,
        quiet: Callable[[], bool] | None = None,
        defer_s: float = DEFER_S,
    ) -> None:
        self.client = client
        self.memory = memory  # the sandboxes' memory mounts: a gone session's go with its container
        self.sandboxes = sandboxes
        self.every_s = every_s
        self.grace_s = grace_s  # a container this young may not be in its session's state yet
        self.keep = keep if keep is not None else set()  # the warm pool's containers (its own live set)
        self.release = release  # None: a closed session's container is only removed
        self.release_every_s = release_every_s
        self.quiet = quiet  # None: no busy host to wait for (release passes run every release_every_s)
        self.defer_s = defer_s
        self._released_at = time.monotonic()  # when the last release pass ran

    # --- sessions that have closed --------------------------------------------------------------

    async def _session_closed(self, session_id: str) -> str | None:
        """Why the session no longer needs its sandbox (it closed, or never existed); None while it
        runs or where Temporal cannot tell now."""
        try:
            description = await self.client.get_workflow_handle(session_id).describe()
        except RPCError as e:
            return "its session does not exist" if e.status == RPCStatusCode.NOT_FOUND else None
        if description.status == WorkflowExecutionStatus.RUNNING:
            return None
        return f"its session is {description.status.name.lower() if description.status else 'closed'}"

    async def _running(self, sessions: set[str]) -> set[str]:
        """Those of these sessions that visibility lists as running (batched; one query each)."""
        running: set[str] = set()
        plain = sorted(s for s in sessions if "'" not in s and "\\" not in s)
        for i in range(0, len(plain), QUERY_BATCH):
            ids = ", ".join(f"'{s}'" for s in plain[i : i + QUERY_BATCH])
            async for execution in self.client.list_workflows(f"ExecutionStatus = 'Running' AND WorkflowId IN ({ids})"):
                running.add(execution.id)
        return running

    def _deferred(self) -> bool:
        """A busy host's release pass waits, up to `defer_s` after the last one."""
        if self.quiet is None or self.quiet():
            return False
        return time.monotonic() - self._released_at < self.defer_s

    async def release_closed(self) -> list[str]:
        """Release the containers of this host's sessions that have closed; their ids."""
        if self._deferred():
            return []
        now = self._released_at = time.monotonic()
        owners = {
            c: s
            for c, s in list(self.sandboxes.owners.items())
            if now - self.sandboxes.owned_at.get(c, 0.0) >= FRESH_S and c not in self.keep
        }
        if not owners:
            return []
        try:
            running = await self._running(set(owners.values()))
        except RPCError as e:  # the next pass asks again (and the sweep, later, in any case)
            log.warning("which sessions run is unknown", error=str(e))
            return []
        gate = asyncio.Semaphore(RELEASES_AT_ONCE)

        async def one(container_id: str, session_id: str) -> str | None:
            async with gate:
                reason = await self._session_closed(session_id)  # visibility can lag: asked for sure
                if reason is not None and await self._release(container_id, session_id, reason):
                    return container_id
                return None

        closed = [one(c, s) for c, s in owners.items() if s not in running]
        return [c for c in await asyncio.gather(*closed) if c is not None]

    async def _release(self, container_id: str, session_id: str, reason: str) -> bool:
        if self.release is None:
            removed = await asyncio.to_thread(self.sandboxes.destroy, container_id)
            if self.memory is not None:
                await self.memory.close(session_id)
            return removed
        try:
            result = await self.release(container_id, session_id)
        except Exception as e:  # noqa: BLE001 - tried again at the next pass
            log.warning("sandbox not released", container=container_id[:12], session_id=session_id, error=str(e))
            return False
        log.info(
            "sandbox released",
            container=container_id[:12],
            session_id=session_id,
            reason=reason,
            snapshot=result.snapshot.key if result.snapshot else None,
            error=result.error,
        )
        return True

    # --- orphans ----------------------------------------------------------------------------

    async def _why_orphaned(self, container: Container) -> tuple[str, str | None] | None:
        """Why the container should go, and the session it belonged to; None to keep it."""
        if container.status not in ("running", "created", "restarting"):
            return f"stopped ({container.status})", None
        if container.id in self.keep:
            return None  # in the warm pool, waiting for a session
        try:
            session_id = await asyncio.to_thread(self.sandboxes.bound_session, container)
        except (docker.errors.APIError, RuntimeError) as e:  # cannot tell now: keep it, look again next sweep
            log.warning("bound session unknown", container=(container.id or "")[:12], error=str(e))
            return None
        if not session_id:
            return "an unbound pool container no pool holds", None
        closed = await self._session_closed(session_id)
        if closed is not None:
            return closed, session_id
        created = datetime.fromisoformat(container.attrs["Created"][:19]).replace(tzinfo=UTC)
        if (datetime.now(UTC) - created).total_seconds() < self.grace_s:
            return None
        try:
            state = await self.client.get_workflow_handle(session_id).query(GET_STATE, result_type=SessionState)
        except Exception:  # noqa: BLE001 - no harness worker to answer: decide next time
            return None
        if state.sandbox is None or state.sandbox.sandbox_id != container.id:
            return "its session uses another sandbox", None
        return None

    async def sweep(self) -> list[str]:
        """One pass over all of this host's containers; returns the ids of those removed."""
        removed = []
        for container in await asyncio.to_thread(self.sandboxes.mine):
            why = await self._why_orphaned(container)
            if why is None:
                continue
            reason, closed_session = why
            container_id = container.id or ""
            if closed_session is not None:  # its session is over: released, with its last snapshot
                if await self._release(container_id, closed_session, reason):
                    removed.append(container_id)
                continue
            try:
                await asyncio.to_thread(self.sandboxes.destroy, container_id)
            except docker.errors.APIError as e:
                log.warning("orphan not removed", container=container_id[:12], error=str(e))
                continue
            removed.append(container_id)
            log.info(
                "orphan sandbox removed",
                container=container_id[:12],
                reason=reason,
                session_id=container.labels.get(SESSION_LABEL),
            )
        return removed

    async def run(self) -> None:
        """The release pass every `release_every_s`, the whole sweep every `every_s` (at once first)."""
        next_sweep = 0.0
        while True:
            started = time.monotonic()
            try:
                if started >= next_sweep:
                    next_sweep = started + self.every_s
                    await self.sweep()
                else:
                    await self.release_closed()
            except Exception as e:  # noqa: BLE001 - a pass that fails is tried again next time
                log.warning("reaper pass failed", error=str(e))
            await asyncio.sleep(max(0.05, self.release_every_s - (time.monotonic() - started)))
