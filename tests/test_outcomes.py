"""Outcomes, graded against a rubric: through the SDK (`user.define_outcome`, the
`span.outcome_evaluation_*` events, the session's `outcome_evaluations`) and through
`da start --outcome`; a revision that then passes, and one that reaches `max_iterations`.
The grader is the scripted model too: its conversation is its own (the rubric's marker picks
its scenario), so each evaluation is one more step of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from temporalio.client import Client

from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, cli, free_port, serve, state_of, wait_for
from tests.helpers.scenarios import requests_holding

pytestmark = pytest.mark.usefixtures("workers")
KEY = "outcomes-test-key"


@pytest.fixture(scope="module")
def api_url(address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"DA_API_KEY": KEY, "DA_DATA_DIR": str(tmp_path_factory.mktemp("outcomes"))}
    with serve(address, free_port(), env) as url:
        yield url


def grader(server: ScriptedModelServer, *verdicts: tuple[str, str]) -> str:
    """A grader scenario answering these verdicts in turn; returns the marker its rubric must hold.
    Registered last, it is matched first (the grader's message also holds the task's marker)."""
    steps = [Step(text=json.dumps({"result": r, "explanation": e})) for r, e in verdicts]
    return add_scenario(server, steps)


async def test_an_outcome_that_needs_one_revision_then_passes(scripted: ScriptedModelServer, api_url: str) -> None:
    task = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "fib.py", "content": "print(1, 1, 2)\n"})),
            Step(text="Done: see fib.py"),
            Step(tool_use=ToolUse(name="write_file", input={"path": "fib.py", "content": '"""Fib."""\nprint(1)\n'})),
            Step(text="Revised: fib.py has a docstring now."),
        ],
    )
    rubric = grader(scripted, ("needs_revision", "fib.py needs a docstring."), ("satisfied", "It has one."))
    sdk = anthropic.AsyncAnthropic(base_url=api_url, api_key=KEY, max_retries=0)
    toolset = [{"type": "agent_toolset_20260401"}]
    agent = await sdk.beta.agents.create(name="fib", model="claude-sonnet-5-5", tools=toolset)  # type: ignore[list-item]
    env = await sdk.beta.environments.create(name="fib")
    session = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id)
    define = {
        "type": "user.define_outcome",
        "description": f"Write fib.py {task}",
        "rubric": {"type": "text", "content": f"- fib.py has a docstring {rubric}"},
    }
    got: list[Any] = []
    async with await sdk.beta.sessions.events.stream(session.id) as stream:
        sent = await sdk.beta.sessions.events.send(session.id, events=[define])  # type: ignore[list-item]
        async for event in stream:
            got.append(event)
            if event.type == "session.status_idle" and event.stop_reason.type == "end_turn":
                break
    kinds = [e.type for e in got]
    defined = next(e for e in got if e.type == "user.define_outcome")
    assert defined.id == sent.data[0].id and defined.outcome_id.startswith("outc_")
    assert kinds.count("span.outcome_evaluation_start") == 2
    ends = [e for e in got if e.type == "span.outcome_evaluation_end"]
    assert [(e.iteration, e.result) for e in ends] == [(0, "needs_revision"), (1, "satisfied")]
    assert ends[0].explanation == "fib.py needs a docstring." and ends[1].usage.output_tokens > 0
    starts = [e for e in got if e.type == "span.outcome_evaluation_start"]
    assert [e.outcome_evaluation_start_id for e in ends] == [s.id for s in starts]
    # The feedback was the agent's next message; the grader saw the file the answer named.
    assert any("fib.py needs a docstring." in json.dumps(r["messages"]) for r in requests_holding(scripted, task))
    graded = requests_holding(scripted, rubric)
    assert len(graded) == 2 and '=== fib.py\\n\\"\\"\\"Fib.\\"\\"\\"' in json.dumps(graded[1]["messages"][-1])
    assert "You grade an AI agent" in json.dumps(graded[0]["system"]) and "tools" not in graded[0]
    read = await sdk.beta.sessions.retrieve(session.id)
    evaluation = read.outcome_evaluations[0]
    assert evaluation.result == "satisfied" and evaluation.iteration == 1 and evaluation.completed_at is not None
    # The grader's usage counts in the session's.
    assert read.usage.output_tokens > ends[-1].usage.output_tokens > ends[0].usage.output_tokens > 0
    listed = [e.type async for e in sdk.beta.sessions.events.list(session.id)]
    assert [k for k in listed if k.startswith("span.outcome")] == [k for k in kinds if k.startswith("span.outcome")]
    with pytest.raises(anthropic.BadRequestError, match="events.0.rubric: file rubrics"):
        await sdk.beta.sessions.events.send(
            session.id,
            events=[{**define, "rubric": {"type": "file", "file_id": "file_1"}}],  # type: ignore[list-item]
        )
    with pytest.raises(anthropic.BadRequestError, match="events.0.max_iterations"):
        await sdk.beta.sessions.events.send(session.id, events=[{**define, "max_iterations": 21}])  # type: ignore[list-item]
    await sdk.beta.sessions.archive(session.id)


async def test_an_outcome_from_da_start_reaches_max_iterations(
    address: str, client: Client, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    task = add_scenario(scripted, [Step(text="Attempt {n}.", repeat=5)])
    rubric = grader(scripted, ("needs_revision", "Not yet."), ("needs_revision", "Still not."))
    rubric_file = tmp_path / "RUBRIC.md"
    rubric_file.write_text(f"# Rubric\n- perfect {rubric}\n")
    code, out, err = await cli(
        address, "start", "--agent", "agents/coder.yaml", "--outcome", str(rubric_file), "--max-iterations", "2",
        f"Be perfect {task}",
    )  # fmt: skip
    assert code == 0, err
    session_id = out.strip()

    async def settled() -> bool:
        state = await state_of(client, session_id)
        return bool(state.outcomes) and state.outcomes[-1].result not in ("running", "evaluating")

    await wait_for(settled, what="the outcome settled")
    state = await state_of(client, session_id)
    outcome = state.outcomes[-1]
    assert outcome.result == "max_iterations_reached" and outcome.iteration == 1 and outcome.explanation == "Still not."
    assert len(requests_holding(scripted, rubric)) == 2 and state.last_answer == "Attempt 1."
    code, _, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--outcome", "/nope.md", "x")
    assert code == 2 and "--outcome /nope.md: No such file or directory" in err
    await client.get_workflow_handle(session_id).signal("end_session")


async def test_a_slow_grader_says_it_is_still_working_and_an_interrupt_stops_the_loop(
    client: Client, scripted: ScriptedModelServer
) -> None:
    from anthropic.types.beta.sessions import BetaManagedAgentsSpanOutcomeEvaluationOngoingEvent as Ongoing

    from durable_agents.api.events import EventMapper
    from durable_agents.client import interrupt, session_events, start_agent_session
    from durable_agents.contracts import Outcome
    from tests.helpers import coder

    task = add_scenario(scripted, [Step(text="Attempt {n}.", repeat=5)])
    slow = json.dumps({"result": "needs_revision", "explanation": "Again."})
    rubric = add_scenario(scripted, [Step(text=slow, repeat=5)], delay_ms=1500)
    outcome = Outcome(id="outc_slow", description=f"Try {task}", rubric=f"- right {rubric}", heartbeat_s=0.3)
    handle = await start_agent_session(client, coder(), outcome.description, outcome=outcome)

    async def evaluating_again() -> bool:  # the second evaluation has begun, and said it works on
        events = await session_events(client, handle.id)
        ongoing = [e for e in events if e.kind == "outcome_evaluation_ongoing" and e.iteration == 1]
        return bool(ongoing)

    await wait_for(evaluating_again, what="the second evaluation's heartbeat")
    await interrupt(client, handle.id)
    state = await state_of(client, handle.id)
    assert state.status == "idle" and state.outcomes[-1].result == "interrupted"
    events = await session_events(client, handle.id)
    ends = [(e.iteration, e.result) for e in events if e.kind == "outcome_evaluation_end"]
    assert ends == [(0, "needs_revision"), (1, "interrupted")]
    assert [e for e in events if e.kind == "outcome_evaluation_ongoing" and e.iteration == 0]
    mapper = EventMapper(handle.id)
    mapped = [m.data for e in events for m in mapper.map(e)]
    beat = next(d for d in mapped if d["type"] == "span.outcome_evaluation_ongoing")
    assert Ongoing.model_validate(beat).outcome_id == "outc_slow"
    await client.get_workflow_handle(handle.id).signal("end_session")
