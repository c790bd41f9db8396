"""SessionWorkflow's logic without infrastructure: fake activities registered under the real
activity names (no model, no Docker), a throwaway task queue, the dev server. Each test takes
about a second; the real end-to-end tests beside them stay.

They run in the `chaos` namespace, where the suite's in-process real workers do not poll: the
workflow provisions on the shared `sandboxes` queue, which only the fake sandbox worker serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, Worker

from durable_agents import session_log
from durable_agents.agent_files import load_agent
from durable_agents.contracts import (
    CALL_MODEL,
    COMPACTION_INSTRUCTION,
    DESTROY_SANDBOX,
    EXECUTE,
    PROVISION_AND_EXECUTE,
    PROVISION_SANDBOX,
    SANDBOX_LOST,
    SANDBOXES_QUEUE,
    SNAPSHOT_WORKSPACE,
    AgentSpec,
    ExecuteRequest,
    ExecuteResult,
    FirstCallRequest,
    FirstCallResult,
    ModelRequest,
    ModelTurn,
    ProvisionRequest,
    SandboxHandle,
    SessionEvent,
    SessionInput,
    SnapshotRef,
    SnapshotRequest,
    Usage,
)
from durable_agents.errors import provisioned_error
from durable_agents.worker import HARNESS_WORKFLOWS, WORKFLOW_RUNNER
from durable_agents.workflows.session import SessionWorkflow
from tests.helpers import ROOT, wait_for


def text(t: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": t}]


def bash(command: str, call_id: str) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "id": call_id, "name": "bash", "input": {"command": command}}]


@dataclass
class Fakes:
    """The activities, scripted by the test: model answers in order, sandbox calls recorded."""

    host_queue: str
    answers: list[list[dict[str, Any]]] = field(default_factory=list)
    summary: str = "a summary"  # what compaction requests are answered with ("" fails them)
    lose: set[str] = field(default_factory=set)  # tool-call ids whose execute finds the sandbox gone
    slow: set[str] = field(default_factory=set)  # tool-call ids whose execute runs until cancelled
    read_only: set[str] = field(default_factory=set)  # tool-call ids whose execute leaves /workspace as it was
    requests: list[ModelRequest] = field(default_factory=list)
    provisions: list[ProvisionRequest] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    snapshots: int = 0
    destroyed: list[str] = field(default_factory=list)

    @activity.defn(name=CALL_MODEL)
    async def call_model(self, req: ModelRequest) -> ModelTurn:
        self.requests.append(req)
        if any(COMPACTION_INSTRUCTION in str(m) for m in req.new_messages):
            content = text(self.summary) if self.summary else [{"type": "text", "text": ""}]
        else:
            content = self.answers.pop(0) if self.answers else text("(no more answers)")
        stop = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
        return ModelTurn(
            content=content, stop_reason=stop, usage=Usage(output_tokens=5), model="m"
        )  # no input count: the estimate stands

    @activity.defn(name=PROVISION_SANDBOX)
    async def provision_sandbox(self, req: ProvisionRequest) -> SandboxHandle:
        self.provisions.append(req)
        return SandboxHandle(
            sandbox_id=f"c{len(self.provisions)}",
            host_queue=self.host_queue,
            image=req.spec.image,
            runtime="runc",
            restored=req.restore,
        )

    @activity.defn(name=PROVISION_AND_EXECUTE)
    async def provision_and_execute(self, req: FirstCallRequest) -> FirstCallResult:
        handle = await self.provision_sandbox(req.provision)
        if req.call.call_id in self.lose or req.call.call_id in self.slow:  # as the real one: to `execute`
            raise provisioned_error(handle, "the call goes to execute")
        return FirstCallResult(
            handle=handle, result=await self.execute(ExecuteRequest(handle=handle, **dict(req.call)))
        )

    @activity.defn(name=EXECUTE)
    async def execute(self, req: ExecuteRequest) -> ExecuteResult:
        if req.call_id in self.lose:
            self.lose.discard(req.call_id)
            raise ApplicationError(f"sandbox {req.handle.sandbox_id} is gone", type=SANDBOX_LOST, non_retryable=True)
        if req.call_id in self.slow:
            while True:  # until the interrupt cancels it (heartbeats deliver the cancellation)
                activity.heartbeat()
                await asyncio.sleep(0.1)
        self.executed.append(str(req.input.get("command")))
        unsaved = req.call_id not in self.read_only
        return ExecuteResult(output=f"ran: {req.input.get('command')}\n", exit_code=0, unsaved=unsaved)

    @activity.defn(name=SNAPSHOT_WORKSPACE)
    async def snapshot_workspace(self, req: SnapshotRequest) -> SnapshotRef:
        self.snapshots += 1
        return SnapshotRef(
            key=f"snap-{self.snapshots}", bytes=100, fingerprint=f"f{self.snapshots}", taken_at=datetime.now(UTC)
        )

    @activity.defn(name=DESTROY_SANDBOX)
    async def destroy_sandbox(self, handle: SandboxHandle) -> bool:
        self.destroyed.append(handle.sandbox_id)
        return True


@contextlib.asynccontextmanager
async def fake_workers(client: Client, fakes: Fakes, queue: str) -> AsyncIterator[None]:
    workers = [
        Worker(
            client,
            task_queue=queue,
            workflows=HARNESS_WORKFLOWS,
            activities=[fakes.call_model],
            workflow_runner=WORKFLOW_RUNNER,
        ),
        Worker(client, task_queue=SANDBOXES_QUEUE, activities=[fakes.provision_sandbox, fakes.provision_and_execute]),
        Worker(
            client,
            task_queue=fakes.host_queue,
            activities=[fakes.execute, fakes.snapshot_workspace, fakes.destroy_sandbox],
        ),
    ]
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        yield


def agent(**limits: Any) -> AgentSpec:
    spec = load_agent(ROOT / "agents" / "coder.yaml").model_copy(update={"skills": []})
    return spec.model_copy(update={"limits": spec.limits.model_copy(update=limits)}) if limits else spec


async def start(client: Client, queue: str, spec: AgentSpec, task: str, **fields: Any) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        SessionWorkflow.run,
        SessionInput(agent=spec, task=task, search_attributes=False, **fields),
        id=f"fake-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def events(handle: WorkflowHandle[Any, Any]) -> list[SessionEvent]:
    found: list[SessionEvent] = await handle.query("events", result_type=list[SessionEvent])
    return found


@contextlib.asynccontextmanager
async def fake_session(chaos_client: Client, fakes: Fakes) -> AsyncIterator[str]:
    queue = f"fakes-{uuid.uuid4().hex[:8]}"
    async with fake_workers(chaos_client, fakes, queue):
        yield queue


def new_fakes(*answers: list[dict[str, Any]], **options: Any) -> Fakes:
    return Fakes(host_queue=f"fake-host-{uuid.uuid4().hex[:8]}", answers=list(answers), **options)


async def test_a_tool_turn_provisions_once_runs_and_leaves_the_release_to_the_host(chaos_client: Client) -> None:
    fakes = new_fakes(bash("ls", "t1"), bash("pwd", "t2"), text("done"))
    async with fake_session(chaos_client, fakes) as queue:
        handle = await start(chaos_client, queue, agent(), "look around", one_shot=True)
        result = await handle.result()
        log = await events(handle)
    assert result.status == "done" and result.answer == "done" and result.turns == 3
    assert fakes.executed == ["ls", "pwd"] and len(fakes.provisions) == 1
    # The answer waits for neither a snapshot nor the removal: the host does both once it has closed.
    assert fakes.snapshots == 0 and fakes.destroyed == []
    assert [e.kind for e in log if e.kind != "status"] == [
        "session_started",
        "user_message",
        "model_turn",
        "sandbox_provisioned",
        "tool_result",
        "model_turn",
        "tool_result",
        "model_turn",
        "sandbox_released",
    ]
    assert log[-2].kind == "sandbox_released" and log[-2].snapshot and log[-1].kind == "status"
    # The second request carried only what was new: the tool result, not the whole context.
    assert fakes.requests[1].prefix_count == 2 and len(fakes.requests[1].new_messages) == 1


async def test_a_workspace_nothing_changed_is_not_snapshotted(chaos_client: Client) -> None:
    """The sandbox says whether a call left /workspace as last kept: no snapshot is taken of one
    that is unchanged, when idle or at the end; one call that changes it makes the next one due."""
    fakes = new_fakes(bash("ls", "t1"), text("idle now"), bash("touch x", "t2"), text("idle again"), read_only={"t1"})
    async with fake_session(chaos_client, fakes) as queue:
        handle = await start(chaos_client, queue, agent(), "look")
        await wait_for(lambda: _status(handle, "idle"), 20, "the first answer")
        await wait_for(lambda: _answered(handle, "idle now"), 20, "the first answer")
        assert fakes.snapshots == 0, "nothing changed: no idle snapshot"
        await handle.execute_update("send_message", "change something")
        await wait_for(lambda: _answered(handle, "idle again"), 20, "the second answer")
        await wait_for(lambda: _snapshots(fakes, 1), 20, "the idle snapshot after a change")
        await handle.signal("end_session")
        await handle.result()
        log = await events(handle)
    assert fakes.snapshots == 1 and fakes.destroyed == [], "saved when idle: the host has nothing to keep at the end"
    assert [e for e in log if e.kind == "sandbox_released"][0].snapshot is False


async def _snapshots(fakes: Fakes, n: int) -> bool:
    return fakes.snapshots >= n


async def test_a_lost_sandbox_is_replaced_with_the_last_snapshot_and_the_model_is_told(chaos_client: Client) -> None:
    fakes = new_fakes(bash("echo one", "t1"), text("idle now"), bash("echo two", "t2"), text("done"), lose={"t2"})
    async with fake_session(chaos_client, fakes) as queue:
        handle = await start(chaos_client, queue, agent(), "work")
        await wait_for(lambda: _status(handle, "idle"), 20, "the first answer")
        await handle.execute_update("send_message", "again")
        await wait_for(lambda: _answered(handle, "done"), 20, "the second answer")
        await handle.signal("end_session")
        await handle.result()
        log = await events(handle)
    assert len(fakes.provisions) == 2 and fakes.provisions[1].restore is not None
    assert fakes.provisions[1].restore.key == "snap-1"  # the idle snapshot after the first answer
    lost = [e.tool_result for e in log if e.kind == "tool_result" and e.tool_result.call_id == "t2"][0]
    assert lost is not None and lost.is_error and "restored from the snapshot" in lost.output
    assert [e.text for e in log if e.kind == "sandbox_destroyed"][0] == "lost"


async def test_approvals_wait_and_a_denial_reaches_the_model(chaos_client: Client) -> None:
    spec = agent().model_copy(update={"policies": {"bash": "always_ask"}})
    fakes = new_fakes(bash("rm -rf /tmp/x", "t1"), bash("ls", "t2"), text("done"))
    async with fake_session(chaos_client, fakes) as queue:
        handle = await start(chaos_client, queue, spec, "clean up", one_shot=True)
        await wait_for(lambda: _status(handle, "waiting"), 20, "the first approval request")
        await handle.execute_update("deny", args=["t1", "not that"])
        await wait_for(lambda: _waiting_for(handle, "t2"), 20, "the second approval request")
        await handle.execute_update("approve", "t2")
        result = await handle.result()
    assert result.answer == "done" and fakes.executed == ["ls"]
    denied = fakes.requests[1].new_messages[-1]["content"][0]
    assert denied["is_error"] and "The user denied this bash call: not that" in denied["content"]


async def test_a_failing_summariser_costs_a_bounded_number_of_model_calls(chaos_client: Client) -> None:
    answers = [bash(f"cat big-{i}" + " " * 2000, f"t{i}") for i in range(30)] + [text("done")]
    fakes = new_fakes(*answers, summary="")
    async with fake_session(chaos_client, fakes) as queue:
        spec = agent(context_tokens=3000, keep_recent_tokens=1000, compaction_max_failures=2)
        handle = await start(chaos_client, queue, spec, "read a lot", one_shot=True)
        result = await handle.result()
        log = await events(handle)
    compactions = [r for r in fakes.requests if any(COMPACTION_INSTRUCTION in str(m) for m in r.new_messages)]
    assert result.answer == "done" and len(compactions) == 2
    assert len([e for e in log if e.kind == "compaction" and e.method == "truncation"]) >= 5


async def test_a_long_session_continues_as_new_with_its_state_whole(chaos_client: Client) -> None:
    answers = [bash(f"echo {i}", f"t{i}") for i in range(60)] + [text("done")]
    fakes = new_fakes(*answers)
    async with fake_session(chaos_client, fakes) as queue:
        spec = agent(history_events=200, max_turns=100)
        handle = await start(chaos_client, queue, spec, "count", one_shot=True)
        result = await handle.result()
        description = await chaos_client.get_workflow_handle(handle.id).describe()
    assert result.answer == "done" and result.turns == 61
    assert (await description.memo())["run"] >= 2, "the session should have continued as new"
    assert len(fakes.provisions) == 1, "the sandbox is carried into the next run, not provisioned again"
    assert fakes.executed == [f"echo {i}" for i in range(60)], "no command ran twice or was lost"


async def test_a_run_whose_log_outgrows_the_context_continues_as_new_and_reads_back_whole(chaos_client: Client) -> None:
    """Compaction drops old outputs from the context; the run's events keep them. Once they hold more
    than the context (and run_log_bytes), the session continues as new, so a worker caches about the
    context of a session, not all it did. Without the bound (null), one run holds everything."""
    payload = "x" * 8000  # each output: "ran: echo xxx…", about 8 KB

    async def run_with(bound: int | None) -> tuple[int, list[SessionEvent], Fakes]:
        fakes = new_fakes(*[bash(f"echo {i} {payload}", f"t{i}") for i in range(24)], text("done"), summary="so far")
        async with fake_session(chaos_client, fakes) as queue:
            spec = agent(context_tokens=6000, keep_recent_tokens=2000, run_log_bytes=bound)
            handle = await start(chaos_client, queue, spec, "count", one_shot=True)
            result = await handle.result()
            assert result.answer == "done" and result.turns == 25
            memo = await (await chaos_client.get_workflow_handle(handle.id).describe()).memo()
            for run in await session_log.runs(chaos_client, handle.id):  # each replays as it ran
                history = await chaos_client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
                await Replayer(workflows=HARNESS_WORKFLOWS, data_converter=chaos_client.data_converter).replay_workflow(
                    history
                )
            return int(memo.get("run", 1)), await session_log.read_events(chaos_client, handle.id), fakes

    runs, log, fakes = await run_with(16_384)
    assert runs >= 3, f"the log outgrew the context about every 3 turns: {runs} runs"
    assert fakes.executed == [f"echo {i} {payload}" for i in range(24)], "no command ran twice or was lost"
    assert [e.offset for e in log] == list(range(len(log)))
    results = [e.tool_result.call_id for e in log if e.kind == "tool_result" and e.tool_result]
    assert results == [f"t{i}" for i in range(24)], "every output in the log once, in order"
    assert sum(1 for e in log if e.kind == "continued") == runs - 1
    assert len(fakes.provisions) == 1, "the sandbox is carried into the next runs"

    runs, log, _ = await run_with(None)
    assert runs == 1 and len([e for e in log if e.kind == "tool_result"]) == 24


async def test_an_interrupt_cuts_a_running_tool_and_the_session_goes_idle(chaos_client: Client) -> None:
    fakes = new_fakes(bash("sleep 1000", "t1"), text("after the interrupt"), slow={"t1"})
    async with fake_session(chaos_client, fakes) as queue:
        handle = await start(chaos_client, queue, agent(), "wait")
        await wait_for(lambda: _has_kind(handle, "sandbox_provisioned"), 20, "the sandbox call to start")
        await handle.execute_update("interrupt")
        await wait_for(lambda: _status(handle, "idle"), 20, "the session to go idle")
        log = await events(handle)
        await handle.execute_update("send_message", "go on")
        await wait_for(lambda: _answered(handle, "after the interrupt"), 20, "the answer after the interrupt")
        await handle.signal("end_session")
    cut = [e.tool_result for e in log if e.kind == "tool_result"]
    assert cut and cut[0] is not None and cut[0].is_error and "Interrupted by the user" in cut[0].output
    assert "interrupted" in [e.kind for e in log]


async def _state(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    state: dict[str, Any] = await handle.query("state")
    return state


async def _status(handle: WorkflowHandle[Any, Any], status: str) -> bool:
    return (await _state(handle))["status"] == status


async def _answered(handle: WorkflowHandle[Any, Any], answer: str) -> bool:
    state = await _state(handle)
    return state["status"] == "idle" and state["last_answer"] == answer


async def _waiting_for(handle: WorkflowHandle[Any, Any], call_id: str) -> bool:
    return call_id in [c["id"] for c in (await _state(handle))["awaiting_approval"]]


async def _has_kind(handle: WorkflowHandle[Any, Any], kind: str) -> bool:
    return kind in [e.kind for e in await events(handle)]


async def test_a_session_without_a_first_message_waits_and_keeps_each_message_id(chaos_client: Client) -> None:
    fakes = new_fakes(text("hello"), text("hello again"))
    async with fake_session(chaos_client, fakes) as queue:
        handle = await chaos_client.start_workflow(
            SessionWorkflow.run,
            SessionInput(agent=agent(), search_attributes=False),  # no task: it waits for the first message
            id=f"fake-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        await wait_for(lambda: _status(handle, "idle"), 20, "the session to wait, idle")
        assert fakes.requests == [], "no model call before the first message"
        await handle.execute_update("send_message", args=["hi", "sevt_a"])
        await wait_for(lambda: _answered(handle, "hello"), 20, "the answer")
        await handle.execute_update("send_message", args=["and hi", "sevt_b"])
        await wait_for(lambda: _answered(handle, "hello again"), 20, "the second answer")
        log = await events(handle)
        await handle.signal("end_session")
    assert [(e.text, e.message_id) for e in log if e.kind == "user_message"] == [("hi", "sevt_a"), ("and hi", "sevt_b")]
    assert log[0].kind == "session_started" and log[0].text == ""
