"""Hostile code in the sandbox. Each case is a tool call the scripted model makes in a real
session (real dev server, real Docker). Each asserts: the session finishes, the model gets a
clear tool result, the sandbox is usable afterwards (or replaced and the model told), and a
bystander session running beside them all is unaffected.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from durable_agents.client import send_message, session_events, start_agent_session, wait_until_settled
from durable_agents.contracts import AgentSpec, ToolResult
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, coder

pytestmark = pytest.mark.usefixtures("workers")

SECRET_WORDS = re.compile(r"anthropic|api[_-]?key|token|secret|passw", re.IGNORECASE)

# (case, command, tool timeout (s), check of the attack's tool result)
CASES: list[tuple[str, str, float, Any]] = [
    (
        "fork bomb",
        ":(){ :|:& };:; sleep 30",  # the call waits, so the bomb is still going at its timeout
        4,
        # Stopped where it is, not by destroying the sandbox: the next command runs in the same one.
        lambda r: r.is_error and "timed out after 4s" in r.output and "process limit" in r.output,
    ),
    (
        "memory bomb above the limit",
        "python3 -c 'a = bytearray(2 * 1024**3)'",
        30,
        lambda r: r.is_error and ("Killed" in r.output or "MemoryError" in r.output),
    ),
    (
        "disk fill of the workspace",
        "for f in a b; do head -c 300M /dev/zero > /workspace/$f; done; rm -f /workspace/a /workspace/b",
        30,
        lambda r: "No space left on device" in r.output,
    ),
    (
        "file-handle bomb",
        "python3 -c \"fs = [open('/dev/null') for _ in range(100000)]\"",
        30,
        lambda r: r.is_error and "Too many open files" in r.output,
    ),
    (
        "infinite output",
        "yes",
        30,
        lambda r: "[output truncated:" in r.output and len(r.output) < 40_000,
    ),
    (
        "sleep forever",
        "sleep infinity",
        2,
        lambda r: r.is_error and "timed out after 2s" in r.output,
    ),
    (
        "network exfiltration, TCP and DNS",
        "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)\" 2>&1 | tail -1; "
        "getent hosts example.com || echo dns-failed",
        30,
        lambda r: ("unreachable" in r.output or "No route" in r.output) and "dns-failed" in r.output,
    ),
    (
        "secrets in the environment and /proc/1/environ",
        "env; tr '\\0' '\\n' < /proc/1/environ",
        30,
        lambda r: "HOME=/workspace" in r.output and not SECRET_WORDS.search(r.output),
    ),
    (
        "the Docker socket",
        'ls -la /var/run/docker.sock /run/docker.sock; python3 -c "import socket; '
        "s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock')\" 2>&1 | tail -1",
        30,
        lambda r: r.output.count("No such file or directory") >= 3,
    ),
    (
        "mount and kernel modules",
        'mount -t tmpfs none /mnt; python3 -c "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); '
        "print('init_module', libc.init_module(0, 0, b''), os.strerror(ctypes.get_errno()))\"",
        30,
        lambda r: "must be superuser" in r.output and "init_module -1 Operation not permitted" in r.output,
    ),
    (
        "writes outside the workspace",
        "touch /usr/bin/evil; echo x > /etc/passwd; mkdir /evil; touch /tmp/ok && echo tmp-writable",
        30,
        lambda r: r.output.count("Read-only file system") >= 3 and "tmp-writable" in r.output,
    ),
]


@pytest.fixture(scope="module")
async def bystander(client: Client, scripted: ScriptedModelServer) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """A session that keeps a file in its sandbox while the attacks run elsewhere."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "precious.txt", "content": "intact\n"})),
            Step(text="Kept."),
            Step(tool_use=ToolUse(name="bash", input={"command": "cat precious.txt; echo $(( 6 * 7 ))"})),
            Step(text="{last_tool_result}"),
        ],
    )
    handle = await start_agent_session(client, coder(), f"Bystander. {marker}")
    await wait_until_settled(client, handle.id)
    yield handle
    await handle.signal("end_session")
    await handle.result()


def limited(timeout_s: float) -> AgentSpec:
    agent = coder(timeout_s=timeout_s)
    return agent.model_copy(update={"limits": agent.limits.model_copy(update={"tool_output_cap": 20_000})})


@pytest.mark.parametrize(("case", "command", "timeout_s", "check"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_code_is_contained(
    client: Client,
    scripted: ScriptedModelServer,
    bystander: WorkflowHandle[Any, Any],
    case: str,
    command: str,
    timeout_s: float,
    check: Any,
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": command})),
            Step(tool_use=ToolUse(name="bash", input={"command": "echo still usable; pwd"})),
            Step(text="{last_tool_result}"),
        ],
    )
    handle = await start_agent_session(client, limited(timeout_s), f"{case} {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done", result.error
    attack, after = [e.tool_result for e in await session_events(client, handle.id) if e.kind == "tool_result"]
    assert isinstance(attack, ToolResult) and check(attack), f"{case}: unexpected tool result:\n{attack.output[:2000]}"
    assert after.output.split() == ["still", "usable", "/workspace"] and not after.is_error
    events = await session_events(client, handle.id)
    assert not [e for e in events if e.kind == "sandbox_destroyed" and e.text == "lost"], "the sandbox was replaced"


async def test_the_bystander_was_unaffected(client: Client, bystander: WorkflowHandle[Any, Any]) -> None:
    offset = await send_message(client, bystander.id, "Still there?")
    state = await wait_until_settled(client, bystander.id, after_event=offset)
    assert state.last_answer == "intact\n42"
    assert not [e for e in await session_events(client, bystander.id) if e.kind == "sandbox_destroyed"]


async def test_ten_sessions_each_with_a_container_at_once(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "hostname > me.txt; sleep 1; cat me.txt"})),
            Step(text="{last_tool_result}"),
        ],
    )
    handles = await asyncio.gather(
        *(start_agent_session(client, coder(), f"Session {i}. {marker}", one_shot=True) for i in range(10))
    )
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=180)
    assert all(r.status == "done" for r in results)
    assert len({r.answer for r in results}) == 10  # ten containers, each saw only its own file
    sandboxes = set()
    for h in handles:
        events = await session_events(client, h.id)
        sandboxes |= {e.sandbox.sandbox_id for e in events if e.kind == "sandbox_provisioned" and e.sandbox}
    assert len(sandboxes) == 10


async def test_a_gvisor_session(client: Client, scripted: ScriptedModelServer) -> None:
    """The same session under gVisor (runsc): persistent shell, hardening, no network, timeouts."""
    probe = (
        "id -u; grep CapEff /proc/self/status | awk '{print $2}'; touch /usr/x 2>/dev/null || echo ro-root; "
        "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)\" 2>&1 | tail -1; "
        "cd /tmp && export KEPT=yes; cat /proc/version"
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": probe})),
            Step(tool_use=ToolUse(name="bash", input={"command": "sleep infinity"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "pwd; echo $KEPT"})),
            Step(text="{last_tool_result}"),
        ],
    )
    handle = await start_agent_session(client, coder(runtime="runsc", timeout_s=3), f"gVisor. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.answer == "/tmp\nyes"
    events = await session_events(client, handle.id)
    probe_out, timed_out, _ = [e.tool_result for e in events if e.kind == "tool_result"]
    lines = probe_out.output.splitlines()
    assert lines[:3] == ["1000", "0000000000000000", "ro-root"] and "No route to host" in lines[3]
    assert "Linux version 4.4.0" in lines[4]  # gVisor's own kernel, not the host's
    assert timed_out.is_error and "timed out after 3s" in timed_out.output
