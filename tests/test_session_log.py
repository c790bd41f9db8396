"""The session log across continue-as-new runs, compaction, large payloads, custom tools, export."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from durable_agents import session_log
from durable_agents.agent_files import load_agent
from durable_agents.client import ClientError, post_tool_result, start_agent_session, wait_until_settled
from durable_agents.contracts import COMPACTION_INSTRUCTION, GET_EVENTS, AgentSpec, CustomTool, Skill
from durable_agents.payload_store import FileStorageDriver
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, cli

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("workers")


def agent_with(limits: dict[str, Any] | None = None, **fields: Any) -> AgentSpec:
    agent = load_agent(ROOT / "agents" / "coder.yaml")
    if limits:
        fields["limits"] = agent.limits.model_copy(update=limits)
    return agent.model_copy(update=fields)


TICK = Skill(name="tick", description="a cheap tool for long sessions", body="tock")


def ticks(n: int) -> list[Step]:
    """n cheap tool turns (load_skill runs inside the workflow: no activity), alternating inputs
    so the loop guard sees no repetition."""
    return [
        Step(tool_use=ToolUse(name="load_skill", input={"name": "tick", "copy_files": i % 2 == 0})) for i in range(n)
    ]


async def test_a_2000_turn_session_continues_as_new_and_its_log_reads_back_whole(
    client: Client, scripted: ScriptedModelServer
) -> None:
    turns = 2000
    marker = add_scenario(scripted, [*ticks(turns - 1), Step(text="finished")])
    # A context budget keeps each request small (as it would a real model's): compactions and
    # continue-as-new interleave.
    agent = agent_with({"max_turns": turns + 10, "context_tokens": 20_000}, skills=[TICK])
    handle = await start_agent_session(client, agent, f"Tick {turns} times. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == "finished" and result.turns == turns

    chain = await session_log.runs(client, handle.id)
    assert len(chain) >= 2, "the session should have continued as new"
    lengths = []
    for run in chain:
        history = await client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
        lengths.append(len(history.events))
    print(f"{len(chain)} runs, history events per run: {lengths}")
    assert max(lengths) <= 10_000
    assert [r.number for r in chain] == list(range(1, len(chain) + 1))

    began = time.perf_counter()
    events = await session_log.read_events(client, handle.id)
    took = time.perf_counter() - began
    print(f"read {len(events)} events across {len(chain)} runs in {took:.2f} s")
    assert [e.offset for e in events] == list(range(len(events)))
    model_turns = [e for e in events if e.kind == "model_turn"]
    assert len(model_turns) == turns
    calls = [e.tool_calls[0].input["copy_files"] for e in model_turns[:-1] if e.tool_calls]
    assert calls == [i % 2 == 0 for i in range(turns - 1)], "turns out of order or missing"
    assert sum(1 for e in events if e.kind == "continued") == len(chain) - 1
    compactions = sum(1 for e in events if e.kind == "compaction")
    print(f"{compactions} compactions")
    assert compactions >= 2
    # A slice that spans a run boundary reads the same as the whole.
    boundary = chain[1].first_offset
    assert (
        await session_log.read_events(client, handle.id, boundary - 3, boundary + 3)
        == events[boundary - 3 : boundary + 3]
    )


async def test_compaction_summarises_old_turns_and_the_raw_events_stay_readable(
    client: Client, scripted: ScriptedModelServer
) -> None:
    bulky = Skill(name="tick", description="returns a lot of text", body="lorem ipsum " * 150)  # ~1,800 bytes
    marker = add_scenario(scripted, [*ticks(12), Step(text="all done")])
    agent = agent_with({"context_tokens": 3000, "keep_recent_tokens": 1000}, skills=[bulky])
    handle = await start_agent_session(client, agent, f"Read a lot. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == "all done" and result.turns == 13

    events = await session_log.read_events(client, handle.id)
    compactions = [e for e in events if e.kind == "compaction"]
    assert compactions, "the context outgrew its budget: it should have been compacted"
    first = compactions[0]
    assert first.text and first.text.startswith("The user asked: Read a lot.") and first.usage
    start, end = first.covers or [0, 0]
    raw = await session_log.read_events(client, handle.id, start, end + 1)
    assert any(e.kind == "tool_result" and "lorem ipsum" in e.tool_result.output for e in raw), "raw events must stay"

    requests = [r.body for r in scripted.requests if marker in json.dumps(r.body)]
    asks = [i for i, body in enumerate(requests) if COMPACTION_INSTRUCTION in json.dumps(body)]
    assert len(asks) == len(compactions)
    before, after = len(json.dumps(requests[asks[0] - 1])), len(json.dumps(requests[asks[0] + 1]))
    print(f"request size before compaction {before} B, after {after} B")
    assert after < before
    summary_seen = requests[asks[0] + 1]["messages"][0]["content"][0]["text"]
    assert summary_seen.startswith("[Summary of the earlier conversation") and first.text in summary_seen
    # The model saw every step in order despite the summaries: 13 model turns, one answer.
    assert sum(1 for e in events if e.kind == "model_turn") == 13


def compaction_requests(server: ScriptedModelServer, marker: str) -> int:
    return sum(
        1 for r in server.requests if marker in json.dumps(r.body) and COMPACTION_INSTRUCTION in json.dumps(r.body)
    )


async def test_a_summariser_that_always_fails_is_tried_a_bounded_number_of_times(
    client: Client, scripted: ScriptedModelServer
) -> None:
    bulky = Skill(name="tick", description="returns a lot of text", body="lorem ipsum " * 150)  # ~1,800 bytes
    marker = add_scenario(scripted, [*ticks(30), Step(text="all done")], summary="")  # every summary empty
    agent = agent_with({"context_tokens": 3000, "keep_recent_tokens": 1000}, skills=[bulky])
    handle = await start_agent_session(client, agent, f"Read a lot. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == "all done" and result.turns == 31, result.error

    spent = compaction_requests(scripted, marker)
    print(f"model calls spent on compaction by a failing summariser over 31 turns: {spent}")
    assert 1 <= spent <= agent.limits.compaction_max_failures
    events = await session_log.read_events(client, handle.id)
    failures = [e.text or "" for e in events if e.kind == "error" and "compaction failed" in (e.text or "")]
    assert len(failures) == spent and "the oldest turns are left out instead" in failures[0]
    left_out = [e for e in events if e.kind == "compaction" and e.method == "truncation"]
    assert len(left_out) >= 5, "between failed summaries, and after the last, turns are left out instead"
    previous_end = -1
    for e in left_out:
        first, last = e.covers or [0, 0]
        assert previous_end < first <= last < e.offset and "Your " in (e.text or "")
        previous_end = last
    # The model always saw the user's task and went on where it was: every step once.
    assert sum(1 for e in events if e.kind == "model_turn") == 31


async def test_prompt_too_long_compacts_and_tries_the_turn_again(client: Client, scripted: ScriptedModelServer) -> None:
    bulky = Skill(name="tick", description="returns a lot of text", body="lorem ipsum " * 150)
    marker = add_scenario(scripted, [*ticks(8), Step(text="all done")], context_window=2500)
    agent = agent_with(skills=[bulky])  # the default budget (150,000 tokens) never triggers compaction
    handle = await start_agent_session(client, agent, f"Read a lot. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == "all done", result.error

    events = await session_log.read_events(client, handle.id)
    too_long = [e for e in events if e.kind == "error" and "prompt is too long" in (e.text or "")]
    assert too_long and "compacting the context and trying again" in (too_long[0].text or "")
    assert [e for e in events if e.kind == "compaction" and e.offset > too_long[0].offset]
    assert sum(1 for e in events if e.kind == "model_turn") == 9


async def test_a_5_mb_tool_output_goes_to_the_payload_store_not_into_history(
    client: Client, scripted: ScriptedModelServer
) -> None:
    size = 5_000_000
    command = f"head -c {size} /dev/zero | tr '\\0' x"
    marker = add_scenario(scripted, [Step(tool_use=ToolUse(name="bash", input={"command": command})), Step(text="big")])
    agent = agent_with({"tool_output_cap": 6_000_000})
    handle = await start_agent_session(client, agent, f"Make it big. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done" and result.answer == "big"
    events = await session_log.read_events(client, handle.id)
    output = next(e.tool_result.output for e in events if e.kind == "tool_result")
    assert output == "x" * size
    history = await handle.fetch_history()
    history_bytes = sum(e.ByteSize() for e in history.events)
    print(f"history of a session with a 5 MB tool output: {history_bytes} bytes")
    assert history_bytes < 200_000
    stored = [p for p in FileStorageDriver().root.rglob("*") if p.is_file() and p.stat().st_size > size]
    assert stored, "the output should be in the payload store"


async def test_custom_tools_wait_for_the_client_and_bad_results_change_nothing(
    client: Client, scripted: ScriptedModelServer, address: str, tmp_path: Path
) -> None:
    weather = CustomTool(
        name="lookup_weather",
        description="Current weather for a city (the client looks it up).",
        input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="lookup_weather", input={"town": "Oslo"})),
            Step(tool_use=ToolUse(name="lookup_weather", input={"city": "Oslo"})),
            Step(text="Weather: {last_tool_result}"),
        ],
    )
    agent = agent_with(custom_tools=[weather])
    handle = await start_agent_session(client, agent, f"Weather? {marker}")
    state = await wait_until_settled(client, handle.id)
    assert state.status == "waiting" and [c.input for c in state.awaiting_client] == [{"city": "Oslo"}]
    call = state.awaiting_client[0]
    events = await session_log.read_events(client, handle.id)
    refused = next(e.tool_result for e in events if e.kind == "tool_result")
    assert refused.is_error and "Invalid input for lookup_weather" in refused.output and "city" in refused.output
    assert any(e.kind == "tool_requested" and e.tool_calls and e.tool_calls[0].id == call.id for e in events)
    first = await scripted_request_count(scripted, marker)

    with pytest.raises(ClientError, match="no custom tool call 'toolu_nope' is waiting"):
        await post_tool_result(client, handle.id, "toolu_nope", "sunny")
    with pytest.raises(ClientError, match="content: Field required"):
        await post_tool_result(client, handle.id, call.id, {"text": "sunny"})
    bad = tmp_path / "bad.json"
    bad.write_text('{"content": 42}')
    code, _, err = await cli(address, "tool-result", handle.id, call.id, "--file", str(bad))
    assert code == 2 and "content: Input should be a valid string" in err
    bad.write_text("not json")
    code, _, err = await cli(address, "tool-result", handle.id, call.id, "--file", str(bad))
    assert code == 2 and "not JSON" in err
    state = await session_log.session_state(client, handle.id)
    assert state.status == "waiting" and state.events == len(events)  # nothing changed
    assert await scripted_request_count(scripted, marker) == first

    good = tmp_path / "out.json"
    good.write_text(json.dumps({"content": "12°C, light rain"}))
    code, out, err = await cli(address, "tool-result", handle.id, call.id, "--file", str(good), "--wait")
    assert code == 0, err
    assert "Weather: 12°C, light rain" in out
    await handle.signal("end_session")
    await handle.result()


async def scripted_request_count(scripted: ScriptedModelServer, marker: str) -> int:
    return sum(1 for r in scripted.requests if marker in json.dumps(r.body))


async def test_export_and_bad_input_through_the_cli(
    client: Client, scripted: ScriptedModelServer, address: str
) -> None:
    marker = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="load_skill", input={"name": "tick"})), Step(text="ok")]
    )
    handle = await start_agent_session(client, agent_with(skills=[TICK]), f"Once. {marker}", one_shot=True)
    await handle.result()
    code, out, err = await cli(address, "export", handle.id)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["offset"] for e in lines] == list(range(len(lines))) and lines[0]["kind"] == "session_started"
    assert f"{len(lines)} events exported" in err
    # A finished session: messages, interrupts, approvals and tool results are refused, clearly.
    for args, expected in (
        (("send", handle.id, "more?"), "has ended; start a new one"),
        (("interrupt", handle.id), "has ended; start a new one"),
        (("approve", handle.id, "toolu_x"), "has ended; start a new one"),
        (("tool-result", handle.id, "toolu_x", "--text", "x"), "has ended; start a new one"),
        (("events", handle.id, "--from", "-1"), "offsets start at 0"),
    ):
        code, _, err = await cli(address, *args)
        assert code == 2 and expected in err, (args, err)
    code, _, err = await cli(address, "tool-result", handle.id, "toolu_x")
    assert code == 2 and "--file out.json or --text" in err


async def test_an_interrupt_when_idle_and_an_unknown_approval_change_nothing(
    client: Client, scripted: ScriptedModelServer
) -> None:
    marker = add_scenario(scripted, [Step(text="hello")])
    handle = await start_agent_session(client, agent_with(), f"Hi. {marker}")
    state = await wait_until_settled(client, handle.id)
    assert state.status == "idle"
    with pytest.raises(WorkflowUpdateFailedError) as idle:
        await handle.execute_update("interrupt", result_type=int)
    assert "nothing to interrupt: the session is idle" in str(idle.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as unknown:
        await handle.execute_update("approve", "toolu_nope", result_type=int)
    assert "no tool call 'toolu_nope' is waiting for approval" in str(unknown.value.cause)
    after = await session_log.session_state(client, handle.id)
    assert after.events == state.events and after.status == "idle"
    await handle.signal("end_session")
    await handle.result()


async def test_a_query_the_server_refuses_for_want_of_a_poller_is_asked_again(
    client: Client, scripted: ScriptedModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses a query ("no poller seen for task queue recently") where it has not seen a
    harness worker poll the session's queue lately (a burst keeps the worker busy, a node was lost):
    the log is asked again until it answers, for POLLER_WAIT_S; other errors are not retried."""
    from temporalio.client import WorkflowHandle
    from temporalio.service import RPCError, RPCStatusCode

    marker = add_scenario(scripted, [Step(text="answered")])
    handle = await start_agent_session(client, agent_with(), f"Hello. {marker}", one_shot=True)
    await handle.result()
    real = WorkflowHandle.query
    refusals = {"left": 2}

    async def refused_twice(self: WorkflowHandle[Any, Any], *args: Any, **kwargs: Any) -> Any:
        if refusals["left"] > 0:  # the server's answer, as the SDK raises it
            refusals["left"] -= 1
            message = "no poller seen for task queue recently, worker may be down"
            raise RPCError(message, RPCStatusCode.FAILED_PRECONDITION, b"")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(WorkflowHandle, "query", refused_twice)
    events = await session_log.read_events(client, handle.id)
    assert refusals["left"] == 0 and events[0].kind == "session_started" and events[-1].kind == "status"
    refusals["left"] = 1_000
    monkeypatch.setattr(session_log, "POLLER_WAIT_S", 1.0)
    with pytest.raises(RPCError, match="no poller seen"):  # and only so long
        await session_log.read_events(client, handle.id)


STALLS = {"left": 0, "asked": 0}


@workflow.defn(name="StallingQueryWorkflow")
class StallingQueryWorkflow:
    """Closed at once; its query (answered by replaying its history) blocks its thread past the SDK's
    2 s deadlock timeout while STALLS says so, as a full garbage collection in a busy worker can."""

    @workflow.run
    async def run(self) -> None:
        return None

    @workflow.query(name=GET_EVENTS)
    def get_events(self, start: int = 0, stop: int | None = None) -> list[str]:
        STALLS["asked"] += 1
        if STALLS["left"] > 0:
            STALLS["left"] -= 1
            time.sleep(2.3)  # noqa: ASYNC251 - the stall is the point (the workflow's own thread)
        return ["answered"]


async def test_a_query_whose_replay_stalls_past_the_deadlock_timeout_is_asked_again(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay step that takes over 2 s fails the query with the SDK's "Potential deadlock detected":
    asked again (the worker replays afresh), up to DEADLOCK_RETRIES times; other failures are not."""
    queue = f"stall-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[StallingQueryWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        handle = await client.start_workflow(StallingQueryWorkflow.run, id=queue, task_queue=queue)
        await handle.result()
        STALLS.update(left=1, asked=0)
        assert await session_log.query(handle, GET_EVENTS, list[str], [0, None]) == ["answered"]
        assert STALLS == {"left": 0, "asked": 2}, "asked once, stalled, and asked again"
        STALLS.update(left=1, asked=0)
        monkeypatch.setattr(session_log, "DEADLOCK_RETRIES", 0)
        with pytest.raises(WorkflowQueryFailedError, match="Potential deadlock detected"):
            await session_log.query(handle, GET_EVENTS, list[str], [0, None])
        with pytest.raises(WorkflowQueryFailedError, match="unknown queryType|not found|GetStateNope"):
            await session_log.query(handle, "GetStateNope", list[str])  # any other failure: not asked again
