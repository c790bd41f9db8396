"""Sandboxes when many sessions arrive together (issue 20): a burst larger than the warm pool still
gets every session a hardened sandbox and the pool refills to the demand; a sandbox says when
/workspace has nothing unsaved; the release after the answer survives a SIGKILL of the sandbox
worker; a host at its container limit leaves provisioning to another host. Behaviour, not timing
(bench/scale.py --burst measures)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from durable_agents.client import session_events, start_agent_session
from durable_agents.contracts import (
    ExecuteRequest,
    ExecuteResult,
    ProvisionRequest,
    SandboxHandle,
    SandboxSpec,
    SessionResult,
    SnapshotRef,
    SnapshotRequest,
    WorkspaceSeed,
)
from durable_agents.sandboxes.activities import SandboxActivities
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.sandboxes.pool import WarmPool
from durable_agents.sandboxes.reaper import Reaper
from durable_agents.sandboxes.snapshots import LocalBlobStore
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import add_scenario, coder, released, wait_for


async def run(activities: SandboxActivities, handle: SandboxHandle, command: str) -> ExecuteResult:
    req = ExecuteRequest(
        handle=handle,
        call_id=uuid.uuid4().hex,
        name="bash",
        input={"command": command},
        timeout_s=20,
        output_cap=10_000,
    )
    result: ExecuteResult = await ActivityEnvironment().run(activities.execute, req)
    return result


def assert_hardened(sandboxes: DockerSandboxes, container_id: str) -> None:
    attrs = sandboxes.docker.api.inspect_container(container_id)
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "1000:1000"
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] and not host["Privileged"]
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"] and host["Init"]
    assert host["PidsLimit"] == 256 and host["Memory"] == host["MemorySwap"] == 1024 * 2**20


async def test_a_burst_larger_than_the_pool_gets_every_session_a_hardened_sandbox_and_the_pool_refills(
    docker_sandboxes: DockerSandboxes,
) -> None:
    pool = WarmPool(docker_sandboxes, 2, max_size=4, parallel=2)
    activities = SandboxActivities(docker_sandboxes, pool=pool)
    filling = asyncio.create_task(pool.run())
    handles: list[SandboxHandle] = []
    try:

        async def ready(n: int) -> bool:
            return len(pool.ready) >= n

        await wait_for(lambda: ready(2), 60, "the pool's first two containers")
        assert pool.target() == 2  # no demand yet: its least size
        burst = [ProvisionRequest(session_id=f"burst-{i}-{uuid.uuid4().hex[:4]}", spec=SandboxSpec()) for i in range(6)]
        handles = list(
            await asyncio.gather(*(ActivityEnvironment().run(activities.provision_sandbox, r) for r in burst))
        )
        assert len({h.sandbox_id for h in handles}) == 6, "a sandbox of its own for each session"
        assert sum(h.from_pool for h in handles) >= 2, "the pool's two first"
        for h in handles:
            assert_hardened(docker_sandboxes, h.sandbox_id)
            assert (await run(activities, h, "id -u")).output.strip() == "1000"
        # Six asked within seconds: the pool grows toward that, within its bound.
        assert pool.target() == 4
        await wait_for(lambda: ready(4), 90, "the pool refilled to the recent demand")
        await asyncio.sleep(0.5)
        assert len(pool.ready) == 4 and pool.starting == 0, "never past its bound"
        for container_id in pool.ready:
            assert_hardened(docker_sandboxes, container_id)
    finally:
        filling.cancel()
        await asyncio.to_thread(pool.drain)
        for h in handles:
            docker_sandboxes.destroy(h.sandbox_id)


async def test_the_sandbox_says_when_the_workspace_has_nothing_unsaved(
    docker_sandboxes: DockerSandboxes, tmp_path: Path
) -> None:
    activities = SandboxActivities(docker_sandboxes, blobs=LocalBlobStore(tmp_path))
    env = ActivityEnvironment()
    session = f"unsaved-{uuid.uuid4().hex[:6]}"
    empty: SandboxHandle = await env.run(
        activities.provision_sandbox, ProvisionRequest(session_id=session, spec=SandboxSpec())
    )
    seeded: SandboxHandle = await env.run(
        activities.provision_sandbox,
        ProvisionRequest(session_id=session, spec=SandboxSpec(), seed=WorkspaceSeed(files={"a.txt": "seed\n"})),
    )
    try:
        assert not (await run(activities, empty, "ls /workspace; echo hi")).unsaved, "empty, and still empty"
        assert (await run(activities, seeded, "true")).unsaved, "a seed is not kept until a snapshot is taken"
        assert (await run(activities, empty, "echo x > /workspace/x")).unsaved
        ref: SnapshotRef = await env.run(
            activities.snapshot_workspace, SnapshotRequest(handle=empty, session_id=session)
        )
        assert not (await run(activities, empty, "cat /workspace/x")).unsaved, "read since the snapshot: saved"
        assert (await run(activities, empty, "mkdir -p /workspace/d && touch /workspace/d/y")).unsaved
        assert (await run(activities, empty, "true")).unsaved, "still unsaved until the next snapshot"
        await env.run(activities.snapshot_workspace, SnapshotRequest(handle=empty, session_id=session, previous=ref))
        assert (await run(activities, empty, "rm /workspace/d/y")).unsaved, "a removal is a change"
        # A workspace restored from a snapshot is as kept.
        restored: SandboxHandle = await env.run(
            activities.provision_sandbox, ProvisionRequest(session_id=session, spec=SandboxSpec(), restore=ref)
        )
        try:
            out = await run(activities, restored, "cat /workspace/x")
            assert out.output.strip() == "x" and not out.unsaved
        finally:
            docker_sandboxes.destroy(restored.sandbox_id)
    finally:
        docker_sandboxes.destroy(empty.sandbox_id)
        docker_sandboxes.destroy(seeded.sandbox_id)


async def test_the_release_after_the_answer_survives_a_sigkill_of_the_sandbox_worker(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """The sandbox worker dies right after the tool call, before the answer: the session answers
    anyway, and once the worker is back its host takes the last snapshot and removes the container."""
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo kept > /workspace/note"})),
            Step(text="answered", delay_ms=1500),
        ],
    )
    worker_processes("--harness")
    sandbox = worker_processes("--sandbox", "--warm-pool", "0")
    handle = await start_agent_session(chaos_client, coder(), f"Note it. {marker}", one_shot=True)

    async def ran() -> bool:
        return any(e.kind == "tool_result" for e in await session_events(chaos_client, handle.id))

    await wait_for(ran, 60, "the tool call")
    sandbox.send_signal(signal.SIGKILL)
    sandbox.wait(timeout=10)
    result: SessionResult = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.status == "done" and result.answer == "answered"  # the answer did not wait for the host
    events = await session_events(chaos_client, handle.id)
    (provisioned,) = [e.sandbox for e in events if e.kind == "sandbox_provisioned"]
    assert provisioned is not None
    assert docker.from_env().containers.get(provisioned.sandbox_id).status == "running", "not yet released"

    assert events[-2].kind == "sandbox_released" and events[-2].snapshot, "the note is unsaved"
    worker_processes("--sandbox", "--warm-pool", "0")  # the same host, back: its reaper finds the container
    (release,) = (await released(events, handle.id, within_s=90)).values()  # the container is gone
    assert release is not None and release.destroyed and release.snapshot is not None, release
    assert LocalBlobStore().read(release.snapshot.key), "the last snapshot exists"


async def test_a_host_at_its_limit_leaves_new_sandboxes_to_another_host(
    chaos_client: Client,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    full, other = f"full-{uuid.uuid4().hex[:4]}", f"other-{uuid.uuid4().hex[:4]}"
    marker = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "hostname"})), Step(text="ok")]
    )
    worker_processes("--harness")
    limits = {"SANDBOX_HOST_ID": full, "SANDBOX_MAX_CONTAINERS": "1"}
    worker_processes("--sandbox", "--warm-pool", "0", env=limits)

    async def host_of(session_id: str) -> str | None:
        for e in await session_events(chaos_client, session_id):
            if e.kind == "sandbox_provisioned" and e.sandbox is not None:
                return e.sandbox.host_queue.removeprefix("sandboxes-")
        return None

    async def idle(session_id: str) -> bool:
        return any(e.kind == "status" and e.status == "idle" for e in await session_events(chaos_client, session_id))

    first = await start_agent_session(chaos_client, coder(), f"Hold a sandbox. {marker}")
    await wait_for(lambda: idle(first.id), 60, "the first session's answer")
    assert await host_of(first.id) == full  # the only host
    # That host is full now: the next sessions wait for, and get, the other host.
    worker_processes("--sandbox", "--warm-pool", "0", env={"SANDBOX_HOST_ID": other})
    later = [await start_agent_session(chaos_client, coder(), f"Another {i}. {marker}") for i in range(3)]
    for h in later:
        await wait_for(lambda h=h: idle(h.id), 90, "a later session's answer")
        assert await host_of(h.id) == other
    for h in [first, *later]:
        await h.signal("end_session")
        await h.result()


def test_the_pool_aims_at_the_busiest_minute_of_the_last_five(docker_sandboxes: DockerSandboxes) -> None:
    pool = WarmPool(docker_sandboxes, 2, max_size=10)  # (never run: no container is made)
    now = time.monotonic()
    assert pool.target(now) == 2, "no demand: its least size"
    pool._asked.extend([now - 250 + i for i in range(6)])  # six within seconds, four minutes ago
    pool._asked.extend([now - 100 + 20 * i for i in range(4)])  # four spread over a minute
    assert pool.target(now) == 6
    pool._asked.extend([now - 5 + 0.1 * i for i in range(20)])  # a burst of twenty: as many as it may
    assert pool.target(now) == 10
    assert pool.target(now + 301) == 2, "five quiet minutes later: back to its least size"


async def test_a_busy_host_defers_its_release_passes_but_not_beyond_their_bound() -> None:
    """While sessions provision and run calls on the host, releases wait for a quiet moment, up to
    `defer_s` after the last pass; a quiet host releases at once."""

    class Host:
        owners = {"c1": "s1"}
        owned_at = {"c1": 0.0}  # (long owned: not fresh)

    busy = [True]
    released_now: list[str] = []
    reaper = Reaper(None, Host(), quiet=lambda: not busy[0], defer_s=0.5)  # type: ignore[arg-type]

    async def none_running(sessions: set[str]) -> set[str]:
        return set()

    async def closed(session_id: str) -> str:
        return "its session is completed"

    async def release(container_id: str, session_id: str, reason: str) -> bool:
        released_now.append(container_id)
        return True

    reaper._running, reaper._session_closed, reaper._release = none_running, closed, release  # type: ignore[method-assign]
    reaper._released_at = time.monotonic()
    assert await reaper.release_closed() == [] and not released_now, "busy: the pass waits"
    await asyncio.sleep(0.6)
    assert await reaper.release_closed() == ["c1"], "busy, but the bound has passed: released"
    busy[0] = False
    assert await reaper.release_closed() == ["c1"], "quiet: at once"
