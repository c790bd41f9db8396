"""End to end through `da`, as a user runs it: real dev server, Docker, scripted model."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.worker import Worker

from durable_agents.contracts import SESSION_WORKFLOW
from durable_agents.testing.scripted_model import ScriptedError, ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, cli, wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("workers")


async def test_the_demo_through_the_cli(address: str) -> None:
    code, out, err = await cli(
        address, "start", "--agent", "agents/coder.yaml", "--one-shot", "--wait", "Write fib.py and run it."
    )
    assert code == 0, err
    session_id, answer = out.split("\n", 1)
    assert session_id.startswith("session-")
    assert "First 10 Fibonacci numbers: 0 1 1 2 3 5 8 13 21 34" in answer
    code, out, _ = await cli(address, "result", session_id)
    assert code == 0 and "0 1 1 2 3 5 8 13 21 34" in out


async def test_a_conversation_through_the_cli(address: str, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(
                text="Creating it.",
                tool_use=ToolUse(name="write_file", input={"path": "notes.txt", "content": "one\n"}),
            ),
            Step(text="Created notes.txt."),
            Step(tool_use=ToolUse(name="bash", input={"command": "echo two >> notes.txt && cat notes.txt"})),
            Step(text="Now it holds: {last_tool_result}"),
        ],
    )
    code, out, err = await cli(
        address,
        "start",
        "--agent",
        "agents/coder.yaml",
        "--id",
        f"cli-{marker[10:20]}",
        "--wait",
        f"Make notes. {marker}",
    )
    assert code == 0, err
    session_id, answer = out.strip().split("\n", 1)
    assert session_id == f"cli-{marker[10:20]}" and answer == "Created notes.txt."

    code, out, err = await cli(address, "send", session_id, "Add a line.", "--wait")
    assert code == 0, err
    assert out.strip() == "Now it holds: one\ntwo"

    code, out, _ = await cli(address, "events", session_id, "--from", "2", "--to", "4", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["offset"] for e in lines] == [2, 3, 4]
    assert lines[0]["kind"] == "model_turn" and lines[0]["tool_calls"][0]["name"] == "write_file"

    code, out, _ = await cli(address, "follow", session_id)
    assert code == 0
    assert "user_message" in out and "Add a line." in out and "✓ bash: one ⏎ two" in out
    assert out.strip().splitlines()[-1].endswith("idle")

    code, out, _ = await cli(address, "sessions")
    assert any(line.startswith(session_id) and " coder " in line and "idle" in line for line in out.splitlines())

    code, _, err = await cli(address, "send", session_id, "  ")
    assert code == 2 and "message refused: the message is empty" in err

    code, out, _ = await cli(address, "end", session_id)
    assert code == 0
    for _ in range(100):
        code, out, _ = await cli(address, "sessions")
        if any(line.startswith(session_id) and "completed" in line for line in out.splitlines()):
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail(f"session did not complete:\n{out}")
    code, _, err = await cli(address, "send", session_id, "more")
    assert code == 2 and session_id in err and "error:" in err


async def test_bad_agent_files_fail_at_start_naming_file_and_field(address: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {name: 3}\ntools: [bash, fly]\n")
    code, out, err = await cli(address, "start", "--agent", str(bad), "task")
    assert code == 2 and out == ""
    assert f"{bad}: model.name: Input should be a valid string" in err
    assert f"{bad}: tools: Value error, unknown tool 'fly'" in err
    code, _, err = await cli(address, "start", "--agent", "agents/nope.yaml", "task")
    assert code == 2 and "agents/nope.yaml: no such agent file" in err


async def test_unknown_sessions_and_servers_get_clear_errors(address: str) -> None:
    code, _, err = await cli(address, "send", "session-nope", "hi")
    assert code == 2 and "session-nope" in err
    code, _, err = await cli("127.0.0.1:1", "sessions")
    assert code == 2 and "cannot reach Temporal at 127.0.0.1:1" in err


async def test_subagents_through_the_cli(address: str, scripted: ScriptedModelServer, tmp_path: Path) -> None:
    child = add_scenario(
        scripted,
        [Step(tool_use=ToolUse(name="bash", input={"command": "echo from the child"})), Step(text="child done")],
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="spawn_agent", input={"agent": "helper", "task": f"Help. {child}"})),
            Step(text="parent done"),
        ],
    )
    agent = tmp_path / "lead.yaml"
    agent.write_text(
        f"name: lead\nmodel: {{name: claude-sonnet-5-5}}\nsubagents:\n"
        f"  - {{name: helper, agent: {ROOT / 'agents' / 'coder.yaml'}}}\n"
    )
    code, out, err = await cli(address, "start", "--agent", str(agent), "--wait", f"Delegate. {marker}")
    assert code == 0, err
    session_id = out.split("\n", 1)[0]
    code, out, _ = await cli(address, "follow", session_id)
    lines = out.splitlines()
    assert any("subagent_started" in line and "sub-1 helper: Help." in line for line in lines)
    nested = [line for line in lines if line.startswith("    ↳ sub-1 ")]
    assert any("✓ bash: from the child" in line for line in nested)
    assert any("subagent_finished" in line and "sub-1 done: child done" in line for line in lines)
    code, out, _ = await cli(address, "events", session_id, "--child", "sub-1", "--json")
    assert [json.loads(line)["kind"] for line in out.splitlines()][:2] == ["session_started", "user_message"]
    code, _, err = await cli(address, "interrupt", session_id)
    assert code == 2 and "nothing to interrupt: the session is idle" in err
    await cli(address, "end", session_id)


async def test_start_with_an_id_in_use_says_where_that_session_is(address: str, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(scripted, [Step(text="hello")])
    session_id = f"cli-taken-{marker[10:20]}"
    code, _, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--id", session_id, "--wait", marker)
    assert code == 0, err
    code, out, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--id", session_id, "again")
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert f"error: session {session_id!r} already exists (running): da follow {session_id}" in err
    assert f"da send {session_id} " in err
    code, _, err = await cli(address, "end", session_id)
    assert code == 0, err
    # Temporal would start a second run under a closed session's id, hiding the first run's log;
    # the CLI refuses (id reuse policy REJECT_DUPLICATE) and says so.
    code, out, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--id", session_id, "again")
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert f"error: session {session_id!r} already exists and has ended (completed)" in err
    assert "does not reuse the id of a closed session" in err and "give a new --id" in err
    code, out, _ = await cli(address, "events", session_id, "--json")
    assert [json.loads(line)["kind"] for line in out.splitlines()][:2] == ["session_started", "user_message"]


async def test_a_failed_session_says_why(address: str, scripted: ScriptedModelServer) -> None:
    rejected = ScriptedError(status=401, type="authentication_error", message="invalid x-api-key", times=1000)
    marker = add_scenario(scripted, [Step(error=rejected)])
    code, out, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--one-shot", "--wait", marker)
    session_id = out.split("\n", 1)[0]
    assert "session status: failed" in out and "401" in out and "invalid x-api-key" in out, out
    assert code == 1, err
    code, out, err = await cli(address, "result", session_id)
    assert code == 1 and "session status: failed" in err and "401" in err and "invalid x-api-key" in err, err
    # A session that stays open after a failed answer says why too.
    marker = add_scenario(scripted, [Step(error=rejected)])
    code, out, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--wait", marker)
    session_id = out.split("\n", 1)[0]
    assert "session status: idle" in out and "invalid x-api-key" in out, out
    assert code == 1, err
    await cli(address, "end", session_id)


async def test_events_past_the_end_and_refused_decisions_read_clearly(
    address: str, scripted: ScriptedModelServer
) -> None:
    marker = add_scenario(scripted, [Step(text="hello")])
    code, out, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--wait", marker)
    assert code == 0, err
    session_id = out.split("\n", 1)[0]
    code, _, err = await cli(address, "deny", session_id, "toolu_nope", "--reason", "no")
    assert code == 2 and f"{session_id}: not denied: no tool call 'toolu_nope' is waiting for approval" in err, err
    code, _, err = await cli(address, "approve", session_id, "toolu_nope")
    assert code == 2 and f"{session_id}: not approved: no tool call 'toolu_nope'" in err, err
    code, out, err = await cli(address, "events", session_id, "--json")
    count = len(out.splitlines())
    assert code == 0 and count >= 3
    code, out, err = await cli(address, "events", session_id, "--from", str(count))
    assert code == 2 and out == ""
    past = f"error: {session_id}: --from {count} is past the end: the session has {count} events (0..{count - 1})"
    assert past in err, err
    code, out, err = await cli(address, "events", session_id, "--from", str(count - 1))
    assert code == 0 and len(out.splitlines()) == 1
    await cli(address, "end", session_id)


@workflow.defn(name=SESSION_WORKFLOW, sandboxed=False)
class BrokenSession:
    """A session whose every workflow task fails (as a worker bug or an input it cannot read would)."""

    @workflow.run
    async def run(self, inp: dict[str, Any]) -> None:
        raise RuntimeError("this workflow task fails on purpose")


async def test_end_ends_a_session_whatever_its_state(
    address: str, client: Client, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    # Waiting for an approval: the session would wait for it forever; `end` cuts the turn short.
    agent = tmp_path / "asker.yaml"
    agent.write_text("name: asker\nmodel: {name: claude-sonnet-5-5}\ntools: [bash]\npolicies: {bash: always_ask}\n")
    marker = add_scenario(scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "echo hi"}))])
    code, out, err = await cli(address, "start", "--agent", str(agent), "--wait", marker)
    assert code == 0 and "waiting for approval" in out, err
    session_id = out.split("\n", 1)[0]
    code, out, err = await cli(address, "end", session_id)
    assert code == 0 and out == f"{session_id}: ended (completed); its turn in progress was interrupted\n", (out, err)
    code, out, err = await cli(address, "end", session_id)
    assert code == 0 and out == f"{session_id}: already ended (completed)\n", (out, err)

    # A workflow task that fails every time: the session cannot run the signal; `end` terminates it.
    queue = f"broken-{uuid.uuid4().hex[:8]}"
    session_id = f"cli-stuck-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[BrokenSession]):
        handle = await client.start_workflow(SESSION_WORKFLOW, {"task": "x"}, id=session_id, task_queue=queue)

        async def task_failed() -> bool:
            history = await handle.fetch_history()
            return any(e.HasField("workflow_task_failed_event_attributes") for e in history.events)

        await wait_for(task_failed, what="the workflow task to fail")
        code, out, err = await cli(address, "end", session_id)
        assert code == 0, err
        assert f"{session_id}: terminated: its workflow task keeps failing" in out, out
        assert "this workflow task fails on purpose" in out
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.TERMINATED
        code, out, err = await cli(address, "end", session_id)
        assert code == 0 and f"{session_id}: already ended (terminated)" in out, (out, err)
        code, out, err = await cli(address, "result", session_id)
        assert code == 1 and "(no answer; session terminated: da end: its workflow task" in err, err
    code, _, err = await cli(address, "end", "session-nope")
    assert code == 2 and "no session 'session-nope'" in err


async def test_an_inline_definition_over_its_context_budget_is_refused(address: str, client: Client) -> None:
    """Any Temporal client may send an agent inline, as JSON: one whose every request would exceed
    its context budget fails the session at once with the reason (its workflow task never fails)."""
    session_id = f"cli-inline-{uuid.uuid4().hex[:8]}"
    agent = {"name": "big", "model": {"name": "claude-sonnet-5-5"}, "system": "x" * 700_000}
    handle = await client.start_workflow(
        SESSION_WORKFLOW, {"agent": agent, "task": "hi"}, id=session_id, task_queue="agents"
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 30)
    reason = str(failed.value.cause)
    assert "system prompt and tool definitions are ~175,0" in reason
    assert "over the context budget of 150,000 (limits.context_tokens) by 25,0" in reason
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    code, out, err = await cli(address, "end", session_id)
    assert code == 0 and f"{session_id}: already ended (failed)" in out, (out, err)
