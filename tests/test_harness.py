"""Unit tests of the pure harness logic: tools, context and digests, the model-call cache,
error classification, agent files. No Temporal, no Docker, no network."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import httpx2
import pytest

from durable_agents.activities.model import ContextCache, _CachedContext, classify_model_error
from durable_agents.agent_files import AgentFileError, agent_version, load_agent
from durable_agents.contracts import (
    ExecuteResult,
    Limits,
    LoopState,
    ModelRequest,
    ModelSpec,
    SandboxHandle,
    SessionCarry,
    ToolCall,
    ToolResult,
    ToolResultEvent,
    chain_digest,
    context_root,
)
from durable_agents.sandboxes.activities import tool_script
from durable_agents.workflows.context import (
    SUMMARY_HEADER,
    TRUNCATION_HEADER,
    ContextBuilder,
    compaction_cut,
    compaction_method,
    retry_summary_at,
    summary_blocks,
    truncation_blocks,
)
from durable_agents.workflows.harness import (
    check_tool_call,
    parse_tool_uses,
    session_summary,
    text_of,
    tool_calls_of,
    tool_definitions,
    tool_summary,
    tool_timeout,
)

ROOT = Path(__file__).resolve().parent.parent
ALL = ["bash", "read_file", "write_file", "edit_file"]


def test_tool_definitions_are_anthropic_shaped_and_stable() -> None:
    defs = tool_definitions(ALL)
    assert [d["name"] for d in defs] == ALL
    bash = defs[0]
    assert bash["input_schema"]["required"] == ["command"]
    assert "title" not in bash["input_schema"]
    assert tool_definitions(ALL) == defs  # same bytes every time: the prompt prefix stays cacheable


def test_unknown_tool_and_bad_input_become_messages_for_the_model() -> None:
    assert check_tool_call(ToolCall(id="1", name="bash", input={"command": "ls"}), ALL) is None
    unknown = check_tool_call(ToolCall(id="1", name="rm_rf", input={}), ALL)
    assert unknown is not None and "Unknown tool 'rm_rf'" in unknown and "bash" in unknown
    missing = check_tool_call(ToolCall(id="1", name="write_file", input={"path": "a"}), ALL)
    assert missing is not None and "content" in missing and "Field required" in missing
    extra = check_tool_call(ToolCall(id="1", name="bash", input={"command": "ls", "sudo": True}), ALL)
    assert extra is not None and "sudo" in extra
    not_allowed = check_tool_call(ToolCall(id="1", name="bash", input={"command": "ls"}), ["read_file"])
    assert not_allowed is not None and "Unknown tool 'bash'" in not_allowed


def test_tool_timeout_is_capped_by_the_agent() -> None:
    assert tool_timeout(ToolCall(id="1", name="bash", input={"command": "x", "timeout_s": 5}), 60) == 5
    assert tool_timeout(ToolCall(id="1", name="bash", input={"command": "x", "timeout_s": 600}), 60) == 60
    assert tool_timeout(ToolCall(id="1", name="read_file", input={"path": "x"}), 60) == 60


def test_summaries_for_the_temporal_ui() -> None:
    assert tool_summary(ToolCall(id="1", name="bash", input={"command": "ls -la\nrm x"})) == "bash: ls -la"
    assert tool_summary(ToolCall(id="1", name="read_file", input={"path": "/w/a.py"})) == "read_file: /w/a.py"
    assert session_summary("coder", "Fix the bug\nin detail") == "coder: Fix the bug"
    assert len(tool_summary(ToolCall(id="1", name="bash", input={"command": "x" * 500}))) < 100


def test_content_helpers() -> None:
    content = [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}},
    ]
    assert text_of(content) == "hi"
    assert tool_calls_of(content) == [ToolCall(id="t1", name="bash", input={"command": "ls"})]


def test_malformed_tool_uses_are_repaired_for_the_context_and_reported() -> None:
    good = [{"type": "text", "text": "x"}, {"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}]
    calls, content, problems = parse_tool_uses(good, "7")
    assert content == good and problems == {} and calls[0].id == "t1"
    bad = [
        {"type": "tool_use", "id": "t1", "name": "bash", "input": "ls"},
        {"type": "tool_use", "id": "t1", "name": "bash", "input": {}},  # the same id again
        {"type": "tool_use", "id": "has space", "input": {}},  # a bad id, no name
        {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},  # not ours: kept as is
    ]
    calls, content, problems = parse_tool_uses(bad, "7")
    assert [c.id for c in calls] == ["t1", "toolu_da_7_1", "toolu_da_7_2"]
    assert content[0] == {"type": "tool_use", "id": "t1", "name": "bash", "input": {}} and content[3] == bad[3]
    assert "input was a string" in problems["t1"] and "repeated" in problems["toolu_da_7_1"]
    assert (
        "'has space' is not a valid tool-use id" in problems["toolu_da_7_2"]
        and "named no tool" in problems["toolu_da_7_2"]
    )


def test_context_requests_carry_only_what_is_new() -> None:
    ctx = ContextBuilder("system", tool_definitions(["bash"]))
    model = ModelSpec(name="m")
    ctx.add_user_text("task")
    first = ctx.request("s", model)
    assert first.prefix_count == 0 and first.system == "system" and first.tools
    assert len(first.new_messages) == 1
    ctx.model_answered([{"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}])
    ctx.add_tool_results([ToolResult(call_id="t1", name="bash", output="a b c")])
    second = ctx.request("s", model)
    assert second.prefix_count == 2 and second.system is None and second.tools is None
    assert [m["role"] for m in second.new_messages] == ["user"]
    assert second.prefix_digest == ctx.digests[2] and second.digest == ctx.digests[3]


def test_digest_chain_is_what_the_activity_computes() -> None:
    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("a")
    ctx.model_answered([{"type": "text", "text": "b"}])
    digest = context_root("sys", [])
    for message in ctx.messages:
        digest = chain_digest(digest, message)
    assert digest == ctx.digests[-1]


def test_two_user_messages_in_a_row_merge_and_resync() -> None:
    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("one")
    ctx.model_answered([{"type": "text", "text": "ok"}])
    ctx.add_user_text("two")
    ctx.state.synced = 3  # as if a request with "two" had been sent and then failed
    ctx.add_user_text("three")
    assert [m["role"] for m in ctx.messages] == ["user", "assistant", "user"]
    assert [b["text"] for b in ctx.messages[2]["content"]] == ["two", "three"]
    request = ctx.request("s", ModelSpec(name="m"))
    assert request.prefix_count == 2 and len(request.new_messages) == 1


def test_context_cache_hits_misses_and_resyncs() -> None:
    ctx = ContextBuilder("sys", [])
    model = ModelSpec(name="m")
    cache = ContextCache()
    ctx.add_user_text("a")
    assert cache.lookup(ctx.request("s", model)) is not None  # first request creates the entry
    ctx.model_answered([{"type": "text", "text": "b"}])
    ctx.add_user_text("c")
    request = ctx.request("s", model)
    assert cache.lookup(request) is None  # the cache never saw the assistant message: a miss
    entry = cache._entries["s"]
    entry.extend([{"role": "assistant", "content": [{"type": "text", "text": "b"}]}])
    hit = cache.lookup(request)
    assert hit is not None and hit.messages == ctx.messages
    tampered = request.model_copy(update={"prefix_digest": "0" * 64})
    assert cache.lookup(tampered) is None
    # The prefix matches but the new messages do not make the digest asked for: the entry, now
    # neither, goes (the next call reads the context from the workflow), and its bytes with it.
    assert cache.bytes > 0
    wrong = request.model_copy(update={"new_messages": [{"role": "user", "content": "other"}]})
    assert cache.lookup(wrong) is None and "s" not in cache._entries and cache.bytes == 0


def test_context_cache_is_bounded() -> None:
    cache = ContextCache(max_sessions=2)
    for sid in ("a", "b", "c"):
        cache.store(sid, _CachedContext.new("s", []))
    assert list(cache._entries) == ["b", "c"]


def test_a_tool_output_is_held_once_by_its_result_its_event_and_the_context() -> None:
    """A session holds a tool's output once: the tool result made from the activity's result, the
    event that records it and the model's context share the one string (pydantic copies none)."""
    output = "".join(str(i % 10) for i in range(5000))
    result = ToolResult(call_id="t1", name="bash", output=output)
    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("go")
    ctx.model_answered([{"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}])
    ctx.add_tool_results([result])
    event = ToolResultEvent(offset=3, at=datetime.now(UTC), tool_result=result)
    assert result.output is output and event.tool_result is result
    assert ctx.messages[-1]["content"][0]["content"] is output


def test_a_long_tool_output_is_one_object_in_the_workflow_and_in_the_model_calls_cache() -> None:
    """Decoded apart (the sandbox's result in the workflow, the model call's request in the
    activity), the same output is held once; a short one is left as it is."""
    long, short = "".join(f"line {i}\n" for i in range(400)), "ok\n"
    for output, one in ((long, True), (short, False)):
        # What the workflow holds: the result as its activity returned it, in its context.
        def decoded(request: ModelRequest) -> ModelRequest:  # as the model call's activity gets it
            return ModelRequest.model_validate_json(request.model_dump_json())

        cache, ctx = ContextCache(), ContextBuilder("sys", [])
        ctx.add_user_text("go")
        first = cache.lookup(decoded(ctx.request("s", ModelSpec(name="m"))))
        assert first is not None
        answer = [{"type": "tool_use", "id": "t1", "name": "bash", "input": {"command": "ls"}}]
        first.extend([{"role": "assistant", "content": answer}])  # as call_model does
        ctx.model_answered(answer)
        result = ExecuteResult.model_validate_json(ExecuteResult(output=output).model_dump_json())
        ctx.add_tool_results([ToolResult(call_id="t1", name="bash", output=result.output)])
        held = ctx.messages[-1]["content"][0]["content"]
        entry = cache.lookup(decoded(ctx.request("s", ModelSpec(name="m"))))
        assert entry is not None and entry.messages == ctx.messages
        cached = entry.messages[-1]["content"][0]["content"]
        assert cached == held == output and (cached is held) is one


def test_context_cache_is_bounded_in_bytes_and_keeps_the_entry_in_use() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "x" * 1000}]}
    cache = ContextCache(max_bytes=2500)
    for sid in ("a", "b", "c"):
        entry = _CachedContext.new("s", [])
        entry.extend([message])
        cache.store(sid, entry)
    assert list(cache._entries) == ["b", "c"] and 2000 <= cache.bytes <= 2500
    big = _CachedContext.new("s", [])
    big.extend([message] * 5)
    cache.store("big", big)
    assert list(cache._entries) == ["big"]  # alone over the budget, but the one in use
    big.truncate(1)
    assert big.bytes == entry.bytes and len(big.sizes) == 1


def test_context_cache_keeps_its_byte_count_as_entries_grow_shrink_and_go() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "x" * 1000}]}
    cache = ContextCache(max_bytes=10_000)
    a = _CachedContext.new("s", [])
    a.extend([message])
    cache.store("a", a)
    a.extend([message, message])  # the same session's next turn, stored again
    cache.store("a", a)
    b = _CachedContext.new("s", [])
    b.extend([message])
    cache.store("b", b)
    assert cache.bytes == a.bytes + b.bytes
    a.truncate(1)  # a compaction's shorter prefix
    cache.store("a", a)
    assert cache.bytes == a.bytes + b.bytes
    cache.drop("b")
    cache.drop("b")  # gone already: nothing more to take off
    assert cache.bytes == a.bytes and list(cache._entries) == ["a"]
    for i in range(12):  # past the budget: the oldest go, and their bytes with them
        c = _CachedContext.new("s", [])
        c.extend([message])
        cache.store(f"c{i}", c)
    assert cache.bytes == sum(e.bytes for e in cache._entries.values()) <= 10_000


def _status_error(status: int, headers: dict[str, str] | None = None, kind: str = "x") -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://model/v1/messages")
    response = httpx2.Response(status, headers=headers or {}, request=request)
    body = {"type": "error", "error": {"type": kind, "message": f"status {status}"}}
    client = anthropic.Anthropic(api_key="k", base_url="http://model")
    return client._make_status_error(f"status {status}", body=body, response=response)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 529, 503])
def test_transient_model_errors_are_retryable(status: int) -> None:
    error = classify_model_error(_status_error(status, {"retry-after": "7"}))
    assert not error.non_retryable and error.type == "ModelUnavailable"
    assert error.next_retry_delay == timedelta(seconds=7)


def test_retry_after_ms_wins() -> None:
    error = classify_model_error(_status_error(429, {"retry-after-ms": "1500", "retry-after": "9"}))
    assert error.next_retry_delay == timedelta(milliseconds=1500)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_request_errors_are_not_retried_and_say_why(status: int) -> None:
    error = classify_model_error(_status_error(status, kind="authentication_error"))
    assert error.non_retryable and error.type == "ModelRequestRejected"
    assert str(status) in error.message and "authentication_error" in error.message


def test_connection_errors_are_retryable() -> None:
    error = classify_model_error(anthropic.APIConnectionError(request=httpx2.Request("POST", "http://model")))
    assert not error.non_retryable


def _agent(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_the_shipped_agent_files_are_valid() -> None:
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    assert agent.name == "coder" and agent.tools == ALL and not agent.sandbox.network
    researcher = load_agent(ROOT / "agents" / "researcher.yaml")
    assert researcher.subagents[0].spec == agent
    shipped = {p.stem for p in (ROOT / "agents").glob("*.yaml")}
    assert shipped == {"coder", "researcher", "reviewer", "daily-report", "librarian"}
    librarian = load_agent(ROOT / "agents" / "librarian.yaml")
    assert librarian.policy("memory__read_graph") == "always_allow"
    assert librarian.policy("memory__create_entities") == "always_ask"
    assert (ROOT / str(librarian.mcp_servers[0].command)).exists(), "make setup installs the MCP servers"
    reviewer = load_agent(ROOT / "agents" / "reviewer.yaml")
    assert reviewer.system.startswith("You review code.") and reviewer.system_file is None
    assert load_agent(ROOT / "agents" / "daily-report.yaml").name == "daily-report"


def test_system_prompt_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nmodel: {name: m}\nsystem_file: missing.md\n")
    with pytest.raises(AgentFileError, match="a.yaml: system_file: missing.md: No such file"):
        load_agent(tmp_path / "a.yaml")
    (tmp_path / "p.md").write_text("be brief")
    (tmp_path / "b.yaml").write_text("name: b\nmodel: {name: m}\nsystem: x\nsystem_file: p.md\n")
    with pytest.raises(AgentFileError, match="not both"):
        load_agent(tmp_path / "b.yaml")


def test_an_agent_files_outcome_reads_its_rubric_file(tmp_path: Path) -> None:
    (tmp_path / "RUBRIC.md").write_text("- has tests\n")
    (tmp_path / "a.yaml").write_text(
        "name: a\nmodel: {name: m}\noutcome: {rubric_file: RUBRIC.md, max_iterations: 5}\n"
    )
    agent = load_agent(tmp_path / "a.yaml")
    assert agent.outcome is not None and agent.outcome.rubric == "- has tests\n" and agent.outcome.max_iterations == 5
    (tmp_path / "b.yaml").write_text("name: b\nmodel: {name: m}\noutcome: {rubric_file: nope.md}\n")
    with pytest.raises(AgentFileError, match="b.yaml: outcome.rubric_file: nope.md: No such file"):
        load_agent(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("name: c\nmodel: {name: m}\noutcome: {rubric: x, max_iterations: 21}\n")
    with pytest.raises(AgentFileError, match="outcome.max_iterations"):
        load_agent(tmp_path / "c.yaml")
    assert agent_version(agent) != agent_version(agent.model_copy(update={"outcome": None}))


def test_spawn_agent_is_offered_only_with_subagents() -> None:
    from durable_agents.contracts import Subagent
    from durable_agents.workflows.harness import available_tools, spawn_refusal

    coder = load_agent(ROOT / "agents" / "coder.yaml")
    assert "spawn_agent" not in available_tools(coder)
    lead = coder.model_copy(update={"subagents": [Subagent(name="helper", description="helps", spec=coder)]})
    tools = available_tools(lead)
    spawn = next(d for d in tool_definitions(tools, lead.subagents, lead.skills) if d["name"] == "spawn_agent")
    assert spawn["name"] == "spawn_agent" and spawn["input_schema"]["properties"]["agent"]["enum"] == ["helper"]
    assert "- helper: helps" in spawn["description"]
    sub, limits = lead.subagents[0], lead.limits
    assert spawn_refusal(sub, "helper", 0, limits, 0, 0) is None
    assert "nest 2 deep" in (spawn_refusal(sub, "helper", 2, limits, 0, 0) or "")
    assert "limit of 50" in (spawn_refusal(sub, "helper", 0, limits, 50, 0) or "")
    assert "most at once (8)" in (spawn_refusal(sub, "helper", 0, limits, 3, 8) or "")
    assert spawn_refusal(None, "ghost", 0, limits, 0, 0) == "Unknown subagent 'ghost'."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\nmodel: {name: m}\ntools: [bash, teleport]\n", "tools: Value error, unknown tool 'teleport'"),
        ("name: a\nmodel: {name: 7}\n", "model.name: Input should be a valid string"),
        ("name: a\n", "model: Field required"),
        ("model: {name: m}\n", "name: Field required"),
        ("name: a\nmodel: {name: m}\ncolour: blue\n", "colour: unknown field"),
        ("name: a\nmodel: {name: m}\nsandbox: {memory_mb: 1}\n", "sandbox.memory_mb: Input should be greater"),
        ("name: a\nmodel: {name: m}\nsandbox: {memory_mb: 512, disk_mb: 512}\n", "must fit in memory_mb (512)"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_agent_files_name_the_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _agent(tmp_path, text)
    with pytest.raises(AgentFileError) as raised:
        load_agent(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_missing_agent_file(tmp_path: Path) -> None:
    with pytest.raises(AgentFileError, match="no such agent file"):
        load_agent(tmp_path / "nope.yaml")


def test_tool_scripts_quote_paths_and_resolve_them_in_the_workspace() -> None:
    assert "/workspace/a b.txt" in tool_script("read_file", {"path": "a b.txt"})
    assert "'/workspace/a b.txt'" in tool_script("read_file", {"path": "a b.txt"})
    assert "/etc/passwd" in tool_script("read_file", {"path": "../etc/passwd"})  # normalised, not hidden
    assert tool_script("bash", {"command": "ls"}) == "ls"
    with pytest.raises(ValueError, match="not a sandbox tool"):
        tool_script("spawn_agent", {})


def test_skill_folders_are_read_at_load(tmp_path: Path) -> None:
    skill = tmp_path / "skills" / "greet"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: greet\ndescription: say hello well\n---\nSay hello.\n")
    (skill / "lib").mkdir()
    (skill / "lib" / "words.txt").write_text("hello\n")
    (tmp_path / "a.yaml").write_text("name: a\nmodel: {name: m}\nskills: [skills/greet]\n")
    agent = load_agent(tmp_path / "a.yaml")
    (loaded,) = agent.skills
    assert (loaded.name, loaded.description, loaded.body, loaded.files) == (
        "greet",
        "say hello well",
        "Say hello.\n",
        {"lib/words.txt": "hello\n"},
    )
    from durable_agents.workflows.harness import available_tools, system_prompt

    assert available_tools(agent)[-1] == "load_skill" and "- greet: say hello well" in system_prompt(agent)
    (skill / "SKILL.md").write_text("no front matter")
    with pytest.raises(AgentFileError, match="SKILL.md: expected front-matter"):
        load_agent(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("name: b\nmodel: {name: m}\nskills: nowhere\n")
    with pytest.raises(AgentFileError, match="b.yaml: skills.0: nowhere: no such folder"):
        load_agent(tmp_path / "b.yaml")


def test_loop_guard_and_budgets_and_prices() -> None:
    from durable_agents.contracts import Limits, ModelSpec, Price, Usage
    from durable_agents.workflows.harness import LoopGuard, budget_exhausted

    guard = LoopGuard(3)
    a = ToolCall(id="1", name="bash", input={"command": "ls", "timeout_s": 5})
    a_reordered = ToolCall(id="2", name="bash", input={"timeout_s": 5, "command": "ls"})
    b = ToolCall(id="3", name="bash", input={"command": "pwd"})
    assert guard.check(a) is None and guard.check(a_reordered) is None
    assert "3 times in a row" in (guard.check(a) or "")
    assert guard.check(b) is None and guard.check(a) is None  # a different call resets the count
    usage = Usage(input_tokens=900, output_tokens=100)
    assert budget_exhausted(Limits(max_tokens_total=1001), usage, None) is None
    assert "1000 of 1000 tokens" in (budget_exhausted(Limits(max_tokens_total=1000), usage, None) or "")
    assert budget_exhausted(Limits(max_cost_usd=1.0), usage, None) is None  # unknown price: no cost budget
    assert "cost budget exhausted" in (budget_exhausted(Limits(max_cost_usd=0.001), usage, 0.002) or "")
    assert ModelSpec(name="claude-haiku-5-5").cost(Usage(input_tokens=10**6)) == 1.0
    assert ModelSpec(name="mystery-model").cost(usage) is None
    custom = ModelSpec(name="x", price=Price(input=2, output=10, cache_read=0.5))
    assert custom.cost(Usage(output_tokens=10**6, cache_read_input_tokens=10**6)) == 10.5


# --- compaction, custom tools, continue-as-new state ----------------------------------------------


def _tool_turns(ctx: ContextBuilder, n: int, output: str = "x" * 400) -> None:
    for i in range(n):
        ctx.model_answered([{"type": "tool_use", "id": f"t{i}", "name": "bash", "input": {"command": str(i)}}])
        ctx.add_tool_results([ToolResult(call_id=f"t{i}", name="bash", output=output)])


def test_compaction_cuts_where_no_tool_result_loses_its_call() -> None:
    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("task")
    _tool_turns(ctx, 6)
    cut = compaction_cut(ctx.messages, keep_tokens=400)  # an exchange is ~151 tokens
    assert cut is not None and ctx.messages[cut]["role"] == "assistant"
    assert len(ctx.messages) - cut == 4  # two whole exchanges fit in 400, three do not
    assert compaction_cut(ctx.messages, keep_tokens=0) == len(ctx.messages) - 2  # at least the newest exchange
    assert compaction_cut(ctx.messages[:1], keep_tokens=0) is None  # nothing older to summarise
    # A plain user message may start the kept part; a tool-result message may not.
    ctx2 = ContextBuilder("sys", [])
    ctx2.add_user_text("one")
    ctx2.model_answered([{"type": "text", "text": "ok"}])
    ctx2.add_user_text("two")
    assert compaction_cut(ctx2.messages, keep_tokens=5) == 2


def test_compaction_request_shares_the_prefix_and_compact_keeps_the_newest_turns() -> None:
    from durable_agents.contracts import COMPACTION_INSTRUCTION

    model = ModelSpec(name="m")
    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("task")
    _tool_turns(ctx, 6)
    ctx.state.synced = len(ctx.messages) - 1
    cut = compaction_cut(ctx.messages, keep_tokens=400)
    assert cut is not None
    ask = ctx.compaction_request(cut, "s", model)
    assert ask.prefix_count == cut - 1 and ask.prefix_digest == ctx.digests[cut - 1]
    assert ask.new_messages[-1]["role"] == "user"
    assert ask.new_messages[-1]["content"][-1]["text"] == COMPACTION_INSTRUCTION
    assert ask.new_messages[-1]["content"][0]["type"] == "tool_result"  # joined, roles still alternate
    cache = ContextCache()
    entry = _CachedContext.new("sys", [])
    entry.extend(ctx.messages[: ctx.synced])
    cache.store("s", entry)
    assert cache.lookup(ask) is not None  # the activity's cached prefix serves the compaction too

    kept = ctx.messages[cut:]
    before = ctx.estimated_tokens()
    ctx.compact(cut, summary_blocks("the summary"))
    assert ctx.messages[0] == {"role": "user", "content": [{"type": "text", "text": f"{SUMMARY_HEADER}\nthe summary"}]}
    assert ctx.messages[1:] == kept and ctx.synced == 0
    assert ctx.estimated_tokens() < before
    request = ctx.request("s", model)
    assert request.system == "sys" and request.prefix_count == 0 and len(request.new_messages) == len(ctx.messages)


def test_the_api_s_token_count_replaces_the_estimate() -> None:
    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("task")
    ctx.model_answered([{"type": "text", "text": "ok"}], input_tokens=5000)
    ctx.add_user_text("more")
    assert 5000 < ctx.estimated_tokens() < 5100


def test_a_carried_context_resumes_with_the_same_digests() -> None:
    from durable_agents.workflows.harness import LoopGuard

    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("task")
    _tool_turns(ctx, 3)
    carried = SessionCarry.model_validate_json(SessionCarry(context=ctx.state).model_dump_json())
    restored = ContextBuilder("sys", [], carried.context)
    assert restored.digests == ctx.digests and restored.synced == ctx.synced
    guard = LoopGuard(3)
    call = ToolCall(id="a", name="bash", input={"command": "ls"})
    assert guard.check(call) is None and guard.check(call) is None
    loop = LoopState.model_validate_json(guard.state.model_dump_json())
    assert LoopGuard(3, loop).check(call) is not None  # the third in a row, across runs


def test_custom_tools_are_defined_checked_and_must_not_clash() -> None:
    from pydantic import ValidationError

    from durable_agents.contracts import AgentSpec, CustomTool
    from durable_agents.workflows.harness import available_tools

    tool = CustomTool(
        name="lookup",
        description="look it up",
        input_schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    )
    agent = AgentSpec(name="a", model=ModelSpec(name="m"), custom_tools=[tool], policies={"lookup": "always_ask"})
    names = available_tools(agent)
    assert names[-1] == "lookup"
    defs = tool_definitions(names, custom=agent.custom_tools)
    assert defs[-1] == {"name": "lookup", "description": "look it up", "input_schema": tool.input_schema}
    assert check_tool_call(ToolCall(id="1", name="lookup", input={"q": "x"}), names, agent.custom_tools) is None
    problem = check_tool_call(ToolCall(id="1", name="lookup", input={"q": 3}), names, agent.custom_tools)
    assert problem == "Invalid input for lookup: q: 3 is not of type 'string'."
    with pytest.raises(ValidationError, match="has the name of a built-in tool"):
        AgentSpec(name="a", model=ModelSpec(name="m"), custom_tools=[tool.model_copy(update={"name": "bash"})])
    with pytest.raises(ValidationError, match="input_schema must describe an object"):
        CustomTool(name="x", description="d", input_schema={"type": "string"})
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        CustomTool(name="x", description="d", input_schema={"type": "object", "properties": 3})


def test_an_error_event_inside_a_streamed_answer_is_judged_by_its_type() -> None:
    overloaded = classify_model_error(_status_error(200, kind="overloaded_error"))
    assert not overloaded.non_retryable and "mid-answer" in overloaded.message
    rejected = classify_model_error(_status_error(200, kind="invalid_request_error"))
    assert rejected.non_retryable and rejected.type == "ModelRequestRejected"


def test_a_failing_summariser_backs_off_then_only_leaves_turns_out() -> None:
    limits = Limits(compaction_retry_growth=0.5, compaction_max_failures=2)
    assert compaction_method(limits, 0, None, 1_000) == "summary"
    retry = retry_summary_at(limits, grown=1_000, context_tokens=4_000)  # failed on a 4,000-token context
    assert retry == 3_000
    assert compaction_method(limits, 1, retry, 2_999) == "truncation"  # not grown enough: no model call
    assert compaction_method(limits, 1, retry, 3_000) == "summary"
    assert compaction_method(limits, 2, None, 10**9) == "truncation"  # spent: never again this session


def test_leaving_turns_out_keeps_pairs_offsets_and_the_users_words() -> None:
    ctx = ContextBuilder("sys", [])
    ctx.add_user_text("the task", at=1)
    for i in range(6):
        call = {"type": "tool_use", "id": f"t{i}", "name": "bash", "input": {"command": "x" * 400}}
        ctx.model_answered([call], at=2 + 2 * i)
        ctx.add_tool_results([ToolResult(call_id=f"t{i}", name="bash", output="y" * 400)], at=3 + 2 * i)
    ctx.add_user_text("and also this")  # merged into the last tool-result message
    cut = compaction_cut(ctx.messages, keep_tokens=300)
    assert cut is not None
    assert ctx.covered_until(cut) == cut  # message i holds events up to offset i here
    grown = ctx.grown
    ctx.compact(cut, truncation_blocks(ctx.messages[:cut], "Your N earlier turns ..."))
    assert ctx.grown == grown, "leaving turns out is not growth"
    lead = ctx.messages[0]["content"]
    assert lead[0]["text"].startswith(TRUNCATION_HEADER) and lead[1]["text"] == "the task"
    # Every tool_result that stayed still has its tool_use.
    uses = {b["id"] for m in ctx.messages if m["role"] == "assistant" for b in m["content"]}
    results = {b["tool_use_id"] for m in ctx.messages for b in m["content"] if b.get("type") == "tool_result"}
    assert results <= uses
    # A second truncation replaces the first note and keeps the task.
    cut = compaction_cut(ctx.messages, keep_tokens=100)
    assert cut is not None
    ctx.compact(cut, truncation_blocks(ctx.messages[:cut], "second"))
    texts = [b["text"] for b in ctx.messages[0]["content"] if b.get("type") == "text"]
    assert sum(t.startswith(TRUNCATION_HEADER) for t in texts) == 1 and "the task" in texts


# --- agent files that are not sane YAML mappings -------------------------------------------------


def alias_bomb(levels: int = 9, indent: str = "") -> str:
    """'Billion laughs': each level lists the one before nine times, so a few hundred bytes expand
    to 9**levels strings."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_binary_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    binary = bytes(range(256)) * 4
    (tmp_path / "a.yaml").write_bytes(binary)
    with pytest.raises(AgentFileError, match=r"a.yaml: not a text file \(UTF-8\)"):
        load_agent(tmp_path / "a.yaml")
    (tmp_path / "prompt.bin").write_bytes(binary)
    (tmp_path / "b.yaml").write_text("name: b\nmodel: {name: m}\nsystem_file: prompt.bin\n")
    with pytest.raises(AgentFileError, match=r"b.yaml: system_file: .*prompt.bin: not a text file \(UTF-8\)"):
        load_agent(tmp_path / "b.yaml")
    skill = tmp_path / "skills" / "s"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_bytes(b"---\nname: s\ndescription: d\n---\n" + binary)
    (tmp_path / "c.yaml").write_text("name: c\nmodel: {name: m}\nskills: [skills/s]\n")
    with pytest.raises(AgentFileError, match=r"SKILL.md: not a text file \(UTF-8\)"):
        load_agent(tmp_path / "c.yaml")


def test_oversized_agent_files_are_refused_before_they_are_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nmodel: {name: m}\n" + "# padding\n" * 300_000)  # 3 MB of comments
    with pytest.raises(AgentFileError, match=r"big.yaml: .*bytes, over the limit of"):
        load_agent(big)


def test_yaml_aliases_may_not_expand_beyond_a_bound(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: bomb\nmodel: {name: m}\n" + alias_bomb())
    with pytest.raises(AgentFileError, match="bomb.yaml: .*aliases expand to more than"):
        load_agent(bomb)
    loop = tmp_path / "loop.yaml"
    loop.write_text("name: loop\nmodel: {name: m}\ntools: &t [bash, *t]\n")
    with pytest.raises(AgentFileError, match="loop.yaml: .*an alias refers to itself"):
        load_agent(loop)
    skill = tmp_path / "skills" / "s"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: s\ndescription: d\n" + alias_bomb() + "---\nbody\n")
    (tmp_path / "a.yaml").write_text("name: a\nmodel: {name: m}\nskills: [skills/s]\n")
    with pytest.raises(AgentFileError, match="SKILL.md: .*aliases expand to more than"):
        load_agent(tmp_path / "a.yaml")
    # A few anchors and aliases, as people use them, still load.
    fine = tmp_path / "fine.yaml"
    fine.write_text(
        "name: fine\nmodel: &m {name: claude-sonnet-5-5, max_tokens: 1024}\n"
        "sandbox: &box {memory_mb: 1024, disk_mb: 256}\n"
        "subagents:\n  - name: helper\n    spec: {name: helper, model: *m, sandbox: *box, tools: &tools [bash]}\n"
        "tools: *tools\n"
    )
    agent = load_agent(fine)
    assert agent.subagents[0].spec and agent.subagents[0].spec.sandbox == agent.sandbox and agent.tools == ["bash"]


def test_an_alias_bomb_fails_fast_and_in_little_memory(tmp_path: Path) -> None:
    """`agent validate` on a 600-byte bomb, in a process that may use 300 MB of address space: unbounded
    expansion needs gigabytes (it fails with MemoryError, or takes minutes)."""
    import resource
    import subprocess
    import sys

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "name: bomb\nmodel: {name: m}\ncustom_tools:\n  - name: t\n    description: d\n    input_schema:\n"
        "      type: object\n" + alias_bomb(indent="      ")
    )
    assert bomb.stat().st_size < 700

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (300 * 2**20, 300 * 2**20))

    try:
        run = subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), "agent", "validate", str(bomb)],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("agent validate on an alias bomb did not finish within 60 s")
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.startswith(f"error: {bomb}: ") and "aliases expand to more than" in run.stderr


def test_definitions_over_their_context_budget_are_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from durable_agents.contracts import AgentSpec

    (tmp_path / "prompt.md").write_text("x" * 5_000_000)
    (tmp_path / "a.yaml").write_text("name: a\nmodel: {name: m}\nsystem_file: prompt.md\n")
    with pytest.raises(AgentFileError) as raised:
        load_agent(tmp_path / "a.yaml")
    assert str(tmp_path / "a.yaml") in str(raised.value)
    assert re.search(
        r"a.yaml: .*system prompt and tool definitions are ~1,250,0\d\d tokens, over the context budget of 150,000 "
        r"\(limits.context_tokens\) by 1,100,0\d\d",
        str(raised.value),
    )
    # Inline definitions (the Python API, or JSON from any Temporal client) are checked alike.
    with pytest.raises(ValidationError, match=r"over the context budget of 2,000 \(limits.context_tokens\)"):
        AgentSpec.model_validate(
            {
                "name": "a",
                "model": {"name": "m"},
                "limits": {"context_tokens": 2000},
                "custom_tools": [{"name": "t", "description": "d" * 10_000}],
            }
        )
    # No budget, no check.
    (tmp_path / "b.yaml").write_text(
        "name: b\nmodel: {name: m}\nsystem_file: prompt.md\nlimits: {context_tokens: null}\n"
    )
    assert len(load_agent(tmp_path / "b.yaml").system) == 5_000_000


def test_the_budget_check_counts_what_the_definition_adds_to_every_request() -> None:
    """contracts' estimate (no harness there) is the harness's figure less its built-in tool definitions
    (and a few bytes of JSON)."""
    from durable_agents.contracts import estimate_tokens
    from durable_agents.workflows.harness import available_tools, system_prompt

    for path in sorted((ROOT / "agents").glob("*.yaml")):
        agent = load_agent(path)
        exact = estimate_tokens(system_prompt(agent)) + estimate_tokens(
            tool_definitions(available_tools(agent), agent.subagents, agent.skills, agent.custom_tools)
        )
        builtin = estimate_tokens(tool_definitions([*agent.tools]))
        assert agent.prompt_tokens() - 5 <= exact <= agent.prompt_tokens() + builtin + 300, path


def test_a_lost_sandbox_is_explained_with_the_cause_the_worker_gave() -> None:
    from durable_agents.workflows.harness import sandbox_reset_message

    new = SandboxHandle(sandbox_id="c2", host_queue="q", image="i", runtime="runc")
    assert "(its container or host went away)" in sandbox_reset_message(new, None, cause="sandbox c1 is gone")
    assert "(its container or host went away)" in sandbox_reset_message(new, None, cause="schedule-to-start timeout")
    cause = "c1: the command exhausted the process limit (256) and could not be stopped; sandbox destroyed"
    told = sandbox_reset_message(new, None, cause=cause)
    assert f"The sandbox was lost ({cause})" in told and "a new, empty sandbox" in told
