"""Sessions started by a plain Temporal client (the `temporal` CLI, a Python client with the
default data converter) on a fresh dev server where nothing was registered beforehand: the
harness worker registers the search attributes itself, or, where it may not, sessions run
without them. An agent may be named (`agent_ref`) instead of inlined."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from durable_agents.connection import DEV_SERVER_TUNING, SEARCH_ATTRIBUTES
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import DA_WORKER, TEMPORAL_CLI, add_scenario, remove_host_containers, wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.docker


@contextlib.asynccontextmanager
async def fresh_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server with no custom search attributes (the SDK's test server registers none unless asked)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI), dev_server_extra_args=DEV_SERVER_TUNING
    )
    try:
        yield env
    finally:
        await env.shutdown()


@contextlib.contextmanager
def worker_process(
    address: str, scripted: ScriptedModelServer, log: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    host = f"plain-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": scripted.url,
        "SANDBOX_HOST_ID": host,
        "SANDBOX_WARM_POOL": "0",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(DA_WORKER), *args], cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        remove_host_containers(host)


async def temporal_cli(address: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(TEMPORAL_CLI),
        *args,
        "--address",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def plain_state(client: Client, session_id: str) -> dict[str, Any]:
    state: dict[str, Any] = await client.get_workflow_handle(session_id).query("state")
    return state


def coder_as_json() -> str:
    return json.dumps(yaml.safe_load((ROOT / "agents" / "coder.yaml").read_text()) | {"skills": []})


async def test_the_temporal_cli_and_a_python_client_start_sessions_on_a_fresh_server(
    scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo from-the-sandbox"})),
            Step(text="First answer: {last_tool_result}"),
            Step(text="Second answer."),
        ],
    )
    async with fresh_server() as env:
        address = env.client.service_client.config.target_host
        plain = await Client.connect(address)  # the default data converter: plain JSON
        with worker_process(address, scripted, tmp_path / "worker.log", "--agents", str(ROOT / "agents")):
            # 1. `temporal workflow start` with the agent inline, then update, query, signal, result.
            session = f"cli-{uuid.uuid4().hex[:8]}"
            task = json.dumps({"agent": json.loads(coder_as_json()), "task": f"Say hi. {marker}"})
            code, _, err = await temporal_cli(
                address, "workflow", "start", "--type", "SessionWorkflow", "--task-queue", "agents",
                "--workflow-id", session, "--input", task,
            )  # fmt: skip
            assert code == 0, err

            async def idle() -> bool:
                return (await plain_state(plain, session))["status"] == "idle"

            await wait_for(idle, 60, "the CLI-started session to answer")
            assert (await plain_state(plain, session))["last_answer"] == "First answer: from-the-sandbox"
            code, out, err = await temporal_cli(
                address, "workflow", "update", "execute", "--workflow-id", session, "--name", "send_message",
                "--input", json.dumps("And again?"),
            )  # fmt: skip
            assert code == 0, err
            await wait_for(lambda: _answered(plain, session, "Second answer."), 60, "the second answer")
            code, out, err = await temporal_cli(
                address, "workflow", "query", "--workflow-id", session, "--type", "state", "--output", "json"
            )
            assert code == 0 and "Second answer." in out, err
            code, _, err = await temporal_cli(
                address, "workflow", "signal", "--workflow-id", session, "--name", "end_session"
            )
            assert code == 0, err
            code, out, err = await temporal_cli(
                address, "workflow", "result", "--workflow-id", session, "--output", "json"
            )
            assert code == 0 and '"status": "done"' in out and "Second answer." in out, (out, err)

            # 2. A Python client naming the agent: agent_ref, one-shot.
            handle = await plain.start_workflow(
                "SessionWorkflow",
                {"agent_ref": "coder", "task": f"Say hi. {marker}", "one_shot": True},
                id=f"py-{uuid.uuid4().hex[:8]}",
                task_queue="agents",
            )
            result = await asyncio.wait_for(handle.result(), 60)
            assert result["status"] == "done" and result["answer"] == "First answer: from-the-sandbox"
            events = await handle.query("events")
            assert events[0]["kind"] == "session_started" and events[0]["agent"]["name"] == "coder"
            assert events[0]["agent_version"]

            # The worker registered the search attributes; both sessions carry them.
            listed = await env.client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace="default")
            )
            assert set(SEARCH_ATTRIBUTES) <= set(listed.custom_attributes)

            async def both_listed() -> bool:
                found = [wf.id async for wf in plain.list_workflows('AgentName="coder" AND SessionStatus="done"')]
                return session in found and handle.id in found

            await wait_for(both_listed, 30, "both sessions to be listed by AgentName and SessionStatus")

            # 3. An unknown agent ends at once, naming the known ones.
            unknown = await plain.start_workflow(
                "SessionWorkflow", {"agent_ref": "nosuch", "task": "hi"}, id=f"py-{uuid.uuid4().hex[:8]}",
                task_queue="agents",
            )  # fmt: skip
            result = await asyncio.wait_for(unknown.result(), 30)
            assert result["status"] == "failed"
            assert "unknown agent 'nosuch'" in result["error"] and "coder" in result["error"], result["error"]

            # 4. Input that does not validate fails the session with the reason (no stuck workflow task).
            bad = await plain.start_workflow(
                "SessionWorkflow", {"task": "no agent"}, id=f"py-{uuid.uuid4().hex[:8]}", task_queue="agents"
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await asyncio.wait_for(bad.result(), 30)
            assert "agent_ref" in str(failed.value.cause), failed.value.cause
        log = (tmp_path / "worker.log").read_text()
        assert log.count("search attributes registered") == 1, log


async def test_sessions_run_where_search_attributes_may_not_be_registered(
    scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    marker = add_scenario(scripted, [Step(text="Answered without search attributes.")])
    async with fresh_server() as env:
        address = env.client.service_client.config.target_host
        plain = await Client.connect(address)
        log_path = tmp_path / "worker.log"
        with worker_process(address, scripted, log_path, "--harness", "--no-register-search-attributes"):
            handle = await plain.start_workflow(
                "SessionWorkflow",
                {"agent_ref": "coder", "task": f"hi {marker}", "one_shot": True},
                id=f"py-{uuid.uuid4().hex[:8]}",
                task_queue="agents",
            )
            result = await asyncio.wait_for(handle.result(), 60)
            assert result["status"] == "done" and result["answer"] == "Answered without search attributes."
            history = await handle.fetch_history()
            assert not [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
        log = log_path.read_text()
        warnings = [json.loads(line) for line in log.splitlines() if "search attributes missing" in line]
        assert len(warnings) == 1, log
        assert "temporal operator search-attribute create" in warnings[0]["advice"]
        assert set(warnings[0]["missing"]) == set(SEARCH_ATTRIBUTES)


async def _answered(client: Client, session_id: str, answer: str) -> bool:
    state = await plain_state(client, session_id)
    return state["status"] == "idle" and state["last_answer"] == answer
