"""The agent-file schema: an agent's model and price, tools and policies, sandbox, limits,
subagents, skills, custom tools and MCP servers, with the checks that refuse a bad definition
when it is loaded, naming the field. No I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import Field, field_validator, model_validator

from durable_agents.contracts._base import _first_duplicate, _Strict, estimate_tokens
from durable_agents.contracts.model import Usage
from durable_agents.contracts.names import (
    DEFAULT_TOOLS,
    KNOWN_TOOLS,
    LOAD_SKILL,
    MCP_SEPARATOR,
    SANDBOX_TMP_MB,
    SPAWN_AGENT,
    TOOL_ALIASES,
    ToolPolicy,
)


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


# A package as its manager takes it: a name with an optional version or constraint
# (`jq`, `requests==2.32.3`, `left-pad@1.3.0`, `ripgrep`, `golang.org/x/tools/cmd/stringer@v0.1.0`);
# never options or shell text (they are passed as arguments, quoted, to the installer).
PACKAGE_PATTERN = r"^[A-Za-z0-9@][A-Za-z0-9._+~:@/<>=!,\[\]^*-]*$"
Package = Annotated[str, Field(min_length=1, max_length=214, pattern=PACKAGE_PATTERN)]


class Packages(_Strict):
    """Packages installed into an image derived from the sandbox image on the sandbox host
    (`sandboxes/packages.py`), built once per content hash and reused by every later sandbox."""

    apt: list[Package] = Field(default_factory=list, description="Debian packages (apt-get install)")
    pip: list[Package] = Field(default_factory=list, description="Python packages (pip install)")
    npm: list[Package] = Field(default_factory=list, description="Node packages (npm install -g)")
    cargo: list[Package] = Field(default_factory=list, description="Rust crates (cargo install)")
    gem: list[Package] = Field(default_factory=list, description="Ruby gems (gem install)")
    go: list[Package] = Field(default_factory=list, description="Go programs (go install PATH@VERSION)")

    def __bool__(self) -> bool:
        return any(self.model_dump().values())

    def digest(self) -> str:
        """What the derived image is made of, in a stable form (order of packages kept: it can matter)."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


class SandboxSpec(_Strict):
    image: str = "durable-agents/sandbox:latest"
    packages: Packages = Field(
        default_factory=Packages, description="installed into an image derived from `image`, cached by content"
    )
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
        packages = self.packages.digest() if self.packages else None
        return (
            self.image,
            packages,
            self.cpus,
            self.memory_mb,
            self.disk_mb,
            self.pids,
            self.network,
            self.runtime,
            egress,
        )


# Limits.run_log_bytes' default (a field added later: agent_version leaves it out at this value).
RUN_LOG_BYTES = 256 * 1024


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
    run_log_bytes: int | None = Field(
        default=RUN_LOG_BYTES,
        ge=16 * 1024,
        description="continue-as-new once this run's events hold more text (tool outputs, messages, answers) "
        "than the model's current context, and at least this many bytes: what a worker holds for a cached "
        "session beyond its context (earlier runs' events are read from their histories); null: no bound",
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


class MemoryRef(_Strict):
    """A memory store an agent's sessions attach, named as in the API's database (its name or id);
    resolved into a mount where the session starts (`da start`, `da schedule create`, the Python API)."""

    store: str = Field(min_length=1, max_length=255)
    access: Literal["read_write", "read_only"] = "read_write"
    instructions: str = Field(default="", max_length=4096)


class MemoryConfig(_Strict):
    """An agent's memory: the stores its sessions attach (`memory: [...]` is short for `stores`)."""

    stores: list[MemoryRef] = Field(default_factory=list)
    sessions: bool = Field(
        default=False, description="memory_search also covers this agent's earlier sessions (episodic memory)"
    )

    @model_validator(mode="before")
    @classmethod
    def _a_list_is_stores(cls, data: Any) -> Any:
        return {"stores": data} if isinstance(data, list) else data


class Skill(_Strict):
    """A skill (Anthropic's SKILL.md convention), read from its folder when the agent file is loaded."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(min_length=1)
    body: str
    files: dict[str, str] = Field(default_factory=dict, description="other text files of the skill, by relative path")
    # A skill the agent learned (save_skill), from its registry: its words that suggest it, its
    # version there, and whether the prompt suggests it for this task (else it is listed by name).
    triggers: list[str] = Field(default_factory=list)
    learned: bool = False
    registry_version: int | None = None
    suggested: bool = True


class OutcomeSpec(_Strict):
    """An agent file's outcome: every session's task is graded against this rubric."""

    rubric: str = Field(min_length=1, max_length=200_000, description="in a file: rubric or rubric_file (relative)")
    max_iterations: int = Field(default=3, ge=1, le=20)


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


class AgentSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    model: ModelSpec
    system: str = ""
    system_file: str | None = Field(
        default=None, description="file with the system prompt, relative to the agent file (read at load)"
    )
    tools: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TOOLS),
        description="built-in tools: bash, read_file (read), write_file (write), edit_file (edit), glob, grep, "
        "web_fetch, web_search",
    )
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
    outcome: OutcomeSpec | None = Field(default=None, description="grade every task against this rubric")
    learn_skills: bool = Field(
        default=False, description="save_skill keeps what worked in the agent's skill registry (skills: {learn: true})"
    )
    mcp_servers: list[McpServer] = Field(
        default_factory=list, description="MCP servers whose tools the model may use, as <server>__<tool>"
    )
    memory: MemoryConfig = Field(
        default_factory=MemoryConfig, description="memory stores its sessions attach, mounted at /mnt/memory/<name>"
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
            if name in (*KNOWN_TOOLS, *TOOL_ALIASES, SPAWN_AGENT, LOAD_SKILL):
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
        """`tools:` items may be names or {name, policy} mappings; policies go to `policies`. The
        aliases of the file tools (read, write, edit) become their names (read_file ...)."""
        if isinstance(data, dict) and isinstance(data.get("tools"), list):
            tools, policies = [], dict(data.get("policies") or {})
            for item in data["tools"]:
                if isinstance(item, dict) and set(item) <= {"name", "policy"} and "name" in item:
                    tools.append(item["name"])
                    if "policy" in item:
                        policies[item["name"]] = item["policy"]
                else:
                    tools.append(item)
            tools = [TOOL_ALIASES.get(t, t) if isinstance(t, str) else t for t in tools]
            policies = {TOOL_ALIASES.get(k, k) if isinstance(k, str) else k: v for k, v in policies.items()}
            data = {**data, "tools": tools, "policies": policies}
        elif isinstance(data, dict) and isinstance(data.get("policies"), dict):
            policies = {TOOL_ALIASES.get(k, k) if isinstance(k, str) else k: v for k, v in data["policies"].items()}
            data = {**data, "policies": policies}
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
    canonical = json.dumps(
        _without_later_defaults(agent.model_dump(mode="json")), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# Fields added later, at their defaults: left out of the version's hash, so an agent defined
# before them keeps its version.
_LATER_DEFAULTS: dict[str, Any] = {
    "packages": Packages().model_dump(mode="json"),
    "outcome": None,
    "learn_skills": False,
    "triggers": [],
    "learned": False,
    "registry_version": None,
    "suggested": True,
    "memory": MemoryConfig().model_dump(mode="json"),
    "run_log_bytes": RUN_LOG_BYTES,
}


def _without_later_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_later_defaults(v)
            for k, v in value.items()
            if not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
        }
    if isinstance(value, list):
        return [_without_later_defaults(v) for v in value]
    return value


Subagent.model_rebuild()
