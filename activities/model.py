"""The `call_model` activity: one Anthropic Messages API call with a worker-local context cache.

The workflow sends only what is new since its previous call (see `ModelRequest`); this module
keeps the prefix per session. On a miss (another worker took the session, this one restarted)
it queries the workflow for the whole context: a query reads workflow state without adding to
history. The SDK's own retries are off: Temporal's retry policy is the only one.

The call streams (the Messages API's server-sent events): text as it arrives is handed to the
live publisher (`live.publisher`, outside history), and the turn returned, recorded once in
history, is the accumulated final message, exactly what a non-streaming call returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import anthropic
import httpx2
from anthropic.lib.streaming import _messages as anthropic_streaming
from anthropic.types import Message
from anthropic.types.parsed_message import ParsedMessage
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from durable_agents import telemetry
from durable_agents.activities.heartbeat import heartbeating
from durable_agents.contracts import (
    BYTES_PER_TOKEN,
    CALL_MODEL,
    GET_MODEL_CONTEXT,
    ModelContext,
    ModelRequest,
    ModelTurn,
    Usage,
    chain_digest,
    context_root,
    estimate_tokens,
    shared,
)
from durable_agents.errors import (
    ContextTooLong,
    ModelError,
    ModelNotConfigured,
    ModelRejected,
    ModelUnavailable,
    StaleContext,
    application_error,
    translate_errors,
)
from durable_agents.live.publisher import DeltaPublisher, LiveCall
from durable_agents.logs import activity_log
from durable_agents.settings import Settings, settings

RETRYABLE_STATUS = {408, 409, 429}
# Error types the API may send in an `error` event of a streamed answer that retrying cannot help.
REJECTED_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "billing_error",
}
HEARTBEAT_EVERY_S = 5.0
# How the API says a request does not fit the model's context window (a 400 invalid_request_error).
CONTEXT_TOO_LONG_MESSAGES = re.compile(r"prompt is too long|exceed context limit|context window", re.IGNORECASE)
# The SDK's stream accumulator subscripts a pydantic generic, ParsedMessage[ResponseFormatT], at every
# answer's first event; pydantic caches the class it builds only while something refers to it, so
# after each garbage collection that freed it the next answer built it anew (1-2 ms of CPU). Held here.
_PARSED_MESSAGE = ParsedMessage[anthropic_streaming.ResponseFormatT]  # type: ignore[attr-defined]


@dataclass
class _CachedContext:
    system: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # bytes of JSON, per message
    bytes: int = 0  # their sum: what the entry weighs in the cache's byte budget

    @classmethod
    def new(cls, system: str, tools: list[dict[str, Any]]) -> _CachedContext:
        return cls(system=system, tools=tools, digests=[context_root(system, tools)])

    def truncate(self, count: int) -> None:
        del self.messages[count:]
        del self.digests[count + 1 :]
        self.bytes -= sum(self.sizes[count:])
        del self.sizes[count:]

    def extend(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            _share_outputs(message)
            self.messages.append(message)
            self.digests.append(chain_digest(self.digests[-1], message))
            self.sizes.append(estimate_tokens(message) * BYTES_PER_TOKEN)
            self.bytes += self.sizes[-1]


def _share_outputs(message: dict[str, Any]) -> None:
    """The message's tool outputs as the one object the session's workflow holds for each (where
    this worker runs it too): the cache's copy of a context then costs little more than its dicts.
    The workflow writes each output as one string (ContextBuilder.add_tool_results)."""
    content = message.get("content")
    for block in content if isinstance(content, list) else ():
        if block.get("type") == "tool_result" and isinstance(block.get("content"), str):
            block["content"] = shared(block["content"])


class ContextCache:
    """Per-session context prefixes, least recently used first out: at most `max_sessions` of them,
    and at most `max_bytes` of JSON together (the one in use is kept whatever its size). An entry
    that went is a miss: the next call reads the context from the workflow."""

    def __init__(self, max_sessions: int = 512, max_bytes: int | None = None) -> None:
        self._entries: OrderedDict[str, _CachedContext] = OrderedDict()
        # What each entry weighed when it was last stored, and their sum: kept as entries come and
        # go, not summed over every entry at each call (a worker holds hundreds of sessions).
        self._weights: dict[str, int] = {}
        self._bytes = 0
        self._max = max_sessions
        self._max_bytes = max_bytes if max_bytes is not None else settings().model_context_cache_mb * 1024 * 1024
        self.hits = 0
        self.misses = 0

    def lookup(self, req: ModelRequest) -> _CachedContext | None:
        entry = self._entries.get(req.session_id)
        if req.prefix_count == 0 and req.system is not None and req.tools is not None:
            entry = _CachedContext.new(req.system, req.tools)
        elif (
            entry is None
            or len(entry.messages) < req.prefix_count
            or entry.digests[req.prefix_count] != req.prefix_digest
        ):
            return None
        entry.truncate(req.prefix_count)
        entry.extend(req.new_messages)
        if entry.digests[-1] != req.digest:
            self.drop(req.session_id)  # not what the workflow holds: read afresh
            return None
        self.store(req.session_id, entry)
        return entry

    def drop(self, session_id: str) -> None:
        if self._entries.pop(session_id, None) is not None:
            self._bytes -= self._weights.pop(session_id)

    def store(self, session_id: str, entry: _CachedContext) -> None:
        self._entries[session_id] = entry
        self._entries.move_to_end(session_id)
        self._bytes += entry.bytes - self._weights.get(session_id, 0)
        self._weights[session_id] = entry.bytes
        while len(self._entries) > self._max or (len(self._entries) > 1 and self._bytes > self._max_bytes):
            gone, _ = self._entries.popitem(last=False)
            self._bytes -= self._weights.pop(gone)

    @property
    def bytes(self) -> int:
        """The JSON bytes of the entries, as they were when each was last stored."""
        return self._bytes


def _retry_after(error: anthropic.APIStatusError) -> timedelta | None:
    headers = error.response.headers
    with contextlib.suppress(TypeError, ValueError):
        if (ms := headers.get("retry-after-ms")) is not None:
            return timedelta(milliseconds=float(ms))
        if (s := headers.get("retry-after")) is not None:
            return timedelta(seconds=float(s))
    return None


def model_error(error: Exception) -> ModelError:
    """An Anthropic SDK error as one of ours: whether retrying can help is in its class."""
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        kind = error.type or type(error).__name__
        detail = error.api_message or str(error)
        if status < 400:  # an `error` event in the middle of a streamed answer: judged by its type
            message = f"Anthropic API failed mid-answer ({kind}): {detail}"
            return ModelRejected(message) if kind in REJECTED_TYPES else ModelUnavailable(message)
        message = f"Anthropic API answered {status} ({kind}): {detail}"
        if status == 400 and CONTEXT_TOO_LONG_MESSAGES.search(detail):
            return ContextTooLong(message)
        if status in RETRYABLE_STATUS or status >= 500:
            return ModelUnavailable(message, retry_after=_retry_after(error))
        return ModelRejected(message)
    if isinstance(error, anthropic.APIConnectionError):
        return ModelUnavailable(f"Anthropic API unreachable: {error}")
    if isinstance(error, anthropic.APIResponseValidationError | json.JSONDecodeError):
        return ModelUnavailable(f"Anthropic API sent an invalid response: {error}")
    if isinstance(error, httpx2.TransportError):  # e.g. the connection closed in the middle of a stream
        return ModelUnavailable(f"Anthropic API connection lost: {error!r}")
    return ModelError(f"{type(error).__name__}: {error}")


def classify_model_error(error: Exception) -> ApplicationError:
    """Map an Anthropic SDK error to a retryable or non-retryable ApplicationError."""
    return application_error(model_error(error))


def _block_dict(block: Any) -> dict[str, Any]:
    data: dict[str, Any] = block.model_dump(mode="json", exclude_none=True, warnings=False)
    kind = data.get("type")
    keep = {
        "text": ("type", "text"),
        "tool_use": ("type", "id", "name", "input"),
        "thinking": ("type", "thinking", "signature"),
        "redacted_thinking": ("type", "data"),
    }.get(str(kind))
    return {k: data[k] for k in keep if k in data} if keep else data


def anthropic_client_from_env(config: Settings | None = None) -> anthropic.AsyncAnthropic | None:
    """The harness's Claude client (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, ANTHROPIC_TIMEOUT_S,
    ANTHROPIC_HTTP_CLIENT), or None where no API key is configured on this worker. Retries are
    Temporal's (the activity's policy), never the SDK's. Close it with `await client.close()`."""
    config = config or settings()
    if config.anthropic_api_key is None:
        return None
    return anthropic.AsyncAnthropic(
        api_key=config.anthropic_api_key.get_secret_value(),
        base_url=config.anthropic_base_url,
        max_retries=0,
        timeout=config.anthropic_timeout_s,
        # The SDK's aiohttp client maps aiohttp's errors to httpx2's, so model_error reads both alike.
        http_client=anthropic.DefaultAioHttpClient() if config.anthropic_http_client == "aiohttp" else None,
        open_telemetry=_sdk_tracing(config),
    )


def _sdk_tracing(config: Settings) -> Literal[False] | None:
    """The SDK's own span per API call: where this worker traces (durable_agents.telemetry), it is a
    child of the activity's span. Where it does not, off: the SDK builds each span's attributes even
    with no tracer provider to record them (1% of the harness's CPU at N = 200), and this process
    promises to pay nothing for tracing it does not do. An ANTHROPIC_OPEN_TELEMETRY* variable the
    operator set is the SDK's to read, and then this leaves the option unset."""
    if telemetry.enabled(config) or any(name.startswith("ANTHROPIC_OPEN_TELEMETRY") for name in os.environ):
        return None
    return False


CACHE_POINT = {"type": "ephemeral"}


def cached_request(ctx: _CachedContext) -> dict[str, Any]:
    """system, tools and messages with prompt-caching breakpoints: after the tools and system
    prompt (stable for the whole session) and on the newest message, so the next request, whose
    prefix is this one byte for byte, reads it from the cache. The cached context is not changed."""
    request: dict[str, Any] = {"messages": ctx.messages}
    if ctx.tools:
        request["tools"] = [*ctx.tools[:-1], {**ctx.tools[-1], "cache_control": CACHE_POINT}]
    if ctx.system:
        request["system"] = [{"type": "text", "text": ctx.system, "cache_control": CACHE_POINT}]
    if ctx.messages:
        last = ctx.messages[-1]
        content = last["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if blocks:
            blocks[-1] = {**blocks[-1], "cache_control": CACHE_POINT}
            request["messages"] = [*ctx.messages[:-1], {**last, "content": blocks}]
    return request


class ModelActivities:
    def __init__(
        self,
        client: Client,
        anthropic_client: anthropic.AsyncAnthropic | None,
        publisher: DeltaPublisher | None = None,
    ) -> None:
        self._client = client
        self._anthropic = anthropic_client
        self.cache = ContextCache()
        self.publisher = publisher or DeltaPublisher.from_env()

    async def _context(self, req: ModelRequest) -> _CachedContext:
        entry = self.cache.lookup(req)
        if entry is not None:
            self.cache.hits += 1
            return entry
        self.cache.misses += 1
        activity_log().info("context cache miss: reading the context from the workflow", messages=req.prefix_count)
        info = activity.info()
        handle = self._client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        full: ModelContext = await handle.query(GET_MODEL_CONTEXT, result_type=ModelContext)
        entry = _CachedContext.new(full.system, full.tools)
        entry.extend(full.messages[: req.prefix_count])
        # A normal turn's new messages are the rest of the context; a compaction's end differently.
        entry.extend(req.new_messages)
        if entry.digests[-1] != req.digest:
            raise StaleContext("the session's context moved on while this call waited")
        self.cache.store(req.session_id, entry)
        return entry

    @activity.defn(name=CALL_MODEL)
    @translate_errors
    async def call_model(self, req: ModelRequest) -> ModelTurn:
        log = activity_log()
        if self._anthropic is None:
            raise ModelNotConfigured(
                "ANTHROPIC_API_KEY is not set on the harness worker: set it (or run `make up`, which "
                "starts the scripted model) and send the message again"
            )
        ctx = await self._context(req)
        params: dict[str, Any] = {"model": req.model, "max_tokens": req.max_tokens, **cached_request(ctx)}
        if req.temperature is not None:
            params["temperature"] = req.temperature

        info = activity.info()
        live = self.publisher.call(req.session_id, req.event_offset, info.attempt)
        try:
            async with heartbeating(HEARTBEAT_EVERY_S):
                response, request_id = await self._stream(params, live)
        except Exception as e:  # noqa: BLE001 - every SDK error is classified for Temporal
            error = e if isinstance(e, ModelError) else model_error(e)
            log.warning("model call failed", error=str(error), retryable=error.retryable)
            raise error from e
        content = [_block_dict(b) for b in response.content]
        ctx.extend([{"role": "assistant", "content": content}])
        u = response.usage
        usage = Usage(
            input_tokens=u.input_tokens or 0,
            output_tokens=u.output_tokens or 0,
            cache_read_input_tokens=getattr(u, "cache_read_input_tokens", None) or 0,
            cache_creation_input_tokens=getattr(u, "cache_creation_input_tokens", None) or 0,
        )
        log.info(
            "model call",
            model=response.model,
            stop_reason=response.stop_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            context_messages=len(ctx.messages),
        )
        return ModelTurn(
            content=content,
            stop_reason=response.stop_reason,
            usage=usage,
            model=response.model,
            request_id=request_id,
        )

    async def _stream(self, params: dict[str, Any], live: LiveCall | None) -> tuple[Message, str | None]:
        """One streamed Messages call: the final message (and its request id); text deltas and
        tool calls go to `live` as they arrive."""
        assert self._anthropic is not None
        if live is not None:
            live.start(params["model"])
        stopped = False
        async with self._anthropic.messages.stream(**params) as stream:
            async for event in stream:
                if live is not None:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        live.text(event.index, event.delta.text)
                    elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                        live.tool_use(event.index, event.content_block.id, event.content_block.name)
                stopped = stopped or event.type == "message_stop"
            if not stopped:  # a cleanly closed but unfinished stream is a lost answer, not a short one
                raise ModelUnavailable("the model's answer stream ended before message_stop")
            message = await stream.get_final_message()
            if live is not None:
                live.end(message.stop_reason)
            return message, stream.request_id
