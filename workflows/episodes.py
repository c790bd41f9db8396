"""Episodic memory, workflow side: when a session of an agent with `memory: {sessions: true}` goes
idle or ends, `index_session` (harness queue) indexes its log since the last time for the agent's
later sessions' memory_search. Indexing is best effort: a failure is logged, the session goes on."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from durable_agents.contracts import AGENTS_QUEUE, INDEX_SESSION, IndexRequest
from durable_agents.workflows.core import Session
from durable_agents.workflows.failures import failure_message


async def index_episodes(session: Session) -> None:
    state = session.state
    if not session.agent.memory.sessions or state.indexed_to >= session.next_offset:
        return
    try:
        state.indexed_to = await workflow.execute_activity(
            INDEX_SESSION,
            IndexRequest(session_id=session.id, agent=session.agent.name, from_offset=state.indexed_to),
            result_type=int,
            task_queue=AGENTS_QUEUE,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=10)),
            summary=f"index session from event {state.indexed_to}",
        )
    except ActivityError as e:
        workflow.logger.warning("session not indexed for memory_search: %s", failure_message(e))
