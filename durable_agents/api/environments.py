"""`client.beta.environments`: where a session's sandbox runs, mapped onto this runtime's
`SandboxSpec`.

- `cloud` config: `networking` `limited` (the default: no network, or only `allowed_hosts`, reached
  through the credential-injecting egress proxy) or `unrestricted` (a bridged network);
  `allow_mcp_servers` is accepted and changes nothing (MCP servers are reached by the harness,
  never from the sandbox); `allow_package_managers: true` is refused (400): registries are not
  reachable from a sandbox at run time; `packages` are the way;
- `packages` (apt, pip, npm, cargo, gem, go): installed into an image derived from the sandbox image
  on the sandbox host at the first provision, cached by content hash (`sandboxes/packages.py`); one
  that cannot be installed is the session's tool error at that provision, naming the installer's
  complaint. `self_hosted` environments are refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from durable_agents.api.http import (
    Gate,
    Param,
    body_of,
    invalid,
    not_found,
    page_of,
    patch_metadata,
    problems,
    query_bool,
    resource_routes,
)
from durable_agents.api.store import Record, Store, new_id, now
from durable_agents.contracts import EgressRule, Packages, SandboxSpec

KIND = "environment"
NO_NETWORK = {"type": "limited", "allowed_hosts": [], "allow_mcp_servers": False, "allow_package_managers": False}
NO_PACKAGES = {"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []}


class NetworkParam(Param):
    type: Literal["unrestricted", "limited"]
    allowed_hosts: list[str] | None = None
    allow_mcp_servers: bool | None = None
    allow_package_managers: bool | None = None


class PackagesParam(Param):
    type: Literal["packages"] | None = None
    apt: list[str] | None = None
    cargo: list[str] | None = None
    gem: list[str] | None = None
    go: list[str] | None = None
    npm: list[str] | None = None
    pip: list[str] | None = None


class ConfigParam(Param):
    type: Literal["cloud", "self_hosted"]
    networking: NetworkParam | None = None
    packages: PackagesParam | None = None


class EnvironmentCreate(Param):
    name: str = Field(min_length=1, max_length=256)
    config: ConfigParam | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None
    scope: Literal["organization", "account"] | None = None


class EnvironmentUpdate(Param):
    name: str | None = Field(default=None, min_length=1, max_length=256)
    config: ConfigParam | None = None
    description: str | None = None
    metadata: dict[str, str | None] | None = None
    scope: Literal["organization", "account"] | None = None


def config_of(config: ConfigParam | None) -> dict[str, Any]:
    """The config as answers show it, or 400 for what this runtime does not do."""
    if config is None:
        return {"type": "cloud", "networking": dict(NO_NETWORK), "packages": dict(NO_PACKAGES)}
    if config.type == "self_hosted":
        raise invalid("config.type: 'self_hosted' environments are not supported (sandboxes run on sandbox workers)")
    asked = (config.packages or PackagesParam()).model_dump(exclude={"type"})
    try:
        packages = Packages(**{k: v or [] for k, v in asked.items()})
    except ValidationError as e:
        raise invalid(problems(e, "config.packages")) from None
    net = config.networking
    if net is not None and net.allow_package_managers:
        raise invalid(
            "config.networking.allow_package_managers: package registries are not reachable from a sandbox at run "
            "time here; list what it needs in config.packages (installed into its image at the first provision)"
        )
    if net is None or net.type == "limited":
        networking = {**NO_NETWORK, **{k: v for k, v in (net.model_dump(exclude={"type"}) if net else {}).items() if v}}
        for i, host in enumerate(networking["allowed_hosts"]):
            try:
                EgressRule(host=host)
            except ValidationError as e:
                raise invalid(problems(e, f"config.networking.allowed_hosts.{i}")) from None
    else:
        networking = {"type": "unrestricted"}
    return {"type": "cloud", "networking": networking, "packages": {"type": "packages", **packages.model_dump()}}


def sandbox_of(config: dict[str, Any], base: SandboxSpec | None = None) -> SandboxSpec:
    """The sandbox a session in this environment gets (hardened as every sandbox is)."""
    spec = base or SandboxSpec()
    packages = Packages(**{k: v for k, v in (config.get("packages") or {}).items() if k != "type"})
    networking = config["networking"]
    if networking["type"] == "unrestricted":
        return spec.model_copy(update={"network": True, "egress": [], "packages": packages})
    rules = [EgressRule(host=h) for h in networking.get("allowed_hosts", [])]
    return spec.model_copy(update={"network": False, "egress": rules, "packages": packages})


def answer(record: Record) -> dict[str, Any]:
    body = record.body
    return {
        "id": record.id,
        "type": "environment",
        "name": body["name"],
        "description": body.get("description"),
        "config": body["config"],
        "metadata": body.get("metadata") or {},
        "scope": body.get("scope"),
        "created_at": record.created_at.isoformat(),
        "updated_at": body.get("updated_at") or record.created_at.isoformat(),
        "archived_at": record.archived_at.isoformat() if record.archived_at else None,
    }


class Environments:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, environment_id: str) -> Record:
        record = await self.store.get(KIND, environment_id)
        if record is None:
            raise not_found(f"no environment {environment_id!r}")
        return record

    async def create(self, request: Request) -> Response:
        params = await body_of(request, EnvironmentCreate)
        body = {
            "name": params.name,
            "description": params.description,
            "config": config_of(params.config),
            "metadata": params.metadata or {},
            "scope": params.scope,
        }
        record = await self.store.put(KIND, new_id("env"), body)
        return JSONResponse(answer(record))

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(answer(await self.get(request.path_params["environment_id"])))

    async def update(self, request: Request) -> Response:
        record = await self.get(request.path_params["environment_id"])
        params = await body_of(request, EnvironmentUpdate)
        body = dict(record.body)
        given = params.model_dump(exclude_unset=True)
        if "name" in given and params.name is not None:
            body["name"] = params.name
        if "description" in given:
            body["description"] = params.description
        if "scope" in given:
            body["scope"] = params.scope
        if "config" in given:
            body["config"] = config_of(params.config)
        if "metadata" in given:
            body["metadata"] = patch_metadata(body.get("metadata") or {}, params.metadata)
        body["updated_at"] = now().isoformat()
        await self.store.replace(KIND, record.id, body)
        return JSONResponse(answer(await self.get(record.id)))

    async def list(self, request: Request) -> Response:
        include = query_bool(request, "include_archived")
        return page_of(request, [answer(r) for r in await self.store.all(KIND, include_archived=include)])

    async def archive(self, request: Request) -> Response:
        record = await self.get(request.path_params["environment_id"])
        await self.store.archive(KIND, record.id)
        return JSONResponse(answer(await self.get(record.id)))

    async def delete(self, request: Request) -> Response:
        record = await self.get(request.path_params["environment_id"])
        await self.store.remove(KIND, record.id)
        return JSONResponse({"id": record.id, "type": "environment_deleted"})

    def routes(self, gate: Gate) -> list[Route]:
        return resource_routes(
            gate,
            "/v1/environments",
            "/v1/environments/{environment_id}",
            create=self.create,
            list=self.list,
            retrieve=self.retrieve,
            update=self.update,
            delete=self.delete,
            archive=self.archive,
        )
