"""Sandbox benchmarks: prints a table and writes bench/results/sandboxes.json.

    .venv/bin/python -m bench.sandboxes [--n 20]

- provision, cold: the provision activity making a new hardened container (docker run), through
  to its first command answered by the persistent shell;
- provision, warm pool: the same from a pre-started pool container (bind + first command);
- exec: `true` through the persistent shell vs a new `docker exec` per command;
- snapshot and restore of a 50 MB workspace (random data, so gzip cannot shrink it much).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
import uuid
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from bench.common import report, summary
from durable_agents.contracts import ExecuteRequest, ProvisionRequest, SandboxHandle, SandboxSpec
from durable_agents.sandboxes.activities import SandboxActivities
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.sandboxes.pool import WarmPool

ROOT = Path(__file__).resolve().parent.parent


async def provision_and_first_command(activities: SandboxActivities, spec: SandboxSpec) -> tuple[float, str]:
    t0 = time.perf_counter()
    handle: SandboxHandle = await ActivityEnvironment().run(
        activities.provision_sandbox, ProvisionRequest(session_id=f"bench-{uuid.uuid4().hex[:6]}", spec=spec)
    )
    await ActivityEnvironment().run(
        activities.execute,
        ExecuteRequest(
            handle=handle,
            call_id=uuid.uuid4().hex,
            name="bash",
            input={"command": "true"},
            timeout_s=30,
            output_cap=1000,
        ),
    )
    return time.perf_counter() - t0, handle.sandbox_id


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    sandboxes = DockerSandboxes(f"bench-{uuid.uuid4().hex[:6]}")
    spec = SandboxSpec()
    rows = []
    made: list[str] = []
    try:
        cold = SandboxActivities(sandboxes)
        times = []
        for _ in range(args.n):
            seconds, cid = await provision_and_first_command(cold, spec)
            times.append(seconds)
            made.append(cid)
        rows.append(summary("provision, cold (docker run → first command)", times))

        pool = WarmPool(sandboxes, size=3)
        warm = SandboxActivities(sandboxes, pool=pool)
        filling = asyncio.create_task(pool.run())
        times = []
        for _ in range(args.n):
            while len(pool.ready) < 3:  # noqa: ASYNC110 - a steady pool, as between bursts
                await asyncio.sleep(0.05)
            seconds, cid = await provision_and_first_command(warm, spec)
            times.append(seconds)
            made.append(cid)
        filling.cancel()
        pool.drain()
        rows.append(summary("provision, warm pool (bind → first command)", times))

        cid = made[0]
        shell, docker_exec = [], []
        for i in range(100):
            t0 = time.perf_counter()
            sandboxes.run(cid, f"bench-{i}", "true", 1000, 30)
            shell.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sandboxes.exec(cid, ["true"])
            docker_exec.append(time.perf_counter() - t0)
        rows.append(summary("exec `true`: persistent shell", shell))
        rows.append(summary("exec `true`: docker exec per command", docker_exec))

        sandboxes.run(cid, "fill", "head -c 37500000 /dev/urandom | base64 -w 0 > /workspace/data.b64", 1000, 120)
        snaps, restores = [], []
        target = made[1]
        for _ in range(5):
            buffer = io.BytesIO()
            t0 = time.perf_counter()
            size = sandboxes.snapshot(cid, buffer)
            snaps.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sandboxes.restore(target, buffer.getvalue())
            restores.append(time.perf_counter() - t0)
        rows.append(summary(f"snapshot of a 50 MB workspace ({size // 1_000_000} MB gzipped)", snaps))
        rows.append(summary("restore of that snapshot", restores))
    finally:
        for cid in made:
            sandboxes.destroy(cid)
        sandboxes.close()

    report("sandboxes", rows)


if __name__ == "__main__":
    asyncio.run(main())
