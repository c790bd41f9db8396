"""The warm pool: containers of the default sandbox spec started ahead of need, with their shell
running, so provisioning for a session is a bind (milliseconds) instead of a `docker run`.
"""

from __future__ import annotations

import asyncio
import threading

import docker.errors
import structlog

from durable_agents.contracts import SandboxSpec
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes

log = structlog.get_logger("pool")


class WarmPool:
    def __init__(self, sandboxes: DockerSandboxes, size: int, spec: SandboxSpec | None = None) -> None:
        self.sandboxes = sandboxes
        self.size = size
        self.spec = spec or SandboxSpec()
        self.ready: list[str] = []
        self.held: set[str] = set()  # every container the pool answers for (the reaper leaves them)
        self._lock = threading.Lock()
        self._closed = False

    def matches(self, spec: SandboxSpec) -> bool:
        return self.size > 0 and spec.container_key() == self.spec.container_key()

    def take(self, session_id: str) -> str | None:
        """A warm container bound to `session_id`, or None when the pool is empty."""
        with self._lock:
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

    async def run(self) -> None:
        """Keep the pool full."""
        while True:
            if len(self.ready) < self.size:
                try:
                    await asyncio.to_thread(self._add_one)
                    continue
                except (docker.errors.APIError, OSError, RuntimeError) as e:
                    log.warning("warm pool could not add a container", error=str(e))
                    await asyncio.sleep(5)
            await asyncio.sleep(0.2)

    def drain(self) -> None:
        """Remove the pool's containers; one still starting removes itself when it is up."""
        with self._lock:
            self._closed = True
            ready, self.ready = self.ready, []
        for container_id in ready:
            self.sandboxes.destroy(container_id)
            self.held.discard(container_id)
