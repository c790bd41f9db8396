"""Recurring agents on Temporal Schedules, through da and the Python API, on the dev server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, ScheduleOverlapPolicy

from durable_agents import schedules
from durable_agents.agent_files import load_agent
from durable_agents.client import session_events
from durable_agents.contracts import SessionResult, agent_version
from durable_agents.testing.scripted_model import ScriptedModelServer, Step
from tests.helpers import TEMPORAL_CLI, add_scenario, cli, wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("workers")


async def runs_of(client: Client, name: str, status: str = "Completed") -> list[Any]:
    query = f'TemporalScheduledById = "{name}" AND ExecutionStatus = "{status}"'
    return [wf async for wf in client.list_workflows(query)]


async def test_a_schedule_runs_sessions_and_is_controlled_from_our_cli_and_temporals(
    client: Client, address: str, scripted: ScriptedModelServer
) -> None:
    marker = add_scenario(scripted, [Step(text="report for {last_result}")])
    name = f"daily-{uuid.uuid4().hex[:6]}"
    code, out, err = await cli(
        address,
        "schedule",
        "create",
        name,
        "--agent",
        "agents/coder.yaml",
        "--every",
        "2s",
        f"Report for {{date}}. Yesterday: {{last_result}} {marker}",
    )
    assert code == 0, err
    assert f"schedule {name} created; next run:" in out

    async def two_runs() -> bool:
        return len(await runs_of(client, name)) >= 2

    await wait_for(two_runs, within_s=60, what="two scheduled runs")
    code, _, err = await cli(address, "schedule", "pause", name)
    assert code == 0, err
    runs = sorted(await runs_of(client, name), key=lambda wf: wf.start_time)
    assert len({wf.id for wf in runs}) == len(runs) and all(wf.id.startswith(f"{name}-") for wf in runs)
    # Each run is a one-shot session with the template filled in: {date}, and the previous answer.
    first, second = runs[0], runs[1]
    first_task = (await session_events(client, first.id))[0].text or ""
    second_task = (await session_events(client, second.id))[0].text or ""
    assert f"Report for {first.start_time.date().isoformat()}." in first_task
    first_answer = (await client.get_workflow_handle(first.id, result_type=SessionResult).result()).answer
    assert f"Yesterday: {first_answer} " in second_task
    started = (await session_events(client, first.id))[0]
    assert started.agent is not None and started.agent_version == agent_version(load_agent("agents/coder.yaml"))

    # Temporal's own CLI sees and describes what ours made.
    listed = subprocess.run(
        [str(TEMPORAL_CLI), "schedule", "list", "--address", address, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert name in listed.stdout
    described = subprocess.run(
        [str(TEMPORAL_CLI), "schedule", "describe", "--address", address, "--schedule-id", name, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(described.stdout)["schedule"]["state"]["paused"] is True

    # ... and ours describes it, lists it with its last result, and triggers it while paused.
    code, out, _ = await cli(address, "schedule", "describe", name)
    assert "state:     paused" in out and "agent:     coder (version" in out and "every 0:00:02" in out
    code, out, _ = await cli(address, "schedule", "list")
    row = next(line for line in out.splitlines() if line.startswith(name))
    assert "paused" in row and "done: report for" in row
    before = len(await runs_of(client, name)) + len(await runs_of(client, name, "Running"))
    code, _, err = await cli(address, "schedule", "trigger", name)
    assert code == 0, err

    async def triggered() -> bool:
        return len(await runs_of(client, name)) + len(await runs_of(client, name, "Running")) > before

    await wait_for(triggered, within_s=30, what="the triggered run")
    code, _, _ = await cli(
        address, "schedule", "update", name, "--prompt", f"Changed. {marker}", "--overlap", "allow_all"
    )
    assert code == 0
    description = await client.get_schedule_handle(name).describe()
    assert description.schedule.policy.overlap == ScheduleOverlapPolicy.ALLOW_ALL
    updated = await schedules.session_input(client, description.schedule.action)  # type: ignore[arg-type]
    assert updated is not None and updated.task == f"Changed. {marker}"
    code, _, err = await cli(address, "schedule", "delete", name)
    assert code == 0, err
    code, out, _ = await cli(address, "schedule", "list")
    assert name not in out


async def test_a_schedule_made_with_temporals_cli_is_controlled_from_ours(
    client: Client, address: str, scripted: ScriptedModelServer
) -> None:
    name = f"theirs-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(
        [
            str(TEMPORAL_CLI),
            "schedule",
            "create",
            "--address",
            address,
            "--schedule-id",
            name,
            "--interval",
            "1h",
            "--type",
            "SessionWorkflow",
            "--task-queue",
            "agents",
            "--workflow-id",
            name,
            "--paused",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    code, out, _ = await cli(address, "schedule", "list")
    assert any(line.startswith(name) and "paused" in line for line in out.splitlines())
    code, _, err = await cli(address, "schedule", "unpause", name)
    assert code == 0, err
    assert not (await client.get_schedule_handle(name).describe()).schedule.state.paused
    code, _, _ = await cli(address, "schedule", "delete", name)
    assert code == 0


async def test_overlap_skip_with_a_slow_model(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(scripted, [Step(text="slow", delay_ms=4000)])
    name = f"slow-{uuid.uuid4().hex[:6]}"
    await schedules.create(
        client,
        schedules.ScheduleRequest(
            name=name, agent_path=str(ROOT / "agents" / "coder.yaml"), prompt=f"Slow. {marker}", every="1s"
        ),
    )
    handle = client.get_schedule_handle(name)
    try:

        async def skipped() -> bool:
            return (await handle.describe()).info.num_actions_skipped_overlap >= 2

        await wait_for(skipped, within_s=30, what="runs skipped for overlap")
        running = await runs_of(client, name, "Running")
        assert len(running) <= 1  # skip: never two at once
    finally:
        await handle.delete()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--cron", "61 * * *"], "--cron '61 * * *': expected 5 fields"),
        (["--every", "soon"], "--every 'soon': use a duration like 30s"),
        (["--every", "1h", "--timezone", "Atlantis/Capital"], "unknown time zone"),
        ([], "give --cron or --every"),
        (["--every", "1h", "--agent", "agents/nope.yaml"], "agents/nope.yaml: no such agent file"),
    ],
)
async def test_bad_schedule_input_creates_nothing(
    address: str, client: Client, extra: list[str], expected: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    agent = [] if "--agent" in extra else ["--agent", "agents/coder.yaml"]
    code, _, err = await cli(address, "schedule", "create", name, *agent, *extra, "prompt")
    assert code == 2 and expected in err
    assert name not in [s.id async for s in await client.list_schedules()]


async def test_a_duplicate_schedule_name_is_refused(address: str, client: Client) -> None:
    name = f"dup-{uuid.uuid4().hex[:6]}"
    args = ["schedule", "create", name, "--agent", "agents/coder.yaml", "--every", "1h", "--paused", "p"]
    assert (await cli(address, *args))[0] == 0
    code, _, err = await cli(address, *args)
    assert code == 2 and f"a schedule named {name!r} already exists" in err
    await client.get_schedule_handle(name).delete()


async def test_backfill_runs_past_times(client: Client, address: str, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(scripted, [Step(text="backfilled")])
    name = f"back-{uuid.uuid4().hex[:6]}"
    assert (
        await cli(
            address,
            "schedule",
            "create",
            name,
            "--agent",
            "agents/coder.yaml",
            "--cron",
            "0 * * * *",
            "--paused",
            f"Hourly. {marker}",
        )
    )[0] == 0
    code, _, err = await cli(
        address, "schedule", "backfill", name, "--from", "2026-01-01T00:00:00", "--to", "2026-01-01T02:30:00"
    )
    assert code == 0, err

    async def three_runs() -> bool:
        return len(await runs_of(client, name)) >= 3

    await wait_for(three_runs, within_s=60, what="three backfilled runs")
    await client.get_schedule_handle(name).delete()
    await asyncio.sleep(0)
