"""Typed contracts shared by workflows, activities, sandboxes and the CLI. No I/O here.

Task-queue names, activity names and the workflow name are part of the durable contract: a
running session's history refers to them, so they are defined once, here, and never renamed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

# --- durable names -----------------------------------------------------------------------------

AGENTS_QUEUE = "agents"
SANDBOXES_QUEUE = "sandboxes"
SESSION_WORKFLOW = "SessionWorkflow"
SPAWN_AGENT = "spawn_agent"
LOAD_SKILL = "load_skill"

CALL_MODEL = "call_model"
PROVISION_SANDBOX = "provision_sandbox"
EXECUTE = "execute"
DESTROY_SANDBOX = "destroy_sandbox"
LAST_SCHEDULED_RESULT = "last_scheduled_result"
DISCOVER_MCP_TOOLS = "discover_mcp_tools"
CALL_MCP_TOOL = "call_mcp_tool"
CHECK_SECRETS = "check_secrets"
PREPARE_SESSION = "prepare_session"  # a session from a plain client: its agent by name, its search attributes
MCP_SEPARATOR = "__"  # the model sees MCP tools as <server>__<tool>
SNAPSHOT_WORKSPACE = "snapshot_workspace"

# Queries and updates of SessionWorkflow.
SEND_MESSAGE = "send_message"
END_SESSION = "end_session"
REFRESH_TOOLS = "refresh_tools"  # re-list the MCP servers' tools before the next model call
INTERRUPT = "interrupt"
APPROVE = "approve"
DENY = "deny"
TOOL_RESULT = "tool_result"  # the result of a custom (client-executed) tool call
GET_EVENTS = "events"
GET_STATE = "state"
GET_MODEL_CONTEXT = "model_context"

# Custom search attributes (Keyword), registered when the dev server starts.
SA_AGENT_NAME = "AgentName"
SA_SESSION_STATUS = "SessionStatus"
SA_AGENT_VERSION = "AgentVersion"
SA_PARENT_SESSION = "ParentSession"  # set on subagents: the session that spawned them
SEARCH_ATTRIBUTE_NAMES = (SA_AGENT_NAME, SA_SESSION_STATUS, SA_AGENT_VERSION, SA_PARENT_SESSION)


def attribute_allowed(setting: bool | list[str] | None, name: str) -> bool:
    """May a session set this search attribute? `SessionInput.search_attributes`: True (all of
    ours are registered), a list (only these are), False or None (none, or not known yet)."""
    return setting is True or (isinstance(setting, list) and name in setting)


def attribute_pairs(setting: bool | list[str] | None, values: dict[str, str]) -> TypedSearchAttributes:
    """Keyword search attributes, leaving out those the namespace does not have (setting one
    would fail the workflow task)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in values.items()
            if attribute_allowed(setting, name)
        ]
    )


# ApplicationError types that cross from activities to the workflow.
SANDBOX_LOST = "SandboxLost"  # the container is gone: provision a new one
SANDBOX_IMAGE_MISSING = "SandboxImageMissing"
MODEL_REQUEST_REJECTED = "ModelRequestRejected"  # 4xx other than 408/409/429: retrying cannot help
MODEL_NOT_CONFIGURED = "ModelNotConfigured"
CONTEXT_TOO_LONG = "ContextTooLong"  # the API's 400 "prompt is too long": compact, then try the turn again
SECRET_MISSING = "SecretMissing"  # a secret an agent names is in no vault backend of the worker
AGENT_NOT_FOUND = "AgentNotFound"  # an agent_ref names no agent the harness worker knows

# The instruction that turns a model call into a compaction (a summary of the conversation so far).
COMPACTION_INSTRUCTION = (
    "[compaction] The conversation above is about to be replaced by your summary of it, to keep the "
    "context within its budget. Write that summary now: the user's goals and instructions, what you did "
    "and found (files, commands, results, errors), decisions made, and what remains to be done. Be "
    "complete about facts you will need; be brief about everything else. Answer with the summary only."
)

SANDBOX_TOOLS = ("bash", "read_file", "write_file", "edit_file")
SANDBOX_TMP_MB = 128  # size of a sandbox's /tmp (tmpfs), which also holds the tool-call records
KNOWN_TOOLS = SANDBOX_TOOLS


def host_queue(host_id: str) -> str:
    """The task queue that reaches one sandbox host (the worker-specific-task-queue pattern)."""
    return f"{SANDBOXES_QUEUE}-{host_id}"


ToolPolicy = Literal["always_allow", "always_ask"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def estimate_tokens(value: Any) -> int:
    """Tokens of a piece of context, estimated at 4 bytes of JSON a token (the API's usage figures
    replace the estimate wherever a request has been answered)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False)) // 4 + 1


# --- agent definition --------------------------------------------------------------------------


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0, description="default: 10% of input")
    cache_write: float | None = Field(default=None, ge=0, description="default: 125% of input")

    def cost(self, usage: Usage) -> float:
        cache_read = self.input * 0.1 if self.cache_read is None else self.cache_read
        cache_write = self.input * 1.25 if self.cache_write is None else self.cache_write
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_input_tokens * cache_read
            + usage.cache_creation_input_tokens * cache_write
        ) / 1_000_000


# Used when a model names no price: by model family, in US$ per million tokens. Check them
# against Anthropic's price list and set `model.price` in the agent file where they differ.
DEFAULT_PRICES = {
    "opus": Price(input=5.0, output=25.0),
    "sonnet": Price(input=3.0, output=15.0),
    "haiku": Price(input=1.0, output=5.0),
}


class ModelSpec(_Strict):
    name: str = Field(min_length=1, description="Anthropic model id, e.g. claude-sonnet-5-5")
    max_tokens: int = Field(default=4096, ge=1, le=128_000)
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    price: Price | None = Field(default=None, description="default: by model family (DEFAULT_PRICES)")

    def cost(self, usage: Usage) -> float | None:
        """US$ of `usage` on this model; None if no price is known for it."""
        price = self.price or next((p for family, p in DEFAULT_PRICES.items() if family in self.name), None)
        return None if price is None else price.cost(usage)


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


class SecretRef(_Strict):
    """A value taken from the vault by name, inside the trusted activity that uses it."""

    secret: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    prefix: str = Field(default="", description="text before the value, e.g. 'Bearer ' for an Authorization header")


class EgressRule(_Strict):
    """A host a sandbox may reach through the egress proxy, and the credential the proxy adds for it.
    The sandbox speaks plain HTTP to the proxy (HTTP_PROXY is set); the proxy makes the request
    upstream over `scheme` with the header added, so the secret never enters the sandbox."""

    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 443 for https, 80 for http")
    scheme: Literal["http", "https"] = Field(default="https", description="how the proxy reaches the host")
    header: str = Field(default="Authorization", min_length=1, pattern=r"^[A-Za-z0-9-]+$")
    secret: SecretRef | None = Field(default=None, description="the header's value, from the vault")
    connect_to: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.:-]+$",
        description="connect to this address instead of resolving `host` (an internal service; the Host header "
        "still names `host`)",
    )

    def upstream_port(self) -> int:
        return self.port or (443 if self.scheme == "https" else 80)


class SandboxSpec(_Strict):
    image: str = "durable-agents/sandbox:latest"
    cpus: float = Field(default=1.0, gt=0, le=64)
    memory_mb: int = Field(default=1024, ge=64, le=65_536)
    disk_mb: int = Field(default=512, ge=16, le=65_536, description="size of the writable workspace")
    pids: int = Field(default=256, ge=16, le=32_768)
    timeout_s: float = Field(default=120, gt=0, le=3600, description="default limit of one tool call")
    network: bool = Field(default=False, description="unfiltered network access (default: none)")
    egress: list[EgressRule] = Field(
        default_factory=list,
        description="hosts reachable through the credential-injecting egress proxy (the only network it gets)",
    )
    runtime: Literal["runc", "runsc"] | None = Field(
        default=None, description="container runtime; None is Docker's default (runc)"
    )
    host_wait_s: float = Field(
        default=30, gt=0, le=3600, description="a sandbox host whose queue has no poller this long is gone"
    )
    snapshot_every_s: float = Field(
        default=120,
        ge=0,
        description="snapshot /workspace after a tool call if the last is this old; 0: when idle only",
    )
    eager: bool = Field(
        default=False,
        description="provision before the first model call (the coupled design, kept to measure against); "
        "default: on the first sandbox tool call",
    )

    @model_validator(mode="after")
    def _egress_alone(self) -> SandboxSpec:
        if self.egress and self.network:
            raise ValueError("egress (proxied, named hosts) and network: true (everything) exclude each other")
        if self.egress and self.runtime == "runsc":
            raise ValueError("egress needs the runc runtime: gVisor (runsc) here runs with no network at all")
        return self

    def secrets(self) -> list[str]:
        return [r.secret.secret for r in self.egress if r.secret is not None]

    @model_validator(mode="after")
    def _disk_fits_in_memory(self) -> SandboxSpec:
        # /workspace and /tmp are tmpfs: their pages count against the memory limit, so a full disk
        # must leave memory for the processes, or filling it gets the shell OOM-killed.
        if self.disk_mb + SANDBOX_TMP_MB + 128 > self.memory_mb:
            raise ValueError(
                f"disk_mb ({self.disk_mb}) + {SANDBOX_TMP_MB} MB of /tmp + 128 MB for processes must fit in "
                f"memory_mb ({self.memory_mb}): the workspace is memory-backed (tmpfs)"
            )
        return self

    def container_key(self) -> tuple[object, ...]:
        """What the container is made of: specs with equal keys can share a warm-pool container."""
        egress = tuple(r.model_dump_json() for r in self.egress)
        return (self.image, self.cpus, self.memory_mb, self.disk_mb, self.pids, self.network, self.runtime, egress)


class Limits(_Strict):
    max_turns: int = Field(default=100, ge=1, description="model calls per user message")
    max_depth: int = Field(default=2, ge=0, le=10, description="how deep subagents may nest")
    max_concurrent_children: int = Field(default=8, ge=1, le=100)
    max_children: int = Field(default=50, ge=0, le=10_000, description="subagents per session")
    idle_timeout_s: float = Field(default=3600, gt=0, description="an idle session ends after this")
    tool_output_cap: int = Field(
        default=30_000, ge=1_000, le=10_000_000, description="characters; large outputs go to the payload store"
    )
    max_tokens_total: int | None = Field(
        default=None, ge=1, description="budget: input + output tokens of the session and its subagents"
    )
    max_cost_usd: float | None = Field(default=None, gt=0, description="budget: US$ of the session and its subagents")
    loop_limit: int = Field(
        default=3, ge=2, le=100, description="the same tool call with the same input this often in a row is refused"
    )
    context_tokens: int | None = Field(
        default=150_000,
        ge=1_000,
        description="context budget: when the next request would exceed it (estimated), older turns are "
        "compacted into a summary; null: never",
    )
    keep_recent_tokens: int | None = Field(
        default=None, ge=0, description="what compaction keeps verbatim, newest first; default: a quarter of the budget"
    )
    compaction_retry_growth: float = Field(
        default=0.5,
        gt=0,
        le=100,
        description="after a summary failed, summarise again only once this share of the context's size then has "
        "been added to it; until then (and after compaction_max_failures) the oldest turns are left out instead",
    )
    compaction_max_failures: int = Field(
        default=3, ge=0, le=1000, description="failed summaries per session before compaction only leaves turns out"
    )
    history_events: int = Field(
        default=5_000,
        ge=200,
        le=40_000,
        description="continue-as-new after this many history events (or sooner, when Temporal suggests it)",
    )

    def keep_tokens(self) -> int:
        """What compaction keeps verbatim: keep_recent_tokens, or a quarter of the budget."""
        if self.keep_recent_tokens is not None:
            return self.keep_recent_tokens
        return (self.context_tokens or 0) // 4


class CustomTool(_Strict):
    """A tool the client executes: the session records the call and waits for its result."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = Field(min_length=1)
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}, description="JSON Schema of the input"
    )

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if schema.get("type") != "object":
            raise ValueError("input_schema must describe an object (type: object)")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ValueError(f"input_schema is not a valid JSON Schema: {e.message}") from None
        return schema


class ClientToolResult(_Strict):
    """What a client posts for a custom tool call: the output text the model sees."""

    content: str
    is_error: bool = False


class Skill(_Strict):
    """A skill (Anthropic's SKILL.md convention), read from its folder when the agent file is loaded."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(min_length=1)
    body: str
    files: dict[str, str] = Field(default_factory=dict, description="other text files of the skill, by relative path")


class Subagent(_Strict):
    """A subagent a session may spawn: an agent file (relative to this one) or an inline spec."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    agent: str | None = Field(default=None, description="agent file, relative to the file that lists it")
    spec: AgentSpec | None = Field(default=None, description="inline agent definition")
    share_sandbox: bool = Field(default=False, description="default for spawn_agent's share_sandbox")

    @model_validator(mode="after")
    def _one_source(self) -> Subagent:
        if self.agent is None and self.spec is None:
            raise ValueError("give either agent (a file) or spec (inline)")
        return self


class McpServer(_Strict):
    """An MCP server the harness worker reaches: a command over stdio, or a Streamable HTTP URL."""

    name: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="the tools' prefix: the model sees <name>__<tool> (so no '__' in it)",
    )
    command: str | None = Field(default=None, description="stdio: the program the harness worker starts")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str | SecretRef] = Field(
        default_factory=dict, description="stdio: environment of the server; values or {secret: NAME}"
    )
    url: str | None = Field(default=None, description="Streamable HTTP endpoint, e.g. https://host/mcp")
    headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="HTTP: request headers; values or {secret: NAME, prefix: 'Bearer '}",
    )
    policy: ToolPolicy = Field(default="always_ask", description="default policy of this server's tools")
    tools: dict[str, ToolPolicy] = Field(
        default_factory=dict, description="per-tool policy (tool name as the server has it)"
    )
    only: list[str] | None = Field(default=None, description="expose only these tools (default: all it lists)")
    timeout_s: float = Field(default=60, gt=0, le=3600, description="limit of one tool call")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if MCP_SEPARATOR in self.name or self.name.endswith("_"):
            raise ValueError(f"mcp server {self.name!r}: '__' separates server from tool, so a name cannot hold it")
        if (self.command is None) == (self.url is None):
            raise ValueError(f"mcp server {self.name!r}: give either command (stdio) or url (Streamable HTTP)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"mcp server {self.name!r}: url must be http:// or https://, not {self.url!r}")
        if self.url is not None and (self.args or self.env):
            raise ValueError(f"mcp server {self.name!r}: args and env are for stdio servers (command)")
        if self.command is not None and self.headers:
            raise ValueError(f"mcp server {self.name!r}: headers are for HTTP servers (url)")
        return self

    def secrets(self) -> list[str]:
        return [v.secret for v in (*self.env.values(), *self.headers.values()) if isinstance(v, SecretRef)]

    def policy_of(self, tool: str) -> ToolPolicy:
        return self.tools.get(tool, self.policy)


class McpTool(_Strict):
    """A tool discovered on an MCP server, as the model sees it."""

    name: str  # <server>__<tool>
    server: str
    tool: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class McpDiscoverRequest(_Strict):
    servers: list[McpServer]
    refresh: bool = False


class McpDiscovery(_Strict):
    tools: list[McpTool] = Field(default_factory=list)
    failures: dict[str, str] = Field(default_factory=dict, description="server -> why its tools are missing")


class McpCallRequest(_Strict):
    server: McpServer
    tool: str
    input: dict[str, Any]
    call_id: str
    output_cap: int


class SecretCheck(_Strict):
    names: list[str]
    uses: dict[str, str] = Field(default_factory=dict, description="secret -> what needs it (for the message)")


class AgentSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    model: ModelSpec
    system: str = ""
    system_file: str | None = Field(
        default=None, description="file with the system prompt, relative to the agent file (read at load)"
    )
    tools: list[str] = Field(default_factory=lambda: list(SANDBOX_TOOLS))
    policies: dict[str, ToolPolicy] = Field(
        default_factory=dict, description="per-tool policy; a tool not named here is always_allow"
    )
    sandbox: SandboxSpec = Field(default_factory=SandboxSpec)
    limits: Limits = Field(default_factory=Limits)
    subagents: list[Subagent] = Field(default_factory=list)
    skills: list[Skill] = Field(
        default_factory=list, description="in a file: skill folders (each with a SKILL.md), relative to it"
    )
    custom_tools: list[CustomTool] = Field(
        default_factory=list, description="tools the client executes (starter.py tool-result or the Python API)"
    )
    mcp_servers: list[McpServer] = Field(
        default_factory=list, description="MCP servers whose tools the model may use, as <server>__<tool>"
    )

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, servers: list[McpServer]) -> list[McpServer]:
        clash = _first_duplicate([s.name for s in servers])
        if clash is not None:
            raise ValueError(f"two MCP servers are named {clash!r}: their tools would clash")
        return servers

    def mcp_server(self, name: str) -> McpServer | None:
        return next((s for s in self.mcp_servers if s.name == name), None)

    def mcp_server_of(self, tool: str) -> McpServer | None:
        """The server of a namespaced MCP tool name (<server>__<tool>), if it is one of ours."""
        server, sep, _ = tool.partition(MCP_SEPARATOR)
        return self.mcp_server(server) if sep else None

    @field_validator("custom_tools")
    @classmethod
    def _custom_names(cls, custom: list[CustomTool]) -> list[CustomTool]:
        names = [t.name for t in custom]
        if _first_duplicate(names) is not None:
            raise ValueError("two custom tools have the same name")
        for name in names:
            if name in (*KNOWN_TOOLS, SPAWN_AGENT, LOAD_SKILL):
                raise ValueError(f"custom tool {name!r} has the name of a built-in tool")
        return custom

    def custom_tool(self, name: str) -> CustomTool | None:
        return next((t for t in self.custom_tools if t.name == name), None)

    @field_validator("subagents")
    @classmethod
    def _unique_subagents(cls, subagents: list[Subagent]) -> list[Subagent]:
        if _first_duplicate([s.name for s in subagents]) is not None:
            raise ValueError("two subagents have the same name")
        return subagents

    def subagent(self, name: str) -> Subagent | None:
        return next((s for s in self.subagents if s.name == name), None)

    @model_validator(mode="before")
    @classmethod
    def _tool_entries(cls, data: Any) -> Any:
        """`tools:` items may be names or {name, policy} mappings; policies go to `policies`."""
        if isinstance(data, dict) and isinstance(data.get("tools"), list):
            tools, policies = [], dict(data.get("policies") or {})
            for item in data["tools"]:
                if isinstance(item, dict) and set(item) <= {"name", "policy"} and "name" in item:
                    tools.append(item["name"])
                    if "policy" in item:
                        policies[item["name"]] = item["policy"]
                else:
                    tools.append(item)
            data = {**data, "tools": tools, "policies": policies}
        return data

    def prompt_tokens(self) -> int:
        """Estimated tokens of what this definition puts into every model request: its system prompt,
        its skills' listing, and the tools it defines (custom tools, the subagents' listing). The
        built-in tools' definitions (workflows.harness.tool_definitions: a few hundred tokens, the same
        for every agent) are not counted, nor MCP tools (discovered when a session starts)."""
        return estimate_tokens(
            [
                self.system,
                [[s.name, s.description] for s in self.skills],
                [[s.name, s.description or (s.spec.description if s.spec else "")] for s in self.subagents],
                [[t.name, t.description, t.input_schema] for t in self.custom_tools],
            ]
        )

    @model_validator(mode="after")
    def _fits_context_budget(self) -> AgentSpec:
        """A definition whose every request would exceed its context budget cannot work (compaction
        can shorten the conversation, not the prompt)."""
        budget = self.limits.context_tokens
        if budget is not None and (tokens := self.prompt_tokens()) > budget:
            raise ValueError(
                f"system prompt and tool definitions are ~{tokens:,} tokens, over the context budget of {budget:,} "
                f"(limits.context_tokens) by {tokens - budget:,}"
            )
        return self

    @model_validator(mode="after")
    def _no_clash_with_mcp(self) -> AgentSpec:
        for tool in self.custom_tools:
            server = self.mcp_server_of(tool.name)
            if server is not None:
                raise ValueError(f"custom tool {tool.name!r} clashes with the tools of MCP server {server.name!r}")
        return self

    @model_validator(mode="after")
    def _policies_name_tools(self) -> AgentSpec:
        for name in self.policies:
            custom = any(t.name == name for t in self.custom_tools) or self.mcp_server_of(name) is not None
            if name not in self.tools and not custom and not (name == SPAWN_AGENT and self.subagents):
                raise ValueError(f"policies: {name!r} is not one of this agent's tools")
        return self

    def policy(self, tool: str) -> ToolPolicy:
        """The agent's `policies:` first; MCP tools then follow their server (always_ask by default)."""
        if tool in self.policies:
            return self.policies[tool]
        server = self.mcp_server_of(tool)
        if server is not None:
            return server.policy_of(tool.partition(MCP_SEPARATOR)[2])
        return "always_allow"

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: list[str]) -> list[str]:
        for tool in tools:
            if tool not in KNOWN_TOOLS:
                raise ValueError(f"unknown tool {tool!r} (known: {', '.join(KNOWN_TOOLS)})")
        if _first_duplicate(tools) is not None:
            raise ValueError("a tool is listed twice")
        return tools


def unresolved_agent(ref: str) -> AgentSpec:
    """A placeholder for an agent named by reference until the session has resolved it."""
    return AgentSpec(name=ref.partition("@")[0], model=ModelSpec(name="unresolved"), tools=[])


def agent_version(agent: AgentSpec) -> str:
    """The content hash of a resolved agent definition: same definition, same version."""
    canonical = json.dumps(agent.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# --- session ------------------------------------------------------------------------------------


class GitSource(_Strict):
    url: str = Field(min_length=1)
    ref: str | None = Field(default=None, description="branch or tag; default: the remote's HEAD")
    token_secret: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="name of a vault secret the sandbox worker resolves for the clone; never sent anywhere else",
    )


class WorkspaceSeed(_Strict):
    """What /workspace starts with: small inline files and/or a git repository (cloned on the host)."""

    files: dict[str, str] = Field(default_factory=dict, description="relative path -> text content")
    git: GitSource | None = None

    @field_validator("files")
    @classmethod
    def _small_relative_files(cls, files: dict[str, str]) -> dict[str, str]:
        if sum(len(v) for v in files.values()) > 1_000_000:
            raise ValueError("inline files are limited to 1 MB in all (they travel in the session's history)")
        for path in files:
            parts = path.split("/")
            if path.startswith("/") or ".." in parts or not path:
                raise ValueError(f"{path!r}: workspace paths must be relative and stay inside /workspace")
        return files


AGENT_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_.-]+)?$"


class SessionInput(_Strict):
    """What starts a session. A plain Temporal client may send it as JSON, naming its agent
    (`{"agent_ref": "coder", "task": "..."}`) instead of inlining the definition."""

    agent: AgentSpec | None = Field(default=None, description="the agent definition, inline")
    agent_ref: str | None = Field(
        default=None,
        max_length=200,
        pattern=AGENT_REF_PATTERN,
        description="an agent by name (or name@version) that the harness worker knows; resolved once at the start",
    )
    task: str = Field(min_length=1)
    one_shot: bool = False
    workspace: WorkspaceSeed | None = None
    # Set for subagents: who spawned them, how deep, and the parent's sandbox if they share it.
    parent_session: str | None = None
    depth: int = 0
    shared_sandbox: SandboxHandle | None = None
    # Set for runs of a schedule: its id; the task is then a template ({date}, {last_result}).
    schedule: str | None = None
    # Which custom search attributes the namespace has: True all, a list those, False none; None
    # (a plain client's session) the session asks at its start. Setting a missing one would fail
    # the workflow task, so the session sets only these.
    search_attributes: bool | list[str] | None = None
    # Set when a run continues as new: the state the next run starts from.
    carry: SessionCarry | None = None

    @model_validator(mode="after")
    def _an_agent(self) -> SessionInput:
        if self.agent is None and self.agent_ref is None:
            raise ValueError('give the agent: inline ("agent": {...}) or by name ("agent_ref": "coder")')
        return self


class SessionSetupRequest(_Strict):
    """What a session started by a plain client asks the harness worker at its start."""

    agent_ref: str | None = None  # resolve this agent
    check_attributes: bool = False  # and/or: which of our search attributes does the namespace have?


class SessionSetup(_Strict):
    agent: AgentSpec | None = None
    search_attributes: list[str] | None = None


class Usage(_Strict):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Every token billed: input (uncached, read from and written to the cache) and output."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


class ToolCall(_Strict):
    id: str
    name: str
    input: dict[str, Any]


class ToolResult(_Strict):
    call_id: str
    name: str
    output: str
    is_error: bool = False


SessionStatus = Literal["running", "waiting", "idle", "done", "failed"]
EventKind = Literal[
    "session_started",
    "user_message",
    "model_turn",
    "tool_result",
    "sandbox_provisioned",
    "sandbox_destroyed",
    "sandbox_snapshot",
    "subagent_started",
    "subagent_finished",
    "interrupted",
    "skill_loaded",
    "approval_requested",
    "approval_granted",
    "approval_denied",
    "tool_requested",
    "compaction",
    "continued",
    "mcp_tools",
    "error",
    "status",
]


class SessionEvent(_Strict):
    """One entry of the session log. Offsets are gap-free and start at 0."""

    offset: int
    kind: EventKind
    at: datetime
    text: str | None = None
    content: list[dict[str, Any]] | None = None  # model_turn: the raw content blocks
    tool_calls: list[ToolCall] | None = None
    tool_result: ToolResult | None = None
    usage: Usage | None = None
    model: str | None = None
    stop_reason: str | None = None
    status: SessionStatus | None = None
    sandbox: SandboxHandle | None = None
    snapshot: SnapshotRef | None = None
    child: str | None = None  # subagent events: the child session's id
    agent: AgentSpec | None = None  # session_started: the definition this session runs
    agent_version: str | None = None
    covers: list[int] | None = None  # compaction: [first, last] offsets of the events it summarised
    method: Literal["summary", "truncation"] | None = None  # compaction: summarised, or left out (None: summary)
    run_id: str | None = None  # continued: the run this one continues


class SessionState(_Strict):
    status: SessionStatus
    agent: str
    turns: int
    events: int
    usage: Usage
    last_answer: str | None
    sandbox: SandboxHandle | None
    cost_usd: float | None = None
    awaiting_approval: list[ToolCall] = Field(default_factory=list)
    awaiting_client: list[ToolCall] = Field(default_factory=list)  # custom tool calls waiting for a result
    first_offset: int = 0  # offset of this run's first event (earlier runs hold the ones before)
    run: int = 1  # 1 + how often the session continued as new
    context_tokens: int = 0  # estimated size of the next request
    error: str | None = None  # why the session stopped, or why its latest answer failed (None: it did not)


class ContextState(_Strict):
    """The messages the model sees (the workflow's ContextBuilder keeps their digests beside them)."""

    messages: list[dict[str, Any]] = Field(default_factory=list)
    synced: int = 0  # messages the model activity already holds
    measured_tokens: int = 0  # the API's token count of the first measured_count messages
    measured_count: int = 0
    grown: int = 0  # estimated tokens ever added (compaction does not take them back)
    upto: list[int] = Field(default_factory=list)  # per message: the newest event whose content it holds (-1: unknown)


class CompactionState(_Strict):
    compacted_until: int = 0  # offset of the first event no compaction has covered yet
    failures: int = 0  # failed summaries this session
    retry_at: int | None = None  # context growth at which a summary is tried again


class SandboxState(_Strict):
    handle: SandboxHandle | None = None
    owns: bool = True  # False: the parent's sandbox, shared: used, never snapshotted or destroyed
    snapshot: SnapshotRef | None = None  # the newest snapshot of /workspace


class LoopState(_Strict):
    last: list[str] | None = None  # the previous tool call: [name, canonical input]
    count: int = 0  # how often in a row


class SessionCarry(_Strict):
    """A session's state. The workflow holds one and carries it whole into the next run when it
    continues as new: a new field is one line here, never a copy in four places."""

    first_offset: int = 0  # offset of this run's first event (earlier runs hold the ones before)
    run: int = 1
    pending: list[str] = Field(default_factory=list)  # user messages not yet taken up
    status: SessionStatus = "running"
    resume: bool = False  # continued in the middle of answering: go on without a new user message
    response_turns: int = 0  # model calls made for the current user message
    turns: int = 0
    usage: Usage = Field(default_factory=lambda: Usage())
    cost_usd: float | None = 0.0  # None once a model's price is unknown
    last_answer: str | None = None
    last_error: str | None = None
    children_started: int = 0
    mcp_tools: list[McpTool] = Field(default_factory=list)  # discovered at the start: same tools, same prompt
    context: ContextState = Field(default_factory=ContextState)
    compaction: CompactionState = Field(default_factory=CompactionState)
    sandbox: SandboxState = Field(default_factory=SandboxState)
    loop: LoopState = Field(default_factory=LoopState)

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any) -> Any:
        """Runs recorded before the state was grouped carried it flat: read those as well."""
        if not isinstance(data, dict) or "messages" not in data:
            return data
        flat = dict(data)
        context = {k: flat.pop(k) for k in ("messages", "synced", "measured_tokens", "measured_count") if k in flat}
        if "context_grown" in flat:
            context["grown"] = flat.pop("context_grown")
        if "message_upto" in flat:
            context["upto"] = flat.pop("message_upto")
        compaction = {"compacted_until": flat.pop("compacted_until", 0)}
        for old, new in (("compaction_failures", "failures"), ("compaction_retry_at", "retry_at")):
            if old in flat:
                compaction[new] = flat.pop(old)
        sandbox = {"handle": flat.pop("sandbox", None), "owns": flat.pop("owns_sandbox", True)}
        sandbox["snapshot"] = flat.pop("snapshot", None)
        loop = {"last": flat.pop("loop_last", None), "count": flat.pop("loop_count", 0)}
        return {**flat, "context": context, "compaction": compaction, "sandbox": sandbox, "loop": loop}


class SessionResult(_Strict):
    status: SessionStatus
    answer: str | None
    turns: int
    usage: Usage  # this session's own and its subagents'
    error: str | None = None
    cost_usd: float | None = None  # likewise; None where a model's price is unknown


# --- model activity -----------------------------------------------------------------------------


def chain_digest(previous: str, message: dict[str, Any]) -> str:
    """Rolling digest of a context: digest(n) = sha256(digest(n-1) + canonical json of message n).

    The workflow and the model activity compute it independently; equal digests mean equal
    contexts, so the activity can trust its cached prefix.
    """
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((previous + canonical).encode()).hexdigest()


def context_root(system: str, tools: list[dict[str, Any]]) -> str:
    return chain_digest("", {"system": system, "tools": tools})


class ModelContext(_Strict):
    """The whole context of a model call. Crosses the wire only on a cache miss (as a query)."""

    system: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]


class ModelRequest(_Strict):
    """What the workflow sends the model activity: only what is new since the previous call.

    The activity keeps the context prefix in a worker-local cache, keyed by session id and
    checked by digest; on a miss it asks the workflow (a query: no history) for the whole context.
    """

    session_id: str
    model: str
    max_tokens: int
    temperature: float | None = None
    prefix_count: int  # messages the activity should already hold
    prefix_digest: str  # digest of system + tools + those messages
    new_messages: list[dict[str, Any]]
    digest: str  # digest after appending new_messages
    # Sent only with the first request of a run (prefix_count == 0): constant per session.
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    # The offset the call's durable event (model_turn, compaction, or the error) will get: it keys
    # the call's live deltas. None from workflows that predate streaming (nothing is published).
    event_offset: int | None = None


class ModelTurn(_Strict):
    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: Usage
    model: str
    request_id: str | None = None


DeltaKind = Literal["start", "text", "tool_use", "end"]


class LiveDelta(_Strict):
    """A piece of a model call in progress, relayed outside history (`starter.py serve`).

    `offset` is the offset the call's durable event will get; a retried call (`attempt` + 1)
    starts its text again; `seq` counts a call attempt's deltas from 0. The durable event
    supersedes the deltas: the final turn is recorded once, in history."""

    session: str
    offset: int = Field(ge=0)
    attempt: int = Field(ge=1)
    seq: int = Field(ge=0)
    kind: DeltaKind
    at: float  # when the activity received it from the model API (Unix time)
    index: int | None = None  # text, tool_use: the content block
    text: str | None = None  # text: the new text
    tool_use_id: str | None = None  # tool_use: a tool call begins
    name: str | None = None  # tool_use: the tool
    model: str | None = None  # start
    stop_reason: str | None = None  # end

    @property
    def sse_id(self) -> str:
        return f"{self.offset}.{self.attempt}.{self.seq}"


class LiveBatch(_Strict):
    """What a worker posts to the live relay: deltas of any sessions, in the order received."""

    deltas: list[LiveDelta]


# --- sandboxes ----------------------------------------------------------------------------------


class SnapshotRef(_Strict):
    """A workspace snapshot in the blob store (a gzipped tar of /workspace)."""

    key: str
    bytes: int
    fingerprint: str  # of the workspace when it was taken: unchanged workspace, no new snapshot
    taken_at: datetime


class ProvisionRequest(_Strict):
    session_id: str
    spec: SandboxSpec
    restore: SnapshotRef | None = None  # a snapshot wins over the seed
    seed: WorkspaceSeed | None = None


class SandboxHandle(_Strict):
    sandbox_id: str  # the container id
    host_queue: str  # every later call for this sandbox goes to this task queue
    image: str
    runtime: str
    restored: SnapshotRef | None = None
    restore_error: str | None = None
    seeded: str | None = None  # what the workspace was seeded with
    from_pool: bool = False


class SnapshotRequest(_Strict):
    handle: SandboxHandle
    session_id: str
    previous: SnapshotRef | None = None


class ExecuteRequest(_Strict):
    handle: SandboxHandle
    call_id: str  # execution is idempotent per call id
    name: str
    input: dict[str, Any]
    timeout_s: float
    output_cap: int


class ExecuteResult(_Strict):
    output: str
    is_error: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    truncated_chars: int = 0


SessionEvent.model_rebuild()
Subagent.model_rebuild()
SessionCarry.model_rebuild()
SessionInput.model_rebuild()
