"""The harness's decisions as plain deterministic code: tool definitions and input checks, the
shapes a model's tool calls may take, guards (loops, budgets, subagent limits) and the texts the
Temporal UI and the model are shown. No I/O, no Temporal. The context lives in `context.py`.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from durable_agents.contracts import (
    GLOB_CAP,
    GREP_CAP,
    LOAD_SKILL,
    SANDBOX_TOOLS,
    SAVE_SKILL,
    SPAWN_AGENT,
    AgentSpec,
    CustomTool,
    Limits,
    LoopState,
    McpTool,
    MemoryMount,
    SandboxHandle,
    SandboxSpec,
    Skill,
    SnapshotRef,
    Subagent,
    ToolCall,
    ToolResult,
    Usage,
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


class GlobInput(_ToolInput):
    pattern: str = Field(
        min_length=1, description="Glob pattern, e.g. '**/*.py' or 'src/*.ts'; '**' matches any number of directories."
    )
    path: str | None = Field(default=None, description="Directory to search in (default: /workspace).")


class GrepInput(_ToolInput):
    pattern: str = Field(min_length=1, description="Regular expression (Python syntax) to search file contents for.")
    path: str | None = Field(default=None, description="File or directory to search (default: /workspace).")
    glob: str | None = Field(default=None, description="Only files whose path matches this glob, e.g. '*.py'.")
    type: str | None = Field(default=None, description="Only files of this type, e.g. py, js, ts, go, rust, md.")
    output_mode: Literal["content", "files_with_matches", "count"] = Field(
        default="files_with_matches",
        description="content: matching lines; files_with_matches: paths of matching files; count: matches per file.",
    )
    case_insensitive: bool = Field(default=False, description="Ignore case.")
    context: int | None = Field(default=None, ge=0, le=50, description="content mode: lines before and after.")
    before: int | None = Field(default=None, ge=0, le=50, description="content mode: lines before each match.")
    after: int | None = Field(default=None, ge=0, le=50, description="content mode: lines after each match.")
    line_numbers: bool = Field(default=True, description="content mode: prefix lines with their numbers.")
    multiline: bool = Field(default=False, description="Let the pattern span lines ('.' matches newlines).")
    head_limit: int | None = Field(
        default=None, ge=1, le=GREP_CAP, description=f"At most this many lines / files / counts (cap {GREP_CAP})."
    )


class WebFetchInput(_ToolInput):
    url: str = Field(min_length=1, pattern=r"^https?://", description="The http:// or https:// URL to fetch.")
    max_chars: int | None = Field(default=None, ge=1, description="Return at most this many characters of text.")


class WebSearchInput(_ToolInput):
    query: str = Field(min_length=1, description="What to search the web for.")
    max_results: int = Field(default=5, ge=1, le=20, description="How many results to return.")


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


class SaveSkillInput(_ToolInput):
    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="A short name for the skill."
    )
    description: str = Field(min_length=1, max_length=1000, description="What it does and when to use it.")
    triggers: list[str] = Field(
        default_factory=list, max_length=20, description="Words in a task that call for this skill."
    )
    instructions: str = Field(
        min_length=1, max_length=50_000, description="The procedure, step by step, as you would want to read it."
    )
    files: list[str] = Field(
        default_factory=list, max_length=20, description="Workspace files to keep with it (scripts, templates)."
    )


TOOL_INPUTS: dict[str, type[_ToolInput]] = {
    "bash": BashInput,
    "read_file": ReadFileInput,
    "write_file": WriteFileInput,
    "edit_file": EditFileInput,
    "glob": GlobInput,
    "grep": GrepInput,
    "web_fetch": WebFetchInput,
    "web_search": WebSearchInput,
    SPAWN_AGENT: SpawnAgentInput,
    LOAD_SKILL: LoadSkillInput,
    SAVE_SKILL: SaveSkillInput,
}

TOOL_DESCRIPTIONS = {
    "bash": "Run a bash command in the sandbox. The shell persists between calls: the working "
    "directory and exported variables are kept. stdout and stderr are returned together.",
    "read_file": "Read a text file from the sandbox.",
    "write_file": "Create or overwrite a file in the sandbox; parent directories are created.",
    "edit_file": "Replace an exact string in a file in the sandbox. old_string must occur exactly "
    "once unless replace_all is true.",
    "glob": f"Find files by name pattern in the sandbox ('**' for any depth). Paths come back sorted, at most "
    f"{GLOB_CAP}; hidden files are included.",
    "grep": "Search file contents in the sandbox with a regular expression, optionally only in files matching a "
    "glob or of a type. Modes: files_with_matches (default), content (matching lines, with context lines), count. "
    f"Binary files are skipped; results are capped ({GREP_CAP}).",
    "web_fetch": "Fetch a web page or file by URL and return it as readable text (HTML is converted). Only hosts "
    "this session's environment allows can be reached.",
    "web_search": "Search the web; returns titles, URLs and snippets of the top results.",
    SAVE_SKILL: "Save a procedure that just worked as a skill of this agent, so later sessions can load it "
    "(with load_skill) instead of finding it again. Use it after a task succeeded with steps worth repeating.",
}


def web_fetch_refusal(url: str, sandbox: SandboxSpec) -> str | None:
    """Why web_fetch may not reach `url` from this sandbox (the error the model sees), or None:
    an unrestricted network reaches anything; otherwise only the hosts of the egress policy."""
    if sandbox.network:
        return None
    host = (urlsplit(url).hostname or "").lower()
    allowed = [r.host.lower() for r in sandbox.egress]
    if host in allowed:
        return None
    if not allowed:
        return (
            f"web_fetch cannot reach {host or url}: this session's environment allows no network access "
            "(add the host to the environment's allowed_hosts, or sandbox.egress in an agent file)."
        )
    return (
        f"web_fetch cannot reach {host or url}: it is not among the hosts this session's environment allows "
        f"({', '.join(allowed)})."
    )


def _input_schema(model: type[_ToolInput]) -> dict[str, Any]:
    """A tool input's JSON Schema without pydantic's titles (noise in every request); a copy the
    caller may change."""
    return copy.deepcopy(_schema_of(model))


@functools.cache
def _schema_of(model: type[_ToolInput]) -> dict[str, Any]:
    # pydantic builds a schema in ~1 ms: once per tool input class and process, not once per session
    # (a pure function of the class, so replay sees the same definitions).
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
        + ([SAVE_SKILL] if agent.learn_skills else [])
        + [t.name for t in agent.custom_tools]
    )


def system_prompt(agent: AgentSpec, memory: Sequence[MemoryMount] = ()) -> str:
    """The agent's system prompt, with its skills listed (their bodies load on demand) and the
    memory stores the session has (their files are in the sandbox, not in the prompt)."""
    prompt = agent.system
    suggested = [s for s in agent.skills if s.suggested]
    if suggested:
        listing = "\n".join(f"- {s.name}: {s.description}" for s in suggested)
        prompt = (
            f"{prompt.rstrip()}\n\nSkills you can load with the load_skill tool when a task needs one:\n{listing}\n"
        )
    others = [s.name for s in agent.skills if not s.suggested]
    if others:  # learned skills that do not fit this task (or have failed too often): by name only
        prompt = f"{prompt.rstrip()}\n\nOther skills (load_skill): {', '.join(others)}\n"
    if memory:
        prompt = f"{prompt.rstrip()}\n\n{memory_section(memory)}"
    return prompt


def memory_section(memory: Sequence[MemoryMount]) -> str:
    """How the model learns of its memory stores: where each is mounted, whether it may write there."""
    lines = [
        "Memory stores are mounted in your sandbox as directories of text files. They outlive this session: "
        "read them before you start, and keep what later sessions should know in the read-write ones (each file at "
        "most 100 KB of UTF-8 text; every change is kept as a version)."
    ]
    for m in memory:
        access = "read-write" if m.access == "read_write" else "read-only"
        lines.append(f"- {m.path} ({access})" + (f": {m.description}" if m.description else ""))
        if m.instructions:
            lines.append(f"  Instructions: {m.instructions}")
    return "\n".join(lines) + "\n"


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
    """Refuses a tool call that repeats the previous ones exactly (same tool, same input) `limit`
    times. Its count lives in the session state (`LoopState`), so it goes on across runs."""

    def __init__(self, limit: int, state: LoopState | None = None) -> None:
        self.limit = limit
        self.state = state if state is not None else LoopState()

    def check(self, call: ToolCall) -> str | None:
        signature = [call.name, json.dumps(call.input, sort_keys=True)]
        self.state.count = self.state.count + 1 if signature == self.state.last else 1
        self.state.last = signature
        if self.state.count < self.limit:
            return None
        return (
            f"This is the same {call.name} call with the same input {self.state.count} times in a row, so it was not "
            "run again: the result would not change. Try a different approach, or say what is blocking you."
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
    headline = {"glob": "pattern", "grep": "pattern", "web_fetch": "url", "web_search": "query"}.get(call.name)
    if headline is not None:
        return f"{call.name}: {_first_line(str(call.input.get(headline, '')))}"
    if "path" not in call.input:
        return f"{call.name}: {_first_line(json.dumps(call.input, sort_keys=True))}"
    return f"{call.name}: {_first_line(str(call.input.get('path', '')))}"


def _why_lost(cause: str | None) -> str:
    """The cause of a lost sandbox in the model's words: what the sandbox worker said, unless it only
    said the container is gone (or nothing answered on its host's queue)."""
    if cause is None or "is gone" in cause or "timeout" in cause:
        return "its container or host went away"
    return cause.rstrip(".")


def sandbox_reset_message(
    replacement: SandboxHandle | None,
    snapshot: SnapshotRef | None,
    provision_error: str | None = None,
    cause: str | None = None,
) -> str:
    """What the model is told when its sandbox was lost in the middle of a call (and why, where the
    sandbox worker said: e.g. the command exhausted the process limit and could not be stopped)."""
    lost = f"The sandbox was lost ({_why_lost(cause)}) while running this call, so the call did not complete."
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
