"""`client.beta.deployments` and `deployment_runs`: an agent run on a cron schedule (with its IANA
time zone), on Temporal Schedules. Each scheduled run is a one-shot session (a SessionWorkflow
whose id is the deployment's plus the run's time); `run` starts one at once. Pause and unpause
act on the schedule."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
)
from temporalio.service import RPCError

from durable_agents.api.definitions import Definitions
from durable_agents.api.http import (
    Gate,
    Param,
    body_of,
    guarded,
    invalid,
    not_found,
    page_of,
    patch_metadata,
    query_bool,
)
from durable_agents.api.store import Record, new_id, now
from durable_agents.client import start_agent_session
from durable_agents.connection import ensure_search_attributes
from durable_agents.contracts import AgentSpec, MemoryMount
from durable_agents.schedules import ScheduleError, check_cron, check_timezone, session_action

KIND, RUN = "deployment", "deployment_run"


class AgentRefParam(Param):
    type: Literal["agent"] = "agent"
    id: str
    version: int | None = None


class ScheduleParam(Param):
    type: Literal["cron"]
    expression: str = Field(min_length=1)
    timezone: str = Field(min_length=1)


class DeploymentCreate(Param):
    name: str = Field(min_length=1, max_length=256)
    agent: str | AgentRefParam
    environment_id: str
    initial_events: list[dict[str, Any]] = Field(min_length=1)
    schedule: ScheduleParam | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None
    vault_ids: list[str] | None = None
    budget: dict[str, Any] | None = None
    resources: list[dict[str, Any]] | None = None


class DeploymentUpdate(Param):
    name: str | None = None
    agent: str | AgentRefParam | None = None
    environment_id: str | None = None
    initial_events: list[dict[str, Any]] | None = None
    schedule: ScheduleParam | None = None
    description: str | None = None
    metadata: dict[str, str | None] | None = None
    vault_ids: list[str] | None = None


def _prompt(events: list[dict[str, Any]]) -> str:
    texts = []
    for i, event in enumerate(events):
        if event.get("type") != "user.message":
            raise invalid(f"initial_events.{i}.type: {event.get('type')!r} is not supported yet (user.message only)")
        blocks = event.get("content") or []
        if not blocks or any(b.get("type") != "text" for b in blocks):
            raise invalid(f"initial_events.{i}.content: a list of text blocks")
        texts.append("\n".join(str(b.get("text", "")) for b in blocks))
    return "\n\n".join(texts)


def _spec(schedule: ScheduleParam) -> ScheduleSpec:
    try:
        return ScheduleSpec(
            cron_expressions=[check_cron(schedule.expression)], time_zone_name=check_timezone(schedule.timezone)
        )
    except ScheduleError as e:
        raise invalid(f"schedule: {e}") from None


class Deployments(Definitions):
    async def get(self, deployment_id: str) -> Record:
        record = await self.store.get(KIND, deployment_id)
        if record is None:
            raise not_found(f"no deployment {deployment_id!r}")
        return record

    async def _session_spec(self, body: dict[str, Any]) -> AgentSpec:
        agent = body["agent"]
        _, spec = await self.session_agent(
            agent["id"], agent["version"], body["environment_id"], body.get("vault_ids") or []
        )
        return spec

    async def _resources(self, resources: list[dict[str, Any]]) -> list[tuple[MemoryMount, dict[str, Any]]]:
        """A deployment's resources: memory stores, attached to each of its sessions."""
        for i, resource in enumerate(resources):
            if resource.get("type") != "memory_store":
                raise invalid(f"resources.{i}.type: {resource.get('type')!r} resources are not supported yet")
        return await self.memory_resources(resources)

    async def _mounts(self, body: dict[str, Any]) -> list[MemoryMount]:
        """The memory mounts of a run, as the stores are now (a deleted store is refused)."""
        return [mount for mount, _ in await self._resources(body.get("resources") or [])]

    async def _answer(self, record: Record) -> dict[str, Any]:
        body = record.body
        schedule = body.get("schedule")
        if schedule is not None:
            upcoming: list[str] = []
            try:
                described = await self.client.get_schedule_handle(record.id).describe()
                upcoming = [t.isoformat() for t in described.info.next_action_times[:5]]
            except RPCError:
                pass
            schedule = {**schedule, "upcoming_runs_at": upcoming}
        return {
            "id": record.id,
            "type": "deployment",
            "name": body["name"],
            "description": body.get("description"),
            "agent": body["agent"],
            "environment_id": body["environment_id"],
            "initial_events": body["initial_events"],
            "schedule": schedule,
            "status": body.get("status", "active"),
            "paused_reason": {"type": "manual"} if body.get("status") == "paused" else None,
            "metadata": body.get("metadata") or {},
            "vault_ids": body.get("vault_ids") or [],
            "resources": body.get("resources") or [],
            "budget": None,
            "created_at": record.created_at.isoformat(),
            "updated_at": body.get("updated_at") or record.created_at.isoformat(),
            "archived_at": record.archived_at.isoformat() if record.archived_at else None,
        }

    async def _put_schedule(self, deployment_id: str, body: dict[str, Any], create: bool) -> None:
        """The deployment's Temporal Schedule, made or brought up to date (none without a schedule)."""
        handle = self.client.get_schedule_handle(deployment_id)
        if body.get("schedule") is None:
            if not create:
                try:
                    await handle.delete()
                except RPCError:
                    pass
            return
        spec = await self._session_spec(body)
        action: ScheduleActionStartWorkflow = session_action(
            deployment_id,
            spec,
            _prompt(body["initial_events"]),
            await ensure_search_attributes(self.client),
            memory=await self._mounts(body),
        )
        schedule = Schedule(
            action=action,
            spec=_spec(ScheduleParam.model_validate(body["schedule"])),
            state=ScheduleState(paused=body.get("status") == "paused", note=f"deployment {body['name']}"),
        )
        if create:
            await self.client.create_schedule(deployment_id, schedule)
        else:
            try:
                await handle.update(lambda _: _replace(schedule))
            except RPCError:
                await self.client.create_schedule(deployment_id, schedule)

    async def create(self, request: Request) -> Response:
        params = await body_of(request, DeploymentCreate)
        ref = params.agent if isinstance(params.agent, AgentRefParam) else AgentRefParam(id=params.agent)
        agent = await self.agents.version(ref.id, ref.version)
        await self.environments.get(params.environment_id)
        _prompt(params.initial_events)
        if params.schedule is not None:
            _spec(params.schedule)
        body = {
            "name": params.name,
            "description": params.description,
            "agent": {"type": "agent", "id": agent.id, "version": agent.version},
            "environment_id": params.environment_id,
            "initial_events": params.initial_events,
            "schedule": params.schedule.model_dump() if params.schedule else None,
            "metadata": params.metadata or {},
            "vault_ids": params.vault_ids or [],
            "resources": [shown for _, shown in await self._resources(params.resources or [])],
            "status": "active",
        }
        deployment_id = new_id("depl")
        await self._put_schedule(deployment_id, body, create=True)
        record = await self.store.put(KIND, deployment_id, body)
        return JSONResponse(await self._answer(record))

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(await self._answer(await self.get(request.path_params["deployment_id"])))

    async def update(self, request: Request) -> Response:
        record = await self.get(request.path_params["deployment_id"])
        params = await body_of(request, DeploymentUpdate)
        given = params.model_dump(exclude_unset=True)
        body = dict(record.body)
        for key in ("name", "description", "environment_id", "initial_events", "vault_ids"):
            if key in given and given[key] is not None:
                body[key] = given[key]
        if "agent" in given and params.agent is not None:
            ref = params.agent if isinstance(params.agent, AgentRefParam) else AgentRefParam(id=params.agent)
            agent = await self.agents.version(ref.id, ref.version)
            body["agent"] = {"type": "agent", "id": agent.id, "version": agent.version}
        if "schedule" in given:
            body["schedule"] = params.schedule.model_dump() if params.schedule else None
        if "metadata" in given:
            body["metadata"] = patch_metadata(body.get("metadata") or {}, params.metadata)
        body["updated_at"] = now().isoformat()
        _prompt(body["initial_events"])
        await self._put_schedule(record.id, body, create=record.body.get("schedule") is None)
        await self.store.replace(KIND, record.id, body)
        return JSONResponse(await self._answer(await self.get(record.id)))

    async def list(self, request: Request) -> Response:
        include = query_bool(request, "include_archived")
        status, agent_id = request.query_params.get("status"), request.query_params.get("agent_id")
        found = []
        for r in await self.store.all(KIND, include_archived=include):
            if status and r.body.get("status", "active") != status:
                continue
            if agent_id and r.body["agent"]["id"] != agent_id:
                continue
            found.append(await self._answer(r))
        return page_of(request, found)

    async def _set_status(self, request: Request, status: str) -> Response:
        record = await self.get(request.path_params["deployment_id"])
        if record.body.get("schedule") is not None:
            handle = self.client.get_schedule_handle(record.id)
            await (
                handle.pause(note="paused through the API") if status == "paused" else handle.unpause(note="unpaused")
            )
        await self.store.replace(KIND, record.id, {**record.body, "status": status, "updated_at": now().isoformat()})
        return JSONResponse(await self._answer(await self.get(record.id)))

    async def pause(self, request: Request) -> Response:
        return await self._set_status(request, "paused")

    async def unpause(self, request: Request) -> Response:
        return await self._set_status(request, "active")

    async def archive(self, request: Request) -> Response:
        record = await self.get(request.path_params["deployment_id"])
        if record.body.get("schedule") is not None:
            try:
                await self.client.get_schedule_handle(record.id).delete()
            except RPCError:
                pass
        await self.store.archive(KIND, record.id)
        return JSONResponse(await self._answer(await self.get(record.id)))

    async def run(self, request: Request) -> Response:
        """A run at once: a one-shot session of the deployment's agent, with its first message."""
        record = await self.get(request.path_params["deployment_id"])
        spec = await self._session_spec(record.body)
        session_id = new_id("sesn")
        await start_agent_session(
            self.client,
            spec,
            _prompt(record.body["initial_events"]),
            session_id=session_id,
            one_shot=True,
            memory=await self._mounts(record.body),
        )
        body = {
            "deployment_id": record.id,
            "agent": record.body["agent"],
            "session_id": session_id,
            "trigger": "manual",
        }
        run = await self.store.put(RUN, new_id("drun"), body, parent=record.id)
        return JSONResponse(_run_answer(run))

    async def _runs(self, deployment_id: str | None) -> list[dict[str, Any]]:
        found = [_run_answer(r) for r in await self.store.all(RUN, parent=deployment_id)]
        deployments = [await self.get(deployment_id)] if deployment_id else await self.store.all(KIND)
        for deployment in deployments:
            query = f'TemporalScheduledById = "{deployment.id}"'
            async for wf in self.client.list_workflows(query):
                found.append(
                    {
                        "id": f"drun_{hashlib.sha256(wf.id.encode()).hexdigest()[:24]}",
                        "type": "deployment_run",
                        "deployment_id": deployment.id,
                        "agent": deployment.body["agent"],
                        "session_id": wf.id,
                        "created_at": wf.start_time.isoformat(),
                        "trigger_context": {"type": "schedule", "scheduled_at": wf.start_time.isoformat()},
                        "error": None,
                    }
                )
        found.sort(key=lambda r: r["created_at"], reverse=True)
        return found

    async def list_runs(self, request: Request) -> Response:
        runs = await self._runs(request.query_params.get("deployment_id"))
        trigger = request.query_params.get("trigger_type")
        if trigger:
            runs = [r for r in runs if r["trigger_context"]["type"] == trigger]
        return page_of(request, runs, max_limit=1000)

    async def retrieve_run(self, request: Request) -> Response:
        wanted = request.path_params["run_id"]
        for run in await self._runs(None):
            if run["id"] == wanted:
                return JSONResponse(run)
        raise not_found(f"no deployment run {wanted!r}")

    def routes(self, gate: Gate) -> list[Route]:
        one = "/v1/deployments/{deployment_id}"
        return [
            Route("/v1/deployments", guarded(gate, self.create), methods=["POST"]),
            Route("/v1/deployments", guarded(gate, self.list), methods=["GET"]),
            Route(one, guarded(gate, self.retrieve), methods=["GET"]),
            Route(one, guarded(gate, self.update), methods=["POST"]),
            Route(f"{one}/archive", guarded(gate, self.archive), methods=["POST"]),
            Route(f"{one}/pause", guarded(gate, self.pause), methods=["POST"]),
            Route(f"{one}/unpause", guarded(gate, self.unpause), methods=["POST"]),
            Route(f"{one}/run", guarded(gate, self.run), methods=["POST"]),
            Route("/v1/deployment_runs", guarded(gate, self.list_runs), methods=["GET"]),
            Route("/v1/deployment_runs/{run_id}", guarded(gate, self.retrieve_run), methods=["GET"]),
        ]


def _run_answer(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "type": "deployment_run",
        "deployment_id": r.body["deployment_id"],
        "agent": r.body["agent"],
        "session_id": r.body["session_id"],
        "created_at": r.created_at.isoformat(),
        "trigger_context": {"type": "manual"},
        "error": None,
    }


def _replace(schedule: Schedule) -> ScheduleUpdate:
    return ScheduleUpdate(schedule=schedule)
