"""Harness and sandbox workers inside the test process, and cleaning up after sandbox hosts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anthropic
import docker
import docker.errors
from temporalio.client import Client

from durable_agents.activities.model import ModelActivities
from durable_agents.sandboxes.activities import SandboxActivities
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.sandboxes.reaper import Reaper
from durable_agents.testing.scripted_model import ScriptedModelServer
from durable_agents.worker import harness_worker, sandbox_workers


@dataclass
class Workers:
    model: ModelActivities
    sandboxes: SandboxActivities
    host_id: str


@contextlib.asynccontextmanager
async def running_workers(client: Client, scripted: ScriptedModelServer) -> AsyncIterator[Workers]:
    """A harness worker (model: the scripted server) and a sandbox worker in this process."""
    host_id = f"pytest-{uuid.uuid4().hex[:6]}"
    model_client = anthropic.AsyncAnthropic(api_key="test-key", base_url=scripted.url, max_retries=0)
    model = ModelActivities(client, model_client)
    sandbox_activities = SandboxActivities(DockerSandboxes(host_id))
    running = [harness_worker(client, model), *sandbox_workers(client, sandbox_activities)]
    # The host's reaper, as a sandbox worker runs it: it releases the sandboxes of closed sessions.
    host = sandbox_activities
    reaper = Reaper(client, host.sandboxes, memory=host.memory, release=host.release)
    tasks = [asyncio.create_task(w.run()) for w in running] + [asyncio.create_task(reaper.run())]
    try:
        yield Workers(model=model, sandboxes=sandbox_activities, host_id=host_id)
    finally:
        tasks[-1].cancel()
        for w in running:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        remove_containers(sandbox_activities.sandboxes)


def remove_containers(sandboxes: DockerSandboxes) -> None:
    """Whatever a failed test left on this host goes with the test session."""
    for c in sandboxes.docker.containers.list(all=True, filters={"label": f"durable-agents.host={sandboxes.host_id}"}):
        c.remove(force=True)
    sandboxes.close()


def remove_host_containers(host: str) -> None:
    """Remove every container of one sandbox host (the host's worker is gone)."""
    for container in docker.from_env().containers.list(all=True, filters={"label": f"durable-agents.host={host}"}):
        with contextlib.suppress(docker.errors.NotFound):  # its reaper may be removing it too
            container.remove(force=True)
