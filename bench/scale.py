"""Many sessions at once on one harness worker and one sandbox worker, on the dev server and on
the cluster (Temporal on PostgreSQL, scripts/cluster.sh), side by side in one run.

    .venv/bin/python -m bench.scale [--engine dev|cluster|both] [--sessions 50,200,500] [--latency-ms 300]

Each session makes 3 model calls (two cheap tool turns that run inside the workflow, then the
answer) against the scripted model answering after --latency-ms. For each engine and N we report
the time until all N have answered, sessions per second, per-session p50 / p95, events lost (every
session must have 3 model turns and a gap-free log), CPU seconds per model turn of the harness
worker, the sandbox worker and the server (Temporal, and PostgreSQL for the cluster) read from
/proc, and peak RSS. The floor runs on the same server right after each wave: N workflows of 3
empty activities (each waiting the same latency) on a worker of their own (bench/floor.py), so
the harness's cost shows as a ratio to Temporal's own: CPU per model turn over the floor's CPU per
activity (target ≤ 1.5), throughput over the floor's (target ≥ 70 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench.common import DA_WORKER, ROOT, add_scenario, pct, peak_rss_mb
from bench.floor import FLOOR_QUEUE, FloorInput, FloorWorkflow
from durable_agents import session_log
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.connection import DEV_SERVER_TUNING, connect
from durable_agents.contracts import SEARCH_ATTRIBUTE_NAMES, Skill
from durable_agents.settings import Settings
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse

TURNS = 3
TICK = os.sysconf("SC_CLK_TCK")


# --- processes and what they cost (/proc) ------------------------------------------------------


def tree(pid: int) -> list[int]:
    """pid and all its descendants (PostgreSQL's backends are children of its postmaster)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (those still alive)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


@dataclass
class Engine:
    name: str
    address: str
    server_pids: Callable[[], dict[str, list[int]]]  # role ("temporal", "postgres") -> processes


@contextlib.contextmanager
def dev_engine(port: int) -> Iterator[Engine]:
    """`temporal server start-dev` on SQLite in a file, tuned as `make up` runs it."""
    where = Path(ROOT / ".data" / f"bench-dev-{uuid.uuid4().hex[:6]}")
    where.mkdir(parents=True)
    attrs = [a for name in SEARCH_ATTRIBUTE_NAMES for a in ("--search-attribute", f"{name}=Keyword")]
    argv = [str(ROOT / ".bin" / "temporal"), "server", "start-dev", "--db-filename", str(where / "bench.db"),
            "--port", str(port), "--headless", "--log-level", "error", *attrs, *DEV_SERVER_TUNING]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(where / "server.log", "wb"))  # noqa: SIM115
    try:
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield Engine("dev", f"127.0.0.1:{port}", lambda: {"temporal": [server.pid]})
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(where, ignore_errors=True)


@contextlib.contextmanager
def cluster_engine(port: int, shards: int) -> Iterator[Engine]:
    """scripts/cluster.sh on side ports and a fresh data directory (PostgreSQL as it ships)."""
    data = ROOT / ".data" / f"bench-cluster-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "DA_CLUSTER_PORT": str(port), "DA_CLUSTER_DATA": str(data), "DA_CLUSTER_UI": "0",
           "DA_CLUSTER_SHARDS": str(shards), "TEMPORAL_NAMESPACE": "default"}  # fmt: skip
    cluster = ["bash", str(ROOT / "scripts" / "cluster.sh")]
    began = time.perf_counter()
    subprocess.run([*cluster, "up"], cwd=ROOT, env=env, check=True)
    print(f"cluster: up in {time.perf_counter() - began:.1f} s", flush=True)

    def pids() -> dict[str, list[int]]:
        server = int((data / "pids" / "server-0.pid").read_text())
        postmaster = int((data / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
        return {"temporal": [server], "postgres": tree(postmaster)}

    try:
        yield Engine("cluster", f"127.0.0.1:{port}", pids)
    finally:
        subprocess.run([*cluster, "down"], cwd=ROOT, env=env, check=False)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def worker_processes(
    address: str, scripted: ScriptedModelServer, host_id: str | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[dict[str, int]]:
    """The harness worker, the sandbox worker and the floor's worker, as separate processes."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "ANTHROPIC_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": scripted.url,
        "SANDBOX_HOST_ID": host_id or f"bench-{uuid.uuid4().hex[:6]}",
        "SANDBOX_WARM_POOL": "0",
        "LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    argvs = {
        "harness": [DA_WORKER, "--harness"],
        "sandbox": [DA_WORKER, "--sandbox"],
        "floor": [str(ROOT / ".venv" / "bin" / "python"), "-m", "bench.floor", "--address", address],
    }
    procs = {role: subprocess.Popen(argv, cwd=ROOT, env=env) for role, argv in argvs.items()}
    try:
        time.sleep(3)  # they poll
        yield {role: p.pid for role, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=30)


# --- one wave: N sessions, then N floor workflows ------------------------------------------------


class Meter:
    """CPU seconds spent by each role's processes between start() and stop()."""

    def __init__(self, pids: Callable[[], dict[str, list[int]]]) -> None:
        self.pids = pids

    def read(self) -> dict[str, float]:
        return {role: cpu_s(p) for role, p in self.pids().items()}

    def start(self) -> None:
        self.before = self.read()

    def stop(self) -> dict[str, float]:
        after = self.read()
        return {role: after[role] - self.before.get(role, 0.0) for role in after}


async def one_shot_wave(
    client: Client, scripted: ScriptedModelServer, marker: str, n: int, latency_ms: int
) -> tuple[list[tuple[str, float]], float]:
    """N one-shot coder sessions of the scenario `marker` (its model answering after latency_ms)
    started at once: each one's (id, seconds to its answer), and the seconds until all answered."""
    scripted.model.scenarios[0].delay_ms = latency_ms
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
    return list(done), time.perf_counter() - began


async def sessions_wave(client: Client, scripted: ScriptedModelServer, n: int, latency_ms: int) -> dict[str, Any]:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="load_skill", input={"name": "tick"})),
            Step(tool_use=ToolUse(name="load_skill", input={"name": "tick", "copy_files": True})),
            Step(text="done"),
        ],
    )
    done, total = await one_shot_wave(client, scripted, marker, n, latency_ms)
    return {"all_done_s": total, "each": [d for _, d in done], "sessions": [session_id for session_id, _ in done]}


async def events_lost(client: Client, sessions: list[str]) -> int:
    """Model turns missing and logs with gaps, read once the wave's CPU is counted (each read of a
    closed session replays its history on the harness worker: a check of ours, not a turn's cost)."""
    lost = 0
    for session_id in sessions:
        events = await session_log.read_events(client, session_id)
        turns = sum(1 for e in events if e.kind == "model_turn")
        gapless = [e.offset for e in events] == list(range(len(events)))
        lost += (TURNS - turns) + (0 if gapless else 1)
    return lost


async def floor_wave(client: Client, n: int, latency_ms: int) -> dict[str, Any]:
    async def one(i: int) -> float:
        t0 = time.perf_counter()
        steps = await client.execute_workflow(
            FloorWorkflow.run,
            FloorInput(steps=TURNS, delay_ms=latency_ms),
            id=f"floor-{uuid.uuid4().hex[:10]}",
            task_queue=FLOOR_QUEUE,
        )
        assert steps == TURNS
        return time.perf_counter() - t0

    began = time.perf_counter()
    each = await asyncio.gather(*(one(i) for i in range(n)))
    return {"all_done_s": time.perf_counter() - began, "each": list(each), "events_lost": 0}


def row(
    engine: str, kind: str, n: int, wave: dict[str, Any], cpu: dict[str, float], rss: dict[str, float]
) -> dict[str, Any]:
    turns = n * TURNS
    return {
        "engine": engine,
        "kind": kind,
        "sessions": n,
        "all_done_s": round(wave["all_done_s"], 2),
        "sessions_per_s": round(n / wave["all_done_s"], 1),
        "p50_s": round(pct(wave["each"], 50), 2),
        "p95_s": round(pct(wave["each"], 95), 2),
        "events_lost": wave["events_lost"],
        # CPU milliseconds per model turn (per activity, for the floor)
        "cpu_ms_per_turn": {role: round(1000 * s / turns, 2) for role, s in cpu.items()},
        "peak_rss_mb": {role: round(mb, 1) for role, mb in rss.items()},
    }


class Profile:
    """py-spy sampling one process (the harness worker) for the length of a wave: where its CPU goes."""

    def __init__(self, pid: int, name: str) -> None:
        self.raw = ROOT / "bench" / "results" / f"{name}.raw"
        self.raw.parent.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")
        if spy is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        argv = [
            spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
            "--gil",  # only the thread holding the GIL: where Python's CPU goes, not who waits for it
            "-o",
            str(self.raw),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> str:
        """The hot spots: functions by samples on the stack (inclusive) and on top (self)."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        total = 0
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = [
                f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")" for f in stack.split(";")
            ]
            total += n
            for f in set(frames):
                inclusive[f] = inclusive.get(f, 0) + n
            own[frames[-1]] = own.get(frames[-1], 0) + n
        top = lambda d: sorted(d.items(), key=lambda kv: -kv[1])[:25]  # noqa: E731
        lines = [f"{total} samples"]
        lines += ["", "inclusive:"] + [f"{100 * v / total:5.1f}%  {k}" for k, v in top(inclusive)]
        lines += ["", "self:"] + [f"{100 * v / total:5.1f}%  {k}" for k, v in top(own)]
        text = "\n".join(lines)
        self.raw.with_suffix(".txt").write_text(text)
        return text


async def run_engine(engine: Engine, sizes: list[int], latency_ms: int, profile: bool = False) -> list[dict[str, Any]]:
    scripted = ScriptedModelServer([]).start()
    rows: list[dict[str, Any]] = []
    try:
        with worker_processes(engine.address, scripted) as workers:

            def pids() -> dict[str, list[int]]:
                return {**{role: [pid] for role, pid in workers.items()}, **engine.server_pids()}

            meter = Meter(pids)
            client = await connect(engine.address, "default")
            floor_client = await Client.connect(engine.address, namespace="default")
            await sessions_wave(client, scripted, 2, latency_ms)  # warm: imports, caches, first tasks
            await floor_wave(floor_client, 2, latency_ms)
            for n in sizes:
                spy = Profile(workers["harness"], f"scale-profile-{engine.name}-{n}") if profile else None
                meter.start()
                wave = await sessions_wave(client, scripted, n, latency_ms)
                cpu = meter.stop()
                if spy is not None:
                    print(spy.stop().split("\nself:")[0], flush=True)
                wave["events_lost"] = await events_lost(client, wave["sessions"])
                rss = {role: max(peak_rss_mb(p) for p in ps) for role, ps in pids().items() if role != "floor"}
                rows.append(row(engine.name, "sessions", n, wave, {k: v for k, v in cpu.items() if k != "floor"}, rss))
                print_row(rows[-1])
                meter.start()
                wave = await floor_wave(floor_client, n, latency_ms)
                cpu = meter.stop()
                keep = ("floor", "temporal", "postgres")
                rss = {role: max(peak_rss_mb(p) for p in ps) for role, ps in pids().items() if role in keep}
                rows.append(row(engine.name, "floor", n, wave, {k: v for k, v in cpu.items() if k in keep}, rss))
                print_row(rows[-1])
    finally:
        scripted.stop()
    return rows


# --- the burst: one tool call each, sandboxed or not (issue 20) ----------------------------------


class ContainerCounter:
    """How many containers one sandbox host runs at most while a wave runs: counted once, then
    followed through Docker's event stream (each `start` and `die`) in a thread. Not by listing
    containers over and over: with a hundred containers a list costs dockerd ~16 ms of CPU, and ten
    a second would take ~8% of this machine from the burst it measures."""

    def __init__(self, host_id: str) -> None:
        import docker  # noqa: PLC0415 - only the burst needs Docker

        self.api = docker.from_env().api
        self.filters = {"label": [f"durable-agents.host={host_id}"]}
        self.peak = 0
        self._events: Any = None

    def count(self) -> int:
        return len(self.api.containers(quiet=True, filters=self.filters))

    def alive(self, ids: set[str]) -> int:
        """How many of these containers still exist (running or not)."""
        return len(ids & {c["Id"] for c in self.api.containers(all=True, quiet=True, filters=self.filters)})

    def run(self, running: int) -> None:
        with contextlib.suppress(Exception):  # (closing the stream ends the loop with an error)
            for event in self._events:
                running += 1 if event.get("status") == "start" else -1
                self.peak = max(self.peak, running)

    def __enter__(self) -> ContainerCounter:
        import threading  # noqa: PLC0415

        filters = {**self.filters, "type": "container", "event": ["start", "die"]}
        self._events = self.api.events(decode=True, filters=filters)  # from now: nothing is missed
        self.peak = running = self.count()
        self.thread = threading.Thread(target=self.run, args=(running,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._events.close()
        self.thread.join(timeout=5)


async def burst_wave(
    client: Client, scripted: ScriptedModelServer, n: int, latency_ms: int, sandboxed: bool
) -> dict[str, Any]:
    """N one-shot sessions started at once, each making one tool call then answering: `bash echo hi`
    (sandboxed) or `load_skill` (answered inside the workflow, no sandbox)."""
    tool = (
        ToolUse(name="bash", input={"command": "echo hi"})
        if sandboxed
        else ToolUse(name="load_skill", input={"name": "tick"})
    )
    marker = add_scenario(scripted, [Step(tool_use=tool), Step(text="done")])
    done, total = await one_shot_wave(client, scripted, marker, n, latency_ms)
    lost, tool_s, pooled, created, containers = 0, [], 0, 0, set()
    for session_id, _ in done:
        events = await session_log.read_events(client, session_id)
        calls = [e for e in events if e.kind == "model_turn" and e.tool_calls]
        results = [e for e in events if e.kind == "tool_result"]
        gapless = [e.offset for e in events] == list(range(len(events)))
        ok = len(calls) == 1 and len(results) == 1 and results[0].tool_result.output.strip() in ("hi", "tock")
        lost += 0 if ok and gapless else 1
        if calls and results:
            tool_s.append((results[0].at - calls[0].at).total_seconds())
        for e in events:
            if e.kind == "sandbox_provisioned":
                pooled += e.sandbox.from_pool
                created += not e.sandbox.from_pool
                containers.add(e.sandbox.sandbox_id)
    ended_at = time.perf_counter()
    phases = await history_phases(client, [session_id for session_id, _ in done])
    return {
        "all_done_s": total,
        "each": [d for _, d in done],
        "tool_s": tool_s,
        "phases": phases,
        "events_lost": lost,
        "from_pool": pooled,
        "created": created,
        "containers": containers,
        "ended_at": ended_at,
    }


async def history_phases(client: Client, session_ids: list[str]) -> dict[str, float]:
    """Where a session's time went, from its history's timestamps (medians over the sessions, in
    ms): each activity type's wait for a worker (scheduled → started) and its run (started →
    completed), and the workflow tasks' (scheduled → started → completed)."""
    from temporalio.api.enums.v1 import EventType  # noqa: PLC0415

    samples: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds * 1000)

    for session_id in session_ids:
        history = await client.get_workflow_handle(session_id).fetch_history()
        at = {e.event_id: e for e in history.events}
        for e in history.events:
            t = e.event_time.ToDatetime().timestamp()
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                sched = at[e.activity_task_started_event_attributes.scheduled_event_id]
                kind = sched.activity_task_scheduled_event_attributes.activity_type.name
                add(f"{kind}: wait", t - sched.event_time.ToDatetime().timestamp())
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                attrs = e.activity_task_completed_event_attributes
                kind = at[attrs.scheduled_event_id].activity_task_scheduled_event_attributes.activity_type.name
                add(f"{kind}: run", t - at[attrs.started_event_id].event_time.ToDatetime().timestamp())
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                sched = at[e.workflow_task_started_event_attributes.scheduled_event_id]
                add("workflow task: wait", t - sched.event_time.ToDatetime().timestamp())
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                started = at[e.workflow_task_completed_event_attributes.started_event_id]
                add("workflow task: run", t - started.event_time.ToDatetime().timestamp())
        count = sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        samples.setdefault("workflow tasks per session", []).append(count)
        samples.setdefault("history events per session", []).append(len(history.events))
    return {name: round(pct(values, 50), 1) for name, values in sorted(samples.items())}


async def wait_containers_gone(counter: ContainerCounter, wave: dict[str, Any], within_s: float = 180) -> float:
    """Seconds from the wave's last answer until every container its sessions used is removed."""
    while time.perf_counter() - wave["ended_at"] < within_s:
        if not await asyncio.to_thread(counter.alive, wave["containers"]):
            break
        await asyncio.sleep(0.2)
    return time.perf_counter() - wave["ended_at"]


def pids_of(name: str) -> list[int]:
    out = subprocess.run(["pidof", name], capture_output=True, text=True, check=False).stdout.split()
    return [int(p) for p in out]


async def run_burst(
    engine: Engine, sizes: list[int], latency_ms: int, pool_env: dict[str, str], repeat: int = 1
) -> list[dict[str, Any]]:
    scripted = ScriptedModelServer([]).start()
    host_id = f"bench-{uuid.uuid4().hex[:6]}"
    rows: list[dict[str, Any]] = []
    try:
        with worker_processes(engine.address, scripted, host_id, pool_env) as workers:

            def pids() -> dict[str, list[int]]:
                docker_pids = pids_of("dockerd") + pids_of("containerd")
                return {"harness": [workers["harness"]], "sandbox": [workers["sandbox"]], "docker": docker_pids,
                        **engine.server_pids()}  # fmt: skip

            meter = Meter(pids)
            client = await connect(engine.address, "default")
            counter = ContainerCounter(host_id)
            await burst_wave(client, scripted, 2, latency_ms, sandboxed=True)  # warm: imports, image cache
            await burst_wave(client, scripted, 2, latency_ms, sandboxed=False)
            pool = await wait_pool(counter)
            for n in sizes:
                # With --repeat 2, the sandboxed burst again: the warm pool has sized itself to the first.
                for sandboxed in (False, *([True] * repeat)):
                    pool = await wait_pool(counter)
                    meter.start()
                    with counter:
                        wave = await burst_wave(client, scripted, n, latency_ms, sandboxed)
                    cpu = meter.stop()
                    cleanup = await wait_containers_gone(counter, wave) if sandboxed else 0.0
                    rows.append(burst_row(engine.name, n, sandboxed, wave, cpu, counter.peak, pool, cleanup))
                    if sandboxed and any(r["kind"] == "sandboxed" and r["sessions"] == n for r in rows[:-1]):
                        rows[-1]["kind"] = "sandboxed, again"
                    print_burst_row(rows[-1])
    finally:
        scripted.stop()
    return rows


async def wait_pool(counter: ContainerCounter, settle_s: float = 2.0, within_s: float = 120) -> int:
    """The warm pool's size once it has stopped changing (it refills after a wave)."""
    began, last, steady = time.perf_counter(), -1, time.perf_counter()
    while time.perf_counter() - began < within_s:
        now = await asyncio.to_thread(counter.count)
        if now != last:
            last, steady = now, time.perf_counter()
        elif time.perf_counter() - steady >= settle_s:
            break
        await asyncio.sleep(0.2)
    return last


def burst_row(
    engine: str, n: int, sandboxed: bool, wave: dict[str, Any], cpu: dict[str, float], peak: int, pool: int,
    cleanup_s: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "engine": engine,
        "kind": "sandboxed" if sandboxed else "no sandbox",  # (a repeated burst: "sandboxed, again")
        "sessions": n,
        "all_done_s": round(wave["all_done_s"], 2),
        "p50_s": round(pct(wave["each"], 50), 2),
        "p95_s": round(pct(wave["each"], 95), 2),
        "tool_p50_s": round(pct(wave["tool_s"], 50), 3) if wave["tool_s"] else None,
        "tool_p95_s": round(pct(wave["tool_s"], 95), 3) if wave["tool_s"] else None,
        "created": wave["created"],
        "from_pool": wave["from_pool"],
        "pool_before": pool,
        "peak_containers": peak,
        "cleanup_s": round(cleanup_s, 1),
        "events_lost": wave["events_lost"],
        "cpu_s_per_session": {role: round(s / n, 4) for role, s in cpu.items()},
        "phases_p50_ms": wave["phases"],
    }


def print_burst_row(r: dict[str, Any]) -> None:
    cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_s_per_session"].items())
    print(
        f"{r['engine']:>7} {r['kind']:>10} {r['sessions']:>4}: all done {r['all_done_s']} s, "
        f"p50 {r['p50_s']} / p95 {r['p95_s']} s, tool p50 {r['tool_p50_s']} / p95 {r['tool_p95_s']} s, "
        f"containers created {r['created']} / from pool {r['from_pool']} (pool {r['pool_before']}), "
        f"peak {r['peak_containers']}, gone {r['cleanup_s']} s after; lost {r['events_lost']}; CPU s/session {cpu}",
        flush=True,
    )
    print("        p50 ms: " + ", ".join(f"{k} {v}" for k, v in r["phases_p50_ms"].items()), flush=True)


def burst_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | N | tool | all done s | p50 / p95 s | tool call → result p50 / p95 s | created / from pool "
        "(pool before) | peak containers | containers gone after s | CPU s/session harness · sandbox · docker · "
        "server | lost | sandboxed ÷ no sandbox |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["cpu_s_per_session"]
        cpu = " · ".join(str(c.get(k, "")) for k in ("harness", "sandbox", "docker", "temporal"))
        ratio = ""
        if r["kind"].startswith("sandboxed"):
            base = next(
                (x for x in rows if x["kind"] == "no sandbox" and x["sessions"] == r["sessions"]
                 and x["engine"] == r["engine"]), None)  # fmt: skip
            ratio = f"{r['all_done_s'] / base['all_done_s']:.2f}" if base else ""
        lines.append(
            f"| {r['engine']} | {r['sessions']} | {r['kind']} | {r['all_done_s']} | {r['p50_s']} / {r['p95_s']} | "
            f"{r['tool_p50_s']} / {r['tool_p95_s']} | {r['created']} / {r['from_pool']} ({r['pool_before']}) | "
            f"{r['peak_containers']} | {r['cleanup_s']} | {cpu} | {r['events_lost']} | {ratio} |"
        )
    return "\n".join(lines)


# --- the table -----------------------------------------------------------------------------------


def print_row(r: dict[str, Any]) -> None:
    cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_turn"].items())
    rss = ", ".join(f"{k} {v}" for k, v in r["peak_rss_mb"].items())
    print(
        f"{r['engine']:>7} {r['kind']:>8} {r['sessions']:>4}: all done {r['all_done_s']} s "
        f"({r['sessions_per_s']}/s), p50 {r['p50_s']} s / p95 {r['p95_s']} s, lost {r['events_lost']}; "
        f"CPU ms/turn {cpu}; peak RSS MB {rss}",
        flush=True,
    )


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per engine and N: harness CPU per model turn over the floor worker's CPU per activity, the
    server's CPU per turn over its CPU per floor activity, and throughput over the floor's."""
    out = []
    for r in rows:
        if r["kind"] != "sessions":
            continue
        f = next(
            x for x in rows if x["kind"] == "floor" and x["engine"] == r["engine"] and x["sessions"] == r["sessions"]
        )
        server = sum(v for k, v in r["cpu_ms_per_turn"].items() if k in ("temporal", "postgres"))
        floor_server = sum(v for k, v in f["cpu_ms_per_turn"].items() if k in ("temporal", "postgres"))
        out.append({
            "engine": r["engine"],
            "sessions": r["sessions"],
            "harness_cpu_over_floor": round(r["cpu_ms_per_turn"]["harness"] / max(f["cpu_ms_per_turn"]["floor"], 1e-9),
                                            2),
            "server_cpu_over_floor": round(server / max(floor_server, 1e-9), 2),
            "throughput_over_floor": round(r["sessions_per_s"] / f["sessions_per_s"], 2),
        })  # fmt: skip
    return out


def markdown(rows: list[dict[str, Any]], rel: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | run | N | all done s | sessions/s | p50 s | p95 s | CPU ms/turn harness · sandbox · floor | "
        "CPU ms/turn temporal · postgres | peak RSS MB | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["cpu_ms_per_turn"]
        workers = " · ".join(str(c[k]) for k in ("harness", "sandbox", "floor") if k in c)
        server = " · ".join(str(c[k]) for k in ("temporal", "postgres") if k in c)
        rss = ", ".join(f"{k} {v}" for k, v in r["peak_rss_mb"].items())
        lines.append(
            f"| {r['engine']} | {r['kind']} | {r['sessions']} | {r['all_done_s']} | {r['sessions_per_s']} | "
            f"{r['p50_s']} | {r['p95_s']} | {workers} | {server} | {rss} | {r['events_lost']} |"
        )
    lines += [
        "",
        "| engine | N | harness CPU/turn ÷ floor CPU/activity | server CPU ÷ floor's | throughput ÷ floor's |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['engine']} | {x['sessions']} | {x['harness_cpu_over_floor']} | {x['server_cpu_over_floor']} | "
        f"{x['throughput_over_floor']} |"
        for x in rel
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["dev", "cluster", "both"], default="both")
    parser.add_argument("--sessions", default="50,200,500")
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--shards", type=int, default=4, help="the cluster's history shards")
    parser.add_argument("--port", type=int, default=18233, help="the engine's frontend (side port)")
    parser.add_argument("--profile", action="store_true", help="py-spy the harness worker (bench/results/*.txt)")
    parser.add_argument(
        "--burst",
        action="store_true",
        help="the burst instead (issue 20): N one-shot sessions of one tool call each, without a sandbox "
        "(load_skill) and with one (bash echo hi), side by side; --sessions defaults to 50,200",
    )
    parser.add_argument("--repeat", type=int, default=1, help="with --burst: the sandboxed burst this many times")
    parser.add_argument(
        "--sandbox-env", default="", help="with --burst: more environment for the sandbox worker (NAME=VALUE,...)"
    )
    args = parser.parse_args()
    if args.burst:
        await burst_main(args)
        return
    sizes = [int(x) for x in args.sessions.split(",")]
    rows: list[dict[str, Any]] = []
    for name in ("dev", "cluster") if args.engine == "both" else (args.engine,):
        started = dev_engine(args.port) if name == "dev" else cluster_engine(args.port, args.shards)
        with started as engine:
            rows += await run_engine(engine, sizes, args.latency_ms, args.profile)
    rel = ratios(rows)
    print("\n" + markdown(rows, rel))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"latency_ms": args.latency_ms, "rows": rows, "ratios": rel}, indent=2))
    print(f"written: {out / 'scale.json'}")


async def burst_main(args: argparse.Namespace) -> None:
    sizes = [int(x) for x in (args.sessions if args.sessions != "50,200,500" else "50,200").split(",")]
    # The sandbox worker as it ships (its warm pool at the default), unless --sandbox-env says otherwise.
    pool_env = {"SANDBOX_WARM_POOL": str(Settings.model_fields["sandbox_warm_pool"].default)}
    pool_env.update(kv.split("=", 1) for kv in args.sandbox_env.split(",") if kv)
    rows: list[dict[str, Any]] = []
    for name in ("dev", "cluster") if args.engine == "both" else (args.engine,):
        started = dev_engine(args.port) if name == "dev" else cluster_engine(args.port, args.shards)
        with started as engine:
            rows += await run_burst(engine, sizes, args.latency_ms, pool_env, args.repeat)
    print("\n" + burst_markdown(rows))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "burst.json").write_text(json.dumps({"latency_ms": args.latency_ms, "rows": rows}, indent=2))
    print(f"written: {out / 'burst.json'}")


if __name__ == "__main__":
    asyncio.run(main())
