"""A worker killed (SIGKILL) in the middle of a session and restarted: the session finishes,
no event is lost or duplicated, no command runs twice, no container is left behind.

Runs in the `chaos` namespace with its own worker process, so the in-process workers of the
other tests cannot pick up its work.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
from temporalio.client import Client

from durable_agents.client import session_events, start_agent_session
from durable_agents.contracts import PROVISION_AND_EXECUTE, SessionEvent, SessionResult
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import (
    add_scenario,
    appends,
    assert_clean,
    coder,
    released,
    requests_for,
    session_has_container,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
CHAOS_KEY = "sk-ant-chaos-" + uuid.uuid4().hex


async def test_sigkill_of_the_worker_mid_session_loses_nothing(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    def spawn_worker() -> subprocess.Popen[bytes]:
        return worker_processes(env={"ANTHROPIC_API_KEY": CHAOS_KEY})

    steps = [
        Step(tool_use=ToolUse(name="bash", input={"command": f"sleep 1.5; echo step {i} >> /workspace/steps.log"}))
        for i in range(1, 6)
    ]
    marker = add_scenario(
        scripted,
        [
            *steps,
            Step(tool_use=ToolUse(name="bash", input={"command": "cat /workspace/steps.log"})),
            Step(text="{last_tool_result}"),
        ],
    )
    worker = spawn_worker()
    handle = await start_agent_session(chaos_client, coder(), f"Five slow steps. {marker}", one_shot=True)

    # Kill it while the third command runs (its model call has been answered; the tool is sleeping).
    async def third_command_running() -> bool:
        return requests_for(scripted, marker) >= 3

    await wait_for(third_command_running, within_s=60, what="the third model call")
    await asyncio.sleep(0.7)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    spawn_worker()

    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=180)
    assert result.status == "done"
    assert (result.answer or "").splitlines() == [f"step {i}" for i in range(1, 6)]  # each command ran once

    events: list[SessionEvent] = await session_events(chaos_client, handle.id)
    assert [e.offset for e in events] == list(range(len(events)))
    turns = [e for e in events if e.kind == "model_turn"]
    results = [e.tool_result for e in events if e.kind == "tool_result"]
    assert len(turns) == 7 and len(results) == 6
    call_ids = [c.id for t in turns for c in t.tool_calls or []]
    assert len(set(call_ids)) == 6 and [r.call_id for r in results] == call_ids
    assert not any(r.is_error for r in results)
    await released(events, handle.id)  # the answer came first; then its host released the sandbox
    leftover = docker.from_env().containers.list(all=True, filters={"label": f"durable-agents.session={handle.id}"})
    assert leftover == []
    # The model API key never reached the logs, the history or the model's recorded requests.
    logs = b"".join(p.read_bytes() for p in tmp_path.glob("worker-*.log"))
    assert b"session_id" in logs and CHAOS_KEY.encode() not in logs
    history = await handle.fetch_history()
    assert CHAOS_KEY not in history.to_json()
    assert CHAOS_KEY not in json.dumps([r.__dict__ for r in scripted.requests])


# --- more faults: each session completes (or stops with a clear reason), every turn is in its log
# exactly once, no tool command ran twice, no container is left behind ---------------------------


async def test_model_api_faults_are_retried_and_each_turn_is_recorded_once(
    client: Client, scripted: ScriptedModelServer, workers: object
) -> None:
    from durable_agents.testing.scripted_model import ScriptedError

    def failing(step: Step, **error: object) -> Step:
        return Step(error=ScriptedError.model_validate(error), then=step)

    a, b, c, d = appends("a", "b", "c", "d")
    marker = add_scenario(
        scripted,
        [
            failing(a, status=429, type="rate_limit_error", retry_after=0.2),
            failing(b, status=529, type="overloaded_error"),
            failing(c, status=500, type="api_error"),
            failing(d, fault="drop"),
            failing(Step(tool_use=ToolUse(name="bash", input={"command": "cat /workspace/ran"})), fault="malformed"),
            Step(text="{last_tool_result}"),
        ],
    )
    handle = await start_agent_session(client, coder(), f"Flaky API. {marker}", one_shot=True)
    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and (result.answer or "").split() == ["a", "b", "c", "d"]
    assert requests_for(scripted, marker) == 6 + 5  # every fault cost one extra request, no more
    await assert_clean(client, await session_events(client, handle.id), 6, handle.id)


async def test_sigkill_of_the_harness_worker_during_a_model_call(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    slow = Step(tool_use=ToolUse(name="bash", input={"command": "echo b >> /workspace/ran"}), delay_ms=4000)
    marker = add_scenario(
        scripted,
        [
            *appends("a"),
            slow,
            Step(tool_use=ToolUse(name="bash", input={"command": "cat /workspace/ran"})),
            Step(text="{last_tool_result}"),
        ],
    )
    worker = worker_processes()
    handle = await start_agent_session(chaos_client, coder(), f"Slow model. {marker}", one_shot=True)

    async def slow_call_in_flight() -> bool:
        return requests_for(scripted, marker) >= 2

    await wait_for(slow_call_in_flight, within_s=60, what="the slow model call")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    worker_processes()
    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and (result.answer or "").split() == ["a", "b"]
    await assert_clean(chaos_client, await session_events(chaos_client, handle.id), 4, handle.id)


def slow_append_then_read(scripted: ScriptedModelServer, sleep_s: int) -> str:
    """A first call that sleeps, then appends `a` to /workspace/ran; a second that reads it back;
    the answer is what it read (`a` once where the command ran once and its write was kept)."""
    return add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": f"sleep {sleep_s}; echo a >> /workspace/ran"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "cat /workspace/ran"})),
            Step(text="{last_tool_result}"),
        ],
    )


async def test_sigkill_of_the_sandbox_worker_during_execute(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    marker = slow_append_then_read(scripted, sleep_s=3)
    worker_processes("--harness")
    sandbox = worker_processes("--sandbox", "--warm-pool", "0")
    handle = await start_agent_session(chaos_client, coder(), f"Kill the hands. {marker}", one_shot=True)

    await wait_for(lambda: session_has_container(handle.id), within_s=60, what="the sandbox")
    await asyncio.sleep(1.5)  # its first call runs (provisioned with it, in provision_and_execute)
    sandbox.send_signal(signal.SIGKILL)
    sandbox.wait(timeout=10)
    worker_processes("--sandbox", "--warm-pool", "0")  # same host id: it finds its containers
    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and (result.answer or "").split() == ["a"]  # ran once, result kept
    await assert_clean(chaos_client, await session_events(chaos_client, handle.id), 3, handle.id)


async def test_restart_of_the_temporal_server_mid_session(
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    import socket

    from durable_agents.connection import DEV_SERVER_TUNING, connect
    from tests.helpers import free_port

    port, ui_port = free_port(), free_port()
    server_cmd = [
        str(ROOT / ".bin" / "temporal"), "server", "start-dev", "--db-filename", str(tmp_path / "temporal.db"),
        "--port", str(port), "--ui-port", str(ui_port), "--log-level", "error", *DEV_SERVER_TUNING,
    ]  # fmt: skip
    address = f"127.0.0.1:{port}"

    def start_server() -> subprocess.Popen[bytes]:
        log = open(tmp_path / "server.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(server_cmd, stdout=log, stderr=log)

    async def server_up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    server = start_server()
    try:
        await wait_for(server_up, within_s=60, what="the dev server")
        client = await connect(address, "default")
        worker_processes(env={"TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": "default"})
        steps = [
            Step(tool_use=ToolUse(name="bash", input={"command": f"sleep 1; echo {x} >> /workspace/ran"}))
            for x in "abcd"
        ]
        marker = add_scenario(
            scripted,
            [
                *steps,
                Step(tool_use=ToolUse(name="bash", input={"command": "cat /workspace/ran"})),
                Step(text="{last_tool_result}"),
            ],
        )
        handle = await start_agent_session(client, coder(), f"Outlive the server. {marker}", one_shot=True)

        async def second_call() -> bool:
            return requests_for(scripted, marker) >= 2

        await wait_for(second_call, within_s=60, what="the second model call")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        await asyncio.sleep(2)
        server = start_server()
        await wait_for(server_up, within_s=60, what="the restarted dev server")
        result: SessionResult = await asyncio.wait_for(handle.result(), timeout=180)
        assert result.status == "done" and (result.answer or "").split() == ["a", "b", "c", "d"]
        await assert_clean(client, await session_events(client, handle.id), 6, handle.id)
    finally:
        server.terminate()
        server.wait(timeout=30)


async def test_sigkill_of_the_sandbox_worker_while_it_provisions(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """The provision heartbeats: a sandbox worker killed in the middle of it is noticed in seconds
    (the heartbeat timeout, 10 s), not at its 5-minute start-to-close timeout, and another
    sandbox worker provisions the sandbox."""
    from temporalio.api.enums.v1 import PendingActivityState

    from durable_agents.contracts import PROVISION_AND_EXECUTE, PROVISION_SANDBOX

    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo provisioned"})),
            Step(text="{last_tool_result}"),
        ],
    )
    worker_processes("--harness")
    # DA_TEST_PROVISION_DELAY_S: the test hook in provision_sandbox; this worker takes 10 minutes.
    slow = worker_processes("--sandbox", "--warm-pool", "0", env={"DA_TEST_PROVISION_DELAY_S": "600"})
    handle = await start_agent_session(chaos_client, coder(), f"Slow hands. {marker}", one_shot=True)

    async def provisioning() -> bool:
        pending = (await handle.describe()).raw_description.pending_activities
        started = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        kinds = (PROVISION_SANDBOX, PROVISION_AND_EXECUTE)
        return any(a.activity_type.name in kinds and a.state == started for a in pending)

    await wait_for(provisioning, within_s=60, what="the slow worker to start provisioning")
    other_host = f"chaos-other-{uuid.uuid4().hex[:6]}"
    worker_processes("--sandbox", "--warm-pool", "0", "--host-id", other_host)
    log = tmp_path / "worker-2.log"

    async def other_polls() -> bool:
        return log.exists() and b"worker started" in log.read_bytes()

    await wait_for(other_polls, within_s=60, what="the second sandbox worker")
    await asyncio.sleep(1)
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=10)
    killed_at = asyncio.get_running_loop().time()

    async def provisioned() -> bool:
        return any(e.kind == "sandbox_provisioned" for e in await session_events(chaos_client, handle.id))

    await wait_for(provisioned, within_s=60, what="a sandbox from the second worker")
    moved_on_s = asyncio.get_running_loop().time() - killed_at
    print(f"\nprovision: the session moved on {moved_on_s:.1f} s after the sandbox worker was killed")
    events = await session_events(chaos_client, handle.id)
    sandbox = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert sandbox is not None and sandbox.host_queue == f"sandboxes-{other_host}"
    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.status == "done" and result.answer == "provisioned"
    await assert_clean(chaos_client, await session_events(chaos_client, handle.id), 2, handle.id)


async def test_a_first_call_retried_on_another_host_runs_once_in_the_sandbox_it_made(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """The first call provisions its sandbox and runs in it, in one activity. Its host dies in the
    middle of the call; the retry lands on another host, which finds the sandbox on record (with
    the server) and provisions nothing: the call goes to the first host's queue, and once that host
    is back it answers from the sandbox — the command ran once, its write is kept."""
    marker = slow_append_then_read(scripted, sleep_s=4)
    suffix = uuid.uuid4().hex[:6]
    first, other = f"first-{suffix}", f"other-{suffix}"
    worker_processes("--harness")
    dying = worker_processes("--sandbox", "--warm-pool", "0", "--host-id", first)
    handle = await start_agent_session(chaos_client, coder(), f"Kill the first hands. {marker}", one_shot=True)
    await wait_for(lambda: session_has_container(handle.id), within_s=60, what="the sandbox")
    worker_processes("--sandbox", "--warm-pool", "0", "--host-id", other)
    await asyncio.sleep(2)  # (the command runs)
    dying.send_signal(signal.SIGKILL)
    dying.wait(timeout=10)

    async def sent_back() -> bool:  # the retry, on the other host, said where the sandbox is
        history = await handle.fetch_history()
        return any(
            e.activity_task_failed_event_attributes.failure.application_failure_info.type == "SandboxProvisioned"
            for e in history.events
        )

    await wait_for(sent_back, within_s=60, what="the retry on the other host")
    worker_processes("--sandbox", "--warm-pool", "0", "--host-id", first)  # back: it finds its container
    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and (result.answer or "").split() == ["a"], result  # ran once, kept
    events = await session_events(chaos_client, handle.id)
    (provisioned,) = [e.sandbox for e in events if e.kind == "sandbox_provisioned"]
    assert provisioned is not None and provisioned.host_queue == f"sandboxes-{first}"
    await assert_clean(chaos_client, events, 3, handle.id)


async def test_a_first_call_slower_than_its_heartbeat_timeout_runs_once_without_a_retry(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Provisioning that takes longer than the first call's heartbeat timeout (10 s) plus the SDK
    core's own grace (about 5 s), as under a burst on a busy Docker host: its heartbeats keep the
    attempt alive (the client's and the core's), so it is neither cancelled nor retried, and the
    command runs once in the one sandbox made."""
    marker = slow_append_then_read(scripted, sleep_s=0)
    worker_processes("--harness")
    worker_processes("--sandbox", "--warm-pool", "0", env={"DA_TEST_PROVISION_DELAY_S": "17"})
    handle = await start_agent_session(chaos_client, coder(), f"Slow to provision. {marker}", one_shot=True)
    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "a"

    history = await handle.fetch_history()
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    first_calls = [s for s in started if scheduled[s.scheduled_event_id] == PROVISION_AND_EXECUTE]
    assert [s.attempt for s in first_calls] == [1], "the first call was retried"
    assert not any(e.HasField("activity_task_timed_out_event_attributes") for e in history.events)
    await assert_clean(chaos_client, await session_events(chaos_client, handle.id), 3, handle.id)
