"""MCP servers for tests: the npm registry's (installed by setup) and tests/mcp_auth_server.py,
which answers `authorized` only to the test token (given to workers only through the vault)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from durable_agents.contracts import McpServer
from tests.helpers.paths import ROOT
from tests.helpers.processes import free_port

BIN = ROOT / "mcp-servers" / "node_modules" / ".bin"
MCP_TOKEN = "mcp-token-" + "7f3a9c1e5b"  # a test secret, given to workers only through the vault (env backend)


@dataclass
class HttpServers:
    everything: str
    auth: str


def _wait_answering(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the server answers HTTP on `port` (whatever took the port first may accept connections
    but does not answer as this server does)."""
    for _ in range(200):
        if proc.poll() is not None:
            raise ChildProcessError(f"the MCP server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            if proc.poll() is None:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on {port}")


def _serve(start: Callable[[int], subprocess.Popen[bytes]]) -> tuple[int, subprocess.Popen[bytes]]:
    """A server started on a free port, listening. A free port is free only when asked: an
    outgoing connection can take it (it is in the ephemeral range) before the server binds it, and
    the server exits ("Port … is already in use"); then again on another."""
    for attempt in range(5):
        port = free_port()
        proc = start(port)
        try:
            _wait_answering(port, proc)
        except ChildProcessError:
            if attempt == 4:
                raise
            continue
        except BaseException:
            proc.kill()
            raise
        return port, proc
    raise AssertionError("unreachable")


@contextmanager
def http_mcp_servers(logs: Path) -> Iterator[HttpServers]:
    """server-everything and the auth-checking server over Streamable HTTP, for as long as the block runs."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        everything_port, everything = _serve(
            lambda port: subprocess.Popen(
                [str(BIN / "mcp-server-everything"), "streamableHttp"],
                env={**os.environ, "PORT": str(port)},
                stdout=(logs / "everything.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(everything)
        auth_port, auth = _serve(
            lambda port: subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "mcp_auth_server.py"), "http", str(port)],
                env={**os.environ, "EXPECTED_SHA256": hashlib.sha256(MCP_TOKEN.encode()).hexdigest()},
                stdout=(logs / "auth.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(auth)
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
