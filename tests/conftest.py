"""Shared fixtures: a real Temporal dev server (the `temporal` CLI that setup installs), the
scripted Anthropic-compatible server on loopback, in-process harness + sandbox workers, worker
processes, MCP servers. The helpers they are built from live in tests/helpers/.

Tests that need their own workers (to kill them) use the `chaos` namespace, where the
in-process workers do not poll.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from durable_agents.connection import DEV_SERVER_TUNING
from durable_agents.contracts import SA_AGENT_NAME, SA_AGENT_VERSION, SA_PARENT_SESSION, SA_SESSION_STATUS
from durable_agents.payload_store import data_converter
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.settings import settings
from durable_agents.testing import scenario_files
from durable_agents.testing.scripted_model import Scenario, ScriptedModelServer
from tests.helpers import (
    CHAOS_NAMESPACE,
    CHROMIUM,
    CHROMIUM_ARGS,
    DA_WORKER,
    ROOT,
    TEMPORAL_CLI,
    HttpServers,
    SetEnv,
    Workers,
    http_mcp_servers,
    remove_containers,
    remove_host_containers,
    running_workers,
)
from tests.helpers.mcp import BIN


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
    """The scripted model, playing the shipped demo scenario (tests add their own with add_scenario)."""
    server = ScriptedModelServer([Scenario.load(str(f)) for f in scenario_files()]).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def workers(client: Client, scripted: ScriptedModelServer) -> AsyncIterator[Workers]:
    async with running_workers(client, scripted) as running:
        yield running


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
    """Start `da-worker` processes in the chaos namespace (to kill, restart, or stop); each logs to
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
        proc = subprocess.Popen([str(DA_WORKER), *args], cwd=ROOT, env=full_env, stdout=log, stderr=log)
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


@pytest.fixture(scope="module")
def http_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServers]:
    """server-everything and the auth-checking MCP server over Streamable HTTP."""
    if not (BIN / "mcp-server-everything").exists():
        pytest.fail("the npm MCP servers are missing: run `make setup`")
    with http_mcp_servers(tmp_path_factory.mktemp("mcp-logs")) as servers:
        yield servers


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (the browser tests' pages are its)."""
    if CHROMIUM is None:
        pytest.fail("chromium is missing: run `make setup` (it installs Debian's chromium)")
    playwright = await async_playwright().start()
    try:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
    finally:
        await playwright.stop()
