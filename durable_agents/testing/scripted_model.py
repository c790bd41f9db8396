"""A scripted, Anthropic-compatible Messages API server on loopback.

It plays a scenario: the response to a request is the scenario's step number N, where N is the
number of assistant turns already in the request's messages. That makes it stateless across
retries, worker crashes and concurrent sessions. It records every request it gets (headers
without credentials) so tests can check what the model was sent, and serves both the JSON
and the streaming (server-sent events) forms of `POST /v1/messages`.

Scenario file (YAML):

    name: coder-demo
    match: "fibonacci"          # optional: used when the first user message contains this
    delay_ms: 0                 # optional latency of every response
    stream_chunk: 16            # optional: characters per text delta when the client streams
    stream_delay_ms: 0          # optional: pause between streamed text deltas
    steps:
      - text: "I'll write it."  # optional text block
        tool_use: {name: bash, input: {command: "ls"}}   # or tool_uses: [...]
      - error: {status: 429, message: "slow down", retry_after: 1, times: 1}
      - text: "Done. The output was: {last_tool_result}"
      - tool_use: {name: load_skill, input: {name: "a-{n}"}}
        repeat: 100             # this step 100 times ({n}: 0..99 in its text and input)

Streamed text deltas are sent as they are made (chunked transfer encoding), each stamped with
the time it left (`ScriptedModel.chunks`, `GET /_scripted/chunks`) so latency can be measured
downstream. The faults `drop`, `malformed` and `event` break a streamed answer in its middle.

A request that ends with the harness's compaction instruction is answered with a summary that
keeps the first user message (so the scenario still matches) and how many assistant turns it
replaced (so the step numbers go on where they were).

    python -m durable_agents.testing.scripted_model --port 8765 [SCENARIO.yaml ...]

Without files it plays the scenarios shipped in `durable_agents/testing/scenarios/` (the demo's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from durable_agents.contracts import COMPACTION_INSTRUCTION
from durable_agents.testing import scenario_files

COMPACTION_PREFIX = COMPACTION_INSTRUCTION.split("]")[0] + "]"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolUse(_Strict):
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ScriptedError(_Strict):
    # status: an HTTP error with an error body; drop: headers of a 200, part of the body, then the
    # connection is closed (a connection lost mid-response; when streaming, after half the text);
    # malformed: a 200 whose body is not JSON (when streaming, an event whose data is not JSON);
    # event: when streaming, half the text and then an `error` event (how the API reports an
    # overload that starts mid-answer); without streaming, the same as status.
    fault: Literal["status", "drop", "malformed", "event"] = "status"
    status: int = 500
    type: str = "api_error"
    message: str = "scripted error"
    retry_after: float | None = None
    times: int = 1  # how often this step fails (per conversation) before it answers


class Step(_Strict):
    text: str | None = None
    tool_use: ToolUse | None = None
    tool_uses: list[ToolUse] = Field(default_factory=list)
    # Content blocks sent as they are, after text and tool uses: any shape, well-formed or not
    # (a tool_use whose input is a string, one with no id, a block type nobody knows).
    raw_blocks: list[dict[str, Any]] = Field(default_factory=list)
    error: ScriptedError | None = None
    delay_ms: int | None = None
    stream_chunk: int | None = Field(default=None, ge=1, description="characters per streamed text delta")
    stream_delay_ms: int | None = Field(default=None, ge=0, description="pause between streamed text deltas")
    then: Step | None = None  # what the step answers once its error has been served
    repeat: int = Field(default=1, ge=1, description="the step this many times; {n} counts them from 0")

    def calls(self) -> list[ToolUse]:
        return ([self.tool_use] if self.tool_use else []) + self.tool_uses


class Scenario(_Strict):
    name: str
    match: str | None = None
    delay_ms: int = 0
    stream_chunk: int = Field(default=16, ge=1)
    stream_delay_ms: int = Field(default=0, ge=0)
    # The model's context window: a bigger request gets the API's 400 "prompt is too long".
    context_window: int | None = Field(default=None, ge=1)
    # What compaction requests are answered with (default: a summary; "": an empty one, a summariser that fails).
    summary: str | None = None
    steps: list[Step]

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))

    def step(self, index: int) -> Step:
        """Step `index`, counting a repeated step as that many steps."""
        for step in self.steps:
            if index < step.repeat:
                if step.repeat == 1:
                    return step
                data = json.loads(json.dumps(step.model_dump(exclude={"repeat"})).replace("{n}", str(index)))
                return Step.model_validate(data)
            index -= step.repeat
        return Step(text="(end of scripted scenario)")


@dataclass
class RecordedRequest:
    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Reply:
    """What the server answers one request with."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    fault: ScriptedError | None = None  # a 200 broken on the way (drop, malformed, event)
    stream_chunk: int = 16
    stream_delay_s: float = 0.0


@dataclass
class SentChunk:
    """A streamed text delta and when it left the server (Unix time)."""

    at: float
    message_id: str
    index: int  # of the content block
    text: str


_SECRET_HEADERS = {"x-api-key", "authorization", "cookie"}


def _first_user_text(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


SUMMARY_MARK = "[scripted summary: {turns} earlier assistant turns]"
_SUMMARY_RE = re.compile(r"\[scripted summary: (\d+) earlier assistant turns\]")


def _all_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "\n".join(parts)


_LEFT_OUT_RE = re.compile(r"Your (\d+) earlier turns \(session events")


def _summarised_turns(messages: list[dict[str, Any]]) -> int:
    """Assistant turns an earlier (scripted) summary, or the harness's note where it left turns
    out, stands for in this conversation."""
    first = _first_user_text(messages)
    found = _LEFT_OUT_RE.search(first) or _SUMMARY_RE.search(first)
    return int(found.group(1)) if found else 0


def _is_compaction(messages: list[dict[str, Any]]) -> bool:
    content = messages[-1].get("content")
    if not isinstance(content, list) or not content or not isinstance(content[-1], dict):
        return False
    return str(content[-1].get("text", "")).startswith(COMPACTION_PREFIX)


def _last_tool_result(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        content = message.get("content")
        if isinstance(content, list):
            for block in reversed(content):
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    inner = block.get("content")
                    if isinstance(inner, list):
                        return "".join(b.get("text", "") for b in inner if isinstance(b, dict))
                    return str(inner or "")
    return ""


@dataclass
class ScriptedModel:
    """The scenarios and what was asked of them; thread-safe."""

    scenarios: list[Scenario]
    requests: list[RecordedRequest] = field(default_factory=list)
    _errors_served: dict[tuple[str, int], int] = field(default_factory=dict)
    _cached_prefixes: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Streamed text deltas with the time each left, newest last (bounded).
    chunks: deque[SentChunk] = field(default_factory=lambda: deque(maxlen=100_000))

    def _cache_usage(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(input, cache read, cache write) tokens, estimated at 4 bytes a token, as a prompt cache
        would count them: the longest prefix an earlier request with breakpoints ended on is read."""
        clean = _without_cache_control({k: body.get(k) for k in ("system", "tools", "messages")})
        head, messages = [clean["system"], clean["tools"]], clean["messages"] or []

        def key(k: int) -> str:
            return hashlib.sha256(json.dumps([head, messages[:k]], sort_keys=True).encode()).hexdigest()

        total = max(1, len(json.dumps(clean)) // 4)
        if not _has_cache_control(body):
            return total, 0, 0
        with self._lock:
            hit = next((k for k in range(len(messages), 0, -1) if key(k) in self._cached_prefixes), 0)
            self._cached_prefixes.add(key(len(messages)))
        read = len(json.dumps([head, messages[:hit]])) // 4 if hit else 0
        return 1, read, max(0, total - read - 1)

    def scenario_for(self, messages: list[dict[str, Any]]) -> Scenario | None:
        first = _first_user_text(messages)
        for scenario in self.scenarios:
            if scenario.match and scenario.match in first:
                return scenario
        return next((s for s in self.scenarios if not s.match), None)

    def respond(self, body: dict[str, Any]) -> Reply:
        """The reply to one request (not yet sent)."""
        messages = body.get("messages") or []
        model = str(body.get("model", "scripted"))
        if not isinstance(messages, list) or not messages:
            return Reply(400, _error("invalid_request_error", "messages: at least one message is required"))
        scenario = self.scenario_for(messages)
        if scenario is None:
            return Reply(400, _error("invalid_request_error", "no scripted scenario matches this conversation"))
        index = sum(1 for m in messages if m.get("role") == "assistant") + _summarised_turns(messages)
        conversation = hashlib.sha256(_first_user_text(messages).encode()).hexdigest()[:16]
        if scenario.context_window is not None:
            size = len(json.dumps(_without_cache_control({k: body.get(k) for k in ("system", "tools", "messages")})))
            if size // 4 > scenario.context_window:
                tokens = f"{size // 4} tokens > {scenario.context_window} maximum"
                return Reply(400, _error("invalid_request_error", f"prompt is too long: {tokens}"))
        if _is_compaction(messages) and scenario.summary is not None:
            step = Step(text=scenario.summary)
        elif _is_compaction(messages):
            first = _first_user_text(messages)
            summary = _SUMMARY_RE.sub("", first).strip()
            summary = summary.split("\n", 1)[1] if summary.startswith("[Summary") else summary
            text = (
                f"The user asked: {summary.strip()[:2000]}\n"
                f"So far {len(messages)} messages, {len(_all_text(messages))} characters of text.\n"
                + SUMMARY_MARK.format(turns=index)
            )
            step = Step(text=text)
        else:
            step = scenario.step(index)
        delay = (step.delay_ms if step.delay_ms is not None else scenario.delay_ms) / 1000
        chunk = step.stream_chunk or scenario.stream_chunk
        chunk_delay = (step.stream_delay_ms if step.stream_delay_ms is not None else scenario.stream_delay_ms) / 1000
        fault: ScriptedError | None = None
        if step.error is not None:
            with self._lock:
                served = self._errors_served.get((conversation, index), 0)
                failing = served < step.error.times
                if failing:
                    self._errors_served[(conversation, index)] = served + 1
            if failing:
                fault = step.error
                if fault.fault == "status" or (fault.fault == "event" and not body.get("stream")):
                    headers = {}
                    if fault.retry_after is not None:
                        headers["retry-after"] = f"{fault.retry_after:g}"
                    return Reply(fault.status, _error(fault.type, fault.message), headers, delay)
            step = step.then or Step(text="(scripted step recovered from its error)")
        content: list[dict[str, Any]] = []
        if step.text is not None:
            content.append(
                {"type": "text", "text": step.text.replace("{last_tool_result}", _last_tool_result(messages).strip())}
            )
        for i, call in enumerate(step.calls()):
            tool_id = "toolu_" + hashlib.sha256(f"{conversation}/{index}/{i}".encode()).hexdigest()[:24]
            content.append({"type": "tool_use", "id": tool_id, "name": call.name, "input": call.input})
        content += step.raw_blocks
        if not content:
            content.append({"type": "text", "text": ""})
        input_tokens, cache_read, cache_write = self._cache_usage(body)
        message = {
            "id": f"msg_scripted_{conversation}_{index}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": max(1, len(json.dumps(content)) // 4),
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
            },
        }
        return Reply(200, message, {}, delay, fault=fault, stream_chunk=chunk, stream_delay_s=chunk_delay)

    def sent(self, message_id: str, index: int, text: str) -> None:
        self.chunks.append(SentChunk(at=time.time(), message_id=message_id, index=index, text=text))


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def _has_cache_control(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_has_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_cache_control(v) for v in value)
    return False


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _sse_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


@dataclass
class _Frame:
    payload: bytes
    text: tuple[int, str] | None = None  # a text delta: (block index, text)


def _sse_frames(message: dict[str, Any], chunk: int = 16) -> list[_Frame]:
    """The streaming form of a message, one frame per server-sent event."""
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 0}}
    out = [_Frame(_sse_event("message_start", {"message": start}))]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            out.append(
                _Frame(_sse_event("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}}))
            )
            text = block["text"]
            for j in range(0, len(text), chunk):
                piece = text[j : j + chunk]
                delta = {"index": i, "delta": {"type": "text_delta", "text": piece}}
                out.append(_Frame(_sse_event("content_block_delta", delta), text=(i, piece)))
        elif block["type"] == "tool_use":
            start_block = {**block, "input": {}}
            out.append(_Frame(_sse_event("content_block_start", {"index": i, "content_block": start_block})))
            if "input" in block:
                partial = json.dumps(block["input"])
                delta = {"index": i, "delta": {"type": "input_json_delta", "partial_json": partial}}
                out.append(_Frame(_sse_event("content_block_delta", delta)))
        else:  # a block type this server knows nothing of: sent whole in its start event
            out.append(_Frame(_sse_event("content_block_start", {"index": i, "content_block": block})))
        out.append(_Frame(_sse_event("content_block_stop", {"index": i})))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    out.append(
        _Frame(
            _sse_event("message_delta", {"delta": stop, "usage": {"output_tokens": message["usage"]["output_tokens"]}})
        )
    )
    out.append(_Frame(_sse_event("message_stop", {})))
    return out


def _fault_point(frames: list[_Frame]) -> int:
    """Where a streamed answer breaks: after half its text deltas (after message_start if none)."""
    texts = [i for i, f in enumerate(frames) if f.text is not None]
    return texts[len(texts) // 2] if texts else 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog is 5: a burst of sessions opening their connections at once would
    # overflow it, and the clients would see resets and 1 s SYN retransmits no real API causes.
    request_queue_size = 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model: ScriptedModel

    def setup(self) -> None:
        super().setup()
        # Without it, Nagle's algorithm meets the client's delayed ACKs: up to 200 ms a response.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("request-id", f"req_scripted_{int(time.time() * 1000)}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.startswith("/_scripted/requests"):
            data = [r.__dict__ for r in self.model.requests]
            self._send(200, json.dumps(data).encode(), "application/json", {})
        elif self.path.startswith("/_scripted/chunks"):
            chunks = [c.__dict__ for c in list(self.model.chunks)]
            self._send(200, json.dumps(chunks).encode(), "application/json", {})
        elif self.path == "/_scripted/health":
            self._send(200, b'{"ok": true}', "application/json", {})
        else:
            self._send(404, json.dumps(_error("not_found_error", self.path)).encode(), "application/json", {})

    def do_DELETE(self) -> None:  # noqa: N802
        if self.path.startswith("/_scripted/requests"):
            self.model.requests.clear()
            self._send(200, b"{}", "application/json", {})
        else:
            self._send(404, b"{}", "application/json", {})

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.time()
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.split("?")[0] != "/v1/messages":
            self._send(
                404, json.dumps(_error("not_found_error", f"no route {self.path}")).encode(), "application/json", {}
            )
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send(
                400, json.dumps(_error("invalid_request_error", "body is not JSON")).encode(), "application/json", {}
            )
            return
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in _SECRET_HEADERS}
        self.model.requests.append(RecordedRequest(at=arrived, path=self.path, headers=headers, body=body))
        reply = self.model.respond(body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        fault = reply.fault.fault if reply.fault is not None else None
        if body.get("stream") and reply.status == 200:
            self._stream(reply)
            return
        if fault == "drop":
            whole = json.dumps({"id": "msg_dropped", "type": "message", "content": []}).encode() * 4
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(whole)))
            self.end_headers()
            self.wfile.write(whole[: len(whole) // 3])
            self._cut()
            return
        if fault == "malformed":
            self._send(200, b'{"id": "msg_malformed", "type": "message", "content": [', "application/json", {})
            return
        self._send(reply.status, json.dumps(reply.body).encode(), "application/json", reply.headers)

    def _cut(self) -> None:
        """Close the connection in the middle of a response."""
        self.wfile.flush()
        self.close_connection = True
        self.request.shutdown(socket.SHUT_RDWR)

    def _stream(self, reply: Reply) -> None:
        """Server-sent events, each written as it is made (chunked), text deltas `stream_delay_s`
        apart; a fault breaks the stream half-way through its text."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", f"req_scripted_{int(time.time() * 1000)}")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        frames = _sse_frames(reply.body, reply.stream_chunk)
        cut = _fault_point(frames) if reply.fault is not None else len(frames)
        for frame in frames[:cut]:
            if frame.text is not None and reply.stream_delay_s:
                time.sleep(reply.stream_delay_s)
            if frame.text is not None:  # stamped as it leaves (the streaming bench measures from here)
                self.model.sent(reply.body["id"], *frame.text)
            write(frame.payload)
        fault = reply.fault
        if fault is not None and fault.fault == "drop":
            self._cut()
            return
        if fault is not None and fault.fault == "malformed":
            write(b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n')
        elif fault is not None and fault.fault == "event":
            write(_sse_event("error", {"error": {"type": fault.type, "message": fault.message}}))
        write(b"")  # the last chunk


class ScriptedModelServer:
    """Runs a ScriptedModel over HTTP on loopback in a background thread."""

    def __init__(self, scenarios: list[Scenario], host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = ScriptedModel(scenarios=list(scenarios))
        handler = type("Handler", (_Handler,), {"model": self.model})
        self._httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.model.requests

    def start(self) -> ScriptedModelServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help="scenario YAML files (default: the shipped ones)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    args.scenarios = args.scenarios or [str(f) for f in scenario_files()]
    server = ScriptedModelServer([Scenario.load(p) for p in args.scenarios], args.host, args.port)
    print(f"scripted model listening on {server.url} with {len(args.scenarios)} scenario(s)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
