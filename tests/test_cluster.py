"""The production engine: sessions on the Temporal cluster that scripts/cluster.sh starts on
PostgreSQL, through the faults it is there to survive: the server SIGKILLed and started again,
PostgreSQL restarted, one of two nodes SIGKILLed. Each session finishes, every turn is in its log
exactly once with gap-free offsets, no command runs twice, no container is left.

The cluster is started once for this module, on side ports and a data directory of its own, with
the `chaos` namespace, where only the tests' own worker processes poll.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from temporalio.client import Client

from durable_agents.client import session_events, start_agent_session
from durable_agents.connection import connect
from durable_agents.contracts import SessionResult
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import CHAOS_NAMESPACE, ROOT, add_scenario, appends, assert_clean, coder, requests_for, wait_for

CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
WORDS = ["a", "b", "c", "d"]
TURNS = len(WORDS) + 2  # one per command, the `cat`, the answer


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _side_port() -> int:
    """A frontend port whose whole derived range (membership PORT-300.., PostgreSQL PORT-100,
    two nodes' services PORT..PORT+30, the UI PORT+1000) is free."""
    for port in range(17233, 30000, 500):
        derived = [
            port - 100,
            port + 1000,
            *(port + 20 * n + k for n in (0, 1) for k in (0, 1, 2, 6, 10, -300, -299, -298, -294)),
        ]
        if all(_free(p) for p in derived):
            return port
    raise AssertionError("no free side port range for the cluster")


@dataclass
class Cluster:
    port: int
    data: str

    def run(self, action: str, *args: str, nodes: int = 1, timeout: float = 600) -> str:
        env = {
            **os.environ,
            "DA_CLUSTER_PORT": str(self.port),
            "DA_CLUSTER_DATA": self.data,
            "DA_CLUSTER_NODES": str(nodes),
            "DA_CLUSTER_UI": "1",  # `make setup` built it
            "TEMPORAL_NAMESPACE": CHAOS_NAMESPACE,
            # Tests need durability across process deaths, not power loss.
            "DA_CLUSTER_PG_OPTIONS": "-c fsync=off -c synchronous_commit=off",
        }
        done = subprocess.run(
            ["bash", str(CLUSTER_SH), action, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"cluster.sh {action} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port + 1000}"

    def address(self, node: int = 0) -> str:
        return f"127.0.0.1:{self.port + 20 * node}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    data = ROOT / ".data" / f"test-cluster-{uuid.uuid4().hex[:6]}"  # PostgreSQL's user must reach it
    running = Cluster(port=_side_port(), data=str(data))
    began = time.monotonic()
    try:
        running.run("up")
        print(f"\ncluster: up in {time.monotonic() - began:.1f} s on {running.address()}")
        yield running
    finally:
        running.run("down", nodes=2)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def address(cluster: Cluster) -> str:
    """The cluster's frontend, for conftest's `worker_processes` and `chaos_client`."""
    return cluster.address()


@pytest.fixture
async def cluster_client(cluster: Cluster) -> AsyncIterator[Client]:
    yield await connect(cluster.address(), CHAOS_NAMESPACE)


def slow_appends(scripted: ScriptedModelServer) -> str:
    """Four commands of a second each, each appending a word; then the file; then the answer."""
    return add_scenario(
        scripted,
        [
            *appends(*WORDS, sleep_s=1),
            Step(tool_use=ToolUse(name="bash", input={"command": "cat /workspace/ran"})),
            Step(text="{last_tool_result}"),
        ],
    )


async def finishes_clean(client: Client, session_id: str, within_s: float = 240) -> None:
    handle = client.get_workflow_handle(session_id, result_type=SessionResult)
    result = await asyncio.wait_for(handle.result(), timeout=within_s)
    assert result.status == "done", result
    assert (result.answer or "").split() == WORDS, "a command ran twice or not at all"
    # (Read as soon as a node has seen the workers poll: session_log asks again until then.)
    await assert_clean(client, await session_events(client, session_id), TURNS, session_id)


async def second_model_call(scripted: ScriptedModelServer, marker: str) -> None:
    async def asked() -> bool:
        return requests_for(scripted, marker) >= 2

    await wait_for(asked, within_s=120, what="the second model call")


async def test_a_session_end_to_end_on_the_cluster(
    cluster: Cluster,
    cluster_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    status = cluster.run("status")
    assert "postgres      running" in status and "server-0      running" in status and "serving" in status, status
    assert "started" not in cluster.run("up"), "a second `up` started something that was running"
    worker_processes()
    marker = slow_appends(scripted)
    handle = await start_agent_session(cluster_client, coder(), f"On PostgreSQL. {marker}", one_shot=True)
    await finishes_clean(cluster_client, handle.id)


def test_the_web_ui_serves_the_cluster(cluster: Cluster) -> None:
    page = httpx.get(cluster.ui_url + "/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    listed = httpx.get(cluster.ui_url + "/api/v1/namespaces", timeout=10).json()
    assert CHAOS_NAMESPACE in [ns["namespaceInfo"]["name"] for ns in listed["namespaces"]]


async def test_sigkill_of_the_temporal_server_mid_session_then_up(
    cluster: Cluster,
    cluster_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    worker_processes()
    marker = slow_appends(scripted)
    handle = await start_agent_session(cluster_client, coder(), f"Outlive the server. {marker}", one_shot=True)
    await second_model_call(scripted, marker)
    cluster.run("kill-server")
    assert "server-0      stopped" in cluster.run("status")
    await asyncio.sleep(2)  # the workers see it gone
    again = cluster.run("up")
    assert "server node 0: started" in again and "postgres: running" in again, again  # only what was down
    await finishes_clean(cluster_client, handle.id)


async def test_a_postgresql_restart_mid_session(
    cluster: Cluster,
    cluster_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    worker_processes()
    marker = slow_appends(scripted)
    handle = await start_agent_session(cluster_client, coder(), f"Outlive the database. {marker}", one_shot=True)
    await second_model_call(scripted, marker)
    cluster.run("restart-db")
    await finishes_clean(cluster_client, handle.id)


async def test_two_nodes_one_sigkilled_mid_session(
    cluster: Cluster, scripted: ScriptedModelServer, worker_processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """A second node joins the running one (ringpop over PostgreSQL); the workers and the client
    use its frontend; the first node, which owns part of the shards and task queues, is SIGKILLed."""
    cluster.run("up", nodes=2)  # node 0 runs: only node 1 starts
    client = await connect(cluster.address(1), CHAOS_NAMESPACE)
    worker_processes(env={"TEMPORAL_ADDRESS": cluster.address(1)})
    marker = slow_appends(scripted)
    handle = await start_agent_session(client, coder(), f"Lose a node. {marker}", one_shot=True)
    await second_model_call(scripted, marker)
    cluster.run("kill-server", "0", nodes=2)
    status = cluster.run("status", nodes=2)
    assert "server-0      stopped" in status and "server-1      running" in status, status
    await finishes_clean(client, handle.id)


def test_ports_that_do_not_fit_ringpops_smallint_are_refused() -> None:
    """Membership ports are stored in a PostgreSQL smallint: a frontend port whose membership
    ports would pass 32767 is refused before anything is installed or started."""
    env = {**os.environ, "DA_CLUSTER_PORT": "33100", "DA_CLUSTER_DATA": str(ROOT / ".data" / "never-created")}
    done = subprocess.run(["bash", str(CLUSTER_SH), "up"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "below 32768" in done.stderr
    shutil.rmtree(ROOT / ".data" / "never-created", ignore_errors=True)
