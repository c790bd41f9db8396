"""What MCP, the codec and the egress proxy cost: prints a table and writes bench/results/security.json.

    .venv/bin/python -m bench.security [--n 50]

- MCP discovery: first (starts npm's server-memory over stdio) and cached per worker;
- an MCP tool call on a warm connection: server-memory over stdio, server-everything over HTTP;
- the AES-GCM codec: encode + decode of a 1 KB and a 256 KB payload;
- an HTTP request from a sandbox through the egress proxy (credential added) to an API on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.testing import ActivityEnvironment

from bench.common import report, summary
from durable_agents.activities.mcp_tools import McpActivities
from durable_agents.codec import EncryptionCodec, KeyRing
from durable_agents.contracts import EgressRule, McpCallRequest, McpDiscoverRequest, McpServer, SandboxSpec
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.settings import settings
from durable_agents.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "mcp-servers" / "node_modules" / ".bin"


async def timed(n: int, call: object) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


async def mcp_rows(n: int, tmp: Path) -> list[dict[str, object]]:
    port = free_port()
    http = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [str(BIN / "mcp-server-everything"), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    mcp = McpActivities()
    env = ActivityEnvironment()
    try:
        await asyncio.sleep(1.5)
        memory = McpServer(
            name="memory", command=str(BIN / "mcp-server-memory"), env={"MEMORY_FILE_PATH": str(tmp / "m.jsonl")}
        )
        everything = McpServer(name="everything", url=f"http://127.0.0.1:{port}/mcp")
        first = []
        for _ in range(min(n, 10)):
            await mcp.close()
            mcp._tools.clear()
            t0 = time.perf_counter()
            await env.run(mcp.discover_mcp_tools, McpDiscoverRequest(servers=[memory]))
            first.append(time.perf_counter() - t0)
        rows.append(summary("mcp discovery, stdio server started", first))
        rows.append(
            summary(
                "mcp discovery, cached",
                await timed(n, lambda: env.run(mcp.discover_mcp_tools, McpDiscoverRequest(servers=[memory]))),
            )
        )
        for server, tool, args in ((memory, "read_graph", {}), (everything, "echo", {"message": "hi"})):
            req = McpCallRequest(server=server, tool=tool, input=args, call_id="b", output_cap=30_000)
            await env.run(mcp.call_mcp_tool, req)
            kind = "stdio" if server.command else "http"
            rows.append(
                summary(f"mcp call, warm ({kind}: {tool})", await timed(n, lambda r=req: env.run(mcp.call_mcp_tool, r)))
            )
    finally:
        await mcp.close()
        http.terminate()
    return rows


async def codec_rows(n: int) -> list[dict[str, object]]:
    codec = EncryptionCodec(KeyRing("k1", {"k1": os.urandom(32)}))
    rows = []
    for size in (1024, 256 * 1024):
        payload = Payload(metadata={"encoding": b"json/plain"}, data=os.urandom(size))

        async def roundtrip(p: Payload = payload) -> None:
            await codec.decode(await codec.encode([p]))

        rows.append(summary(f"codec encode+decode {size // 1024} KB", await timed(n * 10, roundtrip)))
    return rows


def egress_rows(n: int) -> list[dict[str, object]]:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"ok" if self.headers.get("Authorization") == "Bearer bench-token" else b"no"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["DA_SECRET_BENCH_TOKEN"] = "bench-token"
    settings.cache_clear()  # the egress proxy reads the vault's env backend through the settings
    sandboxes = DockerSandboxes(f"bench-egress-{uuid.uuid4().hex[:6]}")
    rule = EgressRule(
        host="api.bench.test",
        port=server.server_address[1],
        scheme="http",
        connect_to="127.0.0.1",
        secret={"secret": "bench-token", "prefix": "Bearer "},  # type: ignore[arg-type]
    )
    container = sandboxes.create("bench", SandboxSpec(egress=[rule]))
    script = (
        "import time, urllib.request\n"
        f"for _ in range({n}):\n"
        "    t0 = time.perf_counter()\n"
        "    assert urllib.request.urlopen('http://api.bench.test/').read() == b'ok'\n"
        "    print(time.perf_counter() - t0)\n"
    )
    try:
        _, out = sandboxes.exec(container.id or "", ["python3", "-c", script])
        times = [float(line) for line in out.decode().split()]
    finally:
        sandboxes.destroy(container.id or "")
        sandboxes.close()
        server.shutdown()
    return [summary("http request through the egress proxy", times)]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows = await mcp_rows(args.n, Path(tmp))
    rows += await codec_rows(args.n)
    rows += egress_rows(args.n)
    report("security", rows)


if __name__ == "__main__":
    asyncio.run(main())
