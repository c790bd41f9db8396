"""The session log as Managed Agents events (durable_agents/api/events.py), checked against the
pinned SDK's own models: every mapped event validates as the class its `type` names."""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Any

from anthropic.types.beta.sessions.beta_managed_agents_session_event import BetaManagedAgentsSessionEvent
from pydantic import BaseModel

from durable_agents.api.events import EventMapper, Mapped, message_event_id
from durable_agents.contracts import CustomTool, McpServer, parse_event
from tests.helpers import coder


def sdk_classes() -> dict[str, type[BaseModel]]:
    union = typing.get_args(BetaManagedAgentsSessionEvent)[0]  # Annotated[Union[...], discriminator]
    return {typing.get_args(c.model_fields["type"].annotation)[0]: c for c in typing.get_args(union)}


def ev(offset: int, kind: str, **fields: Any) -> Any:
    return parse_event({"offset": offset, "kind": kind, "at": datetime(2026, 12, 1, tzinfo=UTC), **fields})


def call(call_id: str, name: str, **inp: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "input": inp}


def result(call_id: str, name: str, output: str, is_error: bool = False) -> dict[str, Any]:
    return {"call_id": call_id, "name": name, "output": output, "is_error": is_error}


USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def test_a_session_log_maps_to_events_the_sdk_models_accept() -> None:
    agent = coder().model_copy(
        update={
            "custom_tools": [CustomTool(name="lookup", description="d")],
            "mcp_servers": [McpServer(name="mem", url="http://x/mcp")],
        }
    )
    turn = [{"type": "text", "text": "Let me look."}]
    calls = [call("toolu_1", "read_file", path="a"), call("toolu_2", "mem__read_graph"), call("toolu_3", "lookup")]
    log = [
        ev(0, "session_started", text="hi", model="m", agent=agent.model_dump()),
        ev(1, "status", status="running"),
        ev(2, "user_message", text="hi", message_id="sevt_from_client"),
        ev(3, "model_turn", content=turn, text="Let me look.", tool_calls=calls, usage=USAGE, model="m"),
        ev(4, "tool_result", tool_result=result("toolu_1", "read_file", "text")),
        ev(5, "tool_result", tool_result=result("toolu_2", "mem__read_graph", "{}")),
        ev(6, "tool_requested", tool_calls=[calls[2]], text="lookup"),
        ev(7, "status", status="waiting"),
        ev(8, "tool_result", tool_result=result("toolu_3", "lookup", "found")),
        ev(9, "approval_requested", tool_calls=[call("toolu_4", "bash", command="rm x")], text="bash: rm x"),
        ev(10, "approval_denied", tool_calls=[call("toolu_4", "bash", command="rm x")], text="no"),
        ev(11, "tool_result", tool_result=result("toolu_4", "bash", "denied", True)),
        ev(12, "model_turn", content=[{"type": "text", "text": "Done."}], text="Done.", usage=USAGE, model="m"),
        ev(13, "status", status="idle"),
        ev(14, "compaction", text="s", covers=[0, 12], reason="r"),
        ev(15, "error", text="model call failed: Anthropic API answered 529 (overloaded_error): busy"),
        ev(16, "status", status="idle"),
        ev(17, "interrupted", text="interrupted by the user"),
        ev(18, "subagent_started", child="s/sub-1", text="helper: count"),
        ev(19, "subagent_finished", child="s/sub-1", status="done", text="3"),
        ev(20, "error", text="stopped: token budget exhausted: 10 of 5 tokens used"),
        ev(21, "status", status="failed"),
    ]
    mapper = EventMapper("s")
    mapped: list[Mapped] = [m for e in log for m in mapper.map(e)]
    classes = sdk_classes()
    for m in mapped:
        cls = classes[m.data["type"]]
        cls.model_validate(m.data)  # the SDK's model accepts it, field for field
    types = [m.data["type"] for m in mapped]
    assert types == [
        "session.status_running",
        "user.message",
        "span.model_request_start",
        "agent.message",
        "agent.tool_use",
        "agent.mcp_tool_use",
        "agent.custom_tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "agent.mcp_tool_result",
        "session.status_idle",
        "user.custom_tool_result",
        "session.status_idle",
        "user.tool_confirmation",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
        "agent.thread_context_compacted",
        "session.error",
        "session.status_idle",
        "user.interrupt",
        "session.thread_created",
        "session.thread_status_terminated",
        "session.error",
        "session.status_idle",
        "session.status_terminated",
    ]
    by_type = {m.data["type"]: m.data for m in mapped}
    assert mapped[1].data["id"] == "sevt_from_client"  # the client's id stays the event's
    assert by_type["agent.tool_use"]["name"] == "read" and by_type["agent.tool_use"]["id"] == "toolu_1"
    assert by_type["agent.mcp_tool_use"] == {
        **by_type["agent.mcp_tool_use"],
        "name": "read_graph",
        "mcp_server_name": "mem",
    }
    waiting = [m.data["stop_reason"] for m in mapped if m.data["type"] == "session.status_idle"]
    assert waiting[0] == {"type": "requires_action", "event_ids": ["toolu_3"]}
    assert waiting[1] == {"type": "requires_action", "event_ids": ["toolu_4"]}
    assert [w["type"] for w in waiting[2:]] == ["end_turn", "retries_exhausted", "budget_reached"]
    assert mapped[3].data["id"] == message_event_id(3), "streamed deltas name the turn's message by this id"
    errors = [m.data["error"]["type"] for m in mapped if m.data["type"] == "session.error"]
    assert errors == ["model_overloaded_error", "unknown_error"]
    assert len({m.data["id"] for m in mapped}) == len(mapped), "ids are unique"


def test_the_same_log_maps_to_the_same_ids_every_time() -> None:
    log = [ev(i, "user_message", text=str(i)) for i in range(5)]
    first = [m.data["id"] for e in log for m in EventMapper("s").map(e)]
    again = [m.data["id"] for e in log for m in EventMapper("s").map(e)]
    assert first == again and first[0] == "sevt_00000000_0"


def test_a_compaction_says_what_it_did_and_which_listed_events_it_stands_for() -> None:
    turn = [{"type": "text", "text": "ok"}]
    sandbox = {"sandbox_id": "c", "host_queue": "q", "image": "i", "runtime": "runc"}
    log = [
        ev(0, "session_started", text="hi", model="m"),
        ev(1, "user_message", text="hi"),
        ev(2, "sandbox_provisioned", sandbox=sandbox),  # maps to nothing
        ev(3, "model_turn", content=turn, text="ok", usage=USAGE, model="m"),
        ev(4, "user_message", text="more"),
        ev(5, "compaction", text="the summary", covers=[2, 3], method="summary", reason="context over 80%"),
    ]
    mapper = EventMapper("s")
    mapped = [m for e in log for m in mapper.map(e)]
    compacted = mapped[-1].data
    sdk_classes()[compacted["type"]].model_validate(compacted)
    assert compacted["summary"] == "the summary" and compacted["reason"] == "context over 80%"
    covers = compacted["covers"]
    inside = [m for m in mapped if 2 <= m.offset <= 3]
    assert covers == {"first_offset": 2, "last_offset": 3, "events": len(inside), "from_page": inside[0].cursor}
    assert [m.data["type"] for m in inside] == ["span.model_request_start", "agent.message", "span.model_request_end"]
