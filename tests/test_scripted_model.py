"""The scripted model server, driven by the real anthropic SDK over HTTP."""

from __future__ import annotations

import json
import os
import time

import anthropic
import httpx2
import pytest

from durable_agents.activities.model import anthropic_client_from_env, classify_model_error
from durable_agents.settings import Settings
from durable_agents.testing.scripted_model import ScriptedError, ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario


def _client(server: ScriptedModelServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="secret-test-key", base_url=server.url, max_retries=0)


async def test_plays_steps_by_assistant_turns_and_records_requests(scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(text="looking", tool_use=ToolUse(name="bash", input={"command": "ls"})),
            Step(text="saw: {last_tool_result}"),
        ],
    )
    client = _client(scripted)
    first = await client.messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": f"go {marker}"}]
    )
    assert first.stop_reason == "tool_use"
    use = first.content[1]
    assert use.type == "tool_use" and use.name == "bash" and use.input == {"command": "ls"}
    second = await client.messages.create(
        model="m",
        max_tokens=100,
        messages=[
            {"role": "user", "content": f"go {marker}"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a.txt"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].text == "saw: a.txt"
    recorded = [r for r in scripted.requests if marker in str(r.body)]
    assert len(recorded) == 2
    assert all("x-api-key" not in r.headers for r in recorded)
    assert "secret-test-key" not in str([r.__dict__ for r in recorded])


async def test_streams_server_sent_events(scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(
                text="a streamed answer that is longer than one chunk",
                tool_use=ToolUse(name="bash", input={"command": "echo hi"}),
            )
        ],
    )
    client = _client(scripted)
    deltas = []
    async with client.messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": marker}]
    ) as stream:
        async for text in stream.text_stream:
            deltas.append(text)
        final = await stream.get_final_message()
    assert len(deltas) > 1 and "".join(deltas) == "a streamed answer that is longer than one chunk"
    assert final.content[1].type == "tool_use" and final.content[1].input == {"command": "echo hi"}


async def test_scripted_errors_carry_status_and_retry_after(scripted: ScriptedModelServer) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(
                error=ScriptedError(status=429, type="rate_limit_error", message="slow down", retry_after=2, times=1),
                then=Step(text="recovered"),
            )
        ],
    )
    client = _client(scripted)
    messages = [{"role": "user", "content": marker}]
    with pytest.raises(anthropic.RateLimitError) as raised:
        await client.messages.create(model="m", max_tokens=10, messages=messages)
    assert raised.value.response.headers["retry-after"] == "2"
    again = await client.messages.create(model="m", max_tokens=10, messages=messages)
    assert again.content[0].text == "recovered"


async def test_streams_text_in_chunks_as_they_are_made(scripted: ScriptedModelServer) -> None:
    text = "one two three four five six"
    marker = add_scenario(scripted, [Step(text=text, stream_chunk=4, stream_delay_ms=40)])
    client = _client(scripted)
    received: list[tuple[float, str]] = []
    async with client.messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": marker}]
    ) as stream:
        async for piece in stream.text_stream:
            received.append((time.time(), piece))
        final = await stream.get_final_message()
    assert [p for _, p in received] == [text[i : i + 4] for i in range(0, len(text), 4)]
    assert final.content[0].type == "text" and final.content[0].text == text
    sent = [c for c in scripted.model.chunks if c.message_id == final.id]
    assert [c.text for c in sent] == [p for _, p in received]
    assert all(b.at - a.at >= 0.04 for a, b in zip(sent, sent[1:], strict=False))  # the pause between deltas
    assert received[0][0] < sent[-1].at  # the first delta arrived before the last was made: not buffered


@pytest.mark.parametrize("http", ["aiohttp", "httpx"])
@pytest.mark.parametrize(
    ("fault", "raised"),
    [("drop", httpx2.TransportError), ("malformed", json.JSONDecodeError), ("event", anthropic.APIStatusError)],
)
async def test_stream_faults_break_the_answer_half_way(
    scripted: ScriptedModelServer, fault: str, raised: type[Exception], http: str
) -> None:
    """Through the harness's client, on either transport: each fault is one Temporal retries."""
    text = "a streamed answer that breaks in its middle"
    marker = add_scenario(
        scripted,
        [Step(error=ScriptedError(fault=fault, type="overloaded_error"), then=Step(text=text), stream_chunk=5)],
    )
    client = anthropic_client_from_env(
        Settings(ANTHROPIC_API_KEY="secret-test-key", ANTHROPIC_BASE_URL=scripted.url, ANTHROPIC_HTTP_CLIENT=http)
    )
    assert client is not None
    transport = type(client._client._transport).__name__  # noqa: SLF001 - which transport the setting chose
    assert transport == {"aiohttp": "AiohttpTransport", "httpx": "AsyncHTTPTransport"}[http]
    messages = [{"role": "user", "content": marker}]
    pieces: list[str] = []
    with pytest.raises(raised) as caught:
        async with client.messages.stream(model="m", max_tokens=100, messages=messages) as stream:
            async for piece in stream.text_stream:
                pieces.append(piece)
    assert 0 < len("".join(pieces)) < len(text) and text.startswith("".join(pieces))
    error = classify_model_error(caught.value)
    assert not error.non_retryable and error.type == "ModelUnavailable"  # Temporal retries it
    async with client.messages.stream(model="m", max_tokens=100, messages=messages) as stream:
        assert await stream.get_final_text() == text  # the retry answers in full
    await client.close()


def test_the_sdk_traces_its_calls_only_where_the_worker_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracing configured: the SDK's spans are off (it would build their attributes for nothing).
    Tracing on, or the SDK's own variable set by the operator: the SDK's spans are on, as it says."""
    for name in [n for n in os.environ if n.startswith(("ANTHROPIC_OPEN_TELEMETRY", "OTEL_", "DA_OTEL"))]:
        monkeypatch.delenv(name)

    def traced(**env: str) -> bool:
        client = anthropic_client_from_env(Settings(ANTHROPIC_API_KEY="k", **env))  # type: ignore[arg-type]
        assert client is not None
        return bool(client.open_telemetry["traces"]["enabled"])

    assert not traced()
    assert traced(DA_OTEL_CONSOLE="1")
    assert traced(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318")
    assert not traced(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318", OTEL_SDK_DISABLED="true")
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE", "content")
    assert traced()  # the operator asked the SDK for its spans: its variables decide
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    assert not traced(DA_OTEL_CONSOLE="1")
