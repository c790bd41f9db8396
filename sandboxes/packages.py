"""Environment packages: an image derived from the sandbox image with them installed, built on the
sandbox host the first time a sandbox needs it and reused after (the tag is a content hash of the
base image's id and the package lists).

- The build runs in a throwaway container from the base image: root, a bridged network (the one
  time a sandbox image sees one), the sandbox host's package sources and trust (`HOST_CONFIG`,
  read-only) so the host's mirrors and certificate authorities apply. The container is committed
  as `durable-agents/sandbox-packages:<hash>` with the base image's user and command, then removed.
  Sandboxes made from it are hardened exactly as any other (`DockerSandboxes.create`).
- One build per hash per process at a time: provision attempts that arrive while it runs wait for
  it (a provision retried after its own timeout joins the build instead of starting another).
- A package that cannot be installed is `PackagesFailed` (not retried) naming the manager, the
  command and the installer's last lines; the failure is kept for `FAILURE_TTL_S` so a session's
  retries do not rebuild it over and over.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import structlog
from docker.models.containers import Container
from docker.types import Mount

from durable_agents.contracts import Packages
from durable_agents.errors import PackagesFailed

REPOSITORY = "durable-agents/sandbox-packages"
LABEL = "durable-agents.packages"
BUILD_LABEL = "durable-agents.packages-build"
FAILURE_TTL_S = 300.0
TAIL_LINES = 12
# What of the sandbox host's configuration the build container sees (read-only), where it exists:
# its Debian mirrors and certificate authorities. Never the package managers' own files (pip.conf,
# npmrc, apt's auth.conf.d), which can hold registry credentials: a package's install script runs
# in the build container and could copy them into the image every sandbox is made from.
HOST_CONFIG = (
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
    "/etc/apt/apt.conf.d",
    "/etc/ssl/certs/ca-certificates.crt",
)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

log = structlog.get_logger("packages")


# What each manager needs from apt first, and how it installs (packages appended, quoted).
MANAGERS: dict[str, tuple[list[str], str]] = {
    "apt": ([], "apt-get install -y --no-install-recommends"),
    "pip": (["python3-pip"], "python3 -m pip install --no-cache-dir --break-system-packages --root-user-action=ignore"),
    "npm": (["npm"], "npm install -g --no-fund --no-audit"),
    "cargo": (["cargo"], "cargo install --root /usr/local"),
    "gem": (["ruby"], "gem install --no-document"),
    "go": (["golang-go", "ca-certificates", "git"], "GOBIN=/usr/local/bin GOPATH=/tmp/go go install"),
}


def install_script(packages: Packages) -> str:
    """The build container's script: one step per manager, each announced so a failure names it."""
    wanted = {name: list(getattr(packages, name)) for name in MANAGERS if getattr(packages, name)}
    apt = [p for name in wanted for p in MANAGERS[name][0]] + wanted.get("apt", [])
    lines = [
        "set -e",
        "export DEBIAN_FRONTEND=noninteractive",
        f"export PIP_CERT={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} SSL_CERT_FILE={CA_BUNDLE}",
        f"export NODE_EXTRA_CA_CERTS={CA_BUNDLE} CARGO_HTTP_CAINFO={CA_BUNDLE}",
    ]
    if apt:
        quoted = " ".join(shlex.quote(p) for p in dict.fromkeys(apt))
        lines += ["echo '::step apt-get update'", "apt-get update -q"]
        lines += [f"echo '::step apt-get install {quoted}'", f"{MANAGERS['apt'][1]} {quoted}"]
    for name, items in wanted.items():
        if name == "apt":
            continue
        quoted = " ".join(shlex.quote(p) for p in items)
        lines += [f"echo '::step {name} install {quoted}'", f"{MANAGERS[name][1]} {quoted}"]
    lines += ["rm -rf /var/lib/apt/lists/* /tmp/go /root/.cache /root/.npm /root/.cargo/registry", "echo '::done'"]
    return "\n".join(lines) + "\n"


def derived_tag(base_id: str, packages: Packages) -> str:
    key = hashlib.sha256(f"{base_id}\n{packages.digest()}".encode()).hexdigest()[:16]
    return f"{REPOSITORY}:{key}"


def failure_message(output: str, exit_code: int | None) -> str:
    lines = output.rstrip().splitlines()
    steps = [i for i, line in enumerate(lines) if line.startswith("::step ")]
    step = lines[steps[-1]].removeprefix("::step ") if steps else "the installer"
    after = lines[steps[-1] + 1 :] if steps else lines
    tail = "\n".join(after[-TAIL_LINES:]) or "(no output)"
    how = "timed out" if exit_code is None else f"failed (exit {exit_code})"
    return f"environment packages could not be installed: `{step}` {how}:\n{tail}"


@dataclass
class _Build:
    done: threading.Event = field(default_factory=threading.Event)
    tag: str | None = None
    error: str | None = None
    finished_at: float = 0.0


class PackageImages:
    """Derived images on one sandbox host (thread-safe; called from provisioning threads)."""

    def __init__(self, client: docker.DockerClient, timeout_s: float = 1800.0) -> None:
        self.docker = client
        self.timeout_s = timeout_s
        self._builds: dict[str, _Build] = {}
        self._guard = threading.Lock()

    def image_for(self, base_image: str, packages: Packages) -> str:
        """The image a sandbox with `packages` is made from: `base_image` itself when there are none."""
        if not packages:
            return base_image
        base = self.docker.images.get(base_image)  # ImageNotFound: the caller's "image missing"
        tag = derived_tag(base.id, packages)
        with self._guard:
            build = self._builds.get(tag)
            failed_long_ago = (
                build is not None
                and build.error is not None
                and time.monotonic() - build.finished_at > FAILURE_TTL_S  # the mirror may be back
            )
            if build is None or failed_long_ago or (build.done.is_set() and build.error is None):
                if self._exists(tag):
                    return tag
                build = self._builds[tag] = _Build()
                threading.Thread(target=self._build, args=(build, base_image, tag, packages), daemon=True).start()
        build.done.wait()
        if build.error is not None:
            raise PackagesFailed(build.error)
        return tag

    def _exists(self, tag: str) -> bool:
        try:
            self.docker.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _build(self, build: _Build, base_image: str, tag: str, packages: Packages) -> None:
        started = time.monotonic()
        container: Container | None = None
        try:
            base = self.docker.images.get(base_image)
            config = base.attrs.get("Config") or {}
            # Mounts, not volumes: volumes would be declared in the committed image's config.
            mounts = [Mount(p, p, type="bind", read_only=True) for p in HOST_CONFIG if Path(p).exists()]
            container = self.docker.containers.run(
                base_image,
                command=["/bin/sh", "-c", install_script(packages)],
                user="0:0",
                working_dir="/",
                network_mode="bridge",
                mounts=mounts,
                labels={BUILD_LABEL: tag},
                detach=True,
            )
            try:
                exit_code: int | None = container.wait(timeout=self.timeout_s)["StatusCode"]
            except Exception:  # requests' ReadTimeout: the install hangs
                exit_code = None
                container.kill()
            output = container.logs(stdout=True, stderr=True).decode(errors="replace")
            if exit_code != 0 or "::done" not in output:
                build.error = failure_message(output, exit_code)
                log.warning("environment packages failed", image=tag, error=build.error)
                return
            repository, _, version = tag.partition(":")
            changes = [f"USER {config.get('User') or 'root'}", f"WORKDIR {config.get('WorkingDir') or '/'}"]
            if config.get("Cmd"):
                changes.append("CMD " + json.dumps(config["Cmd"]))
            changes.append(f"LABEL {LABEL}={packages.digest()[:16]}")
            container.commit(repository=repository, tag=version, changes=changes)
            build.tag = tag
            log.info("environment packages installed", image=tag, seconds=round(time.monotonic() - started, 1))
        except docker.errors.DockerException as e:
            build.error = f"environment packages could not be installed: the build container failed: {e}"
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.DockerException:
                    pass
            build.finished_at = time.monotonic()
            build.done.set()
