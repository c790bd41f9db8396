"""Seeding a new sandbox's /workspace: inline files and a git repository cloned on the host.

The clone runs on the sandbox worker, outside the container. A token (for private repositories)
is resolved here from the vault (vault.py) and handed to git for that one command
(`-c http.extraHeader=...`), so it lands in no file: not in `.git/config`, not in the container, not in its environment.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from durable_agents.contracts import GitSource, WorkspaceSeed
from durable_agents.errors import SandboxError
from durable_agents.vault import VaultError, load_vault


class SeedError(SandboxError):
    pass


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def _clone(source: GitSource, into: Path) -> None:
    url = _without_credentials(source.url)
    argv = ["git"]
    if source.token_secret:
        try:
            token = load_vault().resolve(source.token_secret)
        except VaultError as e:
            raise SeedError(str(e)) from None
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        argv += ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
    argv += ["clone", "--quiet", "--depth", "1"]
    if source.ref:
        argv += ["--branch", source.ref]
    argv += [url, str(into)]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    if done.returncode != 0:
        # git's message, with anything that looks like our header scrubbed.
        message = re.sub(r"Authorization: Basic \S+", "Authorization: Basic ***", done.stderr.strip())
        raise SeedError(f"git clone {url} failed: {message[-500:]}")


def seed_archive(seed: WorkspaceSeed) -> tuple[bytes, str]:
    """A gzipped tar of the seeded workspace, and a line saying what is in it."""
    with tempfile.TemporaryDirectory(prefix="da-seed-") as tmp:
        root = Path(tmp) / "workspace"
        described = []
        if seed.git is not None:
            _clone(seed.git, root)
            described.append(
                f"git clone of {_without_credentials(seed.git.url)}" + (f" at {seed.git.ref}" if seed.git.ref else "")
            )
        root.mkdir(exist_ok=True)
        for rel, content in seed.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        if seed.files:
            described.append(f"{len(seed.files)} file(s)")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for child in sorted(root.iterdir()):
                tar.add(child, arcname=child.name, filter=_owned_by_sandbox_user)
        return buffer.getvalue(), " and ".join(described) or "nothing"


def _owned_by_sandbox_user(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 1000
    info.uname = info.gname = "agent"
    return info
