"""`client.beta.memory_stores` with `memories` and `memory_versions`, as the pinned SDK speaks them:
stores (create, retrieve, update, list, archive, delete), memories (create, retrieve, update with an
optional `content_sha256` precondition, list with `path_prefix` and `depth`, delete with
`expected_content_sha256`), versions (list, retrieve, redact). The store is a record in the API's
database; its memories and versions are in `memory_db`. An archived store is read-only: its
memories can still be read and deleted and its versions redacted."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from durable_agents.api.http import (
    ApiError,
    Gate,
    Param,
    body_of,
    conflict,
    guarded,
    invalid,
    not_found,
    page_of,
    patch_metadata,
    query_bool,
    query_int,
    query_time,
)
from durable_agents.api.memory_db import (
    MemoryConflict,
    MemoryDb,
    MemoryNotFound,
    MemoryProblem,
    api_actor,
    check_path,
)
from durable_agents.api.store import Record, Store, new_id, now

KIND = "memory_store"


class StoreCreate(Param):
    name: str = Field(min_length=1, max_length=255)
    description: str = Field(default="", max_length=1024)
    metadata: dict[str, str] | None = None


class StoreUpdate(Param):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=1024)
    metadata: dict[str, str | None] | None = None


class MemoryCreate(Param):
    path: str
    content: str | None


class PreconditionParam(Param):
    type: Literal["content_sha256"]
    content_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class MemoryUpdate(Param):
    content: str | None = None
    path: str | None = None
    precondition: PreconditionParam | None = None


def mount_name(name: str) -> str:
    """The store's directory under /mnt/memory/: lowercased, each run of other characters one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "memory"


def _no_control(name: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise invalid("name: control characters are not allowed")
    return name


def _store_answer(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "type": "memory_store",
        "name": r.body["name"],
        "description": r.body.get("description") or "",
        "metadata": r.body.get("metadata") or {},
        "created_at": r.created_at.isoformat(),
        "updated_at": r.body.get("updated_at") or r.created_at.isoformat(),
        "archived_at": r.archived_at.isoformat() if r.archived_at else None,
    }


def _view(request: Request, default: str) -> bool:
    view = request.query_params.get("view", default)
    if view not in ("basic", "full"):
        raise invalid(f"view: {view!r} is not basic or full")
    return view == "full"


def _api_error(e: MemoryProblem) -> ApiError:
    if isinstance(e, MemoryNotFound):
        return not_found(str(e))
    if isinstance(e, MemoryConflict):
        return conflict(str(e))
    return invalid(str(e))


class MemoryStores:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = MemoryDb(store)

    async def get(self, store_id: str) -> Record:
        record = await self.store.get(KIND, store_id)
        if record is None:
            raise not_found(f"no memory store {store_id!r}")
        return record

    async def writable(self, store_id: str) -> Record:
        record = await self.get(store_id)
        if record.archived_at is not None:
            raise invalid(f"memory store {store_id!r} is archived: its memories can be read and deleted, not changed")
        return record

    # --- stores ---------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        params = await body_of(request, StoreCreate)
        body = {
            "name": _no_control(params.name),
            "description": params.description,
            "metadata": params.metadata or {},
        }
        return JSONResponse(_store_answer(await self.store.put(KIND, new_id("memstore"), body)))

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(_store_answer(await self.get(request.path_params["memory_store_id"])))

    async def update(self, request: Request) -> Response:
        record = await self.writable(request.path_params["memory_store_id"])
        params = await body_of(request, StoreUpdate)
        given = params.model_dump(exclude_unset=True)
        body = dict(record.body)
        if params.name is not None:
            body["name"] = _no_control(params.name)
        if "description" in given:
            body["description"] = params.description or ""
        if "metadata" in given:
            body["metadata"] = patch_metadata(body.get("metadata") or {}, params.metadata)
        body["updated_at"] = now().isoformat()
        await self.store.replace(KIND, record.id, body)
        return JSONResponse(_store_answer(await self.get(record.id)))

    async def list(self, request: Request) -> Response:
        found = await self.store.all(KIND, include_archived=query_bool(request, "include_archived"))
        after, before = query_time(request, "created_at_gte"), query_time(request, "created_at_lte")
        found = [
            r for r in found if (after is None or r.created_at >= after) and (before is None or r.created_at <= before)
        ]
        return page_of(request, [_store_answer(r) for r in found])

    async def archive(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        if record.archived_at is None:
            await self.store.archive(KIND, record.id)
        return JSONResponse(_store_answer(await self.get(record.id)))

    async def delete(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        await self.db.drop_store(record.id)
        await self.store.remove(KIND, record.id)
        return JSONResponse({"id": record.id, "type": "memory_store_deleted"})

    # --- memories -------------------------------------------------------------------------------

    async def create_memory(self, request: Request) -> Response:
        record = await self.writable(request.path_params["memory_store_id"])
        params = await body_of(request, MemoryCreate)
        try:
            memory = await self.db.create(record.id, params.path, params.content or "", api_actor(request.state.key_id))
        except MemoryProblem as e:
            raise _api_error(e) from None
        return JSONResponse(memory.answer(_view(request, "basic")))

    async def retrieve_memory(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        try:
            memory = await self.db.get(record.id, request.path_params["memory_id"])
        except MemoryProblem as e:
            raise _api_error(e) from None
        return JSONResponse(memory.answer(_view(request, "full")))

    async def update_memory(self, request: Request) -> Response:
        record = await self.writable(request.path_params["memory_store_id"])
        params = await body_of(request, MemoryUpdate)
        expected = None
        if params.precondition is not None:
            if params.precondition.content_sha256 is None:
                raise invalid("precondition.content_sha256: required for a content_sha256 precondition")
            expected = params.precondition.content_sha256
        try:
            memory = await self.db.update(
                record.id,
                request.path_params["memory_id"],
                api_actor(request.state.key_id),
                content=params.content,
                path=params.path,
                expected_sha256=expected,
            )
        except MemoryProblem as e:
            raise _api_error(e) from None
        return JSONResponse(memory.answer(_view(request, "basic")))

    async def list_memories(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        prefix = request.query_params.get("path_prefix") or "/"
        if not prefix.endswith("/"):
            raise invalid(f"path_prefix: {prefix!r} must end with /")
        if prefix != "/":
            try:
                check_path(prefix[:-1], "path_prefix")
            except MemoryProblem as e:
                raise _api_error(e) from None
        depth = query_int(request, "depth", 0, 0, 20)
        full = _view(request, "basic")
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        for memory in await self.db.list(record.id, prefix):
            below = memory.path[len(prefix) :].split("/")
            if depth and len(below) > depth:
                rolled = prefix + "/".join(below[:depth]) + "/"
                if rolled not in seen:
                    seen.add(rolled)
                    items.append({"type": "memory_prefix", "path": rolled})
                continue
            items.append(memory.answer(full))
        return page_of(request, items, max_limit=20 if full else 100)

    async def delete_memory(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        memory_id = request.path_params["memory_id"]
        try:
            await self.db.delete(
                record.id,
                memory_id,
                api_actor(request.state.key_id),
                request.query_params.get("expected_content_sha256"),
            )
        except MemoryProblem as e:
            raise _api_error(e) from None
        return JSONResponse({"id": memory_id, "type": "memory_deleted"})

    # --- versions -------------------------------------------------------------------------------

    async def list_versions(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        q = request.query_params
        operation = q.get("operation")
        if operation is not None and operation not in ("created", "modified", "deleted"):
            raise invalid(f"operation: {operation!r} is not created, modified or deleted")
        found = await self.db.versions(
            record.id,
            memory_id=q.get("memory_id"),
            operation=operation,
            session_id=q.get("session_id"),
            api_key_id=q.get("api_key_id"),
        )
        after, before = query_time(request, "created_at_gte"), query_time(request, "created_at_lte")
        found = [
            v for v in found if (after is None or v.created_at >= after) and (before is None or v.created_at <= before)
        ]
        full = _view(request, "basic")
        return page_of(request, [v.answer(full) for v in found], max_limit=20 if full else 100)

    async def retrieve_version(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        try:
            version = await self.db.version(record.id, request.path_params["memory_version_id"])
        except MemoryProblem as e:
            raise _api_error(e) from None
        return JSONResponse(version.answer(_view(request, "full")))

    async def redact_version(self, request: Request) -> Response:
        record = await self.get(request.path_params["memory_store_id"])
        try:
            version = await self.db.redact(
                record.id, request.path_params["memory_version_id"], api_actor(request.state.key_id)
            )
        except MemoryProblem as e:
            raise _api_error(e) from None
        return JSONResponse(version.answer(True))

    def routes(self, gate: Gate) -> list[Route]:
        one = "/v1/memory_stores/{memory_store_id}"
        memory = f"{one}/memories/{{memory_id}}"
        version = f"{one}/memory_versions/{{memory_version_id}}"
        return [
            Route("/v1/memory_stores", guarded(gate, self.create), methods=["POST"]),
            Route("/v1/memory_stores", guarded(gate, self.list), methods=["GET"]),
            Route(one, guarded(gate, self.retrieve), methods=["GET"]),
            Route(one, guarded(gate, self.update), methods=["POST"]),
            Route(one, guarded(gate, self.delete), methods=["DELETE"]),
            Route(f"{one}/archive", guarded(gate, self.archive), methods=["POST"]),
            Route(f"{one}/memories", guarded(gate, self.create_memory), methods=["POST"]),
            Route(f"{one}/memories", guarded(gate, self.list_memories), methods=["GET"]),
            Route(memory, guarded(gate, self.retrieve_memory), methods=["GET"]),
            Route(memory, guarded(gate, self.update_memory), methods=["POST"]),
            Route(memory, guarded(gate, self.delete_memory), methods=["DELETE"]),
            Route(f"{one}/memory_versions", guarded(gate, self.list_versions), methods=["GET"]),
            Route(version, guarded(gate, self.retrieve_version), methods=["GET"]),
            Route(f"{version}/redact", guarded(gate, self.redact_version), methods=["POST"]),
        ]
