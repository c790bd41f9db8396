"""Traces: a worker process with OpenTelemetry on (console exporter, then OTLP to a collector on
loopback) runs a session with a tool call and a subagent; its spans name the session, the model,
the tokens and the tool, and replayed workflow tasks emit nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from temporalio.client import Client

from durable_agents import telemetry
from durable_agents.client import session_events, start_agent_session
from durable_agents.contracts import SessionEvent, Subagent
from durable_agents.settings import Settings
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import CHAOS_NAMESPACE, DA, ROOT, add_scenario, coder, free_port, spawn, wait_for, with_subagents

Span = dict[str, Any]


def console_spans(log: Path) -> list[Span]:
    """The spans a console exporter printed (one JSON object a line) among the worker's log lines."""
    spans = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "context" in record and "name" in record:
            spans.append(record)
    return spans


def named(spans: list[Span], name: str, session_id: str | None = None) -> list[Span]:
    return [
        s
        for s in spans
        if s["name"] == name and (session_id is None or s["attributes"].get("temporalWorkflowID") == session_id)
    ]


def only(spans: list[Span], name: str, session_id: str) -> Span:
    found = named(spans, name, session_id)
    assert len(found) == 1, f"{len(found)} {name} spans of {session_id}, not 1 (emitted again on replay?)"
    return found[0]


async def run_traced_session(client: Client, scripted: ScriptedModelServer) -> tuple[str, list[SessionEvent]]:
    """A session that runs `bash`, spawns a subagent that runs `bash`, and answers."""
    child = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "echo child"})), Step(text="child done")]
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo traced"})),
            Step(tool_use=spawn("helper", f"Help. {child}")),
            Step(text="all done"),
        ],
    )
    agent = with_subagents(coder(), Subagent(name="helper", description="helps", spec=coder()))
    handle = await start_agent_session(client, agent, f"Trace me. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done" and result.answer == "all done"
    return handle.id, await session_events(client, handle.id)


def model_turns(events: list[SessionEvent]) -> list[SessionEvent]:
    return [e for e in events if e.kind == "model_turn"]


async def test_spans_name_session_model_tokens_and_tool_and_replays_emit_nothing_twice(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    # No workflow cache: every workflow task replays the session's history from the start, so a
    # span emitted during replay would show up once per task.
    worker_processes("--warm-pool", "0", env={"DA_OTEL_CONSOLE": "1", "HARNESS_MAX_CACHED_WORKFLOWS": "0"})
    session_id, events = await run_traced_session(chaos_client, scripted)
    child_id = f"{session_id}/sub-1"
    child_events = await session_events(chaos_client, child_id)
    log = tmp_path / "worker-0.log"
    spans: list[Span] = []

    async def exported() -> bool:
        spans[:] = console_spans(log)
        return len(named(spans, "RunWorkflow:SessionWorkflow", session_id)) > 0

    await wait_for(exported, within_s=30, what="the session's workflow span on the console")

    # Model calls: one span per call, with the session, the model and the tokens the session recorded.
    for sid, session in ((session_id, events), (child_id, child_events)):
        calls = sorted(
            (s for s in named(spans, "RunActivity:call_model") if s["attributes"].get("session.id") == sid),
            key=lambda s: s["start_time"],
        )
        turns = model_turns(session)
        assert len(calls) == len(turns) > 0, f"{sid}: {len(calls)} model-call spans for {len(turns)} model turns"
        for span, turn in zip(calls, turns, strict=True):
            a, usage = span["attributes"], turn.usage
            assert usage is not None
            assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic"
            assert a["gen_ai.request.model"] == "claude-sonnet-5-5" and a["gen_ai.response.model"] == turn.model
            assert a["gen_ai.conversation.id"] == sid
            assert a["gen_ai.usage.output_tokens"] == usage.output_tokens > 0
            assert (
                a["gen_ai.usage.input_tokens"]
                == usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
                > 0
            )
            assert a["gen_ai.usage.cache_read.input_tokens"] == usage.cache_read_input_tokens
            assert a["gen_ai.response.finish_reasons"] == [turn.stop_reason]
            # Under it, the anthropic SDK's own span of the API call (the SDK's spans are on
            # because the worker traces).
            sdk = [
                s
                for s in named(spans, "anthropic.messages.create")
                if s["parent_id"] == span["context"]["span_id"]
            ]
            assert len(sdk) == 1, f"{sid}: {len(sdk)} SDK spans under a model call, not 1"

    # Tool runs: one span per call (a session's first, with its provisioning), with the session,
    # the tool's name and the call id.
    runs = named(spans, "RunActivity:provision_and_execute") + named(spans, "RunActivity:execute")
    tools = [s for s in runs if s["attributes"].get("session.id") in (session_id, child_id)]
    by_session = {
        sid: [s["attributes"] for s in tools if s["attributes"]["session.id"] == sid] for sid in (session_id, child_id)
    }
    for sid, session in ((session_id, events), (child_id, child_events)):
        bash_calls = [c for e in session if e.kind == "model_turn" for c in e.tool_calls or [] if c.name == "bash"]
        assert sorted((a["gen_ai.tool.name"], a["gen_ai.tool.call.id"]) for a in by_session[sid]) == sorted(
            ("bash", c.id) for c in bash_calls
        ), f"{sid}: tool spans"
        assert all(a["gen_ai.operation.name"] == "execute_tool" for a in by_session[sid])

    # Workflow spans, each once although every task replayed: the run, and one span per activity
    # and child the workflow started, all in one trace with the child session under its parent.
    parent_run = only(spans, "RunWorkflow:SessionWorkflow", session_id)
    child_run = only(spans, "RunWorkflow:SessionWorkflow", child_id)
    start_child = only(spans, "StartChildWorkflow:SessionWorkflow", session_id)
    starts = named(spans, "StartActivity:call_model", session_id)
    assert len(starts) == len(model_turns(events)) == 3, f"{len(starts)} StartActivity:call_model spans, not 3"
    trace_id = parent_run["context"]["trace_id"]
    assert {s["context"]["trace_id"] for s in [*starts, start_child, child_run, *tools]} == {trace_id}
    assert child_run["parent_id"] == start_child["context"]["span_id"]
    start_ids = {s["context"]["span_id"] for s in starts}
    parent_calls = [s for s in named(spans, "RunActivity:call_model") if s["attributes"]["session.id"] == session_id]
    assert {s["parent_id"] for s in parent_calls} == start_ids
    assert parent_run["resource"]["attributes"]["service.name"] == "durable-agents"


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: decodes each export request's protobuf body."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append({"path": self.path, **MessageToDict(request)})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def otlp_attributes(item: dict[str, Any]) -> dict[str, Any]:
    """{"key": k, "value": {"stringValue": v}} pairs as {k: v} (int64 values stay strings in JSON)."""
    return {a["key"]: next(iter(a["value"].values())) for a in item.get("attributes", [])}


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def received_spans(received: list[dict[str, Any]]) -> list[Span]:
    """Every span the collector was sent, flattened: name, ids, service, request path, attributes."""
    spans = []
    for request in received:
        for resource_spans in request.get("resourceSpans", []):
            service = otlp_attributes(resource_spans["resource"])["service.name"]
            for scope in resource_spans.get("scopeSpans", []):
                for span in scope.get("spans", []):
                    spans.append(
                        {
                            "name": span["name"],
                            "trace": span["traceId"],
                            "id": span["spanId"],
                            "parent": span.get("parentSpanId"),
                            "service": service,
                            "path": request["path"],
                            "attributes": otlp_attributes(span),
                        }
                    )
    return spans


async def test_the_cli_and_a_worker_export_one_trace_to_an_otlp_collector(
    address: str,
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    collector: tuple[str, list[dict[str, Any]]],
) -> None:
    endpoint, received = collector
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "agents-test",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    worker_processes("--warm-pool", "0", env=otel)
    marker = add_scenario(scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "true"})), Step(text="ok")])
    # The CLI exports its own span as it exits (os._exit skips the exit hooks).
    cli = await asyncio.create_subprocess_exec(
        str(DA),
        *("start", "--agent", "agents/coder.yaml", "--one-shot", "--wait", f"Export me. {marker}"),
        cwd=ROOT,
        env={**os.environ, **otel, "TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": CHAOS_NAMESPACE},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(cli.communicate(), timeout=120)
    assert cli.returncode == 0, err.decode()
    session_id, answer = out.decode().split("\n", 1)
    assert answer.strip() == "ok"

    def of_session() -> dict[str, Span]:
        return {
            s["name"]: s
            for s in received_spans(received)
            if session_id in (s["attributes"].get("session.id"), s["attributes"].get("temporalWorkflowID"))
        }

    wanted = {"StartWorkflow:SessionWorkflow", "RunWorkflow:SessionWorkflow", "RunActivity:call_model"}
    wanted |= {"RunActivity:provision_and_execute"}  # the one bash call, with its provisioning

    async def arrived() -> bool:
        return wanted <= set(of_session())

    await wait_for(arrived, within_s=30, what="the session's spans at the collector")
    spans = of_session()
    model = spans["RunActivity:call_model"]["attributes"]
    tool = spans["RunActivity:provision_and_execute"]["attributes"]
    assert model["gen_ai.request.model"] == "claude-sonnet-5-5" and int(model["gen_ai.usage.output_tokens"]) > 0
    assert tool["gen_ai.tool.name"] == "bash" and tool["session.id"] == session_id
    # One trace from the CLI's start down to the tool run (queries, like `--wait`'s, are their own).
    started, run = spans["StartWorkflow:SessionWorkflow"], spans["RunWorkflow:SessionWorkflow"]
    assert run["parent"] == started["id"]
    session_trace = {n: s["trace"] for n, s in spans.items() if "Query" not in n}
    assert set(session_trace.values()) == {started["trace"]}, session_trace
    assert {s["service"] for s in spans.values()} == {"agents-test"}
    assert {s["path"] for s in spans.values()} == {"/v1/traces"}


def test_tracing_is_off_unless_configured() -> None:
    off = Settings(otel_endpoint=None, otel_traces_endpoint=None, otel_console=False, otel_sdk_disabled=None)
    assert telemetry.plugins(off) == []
    assert not telemetry.enabled(off.model_copy(update={"otel_console": True, "otel_sdk_disabled": "true"}))
    grpc = off.model_copy(update={"otel_endpoint": "http://127.0.0.1:4318", "otel_protocol": "grpc"})
    with pytest.raises(ValueError, match="only 'http/protobuf'"):
        telemetry._processors(grpc)
