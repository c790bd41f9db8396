"""The Python client API (`import durable_agents`): the three ways to name an agent, following a
session, its answer; and a public surface that loads lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

import durable_agents as da
from durable_agents.client import start_agent_session
from durable_agents.testing.scripted_model import ScriptedModelServer, Step
from tests.helpers import add_scenario

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("workers")


async def test_sessions_start_from_a_file_a_spec_or_a_name_and_can_be_followed(
    client: Client, scripted: ScriptedModelServer
) -> None:
    marker = add_scenario(scripted, [Step(text="Hello from the API.")])
    task = f"Say hello. {marker}"
    spec = da.load_agent(ROOT / "agents" / "coder.yaml")
    handles = [
        await da.start_session(client, task, agent_file=ROOT / "agents" / "coder.yaml", one_shot=True),
        await da.start_session(client, task, agent=spec, one_shot=True),
        # By name: the harness worker resolves it from its agents folder (agents/ here).
        await da.start_session(client, task, agent_ref="coder", one_shot=True),
    ]
    for handle in handles:
        done = await handle.result()
        assert (done.status, done.answer) == ("done", "Hello from the API.")
        assert await da.result(client, handle.id) == "Hello from the API."
    by_name = await da.session_events(client, handles[2].id)
    assert by_name[0].kind == "session_started" and by_name[0].agent and by_name[0].agent.name == "coder"
    assert await (await handles[2].describe()).static_summary() == f"coder: {task}"

    items = [item async for item in da.follow(client, handles[0].id)]
    assert [i.event.kind for i in items if i.event][:2] == ["session_started", "user_message"]
    assert [i.state.status for i in items if i.state][-1] == "done"  # it stops once the session has ended


async def test_an_eager_start_is_the_same_session(client: Client, scripted: ScriptedModelServer) -> None:
    """The harness worker runs on this client (in this process), so the server may hand it the first
    workflow task in the start call's answer; the session and its log are what a normal start gives."""
    marker = add_scenario(scripted, [Step(text="Hello, eagerly.")])
    spec = da.load_agent(ROOT / "agents" / "coder.yaml")
    handle = await start_agent_session(client, spec, f"Say hello. {marker}", one_shot=True, eager_start=True)
    done = await handle.result()
    assert (done.status, done.answer) == ("done", "Hello, eagerly.")
    kinds = [e.kind for e in await da.session_events(client, handle.id)]
    assert kinds[:2] == ["session_started", "user_message"] and "model_turn" in kinds


async def test_what_the_caller_can_fix_is_a_client_error(client: Client) -> None:
    spec = da.load_agent(ROOT / "agents" / "coder.yaml")
    with pytest.raises(da.ClientError, match="give the agent one way"):
        await da.start_session(client, "hi")
    with pytest.raises(da.ClientError, match="give the agent one way"):
        await da.start_session(client, "hi", agent=spec, agent_ref="coder")
    with pytest.raises(da.ClientError, match="the task is empty"):
        await da.start_session(client, "  ", agent=spec)
    with pytest.raises(da.AgentFileError, match="nosuch.yaml"):
        await da.start_session(client, "hi", agent_file=ROOT / "agents" / "nosuch.yaml")


def test_the_public_surface_is_explicit_and_loads_on_first_use() -> None:
    assert all(getattr(da, name) is not None for name in da.__all__)
    # A submodule (what the workflow sandbox imports) does not bring in the client and its stack.
    probe = (
        "import sys, durable_agents.contracts, durable_agents.workflows.session\n"
        "assert 'durable_agents.client' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
