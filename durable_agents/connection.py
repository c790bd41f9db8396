"""Connecting to Temporal: one place for the address, namespace, data converter and the
custom search attributes, shared by workers, the CLI, tests and benchmarks.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError

from durable_agents import telemetry
from durable_agents.contracts import SEARCH_ATTRIBUTE_NAMES
from durable_agents.payload_store import data_converter
from durable_agents.settings import Settings, settings

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
SEARCH_ATTRIBUTES = {name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTE_NAMES}


def temporal_address(config: Settings | None = None) -> str:
    return (config or settings()).temporal_address


def temporal_namespace(config: Settings | None = None) -> str:
    return (config or settings()).temporal_namespace


def ui_url(session_id: str | None = None, config: Settings | None = None) -> str:
    config = config or settings()
    base = config.temporal_ui_url.rstrip("/")
    if session_id is None:
        return base
    return f"{base}/namespaces/{config.temporal_namespace}/workflows/{session_id}"


def metrics_runtime(port: int) -> Runtime:
    """A Temporal runtime whose SDK metrics (task slots, schedule-to-start latency, failures, sticky
    cache, model and sandbox activities) are served for Prometheus on http://0.0.0.0:PORT/metrics."""
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}", durations_as_seconds=True))
    )


async def connect(
    address: str | None = None,
    namespace: str | None = None,
    runtime: Runtime | None = None,
    config: Settings | None = None,
) -> Client:
    """A client (and, through its plugins, every worker built from it) of the configured server and
    namespace, with our data converter, that traces where the settings ask for it (telemetry.py)."""
    config = config or settings()
    return await Client.connect(
        address or config.temporal_address,
        namespace=namespace or config.temporal_namespace,
        data_converter=data_converter(config),
        runtime=runtime,
        plugins=telemetry.plugins(config),
    )


@dataclass(frozen=True)
class AttributeCheck:
    """Which of our search attributes a namespace has, after trying to register the missing ones."""

    namespace: str
    present: tuple[str, ...]  # ours that the namespace has now
    added: tuple[str, ...] = ()  # registered by this check
    problem: str | None = None  # why the missing ones could not be registered (or listed)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name in SEARCH_ATTRIBUTES if name not in self.present)

    @property
    def complete(self) -> bool:
        return not self.missing

    def advice(self) -> str:
        """How an operator adds the missing attributes (sessions run without them meanwhile)."""
        commands = "; ".join(
            f"temporal operator search-attribute create --namespace {self.namespace} --name {name} --type Keyword"
            for name in self.missing
        )
        return (
            f"sessions run without {', '.join(self.missing)} (no search or filter by them); add them with: {commands}"
        )


async def check_search_attributes(client: Client, register: bool = True) -> AttributeCheck:
    """Our search attributes in the client's namespace, registering the missing ones where the
    server allows it (and `register`). Never raises: a server that refuses says why in `problem`."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as e:
        return AttributeCheck(client.namespace, (), problem=f"listing search attributes failed: {e.message}")
    present = tuple(name for name in SEARCH_ATTRIBUTES if name in listed.custom_attributes)
    missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in present}
    if not missing:
        return AttributeCheck(client.namespace, present)
    if not register:
        return AttributeCheck(client.namespace, present, problem="registration is turned off")
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as e:
        return AttributeCheck(client.namespace, present, problem=f"the server refused to add them: {e.message}")
    return AttributeCheck(client.namespace, tuple(SEARCH_ATTRIBUTES), added=tuple(missing))


_registered: weakref.WeakKeyDictionary[Client, AttributeCheck] = weakref.WeakKeyDictionary()


async def ensure_search_attributes(client: Client) -> bool | list[str]:
    """What a session started by this client may set (`SessionInput.search_attributes`): True when
    the namespace has all our search attributes (registering missing ones where allowed), else the
    ones it has. Asked once per client, not on every session start."""
    if client not in _registered:
        _registered[client] = await check_search_attributes(client)
    check = _registered[client]
    return True if check.complete else list(check.present)
