"""The floor for bench/scale.py: what Temporal itself costs for a session's shape. A workflow runs
`steps` activities one after another, each doing nothing but waiting `delay_ms` (the model's
latency), on a worker process of its own, with the SDK's default data converter and the harness
worker's workflow runner. What the harness costs above this is ours.

    .venv/bin/python -m bench.floor --address HOST:PORT [--namespace default]   (the worker)
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from durable_agents.worker import WORKFLOW_RUNNER

FLOOR_QUEUE = "bench-floor"


@dataclass
class FloorInput:
    steps: int
    delay_ms: int


@activity.defn
async def floor_step(delay_ms: int) -> str:
    await asyncio.sleep(delay_ms / 1000)
    return "ok"


@workflow.defn
class FloorWorkflow:
    @workflow.run
    async def run(self, job: FloorInput) -> int:
        for _ in range(job.steps):
            await workflow.execute_activity(floor_step, job.delay_ms, start_to_close_timeout=timedelta(seconds=60))
        return job.steps


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()
    # By its import name: the workflow sandbox imports the workflow's module, never `__main__`.
    from bench import floor

    client = await Client.connect(args.address, namespace=args.namespace)
    worker = Worker(
        client,
        task_queue=FLOOR_QUEUE,
        workflows=[floor.FloorWorkflow],
        activities=[floor.floor_step],
        workflow_runner=WORKFLOW_RUNNER,
        max_concurrent_activities=1000,  # as the harness worker (HARNESS_MAX_ACTIVITIES)
    )
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
