"""What tests share besides fixtures (those are in tests/conftest.py): paths, scenarios, agents,
waiting, in-process workers, `da` as a process, MCP servers. Tests import from here, never from
another test module."""

from __future__ import annotations

from collections.abc import Callable

from tests.helpers.checks import appends, assert_clean, released, requests_for, session_has_container
from tests.helpers.mcp import MCP_TOKEN, HttpServers, auth_servers, http_mcp_servers
from tests.helpers.paths import CHAOS_NAMESPACE, CHROMIUM, CHROMIUM_ARGS, DA, DA_WORKER, ROOT, TEMPORAL_CLI
from tests.helpers.processes import cli, free_port, serve, wait_healthy
from tests.helpers.scenarios import add_scenario, write_then_read_twice
from tests.helpers.sessions import coder, spawn, state_of, wait_for, with_subagents
from tests.helpers.workers import Workers, remove_containers, remove_host_containers, running_workers

SetEnv = Callable[[str, str | None], None]  # the `setenv` fixture: NAME, value (None unsets it)

__all__ = [
    "CHAOS_NAMESPACE",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DA",
    "DA_WORKER",
    "MCP_TOKEN",
    "ROOT",
    "TEMPORAL_CLI",
    "HttpServers",
    "SetEnv",
    "Workers",
    "add_scenario",
    "appends",
    "assert_clean",
    "released",
    "session_has_container",
    "auth_servers",
    "cli",
    "coder",
    "free_port",
    "http_mcp_servers",
    "remove_containers",
    "remove_host_containers",
    "requests_for",
    "running_workers",
    "serve",
    "spawn",
    "state_of",
    "wait_healthy",
    "wait_for",
    "with_subagents",
    "write_then_read_twice",
]
