"""Connecting to Temporal: one place for the address, namespace, data converter and the
custom search attributes, shared by workers, the CLI, tests and benchmarks.
"""

from __future__ import annotations

import os
import weakref

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError

import telemetry
from contracts import SA_AGENT_NAME, SA_AGENT_VERSION, SA_PARENT_SESSION, SA_SESSION_STATUS
from payload_store import data_converter

DEFAULT_ADDRESS = "localhost:7233"
# Dynamic config for the dev server (and advice for any cluster that runs agents):
# - the history service polls its transfer queue at most 20 times a second by default, which
#   puts ~40 ms between a task's creation and its dispatch: every workflow task and activity of
#   every turn waited for it;
# - eager activity execution hands an activity scheduled on the workflow's own queue (the model
#   call) straight back to the worker that scheduled it, without a trip through matching.
DEV_SERVER_TUNING = [
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=10000",
    "--dynamic-config-value",
    "history.visibilityProcessorMaxPollRPS=10000",
    "--dynamic-config-value",
    "system.enableActivityEagerExecution=true",
]
SEARCH_ATTRIBUTES = {
    SA_AGENT_NAME: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SA_SESSION_STATUS: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SA_AGENT_VERSION: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SA_PARENT_SESSION: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
}


def temporal_address() -> str:
    return os.environ.get("TEMPORAL_ADDRESS", DEFAULT_ADDRESS)


def temporal_namespace() -> str:
    return os.environ.get("TEMPORAL_NAMESPACE", "default")


def ui_url(session_id: str | None = None) -> str:
    base = os.environ.get("TEMPORAL_UI_URL", "http://localhost:8233").rstrip("/")
    if session_id is None:
        return base
    return f"{base}/namespaces/{temporal_namespace()}/workflows/{session_id}"


def metrics_runtime(port: int) -> Runtime:
    """A Temporal runtime whose SDK metrics (task slots, schedule-to-start latency, failures, sticky
    cache, model and sandbox activities) are served for Prometheus on http://0.0.0.0:PORT/metrics."""
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}", durations_as_seconds=True))
    )


async def connect(address: str | None = None, namespace: str | None = None, runtime: Runtime | None = None) -> Client:
    """A client (and, through its plugins, every worker built from it) that traces where the
    environment asks for it (see telemetry.py)."""
    return await Client.connect(
        address or temporal_address(),
        namespace=namespace or temporal_namespace(),
        data_converter=data_converter(),
        runtime=runtime,
        plugins=telemetry.plugins(),
    )


_registered: weakref.WeakKeyDictionary[Client, bool] = weakref.WeakKeyDictionary()


async def ensure_search_attributes(client: Client) -> bool:
    """Register our search attributes where missing; False where the server won't let us.
    Asked once per client, not on every session start."""
    if client in _registered:
        return _registered[client]
    _registered[client] = await _register(client)
    return _registered[client]


async def _register(client: Client) -> bool:
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in listed.custom_attributes}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
        return True
    except RPCError:
        return False
