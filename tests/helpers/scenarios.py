"""Scripted-model scenarios registered for one test (the server is shared by the whole run)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from durable_agents.testing.scripted_model import Scenario, ScriptedModelServer, Step, ToolUse


def add_scenario(server: ScriptedModelServer, steps: list[Step], **options: Any) -> str:
    """Register a scenario for one test; returns the marker a task must contain to get it."""
    marker = f"[scenario {uuid.uuid4().hex[:10]}]"
    server.model.scenarios.insert(0, Scenario(name=marker, match=marker, steps=steps, **options))
    return marker


def write_then_read_twice(server: ScriptedModelServer, path: str, content: str, answer: str) -> str:
    """write `path`, answer, then (on the next message) read it, read it again and answer: the first
    read meets a lost sandbox and is told the environment was reset; the second sees the restore."""
    return add_scenario(
        server,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": path, "content": content})),
            Step(text="Written."),
            Step(tool_use=ToolUse(name="bash", input={"command": f"cat /workspace/{path}"})),
            Step(tool_use=ToolUse(name="bash", input={"command": f"cat /workspace/{path}"})),
            Step(text=answer),
        ],
    )


def requests_holding(server: ScriptedModelServer, text: str) -> list[dict[str, Any]]:
    """The bodies of the model requests whose messages contain `text` (a scenario's marker), in order."""
    return [r.body for r in server.model.requests if text in json.dumps(r.body["messages"])]
