"""Many sessions at once on one harness worker and one sandbox worker.

    .venv/bin/python -m bench.scale [--sessions 50,200,500] [--latency-ms 300]

Each session makes 3 model calls (two cheap tool turns that run inside the workflow, then the
answer) against the scripted model answering after --latency-ms. The ideal is 3 × latency for
every session, whatever N; we report the time until all N have answered, its ratio to the ideal,
per-session latency percentiles, events lost (every session must have 3 model turns and a
gap-free log) and the workers' peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from common import ROOT, WORKER_PIDS, add_scenario, local_stack, pct, peak_rss_mb

from durable_agents import session_log
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.contracts import Skill
from durable_agents.testing.scripted_model import Step, ToolUse

TURNS = 3


async def wave(client: Any, server: Any, n: int, latency_ms: int) -> dict[str, Any]:
    marker = add_scenario(
        server,
        [
            Step(tool_use=ToolUse(name="load_skill", input={"name": "tick"})),
            Step(tool_use=ToolUse(name="load_skill", input={"name": "tick", "copy_files": True})),
            Step(text="done"),
        ],
    )
    server.model.scenarios[0].delay_ms = latency_ms
    base = load_agent(ROOT / "agents" / "coder.yaml")
    agent = base.model_copy(update={"skills": [Skill(name="tick", description="cheap", body="tock")]})

    async def one(i: int) -> tuple[str, float]:
        t0 = time.perf_counter()
        handle = await start_agent_session(client, agent, f"Session {i}. {marker}", one_shot=True)
        result = await handle.result()
        assert result.status == "done", result
        return handle.id, time.perf_counter() - t0

    began = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(n)))
    total = time.perf_counter() - began
    lost = 0
    for session_id, _ in done:
        events = await session_log.read_events(client, session_id)
        turns = sum(1 for e in events if e.kind == "model_turn")
        gapless = [e.offset for e in events] == list(range(len(events)))
        lost += (TURNS - turns) + (0 if gapless else 1)
    ideal = TURNS * latency_ms / 1000
    each = [d for _, d in done]
    return {
        "sessions": n,
        "all_done_s": round(total, 2),
        "ideal_s": ideal,
        "ratio_to_ideal": round(total / ideal, 2),
        "session_p50_s": round(pct(each, 50), 2),
        "session_p95_s": round(pct(each, 95), 2),
        "events_lost": lost,
        "harness_rss_mb": round(peak_rss_mb(WORKER_PIDS["harness"]), 1),
        "sandbox_rss_mb": round(peak_rss_mb(WORKER_PIDS["sandbox"]), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="50,200,500")
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--database", choices=["file", "memory"], default="file", help="the dev server's SQLite")
    args = parser.parse_args()
    rows = []
    async with local_stack(warm_pool=0, database=None if args.database == "memory" else "file") as (client, server):
        for n in (int(x) for x in args.sessions.split(",")):
            rows.append(await wave(client, server, n, args.latency_ms))
            r = rows[-1]
            print(
                f"{r['sessions']:>4} sessions: all done in {r['all_done_s']} s (ideal {r['ideal_s']} s, "
                f"{r['ratio_to_ideal']}×), per session p50 {r['session_p50_s']} s / p95 {r['session_p95_s']} s, "
                f"events lost {r['events_lost']}, harness RSS {r['harness_rss_mb']} MB, "
                f"sandbox RSS {r['sandbox_rss_mb']} MB",
                flush=True,
            )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"latency_ms": args.latency_ms, "rows": rows}, indent=2))
    print(f"written: {out / 'scale.json'}")


if __name__ == "__main__":
    asyncio.run(main())
