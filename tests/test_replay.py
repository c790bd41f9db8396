"""Determinism: recorded session histories replay against today's SessionWorkflow.

A change that would make a running session's replay diverge (reordered activities, a new
command in the middle of the loop) fails here before it fails a deployment. Recorded from the
local stack (`make up`): `python tests/test_replay.py record localhost:7233 SESSION_ID NAME`.
Deliberate changes to the workflow's command sequence need workflow.patched() and a new recording.

Most files come from `tests/histories/record_sessions.py`, one real session per SessionWorkflow
feature (tools, a lost sandbox, approvals, a custom tool, subagents, compaction, continue-as-new
with one file per run, a scheduled run, MCP, interrupts, skills, budgets, the loop guard, ...) on the
dev server, the scripted model and real Docker. Re-record them all (or some, with `-k NAME`) with
`.venv/bin/python -m pytest tests/histories/record_sessions.py`; each recording checks that its
feature happened, that nothing went to the payload store and that it replays. A file's stem is the
workflow id it replays under, so the recorder gives each session its file's name as its id.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.opentelemetry import create_tracer_provider
from temporalio.worker import Replayer

from durable_agents.contracts import SessionInput, agent_version
from durable_agents.payload_store import data_converter
from durable_agents.telemetry import tracing_plugins
from durable_agents.workflows.session import SessionWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_histories_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[SessionWorkflow], data_converter=data_converter())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"


@pytest.fixture(scope="module")
def replayed_spans() -> InMemorySpanExporter:
    """The process's tracer provider: the SDK's replay-safe one, keeping what it exports in memory."""
    provider = create_tracer_provider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.fail("another tracer provider was installed in this process first")
    return exporter


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_histories_replay_with_tracing_on(path: Path, replayed_spans: InMemorySpanExporter) -> None:
    """Turning traces on does not break sessions recorded without them, and replaying emits nothing."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[SessionWorkflow], data_converter=data_converter(), plugins=tracing_plugins())
    replayed_spans.clear()
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays with tracing on: {result.replay_failure}"
    assert [s.name for s in replayed_spans.get_finished_spans()] == []


def test_there_are_recorded_histories() -> None:
    assert len(list(HISTORIES.glob("*.json"))) >= 2


async def record(address: str, session_id: str, name: str) -> None:
    client = await Client.connect(address, data_converter=data_converter())
    history = await client.get_workflow_handle(session_id).fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "record":
    asyncio.run(record(sys.argv[2], sys.argv[3], sys.argv[4]))


# Recorded since agent versions hold across upgrades: fields added later (sandbox.packages, outcome,
# learn_skills, a skill's triggers …) at their defaults are left out of the hash.
VERSION_KEPT = ("compaction-fallback", "malformed-tool-uses", "outcome")


@pytest.mark.parametrize("name", VERSION_KEPT)
def test_an_agent_keeps_its_version_across_an_upgrade(name: str) -> None:
    history = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())
    started = history.events[0].workflow_execution_started_event_attributes
    recorded = json.loads(started.search_attributes.indexed_fields["AgentVersion"].data)
    agent = SessionInput.model_validate_json(started.input.payloads[0].data).agent
    assert agent is not None and agent_version(agent) == recorded
