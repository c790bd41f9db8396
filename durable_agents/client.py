"""The Python client API: start sessions and talk to them, the same way `da` does (it is built on
this module).

    from durable_agents import connect, start_session, wait_until_settled

    client = await connect()                       # TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE (settings)
    handle = await start_session(client, "Write fib.py and run it.", agent_file="agents/coder.yaml")
    state = await wait_until_settled(client, handle.id)
    print(state.last_answer)

A session is one Temporal workflow (`SessionWorkflow`); everything here is a start, an update, a
signal or a query of it, so any other Temporal client can do the same (see the README). Problems
the caller can fix (an empty task, an id in use, a session that refuses an update) are
`ClientError`s whose message says what happened; Temporal's own errors (`RPCError`: no such
session, the server unreachable) pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from durable_agents import session_log
from durable_agents.agent_files import agent_version, load_agent
from durable_agents.connection import ensure_search_attributes
from durable_agents.contracts import (
    AGENTS_QUEUE,
    APPROVE,
    DENY,
    END_SESSION,
    INTERRUPT,
    REFRESH_TOOLS,
    SA_AGENT_NAME,
    SA_AGENT_VERSION,
    SA_SESSION_STATUS,
    SEND_MESSAGE,
    SESSION_WORKFLOW,
    TOOL_RESULT,
    AgentSpec,
    MemoryMount,
    Outcome,
    SessionEvent,
    SessionInput,
    SessionResult,
    SessionState,
    WorkspaceSeed,
    attribute_pairs,
)
from durable_agents.errors import UserError
from durable_agents.live.follow import Item, SseSource, TemporalSource
from durable_agents.live.follow import follow as follow_items
from durable_agents.session_log import export
from durable_agents.workflows.harness import session_summary

__all__ = [
    "ClientError",
    "approve",
    "check_taken_up",
    "closed_reason",
    "deny",
    "end_session",
    "export",
    "follow",
    "follow_source",
    "interrupt",
    "post_tool_result",
    "refresh_tools",
    "result",
    "send_message",
    "session_events",
    "session_state",
    "start_agent_session",
    "start_session",
    "wait_until_settled",
]

POLL_S = 0.25
IDLE_OR_DONE = ("idle", "waiting", "done", "failed")  # the session needs nothing more from us, or needs you
END_WAIT_S = 5.0  # how long `end_session` waits for a session to close (it destroys its sandbox first)


class ClientError(UserError):
    """A problem the caller can fix; the message says what (`da` prints it without a traceback)."""


# --- starting -------------------------------------------------------------------------------


async def start_session(
    client: Client,
    task: str,
    *,
    agent: AgentSpec | None = None,
    agent_file: str | Path | None = None,
    agent_ref: str | None = None,
    session_id: str | None = None,
    one_shot: bool = False,
    workspace: WorkspaceSeed | None = None,
    task_queue: str = AGENTS_QUEUE,
    reuse_closed_id: bool = True,
) -> WorkflowHandle[Any, SessionResult]:
    """Start a session of one agent, given in exactly one way: a definition (`agent`), an agent file
    (`agent_file`, read and checked here: a bad file raises `AgentFileError` before anything
    starts), or the name of an agent the harness workers know (`agent_ref`, `name` or
    `name@version`, resolved by the worker at the session's start from its `--agents` folder; an
    unknown name ends the session with the known ones listed)."""
    given = [a for a in (agent, agent_file, agent_ref) if a is not None]
    if len(given) != 1:
        raise ClientError("give the agent one way: agent (a definition), agent_file or agent_ref")
    if agent_file is not None:
        agent, source = load_agent(agent_file), str(agent_file)
    else:
        source = "(inline)"
    options: dict[str, Any] = {
        "session_id": session_id,
        "one_shot": one_shot,
        "workspace": workspace,
        "task_queue": task_queue,
        "reuse_closed_id": reuse_closed_id,
    }
    if agent is not None:
        return await start_agent_session(client, agent, task, source=source, **options)
    assert agent_ref is not None
    return await _start_by_ref(client, agent_ref, task, **options)


async def start_agent_session(
    client: Client,
    agent: AgentSpec,
    task: str | None,
    *,
    session_id: str | None = None,
    one_shot: bool = False,
    source: str = "(inline)",
    workspace: WorkspaceSeed | None = None,
    task_queue: str = AGENTS_QUEUE,
    reuse_closed_id: bool = True,
    summary: str | None = None,
    outcome: Outcome | None = None,
    memory: list[MemoryMount] | None = None,
    eager_start: bool = False,
) -> WorkflowHandle[Any, SessionResult]:
    """Start a session (task None: it waits, idle, for its first message). A running session's id
    is never reused; a closed one's is unless `reuse_closed_id` is False (the new run then hides the
    closed one's log from `events` and `export`: the CLI refuses). `outcome`: the task is its
    description, graded against its rubric; by default the agent's own `outcome` (if it has one).
    `eager_start`: where a harness worker of `task_queue` runs on this same client (in this
    process), the server may hand it the session's first workflow task in the start call's answer
    (Temporal's eager workflow start): one dispatch less before the first model request. Without
    such a worker, or where the server declines, the session starts as usual."""
    if task is not None and not task.strip():
        raise ClientError("the task is empty")
    if memory is None and agent.memory.stores:  # the agent names its stores: resolved here, in the API's database
        from durable_agents.cli_memory import resolve

        memory = await resolve(agent.memory.stores)
    if outcome is None and agent.outcome is not None and task:
        outcome = new_outcome(task, agent.outcome.rubric, agent.outcome.max_iterations)
    with_attributes = await ensure_search_attributes(client)
    session_id = session_id or f"session-{uuid.uuid4().hex[:12]}"
    attributes = attribute_pairs(
        with_attributes,
        {SA_AGENT_NAME: agent.name, SA_SESSION_STATUS: "running", SA_AGENT_VERSION: agent_version(agent)},
    )
    try:
        return await client.start_workflow(
            SESSION_WORKFLOW,
            SessionInput(
                agent=agent,
                task=task or None,
                one_shot=one_shot,
                outcome=outcome if task else None,
                search_attributes=with_attributes,
                workspace=workspace,
                memory=memory or [],
            ),
            id=session_id,
            task_queue=task_queue,
            result_type=SessionResult,
            static_summary=summary or session_summary(agent.name, task or "(waiting for its first message)"),
            static_details=f"agent file: {source}\nagent version: {agent_version(agent)}\nmodel: {agent.model.name}\n"
            f"tools: {', '.join(agent.tools)}",
            search_attributes=attributes,
            id_reuse_policy=_reuse(reuse_closed_id),
            request_eager_start=eager_start,
        )
    except WorkflowAlreadyStartedError:
        raise ClientError(await _id_in_use(client, session_id)) from None


def new_outcome(description: str, rubric: str, max_iterations: int = 3) -> Outcome:
    """An outcome with a new id (`outc_…`): the description is the task it grades."""
    try:
        return Outcome(
            id=f"outc_{uuid.uuid4().hex[:24]}", description=description, rubric=rubric, max_iterations=max_iterations
        )
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in x['loc'])}: {x['msg']}" for x in e.errors())
        raise ClientError(f"bad outcome: {problems}") from None


async def _start_by_ref(
    client: Client,
    agent_ref: str,
    task: str,
    *,
    session_id: str | None,
    one_shot: bool,
    workspace: WorkspaceSeed | None,
    task_queue: str,
    reuse_closed_id: bool,
) -> WorkflowHandle[Any, SessionResult]:
    """A session of an agent the worker resolves by name: as a plain Temporal client starts one, so
    the session itself learns which search attributes the namespace has and sets them once it
    knows its agent."""
    if not task.strip():
        raise ClientError("the task is empty")
    session_id = session_id or f"session-{uuid.uuid4().hex[:12]}"
    try:
        return await client.start_workflow(
            SESSION_WORKFLOW,
            SessionInput(agent_ref=agent_ref, task=task, one_shot=one_shot, workspace=workspace),
            id=session_id,
            task_queue=task_queue,
            result_type=SessionResult,
            static_summary=session_summary(agent_ref.partition("@")[0], task),
            static_details=f"agent: {agent_ref} (resolved by the harness worker)",
            id_reuse_policy=_reuse(reuse_closed_id),
        )
    except WorkflowAlreadyStartedError:
        raise ClientError(await _id_in_use(client, session_id)) from None


def _reuse(reuse_closed_id: bool) -> WorkflowIDReusePolicy:
    return WorkflowIDReusePolicy.ALLOW_DUPLICATE if reuse_closed_id else WorkflowIDReusePolicy.REJECT_DUPLICATE


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower().replace("_", " ") if status is not None else "unknown"


async def _id_in_use(client: Client, session_id: str) -> str:
    """Why a session cannot start under `session_id`, and how to reach the session that has it."""
    status = (await client.get_workflow_handle(session_id).describe()).status
    if status == WorkflowExecutionStatus.RUNNING:
        return f'session {session_id!r} already exists (running): da follow {session_id} / da send {session_id} "..."'
    return (
        f"session {session_id!r} already exists and has ended ({_status_name(status)}); da start does not "
        f"reuse the id of a closed session (its log stays readable: da events {session_id}): give a new --id"
    )


async def check_taken_up(handle: WorkflowHandle[Any, Any], within_s: float = 10.0) -> str | None:
    """Wait until a harness worker has run the session's first workflow task. If a worker cannot (a
    codec key it lacks, a payload it cannot read), end the session and raise with the worker's reason
    rather than leave it retrying forever; None if no worker took it up in time (it will later)."""

    async def first_task() -> None:  # one long poll of the history, each event read once
        async for event in handle.fetch_history_events(wait_new_event=True):
            if event.HasField("workflow_task_completed_event_attributes"):
                return
            if event.HasField("workflow_task_failed_event_attributes"):
                failed = event.workflow_task_failed_event_attributes
                reason = f"worker {failed.identity or '?'} cannot run it: {_failure_text(failed.failure)}"
                await handle.terminate(reason=reason)
                raise ClientError(f"session {handle.id} could not start and was ended: {reason}")

    try:
        await asyncio.wait_for(first_task(), within_s)
    except TimeoutError:
        return f"no harness worker has taken session {handle.id} up within {within_s:.0f} s (is one running?)"
    return None


# --- reading --------------------------------------------------------------------------------


async def session_events(
    client: Client, session_id: str, start: int = 0, stop: int | None = None
) -> list[SessionEvent]:
    """The session's events with offsets in [start, stop), across continue-as-new runs."""
    return await session_log.read_events(client, session_id, start, stop)


async def session_state(client: Client, session_id: str) -> SessionState:
    return await session_log.session_state(client, session_id)


async def wait_until_settled(client: Client, session_id: str, after_event: int = 0) -> SessionState:
    """Wait until the session is idle or done with at least one event past `after_event`."""
    while True:
        state = await session_state(client, session_id)
        if state.status in IDLE_OR_DONE and state.events > after_event + 1:
            return state
        await asyncio.sleep(POLL_S)


async def result(client: Client, session_id: str) -> str | None:
    """The session's latest answer (`da result`), or None while it has none. A session that failed
    says why in `session_state(...).error`; one that was terminated, in `closed_reason`."""
    return (await session_state(client, session_id)).last_answer


async def follow_source(client: Client, server: str | None) -> tuple[TemporalSource | SseSource, str | None]:
    """Where to follow a session from: the live server at `server` (model text token by token)
    when it answers, else Temporal (durable events only); and, when the server was given but does
    not answer, a note that says so."""
    if server:
        sse = SseSource(server)
        problem = await sse.reachable()
        if problem is None:
            return sse, None
        return TemporalSource(client), f"the live server at {server} does not answer ({problem})"
    return TemporalSource(client), None


async def follow(client: Client, session_id: str, start: int = 0, *, server: str | None = None) -> AsyncIterator[Item]:
    """The session as it happens, its subagents nested, until it is idle or has ended: each
    durable event, state change and end (and, through a live server, each delta of the model's
    text) as an `Item` (`durable_agents.live.follow`). Raises FollowError if it cannot follow."""
    source, _ = await follow_source(client, server)
    queue: asyncio.Queue[Item | None] = asyncio.Queue()

    class _Collect:
        def show(self, item: Item) -> None:
            queue.put_nowait(item)

        def close(self) -> None:
            queue.put_nowait(None)

    task = asyncio.create_task(follow_items(source, session_id, start, _Collect()))
    try:
        while (item := await queue.get()) is not None:
            yield item
        await task  # raises what stopped it, if anything did
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- talking to a session -------------------------------------------------------------------


async def _update(client: Client, session_id: str, update: str, refused: str, *args: Any) -> int:
    """Run an update on a session: the log offset it answers; a refusal is a ClientError with the
    session's reason."""
    try:
        return int(await client.get_workflow_handle(session_id).execute_update(update, args=args, result_type=int))
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        raise ClientError(f"{session_id}: {refused}: {getattr(cause, 'message', None) or cause}") from None


async def send_message(client: Client, session_id: str, text: str) -> int:
    """Add a user message; returns the log offset it was queued at."""
    return await _update(client, session_id, SEND_MESSAGE, "message refused", text)


async def interrupt(client: Client, session_id: str) -> int:
    """Stop the model call, tool runs and subagents in flight; the session goes idle."""
    return await _update(client, session_id, INTERRUPT, "not interrupted")


async def refresh_tools(client: Client, session_id: str) -> int:
    """Re-list the MCP servers' tools before the session's next model call; the offset of the event
    that lists them."""
    return await _update(client, session_id, REFRESH_TOOLS, "tools not refreshed")


async def approve(client: Client, session_id: str, tool_use_id: str) -> int:
    """Let a tool call that waits for approval run."""
    return await _update(client, session_id, APPROVE, "not approved", tool_use_id)


async def deny(client: Client, session_id: str, tool_use_id: str, reason: str = "") -> int:
    """Refuse a tool call that waits for approval; the model is told `reason`."""
    return await _update(client, session_id, DENY, "not denied", tool_use_id, reason)


async def post_tool_result(
    client: Client, session_id: str, tool_use_id: str, result: dict[str, Any] | str, is_error: bool = False
) -> int:
    """Give a session the result of a custom tool call it waits on; returns the log offset then.
    `result` is {"content": str, "is_error": bool} or the content string itself."""
    body = {"content": result, "is_error": is_error} if isinstance(result, str) else result
    return await _update(client, session_id, TOOL_RESULT, "result refused", tool_use_id, body)


# --- ending ---------------------------------------------------------------------------------


async def end_session(client: Client, session_id: str) -> str:
    """End the session whatever it is doing, and see that it closes; returns what happened. An idle
    session closes at the signal; a turn in progress (a model call, tools, an approval it waits for)
    is interrupted first, or the session would finish it (or wait for the approval forever); a
    session whose workflow task keeps failing cannot run the signal at all, so it is terminated."""
    handle = client.get_workflow_handle(session_id)
    description = await handle.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        return f"already ended ({_status_name(description.status)})"
    try:
        await handle.signal(END_SESSION)
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
        return f"already ended ({_status_name((await handle.describe()).status)})"
    if await _closed_within(handle, 1.0):
        return _ended(await handle.describe())
    description = await handle.describe()
    failing = await _failing_workflow_task(client, session_id, description.run_id)
    if failing is not None:
        attempt = description.raw_description.pending_workflow_task.attempt
        retried = f" (attempt {attempt})" if attempt > 1 else ""
        why = f"its workflow task keeps failing{retried}, so it cannot run the signal: {failing}"
        await handle.terminate(reason=f"da end: {why}")
        return f"terminated: {why}; the sandbox host's reaper removes its sandbox, if it had one"
    interrupted = await _interrupt_quietly(client, session_id)
    if await _closed_within(handle, END_WAIT_S):
        return _ended(await handle.describe(), "its turn in progress was interrupted" if interrupted else "")
    description = await handle.describe()
    busy = sorted({a.activity_type.name for a in description.raw_description.pending_activities})
    doing = f"; still running: {', '.join(busy)}" if busy else ""
    return f"ending (not closed within {END_WAIT_S:.0f} s{doing}); da sessions shows when it has"


def _ended(description: WorkflowExecutionDescription, note: str = "") -> str:
    return f"ended ({_status_name(description.status)})" + (f"; {note}" if note else "")


async def _closed_within(handle: WorkflowHandle[Any, Any], seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def _interrupt_quietly(client: Client, session_id: str) -> bool:
    """Interrupt the session's turn in progress, if it has one; whether it had."""
    try:
        await asyncio.wait_for(interrupt(client, session_id), END_WAIT_S)
    except (ClientError, TimeoutError):  # nothing to interrupt, or it takes long: the wait says which
        return False
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:  # it closed meanwhile
            raise
        return False
    return True


async def _failing_workflow_task(client: Client, session_id: str, run_id: str | None) -> str | None:
    """The failure of the run's workflow task if its latest one failed (a worker that cannot run the
    session retries it forever, and only the first failure is in the history), else None."""
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=session_id, run_id=run_id or ""),
        maximum_page_size=100,
    )
    response = await client.workflow_service.get_workflow_execution_history_reverse(request)
    for event in response.history.events:
        if event.HasField("workflow_task_failed_event_attributes"):
            return _failure_text(event.workflow_task_failed_event_attributes.failure)
        if event.HasField("workflow_task_completed_event_attributes"):
            return None
    return None


def _failure_text(failure: Failure) -> str:
    """A failure and its causes on one line."""
    messages = [failure.message]
    while failure.HasField("cause"):
        failure = failure.cause
        messages.append(failure.message)
    return " ".join(": ".join(m for m in messages if m).split())


async def closed_reason(client: Client, session_id: str) -> str | None:
    """How a session that did not complete closed (terminated, failed, timed out, cancelled), with
    the reason Temporal recorded; None if it is running or completed."""
    description = await client.get_workflow_handle(session_id).describe()
    if description.status in (None, WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
        return None
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=session_id, run_id=description.run_id),
        maximum_page_size=1,
    )
    last = (await client.workflow_service.get_workflow_execution_history_reverse(request)).history.events[0]
    reason = ""
    if last.HasField("workflow_execution_terminated_event_attributes"):
        reason = last.workflow_execution_terminated_event_attributes.reason
    elif last.HasField("workflow_execution_failed_event_attributes"):
        reason = _failure_text(last.workflow_execution_failed_event_attributes.failure)
    return _status_name(description.status) + (f": {reason}" if reason else "")
