"""How a run begins. A new session: for a plain client's session, `prepare_session` (its
agent_ref resolved, the namespace's search attributes learned); a scheduled run's task filled
in; the `session_started` event; the sandbox workers' secrets checked; MCP tools discovered;
an eager sandbox provisioned. A continued run: a `continued` event naming the previous run."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from durable_agents.contracts import (
    AGENT_NOT_FOUND,
    LAST_SCHEDULED_RESULT,
    LEARNED_SKILLS,
    PREPARE_SESSION,
    SA_AGENT_NAME,
    SA_AGENT_VERSION,
    SA_SESSION_STATUS,
    LearnedSkillsRequest,
    SessionSetup,
    SessionSetupRequest,
    Skill,
    UserInput,
    agent_version,
    attribute_pairs,
)
from durable_agents.workflows.core import Session
from durable_agents.workflows.failures import failure_message
from durable_agents.workflows.harness import render_task
from durable_agents.workflows.mcp import Mcp
from durable_agents.workflows.sandbox import Sandbox

SETUP_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=10), maximum_attempts=5, non_retryable_error_types=[AGENT_NOT_FOUND]
)


async def begin(session: Session, sandbox: Sandbox, mcp: Mcp) -> None:
    """The run's first event(s); `session.stop_reason` is set where the session cannot run."""
    inp, state = session.input, session.state
    if inp.carry is not None:
        previous = workflow.info().continued_run_id
        session.record(
            "continued",
            run_id=previous,
            text=f"run {state.run} of this session, continued from run {previous} "
            f"(events before offset {state.first_offset} are in the earlier runs)",
        )
        return
    if inp.agent is None or session.search_attributes is None:
        problem = await _prepare(session)
        if problem is not None:
            session.stop_reason = f"the session cannot start: {problem}"
            session.record("session_started", text=inp.task or "")
            session.error(session.stop_reason)
            return
    if inp.schedule is not None and inp.task:
        state.pending = [UserInput(text=await _scheduled_task(inp.task, inp.schedule))]
    task = state.pending[0].text if state.pending else ""
    if session.agent.learn_skills:
        await _learned_skills(session, task)
    agent = session.agent
    session.record(
        "session_started", text=task, model=agent.model.name, agent=agent, agent_version=agent_version(agent)
    )
    try:
        await sandbox.check_secrets()
        await mcp.discover()
    except ActivityError as e:  # an unknown secret: nothing will work as the agent file says
        session.stop_reason = f"the session cannot start: {failure_message(e)}"
        session.error(session.stop_reason)
        return
    if not state.pending:  # no first message: the session waits for one
        session.set_status("idle")
    if agent.sandbox.eager and state.sandbox.owns:
        try:
            await sandbox.ensure()
        except ActivityError as e:  # the first sandbox tool call tries again
            session.error(f"eager provisioning failed: {failure_message(e)}")


async def _prepare(session: Session) -> str | None:
    """A plain client's session: resolve its agent_ref and learn which search attributes the
    namespace has, in one activity; then set those the starter did not. The problem, or None."""
    inp = session.input
    try:
        setup: SessionSetup = await workflow.execute_activity(
            PREPARE_SESSION,
            SessionSetupRequest(
                agent_ref=inp.agent_ref if inp.agent is None else None,
                check_attributes=session.search_attributes is None,
            ),
            result_type=SessionSetup,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=SETUP_RETRY,
            summary=f"prepare: agent {inp.agent_ref}" if inp.agent is None else "prepare: search attributes",
        )
    except ActivityError as e:
        return failure_message(e)
    if setup.agent is not None:
        session.use_agent(setup.agent)
    if session.search_attributes is None:
        session.search_attributes = setup.search_attributes or False
        already = {pair.key.name for pair in workflow.info().typed_search_attributes}
        agent = session.agent
        wanted = {SA_AGENT_NAME: agent.name, SA_AGENT_VERSION: agent_version(agent), SA_SESSION_STATUS: "running"}
        pairs = attribute_pairs(session.search_attributes, {k: v for k, v in wanted.items() if k not in already})
        if pairs.search_attributes:
            workflow.upsert_search_attributes([pair.key.value_set(pair.value) for pair in pairs])
    return None


async def _learned_skills(session: Session, task: str) -> None:
    """The skills this agent learned in earlier sessions join its own: those that suit the task are
    suggested in the prompt, the rest listed by name. Without the registry the session goes on."""
    try:
        learned: list[Skill] = await workflow.execute_activity(
            LEARNED_SKILLS,
            LearnedSkillsRequest(agent=session.agent.name, task=task),
            result_type=list[Skill],
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary=f"learned skills of {session.agent.name}",
        )
    except ActivityError as e:
        session.error(f"learned skills are not available: {failure_message(e)}")
        return
    own = {s.name for s in session.agent.skills}
    skills = [*session.agent.skills, *(s for s in learned if s.name not in own)]
    session.use_agent(session.agent.model_copy(update={"skills": skills}))


async def _scheduled_task(template: str, schedule: str) -> str:
    """A scheduled run's task: {date} and {last_result} (the previous run's answer) filled in."""
    last = ""
    if "{last_result}" in template:
        try:
            last = await workflow.execute_activity(
                LAST_SCHEDULED_RESULT,
                schedule,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"last result of schedule {schedule}",
            )
        except ActivityError as e:
            workflow.logger.warning("no last result for %s: %s", schedule, failure_message(e))
    return render_task(template, workflow.now(), last)
