"""Record the histories that tests/test_replay.py replays: one real session per SessionWorkflow feature.

Not collected by the normal suite (the name is not test_*.py). Run it explicitly; it overwrites
tests/histories/<name>.json for each recording it makes (a `-k` selects some):

    .venv/bin/python -m pytest tests/histories/record_sessions.py [-k NAME]

It uses the fixtures of tests/conftest.py: a real dev server, the scripted model, in-process
harness and sandbox workers and real Docker. Each recording asserts that its feature really
happened in the session's events (a recording that missed its feature fails and writes nothing),
that the history is self-contained (no payload in the external payload store, none encrypted,
every payload small) and that it replays against today's SessionWorkflow.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer

from durable_agents import schedules, session_log
from durable_agents.agent_files import load_agent
from durable_agents.client import (
    new_outcome,
    post_tool_result,
    send_message,
    session_events,
    start_agent_session,
    wait_until_settled,
)
from durable_agents.contracts import (
    GET_STATE,
    AgentSpec,
    CustomTool,
    GitSource,
    McpServer,
    SessionEvent,
    SessionInput,
    SessionResult,
    SessionState,
    Skill,
    Subagent,
    WorkspaceSeed,
)
from durable_agents.payload_store import data_converter
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from durable_agents.workflows.session import SessionWorkflow
from tests.helpers import add_scenario, released, wait_for, write_then_read_twice

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = Path(__file__).resolve().parent
MCP_BIN = ROOT / "mcp-servers" / "node_modules" / ".bin"
MAX_PAYLOAD = 64 * 1024  # well under the payload store's 256 KiB threshold
# Payload metadata values (base64 in the JSON) a self-contained history must not hold.
FOREIGN_ENCODINGS = {b"json/external-storage-reference", b"binary/encrypted"}
REFERENCE_MARKER = "__temporal_external_storage_reference"

pytestmark = [pytest.mark.usefixtures("workers"), pytest.mark.timeout(600)]


# --- helpers ---------------------------------------------------------------------------------


def coder(sandbox: dict[str, Any] | None = None, limits: dict[str, Any] | None = None, **fields: Any) -> AgentSpec:
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    if sandbox:
        fields["sandbox"] = agent.sandbox.model_copy(update=sandbox)
    if limits:
        fields["limits"] = agent.limits.model_copy(update=limits)
    return agent.model_copy(update=fields)


def kinds(events: list[SessionEvent]) -> list[str]:
    return [e.kind for e in events]


def results(events: list[SessionEvent]) -> list[Any]:
    return [e.tool_result for e in events if e.kind == "tool_result"]


def bash(command: str) -> ToolUse:
    return ToolUse(name="bash", input={"command": command})


def _payloads(node: Any) -> list[dict[str, Any]]:
    """Every Payload in a history's JSON (a dict with base64 `metadata` and usually `data`)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict) and ("data" in node or "encoding" in node["metadata"]):
            found.append(node)
        for value in node.values():
            found += _payloads(value)
    elif isinstance(node, list):
        for value in node:
            found += _payloads(value)
    return found


def check_self_contained(text: str, name: str) -> int:
    """Nothing in the payload store or encrypted (a clean clone could not read it), every payload
    small. Returns the largest payload's size."""
    assert REFERENCE_MARKER not in text, f"{name}: a payload went to the external payload store"
    largest = 0
    payloads = _payloads(json.loads(text))
    assert payloads, f"{name}: no payloads found in the history"
    for payload in payloads:
        encoding = base64.b64decode(payload["metadata"].get("encoding", ""))
        assert encoding not in FOREIGN_ENCODINGS, f"{name}: a payload is {encoding.decode()}"
        largest = max(largest, len(base64.b64decode(payload.get("data", ""))))
    assert largest < MAX_PAYLOAD, f"{name}: a payload of {largest} bytes"
    return largest


async def record(client: Client, workflow_id: str, name: str, run_id: str | None = None) -> WorkflowHistory:
    """Fetch one run's history, check it, replay it, then write tests/histories/<name>.json."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    text = history.to_json()
    largest = check_self_contained(text, name)
    replayer = Replayer(workflows=[SessionWorkflow], data_converter=data_converter())
    replayed = await replayer.replay_workflow(WorkflowHistory.from_json(name, text), raise_on_replay_failure=False)
    assert replayed.replay_failure is None, f"{name} does not replay: {replayed.replay_failure}"
    (HISTORIES / f"{name}.json").write_text(text)
    print(f"recorded {name}.json: {len(history.events)} events, {len(text)} bytes, largest payload {largest} B")
    return history


def event_types(history: WorkflowHistory) -> list[EventType.ValueType]:
    return [e.event_type for e in history.events]


async def start(
    client: Client, name: str, agent: AgentSpec, task: str, **options: Any
) -> WorkflowHandle[Any, SessionResult]:
    """A session whose id is its recording's name: the replay test replays each file under its stem
    as the workflow id, and a session's commands that name children (`<id>/sub-N`) must match it."""
    return await start_agent_session(client, agent, task, session_id=name, **options)


async def finish(client: Client, session_id: str) -> SessionResult:
    handle = client.get_workflow_handle(session_id, result_type=SessionResult)
    await handle.signal("end_session")
    return await asyncio.wait_for(handle.result(), timeout=120)


# --- recordings ------------------------------------------------------------------------------


async def test_tools(client: Client, scripted: ScriptedModelServer) -> None:
    """One-shot: write_file, read_file, edit_file, bash (ok and a non-zero exit), two calls in one
    turn, an unknown tool and a bad input."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "hello.py", "content": "print('hello')\n"})),
            Step(tool_use=ToolUse(name="read_file", input={"path": "hello.py"})),
            Step(
                tool_use=ToolUse(
                    name="edit_file", input={"path": "hello.py", "old_string": "hello", "new_string": "edited"}
                )
            ),
            Step(tool_use=bash("python3 hello.py")),
            Step(tool_use=bash("sh -c 'echo oops >&2; exit 3'")),
            Step(tool_uses=[bash("echo one"), ToolUse(name="read_file", input={"path": "hello.py"})]),
            Step(tool_uses=[ToolUse(name="teleport", input={"to": "mars"}), ToolUse(name="bash", input={"cmd": "ls"})]),
            Step(text="It printed: edited"),
        ],
    )
    handle = await start(client, "tools", coder(), f"Use every tool. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "It printed: edited"
    events = await session_events(client, handle.id)
    out = results(events)
    assert [r.name for r in out] == [
        "write_file",
        "read_file",
        "edit_file",
        "bash",
        "bash",
        "bash",
        "read_file",
        "teleport",
        "bash",
    ]
    assert out[1].output == "print('hello')\n" and not out[2].is_error and out[3].output == "edited\n"
    assert out[4].is_error and "[exit code 3]" in out[4].output and "oops" in out[4].output
    assert out[5].output == "one\n" and out[6].output == "print('edited')\n"
    assert out[7].is_error and "Unknown tool 'teleport'" in out[7].output
    assert out[8].is_error and "Invalid input for bash" in out[8].output
    assert kinds(events)[-1] == "status" and events[-1].status == "done"
    history = await record(client, handle.id, "tools")
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED in event_types(history)


async def test_sandbox_lost(client: Client, scripted: ScriptedModelServer) -> None:
    """The container is killed between turns; the next call meets a lost sandbox and a replacement
    is provisioned with the snapshot restored."""
    marker = write_then_read_twice(scripted, "notes.txt", "kept\n", "Still there: {last_tool_result}")
    handle = await start(client, "sandbox-lost", coder(), f"Keep a note. {marker}")
    await wait_until_settled(client, handle.id)
    events = await session_events(client, handle.id)
    first = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert first is not None and "sandbox_snapshot" in kinds(events)
    subprocess.run(["docker", "kill", first.sandbox_id], check=True, capture_output=True, timeout=60)
    offset = await send_message(client, handle.id, "Show me the note.")
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "Still there: kept"
    await finish(client, handle.id)
    events = await session_events(client, handle.id, offset)
    reset, after = results(events)
    assert reset.is_error and "environment was reset" in reset.output and "restored from the snapshot" in reset.output
    assert after.output == "kept\n"
    lost = next(e for e in events if e.kind == "sandbox_destroyed")
    assert lost.text == "lost" and lost.sandbox and lost.sandbox.sandbox_id == first.sandbox_id
    replacement = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert replacement is not None and replacement.restored is not None
    assert replacement.sandbox_id != first.sandbox_id
    await record(client, handle.id, "sandbox-lost")


async def test_approvals(client: Client, scripted: ScriptedModelServer) -> None:
    """An always_ask tool: one call approved, the next denied (the model is told why)."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=bash("echo approved-run")),
            Step(tool_use=bash("rm -rf /workspace")),
            Step(text="Told: {last_tool_result}"),
        ],
    )
    agent = coder(policies={"bash": "always_ask"})
    handle = await start(client, "approvals", agent, f"Ask first. {marker}", one_shot=True)
    state = await wait_until_settled(client, handle.id)
    assert state.status == "waiting" and len(state.awaiting_approval) == 1
    offset = await handle.execute_update("approve", state.awaiting_approval[0].id, result_type=int)
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.status == "waiting" and state.awaiting_approval[0].input["command"] == "rm -rf /workspace"
    await handle.execute_update("deny", args=[state.awaiting_approval[0].id, "not my workspace"], result_type=int)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.answer == "Told: The user denied this bash call: not my workspace"
    events = await session_events(client, handle.id)
    assert [k for k in kinds(events) if k.startswith("approval_")] == [
        "approval_requested",
        "approval_granted",
        "approval_requested",
        "approval_denied",
    ]
    ran = results(events)
    assert ran[0].output == "approved-run\n" and ran[1].is_error
    await record(client, handle.id, "approvals")


async def test_custom_tool(client: Client, scripted: ScriptedModelServer) -> None:
    """A client-executed tool: a bad input is refused in the session, a good one waits for the
    client, which posts the result."""
    weather = CustomTool(
        name="lookup_weather",
        description="Current weather for a city (the client looks it up).",
        input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="lookup_weather", input={"town": "Oslo"})),
            Step(tool_use=ToolUse(name="lookup_weather", input={"city": "Oslo"})),
            Step(text="Weather: {last_tool_result}"),
        ],
    )
    handle = await start(client, "custom-tool", coder(custom_tools=[weather]), f"Weather? {marker}")
    state = await wait_until_settled(client, handle.id)
    assert state.status == "waiting" and [c.input for c in state.awaiting_client] == [{"city": "Oslo"}]
    offset = await post_tool_result(client, handle.id, state.awaiting_client[0].id, {"content": "12 C, light rain"})
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "Weather: 12 C, light rain"
    await finish(client, handle.id)
    events = await session_events(client, handle.id)
    assert "tool_requested" in kinds(events)
    refused, posted = results(events)
    assert refused.is_error and "Invalid input for lookup_weather" in refused.output
    assert posted.name == "lookup_weather" and posted.output == "12 C, light rain" and not posted.is_error
    await record(client, handle.id, "custom-tool")


async def test_subagents(client: Client, scripted: ScriptedModelServer) -> None:
    """spawn_agent twice: a child in its own sandbox, then one sharing the parent's."""
    own = add_scenario(scripted, [Step(tool_use=bash("echo own > mine.txt; ls")), Step(text="own: {last_tool_result}")])
    shared = add_scenario(
        scripted,
        [Step(tool_use=bash("cat /workspace/plan.txt; echo child >> plan.txt")), Step(text="{last_tool_result}")],
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "plan.txt", "content": "from parent\n"})),
            Step(tool_use=ToolUse(name="spawn_agent", input={"agent": "helper", "task": f"Own hands. {own}"})),
            Step(
                tool_use=ToolUse(
                    name="spawn_agent",
                    input={"agent": "helper", "task": f"Read the plan. {shared}", "share_sandbox": True},
                )
            ),
            Step(tool_use=bash("cat plan.txt; ls")),
            Step(text="{last_tool_result}"),
        ],
    )
    agent = coder(subagents=[Subagent(name="helper", description="does one part", spec=coder())])
    handle = await start(client, "subagents", agent, f"Delegate. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=180)
    assert result.status == "done" and result.answer == "from parent\nchild\nplan.txt"  # not the child's mine.txt
    events = await session_events(client, handle.id)
    assert kinds(events).count("subagent_started") == 2 and kinds(events).count("subagent_finished") == 2
    spawned = [r for r in results(events) if r.name == "spawn_agent"]
    assert spawned[0].output == f"Subagent {handle.id}/sub-1 (helper) answered:\nown: mine.txt"
    assert spawned[1].output == f"Subagent {handle.id}/sub-2 (helper) answered:\nfrom parent"
    started = [e for e in events if e.kind == "subagent_started"]
    assert started[0].sandbox is None and started[1].sandbox is not None
    own_events = await session_events(client, f"{handle.id}/sub-1")
    assert "sandbox_provisioned" in kinds(own_events) and "sandbox_released" in kinds(own_events)
    shared_events = await session_events(client, f"{handle.id}/sub-2")
    assert "sandbox_provisioned" not in kinds(shared_events) and "sandbox_released" not in kinds(shared_events)
    history = await record(client, handle.id, "subagents")
    assert event_types(history).count(EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED) == 2
    await record(client, f"{handle.id}/sub-1", "subagents-child-own-sandbox")
    await record(client, f"{handle.id}/sub-2", "subagents-child-shared-sandbox")


def ticks(n: int, skill: str = "tick") -> list[Step]:
    """n cheap tool turns (load_skill without copy_files runs inside the workflow), alternating
    inputs so the loop guard sees no repetition."""
    return [
        Step(tool_use=ToolUse(name="load_skill", input={"name": skill if i % 2 == 0 else "other"})) for i in range(n)
    ]


def tick_skills(body: str = "tock") -> list[Skill]:
    return [
        Skill(name="tick", description="a cheap tool", body=body),
        Skill(name="other", description="another cheap tool", body=body),
    ]


async def test_compaction(client: Client, scripted: ScriptedModelServer) -> None:
    """A small context budget: older turns are summarised by a model call (compaction events)."""
    marker = add_scenario(scripted, [*ticks(12), Step(text="all done")])
    agent = coder(limits={"context_tokens": 3000, "keep_recent_tokens": 1000}, skills=tick_skills("lorem ipsum " * 150))
    handle = await start(client, "compaction", agent, f"Read a lot. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "all done" and result.turns == 13
    events = await session_events(client, handle.id)
    compactions = [e for e in events if e.kind == "compaction"]
    assert compactions and (compactions[0].text or "").startswith("The user asked: Read a lot.")
    await record(client, handle.id, "compaction")


async def test_continue_as_new(client: Client, scripted: ScriptedModelServer) -> None:
    """history_events 200: run 1 continues as new in the middle of an answer (its sandbox carried),
    run 2 finishes that answer and, after more messages, continues as new between messages (idle),
    run 3 takes a message and ends. Each run is recorded."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "carried.txt", "content": "across runs\n"})),
            *ticks(45),
            Step(text="ticked"),
            Step(tool_use=bash("cat carried.txt")),
            Step(text="read: {last_tool_result}"),
            Step(text="reply {n}", repeat=100),
        ],
    )
    agent = coder(limits={"history_events": 200, "max_turns": 100}, skills=tick_skills())
    handle = await start(client, "continue", agent, f"Tick a lot. {marker}")
    state = await wait_until_settled(client, handle.id)
    assert state.last_answer == "ticked" and state.run == 2
    offset = await send_message(client, handle.id, "Read the file.")
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "read: across runs" and state.run == 2
    for i in range(60):  # one-turn answers: the run can only continue between messages
        offset = await send_message(client, handle.id, f"Message {i}.")
        state = await wait_until_settled(client, handle.id, after_event=offset)
        if state.run == 3:
            break
    assert state.run == 3, "run 2 should have continued as new between messages"
    offset = await send_message(client, handle.id, "Once more.")
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert (state.last_answer or "").startswith("reply ")
    result = await finish(client, handle.id)
    assert result.status == "done"

    chain = await session_log.runs(client, handle.id)
    assert [r.number for r in chain] == [1, 2, 3]
    events = await session_events(client, handle.id)
    assert [e.offset for e in events] == list(range(len(events)))
    assert kinds(events).count("continued") == 2 and kinds(events).count("sandbox_provisioned") == 1
    carried: list[SessionInput] = []
    for i, run in enumerate(chain, start=1):
        history = await record(client, handle.id, f"continue-run{i}", run_id=run.run_id)
        last = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW if i < 3 else None
        assert (last or EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED) == history.events[-1].event_type
        if i > 1:
            started = history.events[0].workflow_execution_started_event_attributes
            (inp,) = await data_converter().decode(started.input.payloads, [SessionInput])
            carried.append(inp)
    assert carried[0].carry is not None and carried[0].carry.resume  # run 1 stopped mid-answer
    assert carried[1].carry is not None and not carried[1].carry.resume and carried[1].carry.status == "idle"
    assert carried[0].carry.sandbox is not None and carried[1].carry.sandbox == carried[0].carry.sandbox


async def test_scheduled_run(client: Client, scripted: ScriptedModelServer) -> None:
    """A Temporal Schedule starts one-shot sessions whose task is a template: the second run's
    task holds the date and the first run's answer."""
    marker = add_scenario(scripted, [Step(text="all quiet")])
    name = f"record-{uuid.uuid4().hex[:6]}"
    handle = await schedules.create(
        client,
        schedules.ScheduleRequest(
            name=name,
            agent_path=str(ROOT / "agents" / "coder.yaml"),
            prompt=f"Report for {{date}}. Yesterday: {{last_result}} {marker}",
            every="1h",
            paused=True,
        ),
    )

    async def completed_runs() -> list[Any]:
        query = f'TemporalScheduledById = "{name}" AND ExecutionStatus = "Completed"'
        return sorted([wf async for wf in client.list_workflows(query)], key=lambda wf: wf.start_time)

    try:
        for n in (1, 2):
            await asyncio.sleep(1.1)  # a run's id ends in its start time, to the second: two must differ
            await handle.trigger()

            async def done(n: int = n) -> bool:
                return len(await completed_runs()) >= n

            await wait_for(done, within_s=60, what=f"scheduled run {n}")
    finally:
        await handle.delete()
    first, second = await completed_runs()
    assert first.id != second.id
    task = (await session_events(client, second.id))[0]
    assert task.kind == "session_started" and task.text is not None
    assert f"Report for {second.start_time.date().isoformat()}." in task.text
    assert "Yesterday: all quiet " in task.text and "{last_result}" not in task.text
    history = await record(client, second.id, "scheduled-run")
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled[0] == "last_scheduled_result"


async def test_mcp_and_refresh_tools(client: Client, scripted: ScriptedModelServer, tmp_path: Path) -> None:
    """MCP tools over stdio (npm's server-memory), then refresh_tools and a call with the new list."""
    if not (MCP_BIN / "mcp-server-memory").exists():
        pytest.fail("the npm MCP servers are missing: run `make setup`")
    entity = {"name": "durable-agents", "entityType": "project", "observations": ["runs on Temporal"]}
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="memory__create_entities", input={"entities": [entity]})),
            Step(tool_use=ToolUse(name="memory__read_graph", input={})),
            Step(text="remembered"),
            Step(tool_use=ToolUse(name="memory__search_nodes", input={"query": "Temporal"})),
            Step(text="found it"),
        ],
    )
    memory = McpServer(
        name="memory",
        command=str(MCP_BIN / "mcp-server-memory"),
        env={"MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")},
        policy="always_allow",
    )
    handle = await start(client, "mcp-refresh-tools", coder(mcp_servers=[memory]), f"Remember this. {marker}")
    state = await wait_until_settled(client, handle.id)
    assert state.last_answer == "remembered"
    refreshed = await handle.execute_update("refresh_tools", result_type=int)
    assert refreshed > 0
    offset = await send_message(client, handle.id, "Find it again.")
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "found it"
    await finish(client, handle.id)
    events = await session_events(client, handle.id)
    assert kinds(events).count("mcp_tools") == 2 and events[refreshed].kind == "mcp_tools"
    outputs = {r.name: r for r in results(events)}
    assert set(outputs) == {"memory__create_entities", "memory__read_graph", "memory__search_nodes"}
    assert not any(r.is_error for r in outputs.values())
    assert "runs on Temporal" in outputs["memory__read_graph"].output
    assert "durable-agents" in outputs["memory__search_nodes"].output
    await record(client, handle.id, "mcp-refresh-tools")


async def test_interrupt_and_queued_messages(client: Client, scripted: ScriptedModelServer) -> None:
    """Two messages queue while a tool call runs; the call is interrupted; the two messages then
    reach the model as one."""
    marker = add_scenario(scripted, [Step(tool_use=bash("echo started; sleep 120")), Step(text="Got both.")])
    handle = await start(client, "interrupt-queued-messages", coder(), f"Sleep. {marker}")

    async def sleeping() -> bool:
        pending = (await handle.describe()).raw_description.pending_activities
        return any(
            a.activity_type.name == "execute" and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            for a in pending
        )

    await wait_for(sleeping, within_s=60, what="the tool call to run")
    await asyncio.sleep(1)  # well inside the command
    await send_message(client, handle.id, "First queued message.")
    await send_message(client, handle.id, "Second queued message.")
    state = await handle.query(GET_STATE, result_type=SessionState)
    assert state.status == "running"
    offset = await handle.execute_update("interrupt", result_type=int)
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "Got both."
    await finish(client, handle.id)
    events = await session_events(client, handle.id)
    (cut,) = results(events)
    assert cut.is_error and cut.output == "Interrupted by the user before this call finished."
    assert "interrupted" in kinds(events)
    messages = [e.text for e in events if e.kind == "user_message"]
    assert messages[1:] == ["First queued message.\n\nSecond queued message."]
    history = await record(client, handle.id, "interrupt-queued-messages")
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED in event_types(history)


async def test_skill_and_loop_guard(client: Client, scripted: ScriptedModelServer) -> None:
    """load_skill (with its files copied into the sandbox), then the same call three times in a
    row: the third is refused."""
    same = bash("echo again >> /workspace/count; wc -l < /workspace/count")
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="load_skill", input={"name": "python-checks", "copy_files": True})),
            Step(tool_use=ToolUse(name="write_file", input={"path": "ok.py", "content": "print('fine')\n"})),
            Step(tool_use=bash("bash skills/python-checks/check.sh ok.py")),
            Step(tool_use=same),
            Step(tool_use=same),
            Step(tool_use=same),
            Step(text="stopped looping"),
        ],
    )
    handle = await start(client, "skill-loop-guard", coder(), f"Check and loop. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "stopped looping"
    events = await session_events(client, handle.id)
    assert [e.text for e in events if e.kind == "skill_loaded"] == ["python-checks"]
    loaded, _, checked, *looped = results(events)
    assert "[1 file(s) copied to /workspace/skills/python-checks/: check.sh]" in loaded.output
    assert checked.output.strip() == "compile: exit 0\nfine\nrun: exit 0"
    assert [r.output for r in looped[:2]] == ["1\n", "2\n"]
    assert looped[2].is_error and "same input 3 times in a row, so it was not run again" in looped[2].output
    await record(client, handle.id, "skill-loop-guard")


async def test_budget(client: Client, scripted: ScriptedModelServer) -> None:
    """A token budget stops the session with a reason."""
    marker = add_scenario(scripted, [Step(tool_use=bash("echo {n}"), repeat=20)])
    agent = coder(limits={"max_tokens_total": 3000})
    handle = await start(client, "budget", agent, f"Spend. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "failed" and (result.error or "").startswith("token budget exhausted:")
    assert result.turns < 20
    events = await session_events(client, handle.id)
    assert any(e.kind == "error" and (e.text or "").startswith("stopped: token budget") for e in events)
    await record(client, handle.id, "budget")


async def test_eager_sandbox_and_seeded_workspace(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    """sandbox.eager: provisioned before the first model call, /workspace seeded with inline files
    and a git clone."""
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("from the repository\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    marker = add_scenario(
        scripted, [Step(tool_use=bash("cat README.md notes/todo.txt")), Step(text="{last_tool_result}")]
    )
    seed = WorkspaceSeed(files={"notes/todo.txt": "inline file\n"}, git=GitSource(url=f"file://{repo}", ref="main"))
    agent = coder(sandbox={"eager": True})
    handle = await start(client, "eager-seeded-workspace", agent, f"Seeded. {marker}", one_shot=True, workspace=seed)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "from the repository\ninline file"
    events = await session_events(client, handle.id)
    assert kinds(events).index("sandbox_provisioned") < kinds(events).index("model_turn")
    provisioned = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert provisioned is not None and provisioned.seeded == f"git clone of file://{repo} at main and 1 file(s)"
    await record(client, handle.id, "eager-seeded-workspace")


async def test_idle_timeout(client: Client, scripted: ScriptedModelServer) -> None:
    """A session that is not one-shot, ended by its idle timeout (no end signal)."""
    marker = add_scenario(scripted, [Step(tool_use=bash("true")), Step(text="ok")])
    agent = coder(limits={"idle_timeout_s": 2})
    handle = await start(client, "idle-timeout", agent, f"Quick. {marker}")
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "ok"
    events = await session_events(client, handle.id)
    assert kinds(events)[-3:] == ["status", "sandbox_released", "status"]
    assert [e.status for e in events if e.kind == "status"] == ["idle", "done"]
    history = await record(client, handle.id, "idle-timeout")
    assert EventType.EVENT_TYPE_TIMER_FIRED in event_types(history)
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED not in event_types(history)


# --- recorded after the capability split (issue 15): features added since the first recordings ---


async def test_compaction_fallback(client: Client, scripted: ScriptedModelServer) -> None:
    """A summariser that always fails (the back-off patch: turns left out instead)."""
    marker = add_scenario(scripted, [*ticks(14), Step(text="all done")], summary="")
    agent = coder(limits={"context_tokens": 3000, "keep_recent_tokens": 1000}, skills=tick_skills("lorem ipsum " * 150))
    handle = await start(client, "compaction-fallback", agent, f"Read a lot. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "all done", result.error
    events = await session_events(client, handle.id)
    assert [e for e in events if e.kind == "compaction" and e.method == "truncation"]
    assert [e for e in events if e.kind == "error" and "compaction failed" in e.text]
    await record(client, handle.id, "compaction-fallback")


async def test_run_log_bound(client: Client, scripted: ScriptedModelServer) -> None:
    """Compaction drops 6 KB outputs from the context; once the run's events hold more text than the
    context (and run_log_bytes), it continues as new (the run-log-bytes patch). Both runs recorded."""
    marker = add_scenario(scripted, [*ticks(8), Step(text="all done")])
    agent = coder(
        limits={"context_tokens": 3000, "keep_recent_tokens": 1000, "run_log_bytes": 16_384},
        skills=tick_skills("lorem ipsum " * 500),
    )
    handle = await start(client, "run-log-bound", agent, f"Read a lot. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "all done", result.error
    chain = await session_log.runs(client, handle.id)
    assert len(chain) >= 2, "the run's log should have outgrown the context"
    for i, run in enumerate(chain[:2], start=1):
        history = await record(client, handle.id, f"run-log-bound-run{i}", run_id=run.run_id)
        if i == 1:
            patches = [
                json.loads(p.data)["id"]
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                for p in e.marker_recorded_event_attributes.details["patch-data"].payloads
            ]
            assert patches == ["run-log-bytes"], f"run 1 should carry the patch's marker, not {patches}"
            assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW


async def test_malformed_tool_uses(client: Client, scripted: ScriptedModelServer) -> None:
    """tool_use blocks with a string input, no id, a repeated id: error results, not a stuck session."""
    bad = [
        {"type": "tool_use", "id": "toolu_string", "name": "bash", "input": "ls"},
        {"type": "tool_use", "name": "bash", "input": {"command": "echo no id"}},
        {"type": "tool_use", "id": "toolu_string", "name": "bash", "input": {"command": "echo twice"}},
    ]
    marker = add_scenario(scripted, [Step(text="Odd calls.", raw_blocks=bad), Step(text="Recovered.")])
    handle = await start(client, "malformed-tool-uses", coder(), f"Odd calls. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.answer == "Recovered."
    events = await session_events(client, handle.id)
    assert all(e.tool_result.is_error for e in events if e.kind == "tool_result")
    await record(client, handle.id, "malformed-tool-uses")


async def test_plain_client_agent_ref(client: Client, scripted: ScriptedModelServer) -> None:
    """A session a plain client starts by agent_ref, leaving the search attributes to the session
    (the prepare_session activity resolves both)."""
    marker = add_scenario(scripted, [Step(tool_use=bash("echo hi")), Step(text="Said hi.")])
    handle = await client.start_workflow(
        SessionWorkflow.run,
        SessionInput(agent_ref="coder", task=f"Say hi. {marker}", one_shot=True),
        id="agent-ref",
        task_queue="agents",
    )
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.answer == "Said hi."
    events = await session_events(client, handle.id)
    assert events[0].kind == "session_started" and events[0].agent is not None
    history = await record(client, handle.id, "agent-ref")
    assert "prepare_session" in history.to_json()


async def test_outcome(client: Client, scripted: ScriptedModelServer) -> None:
    """An outcome graded twice: needs_revision (its feedback the next message), then satisfied."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "a.txt", "content": "1\n"})),
            Step(text="See a.txt"),
            Step(text="Revised a.txt"),
        ],
    )
    verdicts = [("needs_revision", "More."), ("satisfied", "Good.")]
    rubric = add_scenario(scripted, [Step(text=json.dumps({"result": r, "explanation": e})) for r, e in verdicts])
    outcome = new_outcome(f"Write a.txt {marker}", f"- a.txt exists {rubric}", 3)
    handle = await start(client, "outcome", coder(), outcome.description, outcome=outcome)
    await wait_until_settled(client, handle.id)
    events = await session_events(client, handle.id)
    assert [e.result for e in events if e.kind == "outcome_evaluation_end"] == ["needs_revision", "satisfied"]
    await finish(client, handle.id)
    await record(client, handle.id, "outcome")


async def test_learned_skill(client: Client, scripted: ScriptedModelServer) -> None:
    """An agent that learns: a skill saved (with a file), then offered to and loaded by the next session."""
    name = f"learner-{uuid.uuid4().hex[:6]}"
    agent = coder(learn_skills=True).model_copy(update={"name": name})
    save = {"name": "tidy", "description": "Tidy a workspace", "triggers": ["tidy"], "instructions": "rm *.tmp"}
    first = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "x.tmp", "content": "x"})),
            Step(tool_use=ToolUse(name="save_skill", input={**save, "files": ["x.tmp"]})),
            Step(text="saved"),
        ],
    )
    handle = await start_agent_session(client, agent, f"Learn {first}", one_shot=True)
    assert (await asyncio.wait_for(handle.result(), timeout=120)).answer == "saved"
    second = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="load_skill", input={"name": "tidy"})), Step(text="ok")]
    )
    handle = await start(client, "learned-skill", agent, f"tidy up {second}", one_shot=True)
    assert (await asyncio.wait_for(handle.result(), timeout=120)).answer == "ok"
    events = await session_events(client, handle.id)
    assert [e.text for e in events if e.kind == "skill_loaded"] == ["tidy"]
    await record(client, handle.id, "learned-skill")


# --- recorded with the sandbox release (issue 20) ---------------------------------------------------


async def write_then_read_back(
    client: Client, scripted: ScriptedModelServer, name: str
) -> tuple[str, list[SessionEvent]]:
    """A turn that writes (an idle snapshot), a turn that only reads (nothing unsaved), then the end;
    the session's id and events."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=bash("echo kept > /workspace/note")),
            Step(text="written"),
            Step(tool_use=bash("cat /workspace/note")),
            Step(text="read: {last_tool_result}"),
        ],
    )
    handle = await start(client, name, coder(), f"Write, then read. {marker}")
    await wait_until_settled(client, handle.id)
    offset = await send_message(client, handle.id, "Read it back.")
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "read: kept"
    await finish(client, handle.id)
    return handle.id, await session_events(client, handle.id)


async def test_sandbox_release(client: Client, scripted: ScriptedModelServer) -> None:
    """A turn that writes (an idle snapshot), a turn that only reads (none: nothing unsaved), then the
    end: the sandbox left to its host, which removes the container (no last snapshot is due)."""
    session_id, events = await write_then_read_back(client, scripted, "sandbox-release")
    assert kinds(events).count("sandbox_snapshot") == 1, "the read-only turn took none"
    (left,) = [e for e in events if e.kind == "sandbox_released"]
    assert left.snapshot is False and kinds(events)[-2:] == ["sandbox_released", "status"]
    (outcome,) = (await released(events, session_id)).values()
    assert outcome is not None and outcome.destroyed and outcome.snapshot is None, "nothing was unsaved"
    history = await record(client, session_id, "sandbox-release")
    assert EventType.EVENT_TYPE_MARKER_RECORDED in event_types(history)  # the patches


# --- recorded with the first call's provisioning in one activity (issue 20) ---------------------------


async def test_first_call(client: Client, scripted: ScriptedModelServer) -> None:
    """The first sandbox call provisions its sandbox and runs in it (`provision_and_execute`, no
    `provision_sandbox`); the next call goes to the sandbox's host (`execute`)."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=bash("echo first > /workspace/note")),
            Step(tool_use=bash("cat /workspace/note")),
            Step(text="read: {last_tool_result}"),
        ],
    )
    handle = await start(client, "first-call", coder(), f"Write, then read. {marker}", one_shot=True)
    assert (await asyncio.wait_for(handle.result(), timeout=120)).answer == "read: first"
    history = await record(client, handle.id, "first-call")
    activities = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [a for a in activities if a != "call_model"] == ["provision_and_execute", "execute"], activities


# --- recorded with the baseline: every workflow version in one marker (issue 20) ----------------------


async def test_baseline(client: Client, scripted: ScriptedModelServer) -> None:
    """A sandboxed session that meets every patch of the baseline (the first call with its
    provisioning, an idle snapshot, a turn with nothing unsaved, the release), recorded with one
    marker for all of them."""
    session_id, events = await write_then_read_back(client, scripted, "baseline")
    assert kinds(events).count("sandbox_snapshot") == 1 and "sandbox_released" in kinds(events)
    history = await record(client, session_id, "baseline")
    markers = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert markers == ["baseline-1"], markers
