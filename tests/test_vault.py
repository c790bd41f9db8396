"""The vault's secrets reach what needs them and nothing else: the egress proxy, a private git clone,
MCP servers; then a whole session that used every path is searched for the secret values."""

from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from temporalio.client import Client

from durable_agents import session_log, vault
from durable_agents.agent_files import load_agent
from durable_agents.client import start_agent_session
from durable_agents.contracts import GET_STATE, EgressRule, GitSource, SandboxSpec, SessionState, WorkspaceSeed
from durable_agents.payload_store import data_converter
from durable_agents.sandboxes.docker_sandbox import DockerSandboxes
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import (
    CHAOS_NAMESPACE,
    DA,
    MCP_TOKEN,
    ROOT,
    HttpServers,
    SetEnv,
    add_scenario,
    auth_servers,
    wait_for,
)

API_HOST = "api.internal.test"


def test_the_file_vault_seals_values_and_lists_names_only(tmp_path: Path, setenv: SetEnv) -> None:
    setenv("DA_VAULT_FILE", str(tmp_path / "vault.json"))
    setenv("DA_VAULT_KEY", None)
    setenv("DA_VAULT_KEY_FILE", None)
    value = "s3cr3t-" + secrets.token_hex(8)
    done = subprocess.run(
        [str(DA), "vault", "set", "github-token"],
        input=value + "\n",
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([str(DA), "vault", "list"], capture_output=True, text=True, timeout=60)
    assert listed.stdout.split() == ["github-token"] and value not in listed.stdout + listed.stderr
    assert value not in (tmp_path / "vault.json").read_text()
    assert oct((tmp_path / "vault.key").stat().st_mode & 0o777) == "0o600"
    assert vault.load_vault().resolve("github-token") == value
    with pytest.raises(vault.VaultError, match="unknown secret 'nope'"):
        vault.load_vault().resolve("nope")
    # A value moved to another name does not open (the name is authenticated with it).
    data = json.loads((tmp_path / "vault.json").read_text())
    data["secrets"]["other"] = data["secrets"]["github-token"]
    (tmp_path / "vault.json").write_text(json.dumps(data))
    with pytest.raises(vault.VaultError, match="does not decrypt"):
        vault.load_vault().resolve("other")
    setenv("DA_SECRET_FROM_ENV", "env-value")
    assert vault.load_vault().resolve("from-env") == "env-value"
    with pytest.raises(vault.VaultError, match="unknown backend 'ldap'"):
        vault.load_vault("file,ldap")


class Upstream:
    """An HTTP API on the host that wants `Authorization: Bearer <token>`; /echo returns what it got."""

    def __init__(self, token: str) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                authorized = self.headers.get("Authorization") == f"Bearer {token}"
                outer.seen.append(self.headers.get("Host", ""))
                if self.path == "/echo":
                    body = json.dumps(dict(self.headers.items())).encode()
                else:
                    body = b"hello, authorized" if authorized else b"unauthorized"
                self.send_response(200 if authorized else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.seen: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


FETCH = (
    "python3 - <<'PY'\n"
    "import urllib.request, urllib.error\n"
    "for path in ('/whoami', '/echo'):\n"
    "    try:\n"
    f"        print(urllib.request.urlopen('http://{API_HOST}' + path, timeout=10).read().decode())\n"
    "    except urllib.error.HTTPError as e:\n"
    "        print(e.code, e.read().decode())\n"
    "for url in ('http://example.com/', 'https://{api}/whoami'):\n"
    "    try:\n"
    "        urllib.request.urlopen(url.format(api='" + API_HOST + "'), timeout=10)\n"
    "    except Exception as e:\n"
    "        print('refused:', getattr(e, 'code', ''), getattr(e, 'reason', e))\n"
    "PY"
)


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    token = "egress-" + secrets.token_hex(12)
    server = Upstream(token)
    yield server, token
    server.close()


def egress_spec(port: int) -> SandboxSpec:
    rule = EgressRule(
        host=API_HOST,
        port=port,
        scheme="http",
        connect_to="127.0.0.1",  # the proxy runs on the host: it reaches the API on loopback
        secret={"secret": "api-token", "prefix": "Bearer "},  # type: ignore[arg-type]
    )
    return SandboxSpec(egress=[rule])


def test_the_egress_proxy_adds_the_credential_for_listed_hosts_only(
    docker_sandboxes: DockerSandboxes, upstream: tuple[Upstream, str], setenv: SetEnv
) -> None:
    server, token = upstream
    setenv("DA_SECRET_API_TOKEN", token)
    container = docker_sandboxes.create("egress-test", egress_spec(server.port))
    try:
        code, out = docker_sandboxes.exec(container.id or "", ["sh", "-c", FETCH])
        text = out.decode()
        assert "hello, authorized" in text, text
        assert "[redacted by the egress proxy]" in text and token not in text, "an echoed secret is redacted"
        assert "refused: 403" in text, text  # example.com is not listed
        assert "Tunnel connection failed: 405" in text, text  # and no HTTPS tunnel
        assert server.seen and server.seen[0] == API_HOST
        # No way around the proxy: no DNS, no route, and the host's other ports are closed to it.
        code, out = docker_sandboxes.exec(
            container.id or "",
            [
                "python3",
                "-c",
                "import socket,os\n"
                "gw=os.environ['HTTP_PROXY'].split('//')[1].split(':')[0]\n"
                "for target in [('1.1.1.1', 80), (gw, " + str(server.port) + ")]:\n"
                "    try:\n"
                "        socket.create_connection(target, timeout=3); print('reached', target)\n"
                "    except OSError as e:\n"
                "        print('blocked', target)\n",
            ],
        )
        assert "reached" not in out.decode() and out.decode().count("blocked") == 2, out.decode()
        inspected = docker_sandboxes.docker.api.inspect_container(container.id)
        assert token not in json.dumps(inspected), "the secret is in no container setting or label"
    finally:
        docker_sandboxes.destroy(container.id or "")


class GitServer:
    """A private repository over smart HTTP (`git http-backend`), for `x-access-token:<token>` only."""

    def __init__(self, root: Path, token: str) -> None:
        expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def _backend(self) -> None:
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                env = {
                    "GIT_PROJECT_ROOT": str(root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(length),
                    "PATH": os.environ["PATH"],
                }
                done = subprocess.run(
                    ["git", "http-backend"], input=self.rfile.read(length), env=env, capture_output=True, timeout=60
                )
                head, _, body = done.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    key, _, value = line.partition(": ")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _backend  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/repo.git"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def private_repo(tmp_path: Path) -> Iterator[tuple[GitServer, str]]:
    token = "git-" + secrets.token_hex(12)
    work, bare = tmp_path / "work", tmp_path / "srv" / "repo.git"
    work.mkdir()
    (work / "README.md").write_text("private repository contents\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "first"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    server = GitServer(tmp_path / "srv", token)
    yield server, token
    server.close()


def grep_tree(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n[:8]}..." for n in needles if n.encode() in data]
    return found


async def test_a_session_using_every_secret_path_leaks_none(
    address: str,
    scripted: ScriptedModelServer,
    worker_processes: Callable[..., subprocess.Popen[bytes]],
    http_servers: HttpServers,  # noqa: F811
    upstream: tuple[Upstream, str],
    private_repo: tuple[GitServer, str],
    tmp_path: Path,
) -> None:
    api, api_token = upstream
    git_server, git_token = private_repo
    # The secrets live in an encrypted vault file that only the worker processes read.
    vault_env = {"DA_VAULT_FILE": str(tmp_path / "vault.json"), "DA_VAULT": "file"}
    store = vault.FileVault(tmp_path / "vault.json")
    for name, value in (("mcp-token", MCP_TOKEN), ("api-token", api_token), ("git-token", git_token)):
        store.set(name, value)
    needles = [MCP_TOKEN, api_token, git_token]
    worker_processes(env=vault_env)

    async def started() -> bool:
        return b"worker started" in (tmp_path / "worker-0.log").read_bytes()

    await wait_for(started, what="the worker to start")

    agent = load_agent(ROOT / "agents" / "coder.yaml").model_copy(
        update={
            "sandbox": egress_spec(api.port),
            "mcp_servers": auth_servers(http_servers.auth),
        }
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_uses=[ToolUse(name="stdio-auth__whoami", input={}), ToolUse(name="http-auth__whoami", input={})]),
            Step(
                tool_use=ToolUse(
                    name="bash",
                    input={"command": "cat README.md; git log --oneline | wc -l; git config --list --show-origin"},
                )
            ),
            Step(tool_use=ToolUse(name="bash", input={"command": FETCH})),
            Step(text="all paths used"),
        ],
    )
    client = await Client.connect(address, namespace=CHAOS_NAMESPACE, data_converter=data_converter())
    seed = WorkspaceSeed(git=GitSource(url=git_server.url, ref="main", token_secret="git-token"))
    handle = await start_agent_session(client, agent, f"Use everything. {marker}", workspace=seed)

    async def idle() -> bool:
        state = await handle.query(GET_STATE, result_type=SessionState)
        return state.status in ("idle", "failed")

    await wait_for(idle, within_s=120, what="the session to answer")
    events = await session_log.read_events(client, handle.id)
    outputs = [e.tool_result.output for e in events if e.kind == "tool_result"]
    # Every path delivered its secret: the MCP servers (env and header), the clone, the proxy.
    assert outputs[:2] == ["authorized", "authorized"], outputs
    assert "private repository contents" in outputs[2] and "\n1\n" in outputs[2], outputs[2]
    assert "hello, authorized" in outputs[3] and "[redacted by the egress proxy]" in outputs[3], outputs[3]

    # The container: its settings and environment, its root filesystem, its workspace and /tmp.
    low = docker.from_env()
    [container] = low.containers.list(filters={"label": f"durable-agents.session={handle.id}"})
    leaks = [f"container settings: {n[:8]}" for n in needles if n in json.dumps(container.attrs)]
    for command in (["sh", "-c", "cat /proc/1/environ; env"], ["tar", "cf", "-", "/workspace", "/tmp"]):
        _, out = container.exec_run(command, user="1000")
        leaks += [f"container {command[0]}: {n[:8]}" for n in needles if n.encode() in out]
        # Each search must see what is there, or finding nothing proves nothing.
        assert (b"HTTP_PROXY=" if command[0] == "sh" else b"private repository contents") in out
    rootfs = tmp_path / "rootfs.tar"
    with rootfs.open("wb") as f:
        for chunk in container.export():
            f.write(chunk)
    with tarfile.open(rootfs) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            leaks += [f"rootfs {member.name}: {n[:8]}" for n in needles if n.encode() in data]
    rootfs.unlink()
    await handle.signal("end_session")
    await handle.result()

    # The whole history, every run, raw and with every payload decoded.
    seen_in_history = ""
    for run in await session_log.runs(client, handle.id):
        history = await client.get_workflow_handle(handle.id, run_id=run.run_id).fetch_history()
        raw = history.to_json()
        decoded = raw + "".join(
            base64.b64decode(chunk).decode(errors="replace") for chunk in _payload_data(json.loads(raw))
        )
        leaks += [f"history of run {run.run_id}: {n[:8]}" for n in needles if n in decoded]
        seen_in_history += decoded
    assert "hello, authorized" in seen_in_history, "the history was decoded"
    # The worker's logs, the model's recorded requests (with their headers), the test's own payload store.
    leaks += grep_tree(tmp_path, needles)  # worker logs (and the sealed vault file, which must not show them)
    recorded = json.dumps([{"headers": r.headers, "body": r.body} for r in scripted.model.requests])
    leaks += [f"model requests: {n[:8]}" for n in needles if n in recorded]
    assert not leaks, leaks
    assert b"mcp tool called" in (tmp_path / "worker-0.log").read_bytes(), "the worker's log was searched"


def _payload_data(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("data"), str) and "metadata" in node:
            yield node["data"]
        for value in node.values():
            yield from _payload_data(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payload_data(value)
