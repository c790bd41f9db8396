"""Session I/O: what starts a session, its state (carried whole across continue-as-new), its
events, the state a query returns and the result. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from durable_agents.contracts._base import _Strict
from durable_agents.contracts.agent import AgentSpec
from durable_agents.contracts.model import Usage
from durable_agents.contracts.sandbox import MemoryMount, SandboxHandle, SnapshotRef, WorkspaceSeed
from durable_agents.contracts.tools import McpTool, ToolCall, ToolResult

AGENT_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_.-]+)?$"


OutcomeResult = Literal[
    "running", "evaluating", "needs_revision", "satisfied", "max_iterations_reached", "failed", "interrupted"
]
OUTCOME_DONE = ("satisfied", "max_iterations_reached", "failed", "interrupted")


class Outcome(_Strict):
    """What the agent should produce and the rubric a grader holds its answer to
    (`user.define_outcome`, `da start --outcome RUBRIC.md`, `outcome:` in an agent file)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = Field(min_length=1, description="the task: the agent begins work on it")
    rubric: str = Field(min_length=1, max_length=200_000, description="how to grade the answer (text or markdown)")
    max_iterations: int = Field(default=3, ge=1, le=20, description="evaluate-then-revise cycles before giving up")
    heartbeat_s: float = Field(default=10.0, ge=0.1, description="an `ongoing` event this often while the grader works")


class OutcomeState(_Strict):
    """An outcome and where its evaluation stands (one per outcome defined, the newest last)."""

    outcome: Outcome
    iteration: int = 0  # 0-indexed revision cycle
    result: OutcomeResult = "running"
    explanation: str | None = None
    usage: Usage = Field(default_factory=lambda: Usage())  # the grader's, over every cycle
    grader_messages: list[dict[str, Any]] = Field(default_factory=list)  # the grader's own conversation
    defined_at: int = 0  # offset of its outcome_defined event
    completed_at: datetime | None = None


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
    task: str | None = Field(
        default=None, min_length=1, description="the first user message; none: the session waits for one"
    )
    one_shot: bool = False
    # The task is an outcome's description: a grader holds each answer to the rubric.
    outcome: Outcome | None = None
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
    # Memory stores attached to the session (mounted in its sandbox at /mnt/memory/<name>).
    memory: list[MemoryMount] = Field(default_factory=list)

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


class _Event(_Strict):
    """What every entry of the session log has. Offsets are gap-free and start at 0."""

    offset: int
    at: datetime


class SessionStarted(_Event):
    kind: Literal["session_started"] = "session_started"
    text: str  # the task
    model: str | None = None  # None: the session could not start (its agent was not resolved)
    agent: AgentSpec | None = None  # the definition this session runs
    agent_version: str | None = None


class UserMessage(_Event):
    kind: Literal["user_message"] = "user_message"
    text: str
    message_id: str | None = None  # the id the client gave it (the API's user.message event id)


class OutcomeDefined(_Event):
    """A user message that defines an outcome: its description is the message."""

    kind: Literal["outcome_defined"] = "outcome_defined"
    outcome: Outcome
    message_id: str | None = None


class OutcomeEvaluationStarted(_Event):
    kind: Literal["outcome_evaluation_start"] = "outcome_evaluation_start"
    outcome_id: str
    iteration: int


class OutcomeEvaluationOngoing(_Event):
    kind: Literal["outcome_evaluation_ongoing"] = "outcome_evaluation_ongoing"
    outcome_id: str
    iteration: int


class OutcomeEvaluated(_Event):
    kind: Literal["outcome_evaluation_end"] = "outcome_evaluation_end"
    outcome_id: str
    iteration: int
    result: OutcomeResult
    explanation: str
    usage: Usage
    started_at: int | None = None  # offset of its outcome_evaluation_start (none: interrupted before one)


class ModelTurnEvent(_Event):
    kind: Literal["model_turn"] = "model_turn"
    content: list[dict[str, Any]]  # the raw content blocks, as the API sent them
    text: str | None = None
    tool_calls: list[ToolCall] | None = None
    usage: Usage
    model: str
    stop_reason: str | None = None


class ToolResultEvent(_Event):
    kind: Literal["tool_result"] = "tool_result"
    tool_result: ToolResult
    client_id: str | None = None  # a custom tool's: the id of the client's result (user.custom_tool_result)


class SandboxProvisioned(_Event):
    kind: Literal["sandbox_provisioned"] = "sandbox_provisioned"
    sandbox: SandboxHandle


class SandboxDestroyed(_Event):
    kind: Literal["sandbox_destroyed"] = "sandbox_destroyed"
    sandbox: SandboxHandle
    text: str | None = None  # "lost": it went away by itself


class SandboxSnapshot(_Event):
    kind: Literal["sandbox_snapshot"] = "sandbox_snapshot"
    snapshot: SnapshotRef


class SandboxReleased(_Event):
    """The session has ended and leaves its sandbox to its host, which keeps the workspace (a last
    snapshot, where anything is unsaved) and removes the container once the session has closed:
    after the answer, not before it."""

    kind: Literal["sandbox_released"] = "sandbox_released"
    sandbox: SandboxHandle
    snapshot: bool  # by the session's word, /workspace has unsaved changes: a last snapshot is due


class SubagentStarted(_Event):
    kind: Literal["subagent_started"] = "subagent_started"
    child: str  # the child session's id
    text: str  # "<subagent>: <task>"
    sandbox: SandboxHandle | None = None  # the parent's sandbox, where it shares it


class SubagentFinished(_Event):
    kind: Literal["subagent_finished"] = "subagent_finished"
    child: str
    status: SessionStatus
    usage: Usage | None = None
    text: str | None = None  # its answer, or why it failed


class Interrupted(_Event):
    kind: Literal["interrupted"] = "interrupted"
    text: str
    client_id: str | None = None  # the id the client's interrupt had (the API's user.interrupt id)


class SkillLoaded(_Event):
    kind: Literal["skill_loaded"] = "skill_loaded"
    text: str  # the skill's name


class _WaitEvent(_Event):
    tool_calls: list[ToolCall]  # the one call waiting (a list, as model turns have)
    text: str  # its summary, or the reason it was denied
    client_id: str | None = None  # granted / denied: the id of the client's answer (user.tool_confirmation)


class ApprovalRequested(_WaitEvent):
    kind: Literal["approval_requested"] = "approval_requested"


class ApprovalGranted(_WaitEvent):
    kind: Literal["approval_granted"] = "approval_granted"


class ApprovalDenied(_WaitEvent):
    kind: Literal["approval_denied"] = "approval_denied"


class ToolRequested(_WaitEvent):
    """A custom tool call waiting for the client's result."""

    kind: Literal["tool_requested"] = "tool_requested"


class CompactionEvent(_Event):
    kind: Literal["compaction"] = "compaction"
    text: str  # the summary, or the note of what was left out
    covers: list[int]  # [first, last] offsets of the events whose content it stands for
    method: Literal["summary", "truncation"] = "summary"
    reason: str  # why, and what it did (messages summarised or left out, kept, tokens now)
    usage: Usage | None = None  # summary: the model call's
    model: str | None = None


class Continued(_Event):
    kind: Literal["continued"] = "continued"
    run_id: str | None = None  # the run this one continues
    text: str


class McpToolsListed(_Event):
    kind: Literal["mcp_tools"] = "mcp_tools"
    text: str  # the tools, comma-separated


class ErrorEvent(_Event):
    kind: Literal["error"] = "error"
    text: str


class StatusChanged(_Event):
    kind: Literal["status"] = "status"
    status: SessionStatus


# One entry of the session log: one small model per kind, told apart by `kind`.
SessionEvent = Annotated[
    SessionStarted
    | UserMessage
    | ModelTurnEvent
    | ToolResultEvent
    | SandboxProvisioned
    | SandboxDestroyed
    | SandboxReleased
    | SandboxSnapshot
    | SubagentStarted
    | SubagentFinished
    | Interrupted
    | SkillLoaded
    | ApprovalRequested
    | ApprovalGranted
    | ApprovalDenied
    | ToolRequested
    | CompactionEvent
    | Continued
    | McpToolsListed
    | ErrorEvent
    | StatusChanged
    | OutcomeDefined
    | OutcomeEvaluationStarted
    | OutcomeEvaluationOngoing
    | OutcomeEvaluated,
    Field(discriminator="kind"),
]
EVENT_TYPES: dict[str, type[_Event]] = {
    t.model_fields["kind"].default: t  # type: ignore[misc]
    for t in (
        SessionStarted,
        UserMessage,
        ModelTurnEvent,
        ToolResultEvent,
        SandboxProvisioned,
        SandboxDestroyed,
        SandboxSnapshot,
        SandboxReleased,
        SubagentStarted,
        SubagentFinished,
        Interrupted,
        SkillLoaded,
        ApprovalRequested,
        ApprovalGranted,
        ApprovalDenied,
        ToolRequested,
        CompactionEvent,
        Continued,
        McpToolsListed,
        ErrorEvent,
        StatusChanged,
        OutcomeDefined,
        OutcomeEvaluationStarted,
        OutcomeEvaluationOngoing,
        OutcomeEvaluated,
    )
}
EventKind = Literal[
    "session_started",
    "user_message",
    "model_turn",
    "tool_result",
    "sandbox_provisioned",
    "sandbox_destroyed",
    "sandbox_snapshot",
    "sandbox_released",
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
    "outcome_defined",
    "outcome_evaluation_start",
    "outcome_evaluation_ongoing",
    "outcome_evaluation_end",
]
EVENT_JSON_VERSION = 2  # v2: each kind has only its own fields; compaction's `stop_reason` is `reason`
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(SessionEvent)


def parse_event(data: Any) -> SessionEvent:
    """One event from its JSON form (a dict), told apart by its kind."""
    event: SessionEvent = _EVENT_ADAPTER.validate_python(data)
    return event


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
    outcomes: list[OutcomeState] = Field(default_factory=list)  # without the grader's conversation


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
    # /workspace may differ from `snapshot` (from empty, without one): False only when the sandbox's
    # own word says it does not, so the snapshot a session would take of it can be left out.
    unsaved: bool = True


class LoopState(_Strict):
    last: list[str] | None = None  # the previous tool call: [name, canonical input]
    count: int = 0  # how often in a row


class UserInput(_Strict):
    """A user message waiting to be taken up, with the id a client gave it (the API's event id)."""

    text: str
    id: str | None = None
    outcome: Outcome | None = None  # the message defines this outcome (its text is the description)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        return {"text": data} if isinstance(data, str) else data  # runs recorded before ids carried strings


class SessionCarry(_Strict):
    """A session's state. The workflow holds one and carries it whole into the next run when it
    continues as new: a new field is one line here, never a copy in four places."""

    first_offset: int = 0  # offset of this run's first event (earlier runs hold the ones before)
    run: int = 1
    pending: list[UserInput] = Field(default_factory=list)  # user messages not yet taken up
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
    outcomes: list[OutcomeState] = Field(default_factory=list)  # every outcome defined; the newest last
    learned_loaded: list[str] = Field(default_factory=list)  # learned skills loaded: their outcome counts for them
    indexed_to: int = 0  # episodic memory: the log before this offset is in the agent's search index

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


SessionCarry.model_rebuild()
SessionInput.model_rebuild()
