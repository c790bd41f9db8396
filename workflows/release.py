"""SandboxRelease: what a session's sandbox needs once the session has answered — a last snapshot
of /workspace where it has unsaved changes, then the container removed — as a workflow of its own,
so the answer does not wait for Docker.

The session starts it as an abandoned child (its id: `<session id>-sandbox-release`) on the
sandbox's host queue, where that host's sandbox worker runs it, and ends without waiting. Both
steps are one activity on the same queue (`release_sandbox`, eagerly started by the worker that
runs the workflow): durable, retried, and carried out after a sandbox worker's restart. What
cannot be done (the host never comes back) ends here with the reason; the host's reaper removes
a container whose session and release are both over. While a release runs, the reaper leaves its
container alone (the snapshot comes first).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agents.contracts import RELEASE_SANDBOX, SANDBOX_RELEASE_WORKFLOW, ReleaseRequest, ReleaseResult
    from durable_agents.workflows.failures import failure_message
    from durable_agents.workflows.sandbox import SANDBOX_RETRY


@workflow.defn(name=SANDBOX_RELEASE_WORKFLOW)
class SandboxRelease:
    @workflow.run
    async def run(self, req: ReleaseRequest) -> ReleaseResult:
        try:
            released: ReleaseResult = await workflow.execute_activity(
                RELEASE_SANDBOX,
                req,
                result_type=ReleaseResult,
                task_queue=req.handle.host_queue,
                schedule_to_start_timeout=timedelta(seconds=req.host_wait_s),
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=SANDBOX_RETRY,
                summary=("snapshot, then " if req.snapshot else "") + f"destroy: {req.handle.sandbox_id[:12]}",
            )
        except ActivityError as e:  # the host's reaper removes the container once this has ended
            return ReleaseResult(snapshot=req.previous, destroyed=False, error=f"not released: {failure_message(e)}")
        return released
