"""The production-like stack, as far as these machines can test it: the compose file is valid and
keeps credentials and the Docker socket where they belong, and several harness and sandbox workers
(as processes) share the load and outlive each other."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from durable_agents.client import session_events, start_agent_session
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, coder, wait_for, write_then_read_twice

ROOT = Path(__file__).resolve().parent.parent


def test_the_compose_file_is_valid_and_keeps_secrets_and_the_socket_apart() -> None:
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-compose-check"}
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    services = yaml.safe_load(out)["services"]
    assert set(services) == {"postgresql", "temporal", "temporal-ui", "harness-worker", "sandbox-worker", "live-server"}

    def volumes(name: str) -> str:
        return str(services[name].get("volumes", []))

    assert "docker.sock" in volumes("sandbox-worker") and "docker.sock" not in volumes("harness-worker")
    assert services["harness-worker"]["environment"]["ANTHROPIC_API_KEY"] == "sk-compose-check"
    assert "ANTHROPIC_API_KEY" not in services["sandbox-worker"]["environment"]
    assert services["harness-worker"]["environment"]["DA_PAYLOAD_STORE"] == "/data/payloads"
    assert services["harness-worker"]["environment"]["DA_LIVE_URL"] == "http://live-server:8780"
    assert "ANTHROPIC_API_KEY" not in services["live-server"]["environment"]  # it needs no credential
    assert "dynamicconfig" in volumes("temporal")
    assert services["live-server"]["entrypoint"][:2] == ["da", "serve"]  # the image's console scripts
    missing = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "set ANTHROPIC_API_KEY" in missing.stderr


def test_the_worker_image_installs_the_whole_package_but_not_the_test_model() -> None:
    """The image cannot be built here (no registry), so its recipe is read: every folder the package
    is built from is copied in, it is installed, and durable_agents/testing is removed (the scripted
    model stays out of production). tests/test_install.py runs the same steps for real."""
    recipe = (ROOT / "Dockerfile").read_text()
    folders = {
        "durable_agents",
        *tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values(),
    }
    assert {f for f in folders if f"COPY {f} /src/{f}\n" not in recipe} == set()
    assert "pip install --no-cache-dir /src" in recipe and '/ "testing"' in recipe and "rm -rf /src" in recipe
    assert 'ENTRYPOINT ["da-worker"]' in recipe


async def test_two_harness_and_two_sandbox_workers_share_the_load_and_survive_each_other(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    hosts = [f"host-a-{uuid.uuid4().hex[:4]}", f"host-b-{uuid.uuid4().hex[:4]}"]
    harness = [worker_processes("--harness") for _ in range(2)]
    sandboxes = {h: worker_processes("--sandbox", "--warm-pool", "0", env={"SANDBOX_HOST_ID": h}) for h in hosts}

    async def all_up() -> bool:  # each worker logs this once its pollers run
        logs = [p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log")]
        return len(logs) == 4 and all('"worker started"' in log for log in logs)

    await wait_for(all_up, within_s=60, what="two harness workers and two sandbox workers started")
    # Sessions land on both harness workers and both sandbox hosts.
    marker = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "hostname"})), Step(text="ok")]
    )
    handles = await asyncio.gather(
        *(start_agent_session(chaos_client, coder(), f"Spread {i}. {marker}", one_shot=True) for i in range(16))
    )
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=120)
    assert [r.status for r in results] == ["done"] * len(handles)
    used_hosts, identities = set(), set()
    for h in handles:
        events = await session_events(chaos_client, h.id)
        used_hosts |= {e.sandbox.host_queue for e in events if e.kind == "sandbox_provisioned" and e.sandbox}
        history = await h.fetch_history()
        identities |= {
            e.workflow_task_started_event_attributes.identity
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        }
    assert used_hosts == {f"sandboxes-{h}" for h in hosts}, used_hosts
    assert len({i.split("@")[0] for i in identities}) == 2, identities  # two worker processes (pids)

    # A session survives losing one harness worker and the sandbox host that holds its container.
    agent = coder(host_wait_s=3, snapshot_every_s=0)
    # The first read meets the lost host: the model is told the sandbox was reset, and reads again.
    marker = write_then_read_twice(scripted, "kept.txt", "still here\n", "{last_tool_result}")
    handle = await start_agent_session(chaos_client, agent, f"Survive. {marker}")

    async def idle() -> bool:
        events = await session_events(chaos_client, handle.id)
        return any(e.kind == "status" and e.status == "idle" for e in events)

    try:
        await wait_for(idle, within_s=60, what="the first answer")
    except BaseException:
        for e in await session_events(chaos_client, handle.id):
            print(e.offset, e.kind, e.text, e.tool_result, e.status)
        raise
    events = await session_events(chaos_client, handle.id)
    holder = next(e.sandbox.host_queue for e in events if e.kind == "sandbox_provisioned" and e.sandbox)
    gone = sandboxes[holder.removeprefix("sandboxes-")]
    for proc in (gone, harness[0]):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    await handle.execute_update("send_message", "Show me the file.", result_type=int)

    async def answered() -> bool:
        state = await handle.query("state")
        return state["status"] == "idle" and state["turns"] >= 5

    await wait_for(answered, within_s=90, what="the answer after losing a harness worker and a host")
    events = await session_events(chaos_client, handle.id)
    answer = [e.text for e in events if e.kind == "model_turn" and e.text][-1]
    assert answer == "still here"  # restored from the snapshot on the other host
    reset = [e.tool_result for e in events if e.kind == "tool_result"][1]
    assert reset.is_error and "a new sandbox was provisioned and /workspace was restored" in reset.output
    provisioned = [e.sandbox.host_queue for e in events if e.kind == "sandbox_provisioned" and e.sandbox]
    assert provisioned[0] == holder and provisioned[-1] != holder
    await handle.signal("end_session")
    await asyncio.wait_for(handle.result(), timeout=60)
