"""The built-in toolset beyond bash and the file tools, in real sessions (dev server, Docker sandboxes,
the scripted model): glob, grep in each mode, web_fetch through the egress policy (allowed, refused,
redirected away) and web_search with a test backend and without one; and the names agent files take."""

from __future__ import annotations

import http.server
import ipaddress
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import docker
import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from durable_agents.agent_files import AgentFileError, load_agent
from durable_agents.client import session_events, start_agent_session
from durable_agents.contracts import (
    AgentSpec,
    EgressRule,
    ExecuteRequest,
    ExecuteResult,
    ProvisionRequest,
    SandboxSpec,
    ToolResult,
)
from durable_agents.sandboxes.activities import SandboxActivities
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from durable_agents.web_search import WebSearchError, render_hits, run_search, search_backend
from tests.helpers import SetEnv, add_scenario, coder, serve
from tests.helpers import search as test_search

FILES = (
    "mkdir -p src/lib docs .hidden && "
    "printf 'def main():\\n    print(\"Hello\")\\n\\n\\ndef helper():\\n    return 42\\n' > src/app.py && "
    "printf 'import os\\nGREETING = \"hello world\"\\n' > src/lib/util.py && "
    "printf '# Docs\\nSay hello.\\n' > docs/guide.md && "
    "printf 'x = 1\\n' > .hidden/secret.py && "
    "printf 'hello\\000binary' > src/blob.bin"
)


def with_tools(agent: AgentSpec, *tools: str, **sandbox: object) -> AgentSpec:
    update: dict[str, object] = {"tools": [*agent.tools, *tools]}
    if sandbox:
        update["sandbox"] = agent.sandbox.model_copy(update=sandbox)
    return agent.model_copy(update=update)


async def tool_results(
    client: Client, agent: AgentSpec, scripted: ScriptedModelServer, calls: list[ToolUse]
) -> list[ToolResult]:
    """Run one session whose model makes `calls` (one turn) and answers; the results, in order."""
    marker = add_scenario(scripted, [Step(tool_uses=calls), Step(text="done")])
    handle = await start_agent_session(client, agent, f"Use the tools. {marker}", one_shot=True)
    result = await handle.result()
    assert result.status == "done", result
    events = await session_events(client, handle.id)
    by_call = {e.tool_result.call_id: e.tool_result for e in events if e.kind == "tool_result" and e.tool_result}
    # Refused calls are answered at once, the others in turn: in the order the model made them.
    made = [c.id for e in events if e.kind == "model_turn" for c in (e.tool_calls or [])]
    return [by_call[i] for i in made]


@pytest.mark.usefixtures("workers")
async def test_glob_and_grep_in_each_mode(client: Client, scripted: ScriptedModelServer) -> None:
    calls = [
        ToolUse(name="bash", input={"command": FILES}),
        ToolUse(name="glob", input={"pattern": "**/*.py"}),
        ToolUse(name="glob", input={"pattern": "*/*.{md,bin}"}),
        ToolUse(name="glob", input={"pattern": "*.rs"}),
        ToolUse(name="grep", input={"pattern": "hello", "case_insensitive": True}),
        ToolUse(name="grep", input={"pattern": "def \\w+", "output_mode": "content", "type": "py", "after": 1}),
        ToolUse(name="grep", input={"pattern": "hello", "output_mode": "count", "case_insensitive": True}),
        ToolUse(name="grep", input={"pattern": "hello", "glob": "*.md", "output_mode": "content"}),
        ToolUse(name="grep", input={"pattern": "[unclosed"}),
        ToolUse(name="grep", input={"pattern": ".", "output_mode": "content", "head_limit": 2, "path": "src"}),
        ToolUse(name="glob", input={"pattern": "*", "path": "nowhere"}),
    ]
    agent = with_tools(coder(), "glob", "grep")
    results = await tool_results(client, agent, scripted, calls)
    out = [r.output for r in results]
    assert not results[0].is_error, out[0]
    # glob: ** at any depth, hidden files too, sorted, absolute; braces; nothing found is no error.
    assert out[1].splitlines() == [
        "/workspace/.hidden/secret.py",
        "/workspace/src/app.py",
        "/workspace/src/lib/util.py",
    ], out[1]
    assert out[2].splitlines() == ["/workspace/docs/guide.md", "/workspace/src/blob.bin"], out[2]
    assert not results[3].is_error and "No files match *.rs" in out[3], out[3]
    # grep: files_with_matches (the default; the binary file is skipped), content with context, count.
    assert out[4].splitlines() == [
        "/workspace/docs/guide.md",
        "/workspace/src/app.py",
        "/workspace/src/lib/util.py",
    ], out[4]
    assert out[5].splitlines() == [
        "/workspace/src/app.py:1:def main():",
        '/workspace/src/app.py-2-    print("Hello")',
        "--",
        "/workspace/src/app.py:5:def helper():",
        "/workspace/src/app.py-6-    return 42",
    ], out[5]
    assert sorted(out[6].splitlines()) == [
        "/workspace/docs/guide.md:1",
        "/workspace/src/app.py:1",
        "/workspace/src/lib/util.py:1",
    ], out[6]
    assert out[7].splitlines() == ["/workspace/docs/guide.md:2:Say hello."], out[7]
    assert results[8].is_error and "grep: invalid regular expression '[unclosed'" in out[8], out[8]
    assert out[9].splitlines()[:2] == [
        "/workspace/src/app.py:1:def main():",
        '/workspace/src/app.py:2:    print("Hello")',
    ]
    assert "more lines not shown (limit 2)" in out[9], out[9]
    assert results[10].is_error and "glob: no such directory: /workspace/nowhere" in out[10], out[10]


PAGE = b"""<!doctype html><html><head><title>Docs home</title><style>body{color:red}</style>
<script>var secret = 1;</script></head><body><h1>Welcome</h1><p>Read the <a href="/guide">guide</a>
first.</p><ul><li>one</li><li>two</li></ul></body></html>"""


class Site:
    """A web site on the host's loopback: /page (HTML), /plain, /moved (-> /plain), /away (-> a host
    the sandbox may not reach), anything else 404."""

    def __init__(self) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.seen.append(self.path)
                redirects = {"/moved": "https://docs.test/plain", "/away": "http://elsewhere.test/"}
                if self.path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, kind, status = {
                    "/page": (PAGE, "text/html; charset=utf-8", 200),
                    "/plain": (b"just text\n", "text/plain", 200),
                }.get(self.path, (b"no such page", "text/plain", 404))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.seen: list[str] = []
        # On every interface: the egress proxy reaches it on loopback, a bridged sandbox via the gateway.
        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site()
    yield server
    server.server.shutdown()


@pytest.mark.usefixtures("workers")
async def test_web_fetch_reaches_allowed_hosts_only(client: Client, scripted: ScriptedModelServer, site: Site) -> None:
    # The environment allows docs.test, which the egress proxy (on the host) reaches on loopback.
    rule = EgressRule(host="docs.test", port=site.port, scheme="http", connect_to="127.0.0.1")
    agent = with_tools(coder(), "web_fetch", egress=[rule])
    calls = [
        ToolUse(name="web_fetch", input={"url": "https://docs.test/page"}),
        ToolUse(name="web_fetch", input={"url": "http://docs.test/moved"}),
        ToolUse(name="web_fetch", input={"url": "https://elsewhere.test/"}),
        ToolUse(name="web_fetch", input={"url": "http://docs.test/away"}),
        ToolUse(name="web_fetch", input={"url": "http://docs.test/missing"}),
        ToolUse(name="web_fetch", input={"url": "http://docs.test/page", "max_chars": 12}),
    ]
    results = await tool_results(client, agent, scripted, calls)
    out = [r.output for r in results]
    # HTML as readable text: title, headings, list items, links resolved; no script or style.
    assert not results[0].is_error, out[0]
    assert out[0].startswith("https://docs.test/page\nHTTP 200 text/html\n\n# Docs home\n"), out[0]
    assert "# Welcome" in out[0] and "Read the guide (https://docs.test/guide) first." in out[0], out[0]
    assert "- one\n" in out[0] and "- two" in out[0], out[0]
    assert "secret" not in out[0] and "color" not in out[0] and "<" not in out[0], out[0]
    # A redirect is followed, to an allowed host.
    assert not results[1].is_error and out[1].startswith("https://docs.test/plain\nHTTP 200 text/plain"), out[1]
    assert "just text" in out[1]
    # A host the environment does not allow: refused before anything runs, saying which hosts it allows.
    assert results[2].is_error and "not among the hosts this session's environment allows (docs.test)" in out[2]
    # A redirect to such a host: refused by the egress proxy, said so.
    assert results[3].is_error and "refused by this sandbox's egress proxy" in out[3], out[3]
    assert "elsewhere.test is not in this sandbox's egress list" in out[3], out[3]
    assert results[4].is_error and "answered HTTP 404" in out[4] and "no such page" in out[4], out[4]
    assert "more characters not shown (max_chars 12)" in out[5], out[5]
    assert site.seen == ["/page", "/moved", "/plain", "/away", "/missing", "/page"], site.seen


@pytest.mark.usefixtures("workers")
async def test_web_fetch_with_an_unrestricted_network_goes_direct(
    client: Client, scripted: ScriptedModelServer, site: Site
) -> None:
    """network: true (the API's `unrestricted`): any host, reached from the sandbox itself."""
    # The bridge's gateway: the host as its containers reach it (some engines leave the Gateway out
    # of the IPAM config: then it is the subnet's first address, as Docker assigns it).
    ipam = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    agent = with_tools(coder(), "web_fetch", network=True)
    url = f"http://{gateway}:{site.port}/page"
    [result] = await tool_results(client, agent, scripted, [ToolUse(name="web_fetch", input={"url": url})])
    assert not result.is_error and result.output.startswith(f"{url}\nHTTP 200 text/html"), result.output
    assert "# Welcome" in result.output


@pytest.mark.usefixtures("workers")
async def test_web_fetch_without_network_is_refused_clearly(client: Client, scripted: ScriptedModelServer) -> None:
    agent = with_tools(coder(), "web_fetch")  # network: false, no egress hosts
    [result] = await tool_results(
        client, agent, scripted, [ToolUse(name="web_fetch", input={"url": "https://a.test/"})]
    )
    assert result.is_error and "environment allows no network access" in result.output, result.output
    assert "allowed_hosts" in result.output


@pytest.mark.usefixtures("workers")
async def test_web_search_with_a_backend_and_without(
    client: Client, scripted: ScriptedModelServer, setenv: SetEnv, tmp_path: Path
) -> None:
    setenv("DA_WEB_SEARCH", "tests.helpers.search:backend")
    agent = with_tools(coder(), "web_search")
    calls = [ToolUse(name="web_search", input={"query": "temporal workflows", "max_results": 2})]
    [result] = await tool_results(client, agent, scripted, calls)
    assert not result.is_error, result.output
    assert result.output.splitlines() == [
        "Results for 'temporal workflows':",
        "1. About temporal workflows",
        "   https://docs.test/about",
        "   All about temporal workflows.",
        "2. Second",
        "   https://docs.test/second",
        "   a mapping hit",
    ], result.output
    assert test_search.QUERIES.count("temporal workflows") == 1
    # An agent file may name it while a backend is configured, and not otherwise, saying why.
    (tmp_path / "searcher.yaml").write_text("name: s\nmodel: {name: m}\ntools: [bash, web_search]\n")
    assert load_agent(tmp_path / "searcher.yaml").tools == ["bash", "web_search"]
    setenv("DA_WEB_SEARCH", None)
    with pytest.raises(AgentFileError, match="web_search is not offered: no search backend is configured"):
        load_agent(tmp_path / "searcher.yaml")
    # A definition made elsewhere that names it anyway: the sandbox worker says it has no backend.
    [result] = await tool_results(client, agent, scripted, [ToolUse(name="web_search", input={"query": "x"})])
    assert result.is_error and "no search backend is configured" in result.output, result.output


def test_agent_files_take_the_managed_agents_names_as_aliases(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "name: a\nmodel: {name: m}\ntools: [bash, read, write, {name: edit, policy: always_ask}, glob, grep]\n"
        "policies: {read: always_ask}\n"
    )
    agent = load_agent(tmp_path / "a.yaml")
    assert agent.tools == ["bash", "read_file", "write_file", "edit_file", "glob", "grep"]
    assert agent.policies == {"read_file": "always_ask", "edit_file": "always_ask"}
    (tmp_path / "b.yaml").write_text("name: b\nmodel: {name: m}\ntools: [bash, fetch]\n")
    with pytest.raises(AgentFileError, match="unknown tool 'fetch'"):
        load_agent(tmp_path / "b.yaml")


FULL_TOOLSET = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")


@pytest.mark.usefixtures("workers")
async def test_the_api_offers_the_whole_toolset(
    address: str, scripted: ScriptedModelServer, setenv: SetEnv, tmp_path: Path
) -> None:
    """Through the anthropic SDK: an agent with every tool of the toolset is accepted (web_search
    because this server has a backend), and a session of it runs glob, grep and web_search."""
    setenv("DA_WEB_SEARCH", "tests.helpers.search:backend")  # the in-process sandbox worker's
    env = {"DA_API_KEY": "tools-key", "DA_DATA_DIR": str(tmp_path), "DA_WEB_SEARCH": "tests.helpers.search:backend"}
    with serve(address, env=env) as url:
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key="tools-key", max_retries=0)
        by_name = [{"name": n, "enabled": True} for n in FULL_TOOLSET]
        agent = await sdk.beta.agents.create(
            name="full",
            model="claude-sonnet-5-5",
            tools=[{"type": "agent_toolset_20260401", "configs": by_name}],  # type: ignore[list-item]
        )
        assert [(c.name, c.enabled) for c in agent.tools[0].configs] == [(n, True) for n in FULL_TOOLSET]
        default = await sdk.beta.agents.create(name="d", model="m", tools=[{"type": "agent_toolset_20260401"}])
        assert all(c.enabled for c in default.tools[0].configs)
        marker = add_scenario(
            scripted,
            [
                Step(tool_use=ToolUse(name="write_file", input={"path": "notes/a.md", "content": "needle here\n"})),
                Step(
                    tool_uses=[
                        ToolUse(name="glob", input={"pattern": "**/*.md"}),
                        ToolUse(name="grep", input={"pattern": "needle", "output_mode": "count"}),
                        ToolUse(name="web_search", input={"query": "needles", "max_results": 1}),
                    ]
                ),
                Step(text="found"),
            ],
        )
        environment = await sdk.beta.environments.create(name="e")
        session = await sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id)
        got = []
        async with await sdk.beta.sessions.events.stream(session.id) as stream:
            await sdk.beta.sessions.events.send(
                session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": marker}]}]
            )
            async for event in stream:
                got.append(event)
                if event.type == "session.status_idle" and event.stop_reason.type == "end_turn":
                    break
        uses = [e.name for e in got if e.type == "agent.tool_use"]
        assert uses == ["write", "glob", "grep", "web_search"], uses
        results = [e for e in got if e.type == "agent.tool_result"]
        texts = ["".join(getattr(c, "text", "") for c in (r.content or [])).strip() for r in results]
        assert not any(r.is_error for r in results), texts
        assert texts[1] == "/workspace/notes/a.md" and texts[2] == "/workspace/notes/a.md:1", texts
        assert "1. About needles" in texts[3], texts
        await sdk.beta.sessions.delete(session.id)


async def test_a_retried_call_is_answered_from_its_record_and_capped(
    docker_sandboxes: DockerSandboxes, setenv: SetEnv
) -> None:
    """The execute activity, retried with the same call id (a worker died after it ran): web_search
    does not ask the backend again, grep does not run again; and the output cap applies to both."""
    setenv("DA_WEB_SEARCH", "tests.helpers.search:backend")
    activities = SandboxActivities(docker_sandboxes)
    env = ActivityEnvironment()
    handle = await env.run(activities.provision_sandbox, ProvisionRequest(session_id="t-tools", spec=SandboxSpec()))
    try:

        async def execute(call_id: str, name: str, args: dict[str, object], cap: int = 30_000) -> ExecuteResult:
            req = ExecuteRequest(handle=handle, call_id=call_id, name=name, input=args, timeout_s=20, output_cap=cap)
            result: ExecuteResult = await env.run(activities.execute, req)
            return result

        query = f"once {uuid.uuid4().hex[:6]}"
        first = await execute("search-1", "web_search", {"query": query})
        again = await execute("search-1", "web_search", {"query": query})
        assert first.output == again.output and query in first.output
        assert test_search.QUERIES.count(query) == 1, "a retried call asks the backend once"
        await execute("w", "bash", {"command": "seq 1 5000 | sed 's/^/line /' > big.txt"})
        grep = await execute("grep-1", "grep", {"pattern": "line", "output_mode": "content", "head_limit": 1000}, 2000)
        assert grep.truncated_chars > 0 and "[output truncated:" in grep.output
        await execute("w2", "bash", {"command": "rm big.txt"})
        repeated = await execute("grep-1", "grep", {"pattern": "line", "output_mode": "content"}, 2000)
        assert repeated.output == grep.output, "the recorded result, though the file is gone"
    finally:
        docker_sandboxes.destroy(handle.sandbox_id)


async def test_web_search_backends_named_by_url_or_factory() -> None:
    """A search service by URL (GET ?q=&count= answering JSON), and the errors that name a bad setting."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            asked.append(self.path)
            body = json.dumps({"results": [{"title": "T", "url": "https://x.test/", "content": "C"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = search_backend(f"http://127.0.0.1:{server.server_address[1]}/search")
        hits = await run_search(backend, "a b", 3)
        assert render_hits("a b", hits) == "Results for 'a b':\n1. T\n   https://x.test/\n   C"
        assert asked == ["/search?q=a+b&count=3"]
    finally:
        server.shutdown()
    for spec, message in [
        ("nomodule", "give module:factory or an http"),
        ("tests.helpers.search:nope", "cannot be loaded"),
        ("no_such_module_x:f", "cannot be loaded"),
    ]:
        with pytest.raises(WebSearchError, match=message):
            search_backend(spec)
