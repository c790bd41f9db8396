"""Starts a harness worker, a sandbox worker, or both (the default) in one process.

    da-worker [--harness] [--sandbox] [--host-id ID]     (or: python worker.py ...)

The harness worker runs SessionWorkflow, `call_model` and the MCP activities on the `agents` queue;
it alone holds the model API key, and reads MCP servers' secrets from the vault. With DA_LIVE_URL
set it publishes model text as it streams to that live server (`da serve`). The sandbox
worker takes `provision_sandbox` and `provision_and_execute` (a first call with its provisioning)
from the shared `sandboxes` queue and runs `execute` / `snapshot_workspace` / `destroy_sandbox` on
its own host queue (`sandboxes-<host id>`); it holds no model key, and reads
from the vault only the git tokens and egress credentials it uses outside the containers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
from temporalio.client import Client
from temporalio.worker import (
    Interceptor,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from durable_agents.activities.episodes import EpisodeActivities
from durable_agents.activities.mcp_tools import McpActivities
from durable_agents.activities.model import ModelActivities, anthropic_client_from_env
from durable_agents.activities.schedules import ScheduleActivities
from durable_agents.activities.setup import AgentFiles, SetupActivities
from durable_agents.activities.skills import SkillActivities
from durable_agents.codec import CodecKeyError
from durable_agents.connection import check_search_attributes, connect, metrics_runtime
from durable_agents.contracts import AGENTS_QUEUE, SANDBOXES_QUEUE
from durable_agents.live.publisher import DeltaPublisher
from durable_agents.logs import configure_logging
from durable_agents.sandboxes.activities import SandboxActivities
from durable_agents.sandboxes.capacity import HostCapacity, provision_tuner
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.sandboxes.pool import WarmPool
from durable_agents.sandboxes.reaper import Reaper
from durable_agents.sandboxes.secrets import check_secrets
from durable_agents.settings import Settings, SettingsError, settings
from durable_agents.telemetry import shutdown as flush_traces
from durable_agents.vault import VaultError
from durable_agents.workflow_cache import CacheGovernor
from durable_agents.workflows.session import SessionWorkflow

HARNESS_WORKFLOWS = [SessionWorkflow]  # the harness worker's workflows

log = structlog.get_logger("worker")


class _Runner(SandboxedWorkflowRunner):
    """The SDK's sandboxed runner, less one cost: with a payload codec or external storage the SDK
    asks the workflow instance for a payload's serialization context for each payload sequence it
    visits (about eight times an activation here), and the sandboxed instance answers each by
    compiling and running code in the sandbox (~120 us; over a 200-session wave, 20,898 sandbox runs
    became 3,016 and their CPU 4.31 s became 2.70 s). Those two answers are pure reads of the
    instance's pending commands and info, with no import and no call the sandbox restricts, so they
    are asked of the instance directly. Where the SDK's private shape is not what this expects, the
    runner is the SDK's own, said once."""

    ASKED_DIRECTLY = ("get_serialization_context", "get_external_store_context")
    _warned = False

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = super().create_instance(det)
        inner = getattr(getattr(instance, "globals_and_locals", {}).get("__temporal_in_sandbox"), "instance", None)
        if inner is None or not all(callable(getattr(inner, name, None)) for name in self.ASKED_DIRECTLY):
            if not _Runner._warned:
                _Runner._warned = True
                log.warning("the SDK's sandbox has changed shape: serialization contexts are asked through it")
            return instance
        for name in self.ASKED_DIRECTLY:
            setattr(instance, name, getattr(inner, name))
        return instance


# The sandbox still checks every call a workflow makes for non-determinism, but no longer
# re-imports the modules for each workflow run: starting a session costs a fraction of the CPU.
WORKFLOW_RESTRICTIONS = SandboxRestrictions.default.with_passthrough_all_modules()
WORKFLOW_RUNNER = _Runner(restrictions=WORKFLOW_RESTRICTIONS)


def harness_runner(config: Settings | None = None) -> WorkflowRunner:
    """The sandboxed runner (WORKFLOW_RUNNER), or with HARNESS_WORKFLOW_SANDBOX=false none: each
    workflow task then skips the sandbox's cost (about 2 ms of CPU an activation here), and a
    non-deterministic call in workflow code is caught only by the replay tests (tests/test_replay.py)."""
    return WORKFLOW_RUNNER if (config or settings()).harness_workflow_sandbox else UnsandboxedWorkflowRunner()


def harness_worker(
    client: Client,
    model: ModelActivities,
    mcp: McpActivities | None = None,
    setup: SetupActivities | None = None,
    config: Settings | None = None,
    skills: SkillActivities | None = None,
    task_queue: str = AGENTS_QUEUE,
) -> Worker:
    config = config or settings()
    skills = skills or SkillActivities()
    schedules = ScheduleActivities(client)
    episodes = EpisodeActivities(client)
    mcp = mcp or McpActivities()
    setup = setup or SetupActivities(client)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=HARNESS_WORKFLOWS,
        activities=[
            model.call_model,
            schedules.last_scheduled_result,
            mcp.discover_mcp_tools,
            mcp.call_mcp_tool,
            setup.prepare_session,
            episodes.index_session,
            skills.learned_skills,
            skills.save_learned_skill,
            skills.record_skill_results,
        ],
        # Model calls wait on the network, not the CPU: one worker holds many at once.
        max_concurrent_activities=config.harness_max_activities,
        workflow_runner=harness_runner(config),
        max_cached_workflows=config.harness_max_cached_workflows,
    )


def sandbox_workers(
    client: Client,
    sandboxes: SandboxActivities,
    interceptors: Sequence[Interceptor] = (),
    config: Settings | None = None,
) -> list[Worker]:
    """Provisioning on the shared queue, as long as this host has room (sandboxes/capacity.py); the
    calls of this host's sandboxes on its own queue."""
    config = config or settings()
    capacity = HostCapacity(sandboxes.sandboxes, config.sandbox_max_containers, config.sandbox_max_provisions)
    return [
        Worker(
            client,
            task_queue=SANDBOXES_QUEUE,
            activities=[sandboxes.provision_sandbox, sandboxes.provision_and_execute, check_secrets],
            interceptors=interceptors,
            tuner=provision_tuner(capacity),
        ),
        Worker(
            client,
            task_queue=sandboxes.queue,
            activities=[sandboxes.execute, sandboxes.snapshot_workspace, sandboxes.destroy_sandbox],
            interceptors=interceptors,
            max_concurrent_activities=config.sandbox_max_activities,
        ),
    ]


async def announce_search_attributes(client: Client, register: bool) -> None:
    """Register our search attributes where the server allows it (idempotent) and say once what
    happened; where they are missing, sessions still run and set only those that exist."""
    check = await check_search_attributes(client, register=register)
    if check.added:
        log.info("search attributes registered", namespace=check.namespace, added=list(check.added))
    if check.missing:
        log.warning(
            "search attributes missing",
            namespace=check.namespace,
            missing=list(check.missing),
            problem=check.problem,
            advice=check.advice(),
        )


async def run(
    harness: bool,
    sandbox: bool,
    host_id: str,
    warm_pool: int,
    metrics_port: int | None = None,
    agents_dir: str | Path | None = None,
    register_attributes: bool = True,
    config: Settings | None = None,
) -> None:
    config = config or settings()
    client = await connect(runtime=metrics_runtime(metrics_port) if metrics_port else None, config=config)
    if metrics_port:
        log.info("metrics", url=f"http://0.0.0.0:{metrics_port}/metrics")
    workers: list[Worker] = []
    mcp: McpActivities | None = None
    if harness:
        await announce_search_attributes(client, register_attributes)
        anthropic_client = anthropic_client_from_env(config)
        if anthropic_client is None:
            log.warning("no ANTHROPIC_API_KEY: model calls will fail until one is set")
        else:
            log.info("model endpoint", base_url=str(anthropic_client.base_url))
        mcp = McpActivities()
        model = ModelActivities(client, anthropic_client, publisher=DeltaPublisher.from_env(config))
        if model.publisher.enabled:
            log.info("live relay: model text is published as it streams", url=model.publisher.url)
        setup = SetupActivities(client, AgentFiles(agents_dir), register_attributes=register_attributes)
        workers.append(harness_worker(client, model, mcp, setup, config))
    tasks: list[asyncio.Task[None]] = []
    if harness and config.harness_cache_mb:
        governor = CacheGovernor(workers[0], config.harness_cache_mb * 1024 * 1024)
        tasks.append(asyncio.create_task(governor.run()))
    pool: WarmPool | None = None
    if sandbox:
        # Each call blocks a thread while Docker or the sandbox's shell answers: enough of them for
        # every activity the worker runs at once, and the warm pool's starts.
        threads = config.sandbox_max_activities + config.sandbox_max_provisions + 16
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="sandbox"))
        sandboxes = DockerSandboxes(host_id, namespace=client.namespace)
        # The sessions' containers an earlier process left: counted against the host's limit, and
        # released by the reaper where their sessions have closed meanwhile.
        sandboxes.owners.update(await asyncio.to_thread(sandboxes.find_owners))
        pool = WarmPool(sandboxes, warm_pool, max_size=config.sandbox_warm_pool_max)
        activities = SandboxActivities(sandboxes, pool=pool)
        reaper = Reaper(
            client,
            sandboxes,
            keep=pool.held,
            memory=activities.memory,
            release=activities.release,
            quiet=pool.quiet,
            defer_s=config.sandbox_release_defer_s,
        )
        workers += sandbox_workers(client, activities, config=config)
        tasks += [asyncio.create_task(reaper.run()), asyncio.create_task(pool.run())]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        # What is alive now (modules, schemas, the SDK) lives as long as the process: out of the
        # collector's sight, so its full collections stop walking ~300,000 objects each time.
        gc.collect()
        gc.freeze()
        log.info("worker started", address=config.temporal_address, queues=[w.task_queue for w in workers])
        await stop.wait()
        for task in tasks:
            task.cancel()
    if pool is not None:
        await asyncio.to_thread(pool.drain)
        pool.sandboxes.close()  # shells, and the egress proxy with its firewall rule
    if mcp is not None:
        await mcp.close()  # stdio MCP servers end with the worker
    await asyncio.to_thread(flush_traces)
    if harness:
        await model.publisher.close()
        if anthropic_client is not None:
            await anthropic_client.close()  # its connections (aiohttp warns of an unclosed session)
    log.info("worker stopped")


def main() -> None:
    try:
        config = settings()
    except SettingsError as e:  # before logging is configured: it reads the settings too
        print(f"cannot start: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--harness", action="store_true", help="run the harness worker")
    parser.add_argument("--sandbox", action="store_true", help="run the sandbox worker")
    parser.add_argument(
        "--host-id",
        default=config.sandbox_host_id or socket.gethostname(),
        help="this sandbox host's id (queue suffix; env SANDBOX_HOST_ID; default the hostname)",
    )
    parser.add_argument(
        "--warm-pool",
        type=int,
        default=config.sandbox_warm_pool,
        help="pre-started sandboxes of the default spec (0 disables; env SANDBOX_WARM_POOL)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=config.metrics_port,
        help="serve SDK metrics for Prometheus on this port (env DA_METRICS_PORT; off by default)",
    )
    parser.add_argument(
        "--agents",
        default=config.agents_dir,
        help="folder of agent files that sessions may name with agent_ref (env DA_AGENTS_DIR; default agents/)",
    )
    parser.add_argument(
        "--no-register-search-attributes",
        action="store_true",
        help="do not register missing search attributes (where operators manage them); sessions skip those",
    )
    args = parser.parse_args()
    both = not args.harness and not args.sandbox
    configure_logging(config=config)
    try:
        asyncio.run(
            run(
                args.harness or both,
                args.sandbox or both,
                args.host_id,
                args.warm_pool,
                args.metrics_port,
                args.agents,
                not args.no_register_search_attributes,
                config,
            )
        )
    except (CodecKeyError, VaultError) as e:  # misconfigured: say so and stop, before taking any work
        log.error("cannot start", error=str(e))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
