"""Live streaming outside history: the model activity streams from the (scripted) Messages API
and publishes deltas to the relay (`da serve`, run here as a process), which serves a
session as Server-Sent Events to `da follow` and any SSE client.

The harness worker of these tests runs in-process on its own task queue, publishing to the
relay; sandbox tools use the shared in-process sandbox workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import select
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from httpx_sse import aconnect_sse
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from durable_agents.activities.model import ModelActivities
from durable_agents.client import start_agent_session
from durable_agents.contracts import APPROVE, LiveDelta, SessionResult, Subagent
from durable_agents.live.publisher import DeltaPublisher
from durable_agents.live.relay import Cursor, SessionFeed, _Call
from durable_agents.testing.scripted_model import ScriptedError, ScriptedModelServer, Step, ToolUse
from durable_agents.worker import HARNESS_WORKFLOWS, WORKFLOW_RUNNER
from tests.helpers import DA, add_scenario, coder, free_port, serve, state_of, wait_for

ROOT = Path(__file__).resolve().parent.parent
LONG = " ".join(f"word{i:03d}" for i in range(40))  # 319 characters


def slow_text(text: str = LONG, chunk: int = 8, delay_ms: int = 15, **step: Any) -> Step:
    return Step(text=text, stream_chunk=chunk, stream_delay_ms=delay_ms, **step)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_url(address: str) -> Iterator[str]:
    """`da serve` as a process, as deployed."""
    with serve(address) as url:
        yield url


@dataclass
class Harness:
    queue: str
    model: ModelActivities


async def _harness(client: Client, scripted: ScriptedModelServer, publisher: DeltaPublisher) -> AsyncIterator[Harness]:
    queue = f"streaming-{uuid.uuid4().hex[:8]}"
    model_client = anthropic.AsyncAnthropic(api_key="test-key", base_url=scripted.url, max_retries=0)
    model = ModelActivities(client, model_client, publisher)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=HARNESS_WORKFLOWS,
        activities=[model.call_model],
        workflow_runner=WORKFLOW_RUNNER,
    )
    async with worker:
        yield Harness(queue, model)
    await publisher.close()


@pytest.fixture(scope="module")
async def harness(client: Client, scripted: ScriptedModelServer, live_url: str) -> AsyncIterator[Harness]:
    """A harness worker on its own queue whose model calls publish to the relay."""
    async for h in _harness(client, scripted, DeltaPublisher(live_url)):
        yield h


async def start(client: Client, harness: Harness, task: str, agent: Any = None) -> Any:
    return await start_agent_session(client, agent or coder(), task, one_shot=True, task_queue=harness.queue)


async def starter(address: str, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "DA_LIVE_URL"}
    return await asyncio.create_subprocess_exec(
        str(DA),
        *args,
        cwd=ROOT,
        env={**env, "TEMPORAL_ADDRESS": address},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run(address: str, *args: str) -> tuple[int, str, str]:
    proc = await starter(address, *args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


def parse_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def check_log(lines: list[dict[str, Any]], session: str) -> list[dict[str, Any]]:
    """The durable events of `session` in a follow --json output: offsets 0..n, each once, with ids."""
    events = [x for x in lines if x["type"] == "event" and x["session"] == session]
    assert [e["offset"] for e in events] == list(range(len(events))), "durable events missing or repeated"
    assert all(e["id"] == str(e["offset"]) and e["received_at"] > 0 for e in events)
    return events


def deltas_of(lines: list[dict[str, Any]], session: str, offset: int) -> list[dict[str, Any]]:
    return [x for x in lines if x["type"] == "delta" and x["session"] == session and x["offset"] == offset]


def text_of(deltas: list[dict[str, Any]]) -> str:
    return "".join(d["text"] for d in deltas if d["kind"] == "text")


def assert_contiguous(deltas: list[dict[str, Any]]) -> None:
    """One attempt's deltas: seq 0, 1, 2 ... each once, and SSE ids that say so."""
    assert [d["seq"] for d in deltas] == list(range(len(deltas))), "deltas missing or repeated"
    assert all(d["id"] == f"{d['offset']}.{d['attempt']}.{d['seq']}" for d in deltas)


# --- SSE client ---------------------------------------------------------------------------------


@dataclass
class Sse:
    event: str
    id: str
    data: dict[str, Any]
    at: float


async def read_sse(
    url: str,
    *,
    until: Callable[[list[Sse]], bool],
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> list[Sse]:
    """Read the stream until `until(received)` holds (or it ends), then drop the connection."""
    got: list[Sse] = []
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as http,
        aconnect_sse(http, "GET", url, headers=headers or {}, params=params) as source,
    ):
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            got.append(Sse(sse.event, sse.id, json.loads(sse.data), time.time()))
            if until(got) or sse.event == "end":
                break
    return got


def durable(got: list[Sse]) -> list[dict[str, Any]]:
    return [s.data for s in got if s.event == "event"]


def deltas(got: list[Sse]) -> list[dict[str, Any]]:
    return [{**s.data, "id": s.id} for s in got if s.event == "delta"]


async def relay_holds(live_url: str, session_id: str, at_least: int) -> bool:
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{live_url}/sessions/{session_id}")).json()
    return bool(body["live_call"]) and body["live_call"]["deltas"] >= at_least


# --- pure parts ---------------------------------------------------------------------------------


def test_sse_ids_parse_into_cursors_and_bad_ones_are_refused() -> None:
    assert Cursor.parse(None, None) == Cursor(0)
    assert Cursor.parse(None, "7") == Cursor(7)
    assert Cursor.parse("41", "3") == Cursor(42)  # a reconnect's Last-Event-ID wins over ?from
    assert Cursor.parse("41.2.17", None) == Cursor(41, (2, 17))
    for bad_id in ("x", "41.2", "41.0.3", "-1", "4 1", "41.2.17.1"):
        with pytest.raises(ValueError, match="Last-Event-ID"):
            Cursor.parse(bad_id, None)
    for bad_from in ("-1", "abc", "1.5", ""):
        with pytest.raises(ValueError, match="from="):
            Cursor.parse(None, bad_from)


def _delta(offset: int, attempt: int, seq: int, kind: str = "text") -> LiveDelta:
    return LiveDelta(session="s", offset=offset, attempt=attempt, seq=seq, kind=kind, at=0.0, index=0, text=str(seq))  # type: ignore[arg-type]


def test_a_feed_keeps_the_newest_attempt_of_each_call_until_its_event_is_out() -> None:
    feed = SessionFeed(relay=None, session_id="s")  # type: ignore[arg-type]
    assert all(feed.add(_delta(5, 1, i)) for i in range(3))
    assert not feed.add(_delta(5, 1, 1))  # repeated
    assert feed.add(_delta(5, 2, 0))  # a retry: the call starts again
    assert not feed.add(_delta(5, 1, 3))  # the earlier attempt is over
    assert [d.seq for d in feed.calls[5].deltas] == [0]
    assert feed.add(_delta(7, 1, 0))  # the next call may begin before the last deltas of this one
    assert feed.add(_delta(5, 2, 1, "end"))
    assert [d.seq for d in feed.calls[5].deltas] == [0, 1] and feed.newest_call() is feed.calls[7]
    feed.known = 6
    assert not feed.add(_delta(5, 2, 2))  # its event is out: too late
    assert all(feed.add(_delta(o, 1, 0)) for o in range(8, 20))
    assert sorted(feed.calls) == list(range(12, 20))  # bounded: the newest calls


def test_a_call_gives_what_a_client_has_not_had() -> None:
    call = _Call(5, 2)
    call.deltas = [_delta(5, 2, i) for i in range(4)]
    assert [d.seq for d in call.after(None)] == [0, 1, 2, 3]
    assert [d.seq for d in call.after((2, 1))] == [2, 3]
    assert [d.seq for d in call.after((1, 9))] == [0, 1, 2, 3]  # the client saw the failed attempt
    assert call.after((2, 3)) == []


async def test_the_publisher_never_blocks_and_drops_what_it_cannot_send() -> None:
    dead = DeltaPublisher(f"http://127.0.0.1:{free_port()}", max_pending=5, retry_after_s=60)
    call = dead.call("s", 3, 1)
    assert call is not None
    for _ in range(8):
        call.text(0, "x")  # returns at once: nothing is awaited
    assert dead.dropped == 3  # over the bound

    async def all_dropped() -> bool:
        return dead.dropped == 8

    await wait_for(all_dropped, within_s=10, what="the batch to the dead relay to be dropped")
    call.text(0, "y")  # the relay is down: dropped at once, not queued
    assert dead.dropped == 9 and dead.published == 0
    await dead.close()
    closed = DeltaPublisher(f"http://127.0.0.1:{free_port()}")
    await closed.close()
    late = closed.call("s", 4, 1)
    assert late is not None
    late.text(0, "z")  # a call still streaming after the close: dropped, no task started to outlive it
    assert closed.dropped == 1 and closed._task is None
    assert DeltaPublisher(None).call("s", 3, 1) is None  # no relay configured: nothing is published
    assert DeltaPublisher("http://x").call("s", None, 1) is None  # a workflow that predates streaming
    with pytest.raises(ValueError):
        DeltaPublisher("http://x", batch_every_s=-1)


# --- through the relay --------------------------------------------------------------------------


def approving() -> Any:
    return coder().model_copy(update={"policies": {"bash": "always_ask"}})


async def gated_follows(
    address: str, client: Client, handle: Any, *follows: tuple[str, ...]
) -> list[tuple[int, str, str]]:
    """Run `follow` processes that are connected before the session goes on: the session waits
    for an approval, each follower shows it, then it is approved. Returns (code, stdout, stderr)."""

    async def waiting() -> bool:
        return (await state_of(client, handle.id)).status == "waiting"

    await wait_for(waiting, within_s=60, what="the approval request")
    procs = [await starter(address, "follow", handle.id, *args) for args in follows]
    seen: list[list[bytes]] = []
    for proc in procs:
        assert proc.stdout is not None
        lines: list[bytes] = []
        while not lines or b"approval_requested" not in lines[-1]:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, "follow ended early"
            lines.append(line)
        seen.append(lines)
    for call in (await state_of(client, handle.id)).awaiting_approval:
        await handle.execute_update(APPROVE, call.id, result_type=int)
    results = []
    for proc, lines in zip(procs, seen, strict=True):
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        results.append((proc.returncode or 0, b"".join(lines).decode() + out.decode(), err.decode()))
    return results


@pytest.mark.usefixtures("workers")  # sandbox workers for the tools
async def test_deltas_reach_follow_before_the_turn_and_add_up_to_it(
    address: str, client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo hi"})),  # waits for approval
            slow_text("Now the notes.", tool_use=ToolUse(name="read_file", input={"path": "notes.txt"})),
            slow_text(),
        ],
    )
    handle = await start(client, harness, f"Look. {marker}", approving())
    ((code, out, err),) = await gated_follows(address, client, handle, ("--json", "--server", live_url))
    assert code == 0, err
    assert "token streaming needs" not in err
    lines = parse_lines(out)
    events = check_log(lines, handle.id)
    assert events[-1]["kind"] == "status" and events[-1]["status"] == "done"
    turns = [e for e in events if e["kind"] == "model_turn"]
    assert [t["text"] for t in turns] == [None, "Now the notes.", LONG]
    for turn in turns[1:]:  # those made while follow was connected
        streamed = deltas_of(lines, handle.id, turn["offset"])
        assert_contiguous(streamed)
        assert {d["attempt"] for d in streamed} == {1}
        assert streamed[0]["kind"] == "start" and streamed[-1]["kind"] == "end"
        assert text_of(streamed) == turn["text"]  # the deltas add up to the recorded turn
        assert lines.index(streamed[-1]) < lines.index(turn)  # and all came before it
        assert all(d["received_at"] <= turn["received_at"] for d in streamed)
    tools = [d for d in deltas_of(lines, handle.id, turns[1]["offset"]) if d["kind"] == "tool_use"]
    assert [(d["name"], d["tool_use_id"]) for d in tools] == [("read_file", turns[1]["tool_calls"][0]["id"])]
    # Deltas only for model calls whose event came later; none for other events.
    assert {d["offset"] for d in lines if d["type"] == "delta"} == {t["offset"] for t in turns[1:]}


async def test_a_late_client_gets_the_retained_events_then_the_live_ones(
    client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    marker = add_scenario(scripted, [slow_text(chunk=4, delay_ms=25)])  # 80 deltas over 2 s
    handle = await start(client, harness, f"Talk slowly. {marker}")
    await wait_for(lambda: relay_holds(live_url, handle.id, 10), within_s=30, what="deltas at the relay")
    connected = time.time()
    got = await read_sse(f"{live_url}/sessions/{handle.id}/events", until=lambda got: False)
    assert got[-1].event == "end" and got[-1].data["status"] == "done"
    events, streamed = durable(got), deltas(got)
    assert [e["offset"] for e in events] == list(range(len(events)))
    turn = next(e for e in events if e["kind"] == "model_turn")
    assert all(d["offset"] == turn["offset"] for d in streamed)
    assert_contiguous(streamed)  # from seq 0: the retained ones first
    assert text_of(streamed) == turn["text"] == LONG
    assert streamed[5]["at"] < connected < streamed[-1]["at"]  # some were retained, some came live
    kinds = [s.event for s in got]
    assert kinds.index("delta") > [e["offset"] for e in events].index(turn["offset"] - 1)  # events before the call
    assert max(i for i, k in enumerate(kinds) if k == "delta") < kinds.index("event", kinds.index("delta"))


async def test_a_reconnect_with_last_event_id_has_no_gap_and_no_duplicate(
    client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    marker = add_scenario(scripted, [slow_text(chunk=4, delay_ms=25)])
    handle = await start(client, harness, f"Talk slowly. {marker}")
    url = f"{live_url}/sessions/{handle.id}/events"
    first = await read_sse(url, until=lambda got: len(deltas(got)) >= 10)  # in the middle of the deltas
    last_id = first[-1].id
    assert re.fullmatch(r"\d+\.1\.\d+", last_id)
    second = await read_sse(url, headers={"Last-Event-ID": last_id}, until=lambda got: False)
    assert second[-1].event == "end"
    events = durable(first) + durable(second)
    assert [e["offset"] for e in events] == list(range(len(events)))
    streamed = [{**d, "id": d["id"]} for d in deltas(first) + deltas(second)]
    assert_contiguous(streamed)
    assert text_of(streamed) == LONG
    # At a durable event: what follows it, nothing before.
    at = await read_sse(url, headers={"Last-Event-ID": "1"}, until=lambda got: False)
    assert [e["offset"] for e in durable(at)] == list(range(2, len(events)))
    assert deltas(at) == []  # the call's event is recorded: it stands for its deltas
    again = await read_sse(url, params={"from": "2"}, until=lambda got: False)
    assert durable(again) == durable(at)


class CuttingProxy:
    """A TCP proxy that can drop every connection through it: a network that fails."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()


async def test_follow_reconnects_after_a_dropped_connection_and_misses_nothing(
    address: str, client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    marker = add_scenario(scripted, [slow_text(chunk=4, delay_ms=25)], delay_ms=500)
    handle = await start(client, harness, f"Talk slowly. {marker}")
    async with CuttingProxy(int(live_url.rsplit(":", 1)[1])) as proxy:
        proc = await starter(address, "follow", handle.id, "--json", "--server", f"http://127.0.0.1:{proxy.port}")
        assert proc.stdout is not None
        lines: list[dict[str, Any]] = []
        while len([x for x in lines if x["type"] == "delta"]) < 10:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, "follow ended early"
            lines.append(json.loads(line))
        proxy.cut()  # in the middle of the deltas
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    lines += parse_lines(out.decode())
    assert proxy.connections >= 3  # /health, the stream, the stream again
    events = check_log(lines, handle.id)
    turn = next(e for e in events if e["kind"] == "model_turn")
    streamed = deltas_of(lines, handle.id, turn["offset"])
    assert_contiguous(streamed)
    assert text_of(streamed) == turn["text"] == LONG


@pytest.mark.usefixtures("workers")
async def test_a_call_dropped_mid_stream_is_retried_and_its_text_is_recorded_once(
    address: str, client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "true"})),  # waits for approval
            Step(error=ScriptedError(fault="drop"), then=slow_text(chunk=4, delay_ms=10)),
        ],
    )
    handle = await start(client, harness, f"Drop it. {marker}", approving())
    as_json, as_lines = await gated_follows(
        address, client, handle, ("--json", "--server", live_url), ("--server", live_url)
    )
    assert as_json[0] == 0 and as_lines[0] == 0, as_json[2] + as_lines[2]
    lines = parse_lines(as_json[1])
    events = check_log(lines, handle.id)
    turns = [e for e in events if e["kind"] == "model_turn"]
    assert [t["text"] for t in turns] == [None, LONG]  # recorded once
    streamed = deltas_of(lines, handle.id, turns[1]["offset"])
    failed = [d for d in streamed if d["attempt"] == 1]
    retried = [d for d in streamed if d["attempt"] == 2]
    assert failed and retried and streamed == failed + retried  # the retry came after, and starts again
    assert_contiguous(failed)
    assert_contiguous(retried)
    assert 0 < len(text_of(failed)) < len(LONG) and LONG.startswith(text_of(failed))
    assert failed[-1]["kind"] == "text"  # the dropped attempt never ended
    assert text_of(retried) == LONG
    plain = as_lines[1].splitlines()
    assert any("model call retried, attempt 2: its answer starts again" in line for line in plain)
    assert sum(1 for line in plain if "model_turn" in line and "word000" in line) == 1


@pytest.mark.usefixtures("workers")
async def test_streaming_and_following_add_nothing_to_history(
    client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    # The answer streams for a few seconds: the follower attaches while it does (the relay streams
    # a model call in progress, not one that has ended).
    steps = [slow_text("Looking.", tool_use=ToolUse(name="bash", input={"command": "true"})), slow_text(delay_ms=60)]

    async def history_of(h: Harness, followed: bool) -> list[int]:
        marker = add_scenario(scripted, steps)
        handle = await start(client, h, f"Compare. {marker}")
        if followed:
            got = await read_sse(f"{live_url}/sessions/{handle.id}/events", until=lambda got: False)
            assert deltas(got), "nothing streamed"
        result: SessionResult = await handle.result()
        assert result.answer == LONG
        history = await handle.fetch_history()
        return [e.event_type for e in history.events]

    streamed = await history_of(harness, followed=True)
    async for quiet in _harness(client, scripted, DeltaPublisher(None)):
        plain = await history_of(quiet, followed=False)
    assert streamed == plain  # the same history, event for event, as without streaming
    assert not {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    } & set(streamed)


async def test_a_session_completes_normally_with_the_relay_down(
    address: str, client: Client, scripted: ScriptedModelServer
) -> None:
    publisher = DeltaPublisher(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    marker = add_scenario(scripted, [slow_text(delay_ms=2), Step(text="second")])
    async for h in _harness(client, scripted, publisher):
        handle = await start(client, h, f"Nobody listens. {marker}")
        result: SessionResult = await asyncio.wait_for(handle.result(), timeout=60)
        assert result.status == "done" and result.answer == LONG
        assert publisher.published == 0 and publisher.dropped > 0
        code, out, err = await run(address, "follow", handle.id)  # no server: durable events from Temporal
    assert code == 0
    assert "token streaming needs `da serve`" in err
    assert "model_turn" in out and "word000" in out and out.strip().splitlines()[-1].endswith("done")


async def test_follow_falls_back_to_temporal_when_the_server_does_not_answer(
    address: str, client: Client, scripted: ScriptedModelServer, harness: Harness
) -> None:
    marker = add_scenario(scripted, [Step(text="plain answer")])
    handle = await start(client, harness, f"Fallback. {marker}")
    await handle.result()
    code, out, err = await run(address, "follow", handle.id, "--json", "--server", f"http://127.0.0.1:{free_port()}")
    assert code == 0
    assert "does not answer" in err and "token streaming needs" in err
    lines = parse_lines(out)
    assert check_log(lines, handle.id)[-1]["status"] == "done"
    assert not [x for x in lines if x["type"] == "delta"]


async def test_bad_inputs_get_clear_errors(
    address: str, live_url: str, client: Client, harness: Harness, scripted: ScriptedModelServer
) -> None:
    marker = add_scenario(scripted, [Step(text="ok")])
    handle = await start(client, harness, f"Errors. {marker}")
    await handle.result()
    async with httpx.AsyncClient() as http:
        unknown = await http.get(f"{live_url}/sessions/session-nope/events")
        assert unknown.status_code == 404 and unknown.json() == {"error": "no session 'session-nope'"}
        assert (await http.get(f"{live_url}/sessions/session-nope")).status_code == 404
        for params, headers, words in (
            ({"from": "-1"}, {}, "from='-1'"),
            ({"from": "abc"}, {}, "whole number"),
            ({"from": "999"}, {}, "past the end of the log"),
            ({}, {"Last-Event-ID": "2.x"}, "not an id of this stream"),
            ({}, {"Last-Event-ID": "999.1.0"}, "past the end of the log"),
        ):
            bad = await http.get(f"{live_url}/sessions/{handle.id}/events", params=params, headers=headers)
            assert bad.status_code == 400 and words in bad.json()["error"], bad.text
        post = await http.post(f"{live_url}/live/deltas", json={"deltas": [{"session": "s"}]})
        assert post.status_code == 400 and "not a batch of deltas" in post.json()["error"]
        state = (await http.get(f"{live_url}/sessions/{handle.id}")).json()
        assert state["state"]["status"] == "done" and state["live_call"] is None
    code, _, err = await run(address, "follow", "session-nope", "--server", live_url)
    assert code == 2 and "no session 'session-nope'" in err
    code, _, err = await run(address, "follow", "session-nope")
    assert code == 2 and "no session 'session-nope'" in err
    code, _, err = await run(address, "follow", handle.id, "--from", "999", "--server", live_url)
    assert code == 2 and "past the end of the log" in err
    code, _, err = await run(address, "follow", handle.id, "--from", "999")  # without a server, the same
    assert code == 2 and "past the end of the log" in err
    code, _, err = await run(address, "follow", handle.id, "--from", "-1")
    assert code == 2 and "offsets start at 0" in err


@pytest.mark.usefixtures("workers")
async def test_subagents_stream_nested_under_their_parent(
    address: str, client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    child_text = "line one of the child\nline two of the child\nthe last line"
    # Slow enough that `follow` (which starts watching the child when it reads the parent's
    # subagent_started, one poll later) joins while the child still streams: a late follower gets
    # the durable event, not the deltas that came before it.
    child = add_scenario(scripted, [slow_text(child_text, chunk=5, delay_ms=60)])
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "true"})),  # waits for approval
            Step(tool_use=ToolUse(name="spawn_agent", input={"agent": "helper", "task": f"Help. {child}"})),
            Step(text="parent done"),
        ],
    )
    agent = approving().model_copy(update={"subagents": [Subagent(name="helper", spec=coder())]})
    handle = await start(client, harness, f"Delegate. {marker}", agent)
    as_json, as_lines = await gated_follows(
        address, client, handle, ("--json", "--server", live_url), ("--server", live_url)
    )
    assert as_json[0] == 0 and as_lines[0] == 0, as_json[2] + as_lines[2]
    lines = parse_lines(as_json[1])
    child_id = f"{handle.id}/sub-1"
    assert check_log(lines, child_id)[-1]["status"] == "done"  # the child's log, whole, in the same output
    check_log(lines, handle.id)
    child_turn = next(
        x for x in lines if x["type"] == "event" and x["session"] == child_id and x["kind"] == "model_turn"
    )
    streamed = deltas_of(lines, child_id, child_turn["offset"])
    assert_contiguous(streamed)
    assert text_of(streamed) == child_turn["text"] == child_text
    nested = [line for line in as_lines[1].splitlines() if line.startswith("    ↳ sub-1 ")]
    assert [line.split("streaming", 1)[1].strip() for line in nested if " streaming " in line] == [
        "line one of the child",
        "line two of the child",
    ]  # whole lines as they complete; the last one comes with the turn's own line
    assert any("model_turn" in line and "line one of the child" in line for line in nested)


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")


def _read_terminal(fd: int, until: Callable[[str], bool], within_s: float) -> str:
    """What a terminal shows (escape codes removed), read until `until` holds or the program exits."""
    raw = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the program exited and closed the terminal
                break
            if not chunk:
                break
            raw += chunk
            if until(ANSI.sub("", raw.decode(errors="replace"))):
                break
    return ANSI.sub("", raw.decode(errors="replace"))


@pytest.mark.usefixtures("workers")
async def test_follow_in_a_terminal_shows_tokens_approvals_and_progress(
    address: str, client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    marker = add_scenario(
        scripted, [Step(text="May I?", tool_use=ToolUse(name="bash", input={"command": "true"})), slow_text()]
    )
    handle = await start(client, harness, f"In a terminal. {marker}", approving())

    async def waiting() -> bool:
        return (await state_of(client, handle.id)).status == "waiting"

    await wait_for(waiting, within_s=60, what="the approval request")
    (call,) = (await state_of(client, handle.id)).awaiting_approval
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "DA_LIVE_URL"}
    proc = await asyncio.create_subprocess_exec(
        str(DA),
        "follow",
        handle.id,
        "--server",
        live_url,
        cwd=ROOT,
        env={**env, "TEMPORAL_ADDRESS": address, "COLUMNS": "160", "LINES": "50", "TERM": "xterm-256color"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    command = f"da approve {handle.id} {call.id}"
    before = await asyncio.to_thread(_read_terminal, controller, lambda s: command in s, 60)
    assert command in before and f"da deny {handle.id} {call.id}" in before  # the approval, and how
    assert "waiting · turn 1" in before  # the progress line
    await handle.execute_update(APPROVE, call.id, result_type=int)
    after = await asyncio.to_thread(_read_terminal, controller, lambda s: False, 60)
    await asyncio.wait_for(proc.wait(), timeout=30)
    os.close(controller)
    assert proc.returncode == 0, after
    assert " streaming" in after  # the live area showed the call as it streamed
    assert "word000 word001" in after and "word039" in after  # and the turn was printed whole
    assert re.search(r"done · turn 2 · \d+ in / \d+ out tokens · \$\d+\.\d{4} · 0:00:\d\d elapsed", after)


async def test_a_session_id_used_again_is_followed_afresh(
    client: Client, scripted: ScriptedModelServer, harness: Harness, live_url: str
) -> None:
    session_id = f"reused-{uuid.uuid4().hex[:8]}"
    url = f"{live_url}/sessions/{session_id}/events"
    first = [Step(text="first answer")]
    second = [Step(tool_use=ToolUse(name="fly", input={})), Step(text="second answer")]  # a longer log
    for steps, texts in ((first, ["first answer"]), (second, [None, "second answer"])):
        marker = add_scenario(scripted, steps)
        handle = await start_agent_session(
            client, coder(), f"Again. {marker}", session_id=session_id, one_shot=True, task_queue=harness.queue
        )
        await handle.result()
        got = await read_sse(url, until=lambda got: False)
        assert got[-1].event == "end"
        events = durable(got)
        assert [e["text"] for e in events if e["kind"] == "model_turn"] == texts  # this session's, whole
        assert len(events) == (await state_of(client, session_id)).events
