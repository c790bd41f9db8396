"""`client.beta.sessions`: a session IS a `SessionWorkflow` (its id is the workflow id), so it
shows in the Temporal UI and `da events` / `follow` work on it; what the API adds (title,
metadata, the agent version, environment, vaults, budget) is kept in the API's database.

Statuses: the workflow's `running` is `running`; `idle` and `waiting` (for an approval or a
client tool) are `idle`; `done` and `failed` are `terminated`. Sessions started by `da start` or a
plain Temporal client have no row: they are listed and read from Temporal alone.

Beside the SDK's fields a session has `stats.turns` (model calls so far, where its state was read)
and `temporal`: its namespace, workflow id and page in the Temporal UI (TEMPORAL_UI_URL).
"""

from __future__ import annotations

import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from durable_agents import session_log
from durable_agents.api.agents import answer as agent_answer
from durable_agents.api.definitions import Definitions
from durable_agents.api.http import (
    Gate,
    Param,
    body_of,
    invalid,
    not_found,
    page_of,
    patch_metadata,
    query_bool,
    query_time,
    resource_routes,
)
from durable_agents.api.memory_stores import KIND as MEMORY_STORE
from durable_agents.api.memory_stores import mount_name
from durable_agents.api.store import now
from durable_agents.client import start_agent_session
from durable_agents.contracts import (
    SA_AGENT_NAME,
    SA_SESSION_STATUS,
    SEND_MESSAGE,
    SESSION_WORKFLOW,
    SET_BUDGET,
    AgentSpec,
    GitSource,
    MemoryMount,
    OutcomeState,
    SessionState,
    WorkspaceSeed,
)

KIND = "session"
DELETED = "deleted_session"  # what the API has deleted while Temporal removes it in the background
STATUS = {"running": "running", "waiting": "idle", "idle": "idle", "done": "terminated", "failed": "terminated"}
STATUSES = ("rescheduling", "running", "idle", "terminated")


class AgentRefParam(Param):
    type: Literal["agent"] = "agent"
    id: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1)


class MoneyParam(Param):
    amount: str
    currency: Literal["USD"]


class BudgetParam(Param):
    type: Literal["limit"]
    max_list_cost: MoneyParam


class CheckoutParam(Param):
    type: Literal["branch", "commit"]
    name: str | None = None
    sha: str | None = None


class ResourceParam(Param):
    type: Literal["github_repository", "file", "memory_store"]
    url: str | None = None
    authorization_token: str | None = None
    checkout: CheckoutParam | None = None
    mount_path: str | None = None
    file_id: str | None = None
    memory_store_id: str | None = None
    access: str | None = None
    instructions: str | None = None


class SessionCreate(Param):
    agent: str | AgentRefParam | dict[str, Any]
    environment_id: str = Field(min_length=1)
    title: str | None = None
    metadata: dict[str, str] | None = None
    vault_ids: list[str] | None = None
    initial_events: list[dict[str, Any]] | None = Field(default=None, max_length=50)
    budget: BudgetParam | None = None
    resources: list[ResourceParam] | None = None


class SessionUpdate(Param):
    title: str | None = None
    metadata: dict[str, str | None] | None = None
    budget: BudgetParam | None = None
    vault_ids: list[str] | None = None
    agent: dict[str, Any] | None = None


def _usd(budget: BudgetParam | None) -> float | None:
    if budget is None:
        return None
    try:
        amount = Decimal(budget.max_list_cost.amount)
    except InvalidOperation:
        raise invalid(f"budget.max_list_cost.amount: {budget.max_list_cost.amount!r} is not a number") from None
    if amount <= 0:
        raise invalid("budget.max_list_cost.amount: must be more than 0")
    return float(amount)


def _first_message(events: list[dict[str, Any]] | None) -> list[str]:
    texts = []
    for i, event in enumerate(events or []):
        if event.get("type") != "user.message":
            raise invalid(f"initial_events.{i}.type: {event.get('type')!r} is not supported yet (user.message only)")
        blocks = event.get("content") or []
        if not blocks or any(b.get("type") != "text" or not isinstance(b.get("text"), str) for b in blocks):
            raise invalid(f"initial_events.{i}.content: a list of text blocks")
        texts.append("\n".join(b["text"] for b in blocks))
    return texts


def _listed_agent(listed: Any) -> str | None:
    attrs = listed.typed_search_attributes
    name = attrs.get(SearchAttributeKey.for_keyword(SA_AGENT_NAME)) if attrs is not None else None
    return str(name) if name else None


def _plain_agent(spec: AgentSpec | str | None) -> dict[str, Any]:
    """The agent of a session the API did not make, as the SDK's agent object: from its recorded
    definition, or (in a listing) only its name."""
    name = spec.name if isinstance(spec, AgentSpec) else spec or "unknown"
    model = spec.model.name if isinstance(spec, AgentSpec) else "unknown"
    return {
        "id": f"agent_local_{name}",
        "type": "agent",
        "name": name,
        "description": spec.description if isinstance(spec, AgentSpec) else None,
        "model": {"id": model},
        "system": spec.system if isinstance(spec, AgentSpec) else None,
        "tools": [],
        "mcp_servers": [],
        "skills": [],
        "execution_identity": {"type": "service_account"},
        "version": 1,
    }


def outcome_evaluation(o: OutcomeState) -> dict[str, Any]:
    """An outcome's state as the SDK's `outcome_evaluation` resource."""
    return {
        "type": "outcome_evaluation",
        "outcome_id": o.outcome.id,
        "description": o.outcome.description,
        "iteration": o.iteration,
        "result": o.result,
        "explanation": o.explanation,
        "completed_at": o.completed_at.isoformat() if o.completed_at else None,
    }


@dataclass
class Sessions(Definitions):
    temporal_ui_url: str = "http://localhost:8233"  # where the `temporal` link of a session points

    # --- reading ------------------------------------------------------------------------------

    async def _state(self, session_id: str) -> SessionState:
        if await self.store.get(DELETED, session_id) is not None:
            raise not_found(f"no session {session_id!r} (it was deleted)")
        try:
            return await session_log.session_state(self.client, session_id)
        except RPCError as e:
            if e.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise not_found(f"no session {session_id!r}") from None
            raise

    async def _answer(self, session_id: str, state: SessionState | None = None, listed: Any = None) -> dict[str, Any]:
        """The session as the SDK's `Session`: its row (if the API made it), its workflow's state."""
        record = await self.store.get(KIND, session_id)
        if listed is None:
            state = await self._state(session_id)
        body = record.body if record else {}
        if record is not None and "agent_id" in body:
            agent_record = await self.agents.version(body["agent_id"], body["agent_version"])
            agent = {**agent_answer(agent_record), "type": "agent"}
            for key in ("created_at", "updated_at", "archived_at"):
                agent.pop(key, None)
            created, archived = record.created_at, record.archived_at
        else:
            # Listed: from the listing's search attributes, never a query per session (one whose
            # worker is gone would hold the whole list up).
            agent = (
                _plain_agent(_listed_agent(listed))
                if listed is not None
                else await self._agent_of_plain_session(session_id)
            )
            started = listed.start_time if listed is not None else None
            created = record.created_at if record else started or datetime.now(UTC)
            archived = record.archived_at if record else None
        if state is not None:
            status = STATUS.get(state.status, "idle")
            usage = {
                "input_tokens": state.usage.input_tokens,
                "output_tokens": state.usage.output_tokens,
                "cache_read_input_tokens": state.usage.cache_read_input_tokens,
                "cache_creation": {"ephemeral_5m_input_tokens": state.usage.cache_creation_input_tokens},
            }
            if state.cost_usd is not None:
                usage["list_cost"] = {"amount": f"{state.cost_usd:.6f}", "currency": "USD"}
        else:
            attrs = listed.typed_search_attributes if listed is not None else None
            ours = attrs.get(SearchAttributeKey.for_keyword(SA_SESSION_STATUS)) if attrs is not None else None
            closed = listed is not None and listed.status not in (None, WorkflowExecutionStatus.RUNNING)
            status = "terminated" if closed else STATUS.get(str(ours), "idle")
            usage = {}
        stats: dict[str, Any] = {"duration_seconds": (datetime.now(UTC) - created).total_seconds()}
        if state is not None:
            stats["turns"] = state.turns  # ours: model calls so far
        updated = body.get("updated_at") or created.isoformat()
        return {
            "id": session_id,
            "type": "session",
            "title": body.get("title"),
            "metadata": body.get("metadata") or {},
            "agent": agent,
            "environment_id": body.get("environment_id", "env_default"),
            "vault_ids": body.get("vault_ids", []),
            "budget": body.get("budget"),
            "resources": body.get("resources") or [],
            "outcome_evaluations": [outcome_evaluation(o) for o in state.outcomes] if state is not None else [],
            "status": status,
            "usage": usage,
            "stats": stats,
            "created_at": created.isoformat(),
            "updated_at": updated,
            "archived_at": archived.isoformat() if archived else None,
            "deployment_id": body.get("deployment_id"),
            "temporal": self._temporal(session_id),  # ours: the session's workflow, and its page in the Temporal UI
        }

    def _temporal(self, session_id: str) -> dict[str, str]:
        namespace = self.client.namespace
        quote = urllib.parse.quote
        path = f"/namespaces/{quote(namespace, safe='')}/workflows/{quote(session_id, safe='')}"
        return {"namespace": namespace, "workflow_id": session_id, "ui_url": self.temporal_ui_url.rstrip("/") + path}

    async def _agent_of_plain_session(self, session_id: str) -> dict[str, Any]:
        """A session `da start` or a plain client made: its agent as the session log recorded it."""
        first = await session_log.read_events(self.client, session_id, 0, 1)
        spec = getattr(first[0], "agent", None) if first else None
        return _plain_agent(spec if isinstance(spec, AgentSpec) else None)

    # --- routes -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        params = await body_of(request, SessionCreate)
        ref = params.agent
        if isinstance(ref, str):
            agent_id, version = ref, None
        elif isinstance(ref, AgentRefParam):
            agent_id, version = ref.id, ref.version
        else:
            if ref.get("type") == "agent_with_overrides":
                raise invalid("agent.type: 'agent_with_overrides' is not supported yet (create a new agent version)")
            parsed = AgentRefParam.model_validate(ref)
            agent_id, version = parsed.id, parsed.version
        record, spec = await self.session_agent(
            agent_id, version, params.environment_id, params.vault_ids or [], _usd(params.budget)
        )
        workspace = self._workspace(params.resources or [])
        attached = await self._memory(params.resources or [])
        memory = [mount for mount, _ in attached]
        texts = _first_message(params.initial_events)
        session_id = f"sesn_{uuid.uuid4().hex[:24]}"
        created = now()
        body = {
            "agent_id": record.id,
            "agent_version": record.version,
            "environment_id": params.environment_id,
            "title": params.title,
            "metadata": params.metadata or {},
            "vault_ids": params.vault_ids or [],
            "budget": params.budget.model_dump() if params.budget else None,
            "updated_at": created.isoformat(),
            "resources": [resource for _, resource in attached],
        }
        await self.store.put(KIND, session_id, body)
        summary = f"{record.body['definition']['name']}: {params.title or 'session'}"
        handle = await start_agent_session(
            self.client,
            spec,
            None,
            session_id=session_id,
            workspace=workspace,
            source=f"api agent {record.id} v{record.version}",
            summary=summary,
            memory=memory,
        )
        for text in texts:
            await handle.execute_update(SEND_MESSAGE, args=[text, f"sevt_{uuid.uuid4().hex[:24]}"])
        return JSONResponse(await self._answer(session_id))

    async def _memory(self, resources: list[ResourceParam]) -> list[tuple[MemoryMount, dict[str, Any]]]:
        """The memory stores a session attaches, each mounted at /mnt/memory/<its name's slug>, and
        the resource as the session shows it (name and description as they were at attach time)."""
        mounts: list[tuple[MemoryMount, dict[str, Any]]] = []
        for i, resource in enumerate(resources):
            if resource.type != "memory_store":
                continue
            record = await self.store.get(MEMORY_STORE, resource.memory_store_id or "")
            if record is None:
                raise invalid(f"resources.{i}.memory_store_id: no memory store {resource.memory_store_id!r}")
            if record.archived_at is not None:
                raise invalid(f"resources.{i}.memory_store_id: memory store {record.id} is archived")
            access = resource.access or "read_write"
            if access not in ("read_write", "read_only"):
                raise invalid(f"resources.{i}.access: {access!r} is not read_write or read_only")
            if resource.instructions and len(resource.instructions) > 4096:
                raise invalid(f"resources.{i}.instructions: longer than 4,096 characters")
            name = mount_name(record.body["name"])
            if any(m.name == name for m, _ in mounts):
                raise invalid(f"resources.{i}: two memory stores would both be mounted at /mnt/memory/{name}")
            mount = MemoryMount(
                store_id=record.id,
                name=name,
                access=access,  # type: ignore[arg-type]
                description=record.body.get("description") or "",
                instructions=resource.instructions or "",
            )
            shown = {
                "type": "memory_store",
                "memory_store_id": record.id,
                "mount_path": mount.path,
                "access": access,
                "instructions": resource.instructions,
                "name": record.body["name"],
                "description": mount.description,
            }
            mounts.append((mount, shown))
        return mounts

    def _workspace(self, resources: list[ResourceParam]) -> WorkspaceSeed | None:
        git = None
        for i, resource in enumerate(resources):
            if resource.type == "memory_store":
                continue
            if resource.type != "github_repository" or not resource.url:
                raise invalid(f"resources.{i}.type: {resource.type!r} resources are not supported yet")
            if resource.authorization_token:
                raise invalid(
                    f"resources.{i}.authorization_token: store it in a vault; tokens in requests are not kept"
                )
            ref = resource.checkout.name if resource.checkout and resource.checkout.type == "branch" else None
            git = GitSource(url=resource.url, ref=ref)
        return WorkspaceSeed(git=git) if git else None

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(await self._answer(request.path_params["session_id"]))

    async def list(self, request: Request) -> Response:
        q = request.query_params
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid(f"order: {order!r} is not one of asc, desc")
        statuses = set(q.getlist("statuses[]"))
        if unknown := statuses - set(STATUSES):
            raise invalid(f"statuses: {sorted(unknown)[0]!r} is not one of {', '.join(STATUSES)}")
        include = query_bool(request, "include_archived")
        gt, gte = query_time(request, "created_at[gt]"), query_time(request, "created_at[gte]")
        lt, lte = query_time(request, "created_at[lt]"), query_time(request, "created_at[lte]")
        agent_id = q.get("agent_id")
        rows = {r.id: r for r in await self.store.all(KIND)}
        deleted = {r.id for r in await self.store.all(DELETED)}
        found = []
        async for wf in self.client.list_workflows(f'WorkflowType="{SESSION_WORKFLOW}"'):
            if "/sub-" in wf.id or wf.id in deleted:
                continue  # a subagent (one of a session's threads), or deleted
            row = rows.get(wf.id)
            if row is not None and row.archived_at is not None and not include:
                continue
            if agent_id and (row is None or row.body["agent_id"] != agent_id):
                continue
            found.append(await self._answer(wf.id, listed=wf))
        items = []
        for item in found:
            at = datetime.fromisoformat(item["created_at"])
            if statuses and item["status"] not in statuses:
                continue
            if (gt and at <= gt) or (gte and at < gte) or (lt and at >= lt) or (lte and at > lte):
                continue
            items.append(item)
        items.sort(key=lambda s: s["created_at"], reverse=order == "desc")
        return page_of(request, items, max_limit=1000)

    async def update(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        params = await body_of(request, SessionUpdate)
        record = await self.store.get(KIND, session_id)
        if record is None or "agent_id" not in record.body:
            await self._state(session_id)  # 404 where there is no such session
            raise invalid(f"session {session_id!r} was not made through the API: it has no title or metadata to change")
        given = params.model_dump(exclude_unset=True)
        if "vault_ids" in given or "agent" in given:
            raise invalid(f"{'vault_ids' if 'vault_ids' in given else 'agent'}: cannot change on a running session")
        body = dict(record.body)
        if "title" in given:
            body["title"] = params.title
        if "metadata" in given:
            body["metadata"] = patch_metadata(body.get("metadata") or {}, params.metadata)
        if "budget" in given:
            cost = _usd(params.budget)
            try:
                await self.client.get_workflow_handle(session_id).execute_update(SET_BUDGET, args=[cost])
            except WorkflowUpdateFailedError as e:
                raise invalid(f"budget: refused: {getattr(e.cause, 'message', None) or e.cause}") from None
            body["budget"] = params.budget.model_dump() if params.budget else None
        body["updated_at"] = now().isoformat()
        await self.store.replace(KIND, session_id, body)
        return JSONResponse(await self._answer(session_id))

    async def archive(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        await self._state(session_id)
        if await self.store.get(KIND, session_id) is None:
            await self.store.put(KIND, session_id, {"plain": True})
        await self.store.archive(KIND, session_id)
        return JSONResponse(await self._answer(session_id))

    async def delete(self, request: Request) -> Response:
        """The session ends (if it runs) and its workflow and row are deleted."""
        session_id = request.path_params["session_id"]
        await self._state(session_id)
        handle = self.client.get_workflow_handle(session_id)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate(reason="deleted through the API")
        await self.client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=self.client.namespace, workflow_execution=WorkflowExecution(workflow_id=session_id)
            )
        )
        await self.store.remove(KIND, session_id)
        # Temporal deletes in the background (minutes, on the dev server): the API forgets it now.
        await self.store.put(DELETED, session_id, {})
        return JSONResponse({"id": session_id, "type": "session_deleted"})

    def routes(self, gate: Gate) -> list[Route]:
        return resource_routes(
            gate,
            "/v1/sessions",
            "/v1/sessions/{session_id}",
            create=self.create,
            list=self.list,
            retrieve=self.retrieve,
            update=self.update,
            delete=self.delete,
            archive=self.archive,
        )
