"""The scripted model server, driven by the real anthropic SDK over HTTP."""

from __future__ import annotations

import anthropic
import pytest

from scripted_model.server import ScriptedError, ScriptedModelServer, Step, ToolUse
from tests.conftest import add_scenario


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
