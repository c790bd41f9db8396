"""Reading the failures activities and child workflows report: the one-line reason a session
records, the error type, and whether a sandbox is gone. Workflow code (no I/O)."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeout

from durable_agents.contracts import SANDBOX_LOST


def failure_message(error: BaseException) -> str:
    """The innermost cause as one line: the activity's own message, or which timeout fired."""
    cause = error.cause if isinstance(error, ActivityError) else error
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, TemporalTimeout):
        return f"{cause.type.name.lower().replace('_', '-')} timeout" if cause.type else "timeout"
    return str(cause) if cause is not None else str(error)


def error_type(error: ActivityError) -> str | None:
    """The ApplicationError type the activity raised (see contracts' named error types)."""
    cause = error.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def is_sandbox_lost(error: ActivityError) -> bool:
    """The container is gone, or its host's queue has no poller (schedule-to-start timeout)."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == SANDBOX_LOST:
        return True
    return isinstance(cause, TemporalTimeout) and cause.type == TimeoutType.SCHEDULE_TO_START
