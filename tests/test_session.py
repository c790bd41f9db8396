"""SessionWorkflow on a real dev server, real Docker sandboxes and the scripted model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from durable_agents.client import (
    send_message,
    session_events,
    start_agent_session,
    wait_until_settled,
)
from durable_agents.contracts import AgentSpec, SessionEvent, SessionResult
from durable_agents.testing.scripted_model import ScriptedError, ScriptedModelServer, Step, ToolUse
from durable_agents.workflows import versions
from tests.helpers import Workers, add_scenario, coder, released

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("workers")


async def run_one_shot(
    client: Client, task: str, agent: AgentSpec | None = None
) -> tuple[SessionResult, list[SessionEvent], WorkflowHandle[Any, SessionResult]]:
    handle = await start_agent_session(client, agent or coder(), task, one_shot=True)
    result = await handle.result()
    return result, await session_events(client, handle.id), handle


def kinds(events: list[SessionEvent]) -> list[str]:
    return [e.kind for e in events]


async def activity_summaries(handle: WorkflowHandle[Any, Any]) -> list[str]:
    history = await handle.fetch_history()
    summaries = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            summaries.append(json.loads(event.user_metadata.summary.data))
    return summaries


async def test_demo_scenario_writes_runs_fixes_and_answers(client: Client, workers: Workers) -> None:
    result, events, handle = await run_one_shot(client, "Write fib.py, run it, fix it, tell me the output.")
    assert result.status == "done" and result.turns == 5
    assert "First 10 Fibonacci numbers: 0 1 1 2 3 5 8 13 21 34" in (result.answer or "")
    assert kinds(events) == [
        "session_started",
        "user_message",
        "model_turn",
        "sandbox_provisioned",
        "tool_result",  # write_file (first tool call provisions)
        "model_turn",
        "tool_result",  # bash: NameError
        "model_turn",
        "tool_result",  # edit_file
        "model_turn",
        "tool_result",  # bash: works
        "model_turn",
        "sandbox_released",  # the answer first; then its host keeps /workspace and removes the container
        "status",
    ]
    assert [e.offset for e in events] == list(range(len(events)))
    assert events[-2].kind == "sandbox_released" and events[-2].snapshot  # fib.py is unsaved
    (release,) = (await released(events, handle.id)).values()
    assert release is not None and release.destroyed and release.snapshot is not None and not release.error
    assert workers.sandboxes.blobs.read(release.snapshot.key)  # a gzipped tar of /workspace
    assert events[6].tool_result and events[6].tool_result.is_error and "NameError" in events[6].tool_result.output
    # Readable in the Temporal UI: a workflow summary and a summary on every activity.
    description = await handle.describe()
    assert await description.static_summary() == "coder: Write fib.py, run it, fix it, tell me the output."
    summaries = await activity_summaries(handle)
    assert summaries[:2] == [
        "model: claude-sonnet-5-5",
        "provision + write_file: fib.py",  # the first call, with its sandbox's provisioning
    ]
    assert "bash: cd /workspace && python3 fib.py" in summaries and summaries[-1] == "model: claude-sonnet-5-5"
    # Every workflow version it met (first call, snapshots, release) in one marker and one upsert.
    history = await handle.fetch_history()
    markers = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert markers == [versions.BASELINE]
    upserts = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    assert [
        "TemporalChangeVersion" in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in upserts
    ].count(True) == 1
    # The container is gone with its release.
    sandbox = events[3].sandbox
    assert sandbox is not None
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(sandbox.sandbox_id)


async def test_the_first_model_call_never_waits_for_a_sandbox(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(scripted, [Step(text="No tools needed: 4.")])
    result, events, handle = await run_one_shot(client, f"What is 2+2? {marker}")
    assert result.answer == "No tools needed: 4."
    assert "sandbox_provisioned" not in kinds(events)
    assert not any(s.startswith("provision") for s in await activity_summaries(handle))


async def test_unknown_tool_and_bad_input_are_told_to_the_model(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="teleport", input={"to": "mars"})),
            Step(tool_use=ToolUse(name="bash", input={"cmd": "ls"})),
            Step(text="Understood: {last_tool_result}"),
        ],
    )
    result, events, _ = await run_one_shot(client, f"Misbehave. {marker}")
    results = [e.tool_result for e in events if e.kind == "tool_result"]
    assert [r.is_error for r in results] == [True, True]
    assert "Unknown tool 'teleport'" in results[0].output
    assert "Invalid input for bash" in results[1].output and "command: Field required" in results[1].output
    assert result.status == "done" and (result.answer or "").startswith("Understood: Invalid input for bash")
    # The model saw the errors as tool results with is_error set.
    last = [r for r in scripted.requests if marker in json.dumps(r.body)][-1].body["messages"][-1]["content"][0]
    assert last["type"] == "tool_result" and last["is_error"] is True


async def test_malformed_tool_uses_get_error_results_and_the_session_goes_on(
    client: Client, scripted: ScriptedModelServer
) -> None:
    """Each shape a model's tool_use may arrive in: the session never fails a workflow task for it."""
    bad_blocks: list[dict[str, Any]] = [
        {"type": "tool_use", "id": "toolu_string_input", "name": "bash", "input": "ls -la"},
        {"type": "tool_use", "id": "toolu_list_input", "name": "bash", "input": ["ls"]},
        {"type": "tool_use", "id": "toolu_null_input", "name": "bash", "input": None},
        {"type": "tool_use", "name": "bash", "input": {"command": "echo no id"}},
        {"type": "tool_use", "id": "toolu_string_input", "name": "bash", "input": {"command": "echo twice"}},
        {"type": "mystery_block", "payload": 42},
    ]
    marker = add_scenario(
        scripted,
        [
            Step(text="Trying odd calls.", raw_blocks=bad_blocks),
            Step(tool_use=ToolUse(name="bash", input={"command": "echo fine"})),
            Step(text="Recovered: {last_tool_result}"),
        ],
    )
    result, events, handle = await run_one_shot(client, f"Send odd tool calls. {marker}")
    assert result.status == "done" and result.answer == "Recovered: fine"
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    first = [e.tool_result for e in events if e.kind == "tool_result"][:5]
    assert all(r is not None and r.is_error and "This tool call was not run" in r.output for r in first)
    outputs = [r.output for r in first if r is not None]
    assert "its input was a string, not a JSON object" in outputs[0]
    assert "its input was a list, not a JSON object" in outputs[1]
    assert "its input was missing (null), not a JSON object" in outputs[2], outputs[2]
    assert "its id was missing" in outputs[3] and "its id was missing, repeated" in outputs[4]
    # The next request was valid: every tool_use has an id and an object input, each answered once.
    request = [r for r in scripted.requests if marker in json.dumps(r.body)][1].body["messages"]
    uses = [b for b in request[-2]["content"] if b.get("type") == "tool_use"]
    answers = [b["tool_use_id"] for b in request[-1]["content"] if b.get("type") == "tool_result"]
    assert len({u["id"] for u in uses}) == 5 and all(isinstance(u["input"], dict) for u in uses)
    assert sorted(answers) == sorted(u["id"] for u in uses)


async def test_a_command_that_runs_forever_is_cut_at_the_timeout(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo waiting; sleep 600"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "echo still here"})),
            Step(text="done"),
        ],
    )
    result, events, _ = await run_one_shot(client, f"Hang. {marker}", coder(timeout_s=2))
    results = [e.tool_result for e in events if e.kind == "tool_result"]
    assert results[0].is_error and "timed out after 2s" in results[0].output and "waiting" in results[0].output
    assert not results[1].is_error and results[1].output == "still here\n"
    assert result.status == "done"


async def test_two_user_messages_and_a_cold_context_cache(
    client: Client, scripted: ScriptedModelServer, workers: Workers
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo 41 > /workspace/n"})),
            Step(text="Stored."),
            Step(tool_use=ToolUse(name="bash", input={"command": "echo $(( $(cat /workspace/n) + 1 ))"})),
            Step(text="The answer is {last_tool_result}."),
        ],
    )
    handle = await start_agent_session(client, coder(), f"Remember 41. {marker}")
    state = await wait_until_settled(client, handle.id)
    assert state.status == "idle" and state.last_answer == "Stored."
    # This worker forgets every context: the next call must fetch it from the workflow (a query).
    workers.model.cache._entries.clear()
    misses = workers.model.cache.misses
    offset = await send_message(client, handle.id, "Add one.")
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "The answer is 42."
    assert workers.model.cache.misses == misses + 1
    sent = [r.body for r in scripted.requests if marker in json.dumps(r.body)]
    assert [len(b["messages"]) for b in sent] == [1, 3, 5, 7]  # the API always gets the whole context
    events = await session_events(client, handle.id)
    assert [e.text for e in events if e.kind == "user_message"] == [f"Remember 41. {marker}", "Add one."]
    # Validation: an empty message is refused; after the end, so is any message.
    with pytest.raises(Exception, match="the message is empty"):
        await send_message(client, handle.id, "   ")
    await handle.signal("end_session")
    result = await handle.result()
    assert result.status == "done" and result.turns == 4
    with pytest.raises(Exception, match="(completed|finished|ended|not found)"):
        await send_message(client, handle.id, "more?")


async def test_one_shot_sessions_refuse_more_messages(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "sleep 3"})), Step(text="ok")]
    )
    handle = await start_agent_session(client, coder(), f"Wait. {marker}", one_shot=True)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("send_message", "and another thing")
    assert (await handle.result()).answer == "ok"


async def test_a_rejected_model_request_is_reported_in_the_session(
    client: Client, scripted: ScriptedModelServer
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(
                error=ScriptedError(
                    status=400, type="invalid_request_error", message="max_tokens: too large", times=1000
                )
            )
        ],
    )
    result, events, _ = await run_one_shot(client, f"Bad request. {marker}")
    assert result.status == "failed"
    assert result.error and "400" in result.error and "max_tokens: too large" in result.error
    assert events[-1].kind == "status" and "error" in kinds(events)
    assert len([r for r in scripted.requests if marker in json.dumps(r.body)]) == 1  # not retried


async def test_an_overloaded_model_is_retried_after_its_retry_after(
    client: Client, scripted: ScriptedModelServer
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(
                error=ScriptedError(status=529, type="overloaded_error", message="busy", retry_after=0.2, times=2),
                then=Step(text="finally"),
            )
        ],
    )
    result, _, _ = await run_one_shot(client, f"Busy. {marker}")
    assert result.answer == "finally"
    assert len([r for r in scripted.requests if marker in json.dumps(r.body)]) == 3


async def test_history_grows_linearly(client: Client, scripted: ScriptedModelServer) -> None:
    turns = 60
    steps = [
        Step(tool_use=ToolUse(name="bash", input={"command": f"printf 'turn %03d %s' {i} $(seq -s, 1 40)"}))
        for i in range(turns - 1)
    ]
    marker = add_scenario(scripted, [*steps, Step(text="done")])
    agent = coder()
    agent = agent.model_copy(update={"limits": agent.limits.model_copy(update={"max_turns": 100})})
    result, _, handle = await run_one_shot(client, f"Count. {marker}", agent)
    assert result.turns == turns
    history = await handle.fetch_history()
    per_turn: list[int] = []
    for event in history.events:
        if (
            event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and event.activity_task_scheduled_event_attributes.activity_type.name == "call_model"
        ):
            per_turn.append(0)
        if per_turn:
            per_turn[-1] += event.ByteSize()
    assert len(per_turn) == turns
    first, last = sum(per_turn[1:21]), sum(per_turn[39:59])  # skip the first turn (it carries the prompt)
    print(f"history bytes: first 20 turns {first}, last 20 turns {last}, total {sum(per_turn)}")
    assert last <= first * 1.2, f"history grows faster than linearly: {first} -> {last}"
    # The requests to the model, by contrast, carry the whole conversation and grow every turn.
    sizes = [len(json.dumps(r.body)) for r in scripted.requests if marker in json.dumps(r.body)]
    assert sizes[-1] > 5 * sizes[0]


async def test_an_idle_session_ends_after_its_idle_timeout(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "true"})), Step(text="ok")])
    agent = coder()
    agent = agent.model_copy(update={"limits": agent.limits.model_copy(update={"idle_timeout_s": 1})})
    handle = await start_agent_session(client, agent, f"Quick. {marker}")
    result = await handle.result()
    assert result.status == "done" and result.answer == "ok"
    events = await session_events(client, handle.id)
    assert kinds(events)[-3:] == ["status", "sandbox_released", "status"]
    assert [e.status for e in events if e.kind == "status"] == ["idle", "done"]


async def test_always_ask_tools_wait_for_approval_and_denials_reach_the_model(
    client: Client, scripted: ScriptedModelServer
) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo approved-run"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "rm -rf /workspace"})),
            Step(text="Told: {last_tool_result}"),
        ],
    )
    agent = coder().model_copy(update={"policies": {"bash": "always_ask"}})
    handle = await start_agent_session(client, agent, f"Ask first. {marker}", one_shot=True)
    state = await wait_until_settled(client, handle.id)
    assert state.status == "waiting" and [c.input["command"] for c in state.awaiting_approval] == ["echo approved-run"]
    first = state.awaiting_approval[0].id
    with pytest.raises(WorkflowUpdateFailedError) as unknown:
        await handle.execute_update("approve", "toolu_nope", result_type=int)
    assert "no tool call 'toolu_nope' is waiting for approval" in str(unknown.value.cause)
    offset = await handle.execute_update("approve", first, result_type=int)
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.status == "waiting"
    second = state.awaiting_approval[0]
    assert second.input["command"] == "rm -rf /workspace"
    await handle.execute_update("deny", args=[second.id, "not on my workspace"], result_type=int)
    result = await handle.result()
    assert result.answer == "Told: The user denied this bash call: not on my workspace"
    events = await session_events(client, handle.id)
    assert [e.kind for e in events if e.kind.startswith("approval_")] == [
        "approval_requested",
        "approval_granted",
        "approval_requested",
        "approval_denied",
    ]
    ran = [e.tool_result for e in events if e.kind == "tool_result"]
    assert ran[0].output == "approved-run\n" and ran[1].is_error
    # The search attribute says who is waiting on whom.
    statuses = [e.status for e in events if e.kind == "status"]
    assert statuses.count("waiting") == 2


async def test_skills_are_listed_loaded_and_copied(client: Client, scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="load_skill", input={"name": "python-checks", "copy_files": True})),
            Step(tool_use=ToolUse(name="write_file", input={"path": "ok.py", "content": "print('fine')\n"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "bash skills/python-checks/check.sh ok.py"})),
            Step(text="{last_tool_result}"),
        ],
    )
    result, events, _ = await run_one_shot(client, f"Check it. {marker}")
    assert result.answer == "compile: exit 0\nfine\nrun: exit 0"
    loaded = [e.tool_result for e in events if e.kind == "tool_result"][0]
    assert loaded.output.startswith("# Checking a Python program")
    assert "[1 file(s) copied to /workspace/skills/python-checks/: check.sh]" in loaded.output
    assert [e.text for e in events if e.kind == "skill_loaded"] == ["python-checks"]
    first = next(r.body for r in scripted.requests if marker in json.dumps(r.body))
    assert "- python-checks: Check a Python program before answering" in first["system"][0]["text"]
    assert "load_skill" in [t["name"] for t in first["tools"]]


async def test_a_repeated_identical_tool_call_is_refused(client: Client, scripted: ScriptedModelServer) -> None:
    same = ToolUse(name="bash", input={"command": "echo again >> /workspace/count; wc -l < /workspace/count"})
    marker = add_scenario(scripted, [Step(tool_use=same), Step(tool_use=same), Step(tool_use=same), Step(text="ok")])
    result, events, _ = await run_one_shot(client, f"Loop. {marker}")
    outputs = [e.tool_result for e in events if e.kind == "tool_result"]
    assert [r.output for r in outputs[:2]] == ["1\n", "2\n"]
    assert outputs[2].is_error and "same input 3 times in a row, so it was not run again" in outputs[2].output
    assert result.status == "done"


async def test_budgets_stop_the_session_with_a_reason(client: Client, scripted: ScriptedModelServer) -> None:
    steps = [Step(tool_use=ToolUse(name="bash", input={"command": f"echo {i}"})) for i in range(20)]
    marker = add_scenario(scripted, steps)
    agent = coder()
    tokens = agent.model_copy(update={"limits": agent.limits.model_copy(update={"max_tokens_total": 3000})})
    result, events, _ = await run_one_shot(client, f"Spend. {marker}", tokens)
    assert result.status == "failed" and (result.error or "").startswith("token budget exhausted:")
    assert result.usage.total_tokens >= 3000 and result.turns < 20
    assert any(e.kind == "error" and (e.text or "").startswith("stopped: token budget") for e in events)
    money = agent.model_copy(update={"limits": agent.limits.model_copy(update={"max_cost_usd": 0.01})})
    marker = add_scenario(scripted, steps)
    result, _, _ = await run_one_shot(client, f"Spend money. {marker}", money)
    assert result.status == "failed" and (result.error or "").startswith("cost budget exhausted: $0.01")
    assert result.cost_usd is not None and result.cost_usd >= 0.01


async def test_prompt_caching_breakpoints_and_a_byte_stable_prefix(
    client: Client, scripted: ScriptedModelServer
) -> None:
    steps = [Step(tool_use=ToolUse(name="bash", input={"command": f"echo step {i}"})) for i in range(5)]
    marker = add_scenario(scripted, [*steps, Step(text="done")])
    result, events, _ = await run_one_shot(client, f"Cache. {marker}")
    sent = [r.body for r in scripted.requests if marker in json.dumps(r.body)]
    assert len(sent) == 6
    for body in sent:
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}

    from durable_agents.testing.scripted_model import _without_cache_control

    def plain(value: Any) -> str:
        return json.dumps(_without_cache_control(value), sort_keys=True)

    for earlier, later in zip(sent, sent[1:], strict=False):  # each request is the previous one, extended
        n = len(earlier["messages"])
        assert plain(later["messages"][:n]) == plain(earlier["messages"])
        assert plain(later["system"]) == plain(earlier["system"]) and plain(later["tools"]) == plain(earlier["tools"])
    turns = [e.usage for e in events if e.kind == "model_turn" and e.usage]
    assert turns[0].cache_read_input_tokens == 0 and turns[0].cache_creation_input_tokens > 0
    assert all(u.cache_read_input_tokens > 0 for u in turns[1:])
    read = sum(u.cache_read_input_tokens for u in turns)
    total = sum(u.cache_read_input_tokens + u.cache_creation_input_tokens + u.input_tokens for u in turns)
    print(f"cache: {read} of {total} input tokens read from the cache ({read / total:.0%})")
    assert read / total > 0.5
