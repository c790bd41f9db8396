"""How `da follow` (and `events`) show a session: one line per event (`format_event`),
and three renderers of a followed session's items: JSON Lines for machines, plain lines when
stdout is not a terminal, and a live `rich` view in a terminal (model text token by token,
tool calls and results as they finish, subagents nested, approvals waiting with the commands
that answer them, and a progress line: status, turn, tokens, cost, elapsed).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from durable_agents.contracts import (
    ApprovalRequested,
    CompactionEvent,
    LiveDelta,
    ModelTurnEvent,
    SandboxDestroyed,
    SandboxProvisioned,
    SandboxSnapshot,
    SessionEvent,
    SessionState,
    StatusChanged,
    SubagentFinished,
    SubagentStarted,
    ToolCall,
    ToolResultEvent,
    Usage,
)
from durable_agents.live.follow import Item

STREAM_TAIL_LINES = 12  # of a model call's text in progress, in the live view


def short(text: str | None, limit: int = 200) -> str:
    text = (text or "").strip().replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_event(e: SessionEvent, full: bool = False) -> str:
    when = e.at.strftime("%H:%M:%S")
    head = f"[{e.offset:>4}] {when} {e.kind:<19}"
    limit = 100_000 if full else 200
    match e:
        case ModelTurnEvent():
            parts = [short(e.text, limit)] if e.text else []
            parts += [f"→ {c.name}({short(json.dumps(c.input), 120)})" for c in e.tool_calls or []]
            return f"{head} {' '.join(parts)}{usage_note(e.usage)}"
        case ToolResultEvent():
            mark = "✓" if not e.tool_result.is_error else "✗"
            return f"{head} {mark} {e.tool_result.name}: {short(e.tool_result.output, limit)}"
        case StatusChanged():
            return f"{head} {e.status}"
        case SubagentStarted():
            return f"{head} {e.child.rsplit('/', 1)[-1]} {short(e.text, limit)}"
        case SubagentFinished():
            return f"{head} {e.child.rsplit('/', 1)[-1]} {e.status}: {short(e.text, limit)}"
        case SandboxProvisioned() | SandboxDestroyed():
            extra = f" ({e.text})" if isinstance(e, SandboxDestroyed) and e.text else ""
            return f"{head} {e.sandbox.sandbox_id[:12]} on {e.sandbox.host_queue}{extra}"
        case SandboxSnapshot():
            return f"{head} {e.snapshot.key} ({e.snapshot.bytes} bytes)"
        case CompactionEvent():
            covers = f"events {e.covers[0]}–{e.covers[1]}"
            return f"{head} {e.method} of {covers}: {short(e.text, limit)}{usage_note(e.usage)}"
    return f"{head} {short(event_text(e), limit)}"


def event_text(e: SessionEvent) -> str | None:
    """The text an event carries, where its kind has one."""
    text: str | None = getattr(e, "text", None)
    return text


def usage_note(u: Usage | None) -> str:
    if not u:
        return ""
    read = f", {u.cache_read_input_tokens} cached" if u.cache_read_input_tokens else ""
    return f" [{u.total_tokens - u.output_tokens}{read} → {u.output_tokens} tok]"


def nesting(root: str, session_id: str) -> tuple[int, str]:
    """How deep a subagent's session sits under the followed one, and its line prefix."""
    depth = session_id.count("/sub-") - root.count("/sub-")
    return depth, ("    " * depth + f"↳ {session_id.rsplit('/', 1)[-1]} ") if depth else ""


def answer_commands(session_id: str, call: ToolCall) -> list[str]:
    return [
        f"da approve {session_id} {call.id}",
        f"da deny {session_id} {call.id} --reason '…'",
    ]


class JsonRenderer:
    """One JSON object per line: durable events and deltas, each with its SSE id and when it was
    received; the same ids resume a stream (`follow --from`, an SSE client's Last-Event-ID)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def show(self, item: Item) -> None:
        head = {"id": item.sse_id, "received_at": item.received_at}
        if item.event is not None:
            line = {"type": "event", **head, "session": item.session, **item.event.model_dump(mode="json")}
        elif item.delta is not None:
            line = {"type": "delta", **head, **item.delta.model_dump(mode="json", exclude_none=True)}
        else:
            return
        self.out.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


@dataclass
class _Streaming:
    """A model call in progress as a follower has seen it."""

    session: str
    offset: int
    attempt: int
    model: str | None = None
    blocks: dict[int, str] = field(default_factory=dict)  # block index -> text so far
    tools: list[str] = field(default_factory=list)
    printed: int = 0  # plain lines: characters of the text already printed as whole lines

    @property
    def text(self) -> str:
        return "\n".join(t for _, t in sorted(self.blocks.items()) if t)

    def add(self, delta: LiveDelta) -> None:
        if delta.kind == "start":
            self.model = delta.model
        elif delta.kind == "text" and delta.index is not None:
            self.blocks[delta.index] = self.blocks.get(delta.index, "") + (delta.text or "")
        elif delta.kind == "tool_use" and delta.name:
            self.tools.append(delta.name)


class _Calls:
    """The calls in progress by session; a delta of a later attempt starts its call again."""

    def __init__(self) -> None:
        self.by_session: dict[str, _Streaming] = {}

    def add(self, session: str, delta: LiveDelta) -> tuple[_Streaming, _Streaming | None]:
        """The call the delta belongs to, and the earlier attempt it replaced (if any)."""
        call = self.by_session.get(session)
        replaced = None
        if call is None or (delta.offset, delta.attempt) != (call.offset, call.attempt):
            if call is not None and call.offset == delta.offset:
                replaced = call
            call = self.by_session[session] = _Streaming(session, delta.offset, delta.attempt)
        call.add(delta)
        return call, replaced

    def settle(self, session: str, offset: int) -> _Streaming | None:
        """The durable event at `offset` stands for the call that streamed before it."""
        call = self.by_session.get(session)
        if call is not None and call.offset <= offset:
            return self.by_session.pop(session)
        return None


class PlainRenderer:
    """Lines for logs and pipes: each event as one line (as `events` prints them), a streamed
    answer line by line as its lines complete, a retried call and the approvals waiting."""

    def __init__(self, root: str, out: IO[str] | None = None) -> None:
        self.root = root
        self.out = out or sys.stdout
        self.calls = _Calls()

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def show(self, item: Item) -> None:
        _, prefix = nesting(self.root, item.session)
        if item.delta is not None:
            call, replaced = self.calls.add(item.session, item.delta)
            head = f"[{call.offset:>4}] {time.strftime('%H:%M:%S', time.localtime(item.delta.at))} {'streaming':<19}"
            if replaced is not None and replaced.text:
                self._print(f"{prefix}{head} (model call retried, attempt {call.attempt}: its answer starts again)")
            text = call.text
            while "\n" in text[call.printed :]:
                end = text.index("\n", call.printed)
                self._print(f"{prefix}{head} {text[call.printed : end]}")
                call.printed = end + 1
        elif item.event is not None:
            self.calls.settle(item.session, item.event.offset)
            self._print(prefix + format_event(item.event))
            if isinstance(item.event, ApprovalRequested):
                for waiting in item.event.tool_calls:
                    commands = "   |   ".join(answer_commands(item.session, waiting))
                    self._print(f"{prefix}{'':>9}to answer: {commands}")

    def close(self) -> None:
        pass


_KIND_STYLE = {
    "model_turn": "bold",
    "tool_result": "",
    "user_message": "bold green",
    "error": "bold red",
    "approval_requested": "bold yellow",
    "approval_denied": "yellow",
    "approval_granted": "green",
    "interrupted": "yellow",
    "subagent_started": "magenta",
    "subagent_finished": "magenta",
    "compaction": "cyan",
}


class RichRenderer:
    """The live view in a terminal: finished events scroll by above a live area that shows the
    model's text as it streams, the approvals waiting, and a progress line."""

    def __init__(self, root: str, console: Console | None = None, *, live: bool = True) -> None:
        self.root = root
        self.console = console or Console(highlight=False)
        self.calls = _Calls()
        self.states: dict[str, SessionState] = {}
        self.started_at: datetime | None = None
        self.note = "" if live else " · durable events only: token streaming needs `da serve`"
        self._live = Live(
            console=self.console,
            refresh_per_second=12,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            get_renderable=self._area,
        )
        self._live.start()

    def show(self, item: Item) -> None:
        depth, prefix = nesting(self.root, item.session)
        if item.delta is not None:
            call, replaced = self.calls.add(item.session, item.delta)
            if replaced is not None and replaced.text:
                self._live.console.print(
                    Text(f"{prefix}[{call.offset:>4}] model call retried (attempt {call.attempt}): ", style="yellow")
                    + Text("its answer starts again", style="dim")
                )
        elif item.event is not None:
            self.calls.settle(item.session, item.event.offset)
            self._live.console.print(self._event(item.event, prefix, depth))
        elif item.state is not None:
            self.states[item.session] = item.state
            if item.session == self.root and item.started_at is not None:
                self.started_at = item.started_at
        self._live.refresh()

    def _event(self, e: SessionEvent, prefix: str, depth: int) -> RenderableType:
        style = _KIND_STYLE.get(e.kind, "dim")
        if isinstance(e, ToolResultEvent):
            style = "red" if e.tool_result.is_error else "green"
        if isinstance(e, ModelTurnEvent):
            indent = "    " * depth + "       "
            head = Text(prefix + f"[{e.offset:>4}] {e.at:%H:%M:%S} ", style="dim") + Text("model", style="bold cyan")
            head += Text(usage_note(e.usage), style="dim")
            parts: list[RenderableType] = [head]
            if e.text:
                parts.append(Text("\n".join(indent + line for line in e.text.splitlines())))
            for c in e.tool_calls or []:
                parts.append(Text(f"{indent}→ {c.name}({short(json.dumps(c.input), 160)})", style="bold blue"))
            return Group(*parts)
        return Text(prefix + format_event(e), style=style)

    def _area(self) -> RenderableType:
        parts: list[RenderableType] = []
        for call in self.calls.by_session.values():
            _, prefix = nesting(self.root, call.session)
            retry = f", attempt {call.attempt}" if call.attempt > 1 else ""
            head = Text(f"{prefix}[{call.offset:>4}] {call.model or 'model'}{retry} ", style="cyan")
            lines = call.text.splitlines() or [""]
            body = "\n".join(lines[-STREAM_TAIL_LINES:])
            tools = "".join(f"\n→ {name} …" for name in call.tools)
            parts.append(head + Text("streaming\n", style="dim") + Text(body + tools))
        for session_id, state in self.states.items():
            for waiting in state.awaiting_approval:
                _, prefix = nesting(self.root, session_id)
                parts.append(
                    Text(f"{prefix}⏸ waiting for approval: {waiting.name} {short(json.dumps(waiting.input), 120)}\n")
                    + Text("   " + "   |   ".join(answer_commands(session_id, waiting)), style="bold yellow")
                )
            for waiting in state.awaiting_client:
                _, prefix = nesting(self.root, session_id)
                parts.append(
                    Text(f"{prefix}⏸ waiting for the client: {waiting.name}\n")
                    + Text(f"   da tool-result {session_id} {waiting.id} --file out.json", style="bold yellow")
                )
        parts.append(self._progress())
        return Group(*parts)

    def _progress(self) -> RenderableType:
        state = self.states.get(self.root)
        if state is None:
            return Spinner("dots", text=Text(f"connecting to {self.root}…", style="dim"))
        u = state.usage
        cost = f" · ${state.cost_usd:.4f}" if state.cost_usd is not None else ""
        streamed = sum(len(call.text) for call in self.calls.by_session.values())
        streaming = f" · ~{streamed // 4} tokens streaming" if streamed else ""
        elapsed = ""
        if self.started_at is not None:
            seconds = int(time.time() - self.started_at.timestamp())
            elapsed = f" · {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} elapsed"
        text = Text(
            f"{state.status} · turn {state.turns} · {u.total_tokens - u.output_tokens} in / {u.output_tokens} out "
            f"tokens{cost}{elapsed}{streaming}{self.note}",
            style="bold",
        )
        if state.status in ("running", "waiting"):
            return Spinner("dots", text=text)
        return text

    def close(self) -> None:
        self._live.stop()
        # The live area is gone: leave the final progress line behind.
        self.console.print(self._progress())
