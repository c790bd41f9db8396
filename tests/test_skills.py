"""Skills the agent learns: saved by one session (save_skill, with a workspace file), listed by
`da skill`, suggested to a later session whose task fits it and loaded there, listed by name
only where the task does not fit or its outcomes have gone badly; the outcomes of the sessions
that loaded it count for it. Real sessions through `da start`, the scripted model."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from durable_agents.api.store import Store
from durable_agents.settings import settings
from durable_agents.skill_registry import SkillRegistry
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, cli
from tests.helpers.scenarios import requests_holding

pytestmark = pytest.mark.usefixtures("workers")


def system_of(server: ScriptedModelServer, marker: str) -> str:
    return json.dumps(requests_holding(server, marker)[0]["system"])


async def test_a_skill_saved_in_one_session_is_suggested_and_loaded_in_the_next(
    address: str, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    name = f"learner-{uuid.uuid4().hex[:8]}"
    agent = tmp_path / "learner.yaml"
    agent.write_text(
        f"name: {name}\nmodel: {{name: claude-sonnet-5-5}}\ntools: [bash, write_file, read_file]\n"
        "skills: {learn: true}\n"
    )
    save = {
        "name": "fib-check",
        "description": "Check a fibonacci program quickly",
        "triggers": ["fibonacci"],
        "instructions": "Run bash /workspace/skills/fib-check/check.sh",
        "files": ["check.sh"],
    }
    learn = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "check.sh", "content": "echo checked ok\n"})),
            Step(tool_use=ToolUse(name="save_skill", input=save)),
            Step(text="{last_tool_result}"),
        ],
    )

    async def start(task: str, *extra: str) -> str:
        code, out, err = await cli(address, "start", "--agent", str(agent), "--one-shot", "--wait", *extra, task)
        assert code == 0, err
        return out.strip().split("\n", 1)[1]

    answer = await start(f"Learn to check {learn}")
    assert answer == f"Saved skill 'fib-check' (version 1, with check.sh); later sessions of {name} can load it."
    code, out, _ = await cli(address, "skill", "list", "--agent", name)
    assert code == 0 and "fib-check" in out and "v1" in out and "0/0" in out and "0.50" in out

    # A task that fits: suggested with its description, loaded, its file copied and run; the
    # outcome it was part of (satisfied) counts for it.
    use = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="load_skill", input={"name": "fib-check", "copy_files": True})),
            Step(tool_use=ToolUse(name="bash", input={"command": "bash /workspace/skills/fib-check/check.sh"})),
            Step(text="It says: {last_tool_result}"),
        ],
    )
    grader = add_scenario(scripted, [Step(text='{"result": "satisfied", "explanation": "ok"}')])
    rubric = tmp_path / "RUBRIC.md"
    rubric.write_text(f"- it was checked {grader}\n")
    answer = await start(f"Check my fibonacci program {use}", "--outcome", str(rubric))
    assert answer == "It says: checked ok"
    assert "- fib-check: Check a fibonacci program quickly" in system_of(scripted, use)
    registry = SkillRegistry(Store(settings().database_url))
    skill = await registry.get(name, "fib-check")
    assert (
        skill.body["successes"] == 1
        and skill.body["failures"] == 0
        and skill.body["files"] == {"check.sh": "echo checked ok\n"}
    )

    # A task that does not fit: by name only.
    other = add_scenario(scripted, [Step(text="fine")])
    await start(f"Tidy the desk {other}")
    prompt = system_of(scripted, other)
    assert "Other skills (load_skill): fib-check" in prompt and "Check a fibonacci program" not in prompt

    # Outcomes gone badly: no longer suggested, even where the task fits.
    await registry.record_results(name, ["fib-check"], succeeded=False)
    await registry.record_results(name, ["fib-check"], succeeded=False)
    await registry.record_results(name, ["fib-check"], succeeded=False)
    doubtful = add_scenario(scripted, [Step(text="fine")])
    await start(f"Another fibonacci check {doubtful}")
    prompt = system_of(scripted, doubtful)
    assert "Other skills (load_skill): fib-check" in prompt and "Check a fibonacci program" not in prompt

    code, out, _ = await cli(address, "skill", "show", name, "fib-check")
    assert code == 0 and "1 satisfied, 3 not; confidence 0.33" in out and "Run bash" in out
    code, _, _ = await cli(address, "skill", "rm", name, "fib-check")
    assert code == 0
    code, _, err = await cli(address, "skill", "show", name, "fib-check")
    assert code == 2 and f"agent {name!r} has no learned skill 'fib-check'" in err
    await registry.store.close()
