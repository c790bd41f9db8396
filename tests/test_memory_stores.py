"""Memory stores through the official SDK against a real `da serve` (its own data directory): stores,
memories with every change an immutable version, the sha256 precondition, listing by prefix and
depth, redaction, archiving, the limits; and `da memory` on the same database."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import docker
import pytest
from temporalio.client import Client

from durable_agents.api.memory_db import MemoryConflict, MemoryDb
from durable_agents.api.store import Store
from durable_agents.client import send_message, session_events, start_agent_session, wait_until_settled
from durable_agents.contracts import GET_MODEL_CONTEXT, MemoryConfig, MemoryMount, ModelContext, Subagent
from durable_agents.sandboxes.reaper import Reaper
from durable_agents.settings import settings
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import DA, ROOT, SetEnv, Workers, add_scenario, cli, coder, released, serve, spawn, with_subagents
from tests.helpers.postgres import postgres_server

KEY = "memory-test-key"
TOOLSET = [{"type": "agent_toolset_20260401"}]


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
async def sdk(api_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=api_url, api_key=KEY, max_retries=0)
    yield client
    await client.close()  # its connections (unclosed, the collector finds them outside any loop)


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


async def stream_until_idle(sdk: anthropic.AsyncAnthropic, session_id: str, text: str) -> list[Any]:
    got = []
    async with await sdk.beta.sessions.events.stream(session_id) as stream:
        await sdk.beta.sessions.events.send(
            session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
        )
        async for event in stream:
            got.append(event)
            if event.type == "session.status_idle" and event.stop_reason.type == "end_turn":
                break
    return got


def outputs(events: list[Any]) -> list[str]:
    return ["".join(getattr(c, "text", "") for c in (e.content or [])) for e in events if e.type == "agent.tool_result"]


@pytest.mark.usefixtures("workers")
async def test_a_session_reads_and_writes_its_mounted_store_and_read_only_is_enforced(
    sdk: anthropic.AsyncAnthropic, client: Client, scripted: ScriptedModelServer, data_dir: Path, setenv: SetEnv
) -> None:
    # The in-process sandbox worker uses the API's database, as a deployment's workers do.
    setenv("DA_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'api.db'}")
    stores = sdk.beta.memory_stores
    store = await stores.create(name="Team Notes", description="Conventions of the team.")
    conventions = await stores.memories.create(store.id, path="/conventions.md", content="use uv\n")
    agent = await sdk.beta.agents.create(name="noter", model="claude-sonnet-5-5", tools=TOOLSET)
    env = await sdk.beta.environments.create(name="notes")
    mnt = "/mnt/memory/team-notes"
    writes = add_scenario(
        scripted,
        [
            Step(
                tool_use=ToolUse(
                    name="bash",
                    input={
                        "command": f"cat {mnt}/conventions.md && mkdir -p {mnt}/lint && "
                        f"echo 'ruff before commit' > {mnt}/lint/rules.md && echo 'run tests' >> {mnt}/conventions.md"
                    },
                )
            ),
            Step(
                tool_use=ToolUse(
                    name="bash", input={"command": f"head -c 200000 /dev/zero | tr '\\0' a > {mnt}/big.md"}
                )
            ),
            Step(text="noted"),
        ],
    )
    session = await sdk.beta.sessions.create(
        agent=agent.id,
        environment_id=env.id,
        resources=[{"type": "memory_store", "memory_store_id": store.id, "instructions": "Keep notes short."}],
    )
    assert [(r.type, r.mount_path, r.access) for r in session.resources] == [("memory_store", mnt, "read_write")]
    listed_resources = [r async for r in sdk.beta.sessions.resources.list(session.id)]
    assert [(r.type, r.memory_store_id) for r in listed_resources] == [("memory_store", store.id)]  # type: ignore[union-attr]
    got = await stream_until_idle(sdk, session.id, f"take notes {writes}")
    out = outputs(got)
    assert out[0].startswith("use uv\n"), out
    assert "big.md is 200,000 bytes, over a memory's 102,400: not saved" in out[1], out[1]
    # The system prompt names the mount, its access, the store's description and the instructions.
    context = await client.get_workflow_handle(session.id).query(GET_MODEL_CONTEXT, result_type=ModelContext)
    assert f"- {mnt} (read-write): Conventions of the team." in context.system
    assert "Instructions: Keep notes short." in context.system
    # What the session wrote is in the store, as versions by the session and the tool call.
    listed = {m.path: m async for m in stores.memories.list(store.id, view="full")}
    assert listed["/conventions.md"].content == "use uv\nrun tests\n"
    assert listed["/lint/rules.md"].content == "ruff before commit\n"
    assert "/big.md" not in listed
    by_session = [v async for v in stores.memory_versions.list(store.id, session_id=session.id)]
    assert sorted((v.operation, v.path) for v in by_session) == [
        ("created", "/lint/rules.md"),
        ("modified", "/conventions.md"),
    ]
    tool_use_ids = [e.id for e in got if e.type == "agent.tool_use"]
    assert all(v.created_by.model_dump().get("tool_use_id") == tool_use_ids[0] for v in by_session)  # type: ignore[union-attr]
    assert (await stores.memories.retrieve(conventions.id, memory_store_id=store.id)).memory_version_id == (
        next(v.id for v in by_session if v.path == "/conventions.md")
    )
    await sdk.beta.sessions.delete(session.id)

    # A later session reads what the first wrote; read_only is the file system's refusal.
    reads = add_scenario(
        scripted,
        [
            Step(
                tool_use=ToolUse(
                    name="bash",
                    input={"command": f"cat {mnt}/lint/rules.md; echo x > {mnt}/new.md; rm {mnt}/conventions.md"},
                )
            ),
            Step(text="read"),
        ],
    )
    reader = await sdk.beta.sessions.create(
        agent=agent.id,
        environment_id=env.id,
        resources=[{"type": "memory_store", "memory_store_id": store.id, "access": "read_only"}],
    )
    out = outputs(await stream_until_idle(sdk, reader.id, f"read notes {reads}"))
    assert out[0].startswith("ruff before commit\n"), out
    assert out[0].count("Read-only file system") == 2, out[0]
    assert sorted([m.path async for m in stores.memories.list(store.id)]) == ["/conventions.md", "/lint/rules.md"]
    await sdk.beta.sessions.delete(reader.id)
    with pytest.raises(anthropic.BadRequestError, match="no memory store"):
        await sdk.beta.sessions.create(
            agent=agent.id, environment_id=env.id, resources=[{"type": "memory_store", "memory_store_id": "memstore_x"}]
        )


@pytest.mark.usefixtures("workers")
async def test_a_sandbox_killed_right_after_a_write_loses_nothing(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path, setenv: SetEnv
) -> None:
    """Through the Python API: the write is saved after its tool call; the container is then killed;
    the replacement sandbox's mount is filled from the database, with the write in it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    setenv("DA_DATABASE_URL", url)
    store = Store(url)
    await store.start()
    try:
        db = MemoryDb(store)
        await store.put("memory_store", "memstore_kill", {"name": "kept", "description": "", "metadata": {}})
        mount = MemoryMount(store_id="memstore_kill", name="kept")
        marker = add_scenario(
            scripted,
            [
                Step(
                    tool_use=ToolUse(name="bash", input={"command": "echo 'do not lose me' > /mnt/memory/kept/note.md"})
                ),
                Step(text="Written."),
                Step(tool_use=ToolUse(name="bash", input={"command": "cat /mnt/memory/kept/note.md"})),
                Step(tool_use=ToolUse(name="bash", input={"command": "cat /mnt/memory/kept/note.md"})),
                Step(text="{last_tool_result}"),
            ],
        )
        handle = await start_agent_session(client, coder(), f"Remember. {marker}", memory=[mount])
        await wait_until_settled(client, handle.id)
        [saved] = await db.list("memstore_kill")
        assert (saved.path, saved.content) == ("/note.md", "do not lose me\n")
        events = await session_events(client, handle.id)
        first = next(e.sandbox for e in events if e.kind == "sandbox_provisioned")
        assert first is not None
        docker.from_env().containers.get(first.sandbox_id).kill()
        offset = await send_message(client, handle.id, "What did you note?")
        state = await wait_until_settled(client, handle.id, after_event=offset)
        assert state.last_answer == "do not lose me"  # read in the replacement sandbox, from the database
        await handle.signal("end_session")
        await handle.result()
        await released(await session_events(client, handle.id), handle.id)  # by its host, once it has closed
        assert not (settings().data_dir / "memory-mounts" / handle.id).exists(), "the mount's directory goes with it"
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_two_writers_lose_nothing_on_either_database(backend: str, tmp_path: Path) -> None:
    """The database layer alone, on SQLite and on PostgreSQL: two writers of one memory each add a
    version on top (last write is current, the first stays in its version); a writer holding a
    stale sha256 gets a conflict; prefixes with LIKE's wildcards match literally."""
    with contextlib.ExitStack() as stack:
        url = (
            f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
            if backend == "sqlite"
            else stack.enter_context(postgres_server())
        )
        store = Store(url)
        await store.start()
        try:
            db = MemoryDb(store)
            one, two = {"type": "session_actor", "session_id": "s1"}, {"type": "session_actor", "session_id": "s2"}
            await db.write("ms", "/shared.md", "from one\n", one)
            read_by_two = (await db.list("ms"))[0]
            await db.write("ms", "/shared.md", "one again\n", one)
            await db.write("ms", "/shared.md", "from two\n", two)
            [current] = await db.list("ms")
            assert current.content == "from two\n"
            history = await db.versions("ms", memory_id=current.id)
            assert [(v.content, v.created_by["session_id"]) for v in history] == [  # type: ignore[index]
                ("from two\n", "s2"),
                ("one again\n", "s1"),
                ("from one\n", "s1"),
            ]
            assert await db.write("ms", "/shared.md", "from two\n", two) is None, "no change, no version"
            with pytest.raises(MemoryConflict, match="precondition failed"):
                await db.update("ms", current.id, two, content="stale", expected_sha256=read_by_two.sha256)
            await db.create("ms", "/100%_done/a.md", "x", one)
            await db.create("ms", "/100xydone/b.md", "y", one)
            assert [m.path for m in await db.list("ms", "/100%_done/")] == ["/100%_done/a.md"]
            # Full-text search (FTS5 BM25 / PostgreSQL ts_rank): best first, excerpts, deleted ones gone.
            await db.create("ms", "/lint.md", "Run ruff check before every commit; ruff format too.", one)
            await db.create("ms", "/tests.md", "Run the tests before a commit.", one)
            await db.create("other", "/lint.md", "ruff elsewhere", one)
            hits = await db.search(["ms"], "ruff commit", 5)
            assert [h.path for h in hits] == ["/lint.md", "/tests.md"], hits
            assert "[ruff]" in hits[0].excerpt and hits[0].store_id == "ms"
            assert await db.search(["ms"], "nothing-like-this", 5) == []
            assert await db.search(["ms"], '"; DROP TABLE memories; --', 5) == []  # words, not syntax
            lint = next(m for m in await db.list("ms") if m.path == "/lint.md")
            await db.update("ms", lint.id, one, content="no linters here")
            assert [h.path for h in await db.search(["ms"], "ruff", 5)] == []
            await db.delete("ms", (await db.list("ms", "/100xydone/"))[0].id, one)
            assert await db.search(["ms"], "y", 5) == []
            assert [h.store_id for h in await db.search(["ms", "other"], "ruff", 5)] == ["other"]
            # Episodic memory: an agent's sessions' events, best first, scoped to the agent.
            await db.add_episodes("coder", "s1", [(1, "user_message", "deploy on Tuesdays"), (2, "answer", "ok")])
            await db.add_episodes("coder", "s2", [(1, "user_message", "deploy deploy now")])
            await db.add_episodes("other", "s3", [(1, "user_message", "deploy elsewhere")])
            found = await db.search_episodes("coder", "deploy tuesdays", 5)
            assert [(e.session_id, e.offset, e.kind) for e in found][0] == ("s1", 1, "user_message"), found
            assert {e.session_id for e in found} == {"s1", "s2"}
            assert [e.session_id for e in await db.search_episodes("coder", "deploy", 5, exclude_session="s1")] == [
                "s2"
            ]
        finally:
            await store.close()


@pytest.mark.usefixtures("workers")
async def test_da_start_attaches_a_store(
    address: str, scripted: ScriptedModelServer, tmp_path: Path, setenv: SetEnv
) -> None:
    """`da start --memory`: the session reads what `da memory write` put there, and what it writes is
    there for the next (read with `da memory cat`)."""
    setenv("DA_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    assert da(tmp_path, "create-store", "CLI Mem").returncode == 0
    assert da(tmp_path, "write", "CLI Mem", "/hello.md", stdin="hello from da\n").returncode == 0
    mnt = "/mnt/memory/cli-mem"
    marker = add_scenario(
        scripted,
        [
            Step(
                tool_use=ToolUse(name="bash", input={"command": f"cat {mnt}/hello.md; echo learned > {mnt}/learned.md"})
            ),
            Step(text="{last_tool_result}"),
        ],
    )
    code, out, err = await cli(
        address, "start", "--agent", "agents/coder.yaml", "--memory", "CLI Mem", "--one-shot", "--wait", f"go {marker}"
    )
    assert code == 0 and "hello from da" in out, (out, err)
    assert da(tmp_path, "cat", "CLI Mem", "/learned.md").stdout == "learned\n"
    code, out, err = await cli(address, "start", "--agent", "agents/coder.yaml", "--memory", "nope", "x")
    assert code == 2 and "no memory store 'nope'" in err, err
    # An agent file names its stores (read_only here, with instructions); `da start` mounts them.
    agent_file = tmp_path / "reader.yaml"
    agent_file.write_text(
        "name: reader\nmodel: {name: claude-sonnet-5-5}\ntools: [bash]\n"
        "memory:\n  - {store: CLI Mem, access: read_only, instructions: Look but do not touch.}\n"
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": f"cat {mnt}/learned.md; echo x > {mnt}/more.md"})),
            Step(text="{last_tool_result}"),
        ],
    )
    code, out, err = await cli(address, "start", "--agent", str(agent_file), "--one-shot", "--wait", f"read {marker}")
    assert code == 0 and "learned" in out and "Read-only file system" in out, (out, err)
    assert [line.split("\t")[0] for line in da(tmp_path, "ls", "CLI Mem").stdout.splitlines()] == [
        "/hello.md",
        "/learned.md",
    ]


@pytest.mark.usefixtures("workers")
async def test_memory_search_in_a_session(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path, setenv: SetEnv
) -> None:
    """A session with stores attached has memory_search (ranked, with excerpts), over all its stores
    or one; a session without stores does not have the tool."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    setenv("DA_DATABASE_URL", url)
    store = Store(url)
    await store.start()
    try:
        db = MemoryDb(store)
        actor = {"type": "api_actor", "api_key_id": "t"}
        for store_id in ("memstore_a", "memstore_b"):
            await store.put("memory_store", store_id, {"name": store_id, "description": "", "metadata": {}})
        await db.create("memstore_a", "/deploy.md", "Deploy with make release; never deploy on Fridays.", actor)
        await db.create("memstore_a", "/style.md", "Short functions.", actor)
        await db.create("memstore_b", "/friday.md", "Fridays: pizza.", actor)
        mounts = [MemoryMount(store_id="memstore_a", name="team"), MemoryMount(store_id="memstore_b", name="office")]
        marker = add_scenario(
            scripted,
            [
                Step(
                    tool_uses=[
                        ToolUse(name="memory_search", input={"query": "deploy fridays"}),
                        ToolUse(name="memory_search", input={"query": "fridays", "store": "office"}),
                        ToolUse(name="memory_search", input={"query": "x", "store": "nope"}),
                        ToolUse(name="memory_search", input={"query": "kubernetes"}),
                    ]
                ),
                Step(text="searched"),
            ],
        )
        handle = await start_agent_session(client, coder(), f"Recall. {marker}", one_shot=True, memory=mounts)
        await handle.result()
        events = await session_events(client, handle.id)
        by_call = {e.tool_result.call_id: e.tool_result for e in events if e.kind == "tool_result" and e.tool_result}
        made = [c.id for e in events if e.kind == "model_turn" for c in (e.tool_calls or [])]
        results = [by_call[i] for i in made]
        lines = results[0].output.splitlines()
        assert lines[0] == "/mnt/memory/team/deploy.md" and "[Deploy]" in lines[1], results[0].output
        assert "/mnt/memory/office/friday.md" in results[0].output and "style.md" not in results[0].output
        assert results[1].output.splitlines()[0] == "/mnt/memory/office/friday.md", results[1].output
        assert results[2].is_error and "no memory store 'nope' is mounted (mounted: team, office)" in results[2].output
        assert not results[3].is_error and "No memory matches 'kubernetes'" in results[3].output
        context = await handle.query(GET_MODEL_CONTEXT, result_type=ModelContext)
        assert "memory_search" in [t["name"] for t in context.tools]
    finally:
        await store.close()
    plain = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="memory_search", input={"query": "x"})), Step(text="ok")]
    )
    handle = await start_agent_session(client, coder(), f"No stores. {plain}", one_shot=True)
    await handle.result()
    [result] = [e.tool_result for e in await session_events(client, handle.id) if e.kind == "tool_result"]
    assert result is not None and result.is_error and "Unknown tool 'memory_search'" in result.output


@pytest.mark.usefixtures("workers")
async def test_a_subagent_sharing_the_sandbox_writes_memory_as_itself(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path, setenv: SetEnv
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    setenv("DA_DATABASE_URL", url)
    store = Store(url)
    await store.start()
    try:
        db = MemoryDb(store)
        await store.put("memory_store", "memstore_shared", {"name": "shared", "description": "", "metadata": {}})
        child = add_scenario(
            scripted,
            [
                Step(tool_use=ToolUse(name="bash", input={"command": "echo from-child > /mnt/memory/shared/child.md"})),
                Step(text="written"),
            ],
        )
        marker = add_scenario(
            scripted,
            [
                Step(
                    tool_use=ToolUse(name="bash", input={"command": "echo from-parent > /mnt/memory/shared/parent.md"})
                ),
                Step(tool_use=spawn("helper", f"Write. {child}", share=True)),
                Step(text="done"),
            ],
        )
        agent = with_subagents(coder(), Subagent(name="helper", spec=coder()))
        mount = MemoryMount(store_id="memstore_shared", name="shared")
        handle = await start_agent_session(client, agent, f"Share memory. {marker}", one_shot=True, memory=[mount])
        await handle.result()
        versions = await db.versions("memstore_shared")
        by = {v.path: v.created_by["session_id"] for v in versions}  # type: ignore[index]
        assert by == {"/parent.md": handle.id, "/child.md": f"{handle.id}/sub-1"}, by
    finally:
        await store.close()


@pytest.mark.usefixtures("workers")
async def test_a_deployment_attaches_its_stores_to_every_run(
    sdk: anthropic.AsyncAnthropic, client: Client, scripted: ScriptedModelServer, data_dir: Path, setenv: SetEnv
) -> None:
    setenv("DA_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir / 'api.db'}")
    store = await sdk.beta.memory_stores.create(name="Run Log")
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "date +ran > /mnt/memory/run-log/last.md; echo ok"})),
            Step(text="logged"),
        ],
    )
    agent = await sdk.beta.agents.create(name="runner", model="claude-sonnet-5-5", tools=TOOLSET)
    env = await sdk.beta.environments.create(name="runs")
    deployment = await sdk.beta.deployments.create(
        name="nightly",
        agent=agent.id,
        environment_id=env.id,
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": f"Log. {marker}"}]}],
        schedule={"type": "cron", "expression": "0 3 * * *", "timezone": "UTC"},
        resources=[{"type": "memory_store", "memory_store_id": store.id, "access": "read_write"}],
    )
    assert [(r.type, r.mount_path) for r in deployment.resources] == [("memory_store", "/mnt/memory/run-log")]
    run = await sdk.beta.deployments.run(deployment.id)
    await asyncio.wait_for(client.get_workflow_handle(run.session_id).result(), 60)
    [memory] = [m async for m in sdk.beta.memory_stores.memories.list(store.id, view="full")]
    assert (memory.path, memory.content) == ("/last.md", "ran\n")
    with pytest.raises(anthropic.BadRequestError, match="resources.0.type"):
        await sdk.beta.deployments.create(
            name="bad",
            agent=agent.id,
            environment_id=env.id,
            initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "x"}]}],
            resources=[{"type": "file", "file_id": "file_x"}],
        )
    await sdk.beta.deployments.archive(deployment.id)


@pytest.mark.usefixtures("workers")
async def test_a_worker_on_another_database_refuses_rather_than_losing_writes(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path, setenv: SetEnv
) -> None:
    setenv("DA_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'elsewhere.db'}")
    marker = add_scenario(
        scripted, [Step(tool_use=ToolUse(name="bash", input={"command": "ls /mnt/memory"})), Step(text="x")]
    )
    mount = MemoryMount(store_id="memstore_not_here", name="gone")
    handle = await start_agent_session(client, coder(), f"Look. {marker}", one_shot=True, memory=[mount])
    await handle.result()
    [result] = [e.tool_result for e in await session_events(client, handle.id) if e.kind == "tool_result"]
    assert result is not None and result.is_error, result
    assert "memory store memstore_not_here is not in the API database this sandbox worker uses" in result.output
    assert "DA_DATABASE_URL" in result.output


@pytest.mark.usefixtures("workers")
async def test_episodic_memory_finds_an_earlier_session(
    client: Client, scripted: ScriptedModelServer, tmp_path: Path, setenv: SetEnv
) -> None:
    """memory: {sessions: true}: a session's log is indexed when it goes idle; the agent's next
    session finds it with memory_search (session and offset named); other agents do not."""
    setenv("DA_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'api.db'}")
    agent = coder().model_copy(update={"memory": MemoryConfig(sessions=True)})
    told = add_scenario(scripted, [Step(text="Noted: Tuesdays.")])
    first = await start_agent_session(client, agent, f"The staging password rotates on Tuesdays. {told}")
    await wait_until_settled(client, first.id)
    await first.signal("end_session")
    await first.result()
    search = [ToolUse(name="memory_search", input={"query": "staging password"})]
    asks = add_scenario(scripted, [Step(tool_uses=search), Step(text="{last_tool_result}")])
    second = await start_agent_session(client, agent, f"When does it rotate? {asks}", one_shot=True)
    found = (await second.result()).answer or ""
    assert f"session {first.id} event 1 (user_message)" in found, found
    assert "[staging] [password] rotates on Tuesdays" in found, found
    assert "da events SESSION --from OFFSET" in found
    other = agent.model_copy(update={"name": "other-agent"})
    asks = add_scenario(scripted, [Step(tool_uses=search), Step(text="{last_tool_result}")])
    third = await start_agent_session(client, other, f"And you? {asks}", one_shot=True)
    assert "No memory matches 'staging password' in earlier sessions" in ((await third.result()).answer or "")


async def test_the_reaper_saves_and_removes_a_gone_sessions_mounts(
    client: Client, scripted: ScriptedModelServer, workers: Workers, tmp_path: Path, setenv: SetEnv
) -> None:
    """A session terminated (no destroy_sandbox): the reaper removes its container, saves what is
    left under its mounts and removes their directories."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    setenv("DA_DATABASE_URL", url)
    store = Store(url)
    await store.start()
    try:
        db = MemoryDb(store)
        await store.put("memory_store", "memstore_reap", {"name": "reap", "description": "", "metadata": {}})
        mount = MemoryMount(store_id="memstore_reap", name="reap")
        marker = add_scenario(
            scripted,
            [Step(tool_use=ToolUse(name="bash", input={"command": "echo a > /mnt/memory/reap/a.md"})), Step(text="ok")],
        )
        handle = await start_agent_session(client, coder(), f"Write. {marker}", memory=[mount])
        await wait_until_settled(client, handle.id)
        where = settings().data_dir / "memory-mounts" / handle.id / "reap"
        (where / "late.md").write_text("written after the last tool call\n")  # e.g. by a background process
        await handle.terminate("test")
        removed = await Reaper(client, workers.sandboxes.sandboxes, grace_s=0, memory=workers.sandboxes.memory).sweep()
        assert removed, "the terminated session's container is an orphan"
        assert sorted((m.path, m.content) for m in await db.list("memstore_reap")) == [
            ("/a.md", "a\n"),
            ("/late.md", "written after the last tool call\n"),
        ]
        assert not where.parent.exists()
    finally:
        await store.close()
