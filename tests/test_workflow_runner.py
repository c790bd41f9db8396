"""The harness's workflow runner: the SDK's sandbox, with the payloads' serialization contexts asked
of the workflow instance directly instead of through code compiled and run in the sandbox."""

from __future__ import annotations

import types
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

import durable_agents.worker as worker_module
import tests.test_workflow_fakes as fakes_module
from durable_agents.worker import WORKFLOW_RESTRICTIONS, WORKFLOW_RUNNER
from tests.test_workflow_fakes import agent, bash, fake_session, new_fakes, start, text

CONTEXTS = worker_module._Runner.ASKED_DIRECTLY


async def _sandbox_runs(client: Client, monkeypatch: pytest.MonkeyPatch, runner: Any) -> dict[str, int]:
    """A one-shot session with a tool turn on `runner`: how often code ran in the sandbox, by what for."""
    counts = {"activate": 0, "contexts": 0}
    run_code = _Instance._run_code

    def counting(self: _Instance, code: str, **extra: Any) -> None:
        counts["contexts" if any(name in code for name in CONTEXTS) else "activate"] += 1
        run_code(self, code, **extra)

    monkeypatch.setattr(_Instance, "_run_code", counting)
    monkeypatch.setattr(fakes_module, "WORKFLOW_RUNNER", runner)
    fakes = new_fakes(bash("ls", "t1"), text("done"))
    async with fake_session(client, fakes) as queue:
        result = await (await start(client, queue, agent(), "look", one_shot=True)).result()
    assert result.status == "done" and result.answer == "done" and fakes.executed == ["ls"]
    return counts


async def test_payload_contexts_are_asked_of_the_instance_not_run_in_the_sandbox(
    chaos_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own runner asks through the sandbox for each payload sequence it visits (the
    # client's converter has external storage, so payloads are visited) ...
    plain = SandboxedWorkflowRunner(restrictions=WORKFLOW_RESTRICTIONS)
    sdk = await _sandbox_runs(chaos_client, monkeypatch, plain)
    assert sdk["activate"] > 0 and sdk["contexts"] > sdk["activate"]
    # ... ours runs the activations there and nothing else, and the session is the same.
    ours = await _sandbox_runs(chaos_client, monkeypatch, WORKFLOW_RUNNER)
    assert ours["activate"] > 0 and ours["contexts"] == 0


def test_a_sandbox_of_another_shape_is_used_as_the_sdk_made_it(monkeypatch: pytest.MonkeyPatch) -> None:
    made = types.SimpleNamespace(globals_and_locals={})
    monkeypatch.setattr(SandboxedWorkflowRunner, "create_instance", lambda self, det: made)
    monkeypatch.setattr(worker_module._Runner, "_warned", False)
    assert WORKFLOW_RUNNER.create_instance(None) is made  # type: ignore[arg-type]
    assert worker_module._Runner._warned and not hasattr(made, "get_serialization_context")
