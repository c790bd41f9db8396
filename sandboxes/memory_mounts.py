"""Memory stores in a sandbox, on its sandbox worker: each attached store is a host directory filled
from the API's database and bind-mounted at /mnt/memory/<name> (`ro` for read_only: the kernel
refuses writes, not a rule the model is asked to keep). After every tool call the read_write
directories are compared with what was last saved (a manifest of sha256s beside them, outside the
mount) and each created, changed or removed file becomes a version in the database, attributed to
the session and the tool call. So a lost sandbox loses nothing the tool calls wrote, and content
never travels through workflow history.

Two sessions writing one memory: the second write is a new version on top of the first (both are
kept in the versions); nothing is lost silently. Files a memory cannot hold (over 100 KB, not
UTF-8 text) stay in the sandbox only, and the tool result says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from durable_agents.contracts import MemoryMount
from durable_agents.settings import settings

SANDBOX_UID = 1000


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class MemoryMounts:
    """The host side of the mounts of this worker's sandboxes, under DA_DATA_DIR/memory-mounts."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._stores: dict[str, Any] = {}

    @property
    def root(self) -> Path:
        return self._root or settings().data_dir / "memory-mounts"

    def _dir(self, session_id: str, mount: MemoryMount) -> Path:
        return self.root / _safe(session_id) / mount.name

    def _manifest(self, session_id: str, mount: MemoryMount) -> Path:
        return self.root / _safe(session_id) / f".{mount.name}.manifest.json"

    async def _db(self) -> Any:
        """The API's database (DA_DATABASE_URL), opened once per URL."""
        from durable_agents.api.memory_db import MemoryDb
        from durable_agents.api.store import Store

        url = settings().database_url
        if url not in self._stores:
            store = Store(url)
            await store.start()
            self._stores[url] = MemoryDb(store)
        return self._stores[url]

    async def prepare(self, session_id: str, mounts: list[MemoryMount]) -> dict[str, dict[str, str]]:
        """Fill each mount's directory with its store's memories (as they are now); the volumes to
        bind, as docker's `volumes` argument takes them."""
        db = await self._db()
        volumes = {}
        for mount in mounts:
            where = self._dir(session_id, mount)
            if where.exists():
                shutil.rmtree(where)
            where.mkdir(parents=True)
            manifest = {}
            for memory in await db.list(mount.store_id):
                target = where / memory.path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(memory.content, encoding="utf-8")
                manifest[memory.path] = memory.sha256
            self._manifest(session_id, mount).write_text(json.dumps(manifest))
            _own(where)
            volumes[str(where)] = {"bind": mount.path, "mode": "rw" if mount.access == "read_write" else "ro"}
        return volumes

    async def save(self, session_id: str, call_id: str, mounts: list[MemoryMount]) -> list[str]:
        """Write back what changed under the read_write mounts since the last save; notes for the
        model about what could not be kept."""
        from durable_agents.api.memory_db import MAX_CONTENT, MemoryProblem, check_path, session_actor

        notes: list[str] = []
        for mount in mounts:
            where = self._dir(session_id, mount)
            if mount.access != "read_write" or not where.is_dir():
                continue
            manifest_file = self._manifest(session_id, mount)
            saved: dict[str, str] = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
            now: dict[str, str] = {}
            changed: dict[str, str] = {}
            for path in sorted(p for p in where.rglob("*") if p.is_file() and not p.is_symlink()):
                key = "/" + path.relative_to(where).as_posix()
                data = path.read_bytes()
                if len(data) > MAX_CONTENT:
                    notes.append(
                        f"{mount.path}{key} is {len(data):,} bytes, over a memory's {MAX_CONTENT:,}: not saved"
                    )
                    continue
                try:
                    text = data.decode("utf-8")
                    check_path(key)
                except (UnicodeDecodeError, MemoryProblem) as e:
                    why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
                    notes.append(f"{mount.path}{key}: {why}: not saved")
                    continue
                digest = hashlib.sha256(data).hexdigest()
                now[key] = digest
                if saved.get(key) != digest:
                    changed[key] = text
            removed = [key for key in saved if key not in now]
            if not changed and not removed:
                continue
            db = await self._db()
            actor = {**session_actor(session_id), "tool_use_id": call_id}
            for key, text in changed.items():
                await db.write(mount.store_id, key, text, actor)
            if removed:
                current = {m.path: m for m in await db.list(mount.store_id)}
                for key in removed:
                    if key in current:
                        await db.delete(mount.store_id, current[key].id, actor)
            manifest_file.write_text(json.dumps(now))
        return notes

    def forget(self, session_id: str) -> None:
        shutil.rmtree(self.root / _safe(session_id), ignore_errors=True)


def _own(where: Path) -> None:
    """The sandbox's user owns the mount (where this worker may give it away; else all may write)."""
    for path in [where, *where.rglob("*")]:
        try:
            os.chown(path, SANDBOX_UID, SANDBOX_UID)
        except PermissionError:
            path.chmod(0o777 if path.is_dir() else 0o666)
