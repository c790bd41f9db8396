"""The harness's decisions as plain deterministic code: tool definitions and input checks,
the model context and its digests, and the texts the Temporal UI shows. No I/O, no Temporal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from durable_agents.contracts import (
    COMPACTION_INSTRUCTION,
    LOAD_SKILL,
    SANDBOX_TOOLS,
    SPAWN_AGENT,
    AgentSpec,
    CustomTool,
    Limits,
    McpTool,
    ModelRequest,
    ModelSpec,
    SandboxHandle,
    Skill,
    SnapshotRef,
    Subagent,
    ToolCall,
    ToolResult,
    Usage,
    chain_digest,
    context_root,
    estimate_tokens,
)

# --- tools --------------------------------------------------------------------------------------


class _ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BashInput(_ToolInput):
    command: str = Field(min_length=1, description="The bash command to run.")
    timeout_s: float | None = Field(
        default=None, gt=0, description="Seconds before the command is killed (capped by the agent)."
    )


class ReadFileInput(_ToolInput):
    path: str = Field(min_length=1, description="File path, absolute or relative to /workspace.")


class WriteFileInput(_ToolInput):
    path: str = Field(min_length=1, description="File path, absolute or relative to /workspace.")
    content: str = Field(description="The whole new content of the file.")


class EditFileInput(_ToolInput):
    path: str = Field(min_length=1, description="File path, absolute or relative to /workspace.")
    old_string: str = Field(min_length=1, description="Exact text to replace; must occur once.")
    new_string: str = Field(description="Replacement text.")
    replace_all: bool = Field(default=False, description="Replace every occurrence.")


class SpawnAgentInput(_ToolInput):
    agent: str = Field(min_length=1, description="Which subagent to spawn.")
    task: str = Field(
        min_length=1, description="The subtask, complete and self-contained: the subagent sees nothing else."
    )
    share_sandbox: bool | None = Field(
        default=None, description="Run in your sandbox (sees your files) instead of its own."
    )


class LoadSkillInput(_ToolInput):
    name: str = Field(min_length=1, description="Which skill to load.")
    copy_files: bool = Field(
        default=False, description="Also copy the skill's files into /workspace/skills/<name>/ in the sandbox."
    )


TOOL_INPUTS: dict[str, type[_ToolInput]] = {
    "bash": BashInput,
    "read_file": ReadFileInput,
    "write_file": WriteFileInput,
    "edit_file": EditFileInput,
    SPAWN_AGENT: SpawnAgentInput,
    LOAD_SKILL: LoadSkillInput,
}

TOOL_DESCRIPTIONS = {
    "bash": "Run a bash command in the sandbox. The shell persists between calls: the working "
    "directory and exported variables are kept. stdout and stderr are returned together.",
    "read_file": "Read a text file from the sandbox.",
    "write_file": "Create or overwrite a file in the sandbox; parent directories are created.",
    "edit_file": "Replace an exact string in a file in the sandbox. old_string must occur exactly "
    "once unless replace_all is true.",
}


def _input_schema(model: type[_ToolInput]) -> dict[str, Any]:
    """A tool input's JSON Schema without pydantic's titles (noise in every request)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def available_tools(agent: AgentSpec) -> list[str]:
    """The agent's tools, plus spawn_agent when it has subagents, load_skill when it has skills,
    and its custom (client-executed) tools."""
    return (
        [*agent.tools]
        + ([SPAWN_AGENT] if agent.subagents else [])
        + ([LOAD_SKILL] if agent.skills else [])
        + [t.name for t in agent.custom_tools]
    )


def system_prompt(agent: AgentSpec) -> str:
    """The agent's system prompt, with its skills listed (their bodies load on demand)."""
    if not agent.skills:
        return agent.system
    listing = "\n".join(f"- {s.name}: {s.description}" for s in agent.skills)
    return (
        f"{agent.system.rstrip()}\n\nSkills you can load with the load_skill tool when a task needs one:\n{listing}\n"
    )


def tool_definitions(
    tools: list[str],
    subagents: list[Subagent] | None = None,
    skills: list[Skill] | None = None,
    custom: list[CustomTool] | None = None,
) -> list[dict[str, Any]]:
    """Anthropic tool definitions, in the agent's order (stable, so the prompt prefix is too)."""
    definitions = []
    by_name = {t.name: t for t in custom or []}
    for name in tools:
        if name in by_name:
            tool = by_name[name]
            definitions.append({"name": name, "description": tool.description, "input_schema": tool.input_schema})
            continue
        if name == SPAWN_AGENT:
            definitions.append(_spawn_definition(subagents or []))
            continue
        if name == LOAD_SKILL:
            definitions.append(_skill_definition(skills or []))
            continue
        schema = _input_schema(TOOL_INPUTS[name])
        definitions.append({"name": name, "description": TOOL_DESCRIPTIONS[name], "input_schema": schema})
    return definitions


def _spawn_definition(subagents: list[Subagent]) -> dict[str, Any]:
    schema = _input_schema(SpawnAgentInput)
    schema["properties"]["agent"]["enum"] = [s.name for s in subagents]
    listing = "\n".join(
        f"- {s.name}: {s.description or (s.spec.description if s.spec else '')}".rstrip(": ") for s in subagents
    )
    return {
        "name": SPAWN_AGENT,
        "description": "Delegate a focused subtask to a subagent with its own context window; it answers with "
        "its final result. Several spawn_agent calls in one turn run in parallel. Subagents:\n" + listing,
        "input_schema": schema,
    }


def _skill_definition(skills: list[Skill]) -> dict[str, Any]:
    schema = _input_schema(LoadSkillInput)
    schema["properties"]["name"]["enum"] = [s.name for s in skills]
    return {
        "name": LOAD_SKILL,
        "description": "Load a skill's instructions (listed in the system prompt); optionally copy its files "
        "into the sandbox.",
        "input_schema": schema,
    }


def spawn_refusal(
    subagent: Subagent | None, name: str, depth: int, limits: Limits, started: int, running: int
) -> str | None:
    """Why a spawn_agent call may not run (an is_error result for the model), or None."""
    if subagent is None or subagent.spec is None:
        return f"Unknown subagent {name!r}."
    if depth + 1 > limits.max_depth:
        return f"Subagents may nest {limits.max_depth} deep; this session is at depth {depth} and cannot spawn."
    if started >= limits.max_children:
        return f"This session has spawned its limit of {limits.max_children} subagents."
    if running >= limits.max_concurrent_children:
        most = limits.max_concurrent_children
        return f"{running} subagents are running, the most at once ({most}); spawn fewer per turn."
    return None


def validation_problems(error: ValidationError, root: str = "input") -> str:
    """A pydantic error as one line: `field: problem; field: problem`."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or root}: {err['msg']}" for err in error.errors())


def tool_error(call: ToolCall, text: str) -> ToolResult:
    """A tool result the model should see as an error (the loop goes on)."""
    return ToolResult(call_id=call.id, name=call.name, output=text, is_error=True)


def check_tool_call(
    call: ToolCall, allowed: list[str], schema_tools: Sequence[CustomTool | McpTool] = ()
) -> str | None:
    """None if the call may run; otherwise the error the model should see. Custom and MCP tools
    are checked against their JSON Schema, built-in ones against their pydantic input model."""
    if call.name not in allowed:
        return f"Unknown tool {call.name!r}. Available tools: {', '.join(allowed)}."
    tool = next((t for t in schema_tools if t.name == call.name), None)
    if tool is not None:
        errors = sorted(jsonschema.Draft202012Validator(tool.input_schema).iter_errors(call.input), key=str)
        if errors:
            problems = "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or 'input'}: {e.message}" for e in errors)
            return f"Invalid input for {call.name}: {problems}."
        return None
    try:
        TOOL_INPUTS[call.name].model_validate(call.input)
    except ValidationError as e:
        return f"Invalid input for {call.name}: {validation_problems(e)}."
    return None


def is_sandbox_tool(name: str) -> bool:
    return name in SANDBOX_TOOLS


def tool_timeout(call: ToolCall, default_s: float) -> float:
    requested = call.input.get("timeout_s") if call.name == "bash" else None
    return min(float(requested), default_s) if isinstance(requested, int | float) else default_s


_TOOL_USE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _kind_of(value: Any) -> str:
    return {str: "a string", list: "a list", type(None): "missing (null)", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def tool_calls_of(content: list[dict[str, Any]]) -> list[ToolCall]:
    return parse_tool_uses(content, "")[0]


def parse_tool_uses(
    content: list[dict[str, Any]], salt: str
) -> tuple[list[ToolCall], list[dict[str, Any]], dict[str, str]]:
    """The tool calls of a model turn, whatever shape its tool_use blocks have.

    Returns the calls (each with a usable id and an object input), the content as the next request
    may carry it (malformed blocks repaired: a missing or duplicate id replaced by one made from
    `salt`, an input that is not an object replaced by {}), and for each repaired call the error
    its tool result gives the model instead of running it. Well-formed content comes back as is."""
    calls: list[ToolCall] = []
    problems: dict[str, str] = {}
    repaired: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, block in enumerate(content):
        if block.get("type") != "tool_use":
            repaired.append(block)
            continue
        wrong: list[str] = []
        raw_id, name, raw_input = block.get("id"), block.get("name"), block.get("input", None)
        call_id = raw_id if isinstance(raw_id, str) and _TOOL_USE_ID.match(raw_id) and raw_id not in seen else None
        if call_id is None:
            call_id = f"toolu_da_{salt}_{i}"
            wrong.append("its id was missing, repeated or malformed" if raw_id is None or raw_id in seen else "")
            wrong[-1] = wrong[-1] or f"its id {str(raw_id)[:40]!r} is not a valid tool-use id"
        if not isinstance(name, str) or not name:
            name = "(no name)"
            wrong.append("it named no tool")
        if not isinstance(raw_input, dict):
            wrong.append(f"its input was {_kind_of(raw_input)}, not a JSON object")
            raw_input = {}
        seen.add(call_id)
        call = ToolCall(id=call_id, name=name, input=raw_input)
        calls.append(call)
        if wrong:
            problems[call_id] = (
                f"This tool call was not run: {'; '.join(wrong)}. Call the tool again with a JSON object as its input."
            )
            repaired.append({"type": "tool_use", "id": call_id, "name": name, "input": raw_input})
        else:
            repaired.append(block)
    return calls, repaired, problems


def text_of(content: list[dict[str, Any]]) -> str:
    return "\n".join(str(b["text"]) for b in content if b.get("type") == "text" and b.get("text")).strip()


def render_task(template: str, now: datetime, last_result: str) -> str:
    """A scheduled run's task: {date} and {last_result} filled in; other braces left alone."""
    return template.replace("{date}", now.date().isoformat()).replace(
        "{last_result}", last_result or "(no earlier run has an answer yet)"
    )


class LoopGuard:
    """Refuses a tool call that repeats the previous ones exactly (same tool, same input) `limit` times."""

    def __init__(self, limit: int, last: list[str] | None = None, count: int = 0) -> None:
        self.limit = limit
        self._last: tuple[str, str] | None = (last[0], last[1]) if last else None
        self._count = count

    def state(self) -> tuple[list[str] | None, int]:
        """What a continued run needs to go on counting."""
        return (list(self._last) if self._last else None), self._count

    def check(self, call: ToolCall) -> str | None:
        signature = (call.name, json.dumps(call.input, sort_keys=True))
        self._count = self._count + 1 if signature == self._last else 1
        self._last = signature
        if self._count < self.limit:
            return None
        return (
            f"This is the same {call.name} call with the same input {self._count} times in a row, so it was not run "
            "again: the result would not change. Try a different approach, or say what is blocking you."
        )


def budget_exhausted(limits: Limits, usage: Usage, cost_usd: float | None) -> str | None:
    """Why the session must stop for its budget, or None."""
    tokens = usage.total_tokens
    if limits.max_tokens_total is not None and tokens >= limits.max_tokens_total:
        return f"token budget exhausted: {tokens} of {limits.max_tokens_total} tokens used"
    if limits.max_cost_usd is not None and cost_usd is not None and cost_usd >= limits.max_cost_usd:
        return f"cost budget exhausted: ${cost_usd:.4f} of ${limits.max_cost_usd:.4f} spent"
    return None


# --- what the Temporal UI shows -----------------------------------------------------------------


def _first_line(text: str, limit: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def session_summary(agent: str, task: str) -> str:
    return f"{agent}: {_first_line(task, 120)}"


def tool_summary(call: ToolCall) -> str:
    if call.name == SPAWN_AGENT:
        return f"spawn {call.input.get('agent', '?')}: {_first_line(str(call.input.get('task', '')))}"
    if call.name == LOAD_SKILL:
        return f"load_skill: {call.input.get('name', '?')}"
    if call.name == "bash":
        return f"bash: {_first_line(str(call.input.get('command', '')))}"
    if "path" not in call.input:
        return f"{call.name}: {_first_line(json.dumps(call.input, sort_keys=True))}"
    return f"{call.name}: {_first_line(str(call.input.get('path', '')))}"


def sandbox_reset_message(
    replacement: SandboxHandle | None, snapshot: SnapshotRef | None, provision_error: str | None = None
) -> str:
    """What the model is told when its sandbox was lost in the middle of a call."""
    lost = (
        "The sandbox was lost (its container or host went away) while running this call, so the call did not complete."
    )
    if replacement is None:
        return f"{lost} No new sandbox could be provisioned ({provision_error}); sandbox tools will try again."
    gone = "Running processes and the shell's working directory and variables are gone."
    if replacement.restored is not None:
        ref = replacement.restored
        return (
            f"{lost} The environment was reset: a new sandbox was provisioned and /workspace was restored from "
            f"the snapshot taken at {ref.taken_at:%Y-%m-%d %H:%M:%S} UTC ({ref.bytes} bytes compressed). "
            f"Changes made after that snapshot are lost. {gone}"
        )
    if snapshot is not None:
        return (
            f"{lost} The environment was reset: a new sandbox was provisioned, but restoring /workspace from the "
            f"last snapshot failed ({replacement.restore_error}), so /workspace is empty. {gone}"
        )
    return (
        f"{lost} The environment was reset: a new, empty sandbox was provisioned (no snapshot of /workspace "
        f"had been taken yet). {gone}"
    )


# --- the model context --------------------------------------------------------------------------


class ContextBuilder:
    """The messages the model sees, with a rolling digest per prefix.

    `synced` counts the messages the model activity already holds; a request carries only the
    messages after it, so each message crosses into history once, and history grows linearly.
    """

    def __init__(self, system: str, tools: list[dict[str, Any]]) -> None:
        self.system = system
        self.tools = tools
        self.messages: list[dict[str, Any]] = []
        self.digests: list[str] = [context_root(system, tools)]  # digests[n]: first n messages
        self.synced = 0
        # The API's token count of the first measured_count messages (with system and tools).
        self.measured_tokens = 0
        self.measured_count = 0
        self.grown = 0  # estimated tokens ever added (compaction does not take them back)
        # upto[i]: the newest session event whose content is in messages[:i + 1] (-1: not known).
        self.upto: list[int] = []

    def _append(self, message: dict[str, Any], at: int = -1) -> None:
        self.messages.append(message)
        self.digests.append(chain_digest(self.digests[-1], message))
        self.upto.append(at)
        self.grown += estimate_tokens(message)

    def _replace_last(self, message: dict[str, Any], at: int = -1) -> None:
        self.grown += estimate_tokens(message) - estimate_tokens(self.messages[-1])
        self.messages[-1] = message
        self.digests[-1] = chain_digest(self.digests[-2], message)
        self.upto[-1] = max(self.upto[-1], at)
        self.synced = min(self.synced, len(self.messages) - 1)

    def _add_user_blocks(self, blocks: list[dict[str, Any]], at: int) -> None:
        # The API wants roles to alternate; a user message after a user message is merged.
        if self.messages and self.messages[-1]["role"] == "user":
            last = self.messages[-1]["content"]
            previous = [{"type": "text", "text": last}] if isinstance(last, str) else list(last)
            self._replace_last({"role": "user", "content": previous + blocks}, at)
        else:
            self._append({"role": "user", "content": blocks}, at)

    def add_user_text(self, text: str, at: int = -1) -> None:
        """A user message; `at`: the offset of its event in the session log."""
        self._add_user_blocks([{"type": "text", "text": text}], at)

    def add_assistant(self, content: list[dict[str, Any]], at: int = -1) -> None:
        self._append({"role": "assistant", "content": content}, at)

    def add_tool_results(self, results: list[ToolResult], at: int = -1) -> None:
        """Tool results; `at`: the offset of the last one's event."""
        self._add_user_blocks(
            [
                {"type": "tool_result", "tool_use_id": r.call_id, "content": r.output, "is_error": r.is_error}
                for r in results
            ],
            at,
        )

    def covered_until(self, cut: int) -> int | None:
        """The newest session event whose content is in messages[:cut] (None where not known)."""
        known = [u for u in self.upto[:cut] if u >= 0]
        return max(known) if known else None

    def request(self, session_id: str, model: ModelSpec) -> ModelRequest:
        return self._request(session_id, model, self.synced, self.messages[self.synced :], self.digests[-1])

    def _request(
        self, session_id: str, model: ModelSpec, prefix: int, new: list[dict[str, Any]], digest: str
    ) -> ModelRequest:
        """The first `prefix` messages (which the activity holds) and the new ones after them."""
        first = prefix == 0
        return ModelRequest(
            session_id=session_id,
            model=model.name,
            max_tokens=model.max_tokens,
            temperature=model.temperature,
            prefix_count=prefix,
            prefix_digest=self.digests[prefix],
            new_messages=new,
            digest=digest,
            system=self.system if first else None,
            tools=self.tools if first else None,
        )

    def model_answered(self, content: list[dict[str, Any]], input_tokens: int | None = None, at: int = -1) -> None:
        """Record the model's answer; the activity appended the same message to its cache.
        input_tokens: what the API counted for the request (it replaces the estimate); at: the
        offset of the turn's event."""
        if input_tokens:
            self.measured_tokens, self.measured_count = input_tokens, len(self.messages)
        self.add_assistant(content, at)
        self.synced = len(self.messages)

    # --- size and compaction --------------------------------------------------------------

    @classmethod
    def restore(
        cls,
        system: str,
        tools: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        synced: int,
        upto: list[int] | None = None,
    ) -> ContextBuilder:
        """A context carried over from an earlier run (digests recomputed, so they match the
        activity's cache, which the earlier run filled)."""
        builder = cls(system, tools)
        offsets = upto if upto is not None and len(upto) == len(messages) else [-1] * len(messages)
        for message, at in zip(messages, offsets, strict=True):
            builder._append(message, at)
        builder.synced = min(synced, len(messages))
        return builder

    def with_tools(self, tools: list[dict[str, Any]]) -> ContextBuilder:
        """The same conversation with other tool definitions (a new prompt prefix)."""
        builder = ContextBuilder.restore(self.system, tools, self.messages, self.synced, self.upto)
        builder.grown = self.grown
        return builder

    def estimated_tokens(self) -> int:
        """The next request's size: measured where the API told us, estimated for the rest."""
        if self.measured_count and self.measured_count <= len(self.messages):
            return self.measured_tokens + sum(estimate_tokens(m) for m in self.messages[self.measured_count :])
        return estimate_tokens([self.system, self.tools, self.messages])

    def compaction_request(self, cut: int, session_id: str, model: ModelSpec) -> ModelRequest:
        """A request that asks the model to summarise messages[:cut]; it shares the prompt-cache prefix
        of the session's requests up to the message before the cut."""
        instruction = {"type": "text", "text": COMPACTION_INSTRUCTION}
        last = self.messages[cut - 1]
        if last["role"] == "user":  # the instruction joins it: roles must alternate
            content = last["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            head, tail = self.messages[: cut - 1], [{**last, "content": [*blocks, instruction]}]
        else:
            head, tail = self.messages[:cut], [{"role": "user", "content": [instruction]}]
        prefix = min(self.synced, len(head))
        new = [*head[prefix:], *tail]
        digest = self.digests[prefix]
        for message in new:
            digest = chain_digest(digest, message)
        return self._request(session_id, model, prefix, new, digest)

    def compact(self, cut: int, lead: list[dict[str, Any]]) -> None:
        """Replace messages[:cut] by `lead` (a summary, or a note of what was left out), which opens
        the first kept user message. The next request starts a new prompt prefix."""
        kept = self.messages[cut:]
        if kept and kept[0]["role"] == "user":
            content = kept[0]["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            kept = [{"role": "user", "content": lead + blocks}, *kept[1:]]
        else:
            kept = [{"role": "user", "content": lead}, *kept]
        grown, upto = self.grown, self.upto[cut:] if len(kept) == len(self.messages) - cut else self.upto[cut - 1 :]
        self.messages, self.digests, self.upto = [], [self.digests[0]], []
        for message, at in zip(kept, upto, strict=True):
            self._append(message, at)
        self.grown = grown  # what compaction writes is not growth
        self.synced = 0
        self.measured_tokens = self.measured_count = 0


# --- compaction ---------------------------------------------------------------------------------

SUMMARY_HEADER = "[Summary of the earlier conversation, written when the context outgrew its budget]"
TRUNCATION_HEADER = "[The earlier conversation was left out to keep the context within its budget]"


def _has_tool_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def compaction_cut(messages: list[dict[str, Any]], keep_tokens: int) -> int | None:
    """Where to cut the context: messages before the cut are summarised, those from it on are kept
    verbatim. The kept part holds the newest messages that fit in keep_tokens (at least the newest
    exchange) and starts where no tool_result loses its tool_use: at an assistant message, or at a
    user message without tool results. None when there is nothing before the newest exchange."""
    valid = [
        i for i in range(1, len(messages)) if messages[i]["role"] == "assistant" or not _has_tool_results(messages[i])
    ]
    if not valid:
        return None
    kept, cut = 0, None
    sizes = [estimate_tokens(m) for m in messages]
    for i in range(len(messages) - 1, 0, -1):
        kept += sizes[i]
        if i in valid and (kept <= keep_tokens or cut is None):
            cut = i
        if kept > keep_tokens and cut is not None:
            break
    return cut


def summary_blocks(summary: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": f"{SUMMARY_HEADER}\n{summary.strip()}"}]


KEEP_USER_CHARS = 8_000  # what a truncation keeps of the user's words: the first, then the newest


def truncation_blocks(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """What stands where the oldest turns were left out: the note, then the user's own words from
    them (their task first, the newest after it, within KEEP_USER_CHARS), earlier summaries among
    them: the turns go, what was asked stays."""
    said: list[str] = []
    for message in messages:
        if message["role"] != "user":
            continue
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        said += [str(b.get("text", "")) for b in blocks if b.get("type") == "text" and b.get("text")]
    said = [t for t in said if not t.startswith(TRUNCATION_HEADER)]  # an earlier note: this one replaces it
    if said and len(said[0]) > KEEP_USER_CHARS // 2:
        said[0] = said[0][: KEEP_USER_CHARS // 2] + " […]"
    kept: list[str] = []
    room = KEEP_USER_CHARS
    for text in said[:1] + said[:0:-1]:
        if len(text) > room:
            break
        kept.append(text)
        room -= len(text)
    ordered = kept[:1] + kept[:0:-1]
    return [{"type": "text", "text": f"{TRUNCATION_HEADER}\n{note}"}] + [{"type": "text", "text": t} for t in ordered]


CompactionMethod = Literal["summary", "truncation"]


def compaction_method(limits: Limits, failures: int, retry_at: int | None, grown: int) -> CompactionMethod:
    """Summarise (a model call), or leave the oldest turns out (no call)? After a failed summary,
    summarise again only once the context has grown by the share `limits` sets, and never after
    `compaction_max_failures` failures: a summariser that fails is not paid on every turn."""
    if failures >= limits.compaction_max_failures:
        return "truncation"
    if retry_at is not None and grown < retry_at:
        return "truncation"
    return "summary"


def retry_summary_at(limits: Limits, grown: int, context_tokens: int) -> int:
    """After a failed summary of a context of `context_tokens`: the growth at which to try again."""
    return grown + max(1, int(limits.compaction_retry_growth * context_tokens))


def truncation_note(turns_left_out: int, first: int, last: int) -> str:
    """What the model reads where the turns it can no longer see were."""
    return (
        f"Your {turns_left_out} earlier turns (session events {first} to {last}) are not shown here; what the "
        "user said in them follows. Ask the user if you need something else from them."
    )
