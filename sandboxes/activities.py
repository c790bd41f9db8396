"""Sandbox activities: `provision_sandbox` (shared `sandboxes` queue) and `execute` /
`destroy_sandbox` (this host's own queue, named in the handle that provision returns).

`execute(name, input) -> output` is the only way the harness reaches a sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import json
import posixpath
import shlex
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import docker.errors
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_agents.activities.heartbeat import heartbeating
from durable_agents.contracts import (
    DESTROY_SANDBOX,
    EXECUTE,
    PROVISION_SANDBOX,
    SANDBOX_IMAGE_MISSING,
    SANDBOX_LOST,
    SANDBOX_TOOLS,
    SNAPSHOT_WORKSPACE,
    ExecuteRequest,
    ExecuteResult,
    ProvisionRequest,
    SandboxHandle,
    SnapshotRef,
    SnapshotRequest,
    host_queue,
)
from durable_agents.logs import activity_log
from durable_agents.sandboxes.docker_sandbox import WORKSPACE, DockerSandboxes, SandboxGone, ShellDied
from durable_agents.sandboxes.pool import WarmPool
from durable_agents.sandboxes.seed import SeedError, seed_archive
from durable_agents.sandboxes.snapshots import BlobStore, LocalBlobStore

HEARTBEAT_EVERY_S = 2.0

_EDIT_PY = r"""
import base64, json, sys
a = json.loads(base64.b64decode(sys.argv[1]))
try:
    text = open(a["path"], encoding="utf-8").read()
except FileNotFoundError:
    sys.exit(f"edit_file: no such file: {a['path']}")
except IsADirectoryError:
    sys.exit(f"edit_file: {a['path']} is a directory")
n = text.count(a["old"])
if n == 0:
    sys.exit(f"edit_file: old_string was not found in {a['path']}")
if n > 1 and not a["all"]:
    sys.exit(f"edit_file: old_string occurs {n} times in {a['path']}; make it unique or set replace_all")
open(a["path"], "w", encoding="utf-8").write(text.replace(a["old"], a["new"]))
print(f"edited {a['path']}: {n if a['all'] else 1} replacement(s)")
"""


def _path(raw: str) -> str:
    return posixpath.normpath(posixpath.join(WORKSPACE, raw))


def tool_script(name: str, args: dict[str, Any]) -> str:
    """The bash that carries out one sandbox tool call inside the persistent shell."""
    if name not in SANDBOX_TOOLS:
        raise ValueError(f"not a sandbox tool: {name}")
    if name == "bash":
        return str(args["command"])
    path = _path(str(args["path"]))
    q = shlex.quote(path)
    if name == "read_file":
        return (
            f"if [ -d {q} ]; then printf 'read_file: %s is a directory\\n' {q}; false; "
            f"elif [ ! -f {q} ]; then printf 'read_file: no such file: %s\\n' {q}; false; else cat -- {q}; fi"
        )
    if name == "write_file":
        data = base64.b64encode(str(args["content"]).encode()).decode()
        return (
            f"mkdir -p -- {shlex.quote(posixpath.dirname(path))} && printf %s {data} | base64 -d > {q} "
            f'&& echo "wrote {path} ($(wc -c < {q}) bytes)"'
        )
    payload = {
        "path": path,
        "old": args["old_string"],
        "new": args["new_string"],
        "all": bool(args.get("replace_all", False)),
    }
    encoded = base64.b64encode(json.dumps(payload).encode()).decode()
    return f"python3 -c {shlex.quote(_EDIT_PY)} {encoded}"


def _safe(session_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in session_id)


class SandboxActivities:
    def __init__(
        self, sandboxes: DockerSandboxes, blobs: BlobStore | None = None, pool: WarmPool | None = None
    ) -> None:
        self.sandboxes = sandboxes
        self.blobs: BlobStore = blobs or LocalBlobStore()
        self.pool = pool
        self.queue = host_queue(sandboxes.host_id)

    def _restore(self, container_id: str, ref: SnapshotRef) -> str | None:
        """Restore a snapshot into a new container; the error text if it could not be."""
        try:
            self.sandboxes.restore(container_id, self.blobs.read(ref.key))
        except (OSError, RuntimeError, docker.errors.APIError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    @activity.defn(name=PROVISION_SANDBOX)
    async def provision_sandbox(self, req: ProvisionRequest) -> SandboxHandle:
        log = activity_log()
        started = time.monotonic()
        container_id = None
        if self.pool is not None and self.pool.matches(req.spec):
            container_id = await asyncio.to_thread(self.pool.take, req.session_id)
        from_pool = container_id is not None
        try:
            if container_id is None:
                container_id = (await asyncio.to_thread(self.sandboxes.create, req.session_id, req.spec)).id
        except docker.errors.ImageNotFound as e:
            raise ApplicationError(
                f"sandbox image {req.spec.image!r} is not on host {self.sandboxes.host_id}: build it with `make setup`",
                type=SANDBOX_IMAGE_MISSING,
                non_retryable=True,
            ) from e
        handle = SandboxHandle(
            sandbox_id=container_id or "",
            from_pool=from_pool,
            host_queue=self.queue,
            image=req.spec.image,
            runtime=req.spec.runtime or "runc",
        )
        if req.restore is not None:
            error = await asyncio.to_thread(self._restore, handle.sandbox_id, req.restore)
            handle = handle.model_copy(update={"restored": None if error else req.restore, "restore_error": error})
        elif req.seed is not None:
            try:
                data, what = await asyncio.to_thread(seed_archive, req.seed)
                await asyncio.to_thread(self.sandboxes.restore, handle.sandbox_id, data)
            except (SeedError, RuntimeError, subprocess.TimeoutExpired) as e:
                await asyncio.to_thread(self.sandboxes.destroy, handle.sandbox_id)
                raise ApplicationError(
                    f"the workspace could not be seeded: {e}", type="SeedFailed", non_retryable=True
                ) from e
            handle = handle.model_copy(update={"seeded": what})
        log.info(
            "sandbox provisioned",
            container=handle.sandbox_id[:12],
            image=handle.image,
            from_pool=from_pool,
            restored=handle.restored is not None,
            restore_error=handle.restore_error,
            seconds=round(time.monotonic() - started, 3),
        )
        return handle

    @activity.defn(name=EXECUTE)
    async def execute(self, req: ExecuteRequest) -> ExecuteResult:
        log = activity_log()
        script = tool_script(req.name, req.input)

        started = time.monotonic()
        try:
            async with heartbeating(HEARTBEAT_EVERY_S):
                out = await asyncio.to_thread(
                    self.sandboxes.run, req.handle.sandbox_id, req.call_id, script, req.output_cap, req.timeout_s
                )
        except asyncio.CancelledError:
            # Interrupted: stop the command too, not only the wait for it.
            await asyncio.to_thread(self.sandboxes.interrupt, req.handle.sandbox_id)
            log.info("tool interrupted", tool=req.name)
            raise
        except TimeoutError:
            partial = await asyncio.to_thread(
                self.sandboxes.read_recorded, req.handle.sandbox_id, req.call_id, req.output_cap
            )
            log.info("tool timed out", tool=req.name, timeout_s=req.timeout_s)
            return ExecuteResult(
                output=(partial + "\n" if partial else "")
                + f"[{req.name} timed out after {req.timeout_s:g}s and was killed. The shell was restarted; "
                "the working directory and exported variables from before this command are kept.]",
                is_error=True,
                timed_out=True,
            )
        except SandboxGone as e:
            raise ApplicationError(
                f"sandbox {req.handle.sandbox_id[:12]} is gone", type=SANDBOX_LOST, non_retryable=True
            ) from e
        except ShellDied:
            return ExecuteResult(
                output="[the shell exited while running this command (exit, exec or set -e?); a new shell "
                "was started with the working directory and exported variables from before it]",
                is_error=True,
            )
        output = out.output
        if out.cut:
            output += (
                f"\n[output truncated: {out.total_bytes} bytes in all; the middle "
                f"{out.total_bytes - req.output_cap} bytes were cut]"
            )
        is_error = out.exit_code != 0
        if req.name == "bash" and is_error:
            output = f"{output}\n[exit code {out.exit_code}]" if output else f"[exit code {out.exit_code}]"
        log.info(
            "tool ran",
            tool=req.name,
            exit_code=out.exit_code,
            bytes=out.total_bytes,
            seconds=round(time.monotonic() - started, 3),
        )
        return ExecuteResult(
            output=output,
            is_error=is_error,
            exit_code=out.exit_code,
            truncated_chars=max(0, out.total_bytes - req.output_cap) if out.cut else 0,
        )

    @activity.defn(name=SNAPSHOT_WORKSPACE)
    async def snapshot_workspace(self, req: SnapshotRequest) -> SnapshotRef:
        """Snapshot /workspace into the blob store, unless it is unchanged since `previous`."""
        started = time.monotonic()
        container_id = req.handle.sandbox_id
        try:
            fingerprint = await asyncio.to_thread(self.sandboxes.fingerprint, container_id)
            if req.previous is not None and req.previous.fingerprint == fingerprint:
                return req.previous
            key = f"snapshots/{_safe(req.session_id)}/{fingerprint}.tar.gz"

            def write() -> int:
                with self.blobs.writer(key) as sink:
                    return self.sandboxes.snapshot(container_id, sink)

            size = await asyncio.to_thread(write)
        except (SandboxGone, docker.errors.NotFound) as e:
            raise ApplicationError(f"sandbox {container_id[:12]} is gone", type=SANDBOX_LOST, non_retryable=True) from e
        ref = SnapshotRef(key=key, bytes=size, fingerprint=fingerprint, taken_at=datetime.now(UTC))
        activity_log().info("workspace snapshot", key=key, bytes=size, seconds=round(time.monotonic() - started, 3))
        return ref

    @activity.defn(name=DESTROY_SANDBOX)
    async def destroy_sandbox(self, handle: SandboxHandle) -> bool:
        removed = await asyncio.to_thread(self.sandboxes.destroy, handle.sandbox_id)
        activity_log().info("sandbox destroyed", container=handle.sandbox_id[:12], existed=removed)
        return removed
