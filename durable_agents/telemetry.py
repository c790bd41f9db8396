"""Traces: OpenTelemetry through the Temporal SDK's plugin, configured from the environment
(through the settings, durable_agents/settings.py).

- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set: spans go to that
  collector over OTLP/HTTP (protobuf), batched; the exporter reads the other standard `OTEL_*`
  variables (headers, timeout) itself.
- `DA_OTEL_CONSOLE=1`: each span is printed on stderr as one JSON line (tests, humans).
- neither (or `OTEL_SDK_DISABLED=true`): nothing is installed and nothing is paid for.

The SDK's `OpenTelemetryPlugin` on the client (and so on every worker built from it) makes the
spans: workflows, activities and child workflows, propagated through Temporal headers. Its
tracer provider is replay-safe: a workflow replayed on another worker does not emit its spans
again. `SpanAttributes` adds what an operator looks for to the activity spans, without the
activities knowing: the session id everywhere, model and tokens on model calls (GenAI semantic
conventions), the tool's name on tool runs.
"""

from __future__ import annotations

import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanProcessor,
)
from temporalio import activity
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, ReplaySafeTracerProvider, create_tracer_provider
from temporalio.plugin import SimplePlugin
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from durable_agents.contracts import (
    CALL_MODEL,
    EXECUTE,
    PROVISION_AND_EXECUTE,
    FirstCallRequest,
    ModelRequest,
    ModelTurn,
    SandboxCall,
)
from durable_agents.settings import Settings, settings

__all__ = ["SpanAttributes", "enabled", "plugins", "shutdown", "tracing_plugins"]

SERVICE_NAME = "durable-agents"
# Attribute names: OpenTelemetry's session and GenAI semantic conventions.
SESSION_ID = "session.id"
CONVERSATION_ID = "gen_ai.conversation.id"
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"  # all input tokens, cached or not (the convention for Anthropic)
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"

_provider: ReplaySafeTracerProvider | None = None


def _otlp_endpoint(config: Settings) -> str | None:
    return config.otel_traces_endpoint or config.otel_endpoint


def enabled(config: Settings | None = None) -> bool:
    """Whether this process exports traces (as the settings say)."""
    config = config or settings()
    if (config.otel_sdk_disabled or "").lower() == "true":
        return False
    return bool(_otlp_endpoint(config)) or config.otel_console


def _processors(config: Settings | None = None) -> list[SpanProcessor]:
    config = config or settings()
    processors: list[SpanProcessor] = []
    if _otlp_endpoint(config):
        protocol = config.otel_traces_protocol or config.otel_protocol or "http/protobuf"
        if protocol != "http/protobuf":
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only 'http/protobuf' is supported here")
        # Imported here: a process that does not export pays nothing for it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter()))
    if config.otel_console:
        # On stderr, with the logs: a CLI's stdout stays its output (`export ID > session.jsonl`).
        exporter: SpanExporter = ConsoleSpanExporter(
            out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
        processors.append(SimpleSpanProcessor(exporter))
    return processors


def _resource() -> Resource:
    detected = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(detected.attributes.get("service.name", "unknown_service")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": SERVICE_NAME}))
    return detected


def _setup(config: Settings) -> ReplaySafeTracerProvider:
    """The process's tracer provider, made and installed globally once."""
    global _provider
    if _provider is None:
        provider = create_tracer_provider(resource=_resource())
        for processor in _processors(config):
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            raise RuntimeError("another tracer provider was installed first; Temporal needs the replay-safe one")
        _provider = provider
    return _provider


def plugins(config: Settings | None = None) -> list[Any]:
    """Plugins for `Client.connect`: tracing where the settings ask for it, else none."""
    config = config or settings()
    if not enabled(config):
        return []
    _setup(config)
    return tracing_plugins()


def tracing_plugins() -> list[Any]:
    """The tracing plugins themselves (for clients, workers, replayers); they need the global
    tracer provider to be a replay-safe one (`plugins()` installs it)."""
    return [
        OpenTelemetryPlugin(add_temporal_spans=True),
        SimplePlugin("durable-agents.SpanAttributes", interceptors=[SpanAttributes()]),
    ]


def shutdown() -> None:
    """Export what is still buffered; call before the process exits."""
    if _provider is not None:
        _provider.shutdown()


class SpanAttributes(Interceptor):
    """Names the session, model, tokens and tool on the SDK's activity spans.

    A worker interceptor only: workers put it inside the client's tracing interceptor, so the
    span it sees as current is the activity's own `RunActivity:…` span."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivitySpanAttributes(next)


class _ActivitySpanAttributes(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        span = trace.get_current_span()
        if not span.is_recording():
            return await self.next.execute_activity(input)
        info = activity.info()
        if info.workflow_id:
            span.set_attributes({SESSION_ID: info.workflow_id, CONVERSATION_ID: info.workflow_id})
        request = input.args[0] if input.args else None
        if info.activity_type == CALL_MODEL and isinstance(request, ModelRequest):
            span.set_attributes(
                {
                    OPERATION: "chat",
                    PROVIDER: "anthropic",
                    REQUEST_MODEL: request.model,
                    REQUEST_MAX_TOKENS: request.max_tokens,
                }
            )
            turn = await self.next.execute_activity(input)
            if isinstance(turn, ModelTurn):
                _set_turn(span, turn)
            return turn
        call = request.call if isinstance(request, FirstCallRequest) else request  # (with its provisioning)
        if info.activity_type in (EXECUTE, PROVISION_AND_EXECUTE) and isinstance(call, SandboxCall):
            span.set_attributes({OPERATION: "execute_tool", TOOL_NAME: call.name, TOOL_CALL_ID: call.call_id})
        return await self.next.execute_activity(input)


def _set_turn(span: trace.Span, turn: ModelTurn) -> None:
    u = turn.usage
    attributes: dict[str, Any] = {
        RESPONSE_MODEL: turn.model,
        INPUT_TOKENS: u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens,
        OUTPUT_TOKENS: u.output_tokens,
        CACHE_READ_TOKENS: u.cache_read_input_tokens,
        CACHE_CREATION_TOKENS: u.cache_creation_input_tokens,
    }
    if turn.stop_reason:
        attributes[FINISH_REASONS] = [turn.stop_reason]
    span.set_attributes(attributes)
