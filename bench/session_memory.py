"""Memory per idle session: what a harness worker's resident memory grows by for each session it
holds, against the content of that session's current context. Prints the figures and writes
bench/results/session_memory.json.

    .venv/bin/python -m bench.session_memory [--sessions 50] [--turns 300] [--output-bytes 5000]

A harness worker (`da-worker --harness`) in a process of its own, so its RSS is its own; a fake
sandbox worker in this process (the real activity names: provision, execute, snapshot, destroy)
answers every `bash` call with exactly --output-bytes of unique ASCII text, so no Docker is
needed and each tool result arrives the way a real one does, as an activity result. Two waves of
--sessions sessions, each driven to --turns tool turns and an answer, then left idle: first with
tiny outputs (the per-session, per-turn overhead), then with the full outputs. For each wave: the
worker's RSS before and after, per session, the bytes of a session's current context (JSON of the
model's messages, as the `context` query returns them) and the ratio. With --tiny-bytes equal to
--output-bytes, the second wave shows what more sessions cost once the first have gone idle (with a
byte budget small enough, --cache-mb, the first are evicted and their memory is reused). Note that
the context queries after a wave replay evicted sessions into the cache again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from bench.common import ROOT, WORKER_PIDS, add_scenario, local_stack
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.contracts import (
    DESTROY_SANDBOX,
    EXECUTE,
    GET_MODEL_CONTEXT,
    GET_STATE,
    PROVISION_AND_EXECUTE,
    PROVISION_SANDBOX,
    SANDBOXES_QUEUE,
    SNAPSHOT_WORKSPACE,
    AgentSpec,
    ExecuteRequest,
    ExecuteResult,
    FirstCallRequest,
    FirstCallResult,
    ModelContext,
    ProvisionRequest,
    SandboxHandle,
    SessionState,
    SnapshotRef,
    SnapshotRequest,
)
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse

HOST_QUEUE = f"bench-memory-host-{uuid.uuid4().hex[:6]}"


class FakeSandbox:
    """The sandbox worker's activities without containers: `execute` answers with `size` bytes."""

    def __init__(self) -> None:
        self.size = 16

    @activity.defn(name=PROVISION_SANDBOX)
    async def provision_sandbox(self, req: ProvisionRequest) -> SandboxHandle:
        return SandboxHandle(
            sandbox_id=f"fake-{uuid.uuid4().hex[:8]}", host_queue=HOST_QUEUE, image="fake", runtime="none"
        )

    @activity.defn(name=PROVISION_AND_EXECUTE)
    async def provision_and_execute(self, req: FirstCallRequest) -> FirstCallResult:
        handle = await self.provision_sandbox(req.provision)
        return FirstCallResult(
            handle=handle, result=await self.execute(ExecuteRequest(handle=handle, **dict(req.call)))
        )

    @activity.defn(name=EXECUTE)
    async def execute(self, req: ExecuteRequest) -> ExecuteResult:
        head = f"{req.handle.sandbox_id} {req.call_id} {req.input.get('command')}\n"
        return ExecuteResult(output=(head + "x" * self.size)[: self.size], exit_code=0)

    @activity.defn(name=SNAPSHOT_WORKSPACE)
    async def snapshot_workspace(self, req: SnapshotRequest) -> SnapshotRef:
        return SnapshotRef(key=f"snap-{uuid.uuid4().hex[:8]}", bytes=1, fingerprint="f", taken_at=datetime.now(UTC))

    @activity.defn(name=DESTROY_SANDBOX)
    async def destroy_sandbox(self, handle: SandboxHandle) -> bool:
        return True


def rss_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# Limits the command line sets: by default no compaction (the context holds every turn).
LIMITS: dict[str, Any] = {"context_tokens": None}


def agent(turns: int) -> AgentSpec:
    base = load_agent(ROOT / "agents" / "coder.yaml")
    limits = base.limits.model_copy(update={"max_turns": turns + 10, **LIMITS})
    return base.model_copy(update={"skills": [], "limits": limits})


async def settled_rss(pid: int, quiet_s: float = 3.0) -> float:
    """The worker's RSS once it stopped changing for a while (idle sessions, nothing in flight)."""
    last, since = rss_mb(pid), time.monotonic()
    while time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.5)
        now = rss_mb(pid)
        if abs(now - last) > 0.5:
            last, since = now, time.monotonic()
    return last


async def wave(
    client: Client,
    server: ScriptedModelServer,
    sandbox: FakeSandbox,
    sessions: int,
    turns: int,
    size: int,
    settle_s: float,
) -> dict[str, Any]:
    pid = WORKER_PIDS["harness"]
    sandbox.size = size
    before = await settled_rss(pid)
    marker = add_scenario(
        server, [Step(tool_use=ToolUse(name="bash", input={"command": "out {n}"}), repeat=turns), Step(text="done")]
    )
    spec = agent(turns)
    began = time.perf_counter()
    handles = [await start_agent_session(client, spec, f"Run it. {marker} #{i}") for i in range(sessions)]
    pending = {h.id: h for h in handles}
    polls = 0
    while pending:
        polls += 1
        if polls % 15 == 0:
            state = await next(iter(pending.values())).query(GET_STATE, result_type=SessionState)
            print(
                f"  {size} B wave: {sessions - len(pending)}/{sessions} sessions done, one at turn {state.turns}",
                flush=True,
            )
        server.model.requests.clear()  # the scripted server keeps every request body otherwise
        await asyncio.sleep(2)
        for sid, h in list(pending.items()):
            state = await h.query(GET_STATE, result_type=SessionState)
            if state.error:
                raise RuntimeError(f"{sid}: {state.error}")
            if state.status == "idle" and state.turns == turns + 1:
                del pending[sid]
    took = time.perf_counter() - began
    server.model.requests.clear()
    await asyncio.sleep(settle_s)  # a byte-bounded cache evicts sessions that have waited a while
    after = await settled_rss(pid)
    history = [(await h.describe()).raw_description.workflow_execution_info.history_size_bytes for h in handles]
    contexts = [await h.query(GET_MODEL_CONTEXT, result_type=ModelContext) for h in handles]
    content = sum(len(json.dumps(c.messages).encode()) for c in contexts) / sessions
    states = [await h.query(GET_STATE, result_type=SessionState) for h in handles]
    per_session = (after - before) / sessions
    return {
        "sessions": sessions,
        "turns": turns,
        "output_bytes": size,
        "drive_s": round(took, 1),
        "runs_max": max(s.run for s in states),
        "events_per_session": round(sum(s.events for s in states) / sessions),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_per_session_mb": round(per_session, 2),
        "context_bytes_per_session": round(content),
        "history_bytes_per_session": round(sum(history) / sessions),
        "ratio": round(per_session * 1024 * 1024 / content, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--output-bytes", type=int, default=5000)
    parser.add_argument("--tiny-bytes", type=int, default=16, help="the baseline wave's output size")
    parser.add_argument("--no-tiny", action="store_true", help="skip the baseline wave (a quicker run)")
    parser.add_argument("--label", default="", help="a note kept in the results (e.g. before / after)")
    parser.add_argument("--cache-mb", type=int, help="the harness worker's DA_HARNESS_CACHE_MB (default: its own)")
    parser.add_argument("--context-cache-mb", type=int, help="its DA_MODEL_CONTEXT_CACHE_MB (default: its own)")
    parser.add_argument(
        "--context-tokens", type=int, help="the agent's context budget (compaction); default: none, no compaction"
    )
    parser.add_argument("--run-log-bytes", type=int, help="the agent's limits.run_log_bytes (0: no bound)")
    parser.add_argument("--settle-s", type=float, default=0, help="wait this long after a wave before measuring")
    args = parser.parse_args()
    if args.context_tokens:
        LIMITS["context_tokens"] = args.context_tokens
    if args.run_log_bytes is not None:
        LIMITS["run_log_bytes"] = args.run_log_bytes or None
    sandbox = FakeSandbox()
    env = {"DA_HARNESS_CACHE_MB": args.cache_mb, "DA_MODEL_CONTEXT_CACHE_MB": args.context_cache_mb}
    worker_env = {k: str(v) for k, v in env.items() if v is not None}
    async with local_stack(warm_pool=0, roles=("--harness",), worker_env=worker_env) as (client, server):
        workers = [
            Worker(
                client,
                task_queue=SANDBOXES_QUEUE,
                activities=[sandbox.provision_sandbox, sandbox.provision_and_execute],
            ),
            Worker(
                client,
                task_queue=HOST_QUEUE,
                activities=[sandbox.execute, sandbox.snapshot_workspace, sandbox.destroy_sandbox],
            ),
        ]
        for w in workers:
            await w.__aenter__()
        try:
            tiny = None
            if not args.no_tiny:
                tiny = await wave(client, server, sandbox, args.sessions, args.turns, args.tiny_bytes, args.settle_s)
            full = await wave(client, server, sandbox, args.sessions, args.turns, args.output_bytes, args.settle_s)
        finally:
            for w in workers:
                await w.__aexit__(None, None, None)
    print(
        f"\n{'wave':<6} {'sessions':>8} {'turns':>6} {'output B':>9} {'RSS MB':>15} {'MB/session':>11}"
        f" {'context B':>10} {'history B':>10} {'ratio':>6} {'drive s':>8}"
    )
    for name, r in [(n, r) for n, r in (("tiny", tiny), ("full", full)) if r is not None]:
        print(
            f"{name:<6} {r['sessions']:>8} {r['turns']:>6} {r['output_bytes']:>9} "
            f"{r['rss_before_mb']:>7}→{r['rss_after_mb']:<7} {r['rss_per_session_mb']:>11} "
            f"{r['context_bytes_per_session']:>10} {r['history_bytes_per_session']:>10} "
            f"{r['ratio']:>6} {r['drive_s']:>8}"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    results = {"label": args.label, "worker_env": worker_env, "limits": LIMITS, "tiny": tiny, "full": full}
    (out / "session_memory.json").write_text(json.dumps(results, indent=2))
    print(f"written: {out / 'session_memory.json'}")


if __name__ == "__main__":
    asyncio.run(main())
