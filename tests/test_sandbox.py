"""Sandboxes on real Docker: the persistent shell, idempotent calls, timeouts, output caps,
hardening. The execute activity runs in Temporal's ActivityEnvironment (no server needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from temporalio.testing import ActivityEnvironment

from durable_agents.contracts import ExecuteRequest, ExecuteResult, ProvisionRequest, SandboxHandle, SandboxSpec
from durable_agents.sandboxes.activities import SandboxActivities
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes


@pytest.fixture(scope="module")
def activities(docker_sandboxes: DockerSandboxes) -> SandboxActivities:
    return SandboxActivities(docker_sandboxes)


@pytest.fixture(scope="module")
def handle(activities: SandboxActivities) -> Iterator[SandboxHandle]:
    h: SandboxHandle = _run_sync(activities.provision_sandbox, ProvisionRequest(session_id="t", spec=SandboxSpec()))
    yield h
    activities.sandboxes.destroy(h.sandbox_id)


def _run_sync(fn, arg):  # type: ignore[no-untyped-def]
    import asyncio

    return asyncio.run(ActivityEnvironment().run(fn, arg))


async def run(
    activities: SandboxActivities,
    handle: SandboxHandle,
    name: str,
    args: dict[str, object],
    *,
    call_id: str | None = None,
    timeout_s: float = 20,
    cap: int = 30_000,
) -> ExecuteResult:
    req = ExecuteRequest(
        handle=handle, call_id=call_id or uuid.uuid4().hex, name=name, input=args, timeout_s=timeout_s, output_cap=cap
    )
    result: ExecuteResult = await ActivityEnvironment().run(activities.execute, req)
    return result


async def test_shell_keeps_cwd_and_exported_env(activities: SandboxActivities, handle: SandboxHandle) -> None:
    await run(
        activities, handle, "bash", {"command": "mkdir -p /workspace/proj && cd /workspace/proj && export GREETING=hej"}
    )
    out = await run(activities, handle, "bash", {"command": "pwd; echo $GREETING"})
    assert out.output.split() == ["/workspace/proj", "hej"] and not out.is_error


async def test_file_tools_roundtrip(activities: SandboxActivities, handle: SandboxHandle) -> None:
    wrote = await run(activities, handle, "write_file", {"path": "dir/it's.txt", "content": "alpha\nbeta\n"})
    assert "wrote /workspace/dir/it's.txt (11 bytes)" in wrote.output
    read = await run(activities, handle, "read_file", {"path": "/workspace/dir/it's.txt"})
    assert read.output == "alpha\nbeta\n"
    edited = await run(
        activities, handle, "edit_file", {"path": "dir/it's.txt", "old_string": "beta", "new_string": "gamma"}
    )
    assert "1 replacement" in edited.output and not edited.is_error
    assert (await run(activities, handle, "read_file", {"path": "dir/it's.txt"})).output == "alpha\ngamma\n"
    missing = await run(
        activities, handle, "edit_file", {"path": "dir/it's.txt", "old_string": "zeta", "new_string": ""}
    )
    assert missing.is_error and "not found" in missing.output
    nofile = await run(activities, handle, "read_file", {"path": "nope.txt"})
    assert nofile.is_error and "no such file: /workspace/nope.txt" in nofile.output


async def test_edit_needs_a_unique_match(activities: SandboxActivities, handle: SandboxHandle) -> None:
    await run(activities, handle, "write_file", {"path": "dup.txt", "content": "x x x"})
    ambiguous = await run(activities, handle, "edit_file", {"path": "dup.txt", "old_string": "x", "new_string": "y"})
    assert ambiguous.is_error and "occurs 3 times" in ambiguous.output
    everywhere = await run(
        activities, handle, "edit_file", {"path": "dup.txt", "old_string": "x", "new_string": "y", "replace_all": True}
    )
    assert "3 replacement" in everywhere.output


async def test_a_call_id_runs_once(activities: SandboxActivities, handle: SandboxHandle) -> None:
    command = {"command": "echo run >> /workspace/runs.log; wc -l < /workspace/runs.log"}
    first = await run(activities, handle, "bash", command, call_id="call-once")
    again = await run(activities, handle, "bash", command, call_id="call-once")
    assert first.output == again.output == "1\n"
    count = await run(activities, handle, "bash", {"command": "wc -l < /workspace/runs.log"})
    assert count.output == "1\n"


async def test_timeout_kills_the_command_and_keeps_the_shell_state(
    activities: SandboxActivities, handle: SandboxHandle
) -> None:
    await run(activities, handle, "bash", {"command": "cd /tmp && export KEEP=yes"})
    out = await run(activities, handle, "bash", {"command": "echo started; sleep 300"}, timeout_s=1.5)
    assert out.timed_out and out.is_error
    assert "started" in out.output and "timed out after 1.5s" in out.output
    after = await run(
        activities, handle, "bash", {"command": "pwd; echo $KEEP; ps -eo cmd | grep -c '[s]leep 300'; true"}
    )
    assert after.output.split() == ["/tmp", "yes", "0"]


async def test_large_output_is_cut_with_a_note(activities: SandboxActivities, handle: SandboxHandle) -> None:
    out = await run(activities, handle, "bash", {"command": "seq 1 200000"}, cap=2_000)
    assert out.output.startswith("1\n2\n3\n") and "200000" in out.output
    assert "[output truncated: 1288895 bytes in all; the middle 1286895 bytes were cut]" in out.output
    assert out.truncated_chars == 1_286_895 and len(out.output) < 2_200


async def test_exit_codes_and_a_shell_that_exits(activities: SandboxActivities, handle: SandboxHandle) -> None:
    failed = await run(activities, handle, "bash", {"command": "ls /nonexistent"})
    assert failed.is_error and failed.exit_code == 2 and "[exit code 2]" in failed.output
    await run(activities, handle, "bash", {"command": "cd /workspace/proj"})
    died = await run(activities, handle, "bash", {"command": "exit 3"})
    assert died.is_error and "shell exited" in died.output
    back = await run(activities, handle, "bash", {"command": "pwd"})
    assert back.output.strip() == "/workspace/proj"


async def test_sandbox_is_hardened(activities: SandboxActivities, handle: SandboxHandle) -> None:
    probe = (
        "id -u; grep CapEff /proc/self/status | awk '{print $2}'; "
        "touch /usr/x 2>/dev/null && echo rootfs-writable || echo rootfs-readonly; "
        "grep NoNewPrivs /proc/self/status | awk '{print $2}'; "
        "ls /sys/class/net; env | grep -ci -e key -e token -e secret -e anthropic || true"
    )
    out = (await run(activities, handle, "bash", {"command": probe})).output.split()
    assert out == ["1000", "0000000000000000", "rootfs-readonly", "1", "lo", "0"]
    attrs = activities.sandboxes.docker.api.inspect_container(handle.sandbox_id)["HostConfig"]
    assert attrs["NetworkMode"] == "none" and attrs["ReadonlyRootfs"] and not attrs["Privileged"]
    assert attrs["CapDrop"] == ["ALL"] and attrs["PidsLimit"] == 256
    assert attrs["Memory"] == attrs["MemorySwap"] == 1024 * 1024 * 1024
    assert attrs["Binds"] in (None, [])
    limits = {u["Name"]: u["Hard"] for u in attrs["Ulimits"]}
    assert limits == {"nofile": 1024, "core": 0, "fsize": 512 * 2**20}
    assert attrs["Init"] and attrs["SecurityOpt"] == ["no-new-privileges:true"]


async def test_a_gone_container_raises_sandbox_lost(activities: SandboxActivities) -> None:
    from temporalio.exceptions import ApplicationError

    h: SandboxHandle = await ActivityEnvironment().run(
        activities.provision_sandbox, ProvisionRequest(session_id="t", spec=SandboxSpec())
    )
    assert await ActivityEnvironment().run(activities.destroy_sandbox, h)
    with pytest.raises(ApplicationError) as raised:
        await run(activities, h, "bash", {"command": "true"})
    assert raised.value.type == "SandboxLost" and raised.value.non_retryable


async def test_the_warm_pool_binds_prestarted_containers(docker_sandboxes: DockerSandboxes) -> None:
    import asyncio

    from durable_agents.sandboxes.pool import WarmPool
    from durable_agents.sandboxes.reaper import Reaper

    pool = WarmPool(docker_sandboxes, size=2)
    activities = SandboxActivities(docker_sandboxes, pool=pool)
    filling = asyncio.create_task(pool.run())
    try:
        for _ in range(200):
            if len(pool.ready) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(pool.ready) == 2
        warm: SandboxHandle = await ActivityEnvironment().run(
            activities.provision_sandbox, ProvisionRequest(session_id="pool-session", spec=SandboxSpec())
        )
        assert warm.from_pool and warm.sandbox_id not in pool.held
        out = await run(activities, warm, "bash", {"command": "cat /tmp/.da/session; echo; id -u"})
        assert out.output.split() == ["pool-session", "1000"]
        other = SandboxSpec(memory_mb=2048)
        cold: SandboxHandle = await ActivityEnvironment().run(
            activities.provision_sandbox, ProvisionRequest(session_id="pool-session", spec=other)
        )
        assert not cold.from_pool
        # The reaper leaves the pool's containers alone and knows the bound one by its session file.
        reaper = Reaper(None, docker_sandboxes, keep=pool.held)  # type: ignore[arg-type]
        mine = {c.id: c for c in docker_sandboxes.mine()}
        assert docker_sandboxes.bound_session(mine[warm.sandbox_id]) == "pool-session"
        for held in pool.held:
            assert await reaper._why_orphaned(mine[held]) is None
    finally:
        filling.cancel()
        pool.drain()
    assert pool.held == set()
