"""Hardened Docker sandboxes and the persistent shell inside them (blocking code, docker SDK).

A container runs `sleep infinity` under an init; a long-lived `bash` started with `docker exec`
and kept attached runs every tool call, so the working directory and exported variables persist.
Each call is written to `/tmp/.da/calls/<call id>/` inside the container (command, output,
exit code) before anything runs: a retried call with the same id reads the recorded result
instead of running the command again, even from another worker process. Beside each shell a
second bash (`_KILLER`) waits to stop, at a timeout or an interrupt, every process the calls
started, with builtins only, so it works when a fork bomb leaves no process slot.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import shlex
import socket
import struct
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn

import docker
import docker.errors
from docker.models.containers import Container, _create_container_args

from durable_agents.contracts import SANDBOX_TMP_MB, SandboxSpec
from durable_agents.errors import SandboxError, SandboxGone
from durable_agents.sandboxes.egress import NETWORK, RULES_LABEL, EgressProxy, rules_label
from durable_agents.sandboxes.packages import PackageImages
from durable_agents.settings import settings

LABEL = "durable-agents.sandbox"
SESSION_LABEL = "durable-agents.session"
HOST_LABEL = "durable-agents.host"
NAMESPACE_LABEL = "durable-agents.namespace"
POOL_LABEL = "durable-agents.pool"  # made for the warm pool: its session is in SESSION_FILE once bound
SESSION_FILE = "/tmp/.da/session"
WORKSPACE = "/workspace"
STATE_DIR = "/tmp/.da"
# Touched as a snapshot is taken (as .pending, renamed once the snapshot is stored): what changed
# after it is unsaved.
SNAPSHOT_MARK = "/tmp/.da/snapshot-mark"

# Prints a path when /workspace has changed since its last snapshot (the mark is set as one is
# taken), nothing when it has not. Without a mark (none taken yet) an empty workspace has nothing
# to keep. The persistent shell asks it after each call; the host, before it releases a sandbox.
_UNSAVED_SH = (
    f"if [ -e {SNAPSHOT_MARK} ]; then find {WORKSPACE} -cnewer {SNAPSHOT_MARK} -print -quit 2>/dev/null; "
    f"else find {WORKSPACE} -mindepth 1 -print -quit 2>/dev/null; fi"
)

# Defined once in each shell. Runs a call by sourcing it (so `cd` and `export` persist), output to
# a file; then prints the head and tail of the output between markers, with exit code and size.
_SHELL_PRELUDE = r"""
exec 2>&1
cd /workspace
__da_run() {
  local __da_id="$1" __da_cap="$3" __da_d="/tmp/.da/calls/$1"
  local __da_rc __da_size __da_half __da_changed __da_unsaved __da_note
  # A call this id already started (by a worker that died) is waited for, never run twice.
  while [ -e "$__da_d/started" ] && [ ! -e "$__da_d/rc" ]; do sleep 0.1; done
  if [ ! -e "$__da_d/rc" ]; then
    mkdir -p "$__da_d" && printf %s "$2" | base64 -d > "$__da_d/cmd" && : > "$__da_d/started"
    . "$__da_d/cmd" < /dev/null > "$__da_d/out" 2>&1
    __da_rc=$?
    { pwd > /tmp/.da/cwd; export -p > /tmp/.da/env; } 2>/dev/null
    # Keep only what is returned (head and tail within the cap): records stay small, and a
    # command that filled the disk with output gives its space back.
    __da_size=$(wc -c < "$__da_d/out")
    if [ "$__da_size" -gt "$__da_cap" ]; then
      __da_half=$((__da_cap / 2))
      tail -c "$__da_half" "$__da_d/out" > "$__da_d/tail" 2>/dev/null || : > "$__da_d/tail"
      truncate -s "$__da_half" "$__da_d/out"
      { printf '\n__DA_CUT__\n'; cat "$__da_d/tail"; } >> "$__da_d/out"; rm -f "$__da_d/tail"
    fi
    echo "$__da_size" > "$__da_d/size"
    echo "$__da_rc" > "$__da_d/rc"
  elif [ ! -e "$__da_d/out" ]; then  # stopped (a timeout, an interrupt) before its command began
    __da_note="[this call was stopped before its command started: it did not run]"
    printf '%s\n' "$__da_note" > "$__da_d/out"; echo $((${#__da_note} + 1)) > "$__da_d/size"
  elif [ ! -e "$__da_d/size" ]; then  # stopped while it ran
    wc -c < "$__da_d/out" > "$__da_d/size"
  fi
  __da_changed=$(__UNSAVED__)
  __da_unsaved=0; [ -n "$__da_changed" ] && __da_unsaved=1
  read -r __da_rc < "$__da_d/rc"; read -r __da_size < "$__da_d/size"  # (builtins: no process)
  printf '\n__DA_BEGIN_%s\n' "$__da_id"
  cat "$__da_d/out"
  printf '\n__DA_END_%s %s %s %s\n' "$__da_id" "$__da_rc" "$__da_size" "$__da_unsaved"
}
printf '__DA_READY %s\n' "$$"
""".replace("__UNSAVED__", _UNSAVED_SH)
# Restores what the previous shell had, after a restart (timeout, `exit`, worker restart).
_RESTORE = (
    "[ -f /tmp/.da/env ] && . /tmp/.da/env 2>/dev/null; "
    '[ -f /tmp/.da/cwd ] && cd "$(cat /tmp/.da/cwd)" 2>/dev/null; true\n'
)
# Started beside each shell, in a session of its own: on `stop SHELL_PID CALL_ID RC` it SIGKILLs
# every process in the container but those of session 1 (the init and its `sleep infinity`) and its
# own, until none is left, then records RC for the call (so a retry of it does not wait for it).
# Builtins only, no fork: it works when a command has used up the container's process limit (a fork
# bomb), where no new process can start. It answers with the processes it found and those left.
_KILLER = r"""
exec 2>/dev/null
__da_sweep() {  # kills (__da_op=kill) or counts; sets __da_left (zombies too) and __da_alive
  local p s
  __da_left=0 __da_alive=0
  for p in /proc/[1-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    read -r s < "/proc/$p/stat" || continue
    s=${s##*) }
    set -- $s  # state, ppid, pgrp, session, …: digits and a letter, nothing to glob
    { [ "$4" = 1 ] || [ "$4" = "$$" ]; } && continue
    __da_left=$((__da_left + 1))
    [ "$1" = Z ] && continue
    __da_alive=$((__da_alive + 1))
    [ "$__da_op" = kill ] && kill -KILL "$p"
  done
}
__da_stop() {
  local until=$((${EPOCHREALTIME/[.,]/} + 5000000)) found
  __da_op=count; __da_sweep; found=$__da_alive
  kill -KILL -- "-$1" "$1"
  __da_op=kill
  while __da_sweep; [ "$__da_left" != 0 ] && [ "${EPOCHREALTIME/[.,]/}" -lt "$until" ]; do
    [ "$__da_alive" = 0 ] && read -r -t 0.01 _  # only zombies left: the init reaps them
  done
  case $2 in *[!a-zA-Z0-9_-]* | "" | -) ;; *)
    [ -d "/tmp/.da/calls/$2" ] && [ ! -e "/tmp/.da/calls/$2/rc" ] && echo "$3" > "/tmp/.da/calls/$2/rc" ;;
  esac
  printf '__DA_STOPPED %s %s\n' "$found" "$__da_left"
}
while read -r __da_cmd __da_pid __da_call __da_rc; do
  [ "$__da_cmd" = stop ] && __da_stop "$__da_pid" "$__da_call" "${__da_rc:-124}"
done
"""


class ShellDied(SandboxError):
    """The persistent shell ended while running a call: by itself (`exit`, `exec`, `set -e`:
    `exit_code`) or killed (`signal`)."""

    def __init__(self, message: str, exit_code: int | None = None, signal: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.signal = signal


class ShellUnavailable(SandboxError):
    """No shell could be started in a container that runs."""


class CommandTimedOut(SandboxError, TimeoutError):
    """A call was killed at its timeout, with `processes` processes running (of `pids_limit`)."""

    def __init__(self, processes: int = 0, pids_limit: int = 0) -> None:
        super().__init__()
        self.processes = processes
        self.pids_limit = pids_limit

    @property
    def exhausted_pids(self) -> bool:
        # With the init, `sleep infinity` and the killer; a fork bomb's count varies as it forks and dies.
        return self.pids_limit > 0 and (self.processes + 3) * 10 >= self.pids_limit * 9


def _frame_size(header: bytes) -> int:
    return int(struct.unpack(">BxxxL", header)[1])


def _frames(raw: socket.socket) -> Iterator[bytes]:
    """The payloads of a multiplexed Docker stream, until the other side closes it."""
    buffer = b""
    while True:
        chunk = raw.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 8 and len(buffer) >= 8 + _frame_size(buffer[:8]):
            size = _frame_size(buffer[:8])
            yield buffer[8 : 8 + size]
            buffer = buffer[8 + size :]


@dataclass
class CallOutput:
    output: str
    exit_code: int
    total_bytes: int
    cut: bool
    unsaved: bool = True  # /workspace has changed since its last snapshot (or may have)


class _Attached:
    """A process in the container started with `docker exec`, its stdin and output (multiplexed)
    attached over the Docker API; `script` is sent to its stdin at once. `gate` bounds the Docker
    API calls that start it (DockerGates.execs)."""

    def __init__(
        self, api: docker.APIClient, container_id: str, script: bytes, gate: threading.Semaphore | None = None
    ) -> None:
        self.api = api
        with gate or contextlib.nullcontext():
            self.exec_id = api.exec_create(
                container_id,
                ["bash", "--noprofile", "--norc"],
                stdin=True,
                stdout=True,
                stderr=True,
                user="1000:1000",
                workdir=WORKSPACE,
            )["Id"]
            self._sock: Any = api.exec_start(self.exec_id, socket=True, demux=False)
        self._raw: socket.socket = getattr(self._sock, "_sock", self._sock)
        self._buffer = b""
        self._send(script)

    def _send(self, data: bytes) -> None:
        try:
            self._raw.sendall(data)
        except OSError as e:
            raise ShellDied(str(e)) from e

    def _fill(self, deadline: float) -> None:
        """Read one multiplexed frame (8-byte header: stream, 0, 0, 0, size) into the buffer."""
        header = self._recv_exact(8, deadline)
        self._buffer += self._recv_exact(_frame_size(header), deadline)

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        data = b""
        while len(data) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._raw.settimeout(min(remaining, 1.0))
            try:
                chunk = self._raw.recv(n - len(data))
            except TimeoutError:
                continue
            except OSError as e:
                raise ShellDied(str(e)) from e
            if not chunk:
                raise ShellDied("the shell closed its output")
            data += chunk
        return data

    def _read_until(self, marker: bytes, deadline: float) -> bytes:
        while marker not in self._buffer:
            self._fill(deadline)
        before, _, self._buffer = self._buffer.partition(marker)
        return before

    def _read_line(self, deadline: float) -> str:
        return self._read_until(b"\n", deadline).decode(errors="replace")

    def ended(self, within_s: float = 2.0) -> ShellDied:
        """How the process ended (after its output closed): its exit code, or the signal that killed it."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                info = self.api.exec_inspect(self.exec_id)
            except docker.errors.APIError:
                return ShellDied("the shell ended")
            code = info.get("ExitCode")
            if not info.get("Running") and code is not None:
                if code > 128:
                    return ShellDied(f"the shell was killed by signal {code - 128}", signal=code - 128)
                return ShellDied(f"the shell exited with code {code}", exit_code=code)
            if time.monotonic() > deadline:
                return ShellDied("the shell ended")
            time.sleep(0.02)

    def close(self) -> None:
        """Close its stdin too (closing the socket alone does not): a shell or killer then exits,
        a shell once its current command is done."""
        for end in (lambda: self._raw.shutdown(socket.SHUT_RDWR), self._sock.close):
            try:
                end()
            except OSError:
                pass


class _Killer(_Attached):
    """The `_KILLER` loop beside a shell; a lock lets `interrupt` use it from another thread."""

    def __init__(self, api: docker.APIClient, container_id: str, gate: threading.Semaphore | None = None) -> None:
        super().__init__(api, container_id, _KILLER.encode(), gate)
        self.lock = threading.Lock()

    def stop(self, request: bytes, within_s: float = 8) -> tuple[int, int]:
        """(processes found running, processes left) after stopping all but the container's own."""
        with self.lock:
            self._send(request)
            deadline = time.monotonic() + within_s
            self._read_until(b"__DA_STOPPED ", deadline)
            found, left = self._read_line(deadline).split()[:2]
            return int(found), int(left)


class _Shell(_Attached):
    """The persistent bash of a container, with its killer (started first, while slots are free)."""

    def __init__(self, api: docker.APIClient, container_id: str, gate: threading.Semaphore | None = None) -> None:
        self.killer = _Killer(api, container_id, gate)
        try:
            super().__init__(api, container_id, _SHELL_PRELUDE.encode() + _RESTORE.encode(), gate)
            self._read_until(b"__DA_READY ", time.monotonic() + 20)
            self.pid = int(self._read_line(time.monotonic() + 5).split()[0])
        except BaseException:
            self.killer.close()
            raise

    def run(self, call_id: str, script: str, cap: int, deadline: float) -> CallOutput:
        encoded = base64.b64encode(script.encode()).decode()
        self._send(f"__da_run {shlex.quote(call_id)} {encoded} {int(cap)}\n".encode())
        self._read_until(f"\n__DA_BEGIN_{call_id}\n".encode(), deadline)
        body = self._read_until(f"\n__DA_END_{call_id} ".encode(), deadline)
        rc, size, *rest = self._read_line(deadline).split()
        text = scrub(body.decode(errors="replace"), call_id)
        cut = "\n__DA_CUT__\n" in text
        unsaved = rest[:1] != ["0"]  # a shell started before the flag existed says nothing: unsaved
        return CallOutput(text.replace("\n__DA_CUT__\n", "\n"), int(rc), int(size), cut, unsaved)

    def close(self) -> None:
        super().close()
        self.killer.close()


class DockerGates:
    """Bounds on this host's concurrent Docker API calls by kind, so that a burst of creations does
    not starve the execs that running sessions wait on, nor removals (which can wait) either."""

    def __init__(self, creates: int, removals: int, execs: int) -> None:
        self.creates = threading.BoundedSemaphore(creates)
        self.removals = threading.BoundedSemaphore(removals)
        self.execs = threading.BoundedSemaphore(execs)


def scrub(text: str, call_id: str) -> str:
    """A call's output as a shell shows it: bash names the sourced call file in its errors
    (`/tmp/.da/calls/<id>/cmd: line 1: …`) where `bash -c` says `bash: line 1: …`."""
    return text.replace(f"{STATE_DIR}/calls/{call_id}/cmd", "bash")


class DockerSandboxes:
    """Creates, drives and removes this host's sandbox containers."""

    def __init__(self, host_id: str, client: docker.DockerClient | None = None, namespace: str = "default") -> None:
        self.host_id = host_id
        self.namespace = namespace
        self.docker = client or docker.from_env(timeout=120)
        self._shells: dict[str, _Shell] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._egress: EgressProxy | None = None
        config = settings()
        self.packages = PackageImages(self.docker, config.packages_timeout_s)
        self.gates = DockerGates(
            config.sandbox_docker_creates, config.sandbox_docker_removals, config.sandbox_docker_execs
        )
        # Container -> the session it was made for (or bound to), until it is removed; and since when.
        self.owners: dict[str, str] = {}
        # Containers whose first call runs in `provision_and_execute`: on a provision slot, but a call.
        self.first_calls: set[str] = set()
        self.owned_at: dict[str, float] = {}

    def egress_proxy(self) -> EgressProxy:
        with self._guard:
            if self._egress is None:
                self._egress = EgressProxy(self.docker)
        self._egress.ensure()
        return self._egress

    # --- lifecycle --------------------------------------------------------------------------

    def create(
        self, session_id: str | None, spec: SandboxSpec, volumes: dict[str, dict[str, str]] | None = None
    ) -> Container:
        """A new sandbox container; with no session id, a warm-pool container bound later by `bind`.
        `volumes`: host directories bound into it (the session's memory stores). With packages, the
        container is made from the derived image (built now if this host lacks it)."""
        tmpfs_opts = "rw,exec,nosuid,nodev,uid=1000,gid=1000,mode=0755"
        kwargs: dict[str, Any] = dict(
            image=self.packages.image_for(spec.image, spec.packages),
            command=["sleep", "infinity"],
            detach=True,
            user="1000:1000",
            working_dir=WORKSPACE,
            environment={"HOME": WORKSPACE, "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"},
            labels={
                LABEL: "1",
                HOST_LABEL: self.host_id,
                NAMESPACE_LABEL: self.namespace,
                **({SESSION_LABEL: session_id} if session_id else {POOL_LABEL: "1"}),
            },
            init=True,
            read_only=True,
            tmpfs={
                WORKSPACE: f"{tmpfs_opts},size={spec.disk_mb}m",
                "/tmp": f"{tmpfs_opts},size={SANDBOX_TMP_MB}m",
            },
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            network_mode=NETWORK if spec.egress else "bridge" if spec.network else "none",
            pids_limit=spec.pids,
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb}m",
            nano_cpus=int(spec.cpus * 1e9),
            # No `nproc`: it counts a uid's processes across every container on the host, so one
            # sandbox's fork bomb would starve the others; pids_limit bounds each container instead.
            ulimits=[
                docker.types.Ulimit(name="nofile", soft=1024, hard=1024),
                docker.types.Ulimit(name="core", soft=0, hard=0),
                docker.types.Ulimit(name="fsize", soft=spec.disk_mb * 2**20, hard=spec.disk_mb * 2**20),
            ],
            privileged=False,
        )
        if spec.runtime:
            kwargs["runtime"] = spec.runtime
        if volumes:
            kwargs["volumes"] = volumes
        if spec.egress:  # the proxy is its only way out; no DNS (names are the proxy's business)
            proxy = self.egress_proxy()
            kwargs["environment"] = {**kwargs["environment"], **proxy.environment()}
            kwargs["labels"][RULES_LABEL] = rules_label(spec.egress)
            kwargs["dns"] = ["127.0.0.1"]
        # `containers.run` without its extra inspect of the new container (and its pull of a missing
        # image: none is pulled here, ImageNotFound tells the caller), two API calls instead of three.
        create = _create_container_args({**kwargs, "version": self.docker.api._version})
        with self.gates.creates:
            container_id: str = self.docker.api.create_container(**create)["Id"]
            try:
                self.docker.api.start(container_id)
            except docker.errors.APIError:
                self.docker.api.remove_container(container_id, force=True)
                raise
        if session_id:
            self.owners[container_id], self.owned_at[container_id] = session_id, time.monotonic()
        container: Container = self.docker.containers.prepare_model({"Id": container_id})
        return container

    def destroy(self, container_id: str) -> bool:
        self._drop_shell(container_id)
        try:
            with self.gates.removals:
                self.docker.api.remove_container(container_id, force=True)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as e:
            # Another pass (the worker's reaper, a sweep, a pool drain) is removing it already: gone.
            if e.status_code == 409 and "already in progress" in str(e.explanation or ""):
                return True
            raise
        finally:
            self.owners.pop(container_id, None)
            self.owned_at.pop(container_id, None)
            with self._guard:
                self._locks.pop(container_id, None)

    def warm(self, container_id: str) -> None:
        """Start the container's shell now, so the first call does not wait for it."""
        with self._lock(container_id):
            self._shell(container_id)

    def bind(self, container_id: str, session_id: str) -> None:
        """Bind a warm-pool container to its session (labels cannot change after creation)."""
        self.run(
            container_id,
            f"bind-{secrets.token_hex(6)}",
            f"printf %s {shlex.quote(session_id)} > {SESSION_FILE}",
            1000,
            30,
        )
        self.owners[container_id], self.owned_at[container_id] = session_id, time.monotonic()

    def bound_session(self, container: Container) -> str | None:
        """The session a container belongs to: its label, or for a pool container its bind file."""
        if SESSION_LABEL in container.labels:
            return str(container.labels[SESSION_LABEL])
        # An API error propagates: "could not tell" must not read as "unbound" (the reaper would remove
        # a session's container). The exit code can still be unknown (-1) when the exec has just ended.
        code, out = self.exec(container.id or "", ["sh", "-c", f"cat {SESSION_FILE} 2>/dev/null || echo '\n'"])
        text = out.decode().strip()
        if code not in (0, -1):
            raise RuntimeError(f"reading {SESSION_FILE} failed ({code}): {text[:200]}")
        return text or None

    def session_of(self, container_id: str) -> str | None:
        """The session a container was made for (its label; None for a pool container or a gone one)."""
        try:
            labels = self.docker.api.inspect_container(container_id)["Config"].get("Labels") or {}
        except docker.errors.NotFound:
            return None
        return labels.get(SESSION_LABEL)

    def mine(self) -> list[Container]:
        """This host's sandbox containers in this namespace, running or not."""
        filters = {"label": [f"{HOST_LABEL}={self.host_id}", f"{NAMESPACE_LABEL}={self.namespace}"]}
        containers: list[Container] = self.docker.containers.list(all=True, filters=filters)
        return containers

    def find_owners(self, keep: Collection[str] = ()) -> dict[str, str]:
        """This host's running session containers and their sessions, as Docker has them (at start-up:
        those an earlier process made). `keep`: containers to leave out (a warm pool's own)."""
        owners = {}
        for container in self.mine():
            if container.status != "running" or container.id in keep:
                continue
            try:
                session_id = self.bound_session(container)
            except (docker.errors.APIError, RuntimeError):
                continue  # cannot tell now: the reaper looks again
            if session_id:
                owners[container.id or ""] = session_id
        return owners

    def unsaved(self, container_id: str) -> bool:
        """Has /workspace changed since its last snapshot (`_UNSAVED_SH`, as the shell asks after each call)?"""
        code, out = self.exec(container_id, ["bash", "-c", _UNSAVED_SH])
        if code not in (0, -1):
            self._gone_or(container_id, f"cannot read the workspace: {out[-200:]!r}")
        return bool(out.strip())

    def running(self, container_id: str) -> bool:
        try:
            state = self.docker.api.inspect_container(container_id)["State"]
        except docker.errors.NotFound:
            return False
        return bool(state.get("Running"))

    # --- the shell --------------------------------------------------------------------------

    def _lock(self, container_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(container_id, threading.Lock())

    def _drop_shell(self, container_id: str) -> None:
        shell = self._shells.pop(container_id, None)
        if shell:
            shell.close()

    def _shell(self, container_id: str) -> _Shell:
        shell = self._shells.get(container_id)
        if shell is None:
            shell = self._shells[container_id] = self._start_shell(container_id)
        return shell

    def _start_shell(self, container_id: str, within_s: float = 5.0) -> _Shell:
        """A new shell; tried again for a few seconds (killed processes free their slots as the
        init reaps them). SandboxGone if the container stopped, else ShellUnavailable."""
        deadline = time.monotonic() + within_s
        while True:
            if not self.running(container_id):
                raise SandboxGone(container_id)
            try:
                return _Shell(self.docker.api, container_id, self.gates.execs)
            except (ShellDied, TimeoutError, docker.errors.APIError) as e:
                if time.monotonic() > deadline:
                    problem = str(e) or type(e).__name__
                    raise ShellUnavailable(f"no shell could be started in the sandbox: {problem}") from e
            time.sleep(0.2)

    def exec(self, container_id: str, argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes]:
        """Run a one-off command in the container as the sandbox user: (exit code, stdout+stderr)."""
        api = self.docker.api
        with self.gates.execs:
            exec_id = api.exec_create(container_id, argv, user="1000:1000", stdin=stdin is not None)["Id"]
            if stdin is None:
                output = bytes(api.exec_start(exec_id))
        if stdin is not None:
            sock = api.exec_start(exec_id, socket=True)
            raw: socket.socket = getattr(sock, "_sock", sock)
            try:
                raw.sendall(stdin)
                raw.shutdown(socket.SHUT_WR)
                output = b"".join(_frames(raw))
            finally:
                sock.close()
        code = api.exec_inspect(exec_id).get("ExitCode")
        return (code if code is not None else -1), output

    def interrupt(self, container_id: str) -> None:
        """Kill what the shell is running (from another thread; the running call sees ShellDied)."""
        shell = self._shells.get(container_id)
        if shell is not None:
            self._stop(container_id, shell, "")

    def _stop(self, container_id: str, shell: _Shell, call_id: str, rc: int = 124) -> tuple[int, int]:
        """Stop the shell and every process the calls started (see `_KILLER`): (found, left).
        Through the shell's killer; where that is gone, the same script in a new process."""
        request = f"stop {shell.pid} {call_id or '-'} {rc}\n".encode()
        try:
            return shell.killer.stop(request)
        except (ShellDied, TimeoutError, ValueError):
            if not self.running(container_id):
                return 0, -1
        deadline = time.monotonic() + 10
        while True:
            try:
                code, out = self.exec(container_id, ["bash", "--noprofile", "--norc", "-c", _KILLER], stdin=request)
                found, left = out.decode(errors="replace").rsplit("__DA_STOPPED ", 1)[1].split()[:2]
                return int(found), int(left)
            except (docker.errors.APIError, IndexError, ValueError):
                if time.monotonic() > deadline or not self.running(container_id):
                    return 0, -1
            time.sleep(0.2)

    def _pids_limit(self, container_id: str) -> int:
        try:
            return int(self.docker.api.inspect_container(container_id)["HostConfig"].get("PidsLimit") or 0)
        except docker.errors.APIError:
            return 0

    def _kill_shell(self, container_id: str, shell: _Shell, call_id: str, timeout_s: float) -> CommandTimedOut:
        """Stop a timed-out call and all it started, and start a new shell; a sandbox where that
        fails is destroyed (SandboxGone, naming the cause)."""
        found, left = self._stop(container_id, shell, call_id)
        self._drop_shell(container_id)
        timed_out = CommandTimedOut(found, self._pids_limit(container_id))
        what = f"the command timed out after {timeout_s:g}s" + (
            f" and had used up the sandbox's process limit ({timed_out.pids_limit})" if timed_out.exhausted_pids else ""
        )
        if left == 0:
            try:
                self._shells[container_id] = self._start_shell(container_id)
                return timed_out
            except ShellUnavailable as e:
                problem = f"{what}; after it was stopped, {e}"
            except SandboxGone:
                problem = f"{what}, and the container stopped"
        elif not self.running(container_id):
            problem = f"{what}, and the container stopped"
        else:
            problem = f"{what}, and its processes could not be stopped"
        self.destroy(container_id)
        raise SandboxGone(f"{container_id[:12]}: {problem}; the sandbox was destroyed")

    def recorded(self, container_id: str, call_id: str) -> bool:
        """Has this call run to the end here already (a retry then gets its recorded output)?"""
        code, _ = self.exec(container_id, ["test", "-e", f"{STATE_DIR}/calls/{_safe_id(call_id)}/rc"])
        return code == 0

    def read_recorded(self, container_id: str, call_id: str, cap: int) -> str:
        """The partial output of a call that did not finish (after a timeout)."""
        call_id = _safe_id(call_id)
        path = f"{STATE_DIR}/calls/{call_id}/out"
        half = cap // 2
        cmd = (
            f"s=$(wc -c < {path} 2>/dev/null || echo 0); "
            f"if [ $s -le {cap} ]; then cat {path} 2>/dev/null; "
            f"else head -c {half} {path}; printf '\\n[… cut …]\\n'; tail -c {half} {path}; fi"
        )
        try:
            return scrub(self.exec(container_id, ["bash", "-c", cmd])[1].decode(errors="replace"), call_id)
        except docker.errors.APIError:
            return ""

    # --- workspace snapshots ----------------------------------------------------------------

    def fingerprint(self, container_id: str) -> str:
        """Changes whenever a file in the workspace is added, removed, resized or touched."""
        code, out = self.exec(
            container_id, ["bash", "-c", f"find {WORKSPACE} -printf '%P %s %T@ %m\\n' | sort | md5sum"]
        )
        if code != 0:
            self._gone_or(container_id, f"cannot read the workspace: {out[-200:]!r}")
        return out.split()[0].decode()

    def snapshot(self, container_id: str, sink: BinaryIO) -> int:
        """Stream a gzipped tar of the workspace into `sink`; returns its size in bytes."""
        api = self.docker.api
        # The mark first: whatever changes while the tar runs is unsaved for the next snapshot. It
        # counts once the snapshot is stored (`snapshot_stored`): a snapshot that fails saves nothing.
        script = f"touch {SNAPSHOT_MARK}.pending && tar -C {WORKSPACE} -cf - . | gzip -1"
        with self.gates.execs:
            exec_id = api.exec_create(container_id, ["bash", "-c", script], user="1000:1000")["Id"]
        size = 0
        errors = b""
        for out, err in api.exec_start(exec_id, stream=True, demux=True):
            if out:
                sink.write(out)
                size += len(out)
            if err:
                errors += err
        if api.exec_inspect(exec_id).get("ExitCode") != 0:
            self._gone_or(container_id, f"snapshot failed: {errors[-300:]!r}")
        return size

    def snapshot_stored(self, container_id: str) -> None:
        """The snapshot `snapshot` streamed is stored: /workspace as it was then is saved."""
        self.exec(container_id, ["mv", "-f", f"{SNAPSHOT_MARK}.pending", SNAPSHOT_MARK])

    def _gone_or(self, container_id: str, problem: str) -> NoReturn:
        """SandboxGone if the container is gone, else the problem itself (worth a retry)."""
        if not self.running(container_id):
            raise SandboxGone(f"{container_id[:12]}: {problem}")
        raise RuntimeError(f"{container_id[:12]}: {problem}")

    def restore(self, container_id: str, data: bytes, saved: bool = True) -> None:
        """Unpack a snapshot into /workspace; `saved`: it is a snapshot of this session's, so the
        workspace then has nothing unsaved (a seed is not: it is kept at the first snapshot)."""
        mark = f" && mkdir -p {STATE_DIR} && touch {SNAPSHOT_MARK}" if saved else ""
        script = f"gzip -dc | tar -C {WORKSPACE} -xf -{mark}"
        code, out = self.exec(container_id, ["bash", "-c", script], stdin=data)
        if code != 0:
            raise RuntimeError(f"restore failed ({code}): {out[-300:].decode(errors='replace')}")

    def run(self, container_id: str, call_id: str, script: str, cap: int, timeout_s: float) -> CallOutput:
        """Run `script` in the persistent shell. At the deadline, CommandTimedOut once the call and
        all it started are stopped and a new shell is ready; ShellDied if the shell ended."""
        safe_id = _safe_id(call_id)
        with self._lock(container_id):
            shell = self._shell(container_id)
            deadline = time.monotonic() + timeout_s
            try:
                return shell.run(safe_id, script, cap, deadline)
            except TimeoutError:
                raise self._kill_shell(container_id, shell, safe_id, timeout_s) from None
            except ShellDied:
                if not self.running(container_id):
                    self._drop_shell(container_id)
                    raise SandboxGone(
                        f"{container_id[:12]}: the container stopped while running this command"
                    ) from None
                ended = shell.ended()
                if ended.signal is not None:  # killed: what it had started goes too, as after a timeout
                    self._stop(container_id, shell, safe_id, 128 + ended.signal)
                self._drop_shell(container_id)
                raise ended from None

    def close(self) -> None:
        for container_id in list(self._shells):
            self._drop_shell(container_id)
        if self._egress is not None:
            self._egress.close()


def _safe_id(call_id: str) -> str:
    """A call id as a file name in the container (tool-use ids already are)."""
    return "".join(c for c in call_id if c.isalnum() or c in "_-")[:80] or secrets.token_hex(8)
