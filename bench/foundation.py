"""Foundation benchmarks: prints a table of figures and writes bench/results/foundation.json.

    .venv/bin/python -m bench.foundation [--sessions 20] [--turns 30] [--server tuned|untuned|both]
                                         [--latency-only]

Everything is real and local: a Temporal dev server (SQLite in a temporary file), Docker, the scripted model on
loopback (answers in about a millisecond, so the figures are the harness's own costs).

- start → first model request: from the client's start_workflow call to the scripted server
  receiving the first Messages request (the server timestamps arrival). Lazy (our default: no
  container first) against eager (`sandbox.eager: true`, a cold container before the first call).
- turn overhead, no tool: from a `send_message` update to the model request it causes.
- turn with `bash true`: the interval between consecutive model requests in a tool loop
  (model answer → workflow → execute on the host queue → workflow → next model call).
- execute activity: scheduled → completed in the history, for `bash true`.
- harness time per tool turn, excluding the tool: the interval between consecutive model
  requests of a tool loop less the tool's own time. For `load_skill` (it runs in the workflow)
  nothing is taken off: the whole interval is the harness's (with the scripted model's own
  answer, well under a millisecond). For `bash true`, the `execute` activity's own time
  (started → completed in the history) is taken off.
- start → first model request with the harness worker in the starting process: as the first
  figure, with a harness worker sharing the client (as `da serve --harness` runs one), without
  and with eager workflow start.
- harness worker CPU: user + system seconds of its process over the one-shot sessions and over
  each tool loop, per session and per model turn: what the harness itself burns, which a loaded
  machine does not inflate as it does the wall-clock figures.
- breakdowns (printed, and in the JSON): the medians of the segments between the history's
  event timestamps (bench/breakdown.py) for the first request and for each kind of tool turn.
- --server both: the latency figures on the tuned dev server (connection.DEV_SERVER_TUNING),
  then on the dev server as it ships; the difference is the server's, not ours.
- container start: `docker run` of a hardened sandbox, and until its persistent shell answers;
  with runc and, where registered, gVisor (runsc).
- exec in the shell: `true` through the persistent shell, directly (no Temporal).
- history: bytes and events per turn of the tool loop.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import docker
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from bench import breakdown
from bench.common import WORKER_PIDS, add_scenario, arrivals, local_stack, report, summary, wait_arrivals
from bench.scale import cpu_s
from durable_agents.activities.model import ModelActivities
from durable_agents.agent_files import load_agent
from durable_agents.client import send_message, start_agent_session, wait_until_settled
from durable_agents.contracts import EXECUTE, PROVISION_AND_EXECUTE, SandboxSpec
from durable_agents.logs import configure_logging
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from durable_agents.worker import harness_worker

ROOT = Path(__file__).resolve().parent.parent


async def bench_start(
    client: Client,
    server: ScriptedModelServer,
    sessions: int,
    eager: bool = False,
    segments: list[list[tuple[str, float]]] | None = None,
    **start: Any,
) -> list[float]:
    """segments: where to put each session's breakdown; start: more options of start_agent_session."""
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    if eager:  # the coupled design: a container before the first model call
        agent = agent.model_copy(update={"sandbox": agent.sandbox.model_copy(update={"eager": True})})
    out = []
    for _ in range(sessions):
        marker = add_scenario(server, [Step(text="ok")])
        t0 = time.time()
        handle = await start_agent_session(client, agent, f"hi {marker}", one_shot=True, **start)
        (first,) = (await wait_arrivals(server, marker, 1))[:1]
        out.append(first - t0)
        await handle.result()
        if segments is not None:
            segments.append(breakdown.first_request(await handle.fetch_history(), t0, first))
    return out


def harness_cpu_s() -> float:
    """CPU seconds (user + system) the local stack's harness worker process has used so far."""
    return cpu_s([WORKER_PIDS["harness"]])


async def bench_start_in_process(client: Client, server: ScriptedModelServer, sessions: int) -> dict[str, Any]:
    """Start → first model request with a harness worker in this process, sharing the client, on
    a queue of its own: a normal start, then an eager one (the server hands the first workflow
    task back in the start call's answer)."""
    queue = f"bench-in-process-{uuid.uuid4().hex[:6]}"
    model = ModelActivities(client, anthropic.AsyncAnthropic(api_key="bench", base_url=server.url, max_retries=0))
    out: dict[str, Any] = {}
    async with harness_worker(client, model, task_queue=queue):
        await bench_start(client, server, 3, task_queue=queue)  # warm up
        for name, eager in (("normal", False), ("eager", True)):
            segments: list[list[tuple[str, float]]] = []
            times = await bench_start(client, server, sessions, segments=segments, task_queue=queue, eager_start=eager)
            out[name] = {"times": times, "breakdown": breakdown.median_segments(segments)}
    return out


async def bench_send(client: Client, server: ScriptedModelServer, sends: int) -> list[float]:
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    marker = add_scenario(server, [Step(text=f"answer {i}") for i in range(sends + 1)])
    handle = await start_agent_session(client, agent, f"chat {marker}")
    await wait_until_settled(client, handle.id)
    out = []
    for i in range(sends):
        t0 = time.time()
        offset = await send_message(client, handle.id, f"message {i}")
        got = await wait_arrivals(server, marker, i + 2)
        out.append(got[-1] - t0)
        await wait_until_settled(client, handle.id, after_event=offset)
    await handle.signal("end_session")
    await handle.result()
    return out


async def bench_tool_loop(client: Client, server: ScriptedModelServer, turns: int) -> dict[str, Any]:
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    agent = agent.model_copy(update={"limits": agent.limits.model_copy(update={"max_turns": turns + 5})})
    # (each command differs, or the loop guard would refuse the third identical call)
    steps = [Step(tool_use=ToolUse(name="bash", input={"command": f"true # {i}"})) for i in range(turns)]
    marker = add_scenario(server, [*steps, Step(text="done")])
    cpu = harness_cpu_s()
    handle = await start_agent_session(client, agent, f"loop {marker}", one_shot=True)
    await handle.result()
    cpu = harness_cpu_s() - cpu
    got = arrivals(server, marker)

    gaps = [b - a for a, b in zip(got[1:-1], got[2:], strict=False)]  # skip the turn that provisions
    history = await handle.fetch_history()
    # The turn skipped above is the first tool call: `provision_and_execute` where the session's
    # first call brings its provisioning with it, else a provision and the first `execute`.
    first = 0 if breakdown.activity_time(history, PROVISION_AND_EXECUTE) else 1
    own = breakdown.activity_time(history, EXECUTE)[first:]
    scheduled: dict[int, Any] = {}
    execute_s = []
    total_bytes = sum(e.ByteSize() for e in history.events)

    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = e
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            s = scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
            if s.activity_task_scheduled_event_attributes.activity_type.name == "execute":
                execute_s.append(e.event_time.ToDatetime().timestamp() - s.event_time.ToDatetime().timestamp())
    return {
        "cpu_per_turn": cpu / len(got),
        "gaps": gaps,
        "harness": [gap - tool for gap, tool in zip(gaps, own, strict=True)],
        "breakdown": breakdown.median_segments(breakdown.between_requests(history, got[1:])),
        "execute": execute_s[first:],
        "history_bytes": total_bytes,
        "history_events": len(history.events),
        "turns": turns + 1,
    }


async def bench_skill_loop(client: Client, server: ScriptedModelServer, turns: int) -> dict[str, Any]:
    """A tool loop of `load_skill` calls: a tool that runs in the workflow, so the interval between
    consecutive model requests is all the harness's."""
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    limits = agent.limits.model_copy(update={"max_turns": turns + 5, "loop_limit": min(100, turns + 5)})
    agent = agent.model_copy(update={"limits": limits})
    skill = agent.skills[0].name
    steps = [Step(tool_use=ToolUse(name="load_skill", input={"name": skill})) for _ in range(turns)]
    marker = add_scenario(server, [*steps, Step(text="done")])
    cpu = harness_cpu_s()
    handle = await start_agent_session(client, agent, f"skills {marker}", one_shot=True)
    await handle.result()
    cpu = harness_cpu_s() - cpu
    got = arrivals(server, marker)
    history = await handle.fetch_history()
    return {
        "cpu_per_turn": cpu / len(got),  # the harness worker's, for each model turn with what it leads to
        "gaps": [b - a for a, b in zip(got, got[1:], strict=False)],
        "breakdown": breakdown.median_segments(breakdown.between_requests(history, got)),
    }


async def bench_latency(
    client: Client, server: ScriptedModelServer, args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """The latency figures on one server (`label`): rows for the table and the breakdowns."""
    await bench_start(client, server, 3)  # warm up
    first: list[list[tuple[str, float]]] = []
    cpu = harness_cpu_s()
    lazy = await bench_start(client, server, args.sessions, segments=first)
    cpu_per_session = (harness_cpu_s() - cpu) / args.sessions
    skills = await bench_skill_loop(client, server, args.turns)
    loop = await bench_tool_loop(client, server, args.turns)
    in_process = await bench_start_in_process(client, server, args.sessions)
    rows = [
        summary(f"[{label}] start → first model request (lazy sandbox)", lazy),
        summary(f"[{label}] … harness worker in the starting process", in_process["normal"]["times"]),
        summary(f"[{label}] … and eager workflow start", in_process["eager"]["times"]),
        summary(f"[{label}] turn overhead, no tool (send → model request)", await bench_send(client, server, 20)),
        summary(f"[{label}] harness time per tool turn: load_skill (in the workflow)", skills["gaps"]),
        summary(f"[{label}] turn with `bash true` (model request → next)", loop["gaps"]),
        summary(f"[{label}] harness time per tool turn: `bash true` less execute's own time", loop["harness"]),
        summary(f"[{label}] execute activity, `bash true` (history)", loop["execute"]),
        summary(f"[{label}] floor: empty activity on another queue", await bench_floor(client, args.turns)),
    ]
    breakdowns = {
        "first request": breakdown.median_segments(first),
        "first request, in-process worker, eager start": in_process["eager"]["breakdown"],
        "tool turn, load_skill": skills["breakdown"],
        "tool turn, bash true": loop["breakdown"],
    }
    measured = {
        "first request": rows[0]["p50"],
        "first request, in-process worker, eager start": rows[2]["p50"],
        "tool turn, load_skill": rows[4]["p50"],
        "tool turn, bash true": rows[5]["p50"],
    }
    for name, segs in breakdowns.items():
        breakdown.print_breakdown(f"[{label}] {name}", segs, measured[name])
    cpu = {
        "one-shot session (start, first request, answer, end)": round(cpu_per_session * 1000, 1),
        "model turn with load_skill": round(skills["cpu_per_turn"] * 1000, 1),
        "model turn with `bash true`": round(loop["cpu_per_turn"] * 1000, 1),
    }
    print(f"\n[{label}] harness worker CPU ms (user + system, /proc; 10 ms ticks over the whole loop)")
    for name, ms in cpu.items():
        print(f"  {name:<55} {ms:>8.1f}")
    return {"rows": rows, "breakdowns": breakdowns, "loop": loop, "cpu_ms": cpu}


@activity.defn(name="bench_noop")
async def bench_noop() -> None:
    return None


@workflow.defn(name="BenchFloor", sandboxed=False)
class BenchFloor:
    """The floor: a workflow that runs empty activities back to back, on another task queue."""

    @workflow.run
    async def run(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = workflow.time()
            await workflow.execute_activity(
                bench_noop, task_queue=FLOOR_ACTIVITY_QUEUE, start_to_close_timeout=timedelta(seconds=30)
            )
            out.append(workflow.time() - t0)
        return out


FLOOR_ACTIVITY_QUEUE = "bench-floor-activities"


async def bench_floor(client: Client, n: int) -> list[float]:
    async with (
        Worker(client, task_queue="bench-floor", workflows=[BenchFloor]),
        Worker(client, task_queue=FLOOR_ACTIVITY_QUEUE, activities=[bench_noop]),
    ):
        result: list[float] = await client.execute_workflow(
            BenchFloor.run, n, id=f"floor-{uuid.uuid4().hex[:6]}", task_queue="bench-floor"
        )
    return result


def bench_containers(runtime: str | None, n: int) -> tuple[list[float], list[float], list[float]]:
    sandboxes = DockerSandboxes(f"bench-{uuid.uuid4().hex[:6]}")
    runs, ready, execs = [], [], []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            c = sandboxes.create("bench", SandboxSpec(runtime=runtime))  # type: ignore[arg-type]
            runs.append(time.perf_counter() - t0)
            sandboxes.run(c.id or "", f"warm{i}", "true", 1000, 30)
            ready.append(time.perf_counter() - t0)
            if i == 0:
                for j in range(100):
                    t1 = time.perf_counter()
                    sandboxes.run(c.id or "", f"x{j}", "true", 1000, 30)
                    execs.append(time.perf_counter() - t1)
            sandboxes.destroy(c.id or "")
    finally:
        sandboxes.close()
    return runs, ready, execs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--server", choices=["tuned", "untuned", "both"], default="tuned")
    parser.add_argument("--latency-only", action="store_true", help="no eager sandbox, containers or shell figures")
    args = parser.parse_args()
    configure_logging(level="WARNING")  # the in-process harness worker logs as the worker processes do

    rows: list[dict[str, Any]] = []
    breakdowns: dict[str, Any] = {}
    cpu_ms: dict[str, Any] = {}
    loop: dict[str, Any] = {}
    eager_rows: list[dict[str, Any]] = []
    for label in ("tuned", "untuned") if args.server == "both" else (args.server,):
        async with local_stack(warm_pool=0, tuned=label == "tuned") as (client, server):
            got = await bench_latency(client, server, args, label)
            rows += got["rows"]
            breakdowns[label] = got["breakdowns"]
            cpu_ms[label] = got["cpu_ms"]
            loop = loop or got["loop"]
            if not args.latency_only and not eager_rows:
                eager = await bench_start(client, server, args.sessions, eager=True)
                eager_rows.append(summary(f"[{label}] start → first model request (eager sandbox)", eager))
    rows += eager_rows
    extra: dict[str, Any] = {"breakdowns": breakdowns, "harness_cpu_ms": cpu_ms}
    if not args.latency_only:
        runs, ready, execs = await asyncio.to_thread(bench_containers, None, args.containers)
        rows.append(summary("container start, runc (docker run)", runs))
        rows.append(summary("container start → shell ready, runc", ready))
        rows.append(summary("exec `true` in the persistent shell", execs))
        if "runsc" in (docker.from_env().info().get("Runtimes") or {}):
            runs, ready, _ = await asyncio.to_thread(bench_containers, "runsc", args.containers)
            rows.append(summary("container start, gVisor runsc (docker run)", runs))
            rows.append(summary("container start → shell ready, runsc", ready))

    history = {
        "turns": loop["turns"],
        "bytes_per_turn": round(loop["history_bytes"] / loop["turns"]),
        "events_per_turn": round(loop["history_events"] / loop["turns"], 2),
        "total_bytes": loop["history_bytes"],
    }
    extra["history"] = history
    if eager_rows:
        lazy = rows[0]
        extra["ratios"] = {
            "first_request_lazy_vs_eager_p50": round(lazy["p50"] / eager_rows[0]["p50"], 3),
            "first_request_lazy_vs_eager_p95": round(lazy["p95"] / eager_rows[0]["p95"], 3),
        }
    report("foundation", rows, extra)
    if "ratios" in extra:
        ratios = extra["ratios"]
        print(
            f"lazy provisioning: time to first model request is {1 - ratios['first_request_lazy_vs_eager_p50']:.0%} "
            f"lower at p50 and {1 - ratios['first_request_lazy_vs_eager_p95']:.0%} lower at p95 than eager"
        )
    print(
        f"history of a {history['turns']}-turn tool loop: {history['bytes_per_turn']} bytes and "
        f"{history['events_per_turn']} events per turn ({history['total_bytes']} bytes in all)"
    )


if __name__ == "__main__":
    asyncio.run(main())
