"""Session I/O: what starts a session, its state (carried whole across continue-as-new), its
events, the state a query returns and the result. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from durable_agents.contracts._base import _Strict
from durable_agents.contracts.agent import AgentSpec
from durable_agents.contracts.model import Usage
from durable_agents.contracts.sandbox import SandboxHandle, SnapshotRef, WorkspaceSeed
from durable_agents.contracts.tools import McpTool, ToolCall, ToolResult

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


SessionEvent.model_rebuild()
SessionCarry.model_rebuild()
SessionInput.model_rebuild()
