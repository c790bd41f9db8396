"""Sandbox activities: `provision_sandbox` and `provision_and_execute` (a session's first call with
its provisioning) on the shared `sandboxes` queue, and `execute` / `snapshot_workspace` /
`destroy_sandbox` on this host's own queue, named in the handle that provisioning returns.

`execute(name, input) -> output` is the only way the harness reaches a sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import json
import posixpath
import re
import shlex
import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import docker.errors
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_agents.activities.heartbeat import AcknowledgedHeartbeats, acknowledged, cancelled_because, heartbeating
from durable_agents.contracts import (
    DESTROY_SANDBOX,
    EXECUTE,
    GLOB_CAP,
    GREP_CAP,
    GREP_DEFAULT_LIMIT,
    MEMORY_SEARCH,
    PROVISION_AND_EXECUTE,
    PROVISION_SANDBOX,
    SANDBOX_TOOLS,
    SNAPSHOT_WORKSPACE,
    WEB_SEARCH,
    ExecuteRequest,
    ExecuteResult,
    FirstCallRequest,
    FirstCallResult,
    ProvisionRequest,
    ReleaseResult,
    SandboxHandle,
    SnapshotRef,
    SnapshotRequest,
    host_queue,
)
from durable_agents.errors import (
    ErrorType,
    SandboxGone,
    SandboxImageMissing,
    SeedFailed,
    describe,
    provisioned_error,
    translate_errors,
)
from durable_agents.logs import activity_log
from durable_agents.sandboxes.docker_sandbox import (
    WORKSPACE,
    CommandTimedOut,
    DockerSandboxes,
    ShellDied,
    ShellUnavailable,
)
from durable_agents.sandboxes.memory_mounts import MemoryMounts
from durable_agents.sandboxes.pool import WarmPool
from durable_agents.sandboxes.seed import SeedError, seed_archive
from durable_agents.sandboxes.snapshots import BlobStore, LocalBlobStore
from durable_agents.sandboxes.tool_programs import GLOB_PY, GREP_PY, WEB_FETCH_PY
from durable_agents.settings import settings
from durable_agents.web_search import WebSearchError, render_hits, run_search, search_backend

HEARTBEAT_EVERY_S = 2.0
host_log = structlog.get_logger("sandboxes")  # outside an activity (a release by the reaper)

_EDIT_PY = r"""
import base64, json, sys
a = json.loads(base64.b64decode(sys.argv[1]))
p = a["path"]
try:
    text = open(p, encoding="utf-8").read()
except (FileNotFoundError, NotADirectoryError):
    sys.exit(f"edit_file: no such file: {p}")
except IsADirectoryError:
    sys.exit(f"edit_file: {p} is a directory")
except PermissionError:
    sys.exit(f"edit_file: permission denied: {p}")
except UnicodeDecodeError:
    sys.exit(f"edit_file: {p} is not UTF-8 text (a binary file?); change it with bash")
except OSError as e:
    sys.exit(f"edit_file: cannot read {p}: {e.strerror}")
n = text.count(a["old"])
if n == 0:
    sys.exit(f"edit_file: old_string was not found in {p}")
if n > 1 and not a["all"]:
    sys.exit(f"edit_file: old_string occurs {n} times in {p}; make it unique or set replace_all")
try:
    open(p, "w", encoding="utf-8").write(text.replace(a["old"], a["new"]))
except OSError as e:
    sys.exit(f"edit_file: cannot write {p}: {e.strerror}")
print(f"edited {p}: {n if a['all'] else 1} replacement(s)")
"""

# The file tools run in a subshell (their variables stay out of the user's shell) and say what went
# wrong in their own words, never with a shell's `bash: line 1:` or a path of ours. __P__ is the path.
_READ_SH = r"""(
p=__P__
if [ -d "$p" ]; then printf 'read_file: %s is a directory (list it with bash: ls -la %q)\n' "$p" "$p"; exit 1
elif [ -L "$p" ] && [ ! -e "$p" ]; then printf 'read_file: %s is a broken symbolic link\n' "$p"; exit 1
elif [ ! -e "$p" ]; then printf 'read_file: no such file: %s\n' "$p"; exit 1
elif [ ! -f "$p" ]; then printf 'read_file: %s is not a regular file (a device, pipe or socket)\n' "$p"; exit 1
elif [ ! -r "$p" ]; then printf 'read_file: permission denied: %s\n' "$p"; exit 1
fi
# Text is UTF-8 without NUL bytes; anything else is described, not sent as bytes (grep -P missing: text).
if ! LC_ALL=C.UTF-8 grep -qaxv '.*' -- "$p" 2>/dev/null && ! LC_ALL=C grep -qaP '\x00' -- "$p" 2>/dev/null; then
  exec cat -- "$p"
fi
t=
command -v file >/dev/null && t=$(file -b -- "$p" 2>/dev/null)
[ -n "$t" ] || case $(head -c 16 -- "$p" | od -An -tx1 | tr -d ' \n') in
  89504e470d0a1a0a*) t="PNG image" ;;
  ffd8ff*) t="JPEG image" ;;
  47494638*) t="GIF image" ;;
  52494646????????57454250*) t="WebP image" ;;
  52494646????????57415645*) t="WAV audio" ;;
  494433*) t="MP3 audio" ;;
  4f676753*) t="Ogg media" ;;
  ????????66747970*) t="MP4/QuickTime media" ;;
  25504446*) t="PDF document" ;;
  504b0304*) t="Zip archive (or a format built on zip: docx, xlsx, jar, wheel …)" ;;
  1f8b*) t="gzip-compressed data" ;;
  425a68*) t="bzip2-compressed data" ;;
  fd377a585a00*) t="xz-compressed data" ;;
  28b52ffd*) t="zstd-compressed data" ;;
  377abcaf271c*) t="7-zip archive" ;;
  7f454c46*) t="ELF executable or library" ;;
  53514c69746520666f726d6174203300*) t="SQLite database" ;;
  0061736d*) t="WebAssembly module" ;;
  cafebabe*) t="Java class file" ;;
  4d5a*) t="Windows executable" ;;
  *) [ "$(head -c 262 -- "$p" | tail -c 5 | tr -d '\000')" = ustar ] && t="tar archive" ;;
esac
if [ -z "$t" ] && ! LC_ALL=C grep -qaP '\x00' -- "$p" 2>/dev/null; then
  t="not UTF-8: binary data, or text in another encoding such as Latin-1"
fi
printf 'read_file: %s is a binary file (%s bytes, %s); read_file returns UTF-8 text only. ' "$p" \
  "$(wc -c < "$p")" "${t:-data}"
printf 'To look at its bytes use bash: od -A d -t x1z -N 512 %q (a hex dump), or base64 %q\n' "$p" "$p"
)"""
_WRITE_SH = r"""(
p=__P__ d=__D__
if [ -d "$p" ]; then printf 'write_file: %s is a directory\n' "$p"; exit 1; fi
x=$d
while [ ! -e "$x" ] && [ ! -L "$x" ]; do x=${x%/*}; x=${x:-/}; done
if [ ! -d "$x" ]; then printf 'write_file: cannot write %s: %s is not a directory\n' "$p" "$x"; exit 1; fi
e=$(mkdir -p -- "$d" 2>&1) || { printf 'write_file: cannot create the directory %s: %s\n' "$d" "${e##*: }"; exit 1; }
e=$({ printf %s __DATA__ | base64 -d > "$p"; } 2>&1) || {
  printf 'write_file: cannot write %s: %s\n' "$p" "${e##*: }"; exit 1; }
printf 'wrote %s (%s bytes)\n' "$p" "$(wc -c < "$p")"
)"""


def _fill(template: str, **values: str) -> str:
    """`template` with each __NAME__ replaced by values[NAME], in one pass (a value is not rescanned)."""
    return re.sub(r"__([A-Z]+)__", lambda m: values[m.group(1)], template)


def _path(raw: str) -> str:
    return posixpath.normpath(posixpath.join(WORKSPACE, raw))


def _program(source: str, args: dict[str, Any]) -> str:
    """A Python program of tool_programs run on the call's arguments (base64 JSON: no quoting)."""
    encoded = base64.b64encode(json.dumps(args).encode()).decode()
    return f"python3 -c {shlex.quote(source)} {encoded}"


def tool_script(name: str, args: dict[str, Any], timeout_s: float = 60) -> str:
    """The bash that carries out one sandbox tool call inside the persistent shell (web_search's
    is made by the activity, which asks the search backend first: `SandboxActivities._web_search`)."""
    if name not in SANDBOX_TOOLS or name in (WEB_SEARCH, MEMORY_SEARCH):
        raise ValueError(f"not a sandbox tool: {name}")
    if name == "bash":
        return str(args["command"])
    if name == "glob":
        root = _path(str(args.get("path") or WORKSPACE))
        return _program(GLOB_PY, {"root": root, "pattern": str(args["pattern"]), "cap": GLOB_CAP})
    if name == "grep":
        limit = min(int(args.get("head_limit") or GREP_DEFAULT_LIMIT), GREP_CAP)
        fields = ("glob", "type", "context", "before", "after")
        return _program(
            GREP_PY,
            {
                "root": _path(str(args.get("path") or WORKSPACE)),
                "pattern": str(args["pattern"]),
                "output_mode": args.get("output_mode") or "files_with_matches",
                "case_insensitive": bool(args.get("case_insensitive")),
                "multiline": bool(args.get("multiline")),
                "line_numbers": args.get("line_numbers", True) is not False,
                "limit": limit,
                **{f: args.get(f) for f in fields},
            },
        )
    if name == "web_fetch":
        # The request's own timeout leaves the call's time to read, convert and answer.
        wait = max(1.0, min(30.0, timeout_s - 5))
        return _program(WEB_FETCH_PY, {"url": str(args["url"]), "max_chars": args.get("max_chars"), "timeout": wait})
    path = _path(str(args["path"]))
    q = shlex.quote(path)
    if name == "read_file":
        return _fill(_READ_SH, P=q)
    if name == "write_file":
        data = base64.b64encode(str(args["content"]).encode()).decode()
        return _fill(_WRITE_SH, P=q, D=shlex.quote(posixpath.dirname(path)), DATA=data)
    payload = {
        "path": path,
        "old": args["old_string"],
        "new": args["new_string"],
        "all": bool(args.get("replace_all", False)),
    }
    encoded = base64.b64encode(json.dumps(payload).encode()).decode()
    return f"python3 -c {shlex.quote(_EDIT_PY)} {encoded}"


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name}, signal {number}"
    except ValueError:
        return f"signal {number}"


def release_key(session_id: str, container_id: str) -> str:
    """Where the host records how it released a closed session's container (in the blob store)."""
    return f"releases/{_safe(session_id)}/{container_id[:12]}.json"


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
        self.memory = MemoryMounts()

    def _restore(self, container_id: str, ref: SnapshotRef) -> str | None:
        """Restore a snapshot into a new container; the error text if it could not be."""
        try:
            self.sandboxes.restore(container_id, self.blobs.read(ref.key))
        except (OSError, RuntimeError, docker.errors.APIError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    @activity.defn(name=PROVISION_SANDBOX)
    @translate_errors
    async def provision_sandbox(self, req: ProvisionRequest) -> SandboxHandle:
        """Heartbeats while it works: a worker that dies provisioning is noticed at the heartbeat
        timeout (seconds), and another sandbox worker takes the retry."""
        async with heartbeating(HEARTBEAT_EVERY_S):
            if delay := settings().test_provision_delay_s:  # a test hook (test_chaos.py)
                await asyncio.sleep(delay)  # a slow provision, to kill the worker during it
            return await self._provision(req)

    async def _provision(self, req: ProvisionRequest) -> SandboxHandle:
        log = activity_log()
        started = time.monotonic()
        container_id = None
        volumes = await self.memory.prepare(req.session_id, req.memory) if req.memory else None
        if self.pool is not None and self.pool.matches(req.spec) and not volumes:  # pool containers have no mounts
            container_id = await asyncio.to_thread(self.pool.take, req.session_id)
        from_pool = container_id is not None
        try:
            if container_id is None:
                container_id = (await asyncio.to_thread(self.sandboxes.create, req.session_id, req.spec, volumes)).id
        except docker.errors.ImageNotFound as e:
            raise SandboxImageMissing(
                f"sandbox image {req.spec.image!r} is not on host {self.sandboxes.host_id}: build it with `make setup`"
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
                await asyncio.to_thread(self.sandboxes.restore, handle.sandbox_id, data, False)
            except (SeedError, RuntimeError, subprocess.TimeoutExpired) as e:
                await asyncio.to_thread(self.sandboxes.destroy, handle.sandbox_id)
                raise SeedFailed(f"the workspace could not be seeded: {e}") from e
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

    @activity.defn(name=PROVISION_AND_EXECUTE)
    @translate_errors
    async def provision_and_execute(self, req: FirstCallRequest) -> FirstCallResult:
        """A session's first sandbox call: its sandbox provisioned here, then the call run in it, in
        one activity (a workflow task and an activity fewer than `provision_sandbox` + `execute`).

        No command runs twice: once the sandbox exists, its handle is on record with the server (an
        acknowledged heartbeat) before the call starts. A retry after this worker died reads it: on
        this host it runs the call in that sandbox (idempotent per call id, as `execute` is); on
        another it provisions nothing and answers `SandboxProvisioned` with the handle, and the
        workflow takes the call to the sandbox's host with `execute`. So does anything the call
        raises here: `execute` handles every outcome as for any later call. Its heartbeats are
        acknowledged ones, each with a core beat carrying the same details (activities/heartbeat.py);
        a cancellation by the workflow reaches it through either, and it says so in its answer."""
        beats = AcknowledgedHeartbeats()
        handle: SandboxHandle | None = None
        try:
            with acknowledged(beats):
                earlier = activity.info().heartbeat_details
                if earlier and earlier[0]:
                    handle = SandboxHandle.model_validate(earlier[0])
                    await beats.record(handle)
                    if handle.host_queue != self.queue:
                        raise provisioned_error(handle, "an earlier attempt provisioned the sandbox on another host")
                else:
                    handle = await self.provision_sandbox(req.provision)
                    await beats.record(handle)
                self.sandboxes.first_calls.add(handle.sandbox_id)  # a call now, no longer a provision
                try:
                    result = await self.execute(ExecuteRequest(handle=handle, **dict(req.call)))
                finally:
                    self.sandboxes.first_calls.discard(handle.sandbox_id)
        except (Exception, asyncio.CancelledError) as e:
            cancelled = isinstance(e, asyncio.CancelledError)
            details = activity.cancellation_details() if cancelled else None
            if cancelled and (beats.cancel_requested or (details is not None and details.cancel_requested)):
                raise provisioned_error(handle, "the workflow cancelled the call", cancelled=True) from None
            if handle is None or (isinstance(e, ApplicationError) and e.type == ErrorType.SANDBOX_PROVISIONED):
                raise
            why = describe(e) + (f" ({cancelled_because(details)})" if cancelled else "")
            raise provisioned_error(handle, f"the first call did not complete here: {why}") from e
        return FirstCallResult(handle=handle, result=result)

    @activity.defn(name=EXECUTE)
    @translate_errors
    async def execute(self, req: ExecuteRequest) -> ExecuteResult:
        """Run the call; then what it changed under the session's read_write memory mounts becomes
        versions (also when the sandbox was lost meanwhile: the mounts live on this host)."""
        if not (req.memory and req.session_id):
            return await self._execute(req)
        # The mounts belong to the session the sandbox was made for (a subagent may share it).
        owner = await asyncio.to_thread(self.sandboxes.session_of, req.handle.sandbox_id) or req.session_id
        try:
            result = await self._execute(req)
        except SandboxGone:
            await self.memory.save(owner, req.call_id, req.memory, by=req.session_id)
            raise
        notes = await self.memory.save(owner, req.call_id, req.memory, by=req.session_id)
        if notes:
            result = result.model_copy(update={"output": result.output + "\n[memory: " + "; ".join(notes) + "]"})
        return result

    async def _execute(self, req: ExecuteRequest) -> ExecuteResult:
        log = activity_log()
        if self.pool is not None:
            self.pool.note_busy()
        if req.name in (WEB_SEARCH, MEMORY_SEARCH):
            script = await self._answered_here(req)
        else:
            script = tool_script(req.name, req.input, req.timeout_s)

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
        except TimeoutError as e:
            partial = await asyncio.to_thread(
                self.sandboxes.read_recorded, req.handle.sandbox_id, req.call_id, req.output_cap
            )
            log.info("tool timed out", tool=req.name, timeout_s=req.timeout_s)
            note = f"[{req.name} timed out after {req.timeout_s:g}s and was killed"
            if isinstance(e, CommandTimedOut) and e.exhausted_pids:
                note += (
                    f"; it had used up the sandbox's process limit ({e.pids_limit} processes, e.g. a fork bomb), "
                    "and all its processes were stopped"
                )
            return ExecuteResult(
                output=(partial + "\n" if partial else "")
                + f"{note}. The shell was restarted; the working directory and exported variables from before "
                "this command are kept.]",
                is_error=True,
                timed_out=True,
            )
        except SandboxGone as e:
            raise SandboxGone(f"sandbox {req.handle.sandbox_id[:12]} is gone: {e}") from e
        except ShellDied as e:
            restarted = "a new shell was started with the working directory and exported variables from before it"
            if e.signal is not None:
                what = f"the shell running this command was killed ({_signal_name(e.signal)}), with what it had started"
            elif e.exit_code is not None:
                what = (
                    f"the shell exited with code {e.exit_code} while running this command (`exit`, `exec`, "
                    "or a failing command under `set -e`, end the persistent shell)"
                )
            else:
                what = "the shell ended while running this command"
            return ExecuteResult(output=f"[{what}; {restarted}]", is_error=True)
        except ShellUnavailable as e:
            return ExecuteResult(output=f"[{e}; the command did not run]", is_error=True)
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
            unsaved=out.unsaved,
        )

    async def _answered_here(self, req: ExecuteRequest) -> str:
        """The script that answers a web_search or memory_search call in the sandbox: the answer is
        found here, on the trusted side (a search backend, the API's database), and recorded there
        like any call's output. A call already recorded is not asked again: the sandbox returns it."""
        if await asyncio.to_thread(self.sandboxes.recorded, req.handle.sandbox_id, req.call_id):
            return ":"
        find = self._web_search if req.name == WEB_SEARCH else self._memory_search
        try:
            text, failed = await asyncio.wait_for(find(req), timeout=req.timeout_s), False
        except TimeoutError:
            text, failed = f"{req.name}: no answer within {req.timeout_s:g}s", True
        except (WebSearchError, ValueError) as e:
            text, failed = str(e) if str(e).startswith(req.name) else f"{req.name}: {e}", True
        except Exception as e:  # a backend's own failure is the model's to see, not a crash of the call
            text, failed = f"{req.name}: the search failed: {type(e).__name__}: {e}", True
        data = base64.b64encode(text.encode()).decode()
        return f"printf %s {data} | base64 -d" + ("; (exit 1)" if failed else "")

    async def _web_search(self, req: ExecuteRequest) -> str:
        query, count = str(req.input["query"]), int(req.input.get("max_results") or 5)
        return render_hits(query, await run_search(search_backend(), query, count))

    async def _memory_search(self, req: ExecuteRequest) -> str:
        """Ranked full-text search over the session's memory stores (all, or the one named) and,
        with episodic memory, over its agent's earlier sessions."""
        query, store = str(req.input["query"]), req.input.get("store")
        limit = int(req.input.get("limit") or 10)
        mounts = [m for m in req.memory if store in (None, m.name)]
        if store is not None and not mounts:
            names = ", ".join(m.name for m in req.memory) or "none"
            raise ValueError(f"no memory store {store!r} is mounted (mounted: {names})")
        db = await self.memory.db()
        lines: list[str] = []
        if mounts:
            where = {m.store_id: m.path for m in mounts}
            for h in await db.search([m.store_id for m in mounts], query, limit):
                lines += [f"{where[h.store_id]}{h.path}", f"  {h.excerpt}"]
        if req.episodes_of and store is None:
            found = await db.search_episodes(req.episodes_of, query, limit, exclude_session=req.session_id)
            for e in found:
                lines += [f"session {e.session_id} event {e.offset} ({e.kind})", f"  {e.excerpt}"]
            if found:
                lines.append("[earlier sessions: da events SESSION --from OFFSET shows the log there]")
        if not lines:
            searched = [m.path for m in mounts] + (["earlier sessions"] if req.episodes_of and store is None else [])
            return f"No memory matches {query!r} in {', '.join(searched)}."
        return "\n".join(lines)

    @activity.defn(name=SNAPSHOT_WORKSPACE)
    @translate_errors
    async def snapshot_workspace(self, req: SnapshotRequest) -> SnapshotRef:
        """Snapshot /workspace into the blob store, unless it is unchanged since `previous`."""
        return await self._snapshot(req.handle.sandbox_id, req.session_id, req.previous)

    async def _snapshot(self, container_id: str, session_id: str, previous: SnapshotRef | None) -> SnapshotRef:
        started = time.monotonic()
        try:
            fingerprint = await asyncio.to_thread(self.sandboxes.fingerprint, container_id)
            if previous is not None and previous.fingerprint == fingerprint:
                return previous
            key = f"snapshots/{_safe(session_id)}/{fingerprint}.tar.gz"

            def write() -> int:
                with self.blobs.writer(key) as sink:
                    return self.sandboxes.snapshot(container_id, sink)

            size = await asyncio.to_thread(write)
            await asyncio.to_thread(self.sandboxes.snapshot_stored, container_id)
        except (SandboxGone, docker.errors.NotFound) as e:
            raise SandboxGone(f"sandbox {container_id[:12]} is gone") from e
        ref = SnapshotRef(key=key, bytes=size, fingerprint=fingerprint, taken_at=datetime.now(UTC))
        (activity_log() if activity.in_activity() else host_log).info(
            "workspace snapshot", key=key, bytes=size, seconds=round(time.monotonic() - started, 3)
        )
        return ref

    async def release(self, container_id: str, session_id: str) -> ReleaseResult:
        """A closed session's sandbox (the reaper finds them): the last snapshot of /workspace where
        it has unsaved changes, the container removed, its memory mounts saved and closed; what was
        done is recorded in the blob store (`release_record`)."""
        snapshot, error = None, None
        try:
            if await asyncio.to_thread(self.sandboxes.unsaved, container_id):
                snapshot = await self._snapshot(container_id, session_id, None)
        except SandboxGone as e:
            error = f"no last snapshot: {e}"
        except (OSError, RuntimeError, docker.errors.APIError) as e:  # kept, and tried again next pass
            raise RuntimeError(f"the last snapshot failed: {e}") from e
        destroyed = await asyncio.to_thread(self.sandboxes.destroy, container_id)
        await self.memory.close(session_id)
        result = ReleaseResult(snapshot=snapshot, destroyed=destroyed, error=error)
        data = result.model_dump_json().encode()
        await asyncio.to_thread(self._write_blob, release_key(session_id, container_id), data)
        return result

    def _write_blob(self, key: str, data: bytes) -> None:
        with self.blobs.writer(key) as sink:
            sink.write(data)

    def release_record(self, session_id: str, container_id: str) -> ReleaseResult | None:
        """How a closed session's sandbox was released by its host, once it has been."""
        key = release_key(session_id, container_id)
        return ReleaseResult.model_validate_json(self.blobs.read(key)) if self.blobs.exists(key) else None

    @activity.defn(name=DESTROY_SANDBOX)
    @translate_errors
    async def destroy_sandbox(self, handle: SandboxHandle) -> bool:
        return await self._destroy(handle)

    async def _destroy(self, handle: SandboxHandle) -> bool:
        session_id = await asyncio.to_thread(self.sandboxes.session_of, handle.sandbox_id)
        removed = await asyncio.to_thread(self.sandboxes.destroy, handle.sandbox_id)
        if session_id:  # its memory mounts: a last save, then their directories go
            await self.memory.close(session_id)
        activity_log().info("sandbox destroyed", container=handle.sandbox_id[:12], existed=removed)
        return removed
