"""MCP servers for tests: the npm registry's (installed by setup) and tests/mcp_auth_server.py,
which answers `authorized` only to the test token (given to workers only through the vault)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from durable_agents.contracts import McpServer
from tests.helpers.paths import ROOT
from tests.helpers.processes import free_port

BIN = ROOT / "mcp-servers" / "node_modules" / ".bin"
MCP_TOKEN = "mcp-token-" + "7f3a9c1e5b"  # a test secret, given to workers only through the vault (env backend)


@dataclass
class HttpServers:
    everything: str
    auth: str


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"the MCP server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def http_mcp_servers(logs: Path) -> Iterator[HttpServers]:
    """server-everything and the auth-checking server over Streamable HTTP, for as long as the block runs."""
    everything_port, auth_port = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [str(BIN / "mcp-server-everything"), "streamableHttp"],
            env={**os.environ, "PORT": str(everything_port)},
            stdout=(logs / "everything.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "mcp_auth_server.py"), "http", str(auth_port)],
            env={**os.environ, "EXPECTED_SHA256": hashlib.sha256(MCP_TOKEN.encode()).hexdigest()},
            stdout=(logs / "auth.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        _wait_port(everything_port, procs[0])
        _wait_port(auth_port, procs[1])
        yield HttpServers(f"http://127.0.0.1:{everything_port}/mcp", f"http://127.0.0.1:{auth_port}/mcp")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def auth_servers(http_url: str) -> list[McpServer]:
    """The auth-checking server over stdio (the secret `mcp-token` as env) and HTTP (as a header)."""
    expected = hashlib.sha256(MCP_TOKEN.encode()).hexdigest()
    return [
        McpServer(
            name="stdio-auth",
            command=sys.executable,
            args=[str(ROOT / "tests" / "mcp_auth_server.py"), "stdio"],
            env={"API_TOKEN": {"secret": "mcp-token"}, "EXPECTED_SHA256": expected},  # type: ignore[dict-item]
            policy="always_allow",
        ),
        McpServer(
            name="http-auth",
            url=http_url,
            headers={"Authorization": {"secret": "mcp-token", "prefix": "Bearer "}},  # type: ignore[dict-item]
            policy="always_allow",
        ),
    ]
