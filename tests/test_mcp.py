"""MCP tools through the official SDK: real servers from the npm registry (server-memory over stdio,
server-everything over Streamable HTTP) and an auth-checking server that proves the vault's secrets
reach MCP servers as env and headers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from durable_agents import session_log
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.contracts import GET_STATE, AgentSpec, McpServer, SessionState
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import MCP_TOKEN, ROOT, HttpServers, SetEnv, add_scenario, auth_servers, free_port, wait_for
from tests.helpers.mcp import BIN

pytestmark = pytest.mark.usefixtures("workers")


def memory_server(tmp: Path, **fields: Any) -> McpServer:
    return McpServer(
        name="memory",
        command=str(BIN / "mcp-server-memory"),
        env={"MEMORY_FILE_PATH": str(tmp / "memory.jsonl")},
        **fields,
    )


def agent_with(*servers: McpServer) -> AgentSpec:
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    return agent.model_copy(update={"mcp_servers": list(servers)})


async def approve_all(client: Client, session_id: str, until_done: Any) -> None:
    """Approve every MCP call the session asks about until it settles."""
    handle = client.get_workflow_handle(session_id)
    approved: set[str] = set()

    async def settled() -> bool:
        state = await handle.query(GET_STATE, result_type=SessionState)
        for call in state.awaiting_approval:
            if call.id not in approved:
                approved.add(call.id)
                await handle.execute_update("approve", call.id, result_type=int)
        return await until_done(state)

    await wait_for(settled, within_s=60, what="the session to finish")


async def test_tools_from_a_stdio_and_an_http_server_with_policies(
    client: Client, scripted: ScriptedModelServer, http_servers: HttpServers, tmp_path: Path
) -> None:
    entity = {"name": "durable-agents", "entityType": "project", "observations": ["runs on Temporal"]}
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="memory__create_entities", input={"entities": [entity]})),
            Step(tool_use=ToolUse(name="everything__echo", input={"message": "hello over http"})),
            Step(tool_use=ToolUse(name="memory__read_graph", input={})),
            Step(tool_use=ToolUse(name="everything__get-sum", input={"a": "one"})),  # invalid input
            Step(text="remembered"),
        ],
    )
    # memory's tools are allowed outright; everything's follow the MCP default, always_ask.
    agent = agent_with(
        memory_server(tmp_path, policy="always_allow"), McpServer(name="everything", url=http_servers.everything)
    )
    handle = await start_agent_session(client, agent, f"Remember this. {marker}", one_shot=True)

    async def done(state: SessionState) -> bool:
        return state.status in ("done", "failed")

    await approve_all(client, handle.id, done)
    result = await handle.result()
    assert result.status == "done" and result.answer == "remembered"

    events = await session_log.read_events(client, handle.id)
    listed = next(e for e in events if e.kind == "mcp_tools")
    assert "memory__create_entities" in (listed.text or "") and "everything__echo" in (listed.text or "")
    outputs = {e.tool_result.name: e.tool_result for e in events if e.kind == "tool_result"}
    assert not outputs["memory__create_entities"].is_error
    assert outputs["everything__echo"].output == "Echo: hello over http"
    assert "runs on Temporal" in outputs["memory__read_graph"].output
    assert outputs["everything__get-sum"].is_error and "Invalid input" in outputs["everything__get-sum"].output
    asked = [e.tool_calls[0].name for e in events if e.kind == "approval_requested" and e.tool_calls]
    # Only the always_ask server's calls wait; an invalid call is refused before anyone is asked.
    assert asked == ["everything__echo"]
    # The model was given the namespaced tools with the servers' schemas.
    request = scripted.model.requests[-1].body
    names = [t["name"] for t in request["tools"]]
    assert "memory__read_graph" in names and "everything__get-sum" in names
    # The activity summaries name the tool.
    history = await handle.fetch_history()
    summaries = [e.user_metadata.summary.data.decode() for e in history.events if e.HasField("user_metadata")]
    assert any("everything__echo" in s for s in summaries), summaries


async def test_secrets_reach_mcp_servers_as_env_and_headers(
    client: Client,
    scripted: ScriptedModelServer,
    http_servers: HttpServers,
    setenv: SetEnv,
) -> None:
    setenv("DA_SECRET_MCP_TOKEN", MCP_TOKEN)  # the env backend of the in-process worker's vault
    marker = add_scenario(
        scripted,
        [
            Step(tool_uses=[ToolUse(name="stdio-auth__whoami", input={}), ToolUse(name="http-auth__whoami", input={})]),
            Step(text="checked"),
        ],
    )
    agent = agent_with(*auth_servers(http_servers.auth))
    handle = await start_agent_session(client, agent, f"Who am I? {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done"
    events = await session_log.read_events(client, handle.id)
    outputs = {e.tool_result.name: e.tool_result.output for e in events if e.kind == "tool_result"}
    assert outputs == {"stdio-auth__whoami": "authorized", "http-auth__whoami": "authorized"}


async def test_a_server_that_is_down_is_an_event_and_the_others_still_work(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    marker = add_scenario(scripted, [Step(tool_use=ToolUse(name="memory__read_graph", input={})), Step(text="went on")])
    agent = agent_with(
        McpServer(name="nosuch", command="/nonexistent/mcp-server"),
        McpServer(name="offline", url=f"http://127.0.0.1:{free_port()}/mcp"),
        memory_server(tmp_path, policy="always_allow"),
    )
    handle = await start_agent_session(client, agent, f"Carry on. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == "went on"
    events = await session_log.read_events(client, handle.id)
    errors = [e.text or "" for e in events if e.kind == "error"]
    assert any("'nosuch' is unavailable" in t and "/nonexistent/mcp-server" in t for t in errors), errors
    assert any("'offline' is unavailable" in t for t in errors), errors
    assert all("goes on without its tools" in t for t in errors)
    assert next(e.tool_result for e in events if e.kind == "tool_result").is_error is False


async def test_a_slow_tool_is_an_error_result_not_a_stuck_session(
    client: Client, scripted: ScriptedModelServer, http_servers: HttpServers
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(
                tool_use=ToolUse(name="everything__trigger-long-running-operation", input={"duration": 30, "steps": 3})
            ),
            Step(text="gave up on it"),
        ],
    )
    agent = agent_with(McpServer(name="everything", url=http_servers.everything, policy="always_allow", timeout_s=1))
    handle = await start_agent_session(client, agent, f"Wait long. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == "gave up on it"
    events = await session_log.read_events(client, handle.id)
    failed = next(e.tool_result for e in events if e.kind == "tool_result")
    assert failed.is_error, failed


async def test_an_unknown_secret_stops_the_session_at_the_start(client: Client, scripted: ScriptedModelServer) -> None:
    agent = agent_with(
        McpServer(name="gh", url="http://127.0.0.1:1/mcp", headers={"Authorization": {"secret": "no-such-secret"}})  # type: ignore[dict-item]
    )
    marker_free = f"Anything {os.getpid()}-{id(agent)}."
    handle = await start_agent_session(client, agent, marker_free, one_shot=True)
    result = await handle.result()
    assert result.status == "failed"
    assert result.error and "unknown secret(s): 'no-such-secret' (mcp server 'gh')" in result.error
    assert all(marker_free not in str(r.body) for r in scripted.model.requests), "no model call was made"


def test_bad_mcp_definitions_are_refused_when_the_agent_loads() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="two MCP servers are named 'x'"):
        agent_with().model_validate(
            {
                **agent_with().model_dump(),
                "mcp_servers": [{"name": "x", "url": "http://a/mcp"}, {"name": "x", "command": "y"}],
            }
        )
    with pytest.raises(ValidationError, match="custom tool 'x__y' clashes with the tools of MCP server 'x'"):
        agent_with().model_validate(
            {
                **agent_with().model_dump(),
                "mcp_servers": [{"name": "x", "url": "http://a/mcp"}],
                "custom_tools": [{"name": "x__y", "description": "d"}],
            }
        )
    with pytest.raises(ValidationError, match="'__' separates server from tool"):
        McpServer(name="a__b", command="y")
    with pytest.raises(ValidationError, match="give either command"):
        McpServer(name="a", command="y", url="http://a/mcp")
    with pytest.raises(ValidationError, match="headers are for HTTP servers"):
        McpServer(name="a", command="y", headers={"X": "1"})


async def test_tools_are_refreshed_on_demand(
    client: Client, address: str, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    from tests.helpers import cli

    marker = add_scenario(
        scripted, [Step(text="ready"), Step(tool_use=ToolUse(name="memory__read_graph", input={})), Step(text="read")]
    )
    agent = agent_with(memory_server(tmp_path, policy="always_allow"))
    handle = await start_agent_session(client, agent, f"Wait. {marker}")

    async def idle() -> bool:
        return (await handle.query(GET_STATE, result_type=SessionState)).status == "idle"

    await wait_for(idle, what="the first answer")
    code, out, err = await cli(address, "refresh-tools", handle.id)
    assert code == 0, err
    assert "MCP tools now: memory__create_entities" in out and "memory__read_graph" in out
    events = await session_log.read_events(client, handle.id)
    assert [e.kind for e in events].count("mcp_tools") == 2
    # The session still works with the refreshed list.
    await handle.execute_update("send_message", "now read", result_type=int)
    await wait_for(idle, what="the second answer")
    events = await session_log.read_events(client, handle.id)
    assert next(e.tool_result for e in events if e.kind == "tool_result").is_error is False
    await handle.signal("end_session")
    await handle.result()

    plain = await start_agent_session(client, load_agent(ROOT / "agents" / "coder.yaml"), f"Plain. {marker}")
    code, out, err = await cli(address, "refresh-tools", plain.id)
    assert code == 2 and "lists no MCP servers" in err
    await plain.signal("end_session")
