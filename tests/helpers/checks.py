"""What every fault test asserts of a session that lived through the fault: its log is gap-free,
each model turn is in it exactly once, each tool call ran exactly once, no container is left."""

from __future__ import annotations

import asyncio
import json

import docker
from temporalio.client import Client

from durable_agents.contracts import ReleaseResult, SessionEvent
from durable_agents.sandboxes.activities import release_key
from durable_agents.sandboxes.docker_sandbox import SESSION_LABEL
from durable_agents.sandboxes.snapshots import LocalBlobStore
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse


async def session_has_container(session_id: str) -> bool:
    """A container made for this session exists (by its label: a warm-pool container has none)."""

    def look() -> bool:
        label = f"{SESSION_LABEL}={session_id}"
        return bool(docker.from_env().containers.list(all=True, filters={"label": label}))

    return await asyncio.to_thread(look)


def requests_for(scripted: ScriptedModelServer, marker: str) -> int:
    """How many model requests the conversation marked `marker` has made so far."""
    return sum(1 for r in scripted.requests if marker in json.dumps(r.body))


def appends(*lines: str, sleep_s: float = 0) -> list[Step]:
    """One bash step per line, each appending it to a file: a command that ran twice shows."""
    pause = f"sleep {sleep_s:g}; " if sleep_s else ""
    return [Step(tool_use=ToolUse(name="bash", input={"command": f"{pause}echo {x} >> /workspace/ran"})) for x in lines]


async def released(
    events: list[SessionEvent], session_id: str, within_s: float = 60
) -> dict[str, ReleaseResult | None]:
    """Wait until every container the session was given is gone (its host releases the last one
    once the session has closed); how each was released (None: it went otherwise, lost or replaced)."""
    containers = [e.sandbox.sandbox_id for e in events if e.kind == "sandbox_provisioned" and e.sandbox]
    api = docker.from_env().api
    deadline = asyncio.get_running_loop().time() + within_s
    while any(api.containers(all=True, quiet=True, filters={"id": c}) for c in containers):
        assert asyncio.get_running_loop().time() < deadline, f"{session_id}: its sandbox was not released"
        await asyncio.sleep(0.2)
    blobs = LocalBlobStore()
    keys = {c: release_key(session_id, c) for c in containers}
    # The host writes its record just after the removal: a moment for it (none comes for a container
    # that went otherwise, lost or replaced).
    for _ in range(30):
        if all(blobs.exists(k) for k in keys.values()):
            break
        await asyncio.sleep(0.1)
    return {c: ReleaseResult.model_validate_json(blobs.read(k)) if blobs.exists(k) else None for c, k in keys.items()}


async def assert_clean(client: Client, events: list[SessionEvent], turns: int, session_id: str) -> None:
    """The log is whole, and once the session's sandbox is released (after its answer) no container is left."""
    assert [e.offset for e in events] == list(range(len(events))), "the log has gaps"
    model_turns = [e for e in events if e.kind == "model_turn"]
    assert len(model_turns) == turns, f"{len(model_turns)} model turns recorded, expected {turns}"
    call_ids = [c.id for t in model_turns for c in t.tool_calls or []]
    results = [e.tool_result.call_id for e in events if e.kind == "tool_result"]
    assert len(set(call_ids)) == len(call_ids) and results == call_ids, "a tool call ran twice or not at all"
    await released(events, session_id, within_s=120)
    leftover = docker.from_env().containers.list(all=True, filters={"label": f"durable-agents.session={session_id}"})
    assert leftover == [], "a container was left behind"
