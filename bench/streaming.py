"""Live streaming latency: prints a table and writes bench/results/streaming.json.

    .venv/bin/python -m bench.streaming [--sessions 4] [--tokens 100] [--every-ms 20]

A local stack (dev server on SQLite, scripted model, harness and sandbox workers as processes)
with the live server (`da serve`) as a process and the harness worker publishing to it.
Each session's model answers with --tokens unique tokens, one per streamed text delta,
--every-ms apart (50 a second by default, a brisk model). For each token: from the scripted
server writing it to its socket (it stamps every chunk) to the token's line being read from
`da follow ID --json --server URL`'s stdout, and the legs in between: to the model
activity (the time it stamps on the delta), to `follow` receiving it from the live server (its
`received_at`), and `follow`'s own output. Also: the last token to the turn's durable event in
`follow`. Tokens written before `follow` had connected are left out (and counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from bench.common import DA, add_scenario, local_stack, report, summary
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.testing import free_port
from durable_agents.testing.scripted_model import ScriptedModelServer, Step

ROOT = Path(__file__).resolve().parent.parent


async def serve(address: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived process, not awaited
        [DA, "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        stdout=subprocess.DEVNULL,
    )
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return proc
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise RuntimeError("da serve did not start")


async def one_session(
    client: Client, server: ScriptedModelServer, address: str, url: str, n: int, tokens: int, every_ms: int
) -> dict[str, Any]:
    words = [f"s{n:02d}t{i:04d} " for i in range(tokens)]  # unique: a token is found by its text
    # The answer waits 2.5 s before its first token, time for `follow` to start and connect.
    marker = add_scenario(
        server, [Step(text="".join(words), stream_chunk=len(words[0]), stream_delay_ms=every_ms, delay_ms=2500)]
    )
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    handle = await start_agent_session(client, agent, f"Stream. {marker}", one_shot=True)
    proc = await asyncio.create_subprocess_exec(
        DA,
        "follow",
        handle.id,
        "--json",
        "--server",
        url,
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[tuple[float, dict[str, Any]]] = []  # (read by us, the line)
    while line := await proc.stdout.readline():
        seen.append((time.time(), json.loads(line)))
    await proc.wait()
    connected = seen[0][0] if seen else float("inf")
    sent = {c.text: c.at for c in server.model.chunks if c.text in set(words)}
    rows: dict[str, list[float]] = {"total": [], "to_activity": [], "to_follow": [], "follow_out": []}
    early = 0
    for read_at, line in seen:
        if line["type"] != "delta" or line["kind"] != "text" or line["text"] not in sent:
            continue
        left = sent[line["text"]]
        if left < connected:
            early += 1
            continue
        rows["total"].append(read_at - left)
        rows["to_activity"].append(line["at"] - left)
        rows["to_follow"].append(line["received_at"] - line["at"])
        rows["follow_out"].append(read_at - line["received_at"])
    turn = next(t for t, x in seen if x["type"] == "event" and x["kind"] == "model_turn")
    last_token = max(sent.values())
    return {**rows, "early": early, "missing": tokens - len(rows["total"]) - early, "event_lag": turn - last_token}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--every-ms", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with local_stack(warm_pool=0, worker_env={"DA_LIVE_URL": url}) as (client, server):
        address = client.service_client.config.target_host
        relay = await serve(address, port)
        try:
            runs = [
                await one_session(client, server, address, url, n, args.tokens, args.every_ms)
                for n in range(args.sessions)
            ]
        finally:
            relay.terminate()
            relay.wait(timeout=30)

    def joined(key: str) -> list[float]:
        return [v for r in runs for v in r[key]]

    rows = [
        summary("token written by the model → its line in follow --json", joined("total")),
        summary("  model → model activity (delta stamped)", joined("to_activity")),
        summary("  activity → follow (publisher, relay, SSE)", joined("to_follow")),
        summary("  follow → its stdout", joined("follow_out")),
        summary("last token → the turn's durable event in follow", [r["event_lag"] for r in runs]),
    ]
    early, missing = sum(r["early"] for r in runs), sum(r["missing"] for r in runs)
    print(f"\n{args.sessions} sessions × {args.tokens} tokens, one every {args.every_ms} ms")
    report(
        "streaming",
        rows,
        {
            "sessions": args.sessions,
            "tokens_per_session": args.tokens,
            "every_ms": args.every_ms,
            "tokens_before_follow_connected": early,
            "tokens_missing": missing,
        },
    )
    print(f"tokens written before follow connected (left out): {early}; tokens missing in follow: {missing}")


if __name__ == "__main__":
    asyncio.run(main())
