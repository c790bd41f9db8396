"""The session log as Claude Managed Agents events (`client.beta.sessions.events`).

Each event of our durable log becomes zero or more Managed Agents events, in order, with ids
that come from the log (so `list`, `stream`, a reconnect and a restarted server all agree):

- user_message: `user.message` (with the id the client sent it with, else one from its offset);
- model_turn: `span.model_request_start`, `agent.message` (its text), one `agent.tool_use` /
  `agent.mcp_tool_use` / `agent.custom_tool_use` per call (its id: the tool-use id), and
  `span.model_request_end` (usage);
- tool_result: `agent.tool_result` / `agent.mcp_tool_result` / `user.custom_tool_result`;
- approval_requested, tool_requested: `session.status_idle`, `requires_action`, the calls waiting;
- approval_granted / _denied: `user.tool_confirmation` (allow / deny with its message);
- interrupted: `user.interrupt`; compaction: `agent.thread_context_compacted`;
- error: `session.error` (typed by what failed);
- status running / idle / done or failed: `session.status_running` / `session.status_idle`
  (`end_turn`, `retries_exhausted`, `budget_reached`) / `session.status_terminated`;
- subagent_started / _finished: `session.thread_created` / `session.thread_status_terminated`;
- outcome_defined: `user.define_outcome` (its `outcome_id`); outcome_evaluation_start / _end:
  `span.outcome_evaluation_start` / `_ongoing` (while the grader works) / `_end` (result,
  explanation, usage).

Sandbox, skill, MCP-listing and continuation events have no Managed Agents counterpart. Pure code.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from durable_agents.contracts import (
    MCP_SEPARATOR,
    AgentSpec,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    CompactionEvent,
    ErrorEvent,
    Interrupted,
    ModelTurnEvent,
    OutcomeDefined,
    OutcomeEvaluated,
    OutcomeEvaluationOngoing,
    OutcomeEvaluationStarted,
    SessionEvent,
    SessionStarted,
    StatusChanged,
    SubagentFinished,
    SubagentStarted,
    ToolCall,
    ToolRequested,
    ToolResultEvent,
    Usage,
    UserMessage,
)

SKIP = "_skip"  # a place kept for an event that is not there
# Our built-in tools under the names Managed Agents' toolset gives them.
TOOL_NAMES = {"read_file": "read", "write_file": "write", "edit_file": "edit"}


def event_id(offset: int, k: int) -> str:
    """The id of the k-th Managed Agents event made from the log's event at `offset`."""
    return f"sevt_{offset:08d}_{k}"


def thread_id(child: str) -> str:
    """A subagent's session thread id: sthr_ and the child session's last path part (sub-N)."""
    return f"sthr_{child.rsplit('/', 1)[-1]}"


def message_event_id(offset: int) -> str:
    """The `agent.message` of the model turn recorded at `offset` (streamed deltas name it first)."""
    return event_id(offset, 1)


@dataclass(frozen=True)
class Mapped:
    """One Managed Agents event and where it stands in the log (its cursor: offset, index)."""

    offset: int
    index: int
    data: dict[str, Any]

    @property
    def cursor(self) -> str:
        return f"{self.offset}.{self.index}"


def _usage(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    }


def _text_blocks(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def _error_object(text: str) -> dict[str, Any]:
    """Our error event as a Managed Agents error object (its type by what failed)."""
    lowered = text.lower()
    kind = "unknown_error"
    extra: dict[str, Any] = {}
    if "model call failed" in lowered or "anthropic api" in lowered:
        kind = "model_request_failed_error"
        if "overloaded" in lowered or " 529 " in lowered:
            kind = "model_overloaded_error"
        elif "rate_limit" in lowered or " 429 " in lowered:
            kind = "model_rate_limited_error"
    elif lowered.startswith("mcp server "):
        kind = "mcp_connection_failed_error"
        extra["mcp_server_name"] = text.split("'")[1] if text.count("'") >= 2 else ""
    elif "compaction failed" in lowered:
        kind = "compaction_limit_reached_error"
    elif "turn limit" in lowered:
        kind = "tool_use_limit_reached_error"
    return {"type": kind, "message": text, "retry_status": {"type": "terminal"}, **extra}


@dataclass
class EventMapper:
    """Maps a session's events, read in order, to Managed Agents events. It remembers what the
    order tells (which calls wait for someone, why the session went idle), so feed it every
    event from where it starts."""

    session_id: str
    agent: AgentSpec | None = None
    thread: str | None = None  # set on a subagent's events: its session thread id
    waiting: dict[str, ToolCall] = field(default_factory=dict)
    threads: dict[str, str] = field(default_factory=dict)  # child session id -> its agent's name
    _idle_reason: str | None = None  # why the next idle is not an end_turn
    # The log offset and index of every event mapped so far, in order (a compaction names its range).
    _offsets: list[int] = field(default_factory=list)
    _indexes: list[int] = field(default_factory=list)

    def _kind_of(self, call: ToolCall) -> str:
        if self.agent is not None and self.agent.custom_tool(call.name) is not None:
            return "custom"
        if MCP_SEPARATOR in call.name and (self.agent is None or self.agent.mcp_server_of(call.name) is not None):
            return "mcp"
        return "builtin"

    def _tool_use(self, call: ToolCall) -> dict[str, Any]:
        kind = self._kind_of(call)
        if kind == "custom":
            return {"type": "agent.custom_tool_use", "id": call.id, "name": call.name, "input": call.input}
        if kind == "mcp":
            server, _, tool = call.name.partition(MCP_SEPARATOR)
            return {
                "type": "agent.mcp_tool_use",
                "id": call.id,
                "name": tool,
                "mcp_server_name": server,
                "input": call.input,
            }
        name = TOOL_NAMES.get(call.name, call.name)
        return {"type": "agent.tool_use", "id": call.id, "name": name, "input": call.input}

    def _bodies(self, e: SessionEvent) -> list[dict[str, Any]]:
        """The Managed Agents events of one of ours, without ids and times (added by `map`)."""
        match e:
            case SessionStarted():
                if e.agent is not None:
                    self.agent = e.agent
                return []
            case UserMessage():
                return [{"type": "user.message", "content": _text_blocks(e.text), **_own_id(e.message_id)}]
            case ModelTurnEvent():
                out: list[dict[str, Any]] = [{"type": "span.model_request_start"}]
                texts = [b for b in e.content if b.get("type") == "text" and b.get("text")]
                # Index 1 is the turn's agent.message (its streamed deltas name it), kept even when empty.
                message = [{"type": "text", "text": b["text"]} for b in texts]
                out.append({"type": "agent.message", "content": message} if texts else {"type": SKIP})
                out += [self._tool_use(c) for c in e.tool_calls or []]
                end = {
                    "model_request_start_id": event_id(e.offset, 0),
                    "is_error": False,
                    "model_usage": _usage(e.usage),
                }
                out.append({"type": "span.model_request_end", **end})
                return out
            case ToolResultEvent():
                r = e.tool_result
                self.waiting.pop(r.call_id, None)
                call = ToolCall(id=r.call_id, name=r.name, input={})
                kind = self._kind_of(call)
                content = _text_blocks(r.output)
                if kind == "custom":
                    return [
                        {
                            "type": "user.custom_tool_result",
                            **_own_id(e.client_id),
                            "custom_tool_use_id": r.call_id,
                            "content": content,
                            "is_error": r.is_error,
                        }
                    ]
                if kind == "mcp":
                    return [
                        {
                            "type": "agent.mcp_tool_result",
                            "mcp_tool_use_id": r.call_id,
                            "content": content,
                            "is_error": r.is_error,
                        }
                    ]
                return [
                    {"type": "agent.tool_result", "tool_use_id": r.call_id, "content": content, "is_error": r.is_error}
                ]
            case ApprovalRequested() | ToolRequested():
                for call in e.tool_calls:
                    self.waiting[call.id] = call
                return [_idle({"type": "requires_action", "event_ids": list(self.waiting)})]
            case ApprovalGranted():
                call_id = e.tool_calls[0].id
                return [
                    {
                        "type": "user.tool_confirmation",
                        **_own_id(e.client_id),
                        "tool_use_id": call_id,
                        "result": "allow",
                    }
                ]
            case ApprovalDenied():
                call_id = e.tool_calls[0].id
                self.waiting.pop(call_id, None)
                denied = {"tool_use_id": call_id, "result": "deny", "deny_message": e.text}
                return [{"type": "user.tool_confirmation", **_own_id(e.client_id), **denied}]
            case Interrupted():
                return [{"type": "user.interrupt", **_own_id(e.client_id)}]
            case CompactionEvent():
                return [{"type": "agent.thread_context_compacted", **self._compacted(e)}]
            case ErrorEvent():
                if e.text.startswith("stopped: ") and "budget" in e.text:
                    self._idle_reason = "budget_reached"
                elif e.text.startswith("model call failed"):
                    self._idle_reason = "retries_exhausted"
                return [{"type": "session.error", "error": _error_object(e.text)}]
            case StatusChanged():
                return self._status(e)
            case SubagentStarted():
                name = self.threads[e.child] = e.text.split(":", 1)[0]
                return [{"type": "session.thread_created", "session_thread_id": thread_id(e.child), "agent_name": name}]
            case SubagentFinished():
                ended = {"session_thread_id": thread_id(e.child), "agent_name": self.threads.get(e.child, "")}
                return [{"type": "session.thread_status_terminated", **ended}]
            case OutcomeDefined():
                o = e.outcome
                defined = {
                    "outcome_id": o.id,
                    "description": o.description,
                    "rubric": {"type": "text", "content": o.rubric},
                    "max_iterations": o.max_iterations,
                }
                return [{"type": "user.define_outcome", **_own_id(e.message_id), **defined}]
            case OutcomeEvaluationStarted():
                return [{"type": "span.outcome_evaluation_start", "outcome_id": e.outcome_id, "iteration": e.iteration}]
            case OutcomeEvaluationOngoing():
                return [
                    {"type": "span.outcome_evaluation_ongoing", "outcome_id": e.outcome_id, "iteration": e.iteration}
                ]
            case OutcomeEvaluated():
                ended = {
                    "outcome_id": e.outcome_id,
                    "iteration": e.iteration,
                    "result": e.result,
                    "explanation": e.explanation,
                    "usage": _usage(e.usage),
                    "outcome_evaluation_start_id": event_id(e.started_at, 0) if e.started_at is not None else "",
                }
                return [{"type": "span.outcome_evaluation_end", **ended}]
        return []

    def _compacted(self, e: CompactionEvent) -> dict[str, Any]:
        """Ours, beside the SDK's fields: what the compaction did, and the events it stands for
        (`events.list?page=<from_page>&limit=<events>` lists them)."""
        first, last = e.covers[0], e.covers[-1]
        start = bisect.bisect_left(self._offsets, first)
        stop = bisect.bisect_right(self._offsets, last)
        covered = {"first_offset": first, "last_offset": last, "events": stop - start, "from_page": None}
        if stop > start:
            covered["from_page"] = f"{self._offsets[start]}.{self._indexes[start]}"
        return {"method": e.method, "summary": e.text, "reason": e.reason, "covers": covered}

    def _status(self, e: StatusChanged) -> list[dict[str, Any]]:
        if e.status == "running":
            self._idle_reason = None
            return [{"type": "session.status_running"}]
        if e.status == "idle":
            reason, self._idle_reason = self._idle_reason or "end_turn", None
            return [_idle({"type": reason})]
        if e.status in ("done", "failed"):
            out = [_idle({"type": "budget_reached"})] if self._idle_reason == "budget_reached" else []
            return [*out, {"type": "session.status_terminated"}]
        return []  # waiting: said by the requests that wait

    def map(self, e: SessionEvent) -> list[Mapped]:
        """The Managed Agents events made from one of ours, with their ids and times."""
        out = []
        for k, body in enumerate(self._bodies(e)):
            if body["type"] == SKIP:
                continue
            body = {"id": event_id(e.offset, k), **body}  # tool uses and user messages bring their own
            body["processed_at"] = e.at.isoformat()
            if self.thread is not None:
                body["session_thread_id"] = self.thread
            out.append(Mapped(e.offset, k, _ordered(body)))
            self._offsets.append(e.offset)
            self._indexes.append(k)
        return out


def _own_id(message_id: str | None) -> dict[str, Any]:
    return {"id": message_id} if message_id else {}


def _idle(stop_reason: dict[str, Any]) -> dict[str, Any]:
    return {"type": "session.status_idle", "stop_reason": stop_reason}


def _ordered(body: dict[str, Any]) -> dict[str, Any]:
    """`id` and `type` first, as the API prints them."""
    head = {"id": body.pop("id"), "type": body.pop("type")}
    return {**head, **body}
