"""Recurring agents on Temporal Schedules: each action starts a one-shot SessionWorkflow.

What this module creates is a plain Temporal Schedule: the Web UI and `temporal schedule` show
and control it, and a schedule made there with a SessionWorkflow action shows here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError

from durable_agents.agent_files import agent_version, load_agent
from durable_agents.connection import ensure_search_attributes
from durable_agents.contracts import (
    AGENTS_QUEUE,
    SA_AGENT_NAME,
    SA_AGENT_VERSION,
    SESSION_WORKFLOW,
    AgentSpec,
    MemoryMount,
    SessionInput,
    SessionResult,
    attribute_pairs,
)
from durable_agents.errors import UserError
from durable_agents.workflows.harness import session_summary

OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ScheduleError(UserError, ValueError):
    """Bad schedule input: nothing was created or changed."""


def parse_every(text: str) -> timedelta:
    """'90s', '5m', '1h', '1d', '1h30m' → timedelta."""
    parts = re.findall(r"(\d+)([smhd])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip().replace(" ", ""):
        raise ScheduleError(f"--every {text!r}: use a duration like 30s, 5m, 1h, 1d or 1h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise ScheduleError(f"--every {text!r}: must be at least 1s")
    return timedelta(seconds=seconds)


def check_cron(cron: str) -> str:
    fields = cron.split()
    if cron.startswith("@"):
        return cron
    if len(fields) != 5:
        raise ScheduleError(f"--cron {cron!r}: expected 5 fields (minute hour day-of-month month day-of-week)")
    if not all(re.fullmatch(r"[0-9A-Za-z*/,\-?]+", f) for f in fields):
        raise ScheduleError(f"--cron {cron!r}: unexpected characters")
    return cron


def check_timezone(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"--timezone {name!r}: unknown time zone (e.g. Europe/Berlin, UTC)") from None
    return name


@dataclass
class ScheduleRequest:
    name: str
    agent_path: str
    prompt: str
    cron: str | None = None
    every: str | None = None
    timezone: str | None = None
    overlap: str = "skip"
    paused: bool = False


def _spec(cron: str | None, every: str | None, timezone: str | None) -> ScheduleSpec:
    if not cron and not every:
        raise ScheduleError("give --cron or --every")
    return ScheduleSpec(
        cron_expressions=[check_cron(cron)] if cron else [],
        intervals=[ScheduleIntervalSpec(every=parse_every(every))] if every else [],
        time_zone_name=check_timezone(timezone),
    )


def session_action(
    name: str,
    agent: AgentSpec,
    prompt: str,
    with_attributes: bool | list[str],
    memory: list[MemoryMount] | None = None,
) -> ScheduleActionStartWorkflow:
    if not prompt.strip():
        raise ScheduleError("the prompt is empty")
    attributes = attribute_pairs(with_attributes, {SA_AGENT_NAME: agent.name, SA_AGENT_VERSION: agent_version(agent)})
    return ScheduleActionStartWorkflow(
        SESSION_WORKFLOW,
        SessionInput(
            agent=agent,
            task=prompt,
            one_shot=True,
            schedule=name,
            search_attributes=with_attributes,
            memory=memory or [],
        ),
        id=name,  # Temporal appends each run's time: every run is its own session id
        task_queue=AGENTS_QUEUE,
        typed_search_attributes=attributes,
        static_summary=f"{session_summary(agent.name, prompt)} (schedule {name})",
    )


async def _memory_of(agent: AgentSpec) -> list[MemoryMount]:
    """The stores the agent names, resolved now: every run mounts them."""
    if not agent.memory.stores:
        return []
    from durable_agents.cli_memory import resolve

    return await resolve(agent.memory.stores)


async def create(client: Client, req: ScheduleRequest) -> ScheduleHandle:
    if not _NAME.match(req.name):
        raise ScheduleError(f"schedule name {req.name!r}: letters, digits, '.', '_' and '-' only")
    if req.overlap not in OVERLAP:
        raise ScheduleError(f"--overlap {req.overlap!r}: one of {', '.join(OVERLAP)}")
    agent = load_agent(req.agent_path)
    spec = _spec(req.cron, req.every, req.timezone)
    with_attributes = await ensure_search_attributes(client)
    schedule = Schedule(
        action=session_action(req.name, agent, req.prompt, with_attributes, memory=await _memory_of(agent)),
        spec=spec,
        policy=SchedulePolicy(overlap=OVERLAP[req.overlap]),
        state=ScheduleState(paused=req.paused, note=f"agent {agent.name} from {req.agent_path}"),
    )
    try:
        return await client.create_schedule(req.name, schedule)
    except ScheduleAlreadyRunningError:
        raise ScheduleError(f"a schedule named {req.name!r} already exists") from None
    except RPCError as e:
        raise ScheduleError(f"Temporal refused the schedule: {e.message}") from None


async def session_input(client: Client, action: ScheduleActionStartWorkflow) -> SessionInput | None:
    """The SessionInput a schedule's action starts with (None for other workflows)."""
    if action.workflow != SESSION_WORKFLOW or not action.args:
        return None
    first: Any = action.args[0]
    if isinstance(first, SessionInput):
        return first
    decoded = await client.data_converter.decode([first], [SessionInput])
    return decoded[0] if isinstance(decoded[0], SessionInput) else None


async def update(
    client: Client,
    name: str,
    *,
    agent_path: str | None = None,
    prompt: str | None = None,
    cron: str | None = None,
    every: str | None = None,
    timezone: str | None = None,
    overlap: str | None = None,
) -> None:
    if overlap is not None and overlap not in OVERLAP:
        raise ScheduleError(f"--overlap {overlap!r}: one of {', '.join(OVERLAP)}")
    agent = load_agent(agent_path) if agent_path else None
    new_spec = _spec(cron, every, timezone) if (cron or every) else None
    if timezone and not new_spec:
        check_timezone(timezone)
    handle = client.get_schedule_handle(name)
    current = await handle.describe()
    old_input = await session_input(client, current.schedule.action)  # type: ignore[arg-type]
    if old_input is None:
        raise ScheduleError(f"schedule {name!r} does not start agent sessions")
    action = session_action(
        name,
        agent or old_input.agent,
        prompt if prompt is not None else old_input.task,
        old_input.search_attributes,
        # A new agent file: its stores, resolved now; otherwise the mounts the schedule had.
        memory=await _memory_of(agent) if agent is not None else old_input.memory,
    )

    def change(inp: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = inp.description.schedule
        schedule.action = action
        if new_spec is not None:
            schedule.spec = new_spec
        elif timezone:
            schedule.spec.time_zone_name = timezone
        if overlap is not None:
            schedule.policy.overlap = OVERLAP[overlap]
        return ScheduleUpdate(schedule=schedule)

    await handle.update(change)


async def backfill(client: Client, name: str, start: datetime, end: datetime) -> None:
    if end <= start:
        raise ScheduleError("--to must be after --from")
    await client.get_schedule_handle(name).backfill(
        ScheduleBackfill(start_at=start, end_at=end, overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    )


async def last_result(client: Client, workflow_id: str) -> str:
    """One line about a run: its status and the first line of its answer."""
    handle = client.get_workflow_handle(workflow_id, result_type=SessionResult)
    try:
        description = await handle.describe()
    except RPCError:
        return "?"
    status = description.status
    if status == WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        answer = (result.answer or "").strip().splitlines()
        return f"{result.status}: {answer[0][:60] if answer else '(no answer)'}"
    return status.name.lower() if status else "?"
