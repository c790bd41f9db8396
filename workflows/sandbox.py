"""The sandbox lifecycle, workflow side: one method per sandbox operation, each calling one
activity with the options it needs (task queue, timeouts, heartbeat, retries, summary).

- `run`: one tool call. The first provisions the sandbox and runs in it, in one activity
  (`provision_and_execute` on the shared `sandboxes` queue); the worker that takes it names its own
  host queue in the handle, and every later call goes there (`execute`); a lost sandbox
  (`SandboxLost`, or its host's queue has no poller) is replaced at once, with the workspace as
  last snapshotted, and the model is told;
- `ensure`: provision without a call (`provision_sandbox`: an eager sandbox, one a subagent shares,
  a replacement);
- `snapshot`: /workspace kept in the blob store (left out where the sandbox says nothing changed);
- `destroy`: when the session ends, its sandbox left to its host, which takes the last snapshot and
  removes the container once the session has closed (sandboxes/reaper.py), after the answer;
- `check_secrets`: the secrets the sandbox workers will need, checked when the session starts.
A subagent sharing its parent's sandbox uses it but neither snapshots nor destroys it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

from durable_agents.contracts import (
    CHECK_SECRETS,
    DESTROY_SANDBOX,
    EXECUTE,
    PROVISION_AND_EXECUTE,
    PROVISION_SANDBOX,
    SANDBOX_IMAGE_MISSING,
    SANDBOX_LOST,
    SANDBOX_PROVISIONED,
    SANDBOXES_QUEUE,
    SECRET_MISSING,
    SNAPSHOT_WORKSPACE,
    ExecuteRequest,
    ExecuteResult,
    FirstCallRequest,
    FirstCallResult,
    ProvisionRequest,
    SandboxCall,
    SandboxHandle,
    SecretCheck,
    SnapshotRef,
    SnapshotRequest,
    ToolCall,
    ToolResult,
)
from durable_agents.workflows import versions
from durable_agents.workflows.core import Session
from durable_agents.workflows.failures import failure_message, is_sandbox_lost
from durable_agents.workflows.harness import sandbox_reset_message, tool_error, tool_summary, tool_timeout

SANDBOX_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
    non_retryable_error_types=[SANDBOX_LOST, SANDBOX_IMAGE_MISSING],
)
SECRETS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=[SECRET_MISSING],
)
FIRST_CALL_RETRY = dataclasses.replace(
    SANDBOX_RETRY, non_retryable_error_types=[*(SANDBOX_RETRY.non_retryable_error_types or []), SANDBOX_PROVISIONED]
)


class Sandbox:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.lock = asyncio.Lock()  # sandbox calls of one turn run one at a time, in order
        self.snapshot_at = workflow.now()

    @property
    def handle(self) -> SandboxHandle | None:
        return self.session.state.sandbox.handle

    def _host_wait(self) -> timedelta:
        return timedelta(seconds=self.session.agent.sandbox.host_wait_s)

    async def check_secrets(self) -> None:
        """Secrets the sandbox workers will need (egress credentials, a git token), checked now on one
        of them: an unknown name is an error at the start, not at the first tool call."""
        session = self.session
        uses = {name: "sandbox egress" for name in session.agent.sandbox.secrets()}
        git = session.input.workspace.git if session.input.workspace else None
        if git is not None and git.token_secret:
            uses[git.token_secret] = f"git clone of {git.url}"
        if not uses or not session.state.sandbox.owns:
            return
        await workflow.execute_activity(
            CHECK_SECRETS,
            SecretCheck(names=list(uses), uses=uses),
            task_queue=SANDBOXES_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(seconds=session.agent.sandbox.host_wait_s + 30),
            retry_policy=SECRETS_RETRY,
            summary=f"check secrets: {', '.join(uses)}",
        )

    def _provision_request(self) -> ProvisionRequest:
        state = self.session.state.sandbox
        restore = state.snapshot if versions.patched(versions.SNAPSHOTS) else None
        return ProvisionRequest(
            session_id=self.session.id,
            spec=self.session.agent.sandbox,
            restore=restore,
            seed=self.session.input.workspace if restore is None else None,
            memory=self.session.input.memory,
        )

    def _provisioned(self, handle: SandboxHandle) -> SandboxHandle:
        state = self.session.state.sandbox
        state.handle = handle
        state.owns = True
        state.unsaved = handle.seeded is not None  # empty, or as last snapshotted: nothing to keep
        self.snapshot_at = workflow.now()
        self.session.record("sandbox_provisioned", sandbox=handle)
        return handle

    async def ensure(self) -> SandboxHandle:
        """The session's sandbox, provisioned now if it has none (restoring the last snapshot)."""
        state, spec = self.session.state.sandbox, self.session.agent.sandbox
        if state.handle is None:
            request = self._provision_request()
            handle = await workflow.execute_activity(
                PROVISION_SANDBOX,
                request,
                result_type=SandboxHandle,
                schedule_to_start_timeout=timedelta(minutes=2),
                start_to_close_timeout=timedelta(minutes=5),
                # A sandbox worker that dies while it provisions is noticed in seconds, not minutes.
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=SANDBOX_RETRY,
                task_queue=SANDBOXES_QUEUE,
                summary=f"provision: {spec.image}" + (" (restore snapshot)" if request.restore else ""),
            )
            return self._provisioned(handle)
        return state.handle

    def _lost(self, handle: SandboxHandle) -> None:
        self.session.state.sandbox.handle = None
        self.session.record("sandbox_destroyed", sandbox=handle, text="lost")

    def _call(self, call: ToolCall, timeout_s: float) -> SandboxCall:
        session = self.session
        return SandboxCall(
            call_id=call.id,
            name=call.name,
            input=call.input,
            timeout_s=timeout_s,
            output_cap=session.agent.limits.tool_output_cap,
            memory=session.input.memory,
            session_id=session.id if session.input.memory or session.agent.memory.sessions else None,
            episodes_of=session.agent.name if session.agent.memory.sessions else None,
        )

    async def _first_call(self, call: ToolCall, request: SandboxCall) -> ExecuteResult | ToolResult | None:
        """Provision and run the first call in one activity. Its result; a tool error where no
        sandbox could be provisioned; or None where the sandbox exists (the handle is set) and the
        call must go to its host through `execute` (a retry elsewhere, a failure, an interrupt)."""
        provision = self._provision_request()
        try:
            first: FirstCallResult = await workflow.execute_activity(
                PROVISION_AND_EXECUTE,
                FirstCallRequest(provision=provision, call=request),
                result_type=FirstCallResult,
                task_queue=SANDBOXES_QUEUE,
                schedule_to_start_timeout=timedelta(minutes=2),
                start_to_close_timeout=timedelta(minutes=5, seconds=request.timeout_s + 60),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=FIRST_CALL_RETRY,
                # An interrupt waits for the activity's answer: the sandbox it made is the session's.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"provision + {tool_summary(call)}" + (" (restore snapshot)" if provision.restore else ""),
            )
        except ActivityError as e:
            cause = e.cause
            if isinstance(cause, ApplicationError) and cause.type == SANDBOX_PROVISIONED and cause.details:
                made, cancelled = cause.details[0], len(cause.details) > 1 and bool(cause.details[1])
                if made:
                    self._provisioned(SandboxHandle.model_validate(made))
                    self.session.state.sandbox.unsaved = True  # what the call did is not known yet
                if cancelled:  # an interrupt, or the session itself cancelled: the activity waited for it
                    raise asyncio.CancelledError from None
                self.session.raise_if_interrupted()
                return None
            self.session.raise_if_interrupted()
            return tool_error(call, f"No sandbox could be provisioned: {failure_message(e)}")
        self._provisioned(first.handle)
        return first.result

    async def run(self, call: ToolCall) -> ToolResult:
        """One sandbox tool call: the first with the sandbox's provisioning, later ones through
        `execute` on the sandbox's host queue."""
        session = self.session
        timeout_s = tool_timeout(call, session.agent.sandbox.timeout_s)
        request = self._call(call, timeout_s)
        out: ExecuteResult | ToolResult | None = None
        if self.handle is None and versions.patched(versions.FIRST_CALL):
            out = await self._first_call(call, request)
            if isinstance(out, ToolResult):
                return out
        if out is None:
            try:
                handle = await self.ensure()
            except ActivityError as e:
                return tool_error(call, f"No sandbox could be provisioned: {failure_message(e)}")
            try:
                out = await workflow.execute_activity(
                    EXECUTE,
                    ExecuteRequest(handle=handle, **dict(request)),
                    result_type=ExecuteResult,
                    task_queue=handle.host_queue,
                    schedule_to_start_timeout=self._host_wait(),
                    start_to_close_timeout=timedelta(seconds=timeout_s + 60),
                    heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=SANDBOX_RETRY,
                    summary=tool_summary(call),
                )
            except ActivityError as e:
                session.state.sandbox.unsaved = True  # what the call did is not known
                session.raise_if_interrupted()
                if not is_sandbox_lost(e):
                    return tool_error(call, f"Tool failed: {failure_message(e)}")
                return await self._replace(call, handle, failure_message(e))
            if session.state.sandbox.handle is handle:  # (still the sandbox the call ran in)
                session.state.sandbox.unsaved = out.unsaved
        else:
            session.state.sandbox.unsaved = out.unsaved
        result = ToolResult(call_id=call.id, name=call.name, output=out.output, is_error=out.is_error)
        every = session.agent.sandbox.snapshot_every_s
        if (
            every
            and session.state.sandbox.owns
            and versions.patched(versions.SNAPSHOTS)
            and workflow.now() - self.snapshot_at >= timedelta(seconds=every)
        ):
            await self.snapshot()
        return result

    async def _replace(self, call: ToolCall, handle: SandboxHandle, cause: str) -> ToolResult:
        """Cattle: the lost sandbox is replaced at once, with the workspace as last snapshotted."""
        self._lost(handle)
        if not versions.patched(versions.SNAPSHOTS):
            return tool_error(
                call,
                "The sandbox was lost (its container or host went away) and this call did not "
                "complete. The next call runs in a new, empty sandbox.",
            )
        snapshot = self.session.state.sandbox.snapshot
        try:
            replacement = await self.ensure()
        except ActivityError as provision_error:
            return tool_error(call, sandbox_reset_message(None, snapshot, failure_message(provision_error), cause))
        return tool_error(call, sandbox_reset_message(replacement, snapshot, cause=cause))

    def _saved(self) -> bool:
        """Nothing in /workspace is unsaved, by the sandbox's own word: no snapshot is needed."""
        return not self.session.state.sandbox.unsaved and versions.patched(versions.SAVED)

    async def snapshot(self) -> None:
        """Snapshot /workspace; none where the sandbox said nothing changed since the last one (the
        activity itself also returns the previous snapshot for an unchanged workspace)."""
        state = self.session.state.sandbox
        handle = state.handle
        if handle is None or self._saved():
            self.snapshot_at = workflow.now()
            return
        try:
            ref: SnapshotRef = await workflow.execute_activity(
                SNAPSHOT_WORKSPACE,
                SnapshotRequest(handle=handle, session_id=self.session.id, previous=state.snapshot),
                result_type=SnapshotRef,
                task_queue=handle.host_queue,
                schedule_to_start_timeout=self._host_wait(),
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=SANDBOX_RETRY,
                summary="snapshot: /workspace",
            )
        except ActivityError as e:
            if is_sandbox_lost(e):
                self._lost(handle)
            else:
                workflow.logger.warning("workspace snapshot failed: %s", failure_message(e))
            return
        self.snapshot_at = workflow.now()
        state.unsaved = False
        if state.snapshot is None or ref.key != state.snapshot.key:
            state.snapshot = ref
            self.session.record("sandbox_snapshot", snapshot=ref)

    async def snapshot_when_idle(self) -> None:
        state = self.session.state.sandbox
        if state.handle is not None and state.owns and versions.patched(versions.SNAPSHOTS):
            await self.snapshot()

    async def destroy(self) -> None:
        """The session ends. Its sandbox is released by its host once the session has closed — the
        workspace kept (a last snapshot where anything is unsaved), the container removed — so the
        answer waits for neither (sandboxes/reaper.py); before that patch, both were done here."""
        state = self.session.state.sandbox
        if not state.owns:
            state.handle = None  # the parent's: it stays
            return
        if state.handle is not None and versions.patched(versions.RELEASE):
            self.session.record("sandbox_released", sandbox=state.handle, snapshot=not self._saved())
            state.handle = None
            return
        if state.handle is not None and versions.patched(versions.SNAPSHOTS):
            await self.snapshot()
        handle, state.handle = state.handle, None
        if handle is None:
            return
        try:
            await workflow.execute_activity(
                DESTROY_SANDBOX,
                handle,
                task_queue=handle.host_queue,
                schedule_to_start_timeout=self._host_wait(),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=SANDBOX_RETRY,
                summary=f"destroy: {handle.sandbox_id[:12]}",
            )
        except ActivityError as e:
            workflow.logger.warning("sandbox not destroyed: %s", failure_message(e))
        self.session.record("sandbox_destroyed", sandbox=handle)
