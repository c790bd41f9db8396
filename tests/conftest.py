"""Shared fixtures: a real Temporal dev server (the `temporal` CLI that setup installs), the
scripted Anthropic-compatible server on loopback, and in-process harness + sandbox workers.

Tests that need their own workers (to kill them) use the `chaos` namespace, where the
in-process workers do not poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import docker
import docker.errors
import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from durable_agents.activities.model import ModelActivities
from durable_agents.connection import DEV_SERVER_TUNING
from durable_agents.contracts import (
    GET_STATE,
    SA_AGENT_NAME,
    SA_AGENT_VERSION,
    SA_PARENT_SESSION,
    SA_SESSION_STATUS,
    SessionState,
)
from durable_agents.payload_store import data_converter
from durable_agents.sandboxes.activities import SandboxActivities
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.settings import settings
from durable_agents.testing.scripted_model import Scenario, ScriptedModelServer, Step, ToolUse
from durable_agents.worker import harness_worker, sandbox_workers

ROOT = Path(__file__).resolve().parent.parent
TEMPORAL_CLI = ROOT / ".bin" / "temporal"
SetEnv = Callable[[str, str | None], None]  # the `setenv` fixture
CHAOS_NAMESPACE = "chaos"


@pytest.fixture(autouse=True, scope="session")
def no_real_model() -> Iterator[None]:
    """No test may reach a real model (the key and endpoint come only from the fixtures), nor a live
    server outside the tests."""
    names = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "DA_LIVE_URL")
    saved = {k: os.environ.pop(k) for k in names if k in os.environ}
    settings.cache_clear()
    yield
    os.environ.update(saved)
    settings.cache_clear()


@pytest.fixture
def setenv(monkeypatch: pytest.MonkeyPatch) -> Iterator[SetEnv]:
    """Change this process's environment for one test: `setenv(NAME, value)`, None unsets it. The
    settings are read again after each change, and after the test, when the changes are undone."""

    def change(name: str, value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
        settings.cache_clear()

    yield change
    monkeypatch.undo()
    settings.cache_clear()


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    if not TEMPORAL_CLI.exists():
        pytest.fail(f"{TEMPORAL_CLI} is missing: run `make setup`")
    environment = await WorkflowEnvironment.start_local(
        data_converter=data_converter(),
        dev_server_existing_path=str(TEMPORAL_CLI),
        search_attributes=[
            SearchAttributeKey.for_keyword(SA_AGENT_NAME),
            SearchAttributeKey.for_keyword(SA_SESSION_STATUS),
            SearchAttributeKey.for_keyword(SA_AGENT_VERSION),
            SearchAttributeKey.for_keyword(SA_PARENT_SESSION),
        ],
        dev_server_extra_args=["--namespace", CHAOS_NAMESPACE, *DEV_SERVER_TUNING],
    )
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="session")
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture(scope="session")
def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@pytest.fixture(scope="session")
def scripted() -> Iterator[ScriptedModelServer]:
    demo = Scenario.load(ROOT / "durable_agents" / "testing" / "scenarios" / "coder-demo.yaml")
    server = ScriptedModelServer([demo]).start()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_then_read_twice(server: ScriptedModelServer, path: str, content: str, answer: str) -> str:
    """write `path`, answer, then (on the next message) read it, read it again and answer: the first
    read meets a lost sandbox and is told the environment was reset; the second sees the restore."""
    return add_scenario(
        server,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": path, "content": content})),
            Step(text="Written."),
            Step(tool_use=ToolUse(name="bash", input={"command": f"cat /workspace/{path}"})),
            Step(tool_use=ToolUse(name="bash", input={"command": f"cat /workspace/{path}"})),
            Step(text=answer),
        ],
    )


def add_scenario(server: ScriptedModelServer, steps: list[Step], **options: Any) -> str:
    """Register a scenario for one test; returns the marker a task must contain to get it."""
    marker = f"[scenario {uuid.uuid4().hex[:10]}]"
    server.model.scenarios.insert(0, Scenario(name=marker, match=marker, steps=steps, **options))
    return marker


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
    tasks = [asyncio.create_task(w.run()) for w in running]
    try:
        yield Workers(model=model, sandboxes=sandbox_activities, host_id=host_id)
    finally:
        for w in running:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        remove_containers(sandbox_activities.sandboxes)


@pytest.fixture(scope="session")
async def workers(client: Client, scripted: ScriptedModelServer) -> AsyncIterator[Workers]:
    async with running_workers(client, scripted) as running:
        yield running


def remove_containers(sandboxes: DockerSandboxes) -> None:
    """Whatever a failed test left on this host goes with the test session."""
    for c in sandboxes.docker.containers.list(all=True, filters={"label": f"durable-agents.host={sandboxes.host_id}"}):
        c.remove(force=True)
    sandboxes.close()


@pytest.fixture(scope="session")
def docker_sandboxes() -> Iterator[DockerSandboxes]:
    sandboxes = DockerSandboxes(f"pytest-direct-{uuid.uuid4().hex[:6]}")
    yield sandboxes
    remove_containers(sandboxes)


@pytest.fixture
async def chaos_client(address: str) -> Client:
    """A client of the chaos namespace, where only the tests' own worker processes poll."""
    return await Client.connect(address, namespace=CHAOS_NAMESPACE, data_converter=data_converter())


@pytest.fixture
def worker_processes(
    address: str, scripted: ScriptedModelServer, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `worker.py` processes in the chaos namespace (to kill, restart, or stop); each logs to
    tmp_path/worker-N.log. Everything they leave is removed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    host_id = f"chaos-{uuid.uuid4().hex[:6]}"
    hosts: set[str] = set()

    def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": CHAOS_NAMESPACE,
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": scripted.url,
            "SANDBOX_HOST_ID": host_id,
            **(env or {}),
        }
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py"), *args], cwd=ROOT, env=full_env, stdout=log, stderr=log
        )
        started.append(proc)
        hosts.add(full_env["SANDBOX_HOST_ID"])
        if "--host-id" in args:
            hosts.add(args[args.index("--host-id") + 1])
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    # Hosts that never come back leave their containers (a warm pool after SIGKILL) to nobody.
    # Only the hosts this test started: other test runs may share the Docker engine.
    for host in hosts:
        remove_host_containers(host)


def remove_host_containers(host: str) -> None:
    """Remove every container of one sandbox host (the host's worker is gone)."""
    for container in docker.from_env().containers.list(all=True, filters={"label": f"durable-agents.host={host}"}):
        with contextlib.suppress(docker.errors.NotFound):  # its reaper may be removing it too
            container.remove(force=True)


async def wait_for(predicate: Callable[[], Awaitable[bool]], within_s: float = 60, what: str = "condition") -> None:
    """Poll an observable state until it holds; fail naming what did not happen."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def state_of(client: Client, session_id: str, namespace_client: Client | None = None) -> SessionState:
    return await (namespace_client or client).get_workflow_handle(session_id).query(GET_STATE, result_type=SessionState)
