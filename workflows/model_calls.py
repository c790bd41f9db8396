"""The workflow side of `call_model`: one method that owns the activity's options (timeouts,
heartbeat, retry policy, summary) and keys the call's live deltas to the offset its event gets."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from durable_agents.contracts import (
    CALL_MODEL,
    CONTEXT_TOO_LONG,
    MODEL_NOT_CONFIGURED,
    MODEL_REQUEST_REJECTED,
    ModelRequest,
    ModelTurn,
)
from durable_agents.workflows.core import Session

MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=[MODEL_REQUEST_REJECTED, MODEL_NOT_CONFIGURED, CONTEXT_TOO_LONG],
)


class ModelCalls:
    def __init__(self, session: Session) -> None:
        self.session = session

    async def call(self, request: ModelRequest, summary: str) -> ModelTurn:
        """One model call (a turn or a compaction). Its event (the turn, compaction or error) is the
        next one recorded: its offset keys the call's live deltas."""
        turn: ModelTurn = await workflow.execute_activity(
            CALL_MODEL,
            request.model_copy(update={"event_offset": self.session.next_offset}),
            result_type=ModelTurn,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=15),
            retry_policy=MODEL_RETRY,
            summary=summary,
        )
        return turn
