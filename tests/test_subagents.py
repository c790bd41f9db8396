"""Subagents as child workflows: fan-out, shared hands, limits, failures, interrupts, crashes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError

from durable_agents.agent_files import AgentFileError, load_agent
from durable_agents.client import session_events, start_agent_session, wait_until_settled
from durable_agents.contracts import SessionEvent, SessionResult, Subagent
from durable_agents.testing.scripted_model import ScriptedError, ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, coder, released, session_has_container, spawn, wait_for, with_subagents

ROOT = Path(__file__).resolve().parent.parent


def results(events: list[SessionEvent]) -> list[Any]:
    return [e.tool_result for e in events if e.kind == "tool_result"]


def child_scenario(scripted: ScriptedModelServer, steps: list[Step]) -> str:
    """A scenario for a subagent; its task must contain the returned marker."""
    return add_scenario(scripted, steps)


@pytest.mark.usefixtures("workers")
async def test_three_children_in_parallel_each_in_its_own_sandbox(
    client: Client, scripted: ScriptedModelServer
) -> None:
    child_tasks = []
    for i in range(3):
        marker = child_scenario(
            scripted,
            [
                Step(tool_use=ToolUse(name="bash", input={"command": f"sleep 1; echo part-{i} > part.txt; hostname"})),
                Step(tool_use=ToolUse(name="read_file", input={"path": "part.txt"})),
                Step(text="wrote {last_tool_result}"),
            ],
        )
        child_tasks.append(f"Write part {i}. {marker}")
    marker = add_scenario(
        scripted,
        [
            Step(text="Fanning out.", tool_uses=[spawn("writer", t) for t in child_tasks]),
            Step(text="Collected."),
        ],
    )
    agent = with_subagents(coder(), Subagent(name="writer", description="writes a part", spec=coder()))
    handle = await start_agent_session(client, agent, f"Three parts. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "Collected."
    events = await session_events(client, handle.id)
    spawned = [r for r in results(events)]
    assert [r.is_error for r in spawned] == [False, False, False]
    # (recorded as they finish, in any order)
    assert sorted(r.output for r in spawned) == [
        f"Subagent {handle.id}/sub-{i + 1} (writer) answered:\nwrote part-{i}" for i in range(3)
    ]
    # Children are real child workflows with their own sandboxes, and they ran at the same time.
    sandboxes, windows = set(), []
    for i in range(1, 4):
        child = client.get_workflow_handle(f"{handle.id}/sub-{i}")
        description = await child.describe()
        assert description.status == WorkflowExecutionStatus.COMPLETED
        assert description.parent_id == handle.id
        assert await description.static_summary() == f"coder: Write part {i - 1}. " + child_tasks[i - 1].split(". ")[1]
        child_events = await session_events(client, child.id)
        sandboxes |= {e.sandbox.sandbox_id for e in child_events if e.kind == "sandbox_provisioned" and e.sandbox}
        windows.append((child_events[0].at, child_events[-1].at))
    assert len(sandboxes) == 3
    assert max(start for start, _ in windows) < min(end for _, end in windows)  # overlapping: in parallel
    # Usage rolls up: the parent's total includes its children's.
    child_usage = 0
    for i in range(1, 4):
        child = client.get_workflow_handle(f"{handle.id}/sub-{i}", result_type=SessionResult)
        child_usage += (await child.result()).usage.input_tokens
    parent_own = sum(e.usage.input_tokens for e in events if e.kind == "model_turn" and e.usage)
    assert result.usage.input_tokens == parent_own + child_usage
    kinds = [e.kind for e in events]
    assert kinds.count("subagent_started") == 3 and kinds.count("subagent_finished") == 3
    # The UI and `temporal workflow list` find a session's children by the ParentSession attribute.
    children: list[str] = []

    async def listed() -> bool:
        children[:] = [w.id async for w in client.list_workflows(f'ParentSession="{handle.id}"')]
        return len(children) == 3

    await wait_for(listed, within_s=30, what="the children by ParentSession")
    assert sorted(children) == [f"{handle.id}/sub-{i}" for i in range(1, 4)]


@pytest.mark.usefixtures("workers")
async def test_a_child_sharing_the_sandbox_sees_the_parents_files(
    client: Client, scripted: ScriptedModelServer
) -> None:
    child = child_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "cat /workspace/plan.txt; echo child >> plan.txt"})),
            Step(text="{last_tool_result}"),
        ],
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "plan.txt", "content": "from parent\n"})),
            Step(tool_use=spawn("helper", f"Read the plan. {child}", share=True)),
            Step(tool_use=ToolUse(name="bash", input={"command": "cat plan.txt"})),
            Step(text="{last_tool_result}"),
        ],
    )
    agent = with_subagents(coder(), Subagent(name="helper", spec=coder()))
    handle = await start_agent_session(client, agent, f"Share. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.answer == "from parent\nchild"  # the parent sees what the child wrote
    spawned = results(await session_events(client, handle.id))[1]
    assert spawned.output.endswith("answered:\nfrom parent")
    child_events = await session_events(client, f"{handle.id}/sub-1")
    kinds = [e.kind for e in child_events]
    assert "sandbox_provisioned" not in kinds and "sandbox_destroyed" not in kinds  # hands passed, not made


@pytest.mark.usefixtures("workers")
async def test_limits_depth_and_concurrency(client: Client, scripted: ScriptedModelServer) -> None:
    leaf = coder()
    # depth 0 -> 1 -> 2 allowed (max_depth 2); the depth-2 session's spawn is refused.
    grandchild_task_marker = child_scenario(
        scripted, [Step(tool_use=spawn("deeper", "go deeper")), Step(text="{last_tool_result}")]
    )
    child_task_marker = child_scenario(
        scripted,
        [Step(tool_use=spawn("deeper", f"grandchild {grandchild_task_marker}")), Step(text="{last_tool_result}")],
    )
    level2 = with_subagents(leaf, Subagent(name="deeper", spec=leaf))
    level1 = with_subagents(leaf, Subagent(name="deeper", spec=level2))
    root = with_subagents(leaf, Subagent(name="deeper", spec=level1), max_concurrent_children=2)
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=spawn("deeper", f"child {child_task_marker}")),
            Step(tool_uses=[spawn("nobody", "x"), spawn("deeper", "a"), spawn("deeper", "b"), spawn("deeper", "c")]),
            Step(text="done"),
        ],
    )
    handle = await start_agent_session(client, root, f"Nest. {marker}", one_shot=True)
    assert (await asyncio.wait_for(handle.result(), timeout=120)).status == "done"
    first, unknown, *fanned = results(await session_events(client, handle.id))
    assert "Subagents may nest 2 deep; this session is at depth 2 and cannot spawn." in first.output
    assert unknown.is_error and unknown.output == "Unknown subagent 'nobody'."
    refused = [r for r in fanned if r.is_error]
    assert len(refused) == 1 and "the most at once (2)" in refused[0].output


@pytest.mark.usefixtures("workers")
async def test_a_failing_child_is_an_error_result_and_the_parent_goes_on(
    client: Client, scripted: ScriptedModelServer
) -> None:
    child = child_scenario(
        scripted, [Step(error=ScriptedError(status=400, type="invalid_request_error", message="bad", times=99))]
    )
    marker = add_scenario(scripted, [Step(tool_use=spawn("helper", f"Fail. {child}")), Step(text="Parent carried on.")])
    agent = with_subagents(coder(), Subagent(name="helper", spec=coder()))
    handle = await start_agent_session(client, agent, f"Cope. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "Parent carried on."
    (spawned,) = results(await session_events(client, handle.id))
    assert spawned.is_error and f"Subagent {handle.id}/sub-1 (helper) failed" in spawned.output
    assert "400" in spawned.output


@pytest.mark.usefixtures("workers")
async def test_interrupting_the_parent_cancels_its_children(client: Client, scripted: ScriptedModelServer) -> None:
    child = child_scenario(
        scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "sleep 60"})), Step(text="late")]
    )
    marker = add_scenario(scripted, [Step(tool_use=spawn("slow", f"Sleep. {child}")), Step(text="after the interrupt")])
    agent = with_subagents(coder(), Subagent(name="slow", spec=coder()))
    handle = await start_agent_session(client, agent, f"Wait. {marker}")
    child_handle = client.get_workflow_handle(f"{handle.id}/sub-1")

    await wait_for(lambda: session_has_container(child_handle.id), within_s=60, what="the child's sandbox")
    await asyncio.sleep(1.5)  # its first call runs (provisioned with it)
    offset = await handle.execute_update("interrupt", result_type=int)
    assert offset > 0
    assert (await child_handle.describe()).status in (
        WorkflowExecutionStatus.CANCELED,
        WorkflowExecutionStatus.RUNNING,  # cancellation requested, finishing its clean-up
    )
    for _ in range(100):
        if (await child_handle.describe()).status == WorkflowExecutionStatus.CANCELED:
            break
        await asyncio.sleep(0.1)
    assert (await child_handle.describe()).status == WorkflowExecutionStatus.CANCELED
    state = await wait_until_settled(client, handle.id)
    events = await session_events(client, handle.id)
    assert state.status == "idle" and "interrupted" in [e.kind for e in events]
    (cut,) = results(events)
    assert cut.is_error and cut.output == "Interrupted by the user before this call finished."
    # Nothing to interrupt now: a clear error, nothing changes.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("interrupt", result_type=int)
    assert "nothing to interrupt: the session is idle" in str(refused.value.cause)
    # The session goes on with the next message; the interrupted turn left a valid context.
    await handle.execute_update("send_message", "Carry on.", result_type=int)
    state = await wait_until_settled(client, handle.id, after_event=len(events))
    assert state.last_answer == "after the interrupt"
    await handle.signal("end_session")
    await handle.result()
    await released(await session_events(client, child_handle.id), child_handle.id)  # by its host, after it closed
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"durable-agents.session={child_handle.id}"}
    )
    assert leftovers == []


def test_agent_files_resolve_subagent_files_and_refuse_cycles(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text("name: child\nmodel: {name: m}\n")
    (tmp_path / "parent.yaml").write_text(
        "name: parent\nmodel: {name: m}\nsubagents:\n  - {name: kid, agent: child.yaml, share_sandbox: true}\n"
    )
    parent = load_agent(tmp_path / "parent.yaml")
    assert parent.subagents[0].spec is not None and parent.subagents[0].spec.name == "child"
    (tmp_path / "loop.yaml").write_text("name: loop\nmodel: {name: m}\nsubagents:\n  - {name: me, agent: loop.yaml}\n")
    with pytest.raises(AgentFileError, match="leads back to itself"):
        load_agent(tmp_path / "loop.yaml")
    (tmp_path / "broken.yaml").write_text("name: b\nmodel: {name: m}\nsubagents:\n  - {name: x, agent: nope.yaml}\n")
    with pytest.raises(AgentFileError, match=r"broken.yaml: subagents.0.agent: .*nope.yaml: no such agent file"):
        load_agent(tmp_path / "broken.yaml")
    (tmp_path / "neither.yaml").write_text("name: n\nmodel: {name: m}\nsubagents:\n  - {name: x}\n")
    with pytest.raises(AgentFileError, match="give either agent"):
        load_agent(tmp_path / "neither.yaml")


async def test_killing_the_harness_worker_while_three_children_run(
    chaos_client: Client, scripted: ScriptedModelServer, worker_processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    client = chaos_client

    def spawn_worker(*args: str) -> subprocess.Popen[bytes]:
        return worker_processes(*args, env={"SANDBOX_WARM_POOL": "0"})

    child_tasks = []
    for i in range(3):
        marker = child_scenario(
            scripted,
            [
                Step(tool_use=ToolUse(name="bash", input={"command": f"sleep 2; echo {i} >> /workspace/ran.log"})),
                Step(tool_use=ToolUse(name="bash", input={"command": "wc -l < /workspace/ran.log"})),
                Step(text="lines: {last_tool_result}"),
            ],
        )
        child_tasks.append(f"Child {i}. {marker}")
    marker = add_scenario(scripted, [Step(tool_uses=[spawn("w", t) for t in child_tasks]), Step(text="all back")])
    harness = spawn_worker("--harness")
    spawn_worker("--sandbox")
    agent = with_subagents(coder(), Subagent(name="w", spec=coder()))
    handle = await start_agent_session(client, agent, f"Crash me. {marker}", one_shot=True)

    async def children_running() -> bool:
        return (
            sum(1 for r in scripted.requests if any(t.split(". ")[1] in json.dumps(r.body) for t in child_tasks)) >= 3
        )

    await wait_for(children_running, within_s=60, what="three children's first model calls")
    harness.send_signal(signal.SIGKILL)
    harness.wait(timeout=10)
    spawn_worker("--harness")
    result = await asyncio.wait_for(handle.result(), timeout=180)
    assert result.status == "done" and result.answer == "all back"
    spawned = results(await session_events(client, handle.id))
    assert len(spawned) == 3 and all(not r.is_error for r in spawned)
    assert all(r.output.endswith("lines: 1") for r in spawned)  # each child's command ran once
    events = await session_events(client, handle.id)
    assert [e.kind for e in events].count("subagent_started") == 3
    for i in (1, 2, 3):
        assert (await client.get_workflow_handle(f"{handle.id}/sub-{i}").describe()).status == (
            WorkflowExecutionStatus.COMPLETED
        )
    with pytest.raises(Exception, match="not found"):  # no child was started twice under a new number
        await client.get_workflow_handle(f"{handle.id}/sub-4").describe()


@pytest.mark.usefixtures("workers")
async def test_a_child_terminated_from_outside_is_an_error_result(
    client: Client, scripted: ScriptedModelServer
) -> None:
    child = child_scenario(scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "sleep 60"}))])
    marker = add_scenario(scripted, [Step(tool_use=spawn("slow", f"Sleep. {child}")), Step(text="went on")])
    agent = with_subagents(coder(), Subagent(name="slow", spec=coder()))
    handle = await start_agent_session(client, agent, f"Terminate. {marker}", one_shot=True)
    child_handle = client.get_workflow_handle(f"{handle.id}/sub-1")

    async def child_started() -> bool:
        try:
            return any(e.kind == "model_turn" for e in await session_events(client, child_handle.id))
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await wait_for(child_started, within_s=60, what="the child's first turn")
    await child_handle.terminate(reason="stopped from the UI")
    result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.answer == "went on"
    (spawned,) = results(await session_events(client, handle.id))
    assert spawned.is_error and spawned.output.startswith(f"Subagent {child_handle.id} (slow) failed: ")
    assert "terminated" in spawned.output.lower()
