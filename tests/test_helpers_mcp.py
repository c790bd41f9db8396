"""The tests' MCP helper: the servers it starts come up even when the port it chose was taken."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.helpers import mcp as mcp_helpers
from tests.helpers import processes
from tests.helpers.mcp import http_mcp_servers


def test_a_server_whose_free_port_was_taken_starts_on_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port's answer can be taken before the server binds it (seen in CI: server-everything
    exited with "Port … is already in use"); the helper starts it again on another port."""
    taken = socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True)  # as the server binds
    ports = iter([taken.getsockname()[1]])
    monkeypatch.setattr(mcp_helpers, "free_port", lambda: next(ports, None) or processes.free_port())
    with taken, http_mcp_servers(tmp_path) as servers:
        assert str(taken.getsockname()[1]) not in servers.everything
        assert "already in use" in (tmp_path / "everything.log").read_text()
        assert httpx.post(servers.everything, json={}).status_code in (400, 406)
