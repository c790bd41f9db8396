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

from contracts import SessionEvent, SessionResult
from scripted_model.server import ScriptedModelServer, Step, ToolUse
from starter import session_events, start_agent_session
from tests.conftest import add_scenario, wait_for
from tests.test_session import coder

ROOT = Path(__file__).resolve().parent.parent
CHAOS_KEY = "sk-ant-chaos-" + uuid.uuid4().hex


def requests_for(scripted: ScriptedModelServer, marker: str) -> int:
    return sum(1 for r in scripted.requests if marker in json.dumps(r.body))


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
    results = [e.tool_result for e in events if e.tool_result]
    assert len(turns) == 7 and len(results) == 6
    call_ids = [c.id for t in turns for c in t.tool_calls or []]
    assert len(set(call_ids)) == 6 and [r.call_id for r in results] == call_ids
    assert not any(r.is_error for r in results)
    leftover = docker.from_env().containers.list(all=True, filters={"label": f"durable-agents.session={handle.id}"})
    assert leftover == []
    # The model API key never reached the logs, the history or the model's recorded requests.
    logs = b"".join(p.read_bytes() for p in tmp_path.glob("worker-*.log"))
    assert b"session_id" in logs and CHAOS_KEY.encode() not in logs
    history = await handle.fetch_history()
    assert CHAOS_KEY not in history.to_json()
    assert CHAOS_KEY not in json.dumps([r.__dict__ for r in scripted.requests])
