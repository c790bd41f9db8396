"""Subagent benchmarks: prints a table and writes bench/results/subagents.json.

    .venv/bin/python -m bench.subagents [--n 10]

- spawn → child's first model request: from the scripted model receiving the parent's request
  whose answer is the spawn_agent call, to it receiving the child's first request (the parent's
  model answer, the workflow task, the child workflow's start and its first model call);
- a session that spawns 1 child vs 3 children in one turn (each child answers at once): the
  fan-out's overhead is the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from temporalio.client import Client

from bench.common import add_scenario, arrivals, local_stack, report, summary
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.contracts import Subagent
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse

ROOT = Path(__file__).resolve().parent.parent


async def one_session(client: Client, server: ScriptedModelServer, children: int) -> tuple[float, float]:
    """(spawn → first child request, whole session) in seconds."""
    coder = load_agent(ROOT / "agents" / "coder.yaml")
    agent = coder.model_copy(update={"subagents": [Subagent(name="helper", spec=coder)]})
    child_markers = [add_scenario(server, [Step(text="child answer")]) for _ in range(children)]
    spawns = [ToolUse(name="spawn_agent", input={"agent": "helper", "task": f"Do it. {m}"}) for m in child_markers]
    marker = add_scenario(server, [Step(tool_uses=spawns), Step(text="done")])
    t0 = time.perf_counter()
    handle = await start_agent_session(client, agent, f"Fan out. {marker}", one_shot=True)
    await handle.result()
    total = time.perf_counter() - t0
    parent_first = arrivals(server, marker)[0]
    child_first = min(arrivals(server, m)[0] for m in child_markers)
    return child_first - parent_first, total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    async with local_stack(warm_pool=0) as (client, server):
        await one_session(client, server, 1)  # warm up
        single = [await one_session(client, server, 1) for _ in range(args.n)]
        triple = [await one_session(client, server, 3) for _ in range(args.n)]
    rows = [
        summary("spawn_agent → child's first model request", [s for s, _ in single]),
        summary("session with 1 child (start → result)", [t for _, t in single]),
        summary("session with 3 children in one turn (start → result)", [t for _, t in triple]),
    ]
    report("subagents", rows)


if __name__ == "__main__":
    asyncio.run(main())
