"""Memories in the API's database: text files (at most 100 KB each) at paths inside a memory store,
each change an immutable version written in the same transaction as the change.

- create / update (content, path, or both; an optional sha256 precondition) / delete: one version
  each (`created`, `modified`, `deleted`), attributed to an actor (an API key, a session);
- versions stay after their memory is deleted; redaction empties a version's content and path
  (never the memory's current one: change or delete the memory first);
- `write` is how a session's changes under /mnt/memory come back: unchanged content writes nothing.

Two writers of one memory: each change is a new version on top of the one before (last writer
wins, nothing is lost: the earlier content stays in its version); a writer that must not overwrite
another's change sends the sha256 it read as a precondition and gets a conflict instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, text, update

from durable_agents.api.store import Store, episodes, memories, memory_versions, new_id, now, records
from durable_agents.errors import UserError

MAX_CONTENT = 102_400  # bytes of one memory's content
MAX_PATH = 1024  # bytes of a path
MAX_SEGMENTS = 20


class MemoryProblem(UserError):
    """A memory operation that cannot be done; `kind` says how the API answers it."""

    kind = "invalid"


class MemoryNotFound(MemoryProblem):
    kind = "not_found"


class MemoryConflict(MemoryProblem):
    kind = "conflict"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_path(path: str, field: str = "path") -> str:
    """A memory path as the API takes it: /a/b.md, 1-20 segments, no . or .., NFC, printable."""
    if not path.startswith("/"):
        raise MemoryProblem(f"{field}: {path!r} must start with /")
    if len(path.encode()) > MAX_PATH:
        raise MemoryProblem(f"{field}: longer than {MAX_PATH} bytes")
    if unicodedata.normalize("NFC", path) != path:
        raise MemoryProblem(f"{field}: not in Unicode Normalization Form C")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in path):
        raise MemoryProblem(f"{field}: control or format characters are not allowed")
    segments = path[1:].split("/")
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise MemoryProblem(f"{field}: 1 to {MAX_SEGMENTS} segments")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise MemoryProblem(f"{field}: {path!r} has an empty, '.' or '..' segment")
    return path


def check_content(content: str, field: str = "content") -> str:
    size = len(content.encode())
    if size > MAX_CONTENT:
        raise MemoryProblem(f"{field}: {size:,} bytes, over the limit of {MAX_CONTENT:,} (100 KB)")
    return content


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class Memory:
    id: str
    store_id: str
    path: str
    content: str
    sha256: str
    size: int
    version_id: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> Memory:
        return cls(
            row.id,
            row.store_id,
            row.path,
            row.content,
            row.sha256,
            row.size,
            row.version_id,
            _utc(row.created_at) or now(),
            _utc(row.updated_at) or now(),
        )

    def answer(self, full: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "memory",
            "memory_store_id": self.store_id,
            "path": self.path,
            "content": self.content if full else None,
            "content_sha256": self.sha256,
            "content_size_bytes": self.size,
            "memory_version_id": self.version_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class Version:
    id: str
    memory_id: str
    store_id: str
    operation: str
    path: str | None
    content: str | None
    sha256: str | None
    size: int | None
    created_by: dict[str, Any] | None
    created_at: datetime
    redacted_at: datetime | None
    redacted_by: dict[str, Any] | None

    @classmethod
    def of(cls, row: Any) -> Version:
        return cls(
            row.id,
            row.memory_id,
            row.store_id,
            row.operation,
            row.path,
            row.content,
            row.sha256,
            row.size,
            json.loads(row.created_by) if row.created_by else None,
            _utc(row.created_at) or now(),
            _utc(row.redacted_at),
            json.loads(row.redacted_by) if row.redacted_by else None,
        )

    def answer(self, full: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "memory_version",
            "memory_id": self.memory_id,
            "memory_store_id": self.store_id,
            "operation": self.operation,
            "path": self.path,
            "content": self.content if full else None,
            "content_sha256": self.sha256,
            "content_size_bytes": self.size,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "redacted_at": self.redacted_at.isoformat() if self.redacted_at else None,
            "redacted_by": self.redacted_by,
        }


def api_actor(key_id: str | None) -> dict[str, Any]:
    return {"type": "api_actor", "api_key_id": key_id or "DA_API_KEY"}


def session_actor(session_id: str) -> dict[str, Any]:
    return {"type": "session_actor", "session_id": session_id}


@dataclass(frozen=True)
class EpisodeHit:
    session_id: str
    offset: int
    kind: str
    excerpt: str


@dataclass(frozen=True)
class SearchHit:
    store_id: str
    memory_id: str
    path: str
    excerpt: str


def _terms(query: str) -> list[str]:
    """The words of a search, as plain terms (no query syntax of either database gets through)."""
    return [t for t in re.findall(r"\w+", query.lower()) if t][:32]


class MemoryDb:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self.sqlite = store.engine.dialect.name == "sqlite"
        self._fts_ready = False

    @property
    def where(self) -> str:
        """The database, for messages (never its password)."""
        return self.engine.url.render_as_string(hide_password=True)

    async def has_store(self, store_id: str) -> bool:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(records.c.id)
                    .where(and_(records.c.kind == "memory_store", records.c.id == store_id))
                    .limit(1)
                )
            ).first()
        return row is not None

    async def _fts(self, conn: Any) -> None:
        """SQLite: the FTS5 index of memories (made on first use, filled from what is there)."""
        if not self.sqlite or self._fts_ready:
            return
        exists = (
            await conn.execute(text("SELECT name FROM sqlite_master WHERE type='table' AND name='memories_fts'"))
        ).first()
        if exists is None:
            await conn.execute(
                text(
                    # memory_id is indexed (not UNINDEXED) so that one memory's row is found by MATCH,
                    # not by scanning the table; searches match only path and content.
                    "CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING "
                    "fts5(memory_id, store_id UNINDEXED, path, content)"
                )
            )
            await conn.execute(text("INSERT INTO memories_fts SELECT id, store_id, path, content FROM memories"))
        self._fts_ready = True

    async def _index(
        self, conn: Any, memory_id: str, store_id: str | None = None, path: str = "", content: str | None = None
    ) -> None:
        """Keep the SQLite index in step with one memory (content None: it is gone)."""
        if not self.sqlite:
            return
        await self._fts(conn)
        await conn.execute(
            text("DELETE FROM memories_fts WHERE memories_fts MATCH :q"), {"q": f'memory_id : "{memory_id}"'}
        )
        if content is not None:
            await conn.execute(
                text("INSERT INTO memories_fts (memory_id, store_id, path, content) VALUES (:m, :s, :p, :c)"),
                {"m": memory_id, "s": store_id, "p": path, "c": content},
            )

    async def search(self, store_ids: list[str], query: str, limit: int = 10) -> list[SearchHit]:
        """Full-text search over these stores' memories, best first (SQLite FTS5 BM25; PostgreSQL
        ts_rank), each hit with a short excerpt around the words found."""
        terms = _terms(query)
        if not terms or not store_ids:
            return []
        marks = ", ".join(f":s{i}" for i in range(len(store_ids)))
        params: dict[str, Any] = {f"s{i}": sid for i, sid in enumerate(store_ids)} | {"n": limit}
        async with self.engine.begin() as conn:
            if self.sqlite:
                await self._fts(conn)
                params["q"] = "{path content} : (" + " OR ".join(f'"{t}"' for t in terms) + ")"
                sql = (
                    "SELECT store_id, memory_id, path, snippet(memories_fts, 3, '[', ']', '…', 16) AS excerpt "
                    f"FROM memories_fts WHERE memories_fts MATCH :q AND store_id IN ({marks}) "
                    "ORDER BY bm25(memories_fts, 0, 0, 2.0, 1.0) LIMIT :n"
                )
            else:
                params["q"] = " | ".join(terms)
                document = "to_tsvector('simple', path || ' ' || content)"
                sql = (
                    "SELECT store_id, id AS memory_id, path, ts_headline('simple', content, to_tsquery('simple', :q), "
                    "'StartSel=[, StopSel=], MaxWords=16, MinWords=4') AS excerpt "
                    f"FROM memories WHERE store_id IN ({marks}) AND {document} @@ to_tsquery('simple', :q) "
                    f"ORDER BY ts_rank({document}, to_tsquery('simple', :q)) DESC, path LIMIT :n"
                )
            rows = (await conn.execute(text(sql), params)).all()
        return [SearchHit(r.store_id, r.memory_id, r.path, " ".join(str(r.excerpt).split())) for r in rows]

    # --- reading ------------------------------------------------------------------------------

    async def get(self, store_id: str, memory_id: str) -> Memory:
        async with self.engine.connect() as conn:
            return Memory.of(await _memory_row(conn, store_id, memory_id))

    async def list(self, store_id: str, prefix: str = "/") -> list[Memory]:
        """The store's memories under `prefix` (whole segments), by path."""
        query = select(memories).where(memories.c.store_id == store_id)
        if prefix != "/":
            query = query.where(memories.c.path.startswith(prefix, autoescape=True))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(memories.c.path))).all()
        return [Memory.of(r) for r in rows]

    async def versions(self, store_id: str, **filters: str | None) -> list[Version]:
        """The store's versions, newest first; filters: memory_id, operation, session_id, api_key_id."""
        query = select(memory_versions).where(memory_versions.c.store_id == store_id)
        for name in ("memory_id", "operation"):
            if filters.get(name):
                query = query.where(memory_versions.c[name] == filters[name])
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(memory_versions.c.seq.desc()))).all()
        found = [Version.of(r) for r in rows]
        for name, actor in (("session_id", "session_actor"), ("api_key_id", "api_actor")):
            if filters.get(name):
                found = [
                    v
                    for v in found
                    if v.created_by and v.created_by["type"] == actor and v.created_by[name] == filters[name]
                ]
        return found

    async def version(self, store_id: str, version_id: str) -> Version:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(memory_versions).where(
                        and_(memory_versions.c.store_id == store_id, memory_versions.c.id == version_id)
                    )
                )
            ).first()
        if row is None:
            raise MemoryNotFound(f"memory store {store_id!r} has no memory version {version_id!r}")
        return Version.of(row)

    # --- changing -----------------------------------------------------------------------------

    @staticmethod
    def _version(
        memory_id: str,
        store_id: str,
        operation: str,
        path: str,
        content: str | None,
        actor: dict[str, Any],
        when: datetime,
    ) -> dict[str, Any]:
        return {
            "id": new_id("memver"),
            "memory_id": memory_id,
            "store_id": store_id,
            "operation": operation,
            "path": path,
            "content": content,
            "sha256": sha256(content) if content is not None else None,
            "size": len(content.encode()) if content is not None else None,
            "created_by": json.dumps(actor),
            "created_at": when,
        }

    async def create(self, store_id: str, path: str, content: str, actor: dict[str, Any]) -> Memory:
        check_path(path)
        check_content(content)
        when, memory_id = now(), new_id("mem")
        version = self._version(memory_id, store_id, "created", path, content, actor, when)
        async with self.engine.begin() as conn:
            taken = (
                await conn.execute(
                    select(memories.c.id).where(and_(memories.c.store_id == store_id, memories.c.path == path))
                )
            ).first()
            if taken is not None:
                raise MemoryConflict(f"path: a memory already exists at {path} ({taken.id}); update it instead")
            await conn.execute(insert(memory_versions).values(**version))
            await conn.execute(
                insert(memories).values(
                    id=memory_id,
                    store_id=store_id,
                    path=path,
                    content=content,
                    sha256=version["sha256"],
                    size=version["size"],
                    version_id=version["id"],
                    created_at=when,
                    updated_at=when,
                )
            )
            await self._index(conn, memory_id, store_id, path, content)
        return await self.get(store_id, memory_id)

    async def update(
        self,
        store_id: str,
        memory_id: str,
        actor: dict[str, Any],
        *,
        content: str | None = None,
        path: str | None = None,
        expected_sha256: str | None = None,
    ) -> Memory:
        """A new version with the new content and/or path; MemoryConflict if the precondition fails
        or the new path is taken. An update that changes nothing writes no version."""
        if path is not None:
            check_path(path)
        if content is not None:
            check_content(content)
        async with self.engine.begin() as conn:
            row = await _memory_row(conn, store_id, memory_id)
            current = Memory.of(row)
            if expected_sha256 is not None and expected_sha256 != current.sha256:
                raise MemoryConflict(
                    f"precondition failed: the memory's content_sha256 is {current.sha256}, not {expected_sha256} "
                    "(it changed since you read it)"
                )
            new_path = path if path is not None else current.path
            new_content = content if content is not None else current.content
            if new_path == current.path and new_content == current.content:
                return current
            if new_path != current.path:
                taken = (
                    await conn.execute(
                        select(memories.c.id).where(and_(memories.c.store_id == store_id, memories.c.path == new_path))
                    )
                ).first()
                if taken is not None:
                    raise MemoryConflict(f"path: a memory already exists at {new_path} ({taken.id})")
            when = now()
            version = self._version(memory_id, store_id, "modified", new_path, new_content, actor, when)
            await conn.execute(insert(memory_versions).values(**version))
            await conn.execute(
                update(memories)
                .where(memories.c.id == memory_id)
                .values(
                    path=new_path,
                    content=new_content,
                    sha256=version["sha256"],
                    size=version["size"],
                    version_id=version["id"],
                    updated_at=when,
                )
            )
            await self._index(conn, memory_id, store_id, new_path, new_content)
        return await self.get(store_id, memory_id)

    async def delete(
        self, store_id: str, memory_id: str, actor: dict[str, Any], expected_sha256: str | None = None
    ) -> None:
        async with self.engine.begin() as conn:
            row = await _memory_row(conn, store_id, memory_id)
            if expected_sha256 is not None and expected_sha256 != row.sha256:
                raise MemoryConflict(
                    f"precondition failed: the memory's content_sha256 is {row.sha256}, not {expected_sha256}"
                )
            version = self._version(memory_id, store_id, "deleted", row.path, None, actor, now())
            await conn.execute(insert(memory_versions).values(**version))
            await conn.execute(delete(memories).where(memories.c.id == memory_id))
            await self._index(conn, memory_id)

    async def redact(self, store_id: str, version_id: str, actor: dict[str, Any]) -> Version:
        version = await self.version(store_id, version_id)
        async with self.engine.begin() as conn:
            current = (await conn.execute(select(memories.c.id).where(memories.c.version_id == version_id))).first()
            if current is not None:
                raise MemoryConflict(
                    f"{version_id} holds the current content of memory {current.id}: update or delete the memory "
                    "first, then redact this version"
                )
            if version.redacted_at is None:
                await conn.execute(
                    update(memory_versions)
                    .where(memory_versions.c.id == version_id)
                    .values(
                        content=None,
                        path=None,
                        sha256=None,
                        size=None,
                        redacted_at=now(),
                        redacted_by=json.dumps(actor),
                    )
                )
        return await self.version(store_id, version_id)

    async def write(self, store_id: str, path: str, content: str, actor: dict[str, Any]) -> Memory | None:
        """The memory at `path` holds `content` now: created, or a new version on top of whatever is
        there (None when it already held it)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(memories).where(and_(memories.c.store_id == store_id, memories.c.path == path))
                )
            ).first()
        if row is None:
            return await self.create(store_id, path, content, actor)
        if row.content == content:
            return None
        return await self.update(store_id, row.id, actor, content=content)

    async def drop_store(self, store_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(memories).where(memories.c.store_id == store_id))
            await conn.execute(delete(memory_versions).where(memory_versions.c.store_id == store_id))
            if self.sqlite:
                await self._fts(conn)
                await conn.execute(text("DELETE FROM memories_fts WHERE store_id = :s"), {"s": store_id})

    async def count(self, store_id: str) -> int:
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(select(func.count()).select_from(memories).where(memories.c.store_id == store_id))
            ).scalar()
        return int(value or 0)

    # --- episodic memory --------------------------------------------------------------------------

    async def _episodes_fts(self, conn: Any) -> None:
        if self.sqlite:
            await conn.execute(
                text("CREATE VIRTUAL TABLE IF NOT EXISTS episodes_fts USING fts5(agent, session_id UNINDEXED, text)")
            )

    async def add_episodes(self, agent: str, session_id: str, items: list[tuple[int, str, str]]) -> None:
        """Index (offset, kind, text) items of one session of `agent`."""
        if not items:
            return
        when = now()
        async with self.engine.begin() as conn:
            await self._episodes_fts(conn)
            for offset, kind, body in items:
                result = await conn.execute(
                    insert(episodes).values(
                        agent=agent, session_id=session_id, offset=offset, kind=kind, text=body, created_at=when
                    )
                )
                if self.sqlite:
                    await conn.execute(
                        text("INSERT INTO episodes_fts (rowid, agent, session_id, text) VALUES (:r, :a, :s, :t)"),
                        {"r": result.inserted_primary_key[0], "a": agent, "s": session_id, "t": body},
                    )

    async def search_episodes(
        self, agent: str, query: str, limit: int = 10, exclude_session: str | None = None
    ) -> list[EpisodeHit]:
        """The agent's earlier sessions' events that match, best first (FTS5 BM25 / ts_rank)."""
        terms = _terms(query)
        if not terms:
            return []
        params: dict[str, Any] = {"a": agent, "n": limit, "x": exclude_session or ""}
        async with self.engine.begin() as conn:
            if self.sqlite:
                await self._episodes_fts(conn)
                words = " OR ".join(f'"{t}"' for t in terms)
                params["q"] = f'agent : "{agent}" AND text : ({words})'
                sql = (
                    'SELECT e.session_id, e."offset" AS off, e.kind, '
                    "snippet(episodes_fts, 2, '[', ']', '…', 16) AS excerpt FROM episodes_fts "
                    "JOIN episodes e ON e.seq = episodes_fts.rowid "
                    "WHERE episodes_fts MATCH :q AND e.agent = :a AND e.session_id != :x "
                    "ORDER BY bm25(episodes_fts) LIMIT :n"
                )
            else:
                params["q"] = " | ".join(terms)
                sql = (
                    "SELECT session_id, \"offset\" AS off, kind, ts_headline('simple', text, to_tsquery('simple', :q), "
                    "'StartSel=[, StopSel=], MaxWords=16, MinWords=4') AS excerpt FROM episodes "
                    "WHERE agent = :a AND session_id != :x AND to_tsvector('simple', text) @@ to_tsquery('simple', :q) "
                    "ORDER BY ts_rank(to_tsvector('simple', text), to_tsquery('simple', :q)) DESC, seq LIMIT :n"
                )
            rows = (await conn.execute(text(sql), params)).all()
        return [EpisodeHit(r.session_id, int(r.off), r.kind, " ".join(str(r.excerpt).split())) for r in rows]


async def _memory_row(conn: Any, store_id: str, memory_id: str) -> Any:
    """A memory's row, or MemoryNotFound."""
    row = (
        await conn.execute(select(memories).where(and_(memories.c.store_id == store_id, memories.c.id == memory_id)))
    ).first()
    if row is None:
        raise MemoryNotFound(f"memory store {store_id!r} has no memory {memory_id!r}")
    return row
