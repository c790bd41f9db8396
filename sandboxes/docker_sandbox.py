"""Hardened Docker sandboxes and the persistent shell inside them (blocking code, docker SDK).

A container runs `sleep infinity` under an init; a long-lived `bash` started with `docker exec`
and kept attached runs every tool call, so the working directory and exported variables persist.
Each call is written to `/tmp/.da/calls/<call id>/` inside the container (command, output,
exit code) before anything runs: a retried call with the same id reads the recorded result
instead of running the command again, even from another worker process.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from contracts import SandboxSpec

LABEL = "durable-agents.sandbox"
WORKSPACE = "/workspace"
STATE_DIR = "/tmp/.da"

# Defined once in each shell. Runs a call by sourcing it (so `cd` and `export` persist), output to
# a file; then prints the head and tail of the output between markers, with exit code and size.
_SHELL_PRELUDE = r"""
exec 2>&1
cd /workspace
__da_run() {
  local __da_id="$1" __da_cap="$3" __da_d="/tmp/.da/calls/$1" __da_rc __da_size __da_half
  # A call this id already started (by a worker that died) is waited for, never run twice.
  while [ -e "$__da_d/started" ] && [ ! -e "$__da_d/rc" ]; do sleep 0.1; done
  if [ ! -e "$__da_d/rc" ]; then
    mkdir -p "$__da_d" && printf %s "$2" | base64 -d > "$__da_d/cmd" && : > "$__da_d/started"
    . "$__da_d/cmd" < /dev/null > "$__da_d/out" 2>&1
    echo $? > "$__da_d/rc"
    { pwd > /tmp/.da/cwd; export -p > /tmp/.da/env; } 2>/dev/null
  fi
  __da_rc=$(cat "$__da_d/rc"); __da_size=$(wc -c < "$__da_d/out")
  printf '\n__DA_BEGIN_%s\n' "$__da_id"
  if [ "$__da_size" -le "$__da_cap" ]; then cat "$__da_d/out"; else
    __da_half=$((__da_cap / 2)); head -c "$__da_half" "$__da_d/out"; printf '\n__DA_CUT__\n'
    tail -c "$__da_half" "$__da_d/out"; fi
  printf '\n__DA_END_%s %s %s\n' "$__da_id" "$__da_rc" "$__da_size"
}
printf '__DA_READY %s\n' "$$"
"""
# Restores what the previous shell had, after a restart (timeout, `exit`, worker restart).
_RESTORE = (
    "[ -f /tmp/.da/env ] && . /tmp/.da/env 2>/dev/null; "
    '[ -f /tmp/.da/cwd ] && cd "$(cat /tmp/.da/cwd)" 2>/dev/null; true\n'
)


class SandboxGone(Exception):
    """The container no longer exists or does not run."""


class ShellDied(Exception):
    """The persistent shell ended while running a call (`exit`, `set -e`, killed)."""


@dataclass
class CallOutput:
    output: str
    exit_code: int
    total_bytes: int
    cut: bool


class _Shell:
    """A bash process in the container, attached over the Docker API (stdout/stderr multiplexed)."""

    def __init__(self, api: docker.APIClient, container_id: str) -> None:
        exec_id = api.exec_create(
            container_id,
            ["bash", "--noprofile", "--norc"],
            stdin=True,
            stdout=True,
            stderr=True,
            user="1000:1000",
            workdir=WORKSPACE,
        )["Id"]
        self._sock: Any = api.exec_start(exec_id, socket=True, demux=False)
        self._raw: socket.socket = getattr(self._sock, "_sock", self._sock)
        self._buffer = b""
        self._send(_SHELL_PRELUDE.encode() + _RESTORE.encode())
        self._read_until(b"__DA_READY ", time.monotonic() + 20)
        self.pid = int(self._read_line(time.monotonic() + 5).split()[0])

    def _send(self, data: bytes) -> None:
        self._raw.sendall(data)

    def _fill(self, deadline: float) -> None:
        """Read one multiplexed frame (8-byte header: stream, 0, 0, 0, size) into the buffer."""
        header = self._recv_exact(8, deadline)
        size = struct.unpack(">BxxxL", header)[1]
        self._buffer += self._recv_exact(size, deadline)

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

    def run(self, call_id: str, script: str, cap: int, deadline: float) -> CallOutput:
        encoded = base64.b64encode(script.encode()).decode()
        self._send(f"__da_run {shlex.quote(call_id)} {encoded} {int(cap)}\n".encode())
        self._read_until(f"\n__DA_BEGIN_{call_id}\n".encode(), deadline)
        body = self._read_until(f"\n__DA_END_{call_id} ".encode(), deadline)
        rc, size = self._read_line(deadline).split()[:2]
        text = body.decode(errors="replace")
        cut = "\n__DA_CUT__\n" in text
        return CallOutput(text.replace("\n__DA_CUT__\n", "\n"), int(rc), int(size), cut)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class DockerSandboxes:
    """Creates, drives and removes this host's sandbox containers."""

    def __init__(self, host_id: str, client: docker.DockerClient | None = None) -> None:
        self.host_id = host_id
        self.docker = client or docker.from_env(timeout=120)
        self._shells: dict[str, _Shell] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # --- lifecycle --------------------------------------------------------------------------

    def create(self, session_id: str, spec: SandboxSpec) -> Container:
        tmpfs_opts = "rw,exec,nosuid,nodev,uid=1000,gid=1000,mode=0755"
        kwargs: dict[str, Any] = dict(
            image=spec.image,
            command=["sleep", "infinity"],
            detach=True,
            user="1000:1000",
            working_dir=WORKSPACE,
            environment={"HOME": WORKSPACE, "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"},
            labels={LABEL: "1", "durable-agents.session": session_id, "durable-agents.host": self.host_id},
            init=True,
            read_only=True,
            tmpfs={
                WORKSPACE: f"{tmpfs_opts},size={spec.disk_mb}m",
                "/tmp": f"{tmpfs_opts},size=256m",
            },
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            network_mode="bridge" if spec.network else "none",
            pids_limit=spec.pids,
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb}m",
            nano_cpus=int(spec.cpus * 1e9),
            ulimits=[
                docker.types.Ulimit(name="nofile", soft=1024, hard=1024),
                docker.types.Ulimit(name="core", soft=0, hard=0),
            ],
            privileged=False,
        )
        if spec.runtime:
            kwargs["runtime"] = spec.runtime
        container: Container = self.docker.containers.run(**kwargs)
        return container

    def destroy(self, container_id: str) -> bool:
        self._drop_shell(container_id)
        try:
            self.docker.api.remove_container(container_id, force=True)
            return True
        except docker.errors.NotFound:
            return False

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
            if not self.running(container_id):
                raise SandboxGone(container_id)
            shell = self._shells[container_id] = _Shell(self.docker.api, container_id)
        return shell

    def _kill_shell(self, container_id: str, shell: _Shell, call_id: str) -> None:
        self._drop_shell(container_id)
        try:
            self.docker.api.exec_start(
                self.docker.api.exec_create(
                    container_id,
                    [
                        "bash",
                        "-c",
                        f"kill -KILL -- -{shell.pid} {shell.pid} 2>/dev/null; "
                        f"[ -d {STATE_DIR}/calls/{call_id} ] && echo 124 > {STATE_DIR}/calls/{call_id}/rc; true",
                    ],
                    user="1000:1000",
                )["Id"]
            )
        except docker.errors.APIError:
            pass

    def read_recorded(self, container_id: str, call_id: str, cap: int) -> str:
        """The partial output of a call that did not finish (after a timeout)."""
        path = f"{STATE_DIR}/calls/{call_id}/out"
        half = cap // 2
        cmd = (
            f"s=$(wc -c < {path} 2>/dev/null || echo 0); "
            f"if [ $s -le {cap} ]; then cat {path} 2>/dev/null; "
            f"else head -c {half} {path}; printf '\\n[… cut …]\\n'; tail -c {half} {path}; fi"
        )
        try:
            result = self.docker.api.exec_start(
                self.docker.api.exec_create(container_id, ["bash", "-c", cmd], user="1000:1000")["Id"]
            )
        except docker.errors.APIError:
            return ""
        return bytes(result).decode(errors="replace")

    def run(self, container_id: str, call_id: str, script: str, cap: int, timeout_s: float) -> CallOutput:
        """Run `script` in the persistent shell; TimeoutError after killing it at the deadline."""
        safe_id = "".join(c for c in call_id if c.isalnum() or c in "_-")[:80] or secrets.token_hex(8)
        with self._lock(container_id):
            shell = self._shell(container_id)
            deadline = time.monotonic() + timeout_s
            try:
                return shell.run(safe_id, script, cap, deadline)
            except TimeoutError:
                self._kill_shell(container_id, shell, safe_id)
                raise
            except ShellDied:
                self._drop_shell(container_id)
                if not self.running(container_id):
                    raise SandboxGone(container_id) from None
                raise

    def close(self) -> None:
        for container_id in list(self._shells):
            self._drop_shell(container_id)


def default_host_id() -> str:
    return os.environ.get("SANDBOX_HOST_ID") or socket.gethostname()
