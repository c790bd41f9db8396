"""Memory write-back after a tool call: prints a table and writes bench/results/memory.json.

    .venv/bin/python -m bench.memory [--memories 200] [--rounds 30]

The sandbox worker's side alone (`MemoryMounts`, on a SQLite API database in a temporary
directory): a mount of --memories files; after each "tool call" the mount is compared with what
was saved and the changes written as versions. Measured: a call that changed nothing (the scan),
one that changed one file, one that changed ten; and filling the mount at provision.
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


async def main(memories: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/api.db"
        os.environ["DA_DATABASE_URL"] = url  # the mounts open the API's database from the settings
        settings.cache_clear()
        store = Store(url)
        await store.start()
        db = MemoryDb(store)
        actor = {"type": "api_actor", "api_key_id": "bench"}
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
        await store.close()
        report(
            "memory",
            [
                summary(f"fill a mount of {memories} memories (provision)", fill),
                summary("write-back, nothing changed (the scan)", unchanged),
                summary("write-back, 1 file changed", one),
                summary("write-back, 10 files changed", ten),
            ],
            {"memories": memories, "rounds": rounds},
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--memories", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.memories, args.rounds))
