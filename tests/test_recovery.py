"""Sandboxes are cattle: a container killed between turns, a sandbox host that goes away, an
execute activity that fails after its command ran. The session goes on and loses nothing."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor, Worker

from durable_agents.client import send_message, session_events, start_agent_session, wait_until_settled
from durable_agents.contracts import EXECUTE, PROVISION_AND_EXECUTE, SessionEvent
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import SetEnv, add_scenario, coder, write_then_read_twice

ROOT = Path(__file__).resolve().parent.parent


def results_of(events: list[SessionEvent]) -> list[Any]:
    return [e.tool_result for e in events if e.kind == "tool_result"]


@pytest.mark.usefixtures("workers")
async def test_a_killed_container_is_replaced_with_the_workspace_restored(
    client: Client, scripted: ScriptedModelServer
) -> None:
    marker = write_then_read_twice(scripted, "notes.txt", "kept\n", "Still there: {last_tool_result}")
    handle = await start_agent_session(client, coder(), f"Keep a note. {marker}")
    await wait_until_settled(client, handle.id)
    events = await session_events(client, handle.id)
    first = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert first is not None and any(e.kind == "sandbox_snapshot" for e in events)  # taken when it went idle
    docker.from_env().containers.get(first.sandbox_id).kill()

    offset = await send_message(client, handle.id, "Show me the note.")
    state = await wait_until_settled(client, handle.id, after_event=offset)
    assert state.last_answer == "Still there: kept"
    events = await session_events(client, handle.id, offset)
    reset, after = results_of(events)
    assert reset.is_error and "environment was reset" in reset.output and "restored from the snapshot" in reset.output
    assert not after.is_error and after.output == "kept\n"
    kinds = [e.kind for e in events]
    assert kinds.index("sandbox_destroyed") < kinds.index("sandbox_provisioned")
    replacement = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert replacement is not None and replacement.restored is not None and replacement.sandbox_id != first.sandbox_id
    await handle.signal("end_session")
    await handle.result()


async def test_a_sandbox_host_that_goes_away_is_replaced_by_another(
    chaos_client: Client, scripted: ScriptedModelServer, worker_processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    processes = worker_processes
    suffix = uuid.uuid4().hex[:6]
    hosts = {f"host-a-{suffix}": None, f"host-b-{suffix}": None}
    processes("--harness")
    workers = {host: processes("--sandbox", "--host-id", host) for host in hosts}
    marker = write_then_read_twice(scripted, "a.txt", "from the first host\n", "{last_tool_result}")
    handle = await start_agent_session(chaos_client, coder(host_wait_s=3), f"Two hosts. {marker}")
    await wait_until_settled(chaos_client, handle.id)
    events = await session_events(chaos_client, handle.id)
    first = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert first is not None
    gone = first.host_queue.removeprefix("sandboxes-")
    workers[gone].terminate()  # the host's worker stops; its queue has no poller any more
    workers[gone].wait(timeout=30)

    offset = await send_message(chaos_client, handle.id, "Read it back.")
    state = await wait_until_settled(chaos_client, handle.id, after_event=offset)
    assert state.last_answer == "from the first host"
    events = await session_events(chaos_client, handle.id, offset)
    replacement = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert replacement is not None and replacement.host_queue != first.host_queue and replacement.restored
    assert "environment was reset" in results_of(events)[0].output
    await handle.signal("end_session")
    await handle.result()
    docker.from_env().containers.get(first.sandbox_id).remove(force=True)  # its host is gone: nobody reaps it here


class _FailAfterRunning(Interceptor):
    """Fails the first attempt of every call after the command has run (`execute`, and the first
    call's `provision_and_execute`): Temporal retries it."""

    def __init__(self) -> None:
        self.failed: set[str] = set()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:  # noqa: A002
        outer = self

        class Inbound(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:  # noqa: A002
                result = await super().execute_activity(input)
                info = activity.info()
                if info.activity_type in (EXECUTE, PROVISION_AND_EXECUTE) and info.activity_id not in outer.failed:
                    outer.failed.add(info.activity_id)
                    raise RuntimeError("injected failure after the command ran")
                return result

        return Inbound(next)


async def test_a_retried_execute_does_not_run_its_command_again(
    chaos_client: Client, scripted: ScriptedModelServer
) -> None:
    import anthropic

    from durable_agents.activities.model import ModelActivities
    from durable_agents.sandboxes.activities import SandboxActivities
    from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
    from durable_agents.worker import harness_worker, sandbox_workers
    from tests.helpers import remove_containers

    interceptor = _FailAfterRunning()
    model = ModelActivities(chaos_client, anthropic.AsyncAnthropic(api_key="k", base_url=scripted.url, max_retries=0))
    sandboxes = SandboxActivities(DockerSandboxes(f"retry-{uuid.uuid4().hex[:6]}"))
    workers: list[Worker] = [
        harness_worker(chaos_client, model),
        *sandbox_workers(chaos_client, sandboxes, interceptors=[interceptor]),
    ]
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo ran >> /workspace/runs.log"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "echo ran >> /workspace/runs.log"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "wc -l < /workspace/runs.log"})),
            Step(text="{last_tool_result}"),
        ],
    )
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        handle = await start_agent_session(chaos_client, coder(), f"Count runs. {marker}", one_shot=True)
        result = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        for w in workers:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)
        remove_containers(sandboxes.sandboxes)
    assert len(interceptor.failed) == 3  # every call failed once after running and was retried
    assert result.answer == "2"  # two appends, each ran once
    # ... in the one sandbox: the retried first call found it (on record with the server), and
    # did not provision another to run its command in again.
    made = {c for c, s in sandboxes.sandboxes.owners.items() if s == handle.id}
    assert len(made) == 1, made


async def test_the_reaper_removes_orphans_and_keeps_live_sandboxes(
    client: Client, scripted: ScriptedModelServer, workers: Any
) -> None:
    from durable_agents.contracts import SandboxSpec
    from durable_agents.sandboxes.reaper import Reaper

    sandboxes = workers.sandboxes.sandboxes
    marker = add_scenario(scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "true"})), Step(text="ok")])
    live = await start_agent_session(client, coder(), f"Live. {marker}")
    await wait_until_settled(client, live.id)
    current = next(e.sandbox for e in await session_events(client, live.id) if e.kind == "sandbox_provisioned")
    assert current is not None
    done = await start_agent_session(client, coder(), f"Done. {marker}", one_shot=True)
    await done.result()
    spec = SandboxSpec()
    orphans = {
        "no such session": sandboxes.create(f"session-nope-{uuid.uuid4().hex[:6]}", spec).id,
        "ended session": sandboxes.create(done.id, spec).id,
        "replaced in a live session": sandboxes.create(live.id, spec).id,
    }
    stopped = sandboxes.create(live.id, spec)
    stopped.kill()
    orphans["stopped"] = stopped.id
    removed = await Reaper(client, sandboxes, grace_s=0).sweep()
    # Only a sweep removes these two (their session runs); the worker's own reaper shares this host's
    # containers and may release the closed sessions' ones first. (Earlier tests' leftovers go too.)
    assert {orphans["replaced in a live session"], orphans["stopped"]} <= set(removed)
    left = [why for why, c in orphans.items() if c not in removed and sandboxes.running(c)]
    assert not left, f"not removed: {left}"
    assert current.sandbox_id not in removed and sandboxes.running(current.sandbox_id)
    await live.signal("end_session")
    await live.result()


@pytest.mark.usefixtures("workers")
async def test_a_session_starts_with_a_seeded_workspace_and_the_token_stays_out(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path, setenv: SetEnv
) -> None:
    from durable_agents.contracts import GitSource, WorkspaceSeed

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("hello from the repository\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    token = f"tok-{uuid.uuid4().hex}"
    setenv("DA_SECRET_REPO_TOKEN", token)  # the in-process sandbox worker's environment
    marker = add_scenario(
        scripted,
        [
            Step(
                tool_use=ToolUse(
                    name="bash", input={"command": "cat README.md notes/todo.txt; git log --oneline | wc -l"}
                )
            ),
            Step(
                tool_use=ToolUse(
                    name="bash",
                    input={
                        # split, so that the command itself does not hold the token
                        "command": f"T={token[:8]}''{token[8:]}; grep -rl $T /workspace /tmp; env | grep -c $T; "
                        "tr '\\0' '\\n' < /proc/1/environ | grep -c $T; cat .git/config"
                    },
                )
            ),
            Step(text="done"),
        ],
    )
    seed = WorkspaceSeed(
        files={"notes/todo.txt": "inline file\n"},
        git=GitSource(url=f"file://{repo}", ref="main", token_secret="repo-token"),
    )
    handle = await start_agent_session(client, coder(), f"Seeded. {marker}", one_shot=True, workspace=seed)
    assert (await handle.result()).status == "done"
    events = await session_events(client, handle.id)
    provisioned = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
    assert provisioned is not None and provisioned.seeded == f"git clone of file://{repo} at main and 1 file(s)"
    contents, leak_check = results_of(events)
    assert contents.output == "hello from the repository\ninline file\n1\n"
    assert leak_check.output.startswith("0\n0\n") and token not in leak_check.output
    assert "extraHeader" not in leak_check.output
    assert token not in (await handle.fetch_history()).to_json()
