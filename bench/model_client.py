"""The model client's own CPU a call, by HTTP transport: prints a table and writes
bench/results/model_client.json.

    .venv/bin/python -m bench.model_client [--concurrency 100] [--rounds 6] [--calls 5]

The harness's client (`anthropic_client_from_env`, as the harness worker makes it) streams
`--concurrency` calls at once, `--calls` times a round, against the scripted model in a process of
its own (answering in 300 ms, a 2 KB message, a system prompt and two tools in the request, like a
session's early turn); the transports take turns, round by round. Per call: this process's CPU
(user + system: the SDK building the request, the transport sending it and reading the stream, the
SDK parsing its events), and the wall time from the call to its final message.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import ROOT, pct, report
from durable_agents.activities.model import anthropic_client_from_env
from durable_agents.settings import Settings
from durable_agents.testing import free_port

TRANSPORTS = ("httpx", "aiohttp")
SCENARIO = {"name": "model-client", "delay_ms": 300, "steps": [{"text": "Done: the answer is here.", "repeat": 1000}]}
TOOLS = [
    {"name": name, "description": f"the {name} tool " * 20, "input_schema": {"type": "object", "properties": {}}}
    for name in ("bash", "read_file")
]


def start_model(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    scenario = directory / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    port = free_port()
    cmd = [sys.executable, "-m", "durable_agents.testing.scripted_model", "--port", str(port), str(scenario)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/_scripted/chunks", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the scripted model did not start")


async def batch(client: Any, concurrency: int, calls: int) -> tuple[float, list[float]]:
    """CPU seconds this process spent on concurrency × calls streamed calls, and each call's wall time."""
    messages = [{"role": "user", "content": "Write the program. " + "context " * 250}]
    system = [{"type": "text", "text": "You are a careful engineer. " * 40}]

    async def one() -> float:
        t0 = time.perf_counter()
        async with client.messages.stream(
            model="claude-bench", max_tokens=256, system=system, tools=TOOLS, messages=messages
        ) as stream:
            async for _ in stream:
                pass
            await stream.get_final_message()
        return time.perf_counter() - t0

    cpu0 = time.process_time()
    walls: list[float] = []
    for _ in range(calls):
        walls += await asyncio.gather(*[one() for _ in range(concurrency)])
    return time.process_time() - cpu0, walls


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_model(Path(tmp))
        try:
            clients = {
                t: anthropic_client_from_env(
                    Settings(ANTHROPIC_API_KEY="bench", ANTHROPIC_BASE_URL=url, ANTHROPIC_HTTP_CLIENT=t)
                )
                for t in TRANSPORTS
            }
            for client in clients.values():  # connections open, modules warm
                await batch(client, args.concurrency, 1)
            cpu: dict[str, list[float]] = {t: [] for t in TRANSPORTS}
            walls: dict[str, list[float]] = {t: [] for t in TRANSPORTS}
            for r in range(args.rounds):
                for t in TRANSPORTS if r % 2 == 0 else reversed(TRANSPORTS):
                    seconds, w = await batch(clients[t], args.concurrency, args.calls)
                    cpu[t].append(seconds / (args.concurrency * args.calls))
                    walls[t] += w
            for client in clients.values():
                await client.close()
        finally:
            proc.terminate()
            proc.wait()
    print(f"\n{args.concurrency} calls at once, {args.calls} a round, {args.rounds} rounds")
    print(f"{'transport':<10}  {'CPU ms/call: median (min-max of rounds)':>40}  {'wall p50 / p95 ms':>18}")
    rows = []
    for t in TRANSPORTS:
        c = [x * 1000 for x in cpu[t]]
        print(
            f"{t:<10}  {statistics.median(c):>18.2f} ({min(c):.2f}-{max(c):.2f}){'':>9}"
            f"  {pct(walls[t], 50) * 1000:>8.0f} / {pct(walls[t], 95) * 1000:.0f}"
        )
        rows.append(
            {
                "name": f"{t}: wall per call",
                "n": len(walls[t]),
                "p50": round(pct(walls[t], 50) * 1000, 2),
                "p95": round(pct(walls[t], 95) * 1000, 2),
                "mean": round(statistics.mean(walls[t]) * 1000, 2),
                "cpu_ms_per_call": [round(x, 3) for x in c],
            }
        )
    ratio = statistics.median(cpu["aiohttp"]) / statistics.median(cpu["httpx"])
    print(f"aiohttp ÷ httpx, CPU a call: {ratio:.2f}")
    report("model_client", rows, {"aiohttp_over_httpx_cpu": round(ratio, 3), "args": vars(args)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
