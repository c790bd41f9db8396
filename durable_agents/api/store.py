"""The API's database: what outlives a session — agents and their versions, environments, vaults
and credential metadata, deployments, session metadata, memory stores with their memories and
versions (`durable_agents.api.memory_db`), API keys.

SQLAlchemy 2 (async), the same code on SQLite (the embedded default: a file in the data
directory, no extra service) and PostgreSQL (`DA_DATABASE_URL=postgresql+psycopg://…`). One
table of records — a resource's kind, id, version and its JSON body — and one of API keys
(hashed). The schema is made at start, idempotently. Secrets are never stored here: a
credential's value goes to the vault (`durable_agents.vault`), its metadata here.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from durable_agents.errors import UserError


class DatabaseError(UserError):
    """The API's database cannot be opened or written (the message names it, never its password)."""


metadata = MetaData()

records = Table(
    "records",
    metadata,
    Column("kind", String(32), primary_key=True),  # agent, environment, session, vault, credential, deployment
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),  # agents: 1, 2, … (immutable); everything else: 0
    Column("parent", String(64), nullable=True, index=True),  # a credential's vault
    Column("body", Text, nullable=False),  # the resource as the API returns it (JSON)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True), nullable=True),
)

# Memory stores (the store itself is a record, kind memory_store): each memory's current content, and
# every change as an immutable version (only redaction empties one).
memories = Table(
    "memories",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("store_id", String(64), nullable=False, index=True),
    Column("path", String(1024), nullable=False),
    Column("content", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("version_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("store_id", "path", name="memories_store_path"),
)

memory_versions = Table(
    "memory_versions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # the order versions were written in
    Column("id", String(64), nullable=False, unique=True),
    Column("memory_id", String(64), nullable=False, index=True),
    Column("store_id", String(64), nullable=False, index=True),
    Column("operation", String(16), nullable=False),  # created, modified, deleted
    Column("path", String(1024), nullable=True),  # null once redacted
    Column("content", Text, nullable=True),  # null when deleted or redacted
    Column("sha256", String(64), nullable=True),
    Column("size", Integer, nullable=True),
    Column("created_by", Text, nullable=True),  # the actor (JSON)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("redacted_at", DateTime(timezone=True), nullable=True),
    Column("redacted_by", Text, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 of the key: the key is shown once
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An id like the hosted API's: a prefix and random base-32-ish characters."""
    return f"{prefix}_{secrets.token_hex(12)}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Record:
    kind: str
    id: str
    version: int
    body: dict[str, Any]
    created_at: datetime
    archived_at: datetime | None
    parent: str | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


def _record(row: Any) -> Record:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    archived = row.archived_at
    if archived is not None and archived.tzinfo is None:
        archived = archived.replace(tzinfo=UTC)
    return Record(row.kind, row.id, row.version, json.loads(row.body), created, archived, row.parent)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url)

    async def start(self) -> None:
        """Make the schema where it is missing (idempotent); a SQLite file's folder as well."""
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except (OSError, SQLAlchemyError) as e:
            where = url.render_as_string(hide_password=True)
            raise DatabaseError(f"cannot open the API database {where}: {e.__class__.__name__}: {e}") from None

    async def close(self) -> None:
        await self.engine.dispose()

    # --- records ------------------------------------------------------------------------------

    async def put(
        self, kind: str, id: str, body: dict[str, Any], version: int = 0, parent: str | None = None
    ) -> Record:
        """A new record (a new version, for agents)."""
        created = now()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(records).values(
                    kind=kind, id=id, version=version, parent=parent, body=json.dumps(body), created_at=created
                )
            )
        return Record(kind, id, version, body, created, None, parent)

    async def replace(self, kind: str, id: str, body: dict[str, Any], version: int = 0) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(records)
                .where(and_(records.c.kind == kind, records.c.id == id, records.c.version == version))
                .values(body=json.dumps(body))
            )

    async def archive(self, kind: str, id: str) -> datetime:
        when = now()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(records).where(and_(records.c.kind == kind, records.c.id == id)).values(archived_at=when)
            )
        return when

    async def remove(self, kind: str, id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(records).where(and_(records.c.kind == kind, records.c.id == id)))

    async def get(self, kind: str, id: str, version: int | None = None) -> Record | None:
        """A record; for versioned kinds the newest version unless `version` says which."""
        query = select(records).where(and_(records.c.kind == kind, records.c.id == id))
        if version is not None:
            query = query.where(records.c.version == version)
        query = query.order_by(records.c.version.desc()).limit(1)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def latest_version(self, kind: str, id: str) -> int | None:
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(
                    select(func.max(records.c.version)).where(and_(records.c.kind == kind, records.c.id == id))
                )
            ).scalar()
        return int(value) if value is not None else None

    async def all(
        self, kind: str, *, parent: str | None = None, include_archived: bool = True, newest_versions: bool = True
    ) -> list[Record]:
        """Every record of a kind, newest first (for versioned kinds: each id's newest version)."""
        query = select(records).where(records.c.kind == kind)
        if parent is not None:
            query = query.where(records.c.parent == parent)
        if not include_archived:
            query = query.where(records.c.archived_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(records.c.created_at.desc(), records.c.id.desc()))).all()
        found = [_record(r) for r in rows]
        if not newest_versions:
            return found
        newest: dict[str, Record] = {}
        for r in found:
            if r.id not in newest or r.version > newest[r.id].version:
                newest[r.id] = r
        first_seen = {r.id: min(x.created_at for x in found if x.id == r.id) for r in newest.values()}
        return sorted(newest.values(), key=lambda r: (first_seen[r.id], r.id), reverse=True)

    async def versions(self, kind: str, id: str) -> list[Record]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(records)
                    .where(and_(records.c.kind == kind, records.c.id == id))
                    .order_by(records.c.version.desc())
                )
            ).all()
        return [_record(r) for r in rows]

    # --- API keys -----------------------------------------------------------------------------

    async def create_key(self, name: str) -> tuple[ApiKey, str]:
        """A new key: its record, and the key itself (shown once, never stored)."""
        key = f"da-{secrets.token_urlsafe(32)}"
        record = ApiKey(new_id("key"), name, now(), None)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(id=record.id, name=name, hash=key_hash(key), created_at=record.created_at)
            )
        return record, key

    async def keys(self) -> Sequence[ApiKey]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
        return [ApiKey(r.id, r.name, r.created_at, r.revoked_at) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(and_(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)))
                .values(revoked_at=now())
            )
        return bool(result.rowcount)

    async def key_id_of(self, key: str) -> str | None:
        """The id of a valid (not revoked) key, or None."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.id).where(and_(api_keys.c.hash == key_hash(key), api_keys.c.revoked_at.is_(None)))
                )
            ).first()
        return str(row.id) if row is not None else None
