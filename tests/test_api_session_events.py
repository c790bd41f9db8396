"""`client.beta.sessions.events` through the official SDK (sync and async) against a real
`da serve`, the dev server, in-process workers and the scripted model: a turn through `stream`
and the same events through `list`, tool confirmation allow and deny, a custom tool's result,
interrupt, threads of subagents, and bad input that changes nothing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.beta.sessions import BetaManagedAgentsSessionThread
from temporalio.client import Client
from temporalio.worker import Worker

from durable_agents.activities.model import ModelActivities
from durable_agents.client import start_agent_session, wait_until_settled
from durable_agents.contracts import CustomTool, Subagent
from durable_agents.live.publisher import DeltaPublisher
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from durable_agents.worker import HARNESS_WORKFLOWS, WORKFLOW_RUNNER
from tests.helpers import add_scenario, coder, free_port, serve, wait_for, with_subagents

pytestmark = pytest.mark.usefixtures("workers")


KEY = "test-api-key"


@pytest.fixture(scope="module")
def api_url(address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("api-data")
    with serve(address, env={"DA_API_KEY": KEY, "DA_DATA_DIR": str(data)}) as url:
        yield url


@pytest.fixture
def sdk(api_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=api_url, api_key=KEY, max_retries=0)


async def sync(call: Any) -> Any:
    """A call of the sync SDK, off the event loop (the in-process workers run on it)."""
    return await asyncio.to_thread(call)


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def collect_stream(
    sdk: anthropic.Anthropic, session_id: str, until: Any, out: list[Any], ready: threading.Event
) -> None:
    """Read the session's stream in a thread until `until(event)`; events go to `out`."""
    with sdk.beta.sessions.events.stream(session_id) as stream:
        ready.set()
        for event in stream:
            out.append(event)
            if until(event):
                return


def idle(reason: str) -> Any:
    return lambda e: e.type == "session.status_idle" and e.stop_reason.type == reason


async def stream_while(sdk: anthropic.Anthropic, session_id: str, until: Any, action: Any) -> list[Any]:
    """Open the stream, then `action()` (sending events), and read until `until`."""
    got: list[Any] = []
    ready = threading.Event()
    reader = threading.Thread(target=collect_stream, args=(sdk, session_id, until, got, ready), daemon=True)
    reader.start()
    await asyncio.to_thread(ready.wait, 10)
    await asyncio.sleep(0.3)  # the relay's first read of the session happens as the stream opens
    await asyncio.to_thread(action)
    await asyncio.to_thread(reader.join, 60)
    assert not reader.is_alive(), f"the stream did not reach the expected event; got {types(got)}"
    return got


async def test_a_turn_through_stream_and_the_same_events_through_list(
    client: Client, scripted: ScriptedModelServer, sdk: anthropic.Anthropic
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(text="First."),
            Step(text="Running it.", tool_use=ToolUse(name="bash", input={"command": "echo streamed"})),
            Step(text="It said: {last_tool_result}"),
        ],
    )
    handle = await start_agent_session(client, coder(), f"Hello. {marker}")
    await wait_until_settled(client, handle.id)

    def send() -> None:
        sent = sdk.beta.sessions.events.send(
            handle.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "Run echo."}]}]
        )
        assert sent.data and sent.data[0].type == "user.message" and sent.data[0].id.startswith("sevt_")

    streamed = await stream_while(sdk, handle.id, idle("end_turn"), send)
    assert types(streamed) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "agent.tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert streamed[-2].type == "span.model_request_end" and streamed[-2].model_usage.output_tokens > 0
    assert streamed[-3].content[0].text == "It said: streamed"
    use = streamed[4]
    assert use.name == "bash" and use.input == {"command": "echo streamed"}
    assert streamed[6].tool_use_id == use.id and not streamed[6].is_error
    # Every streamed event is in list, in the same order, with the same ids.
    listed = await sync(lambda: list(sdk.beta.sessions.events.list(handle.id, limit=3)))  # 3 a page, auto-paged
    ids = [e.id for e in listed]
    assert [e.id for e in streamed] == ids[ids.index(streamed[0].id) :]
    assert listed[0].type == "user.message" and listed[0].content[0].text.startswith("Hello.")
    newest = await sync(lambda: sdk.beta.sessions.events.list(handle.id, order="desc", limit=2))
    assert [e.id for e in newest.data] == ids[::-1][:2]
    only = await sync(lambda: list(sdk.beta.sessions.events.list(handle.id, types=["agent.tool_use"])))
    assert [e.id for e in only] == [use.id]
    await handle.signal("end_session")


async def test_confirmations_allow_and_deny_and_a_custom_tool_result(
    client: Client, scripted: ScriptedModelServer, sdk: anthropic.Anthropic
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo allowed"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "rm -rf /workspace"})),
            Step(tool_use=ToolUse(name="lookup", input={"q": "x"})),
            Step(text="Done: {last_tool_result}"),
        ],
    )
    agent = coder().model_copy(
        update={
            "policies": {"bash": "always_ask"},
            "custom_tools": [CustomTool(name="lookup", description="look something up")],
        }
    )
    handle = await start_agent_session(client, agent, f"Careful. {marker}")
    await wait_for(lambda: _status(client, handle.id, "waiting"), 30, "the first confirmation request")
    events = sdk.beta.sessions.events
    waiting = [e for e in await sync(lambda: list(events.list(handle.id))) if e.type == "session.status_idle"][-1]
    assert waiting.stop_reason.type == "requires_action"
    first = waiting.stop_reason.event_ids[0]
    confirm = {"type": "user.tool_confirmation", "tool_use_id": first, "result": "allow"}
    allow = await sync(lambda: events.send(handle.id, events=[confirm]))
    await wait_for(lambda: _waiting_other_than(client, handle.id, first), 30, "the second confirmation request")
    idles = [e for e in await sync(lambda: list(events.list(handle.id))) if e.type == "session.status_idle"]
    second = idles[-1].stop_reason.event_ids[0]
    await sync(
        lambda: events.send(
            handle.id,
            events=[
                {"type": "user.tool_confirmation", "tool_use_id": second, "result": "deny", "deny_message": "not that"}
            ],
        )
    )
    await wait_for(lambda: _waiting_other_than(client, handle.id, second), 30, "the custom tool call")
    listed = await sync(lambda: list(events.list(handle.id)))
    custom = [e for e in listed if e.type == "agent.custom_tool_use"][0]
    assert custom.name == "lookup" and custom.input == {"q": "x"}
    found = {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": custom.id,
        "content": [{"type": "text", "text": "found it"}],
    }
    await sync(lambda: events.send(handle.id, events=[found]))
    await wait_for(lambda: _answered(client, handle.id), 30, "the answer")
    listed = await sync(lambda: list(events.list(handle.id)))
    confirmations = [e for e in listed if e.type == "user.tool_confirmation"]
    assert [(c.tool_use_id, c.result) for c in confirmations] == [(first, "allow"), (second, "deny")]
    assert confirmations[0].id == allow.data[0].id, "the echo's id is the logged event's"
    assert confirmations[1].deny_message == "not that"
    results = [e for e in listed if e.type == "agent.tool_result"]
    assert "allowed" in results[0].content[0].text and results[1].is_error
    assert "not that" in results[1].content[0].text
    assert [e for e in listed if e.type == "user.custom_tool_result"][0].custom_tool_use_id == custom.id
    await handle.signal("end_session")


async def test_bad_input_gets_a_400_naming_it_and_changes_nothing(
    client: Client, scripted: ScriptedModelServer, sdk: anthropic.Anthropic
) -> None:
    marker = add_scenario(scripted, [Step(text="Hi."), Step(text="Again.")])
    handle = await start_agent_session(client, coder(), f"Hi. {marker}")
    await wait_until_settled(client, handle.id)
    before = await sync(lambda: [e.id for e in sdk.beta.sessions.events.list(handle.id)])
    events = sdk.beta.sessions.events
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([{"type": "user.shout", "text": "x"}], "events.0.type: 'user.shout' is not an event a client sends"),
        ([{"type": "user.message"}], "events.0.content: Field required"),
        (
            [{"type": "user.message", "content": [{"type": "text", "text": "ok"}]}, {"type": "user.tool_confirmation"}],
            "events.1.tool_use_id: Field required",
        ),
        (
            [{"type": "user.tool_confirmation", "tool_use_id": "toolu_nope", "result": "allow"}],
            "events.0.tool_use_id: 'toolu_nope' is not waiting for a confirmation",
        ),
        (
            [{"type": "user.custom_tool_result", "custom_tool_use_id": "toolu_nope"}],
            "events.0.custom_tool_use_id: 'toolu_nope' is not a custom tool use waiting for a result",
        ),
        ([{"type": "user.define_outcome", "description": "d"}], "events.0.rubric: Field required"),
        ([{"type": "system.message", "content": "x"}], "system messages are not supported yet"),
    ]
    for sent, message in cases:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await sync(lambda sent=sent: events.send(handle.id, events=sent))  # type: ignore[misc]
        assert message in refused.value.message, refused.value.message
    with pytest.raises(anthropic.BadRequestError, match="order: 'sideways'"):
        await sync(lambda: events.list(handle.id, order="sideways"))  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError):
        await sync(lambda: events.list("session-nope"))
    assert await sync(lambda: [e.id for e in events.list(handle.id)]) == before, "nothing changed"
    await handle.signal("end_session")
    await handle.result()
    late = {"type": "user.message", "content": [{"type": "text", "text": "late"}]}
    with pytest.raises(anthropic.BadRequestError, match="is terminated"):
        await sync(lambda: events.send(handle.id, events=[late]))


async def test_interrupt_and_subagent_threads_through_the_async_sdk(
    client: Client, scripted: ScriptedModelServer, api_url: str
) -> None:
    child = add_scenario(scripted, [Step(text="3 files.")])
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="spawn_agent", input={"agent": "helper", "task": f"count. {child}"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "sleep 600"})),
            Step(text="Stopped."),
        ],
    )
    sdk = anthropic.AsyncAnthropic(base_url=api_url, api_key=KEY, max_retries=0)
    agent = with_subagents(coder(), Subagent(name="helper", spec=coder()))
    handle = await start_agent_session(client, agent, f"Count, then wait. {marker}")

    async def sleeping() -> bool:
        listed = [e async for e in sdk.beta.sessions.events.list(handle.id)]
        return any(e.type == "agent.tool_use" and e.name == "bash" for e in listed)

    await wait_for(sleeping, 60, "the long command to start")
    sent = await sdk.beta.sessions.events.send(handle.id, events=[{"type": "user.interrupt"}])
    await wait_for(lambda: _status(client, handle.id, "idle"), 30, "the interrupt to take")
    listed = [e async for e in sdk.beta.sessions.events.list(handle.id)]
    interrupts = [e for e in listed if e.type == "user.interrupt"]
    assert interrupts and interrupts[0].id == sent.data[0].id
    threads = [t async for t in sdk.beta.sessions.threads.list(handle.id)]
    assert len(threads) == 1 and threads[0].status == "terminated"
    BetaManagedAgentsSessionThread.model_validate(threads[0].model_dump())  # every field the SDK's model has
    thread_events = [e async for e in sdk.beta.sessions.threads.events.list(threads[0].id, session_id=handle.id)]
    messages = [e for e in thread_events if e.type == "agent.message"]
    assert messages and messages[-1].content[0].text == "3 files."
    created = [e for e in listed if e.type == "session.thread_created"]
    assert created and created[0].session_thread_id == threads[0].id
    await handle.signal("end_session")


async def _state(client: Client, session_id: str) -> Any:
    from durable_agents.client import session_state

    return await session_state(client, session_id)


async def _status(client: Client, session_id: str, status: str) -> bool:
    return bool((await _state(client, session_id)).status == status)


async def _waiting_other_than(client: Client, session_id: str, call_id: str) -> bool:
    state = await _state(client, session_id)
    waiting = [c.id for c in [*state.awaiting_approval, *state.awaiting_client]]
    return bool(waiting) and call_id not in waiting


async def _answered(client: Client, session_id: str) -> bool:
    state = await _state(client, session_id)
    return bool(state.status == "idle" and state.last_answer and state.last_answer.startswith("Done:"))


async def test_a_restart_of_da_serve_mid_session_loses_nothing(
    address: str, client: Client, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    """The SDK's own recipe for a reconnect: open the stream again, list the backlog, drop what was
    seen (by id). Across a restart of the server, the union is the whole log, in order, once."""
    steps = [
        Step(text=f"Step {i}.", tool_use=ToolUse(name="bash", input={"command": f"sleep 0.3; echo {i}"}))
        for i in range(6)
    ]
    marker = add_scenario(scripted, [*steps, Step(text="All done.")])
    port = free_port()
    seen: dict[str, Any] = {}
    env = {"DA_API_KEY": KEY, "DA_DATA_DIR": str(tmp_path)}
    with serve(address, port, env) as url:
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
        handle = await start_agent_session(client, coder(), f"Six steps. {marker}")
        stream = await sdk.beta.sessions.events.stream(handle.id)
        async for event in stream:
            seen[event.id] = event
            if event.type == "agent.tool_result" and len([e for e in seen.values() if e.type == event.type]) >= 2:
                break
        await stream.close()
    first_stream = list(seen)
    # The server is down for a while; the session goes on.
    await asyncio.sleep(1)
    env = {"DA_API_KEY": KEY, "DA_DATA_DIR": str(tmp_path)}
    with serve(address, port, env) as url:
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
        stream = await sdk.beta.sessions.events.stream(handle.id)
        backlog = [e async for e in sdk.beta.sessions.events.list(handle.id, limit=1000)]
        for event in backlog:
            seen.setdefault(event.id, event)
        if not (backlog and backlog[-1].type == "session.status_idle"):
            async for event in stream:
                seen.setdefault(event.id, event)
                if event.type == "session.status_idle":
                    break
        await stream.close()
        final = [e async for e in sdk.beta.sessions.events.list(handle.id, limit=7)]
    ids = [e.id for e in final]
    assert len(ids) == len(set(ids)) and set(ids) == set(seen), "what the client saw is the whole log, once"
    assert [i for i in ids if i in first_stream] == first_stream, "streamed in the log's order"
    assert [e.content[0].text for e in final if e.type == "agent.message"][-1] == "All done."
    assert len([e for e in final if e.type == "agent.tool_result"]) == 6
    await handle.signal("end_session")


async def test_streamed_previews_of_agent_message_add_up_to_it(
    client: Client, scripted: ScriptedModelServer, api_url: str
) -> None:
    """With event_deltas[]=agent.message the stream carries event_start and event_delta previews of
    the turn's message (from the live relay, fed by a harness worker that publishes to it), then
    the message itself with the same id."""
    text = " ".join(f"word{i}" for i in range(40))
    marker = add_scenario(scripted, [Step(text=text, stream_chunk=6, stream_delay_ms=10)])
    queue = f"api-deltas-{uuid.uuid4().hex[:8]}"
    publisher = DeltaPublisher(api_url)
    model = ModelActivities(
        client, anthropic.AsyncAnthropic(api_key="k", base_url=scripted.url, max_retries=0), publisher
    )
    worker = Worker(
        client,
        task_queue=queue,
        workflows=HARNESS_WORKFLOWS,
        activities=[model.call_model],
        workflow_runner=WORKFLOW_RUNNER,
    )
    sdk = anthropic.AsyncAnthropic(base_url=api_url, api_key=KEY, max_retries=0)
    async with worker:
        handle = await start_agent_session(client, coder(), None, task_queue=queue)
        await wait_for(lambda: _status(client, handle.id, "idle"), 30, "the session to wait")
        got: list[Any] = []
        stream = await sdk.beta.sessions.events.stream(handle.id, event_deltas=["agent.message"])
        await asyncio.sleep(0.3)
        content = [{"type": "text", "text": f"Talk. {marker}"}]
        await sdk.beta.sessions.events.send(handle.id, events=[{"type": "user.message", "content": content}])
        async for event in stream:
            got.append(event)
            if event.type == "session.status_idle":
                break
        await stream.close()
        await handle.signal("end_session")
    await publisher.close()
    starts = [e for e in got if e.type == "event_start"]
    deltas = [e for e in got if e.type == "event_delta"]
    message = [e for e in got if e.type == "agent.message"][0]
    assert starts and starts[0].event.id == message.id and starts[0].event.type == "agent.message"
    assert len(deltas) > 5 and all(d.event_id == message.id for d in deltas)
    assert "".join(d.delta.content.text for d in deltas) == message.content[0].text == text
    assert got.index(deltas[-1]) < got.index(message), "the previews come before the message"


async def test_reads_of_a_session_at_once_map_its_events_once(
    client: Client, scripted: ScriptedModelServer, api_url: str
) -> None:
    """Lists and a stream opening together (the console opens a session so) read it once each:
    nothing mapped twice, every reader the same events."""
    marker = add_scenario(
        scripted,
        [Step(text="Running it.", tool_use=ToolUse(name="bash", input={"command": "true"})), Step(text="Done.")],
    )
    handle = await start_agent_session(client, coder(), f"Hello. {marker}")
    await wait_until_settled(client, handle.id)
    sdk = anthropic.AsyncAnthropic(base_url=api_url, api_key=KEY, max_retries=0)
    stream = sdk.beta.sessions.events.stream(handle.id)
    reads = [sdk.beta.sessions.events.list(handle.id, limit=1000) for _ in range(3)]
    opened, *lists = await asyncio.gather(stream, *reads)
    await opened.close()
    again = await sdk.beta.sessions.events.list(handle.id, limit=1000)
    ids = [e.id for e in again.data]
    assert len(ids) == len(set(ids)) > 5, ids
    assert all([e.id for e in listed.data] == ids for listed in lists)
    await sdk.close()
    await handle.signal("end_session")
