"""Sandbox I/O: what a workspace starts with, provisioning, the handle that names a sandbox's
host queue, `execute` and snapshots. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from durable_agents.contracts._base import SharedText, _Strict
from durable_agents.contracts.agent import SandboxSpec


class GitSource(_Strict):
    url: str = Field(min_length=1)
    ref: str | None = Field(default=None, description="branch or tag; default: the remote's HEAD")
    token_secret: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="name of a vault secret the sandbox worker resolves for the clone; never sent anywhere else",
    )


class WorkspaceSeed(_Strict):
    """What /workspace starts with: small inline files and/or a git repository (cloned on the host)."""

    files: dict[str, str] = Field(default_factory=dict, description="relative path -> text content")
    git: GitSource | None = None

    @field_validator("files")
    @classmethod
    def _small_relative_files(cls, files: dict[str, str]) -> dict[str, str]:
        if sum(len(v) for v in files.values()) > 1_000_000:
            raise ValueError("inline files are limited to 1 MB in all (they travel in the session's history)")
        for path in files:
            parts = path.split("/")
            if path.startswith("/") or ".." in parts or not path:
                raise ValueError(f"{path!r}: workspace paths must be relative and stay inside /workspace")
        return files


class SnapshotRef(_Strict):
    """A workspace snapshot in the blob store (a gzipped tar of /workspace)."""

    key: str
    bytes: int
    fingerprint: str  # of the workspace when it was taken: unchanged workspace, no new snapshot
    taken_at: datetime


class MemoryMount(_Strict):
    """A memory store attached to a session: its files mounted in the sandbox at
    /mnt/memory/<name> (read-only by the mount for read_only), changes written back as versions."""

    store_id: str = Field(min_length=1, max_length=64)
    name: str = Field(
        min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9-]*$", description="the mount's directory"
    )
    access: Literal["read_write", "read_only"] = "read_write"
    description: str = ""
    instructions: str = Field(default="", max_length=4096)

    @property
    def path(self) -> str:
        return f"{MEMORY_ROOT}/{self.name}"


MEMORY_ROOT = "/mnt/memory"


class ProvisionRequest(_Strict):
    session_id: str
    spec: SandboxSpec
    restore: SnapshotRef | None = None  # a snapshot wins over the seed
    seed: WorkspaceSeed | None = None
    memory: list[MemoryMount] = Field(default_factory=list)  # mounted from the API's database


class SandboxHandle(_Strict):
    sandbox_id: str  # the container id
    host_queue: str  # every later call for this sandbox goes to this task queue
    image: str
    runtime: str
    restored: SnapshotRef | None = None
    restore_error: str | None = None
    seeded: str | None = None  # what the workspace was seeded with
    from_pool: bool = False


class SnapshotRequest(_Strict):
    handle: SandboxHandle
    session_id: str
    previous: SnapshotRef | None = None


class SandboxCall(_Strict):
    """One sandbox tool call, without the sandbox it runs in."""

    call_id: str  # execution is idempotent per call id
    name: str
    input: dict[str, Any]
    timeout_s: float
    output_cap: int
    # The session's memory mounts: what the call changed under a read_write one becomes versions.
    memory: list[MemoryMount] = Field(default_factory=list)
    session_id: str | None = None
    # Episodic memory: memory_search also covers this agent's earlier sessions.
    episodes_of: str | None = None


class ExecuteRequest(SandboxCall):
    handle: SandboxHandle


class FirstCallRequest(_Strict):
    """A session's first sandbox call, with its sandbox's provisioning: one activity on the shared
    queue (`provision_and_execute`) instead of `provision_sandbox` and then `execute`."""

    provision: ProvisionRequest
    call: SandboxCall


class IndexRequest(_Strict):
    """Index a session's log from `from_offset` on for its agent's memory_search (episodic memory)."""

    session_id: str
    agent: str
    from_offset: int = 0


class ExecuteResult(_Strict):
    output: SharedText
    is_error: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    truncated_chars: int = 0
    # /workspace has changed since its last snapshot (True where the sandbox cannot tell).
    unsaved: bool = True


class FirstCallResult(_Strict):
    handle: SandboxHandle
    result: ExecuteResult


class ReleaseResult(_Strict):
    """How a closed session's sandbox was released by its host (sandboxes/reaper.py)."""

    snapshot: SnapshotRef | None  # the last one; None where nothing was unsaved (the session's own last one stands)
    destroyed: bool  # the container existed and was removed (False: it had gone already)
    error: str | None = None  # what could not be done (no last snapshot of a container that had gone)
