"""Activities for scheduled sessions (harness side): the previous run's answer, for `{last_result}`."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus

from durable_agents.contracts import LAST_SCHEDULED_RESULT, SessionResult
from durable_agents.errors import translate_errors


class ScheduleActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name=LAST_SCHEDULED_RESULT)
    @translate_errors
    async def last_scheduled_result(self, schedule_id: str) -> str:
        """The answer of the schedule's most recent completed run before this one ("" if none)."""
        me = activity.info().workflow_id
        query = f'TemporalScheduledById = "{schedule_id}" AND ExecutionStatus = "Completed"'
        latest = None
        async for wf in self._client.list_workflows(query, limit=50):
            if wf.id != me and (
                latest is None or (wf.close_time and latest.close_time and wf.close_time > latest.close_time)
            ):
                latest = wf
        if latest is None:
            return ""
        handle = self._client.get_workflow_handle(latest.id, run_id=latest.run_id, result_type=SessionResult)
        if (await handle.describe()).status != WorkflowExecutionStatus.COMPLETED:
            return ""
        result = await handle.result()
        return result.answer or ""
