"""The orphan reaper: removes this host's sandbox containers that no session uses any more.

A container goes when it has stopped (a dead sandbox is never used again), when its session has
ended or vanished (and its release workflow, which snapshots it first, is not running), or when its
session is running with another sandbox (one it replaced). It runs
in every sandbox worker, at start-up and then every `every_s` seconds, so no container outlives
its session by much more than that.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import docker.errors
import structlog
from docker.models.containers import Container
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from durable_agents.contracts import GET_STATE, SessionState, release_workflow_id
from durable_agents.sandboxes.docker_sandbox import SESSION_LABEL, DockerSandboxes
from durable_agents.sandboxes.memory_mounts import MemoryMounts

log = structlog.get_logger("reaper")


class Reaper:
    def __init__(
        self,
        client: Client,
        sandboxes: DockerSandboxes,
        every_s: float = 30,
        grace_s: float = 60,
        keep: set[str] | None = None,
        memory: MemoryMounts | None = None,
    ) -> None:
        self.client = client
        self.memory = memory  # the sandboxes' memory mounts: a gone session's go with its container
        self.sandboxes = sandboxes
        self.every_s = every_s
        self.grace_s = grace_s  # a container this young may not be in its session's state yet
        self.keep = keep if keep is not None else set()  # the warm pool's containers (its own live set)

    async def _why_orphaned(self, container: Container) -> str | None:
        if container.status not in ("running", "created", "restarting"):
            return f"stopped ({container.status})"
        if container.id in self.keep:
            return None  # in the warm pool, waiting for a session
        try:
            session_id = await asyncio.to_thread(self.sandboxes.bound_session, container)
        except (docker.errors.APIError, RuntimeError) as e:  # cannot tell now: keep it, look again next sweep
            log.warning("bound session unknown", container=(container.id or "")[:12], error=str(e))
            return None
        if not session_id:
            return "an unbound pool container no pool holds"
        try:
            handle = self.client.get_workflow_handle(session_id)
            description = await handle.describe()
        except RPCError as e:
            return "its session does not exist" if e.status == RPCStatusCode.NOT_FOUND else None
        if description.status != WorkflowExecutionStatus.RUNNING:
            if await self._releasing(session_id):
                return None  # its release takes the last snapshot, then removes it
            return f"its session is {description.status.name.lower() if description.status else 'closed'}"
        created = datetime.fromisoformat(container.attrs["Created"][:19]).replace(tzinfo=UTC)
        if (datetime.now(UTC) - created).total_seconds() < self.grace_s:
            return None
        try:
            state = await handle.query(GET_STATE, result_type=SessionState)
        except Exception:  # noqa: BLE001 - no harness worker to answer: decide next time
            return None
        if state.sandbox is None or state.sandbox.sandbox_id != container.id:
            return "its session uses another sandbox"
        return None

    async def _releasing(self, session_id: str) -> bool:
        """Is the session's release workflow still at work (or can that not be told now)?"""
        try:
            release = await self.client.get_workflow_handle(release_workflow_id(session_id)).describe()
        except RPCError as e:
            return e.status != RPCStatusCode.NOT_FOUND
        return release.status == WorkflowExecutionStatus.RUNNING

    async def sweep(self) -> list[str]:
        """One pass; returns the ids of the containers removed."""
        removed = []
        for container in await asyncio.to_thread(self.sandboxes.mine):
            reason = await self._why_orphaned(container)
            if reason is None:
                continue
            try:
                await asyncio.to_thread(self.sandboxes.destroy, container.id or "")
            except docker.errors.APIError as e:
                log.warning("orphan not removed", container=(container.id or "")[:12], error=str(e))
                continue
            removed.append(container.id or "")
            session_id = container.labels.get(SESSION_LABEL)
            # Its session is over (not merely on another sandbox, which uses the same mounts).
            if self.memory is not None and session_id and reason.startswith(("its session does not", "its session is")):
                await self.memory.close(session_id)
            log.info(
                "orphan sandbox removed",
                container=(container.id or "")[:12],
                reason=reason,
                session_id=container.labels.get(SESSION_LABEL),
            )
        return removed

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sweep()
            except Exception as e:  # noqa: BLE001 - a sweep that fails is retried next time
                log.warning("orphan sweep failed", error=str(e))
            await asyncio.sleep(max(1.0, self.every_s - (time.monotonic() - started)))
