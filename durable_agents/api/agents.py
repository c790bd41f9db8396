"""`client.beta.agents` (and `agents.versions`): Managed Agents definitions, versioned and
immutable, mapped onto this runtime's `AgentSpec`.

- model: a model id or `{id, …}`; always an object in answers;
- tools: `agent_toolset_20260401` (per-tool `configs` and a `default_config`: `enabled`,
  `permission_policy` `always_allow` / `always_ask`), `mcp_toolset` (an `mcp_servers` entry's
  tools and their policies), `custom` tools (the client runs them);
- the toolset's names are Managed Agents' (`bash`, `read`, `write`, `edit`, `glob`, `grep`,
  `web_fetch`, `web_search`); this runtime offers them all, web_search only where a search backend
  is configured (DA_WEB_SEARCH). A tool it cannot offer is refused when a config enables it by name
  (400), and is shown disabled where the toolset's default would have enabled it: never silently
  dropped;
- `skills`: a `custom` skill id names a skill folder (with SKILL.md) in the agents directory's
  `skills/` (`DA_AGENTS_DIR`); its version is its content's hash, and the agent version keeps the
  text it had when the version was made; `anthropic` (pre-built) skills are refused;
- `multiagent` coordinator: the agents it may call become subagents (child sessions).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from durable_agents import web_search
from durable_agents.agent_files import AgentFileError, parse_skill
from durable_agents.api.http import (
    Gate,
    Param,
    body_of,
    conflict,
    guarded,
    invalid,
    not_found,
    page_of,
    patch_metadata,
    problems,
    query_bool,
    query_int,
    query_time,
)
from durable_agents.api.store import Record, Store, new_id, now
from durable_agents.contracts import WEB_SEARCH, AgentSpec, CustomTool, Limits, McpServer, ModelSpec, Skill, Subagent
from durable_agents.settings import settings

KIND = "agent"
TOOLSET = "agent_toolset_20260401"
# Managed Agents' built-in tools, in its order, and ours that carry them out.
BUILTIN = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")
_OURS = {"read": "read_file", "write": "write_file", "edit": "edit_file"}


def offered() -> dict[str, str]:
    """The toolset's tools this server offers, and ours that carry them out (web_search only with
    a search backend)."""
    configured = web_search.configured()
    return {name: _OURS.get(name, name) for name in BUILTIN if name != WEB_SEARCH or configured}


POLICIES = ("always_allow", "always_ask")


class ModelParam(Param):
    id: str = Field(min_length=1)
    effort: Any = None
    inference_geo: str | None = None
    speed: Literal["fast", "standard"] | None = None


class ToolConfigParam(Param):
    name: str
    type: str | None = None
    enabled: bool | None = None
    permission_policy: dict[str, Any] | None = None
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None
    max_content_tokens: int | None = None
    url_sources: Any = None
    user_location: Any = None


class DefaultConfigParam(Param):
    enabled: bool | None = None
    permission_policy: dict[str, Any] | None = None


class ToolParam(Param):
    type: Literal["agent_toolset_20260401", "mcp_toolset", "custom"]
    configs: list[ToolConfigParam] | None = None
    default_config: DefaultConfigParam | None = None
    mcp_server_name: str | None = None
    name: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class McpServerParam(Param):
    type: Literal["url"]
    name: str = Field(min_length=1)
    url: str = Field(min_length=1)


class AgentRefParam(Param):
    type: Literal["agent"] = "agent"
    id: str
    version: int | None = None


class MultiagentParam(Param):
    type: Literal["coordinator"]
    agents: list[str | AgentRefParam | dict[str, Any]]


class AgentCreate(Param):
    name: str = Field(min_length=1, max_length=256)
    model: str | ModelParam
    description: str | None = None
    system: str | None = None
    tools: list[ToolParam] | None = None
    mcp_servers: list[McpServerParam] | None = None
    skills: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    multiagent: MultiagentParam | None = None
    execution_identity: dict[str, Any] | None = None


class AgentUpdate(Param):
    version: int | None = None
    name: str | None = Field(default=None, min_length=1, max_length=256)
    model: str | ModelParam | None = None
    description: str | None = None
    system: str | None = None
    tools: list[ToolParam] | None = None
    mcp_servers: list[McpServerParam] | None = None
    skills: list[dict[str, Any]] | None = None
    metadata: dict[str, str | None] | None = None
    multiagent: MultiagentParam | None = None
    execution_identity: dict[str, Any] | None = None


def _policy(value: dict[str, Any] | None, where: str, default: str) -> str:
    if value is None:
        return default
    kind = value.get("type")
    if kind not in POLICIES:
        raise invalid(f"{where}.permission_policy.type: {kind!r} is not supported (one of {', '.join(POLICIES)})")
    return str(kind)


def _toolset(tool: ToolParam, i: int) -> dict[str, Any]:
    """The toolset as answers show it: every built-in tool with its config."""
    default = tool.default_config or DefaultConfigParam()
    default_enabled = True if default.enabled is None else default.enabled
    default_policy = _policy(default.permission_policy, f"tools.{i}.default_config", "always_allow")
    given = {}
    ours = offered()
    for j, config in enumerate(tool.configs or []):
        if config.name not in BUILTIN:
            raise invalid(f"tools.{i}.configs.{j}.name: {config.name!r} is not a tool of {TOOLSET}")
        if config.name in given:
            raise invalid(f"tools.{i}.configs.{j}.name: {config.name!r} is configured twice")
        if config.enabled and config.name not in ours:
            why = web_search.NOT_CONFIGURED.removeprefix("web_search is not offered: ")
            raise invalid(
                f"tools.{i}.configs.{j}: {config.name!r} is not offered by this server: {why}; remove it or set "
                "enabled: false"
            )
        given[config.name] = config
    configs = []
    for name in BUILTIN:
        config = given.get(name)
        enabled = config.enabled if config is not None and config.enabled is not None else default_enabled
        if name not in ours:
            enabled = False  # not offered here: shown off, never silently kept on
        where = f"tools.{i}.configs.{BUILTIN.index(name)}"
        policy = _policy(config.permission_policy if config else None, where, default_policy)
        configs.append({"name": name, "type": name, "enabled": enabled, "permission_policy": {"type": policy}})
    return {
        "type": TOOLSET,
        "configs": configs,
        "default_config": {"enabled": default_enabled, "permission_policy": {"type": default_policy}},
    }


def _mcp_toolset(tool: ToolParam, i: int, servers: set[str]) -> dict[str, Any]:
    if not tool.mcp_server_name or tool.mcp_server_name not in servers:
        listing = ", ".join(sorted(servers)) or "none"
        raise invalid(f"tools.{i}.mcp_server_name: {tool.mcp_server_name!r} is not in mcp_servers ({listing})")
    default = tool.default_config or DefaultConfigParam()
    default_policy = _policy(default.permission_policy, f"tools.{i}.default_config", "always_ask")
    configs = [
        {
            "name": c.name,
            "enabled": True if c.enabled is None else c.enabled,
            "permission_policy": {"type": _policy(c.permission_policy, f"tools.{i}.configs.{j}", default_policy)},
        }
        for j, c in enumerate(tool.configs or [])
    ]
    return {
        "type": "mcp_toolset",
        "mcp_server_name": tool.mcp_server_name,
        "configs": configs,
        "default_config": {
            "enabled": True if default.enabled is None else default.enabled,
            "permission_policy": {"type": default_policy},
        },
    }


def _custom(tool: ToolParam, i: int) -> dict[str, Any]:
    if not tool.name or tool.description is None:
        raise invalid(f"tools.{i}: a custom tool needs name and description")
    schema = tool.input_schema or {"type": "object", "properties": {}}
    try:
        CustomTool(name=tool.name, description=tool.description or tool.name, input_schema=schema)
    except ValidationError as e:
        raise invalid(problems(e, f"tools.{i}")) from None
    return {"type": "custom", "name": tool.name, "description": tool.description, "input_schema": schema}


def _model(model: str | ModelParam) -> dict[str, Any]:
    if isinstance(model, str):
        return {"id": model}
    out: dict[str, Any] = {"id": model.id}
    if model.effort is not None:
        out["effort"] = model.effort if isinstance(model.effort, dict) else {"type": model.effort}
    for name in ("inference_geo", "speed"):
        if getattr(model, name) is not None:
            out[name] = getattr(model, name)
    return out


def definition(fields: dict[str, Any]) -> dict[str, Any]:
    """The parts of an agent that make a version (normalised, as answers show them)."""
    servers = [McpServerParam.model_validate(s) for s in fields.get("mcp_servers") or []]
    names = {s.name for s in servers}
    if len(names) != len(servers):
        raise invalid("mcp_servers: two servers have the same name")
    tools = []
    for i, raw in enumerate(fields.get("tools") or []):
        tool = ToolParam.model_validate(raw)
        if tool.type == TOOLSET:
            tools.append(_toolset(tool, i))
        elif tool.type == "mcp_toolset":
            tools.append(_mcp_toolset(tool, i, names))
        else:
            tools.append(_custom(tool, i))
    skills = [_skill(raw, i) for i, raw in enumerate(fields.get("skills") or [])]
    if len({s["skill_id"] for s, _ in skills}) != len(skills):
        raise invalid("skills: a skill is listed twice")
    if fields.get("execution_identity") not in (None, {"type": "service_account"}):
        raise invalid("execution_identity: only {type: service_account} is supported")
    model = fields["model"]
    return {
        "name": fields["name"],
        "description": fields.get("description"),
        "model": _model(model if isinstance(model, str | ModelParam) else ModelParam.model_validate(model)),
        "system": fields.get("system"),
        "tools": tools,
        "mcp_servers": [s.model_dump() for s in servers],
        "skills": [public for public, _ in skills],
        SKILL_BODIES: [body for _, body in skills],
        "metadata": fields.get("metadata") or {},
        "multiagent": fields.get("multiagent"),
        "execution_identity": {"type": "service_account"},
    }


SKILL_BODIES = "skill_bodies"  # the skills' text as it was when the version was made (not shown)


def skills_dir() -> Path:
    return settings().agents_dir / "skills"


def _skill(raw: dict[str, Any], i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A `custom` skill id names a skill folder (SKILL.md) in the agents directory's `skills/`; its
    version is its content's hash, pinned in the agent version that lists it."""
    kind, skill_id, pinned = raw.get("type"), raw.get("skill_id"), raw.get("version")
    if kind == "anthropic":
        raise invalid(f"skills.{i}: Anthropic's pre-built skills are not available here; use a custom skill folder")
    if kind != "custom":
        raise invalid(f"skills.{i}.type: 'custom' or 'anthropic', not {kind!r}")
    if not isinstance(skill_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", skill_id):
        raise invalid(f"skills.{i}.skill_id: a skill folder's name (letters, digits, . _ -)")
    folder = skills_dir() / skill_id
    if not (folder / "SKILL.md").is_file():
        raise invalid(f"skills.{i}.skill_id: no skill {skill_id!r}: put its folder (with SKILL.md) in {skills_dir()}")
    try:
        body = Skill.model_validate(parse_skill(folder)).model_dump()
    except (AgentFileError, ValidationError) as e:
        raise invalid(f"skills.{i}: {e}") from None
    version = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    if pinned not in (None, "latest", version):
        raise invalid(f"skills.{i}.version: skill {skill_id!r} is at version {version!r} here, not {pinned!r}")
    return {"type": "custom", "skill_id": skill_id, "version": version}, body


def answer(record: Record, updated_at: str | None = None) -> dict[str, Any]:
    body = record.body
    shown = {k: v for k, v in body["definition"].items() if k != SKILL_BODIES}
    return {
        "id": record.id,
        "type": "agent",
        **shown,
        "version": record.version,
        "created_at": body["created_at"],
        "updated_at": updated_at or record.created_at.isoformat(),
        "archived_at": record.archived_at.isoformat() if record.archived_at else None,
    }


def spec_of(definition: dict[str, Any], subagents: list[Subagent] | None = None) -> AgentSpec:
    """The runtime's agent for a Managed Agents definition."""
    tools: list[str] = []
    policies: dict[str, str] = {}
    custom: list[CustomTool] = []
    servers = {s["name"]: s for s in definition["mcp_servers"]}
    mcp: list[McpServer] = []
    for tool in definition["tools"]:
        if tool["type"] == TOOLSET:
            for config in tool["configs"]:
                ours = _OURS.get(config["name"], config["name"])
                if ours and config["enabled"]:
                    tools.append(ours)
                    if config["permission_policy"]["type"] == "always_ask":
                        policies[ours] = "always_ask"
        elif tool["type"] == "mcp_toolset":
            server = servers[tool["mcp_server_name"]]
            configs = {c["name"]: c for c in tool["configs"]}
            enabled = [n for n, c in configs.items() if c["enabled"]]
            mcp.append(
                McpServer(
                    name=_safe_name(server["name"]),
                    url=server["url"],
                    policy=tool["default_config"]["permission_policy"]["type"],
                    tools={n: configs[n]["permission_policy"]["type"] for n in enabled},
                    # Off by default: only the tools enabled by name (a server's tools are listed at the start).
                    only=enabled if not tool["default_config"]["enabled"] else None,
                )
            )
        else:
            custom.append(
                CustomTool(name=tool["name"], description=tool["description"], input_schema=tool["input_schema"])
            )
    return AgentSpec(
        name=_safe_name(definition["name"]),
        description=definition.get("description") or "",
        model=ModelSpec(name=definition["model"]["id"]),
        system=definition.get("system") or "",
        tools=tools,
        policies=policies,  # type: ignore[arg-type]
        custom_tools=custom,
        mcp_servers=mcp,
        subagents=subagents or [],
        skills=[Skill.model_validate(body) for body in definition.get(SKILL_BODIES) or []],
        limits=Limits(),
    )


def _safe_name(name: str) -> str:
    """A Managed Agents name (any text) as an agent name here (letters, digits, . _ -)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "agent"
    return safe if safe[0].isalnum() else f"a{safe}"


class Agents:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def version(self, agent_id: str, version: int | None = None) -> Record:
        record = await self.store.get(KIND, agent_id, version)
        if record is None:
            what = f"agent {agent_id!r}" + (f" at version {version}" if version is not None else "")
            raise not_found(f"no {what}")
        return record

    async def spec(self, agent_id: str, version: int | None = None, depth: int = 0) -> tuple[Record, AgentSpec]:
        """An agent version and the runtime's spec for it (its coordinator's agents as subagents)."""
        record = await self.version(agent_id, version)
        definition = record.body["definition"]
        subagents = []
        multi = definition.get("multiagent")
        if multi and depth < 3:
            for ref in multi.get("agents", []):
                if ref == {"type": "self"} or (isinstance(ref, dict) and ref.get("type") == "self"):
                    continue
                ref_id, ref_version = (ref, None) if isinstance(ref, str) else (ref["id"], ref.get("version"))
                sub_record, sub_spec = await self.spec(ref_id, ref_version, depth + 1)
                description = sub_record.body["definition"].get("description") or ""
                subagents.append(Subagent(name=sub_spec.name, description=description, spec=sub_spec))
        return record, spec_of(definition, subagents)

    async def _checked_multiagent(self, multi: dict[str, Any] | None) -> dict[str, Any] | None:
        """A coordinator's agents resolved to references with versions (so the version is fixed)."""
        if multi is None:
            return None
        refs: list[dict[str, Any]] = []
        for i, ref in enumerate(multi["agents"]):
            if isinstance(ref, dict) and ref.get("type") == "self":
                continue
            ref_id = ref if isinstance(ref, str) else ref.get("id")
            if not isinstance(ref_id, str):
                raise invalid(f"multiagent.agents.{i}: an agent id, or {{type: agent, id, version}}")
            version = None if isinstance(ref, str) else ref.get("version")
            record = await self.store.get(KIND, ref_id, version)
            if record is None:
                raise invalid(f"multiagent.agents.{i}: no agent {ref_id!r}")
            refs.append({"type": "agent", "id": ref_id, "version": record.version})
        return {"type": "coordinator", "agents": refs}

    async def create(self, request: Request) -> Response:
        params = await body_of(request, AgentCreate)
        fields = params.model_dump(exclude_unset=True)
        fields["model"] = params.model
        fields["multiagent"] = await self._checked_multiagent(fields.get("multiagent"))
        spec_definition = definition(fields)
        spec_of(spec_definition)  # the runtime can run it (a check of names and schemas)
        agent_id = new_id("agent")
        created = now().isoformat()
        record = await self.store.put(KIND, agent_id, {"definition": spec_definition, "created_at": created}, version=1)
        return JSONResponse(answer(record))

    async def retrieve(self, request: Request) -> Response:
        version = request.query_params.get("version")
        number = query_int(request, "version", 0, 1, 10**9) if version is not None else None
        record = await self.version(request.path_params["agent_id"], number)
        return JSONResponse(answer(record))

    async def update(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        params = await body_of(request, AgentUpdate)
        current = await self.version(agent_id)
        if params.version is not None and params.version != current.version:
            raise conflict(
                f"agent {agent_id!r} is at version {current.version}, not {params.version}: read it again and retry"
            )
        fields = dict(current.body["definition"])
        given = params.model_dump(exclude_unset=True)
        given.pop("version", None)
        for key, value in given.items():
            if key == "metadata":
                fields["metadata"] = patch_metadata(fields.get("metadata") or {}, value)
            elif key == "model":
                fields["model"] = params.model
            elif key == "multiagent":
                fields["multiagent"] = await self._checked_multiagent(value)
            else:
                fields[key] = value
        if not isinstance(fields["model"], str | ModelParam):
            fields["model"] = ModelParam.model_validate(fields["model"])
        new_definition = definition(fields)
        spec_of(new_definition)
        if new_definition == current.body["definition"]:
            return JSONResponse(answer(current))  # nothing changed: no new version
        record = await self.store.put(
            KIND,
            agent_id,
            {"definition": new_definition, "created_at": current.body["created_at"]},
            version=current.version + 1,
        )
        return JSONResponse(answer(record))

    async def list(self, request: Request) -> Response:
        include = query_bool(request, "include_archived")
        gte, lte = query_time(request, "created_at[gte]"), query_time(request, "created_at[lte]")
        found = []
        for r in await self.store.all(KIND, include_archived=include):
            at = datetime.fromisoformat(r.body["created_at"])
            if (gte is None or at >= gte) and (lte is None or at <= lte):
                found.append(answer(r))
        return page_of(request, found)

    async def archive(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        await self.version(agent_id)
        await self.store.archive(KIND, agent_id)
        return JSONResponse(answer(await self.version(agent_id)))

    async def versions(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        versions = await self.store.versions(KIND, agent_id)
        if not versions:
            raise not_found(f"no agent {agent_id!r}")
        return page_of(request, [answer(v) for v in versions])

    def routes(self, gate: Gate) -> list[Route]:
        return [
            Route("/v1/agents", guarded(gate, self.create), methods=["POST"]),
            Route("/v1/agents", guarded(gate, self.list), methods=["GET"]),
            Route("/v1/agents/{agent_id}", guarded(gate, self.retrieve), methods=["GET"]),
            Route("/v1/agents/{agent_id}", guarded(gate, self.update), methods=["POST"]),
            Route("/v1/agents/{agent_id}/archive", guarded(gate, self.archive), methods=["POST"]),
            Route("/v1/agents/{agent_id}/versions", guarded(gate, self.versions), methods=["GET"]),
        ]
