"""Memory write-back after a tool call: prints a table and writes bench/results/memory.json.

    .venv/bin/python -m bench.memory [--memories 200] [--rounds 30] [--searches 100]

The sandbox worker's side alone (`MemoryMounts`, on a SQLite API database in a temporary
directory): a mount of --memories files; after each "tool call" the mount is compared with what
was saved and the changes written as versions. Measured: a call that changed nothing (the scan),
one that changed one file, one that changed ten; filling the mount at provision; and memory_search
over a store of 10,000 memories and over 1,000 past sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.common import report, summary
from durable_agents.api.memory_db import MemoryDb
from durable_agents.api.store import Store
from durable_agents.contracts import MemoryMount
from durable_agents.sandboxes.memory_mounts import MemoryMounts
from durable_agents.settings import settings

SEARCH_CORPUS = 10_000
WORDS = "alpha beta gamma delta deploy release build test lint ruff commit branch merge review docs api".split()


async def search_latency(db: MemoryDb, n: int) -> list[float]:
    """memory_search's query over a store of SEARCH_CORPUS memories of ~60 words each."""
    import random

    rng = random.Random(7)
    actor = {"type": "api_actor", "api_key_id": "bench"}
    for i in range(SEARCH_CORPUS):
        words = " ".join(rng.choice(WORDS) + str(rng.randrange(500)) for _ in range(60))
        await db.create("corpus", f"/m/{i // 100}/{i}.md", words, actor)
    took = []
    for _ in range(n):
        query = f"{rng.choice(WORDS)}{rng.randrange(500)} {rng.choice(WORDS)}{rng.randrange(500)}"
        started = time.perf_counter()
        await db.search(["corpus"], query, 10)
        took.append(time.perf_counter() - started)
    return took


SESSIONS = 1_000


async def episode_latency(db: MemoryDb, n: int) -> list[float]:
    """memory_search over SESSIONS earlier sessions of one agent, 20 indexed events each."""
    import random

    rng = random.Random(11)
    for i in range(SESSIONS):
        items = [
            (
                k,
                "user_message" if k % 2 else "answer",
                " ".join(rng.choice(WORDS) + str(rng.randrange(500)) for _ in range(30)),
            )
            for k in range(20)
        ]
        await db.add_episodes("bench-agent", f"session-{i}", items)
    took = []
    for _ in range(n):
        query = f"{rng.choice(WORDS)}{rng.randrange(500)} {rng.choice(WORDS)}{rng.randrange(500)}"
        started = time.perf_counter()
        await db.search_episodes("bench-agent", query, 10)
        took.append(time.perf_counter() - started)
    return took


async def main(memories: int, rounds: int, searches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/api.db"
        os.environ["DA_DATABASE_URL"] = url  # the mounts open the API's database from the settings
        settings.cache_clear()
        store = Store(url)
        await store.start()
        db = MemoryDb(store)
        actor = {"type": "api_actor", "api_key_id": "bench"}
        await store.put("memory_store", "ms", {"name": "bench", "description": "", "metadata": {}})
        for i in range(memories):
            await db.create("ms", f"/notes/{i // 20}/n{i}.md", f"note {i}\n" * 50, actor)
        mounts = MemoryMounts(Path(tmp) / "mounts")
        mount = MemoryMount(store_id="ms", name="bench")
        fill, unchanged, one, ten = [], [], [], []
        for r in range(rounds):
            started = time.perf_counter()
            await mounts.prepare(f"s{r}", [mount])
            fill.append(time.perf_counter() - started)
        where = Path(tmp) / "mounts" / f"s{rounds - 1}" / "bench"
        for r in range(rounds):
            started = time.perf_counter()
            await mounts.save(f"s{rounds - 1}", f"c{r}", [mount])
            unchanged.append(time.perf_counter() - started)
            (where / "notes" / "0" / "n0.md").write_text(f"changed {r}\n")
            started = time.perf_counter()
            await mounts.save(f"s{rounds - 1}", f"c{r}", [mount])
            one.append(time.perf_counter() - started)
            for k in range(10):
                (where / "notes" / "1" / f"n{20 + k}.md").write_text(f"changed {r} {k}\n")
            started = time.perf_counter()
            await mounts.save(f"s{rounds - 1}", f"d{r}", [mount])
            ten.append(time.perf_counter() - started)
        search = await search_latency(db, searches)
        episodes = await episode_latency(db, searches)
        await store.close()
        report(
            "memory",
            [
                summary(f"fill a mount of {memories} memories (provision)", fill),
                summary("write-back, nothing changed (the scan)", unchanged),
                summary("write-back, 1 file changed", one),
                summary("write-back, 10 files changed", ten),
                summary(f"memory_search over {SEARCH_CORPUS:,} memories", search),
                summary(f"memory_search over {SESSIONS:,} past sessions (20 events each)", episodes),
            ],
            {"memories": memories, "rounds": rounds, "search_corpus": SEARCH_CORPUS, "sessions": SESSIONS},
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--memories", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--searches", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.memories, args.rounds, args.searches))
