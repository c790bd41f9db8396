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


async def test_a_call_stopped_before_it_began_says_so(activities: SandboxActivities, handle: SandboxHandle) -> None:
    # What the killer leaves for a call interrupted between its directory and its command: an exit
    # code, no output. Asked again (a retry), the call is not run and says why it has no output.
    early = "/tmp/.da/calls/stopped-early"
    await run(activities, handle, "bash", {"command": f"mkdir -p {early} && echo 137 > {early}/rc"})
    again = await run(activities, handle, "bash", {"command": "echo ran > /workspace/ran.txt"}, call_id="stopped-early")
    assert again.is_error and again.exit_code == 137
    assert "[this call was stopped before its command started: it did not run]" in again.output
    assert "No such file" not in again.output
    assert (await run(activities, handle, "bash", {"command": "ls /workspace/ran.txt"})).exit_code == 2


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


def test_a_removal_another_pass_already_started_counts_as_removed(
    docker_sandboxes: DockerSandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's reaper, a sweep and a pool drain may remove the same container at once: Docker
    answers the later ones 409 "removal ... is already in progress", which is no failure."""
    import docker.errors
    import requests

    container = docker_sandboxes.create("session-racing-removals", SandboxSpec())
    api = docker_sandboxes.docker.api
    remove = api.remove_container

    def removed_by_another_pass(container_id: str, **kwargs: object) -> None:
        remove(container_id, force=True)  # the other pass's removal, under way when ours arrives
        answer = requests.Response()
        answer.status_code = 409
        raise docker.errors.APIError(
            "409 Client Error: Conflict",
            response=answer,
            explanation=f"removal of container {container_id} is already in progress",
        )

    monkeypatch.setattr(api, "remove_container", removed_by_another_pass)
    assert docker_sandboxes.destroy(container.id or "")
    assert container.id not in docker_sandboxes.owners
    monkeypatch.undo()
    assert not docker_sandboxes.running(container.id or "")

    def conflicting(container_id: str, **kwargs: object) -> None:  # any other conflict is still an error
        answer = requests.Response()
        answer.status_code = 409
        raise docker.errors.APIError("409 Client Error: Conflict", response=answer, explanation="something else")

    other = docker_sandboxes.create("session-racing-removals", SandboxSpec())
    monkeypatch.setattr(api, "remove_container", conflicting)
    with pytest.raises(docker.errors.APIError):
        docker_sandboxes.destroy(other.id or "")
    monkeypatch.undo()
    assert docker_sandboxes.destroy(other.id or "")


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


# --- after a timeout or a kill the sandbox is clean and the shell ready (issue 14) ---------------


@pytest.fixture
def fresh(activities: SandboxActivities) -> Iterator[SandboxHandle]:
    """A sandbox of its own, for a test that may break it."""
    h: SandboxHandle = _run_sync(activities.provision_sandbox, ProvisionRequest(session_id="t", spec=SandboxSpec()))
    yield h
    activities.sandboxes.destroy(h.sandbox_id)


async def leftovers(activities: SandboxActivities, handle: SandboxHandle) -> list[str]:
    """The processes in the container besides its own (session 1: the init and `sleep infinity`),
    the shell (and the `ps` it runs) and the shell's killer."""
    out = await run(activities, handle, "bash", {"command": "echo $$; ps -eo sid=,args="})
    shell, *rows = out.output.splitlines()
    others = [args for sid, args in (r.split(None, 1) for r in rows) if sid not in ("1", shell)]
    others.remove("bash --noprofile --norc")  # the killer
    return others


async def test_a_fork_bomb_cut_at_its_timeout_leaves_a_ready_shell(
    activities: SandboxActivities, fresh: SandboxHandle
) -> None:
    await run(activities, fresh, "bash", {"command": "cd /tmp && export KEEP=yes"})
    bomb = await run(activities, fresh, "bash", {"command": ":(){ :|:& };:; sleep 30"}, timeout_s=3)
    assert bomb.timed_out and bomb.is_error and "timed out after 3s" in bomb.output, bomb.output
    assert "used up the sandbox's process limit (256 processes" in bomb.output
    after = await run(activities, fresh, "bash", {"command": "echo ok"})
    assert (after.output, after.exit_code, after.is_error) == ("ok\n", 0, False)
    assert activities.sandboxes.running(fresh.sandbox_id)  # the same sandbox, not a replacement
    state = await run(activities, fresh, "bash", {"command": "pwd; echo $KEEP"})
    assert state.output.split() == ["/tmp", "yes"]
    assert await leftovers(activities, fresh) == []


async def test_a_plain_timeout_then_the_next_command_runs(activities: SandboxActivities, fresh: SandboxHandle) -> None:
    out = await run(activities, fresh, "bash", {"command": "sleep 100"}, timeout_s=1)
    assert out.timed_out and "timed out after 1s" in out.output
    after = await run(activities, fresh, "bash", {"command": "echo ok"})
    assert (after.output, after.exit_code, after.is_error) == ("ok\n", 0, False)


async def test_a_timeout_stops_every_process_the_command_started(
    activities: SandboxActivities, fresh: SandboxHandle
) -> None:
    """Also those that left the shell's process group or session (setsid, nohup … &)."""
    command = "sleep 201 & setsid sleep 202 & (setsid bash -c 'sleep 203 & wait' &); sleep 100"
    out = await run(activities, fresh, "bash", {"command": command}, timeout_s=1.5)
    assert out.timed_out
    assert await leftovers(activities, fresh) == []


async def test_a_killed_shell_is_not_said_to_have_exited(activities: SandboxActivities, fresh: SandboxHandle) -> None:
    killed = await run(activities, fresh, "bash", {"command": "sleep 203 & kill -KILL $$"})
    assert killed.is_error and "killed" in killed.output, killed.output
    assert "exit, exec or set -e" not in killed.output and "shell exited" not in killed.output
    after = await run(activities, fresh, "bash", {"command": "echo ok"})
    assert after.output == "ok\n"
    assert await leftovers(activities, fresh) == []
    exited = await run(activities, fresh, "bash", {"command": "exit 3"})
    assert exited.is_error and "the shell exited with code 3" in exited.output, exited.output


# --- what the model sees of a failed command: what a shell shows, no path of ours (issue 14) -----


async def test_bash_errors_read_like_a_normal_shell(activities: SandboxActivities, handle: SandboxHandle) -> None:
    missing = await run(activities, handle, "bash", {"command": "insmod foo.ko"})
    assert missing.output == "bash: line 1: insmod: command not found\n\n[exit code 127]"
    second = await run(activities, handle, "bash", {"command": "echo a\nnope"})
    assert second.output == "a\nbash: line 2: nope: command not found\n\n[exit code 127]"
    syntax = await run(activities, handle, "bash", {"command": "if then"})
    assert syntax.output.startswith("bash: line 1: syntax error") and syntax.exit_code == 2, syntax.output
    source = await run(activities, handle, "bash", {"command": 'echo "$0 ${BASH_SOURCE[0]}"; f() { nope; }; f'})
    assert source.output.startswith("bash bash\nbash: line 1: nope: command not found"), source.output
    partial = await run(activities, handle, "bash", {"command": "nope; sleep 30"}, timeout_s=1)
    assert partial.timed_out and partial.output.startswith("bash: line 1: nope: command not found"), partial.output
    for out in (missing, second, syntax, source, partial):
        assert "/tmp/.da" not in out.output


SECRET = "echo x > secret; chmod 000 secret"
READ_ONLY = "echo x > ro.txt; chmod 444 ro.txt"
# (tool, path, set-up command, the start of the expected error); write_file writes "x", edit_file edits x -> y
FILE_TOOL_ERRORS: list[tuple[str, str, str, str]] = [
    ("read_file", "nope.txt", "true", "read_file: no such file: /workspace/nope.txt"),
    ("read_file", "d", "mkdir -p d", "read_file: /workspace/d is a directory"),
    ("read_file", "secret", SECRET, "read_file: permission denied: /workspace/secret"),
    ("read_file", "/dev/zero", "true", "read_file: /dev/zero is not a regular file"),
    ("read_file", "f.txt/x", "echo x > f.txt", "read_file: no such file: /workspace/f.txt/x"),
    ("write_file", "d", "mkdir -p d", "write_file: /workspace/d is a directory"),
    ("write_file", "/etc/x", "true", "write_file: cannot write /etc/x: Read-only file system"),
    ("write_file", "ro.txt", READ_ONLY, "write_file: cannot write /workspace/ro.txt: Permission denied"),
    (
        "write_file",
        "f.txt/x",
        "echo x > f.txt",
        "write_file: cannot write /workspace/f.txt/x: /workspace/f.txt is not a directory",
    ),
    ("edit_file", "nope.txt", "true", "edit_file: no such file: /workspace/nope.txt"),
    ("edit_file", "d", "mkdir -p d", "edit_file: /workspace/d is a directory"),
    ("edit_file", "secret", SECRET, "edit_file: permission denied: /workspace/secret"),
    ("edit_file", "ro.txt", READ_ONLY, "edit_file: cannot write /workspace/ro.txt: Permission denied"),
    ("edit_file", "b.bin", "printf 'x\\377\\0' > b.bin", "edit_file: /workspace/b.bin is not UTF-8 text"),
    ("edit_file", "f.txt/x", "echo x > f.txt", "edit_file: no such file: /workspace/f.txt/x"),
]


@pytest.mark.parametrize(("tool", "path", "setup", "expected"), FILE_TOOL_ERRORS, ids=lambda v: str(v)[:24])
async def test_file_tool_errors_are_plain(
    activities: SandboxActivities, handle: SandboxHandle, tool: str, path: str, setup: str, expected: str
) -> None:
    await run(activities, handle, "bash", {"command": f"mkdir -p /workspace/e && cd /workspace/e && {setup}"})
    await run(activities, handle, "bash", {"command": "cd /workspace"})
    if not path.startswith("/"):
        path, expected = f"e/{path}", expected.replace("/workspace/", "/workspace/e/")
    args: dict[str, object] = {"path": path}
    if tool == "write_file":
        args["content"] = "x"
    if tool == "edit_file":
        args.update(old_string="x", new_string="y")
    out = await run(activities, handle, tool, args)
    await run(activities, handle, "bash", {"command": "chmod -R u+rwx /workspace/e; rm -rf /workspace/e"})
    assert out.is_error and out.output.startswith(expected), out.output
    assert "/tmp/.da" not in out.output and "Traceback" not in out.output and "line 1" not in out.output


# --- read_file of a binary file (issue 14) ------------------------------------------------------


async def test_read_file_describes_a_binary_file(activities: SandboxActivities, handle: SandboxHandle) -> None:
    png = "printf '\\211PNG\\r\\n\\032\\n\\0\\0\\0\\rIHDR' > img.png; head -c 1000 /dev/urandom >> img.png"
    await run(activities, handle, "bash", {"command": f"cd /workspace && {png} && head -c 2048 /dev/urandom > r.bin"})
    image = await run(activities, handle, "read_file", {"path": "img.png"})
    assert not image.is_error and "\ufffd" not in image.output
    assert image.output.startswith("read_file: /workspace/img.png is a binary file (1016 bytes, PNG image)")
    assert "base64 /workspace/img.png" in image.output and "od " in image.output
    data = await run(activities, handle, "read_file", {"path": "r.bin"})
    assert (
        data.output.startswith("read_file: /workspace/r.bin is a binary file (2048 bytes")
        and "\ufffd" not in data.output
    )


async def test_read_file_returns_utf8_text_as_it_is(activities: SandboxActivities, handle: SandboxHandle) -> None:
    text = "héllo ✓ 日本語\n\tçà et là — «quotes»\n🙂 no newline at the end"
    await run(activities, handle, "write_file", {"path": "utf8.txt", "content": text})
    read = await run(activities, handle, "read_file", {"path": "utf8.txt"})
    assert (read.output, read.is_error) == (text, False)
    empty = await run(activities, handle, "bash", {"command": ": > /workspace/empty.txt"})
    assert not empty.is_error
    assert (await run(activities, handle, "read_file", {"path": "empty.txt"})).output == ""


async def test_an_interrupt_stops_the_command_and_all_it_started(
    activities: SandboxActivities, fresh: SandboxHandle
) -> None:
    import asyncio

    from durable_agents.sandboxes.docker_sandbox import ShellDied

    sandboxes, container = activities.sandboxes, fresh.sandbox_id
    command = "sleep 301 & setsid sleep 302 & sleep 100"
    running = asyncio.create_task(asyncio.to_thread(sandboxes.run, container, "interrupted", command, 1000, 60))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(sandboxes.interrupt, container)
    with pytest.raises(ShellDied) as died:
        await asyncio.wait_for(running, timeout=20)
    assert died.value.signal == 9
    after = await run(activities, fresh, "bash", {"command": "echo ok"})
    assert (after.output, after.exit_code) == ("ok\n", 0)
    assert await leftovers(activities, fresh) == []
