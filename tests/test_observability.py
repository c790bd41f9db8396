"""What operators watch: SDK metrics for Prometheus from a worker process."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from collections.abc import Callable

from temporalio.client import Client

from durable_agents.client import start_agent_session
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, coder, free_port, wait_for


async def test_a_worker_serves_sdk_metrics_for_prometheus(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    worker_processes("--metrics-port", str(port), "--warm-pool", "0")
    marker = add_scenario(scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "true"})), Step(text="ok")])
    handle = await start_agent_session(chaos_client, coder(), f"Measure me. {marker}", one_shot=True)
    assert (await asyncio.wait_for(handle.result(), timeout=60)).status == "done"

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    text = ""

    async def exported() -> bool:
        nonlocal text
        text = await asyncio.to_thread(scrape)
        return 'activity_type="provision_and_execute"' in text  # the first (and only) sandbox call

    await wait_for(exported, within_s=30, what="the first sandbox call's metrics")
    for name in (
        "temporal_workflow_task_schedule_to_start_latency",
        "temporal_activity_schedule_to_start_latency",
        "temporal_activity_execution_latency",
        "temporal_worker_task_slots_available",
    ):
        assert name in text, f"{name} missing from /metrics"
    assert 'activity_type="call_model"' in text and 'task_queue="agents"' in text
