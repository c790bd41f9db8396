"""Agents for tests and waiting for what a session does (observable state, never wall-clock time)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from temporalio.client import Client

from durable_agents.agent_files import load_agent
from durable_agents.contracts import GET_STATE, AgentSpec, SessionState, Subagent
from durable_agents.testing.scripted_model import ToolUse
from tests.helpers.paths import ROOT


def coder(**sandbox: Any) -> AgentSpec:
    """agents/coder.yaml, with these sandbox settings changed."""
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    return agent.model_copy(update={"sandbox": agent.sandbox.model_copy(update=sandbox)}) if sandbox else agent


def with_subagents(agent: AgentSpec, *subagents: Subagent, **limits: Any) -> AgentSpec:
    update: dict[str, Any] = {"subagents": list(subagents)}
    if limits:
        update["limits"] = agent.limits.model_copy(update=limits)
    return agent.model_copy(update=update)


def spawn(agent: str, task: str, share: bool | None = None) -> ToolUse:
    """The model's call of the spawn_agent tool."""
    args: dict[str, Any] = {"agent": agent, "task": task}
    if share is not None:
        args["share_sandbox"] = share
    return ToolUse(name="spawn_agent", input=args)


async def wait_for(predicate: Callable[[], Awaitable[bool]], within_s: float = 60, what: str = "condition") -> None:
    """Poll an observable state until it holds; fail naming what did not happen."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def state_of(client: Client, session_id: str, namespace_client: Client | None = None) -> SessionState:
    return await (namespace_client or client).get_workflow_handle(session_id).query(GET_STATE, result_type=SessionState)
