"""What the benchmarks share: a local stack (dev server on SQLite, scripted model, harness and
sandbox workers as separate processes, as deployed), scenarios, percentiles, the table."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from durable_agents.connection import DEV_SERVER_TUNING
from durable_agents.contracts import SA_AGENT_NAME, SA_AGENT_VERSION, SA_PARENT_SESSION, SA_SESSION_STATUS
from durable_agents.payload_store import data_converter
from durable_agents.testing.scripted_model import Scenario, ScriptedModelServer, Step

ROOT = Path(__file__).resolve().parent.parent
# The console scripts of the installed package (`make setup`: .venv/bin), beside this interpreter.
DA = str(Path(sys.executable).with_name("da"))
DA_WORKER = str(Path(sys.executable).with_name("da-worker"))
WORKER_PIDS: dict[str, int] = {}  # role -> pid of the local stack's worker processes


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, values_s: list[float]) -> dict[str, Any]:
    """p50 / p95 / mean in milliseconds of durations given in seconds."""
    return {
        "name": name,
        "n": len(values_s),
        "p50": round(pct(values_s, 50) * 1000, 2),
        "p95": round(pct(values_s, 95) * 1000, 2),
        "mean": round(statistics.mean(values_s) * 1000, 2),
    }


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
    """Print the table and write bench/results/<name>.json."""
    width = max(len(r["name"]) for r in rows)
    print(f"\n{'measure':<{width}}  {'n':>4}  {'p50 ms':>9}  {'p95 ms':>9}  {'mean ms':>9}")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['n']:>4}  {r['p50']:>9}  {r['p95']:>9}  {r['mean']:>9}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"rows": rows, **(extra or {})}, indent=2))
    print(f"written: {out / f'{name}.json'}")


def add_scenario(server: ScriptedModelServer, steps: list[Step]) -> str:
    marker = f"[bench {uuid.uuid4().hex[:10]}]"
    server.model.scenarios.insert(0, Scenario(name=marker, match=marker, steps=steps))
    return marker


def arrivals(server: ScriptedModelServer, marker: str, start: int = 0) -> list[float]:
    """When the scripted model received each request of the conversation marked `marker` (of
    those from the `start`-th request on)."""
    return [r.at for r in server.requests[start:] if marker in json.dumps(r.body["messages"][0])]


async def wait_arrivals(server: ScriptedModelServer, marker: str, n: int) -> list[float]:
    """The arrivals of `marker`'s requests once there are `n`. Each poll reads only the requests
    that came since the last one: a wait that re-read them all every 2 ms took a core of this
    2-core machine from the server and the workers it measures, more the longer a run went on."""
    got: list[float] = []
    seen = 0
    for _ in range(20_000):
        count = len(server.requests)
        if count > seen:
            got += arrivals(server, marker, seen)
            seen = count
            if len(got) >= n:
                return got
        await asyncio.sleep(0.002)
    raise TimeoutError(marker)


@asynccontextmanager
async def local_stack(
    warm_pool: int = 2,
    database: str | None = "file",
    worker_env: dict[str, str] | None = None,
    tuned: bool = True,
    roles: tuple[str, ...] = ("--harness", "--sandbox"),
) -> AsyncIterator[tuple[Client, ScriptedModelServer]]:
    """database: "file" (SQLite in a temporary file, as `make up` runs it) or None (in memory);
    worker_env: more environment for the worker processes; tuned: the dev server with
    DEV_SERVER_TUNING (False: `temporal server start-dev` as it ships); roles: which workers to
    start (one process each; a benchmark that brings its own sandbox activities starts only the harness)."""
    env = await WorkflowEnvironment.start_local(
        data_converter=data_converter(),
        dev_server_existing_path=str(ROOT / ".bin" / "temporal"),
        dev_server_database_filename=str(Path(tempfile.mkdtemp()) / "bench.db") if database == "file" else None,
        dev_server_extra_args=DEV_SERVER_TUNING if tuned else [],
        search_attributes=[
            SearchAttributeKey.for_keyword(SA_AGENT_NAME),
            SearchAttributeKey.for_keyword(SA_SESSION_STATUS),
            SearchAttributeKey.for_keyword(SA_AGENT_VERSION),
            SearchAttributeKey.for_keyword(SA_PARENT_SESSION),
        ],
    )
    server = ScriptedModelServer([]).start()
    worker_env = {
        **os.environ,
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "ANTHROPIC_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": server.url,
        "SANDBOX_HOST_ID": f"bench-{uuid.uuid4().hex[:6]}",
        "SANDBOX_WARM_POOL": str(warm_pool),
        "LOG_LEVEL": "WARNING",
        **(worker_env or {}),
    }
    workers = [subprocess.Popen([DA_WORKER, role], cwd=ROOT, env=worker_env) for role in roles]  # noqa: ASYNC220
    WORKER_PIDS.update({role.removeprefix("--"): w.pid for role, w in zip(roles, workers, strict=True)})
    try:
        yield env.client, server
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=30)
        server.stop()
        await env.shutdown()


def serve_api(address: str, port: int, data: str, key: str) -> subprocess.Popen[bytes]:
    """`da serve` as a process with API key `key` and data directory `data`, once it answers."""
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "DA_API_KEY": key, "DA_DATA_DIR": data, "LOG_LEVEL": "WARNING"}
    env["DA_PAYLOAD_DIR"] = str(ROOT / ".data" / "payloads")  # the workers' (they run in ROOT): one store
    proc = subprocess.Popen([DA, "serve", "--port", str(port)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("da serve did not start")
