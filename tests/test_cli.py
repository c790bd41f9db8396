"""End to end through `starter.py`, as a user runs it: real dev server, Docker, scripted model."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from scripted_model.server import ScriptedModelServer, Step, ToolUse
from tests.conftest import add_scenario

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("workers")


async def cli(address: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "starter.py"),
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


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
