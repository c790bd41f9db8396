"""SandboxRelease: what a session's sandbox needs once the session has answered — a last snapshot
of /workspace where it has unsaved changes, then the container removed — as a workflow of its own,
so the answer does not wait for Docker.

The session starts it as an abandoned child (its id: `<session id>-sandbox-release`) on the
sandbox's host queue, where that host's sandbox worker runs it, and ends without waiting. Both
steps are activities on the same queue: durable, retried, and carried out after a sandbox
worker's restart. Whatever cannot be done (the host never comes back)
ends here with the reason; the host's reaper removes a container whose session and release are
both over. While a release runs, the reaper leaves its container alone (the snapshot comes first).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agents.contracts import (
        DESTROY_SANDBOX,
        SANDBOX_RELEASE_WORKFLOW,
        SNAPSHOT_WORKSPACE,
        ReleaseRequest,
        ReleaseResult,
        SnapshotRef,
        SnapshotRequest,
    )
    from durable_agents.workflows.failures import failure_message, is_sandbox_lost
    from durable_agents.workflows.sandbox import SANDBOX_RETRY


@workflow.defn(name=SANDBOX_RELEASE_WORKFLOW)
class SandboxRelease:
    @workflow.run
    async def run(self, req: ReleaseRequest) -> ReleaseResult:
        handle, wait = req.handle, timedelta(seconds=req.host_wait_s)
        kept, error = req.previous, None
        if req.snapshot:
            try:
                kept = await workflow.execute_activity(
                    SNAPSHOT_WORKSPACE,
                    SnapshotRequest(handle=handle, session_id=req.session_id, previous=req.previous),
                    result_type=SnapshotRef,
                    task_queue=handle.host_queue,
                    schedule_to_start_timeout=wait,
                    start_to_close_timeout=timedelta(minutes=10),
                    retry_policy=SANDBOX_RETRY,
                    summary="snapshot: /workspace (the session has answered)",
                )
            except ActivityError as e:
                error = f"no last snapshot: {failure_message(e)}"
                if is_sandbox_lost(e):  # the container is gone: nothing to remove either
                    return ReleaseResult(snapshot=req.previous, destroyed=False, error=error)
        try:
            destroyed: bool = await workflow.execute_activity(
                DESTROY_SANDBOX,
                handle,
                result_type=bool,
                task_queue=handle.host_queue,
                schedule_to_start_timeout=wait,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=SANDBOX_RETRY,
                summary=f"destroy: {handle.sandbox_id[:12]}",
            )
        except ActivityError as e:
            problem = f"not removed (the host's reaper will): {failure_message(e)}"
            return ReleaseResult(snapshot=kept, destroyed=False, error="; ".join(filter(None, [error, problem])))
        return ReleaseResult(snapshot=kept, destroyed=destroyed, error=error)
