"""`da memory …`: memory stores on the API's database (DA_DATABASE_URL), the same ones `da serve`
serves as `memory_stores`; every change made here is a version like the API's, by a `user_actor`
(this machine's user). A store is named by its id or its name."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from durable_agents.errors import UserError
from durable_agents.settings import settings


class MemoryCliError(UserError):
    pass


def add_parser(sub: Any) -> None:
    m = sub.add_parser("memory", help="memory stores: stores, memories (versioned), versions, redaction")
    c = m.add_subparsers(dest="memory_command", required=True)
    s = c.add_parser("create-store", help="make a memory store; prints its id")
    s.add_argument("name")
    s.add_argument("--description", default="")
    c.add_parser("stores", help="memory stores with how many memories each holds")
    c.add_parser("delete-store", help="delete a store with its memories and versions").add_argument("store")
    s = c.add_parser("ls", help="the memories of a store (under a path prefix)")
    s.add_argument("store")
    s.add_argument("prefix", nargs="?", default="/")
    s = c.add_parser("cat", help="print a memory's content")
    s.add_argument("store")
    s.add_argument("path")
    s = c.add_parser("write", help="create or update a memory; the content is read from stdin")
    s.add_argument("store")
    s.add_argument("path")
    s.add_argument("--sha256", help="only if the memory's content has this sha256 now (else: a conflict)")
    s = c.add_parser("rm", help="delete a memory (its versions stay)")
    s.add_argument("store")
    s.add_argument("path")
    s.add_argument("--sha256", help="only if the memory's content has this sha256 now")
    s = c.add_parser("versions", help="a store's versions, newest first (of one path)")
    s.add_argument("store")
    s.add_argument("path", nargs="?")
    s = c.add_parser("redact", help="empty a version's content and path (not a memory's current one)")
    s.add_argument("store")
    s.add_argument("version")


async def cmd_memory(args: argparse.Namespace) -> int:
    from durable_agents.api.memory_db import MemoryDb, MemoryProblem
    from durable_agents.api.memory_stores import KIND
    from durable_agents.api.store import Store, new_id

    store = Store(settings().database_url)
    await store.start()
    db = MemoryDb(store)
    actor = {"type": "user_actor", "user_id": getpass.getuser()}
    try:
        command = args.memory_command
        if command == "create-store":
            body = {"name": args.name, "description": args.description, "metadata": {}}
            record = await store.put(KIND, new_id("memstore"), body)
            print(record.id)
            return 0
        if command == "stores":
            from durable_agents.cli import print_table

            rows = [
                (r.id, r.body["name"], str(await db.count(r.id)), "archived" if r.archived_at else "")
                for r in await store.all(KIND)
            ]
            print_table(("ID", "NAME", "MEMORIES", ""), rows, "no memory stores (da memory create-store NAME)")
            return 0
        record = await _store_named(store, args.store)
        if command == "delete-store":
            await db.drop_store(record.id)
            await store.remove(KIND, record.id)
            print(f"deleted {record.id}", file=sys.stderr)
        elif command == "ls":
            for memory in await db.list(record.id, args.prefix):
                print(f"{memory.path}\t{memory.size}\t{memory.sha256[:12]}\t{memory.updated_at:%Y-%m-%d %H:%M:%S}")
        elif command == "cat":
            sys.stdout.write((await _memory_at(db, record.id, args.path)).content)
        elif command == "write":
            if record.archived_at is not None:
                raise MemoryCliError(f"memory store {record.id} is archived")
            content = sys.stdin.read()
            existing = {m.path: m for m in await db.list(record.id)}.get(args.path)
            if existing is None:
                if args.sha256:
                    raise MemoryCliError(f"precondition failed: no memory at {args.path}")
                memory = await db.create(record.id, args.path, content, actor)
            else:
                memory = await db.update(record.id, existing.id, actor, content=content, expected_sha256=args.sha256)
            print(f"{memory.path}: {memory.size} bytes, sha256 {memory.sha256}, version {memory.version_id}")
        elif command == "rm":
            memory = await _memory_at(db, record.id, args.path)
            await db.delete(record.id, memory.id, actor, args.sha256)
            print(f"deleted {args.path}", file=sys.stderr)
        elif command == "versions":
            memory_id = None
            if args.path:
                found = [v for v in await db.versions(record.id) if v.path == args.path]
                memory_id = found[0].memory_id if found else None
                if memory_id is None:
                    raise MemoryCliError(f"no memory was ever at {args.path} in {record.id}")
            for v in await db.versions(record.id, memory_id=memory_id):
                by = (v.created_by or {}).get("session_id") or (v.created_by or {}).get("user_id") or ""
                state = "redacted" if v.redacted_at else f"{v.size if v.size is not None else '-'} bytes"
                print(f"{v.id}\t{v.operation}\t{v.path or '-'}\t{state}\t{by}\t{v.created_at:%Y-%m-%d %H:%M:%S}")
        elif command == "redact":
            version = await db.redact(record.id, args.version, actor)
            print(f"redacted {version.id}", file=sys.stderr)
        return 0
    except MemoryProblem as e:
        raise MemoryCliError(str(e)) from None
    finally:
        await store.close()


async def mounts(specs: list[str]) -> list[Any]:
    """`da start --memory STORE[:read_only|:read_write]`: the memory mounts of a new session."""
    if not specs:
        return []
    from durable_agents.api.memory_stores import mount_name
    from durable_agents.api.store import Store
    from durable_agents.contracts import MemoryMount

    store = Store(settings().database_url)
    await store.start()
    try:
        found: list[MemoryMount] = []
        for spec in specs:
            name, _, access = spec.rpartition(":") if spec.endswith((":read_only", ":read_write")) else (spec, "", "")
            record = await _store_named(store, name)
            if record.archived_at is not None:
                raise MemoryCliError(f"--memory {spec}: memory store {record.id} is archived")
            mount = MemoryMount(
                store_id=record.id,
                name=mount_name(record.body["name"]),
                access=access or "read_write",  # type: ignore[arg-type]
                description=record.body.get("description") or "",
            )
            if any(m.name == mount.name for m in found):
                raise MemoryCliError(f"--memory {spec}: another store is mounted at {mount.path} already")
            found.append(mount)
        return found
    finally:
        await store.close()


async def _store_named(store: Any, name: str) -> Any:
    from durable_agents.api.memory_stores import KIND

    record = await store.get(KIND, name)
    if record is not None:
        return record
    named = [r for r in await store.all(KIND) if r.body["name"] == name]
    if len(named) == 1:
        return named[0]
    if named:
        raise MemoryCliError(
            f"{len(named)} memory stores are named {name!r}: give its id ({', '.join(r.id for r in named)})"
        )
    raise MemoryCliError(f"no memory store {name!r} (da memory stores lists them)")


async def _memory_at(db: Any, store_id: str, path: str) -> Any:
    for memory in await db.list(store_id):
        if memory.path == path:
            return memory
    raise MemoryCliError(f"no memory at {path} in {store_id}")
