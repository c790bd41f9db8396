"""The session log at length: history per turn for 10, 100 and 1,000-turn sessions (with
continue-as-new), time to read every event back, compaction's effect on request size, and the
prompt-cache hit ratio the scripted model counts.

    .venv/bin/python -m bench.session_log
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from common import ROOT, add_scenario, local_stack

from durable_agents import session_log
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.contracts import COMPACTION_INSTRUCTION, AgentSpec, Skill
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse


def ticks(n: int) -> list[Step]:
    return [
        Step(tool_use=ToolUse(name="load_skill", input={"name": "tick", "copy_files": i % 2 == 0})) for i in range(n)
    ]


def agent(body: str, **limits: Any) -> AgentSpec:
    base = load_agent(ROOT / "agents" / "coder.yaml")
    return base.model_copy(
        update={
            "skills": [Skill(name="tick", description="a cheap tool", body=body)],
            "limits": base.limits.model_copy(update={"max_turns": 5_000, **limits}),
        }
    )


async def history_of(client: Any, session_id: str) -> tuple[int, int, int]:
    """(runs, history events, history bytes) over every run of a session."""
    events = size = 0
    chain = await session_log.runs(client, session_id)
    for run in chain:
        history = await client.get_workflow_handle(session_id, run_id=run.run_id).fetch_history()
        events += len(history.events)
        size += sum(e.ByteSize() for e in history.events)
    return len(chain), events, size


async def long_session(client: Any, server: ScriptedModelServer, turns: int) -> dict[str, Any]:
    marker = add_scenario(server, [*ticks(turns - 1), Step(text="done")])
    began = time.perf_counter()
    handle = await start_agent_session(client, agent("tock", context_tokens=20_000), f"Tick. {marker}", one_shot=True)
    result = await handle.result()
    took = time.perf_counter() - began
    assert result.turns == turns, result
    runs, events, size = await history_of(client, handle.id)
    began = time.perf_counter()
    log = await session_log.read_events(client, handle.id)
    read_s = time.perf_counter() - began
    return {
        "turns": turns,
        "runs": runs,
        "history_events": events,
        "history_bytes": size,
        "events_per_turn": round(events / turns, 2),
        "bytes_per_turn": round(size / turns),
        "session_s": round(took, 1),
        "log_events": len(log),
        "read_all_s": round(read_s, 2),
    }


async def compaction(client: Any, server: ScriptedModelServer, budget: int | None) -> dict[str, Any]:
    """A 60-turn session whose tool results are ~2 KB each, with or without a context budget."""
    marker = add_scenario(server, [*ticks(59), Step(text="done")])
    spec = agent("lorem ipsum " * 170, context_tokens=budget)
    handle = await start_agent_session(client, spec, f"Read. {marker}", one_shot=True)
    await handle.result()
    bodies = [r.body for r in server.requests if marker in json.dumps(r.body)]
    turns = [b for b in bodies if COMPACTION_INSTRUCTION not in json.dumps(b)]
    sizes = [len(json.dumps(b)) for b in turns]
    return {
        "budget_tokens": budget,
        "requests": len(bodies),
        "compactions": len(bodies) - len(turns),
        "mean_request_bytes": round(sum(sizes) / len(sizes)),
        "max_request_bytes": max(sizes),
        "total_request_bytes": sum(len(json.dumps(b)) for b in bodies),
    }


async def cache_ratio(client: Any, server: ScriptedModelServer) -> dict[str, Any]:
    marker = add_scenario(server, [*ticks(19), Step(text="done")])
    handle = await start_agent_session(client, agent("tock"), f"Cache. {marker}", one_shot=True)
    await handle.result()
    events = await session_log.read_events(client, handle.id)
    usage = [e.usage for e in events if e.kind == "model_turn" and e.usage]
    read = sum(u.cache_read_input_tokens for u in usage)
    total_in = sum(u.total_tokens - u.output_tokens for u in usage)
    return {"turns": len(usage), "cache_read_share_of_input": round(read / total_in, 3)}


async def main() -> None:
    async with local_stack(warm_pool=0) as (client, server):
        lengths = [await long_session(client, server, n) for n in (10, 100, 1000)]
        without = await compaction(client, server, None)
        with_budget = await compaction(client, server, 8_000)
        cache = await cache_ratio(client, server)
    head = ("turns", "runs", "events", "ev/turn", "bytes/turn", "session s", "read all")
    print("\n{:>6} {:>5} {:>7} {:>8} {:>11} {:>10} {:>9}".format(*head))
    for r in lengths:
        print(
            f"{r['turns']:>6} {r['runs']:>5} {r['history_events']:>7} {r['events_per_turn']:>8} "
            f"{r['bytes_per_turn']:>11} {r['session_s']:>10} {r['read_all_s']:>8}s ({r['log_events']} events)"
        )
    for c in (without, with_budget):
        print(
            f"compaction budget {c['budget_tokens']}: {c['requests']} requests, {c['compactions']} compactions, "
            f"mean request {c['mean_request_bytes']} B, largest {c['max_request_bytes']} B, "
            f"all requests {c['total_request_bytes']} B"
        )
    share = cache["cache_read_share_of_input"]
    print(f"prompt cache: {share:.0%} of input tokens read from the cache ({cache['turns']} turns)")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "session_log.json").write_text(
        json.dumps({"history": lengths, "compaction": [without, with_budget], "cache": cache}, indent=2)
    )
    print(f"written: {out / 'session_log.json'}")


if __name__ == "__main__":
    asyncio.run(main())
