"""Durable Agents: a self-hosted runtime for long-running AI agents on Temporal.

`import durable_agents` is the Python client API (the `da` CLI is built on it):

    import asyncio
    import durable_agents as da

    async def main() -> None:
        client = await da.connect()
        handle = await da.start_session(client, "Write fib.py and run it.", agent_file="agents/coder.yaml")
        state = await da.wait_until_settled(client, handle.id)
        print(state.last_answer)
        await da.end_session(client, handle.id)

    asyncio.run(main())

The names below are the public surface; everything else stays importable from its module
(`durable_agents.client`, `durable_agents.contracts`, `durable_agents.workflows.session`, ...).
They are loaded on first use: importing a submodule (as the workflow sandbox does with
`durable_agents.contracts`) does not import the client, its Temporal client and its HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durable_agents.agent_files import AgentFileError, load_agent
    from durable_agents.client import (
        ClientError,
        approve,
        deny,
        end_session,
        export,
        follow,
        interrupt,
        post_tool_result,
        result,
        send_message,
        session_events,
        session_state,
        start_session,
        wait_until_settled,
    )
    from durable_agents.connection import connect
    from durable_agents.contracts import AgentSpec, SessionEvent, SessionResult, SessionState
    from durable_agents.schedules import ScheduleRequest
    from durable_agents.schedules import create as create_schedule
    from durable_agents.settings import Settings

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # connecting and configuration (the process's own: durable_agents.settings.settings())
    "connect": ("durable_agents.connection", "connect"),
    "Settings": ("durable_agents.settings", "Settings"),
    # agents
    "AgentSpec": ("durable_agents.contracts", "AgentSpec"),
    "load_agent": ("durable_agents.agent_files", "load_agent"),
    "AgentFileError": ("durable_agents.agent_files", "AgentFileError"),
    # sessions
    "start_session": ("durable_agents.client", "start_session"),
    "send_message": ("durable_agents.client", "send_message"),
    "session_events": ("durable_agents.client", "session_events"),
    "follow": ("durable_agents.client", "follow"),
    "session_state": ("durable_agents.client", "session_state"),
    "wait_until_settled": ("durable_agents.client", "wait_until_settled"),
    "result": ("durable_agents.client", "result"),
    "interrupt": ("durable_agents.client", "interrupt"),
    "approve": ("durable_agents.client", "approve"),
    "deny": ("durable_agents.client", "deny"),
    "post_tool_result": ("durable_agents.client", "post_tool_result"),
    "end_session": ("durable_agents.client", "end_session"),
    "export": ("durable_agents.client", "export"),
    "ClientError": ("durable_agents.client", "ClientError"),
    "SessionEvent": ("durable_agents.contracts", "SessionEvent"),
    "SessionState": ("durable_agents.contracts", "SessionState"),
    "SessionResult": ("durable_agents.contracts", "SessionResult"),
    # recurring agents
    "ScheduleRequest": ("durable_agents.schedules", "ScheduleRequest"),
    "create_schedule": ("durable_agents.schedules", "create"),
}

__all__ = [
    "AgentFileError",
    "AgentSpec",
    "ClientError",
    "ScheduleRequest",
    "SessionEvent",
    "SessionResult",
    "SessionState",
    "Settings",
    "approve",
    "connect",
    "create_schedule",
    "deny",
    "end_session",
    "export",
    "follow",
    "interrupt",
    "load_agent",
    "post_tool_result",
    "result",
    "send_message",
    "session_events",
    "session_state",
    "start_session",
    "wait_until_settled",
]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'durable_agents' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
