"""Continue-as-new: when a run's history grows long (Temporal suggests it, or the agent's
`limits.history_events`), the session goes on in a new run that starts from the state carried
whole, with a memo linking it to the run before, so the whole log stays readable."""

from __future__ import annotations

from temporalio import workflow

from durable_agents.contracts import BYTES_PER_TOKEN, SessionCarry
from durable_agents.workflows.core import Session
from durable_agents.workflows.versions import RUN_LOG_BOUND, patched


def should_continue(session: Session) -> bool:
    """Temporal suggests it (history count or size), this run reached the agent's limit, or its
    events hold more text than the context (and at least `run_log_bytes`): a cached session then
    costs its worker about its context, not everything the run did (a compaction drops outputs
    from the context; the run's events keep them until the run ends)."""
    info = workflow.info()
    limits = session.agent.limits
    if info.is_continue_as_new_suggested() or info.get_current_history_length() >= limits.history_events:
        return True
    bound = limits.run_log_bytes
    if bound is None or session.log_bytes < bound:
        return False
    if session.log_bytes < BYTES_PER_TOKEN * session.context.estimated_tokens():  # asked only past the bound
        return False
    return patched(RUN_LOG_BOUND)  # asked only here: runs recorded before it replay as they ran


def continue_as_new(session: Session) -> None:
    """Hand the session to its next run (raises: the run ends here)."""
    carry: SessionCarry = session.state.model_copy(
        update={"first_offset": session.next_offset, "run": session.state.run + 1}
    )
    resolved = {"agent": session.agent, "search_attributes": session.search_attributes}
    workflow.continue_as_new(
        session.input.model_copy(update={"carry": carry, "schedule": None, **resolved}),
        memo={"first_offset": carry.first_offset, "run": carry.run, "previous_run_id": workflow.info().run_id},
    )
