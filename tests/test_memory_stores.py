"""Memory stores through the official SDK against a real `da serve` (its own data directory): stores,
memories with every change an immutable version, the sha256 precondition, listing by prefix and
depth, redaction, archiving, the limits; and `da memory` on the same database."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.helpers import DA, ROOT, serve

KEY = "memory-test-key"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memory-stores")


@pytest.fixture(scope="module")
def api_url(address: str, data_dir: Path) -> Iterator[str]:
    with serve(address, env={"DA_API_KEY": KEY, "DA_DATA_DIR": str(data_dir)}) as url:
        yield url


@pytest.fixture
def sdk(api_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=api_url, api_key=KEY, max_retries=0)


async def test_memories_are_versioned_with_preconditions_and_redaction(sdk: anthropic.AsyncAnthropic) -> None:
    stores = sdk.beta.memory_stores
    store = await stores.create(name="Team Notes", description="What the team learned.", metadata={"team": "a"})
    assert store.id.startswith("memstore_") and store.type == "memory_store" and store.description
    mems = stores.memories
    first = await mems.create(store.id, path="/projects/alpha/notes.md", content="v1\n")
    assert first.content is None and first.content_sha256 == sha("v1\n") and first.content_size_bytes == 3  # basic
    await mems.create(store.id, path="/projects/beta.md", content="beta")
    await mems.create(store.id, path="/top.md", content="")
    read = await mems.retrieve(first.id, memory_store_id=store.id)
    assert read.content == "v1\n" and read.memory_version_id == first.memory_version_id  # full by default

    # Update with the sha it read: a new version on top. With a stale sha: 409, nothing written.
    second = await mems.update(
        first.id,
        memory_store_id=store.id,
        content="v2\n",
        precondition={"type": "content_sha256", "content_sha256": sha("v1\n")},
    )
    assert second.content_sha256 == sha("v2\n") and second.memory_version_id != first.memory_version_id
    with pytest.raises(anthropic.ConflictError, match="precondition failed"):
        await mems.update(
            first.id,
            memory_store_id=store.id,
            content="lost?",
            precondition={"type": "content_sha256", "content_sha256": sha("v1\n")},
        )
    renamed = await mems.update(first.id, memory_store_id=store.id, path="/projects/alpha/renamed.md")
    assert renamed.id == first.id and renamed.path == "/projects/alpha/renamed.md"
    with pytest.raises(anthropic.ConflictError, match="already exists at /top.md"):
        await mems.create(store.id, path="/top.md", content="again")

    # Listing: everything by path, or one level with deeper memories rolled up into prefixes.
    everything = [m async for m in mems.list(store.id)]
    assert [m.path for m in everything] == ["/projects/alpha/renamed.md", "/projects/beta.md", "/top.md"]
    level = [(m.type, m.path) async for m in mems.list(store.id, depth=1)]
    assert level == [("memory_prefix", "/projects/"), ("memory", "/top.md")]
    under = [(m.type, m.path) async for m in mems.list(store.id, path_prefix="/projects/", depth=1)]
    assert under == [("memory_prefix", "/projects/alpha/"), ("memory", "/projects/beta.md")]
    full = [m async for m in mems.list(store.id, path_prefix="/projects/alpha/", view="full")]
    assert [m.content for m in full] == ["v2\n"]

    # Versions: newest first; one per change (the stale update wrote none).
    versions = [v async for v in stores.memory_versions.list(store.id, memory_id=first.id)]
    assert [v.operation for v in versions] == ["modified", "modified", "created"]
    assert [v.path for v in versions] == [
        "/projects/alpha/renamed.md",
        "/projects/alpha/notes.md",
        "/projects/alpha/notes.md",
    ]
    assert versions[-1].created_by is not None and versions[-1].created_by.type == "api_actor"
    old = await stores.memory_versions.retrieve(versions[-1].id, memory_store_id=store.id)
    assert old.content == "v1\n"
    redacted = await stores.memory_versions.redact(versions[-1].id, memory_store_id=store.id)
    assert redacted.redacted_at is not None and redacted.content is None and redacted.path is None
    assert redacted.content_sha256 is None and redacted.redacted_by is not None
    with pytest.raises(anthropic.ConflictError, match="current content"):
        await stores.memory_versions.redact(versions[0].id, memory_store_id=store.id)

    # Delete, with a precondition: a wrong sha is refused; the versions stay, ending in `deleted`.
    with pytest.raises(anthropic.ConflictError):
        await mems.delete(first.id, memory_store_id=store.id, expected_content_sha256=sha("nope"))
    deleted = await mems.delete(first.id, memory_store_id=store.id, expected_content_sha256=sha("v2\n"))
    assert deleted.type == "memory_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await mems.retrieve(first.id, memory_store_id=store.id)
    versions = [v async for v in stores.memory_versions.list(store.id, memory_id=first.id)]
    assert [v.operation for v in versions] == ["deleted", "modified", "modified", "created"]
    deletions = [v async for v in stores.memory_versions.list(store.id, operation="deleted")]
    assert [v.memory_id for v in deletions] == [first.id]


async def test_limits_archiving_and_deleting_a_store(sdk: anthropic.AsyncAnthropic) -> None:
    stores = sdk.beta.memory_stores
    store = await stores.create(name="limits")
    mems = stores.memories
    big = "x" * 102_401
    for path, content, message in [
        ("/a.md", big, "over the limit of 102,400"),
        ("no-slash.md", "x", "must start with /"),
        ("/a/../b.md", "x", "'..' segment"),
        ("/a//b.md", "x", "empty"),
        ("/" + "/".join(["d"] * 21), "x", "1 to 20 segments"),
    ]:
        with pytest.raises(anthropic.BadRequestError, match=message):
            await mems.create(store.id, path=path, content=content)
    fits = await mems.create(store.id, path="/fits.md", content="y" * 102_400)
    assert fits.content_size_bytes == 102_400
    updated = await stores.update(store.id, name="limits 2", metadata={"k": "v"})
    assert updated.name == "limits 2" and updated.metadata == {"k": "v"}
    archived = await stores.archive(store.id)
    assert archived.archived_at is not None
    assert store.id not in [s.id async for s in stores.list()]
    assert store.id in [s.id async for s in stores.list(include_archived=True)]
    with pytest.raises(anthropic.BadRequestError, match="archived"):
        await mems.create(store.id, path="/more.md", content="z")
    assert (await mems.retrieve(fits.id, memory_store_id=store.id)).content_size_bytes == 102_400  # still readable
    gone = await stores.delete(store.id)
    assert gone.type == "memory_store_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await stores.retrieve(store.id)
    with pytest.raises(anthropic.NotFoundError):
        await mems.retrieve(fits.id, memory_store_id=store.id)


def da(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DA_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(DA), "memory", *args], cwd=ROOT, env=env, capture_output=True, text=True, input=stdin, timeout=60
    )


def test_da_memory_on_the_same_database(data_dir: Path, api_url: str) -> None:
    made = da(data_dir, "create-store", "cli notes")
    assert made.returncode == 0 and made.stdout.startswith("memstore_"), made.stderr
    store_id = made.stdout.strip()
    wrote = da(data_dir, "write", "cli notes", "/a/one.md", stdin="first\n")
    first = sha("first\n")
    assert wrote.returncode == 0 and f"sha256 {first}" in wrote.stdout, wrote.stderr
    stale = da(data_dir, "write", store_id, "/a/one.md", "--sha256", sha("other"), stdin="second\n")
    assert stale.returncode == 2 and "precondition failed" in stale.stderr, stale.stderr
    assert da(data_dir, "write", store_id, "/a/one.md", "--sha256", sha("first\n"), stdin="second\n").returncode == 0
    assert da(data_dir, "cat", store_id, "/a/one.md").stdout == "second\n"
    listed = da(data_dir, "ls", store_id).stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [["/a/one.md", "7"]]
    versions = [line.split("\t") for line in da(data_dir, "versions", store_id, "/a/one.md").stdout.splitlines()]
    assert [v[1] for v in versions] == ["modified", "created"]
    assert da(data_dir, "redact", store_id, versions[1][0]).returncode == 0
    refused = da(data_dir, "redact", store_id, versions[0][0])
    assert refused.returncode == 2 and "current content" in refused.stderr
    assert "redacted" in da(data_dir, "versions", store_id).stdout
    assert da(data_dir, "rm", store_id, "/a/one.md").returncode == 0
    assert da(data_dir, "ls", store_id).stdout == ""
    stores = da(data_dir, "stores").stdout
    assert store_id in stores and "cli notes" in stores
    assert da(data_dir, "delete-store", store_id).returncode == 0
    missing = da(data_dir, "cat", store_id, "/a/one.md")
    assert missing.returncode == 2 and "no memory store" in missing.stderr
