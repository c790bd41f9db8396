"""The local stack in the background: Temporal (the dev server, or with DA_ENGINE=cluster the
PostgreSQL-backed cluster of scripts/cluster.sh), scripted model (when no
ANTHROPIC_API_KEY), the live server (`da serve`, to which the harness worker publishes
model text as it streams), a harness worker and a sandbox worker. Used by `make up|down|demo`.

    python scripts/stack.py up | down | status | demo      (make up ENGINE=cluster sets DA_ENGINE)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from durable_agents import codec
from durable_agents.connection import DEV_SERVER_TUNING
from durable_agents.settings import settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = settings()
DATA = CONFIG.data_dir  # DA_DATA_DIR, default .data here: the stack's database, logs and pids too
PIDS = DATA / "pids"
LOGS = DATA / "logs"
PY = str(ROOT / ".venv" / "bin" / "python")
DA = str(ROOT / ".venv" / "bin" / "da")  # the console scripts `make setup` installs
DA_WORKER = str(ROOT / ".venv" / "bin" / "da-worker")
TEMPORAL = str(ROOT / ".bin" / "temporal")
SCRIPTED_PORT = CONFIG.scripted_model_port
CODEC_PORT = CONFIG.codec_port
LIVE_PORT = CONFIG.live_port
LIVE_URL = CONFIG.live_url or f"http://127.0.0.1:{LIVE_PORT}"
ENGINE = os.environ.get("DA_ENGINE") or "dev"  # dev | cluster
CLUSTER_PORT = int(os.environ.get("DA_CLUSTER_PORT") or 7233)
if ENGINE == "cluster" and "TEMPORAL_ADDRESS" not in os.environ:
    os.environ["TEMPORAL_ADDRESS"] = f"127.0.0.1:{CLUSTER_PORT}"  # the workers, the CLI and `da serve`
UI_URL = f"http://localhost:{CLUSTER_PORT + 1000}" if ENGINE == "cluster" else "http://localhost:8233"
PROCESSES = ("temporal", "scripted-model", "codec-server", "live-server", "harness-worker", "sandbox-worker")
DEMO_TASK = (
    "Write a Python program fib.py that prints the first 10 Fibonacci numbers, run it, "
    "fix it if it fails, and tell me its output."
)


def say(msg: str) -> None:
    print(f"\033[1m[stack]\033[0m {msg}", flush=True)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _alive(name: str) -> int | None:
    pidfile = PIDS / f"{name}.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pidfile.unlink(missing_ok=True)
        return None


def _spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    if _alive(name):
        say(f"{name}: already running")
        return
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / f"{name}.log", "ab")
    # Every process of the stack gets the same data directory, wherever it looks from.
    env = {**(env if env is not None else os.environ), "DA_DATA_DIR": str(DATA)}
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (PIDS / f"{name}.pid").write_text(str(proc.pid))
    say(f"{name}: started (pid {proc.pid}, log {LOGS / name}.log)")


def _wait_port(name: str, port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _port_open("127.0.0.1", port):
            return
        if not _alive(name):
            sys.exit(f"{name} exited; see {LOGS / name}.log")
        time.sleep(0.2)
    sys.exit(f"{name} did not open port {port} in {seconds:g}s; see {LOGS / name}.log")


def model_env() -> tuple[dict[str, str], str]:
    """Environment for the harness worker, and a sentence saying which model it will use."""
    env = dict(os.environ)
    if CONFIG.anthropic_api_key is not None:
        where = CONFIG.anthropic_base_url or "api.anthropic.com"
        return env, f"Claude ({where}); ANTHROPIC_API_KEY is set"
    env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{SCRIPTED_PORT}"
    env["ANTHROPIC_API_KEY"] = "scripted-model-needs-no-key"
    return env, (
        f"the SCRIPTED model at http://127.0.0.1:{SCRIPTED_PORT} (no ANTHROPIC_API_KEY is set, "
        "so answers come from durable_agents/testing/scenarios/, not from Claude)"
    )


def encryption() -> list[str]:
    """With DA_ENCRYPT_HISTORY=1: a key file (made once), and the codec server the UI decrypts through."""
    if not codec.encryption_enabled():
        return []
    if not codec.key_file().exists() and CONFIG.codec_keys is None:
        ring = codec.new_key_file()
        say(f"encryption: created {codec.key_file()} (key {ring.active}); give it to every worker and client")
    _spawn("codec-server", [DA, "codec-server", "--port", str(CODEC_PORT)])
    _wait_port("codec-server", CODEC_PORT)
    say(f"encryption: history is AES-GCM ciphertext; the UI decrypts through http://127.0.0.1:{CODEC_PORT}")
    return ["--ui-codec-endpoint", f"http://127.0.0.1:{CODEC_PORT}"]


def cluster(action: str) -> None:
    """scripts/cluster.sh ACTION: the Temporal cluster on PostgreSQL (DA_CLUSTER_PORT, DA_CLUSTER_DATA)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), action], cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"scripts/cluster.sh {action} failed")


def up() -> None:
    DATA.mkdir(exist_ok=True)
    codec_args = encryption()
    if ENGINE == "cluster":
        cluster("up")
    elif not _port_open("127.0.0.1", 7233):
        _spawn(
            "temporal",
            [
                TEMPORAL,
                "server",
                "start-dev",
                "--db-filename",
                str(DATA / "temporal.db"),
                "--ui-port",
                "8233",
                "--log-level",
                "warn",
                "--search-attribute",
                "AgentName=Keyword",
                "--search-attribute",
                "SessionStatus=Keyword",
                "--search-attribute",
                "AgentVersion=Keyword",
                "--search-attribute",
                "ParentSession=Keyword",
                *codec_args,
                *DEV_SERVER_TUNING,
            ],
        )
        _wait_port("temporal", 7233)
    else:
        say("temporal: a server already answers on localhost:7233")
    env, which = model_env()
    if CONFIG.anthropic_api_key is None:
        _spawn("scripted-model", [PY, "-m", "durable_agents.testing.scripted_model", "--port", str(SCRIPTED_PORT)])
        _wait_port("scripted-model", SCRIPTED_PORT)
    if CONFIG.live_url is None:  # else the user runs their own
        _spawn("live-server", [DA, "serve", "--port", str(LIVE_PORT)])
        _wait_port("live-server", LIVE_PORT)
    env["DA_LIVE_URL"] = LIVE_URL
    _spawn("harness-worker", [DA_WORKER, "--harness"], env=env)
    sandbox_env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    _spawn("sandbox-worker", [DA_WORKER, "--sandbox"], env=sandbox_env)
    say(f"model: {which}")
    say(f"Temporal UI: {UI_URL} (engine: {ENGINE})")
    say(f"live server: {LIVE_URL} (`DA_LIVE_URL={LIVE_URL} da follow ID` streams model text)")
    say(f"console: {LIVE_URL}/console/ (sign in with DA_API_KEY or a key from `da api-key create NAME`)")


def down() -> None:
    for name in ("harness-worker", "sandbox-worker", "live-server", "scripted-model", "codec-server", "temporal"):
        pid = _alive(name)
        if pid is None:
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(name):
            os.killpg(pid, signal.SIGKILL)
        (PIDS / f"{name}.pid").unlink(missing_ok=True)
        say(f"{name}: stopped")
    if ENGINE == "cluster":
        cluster("down")


def status() -> None:
    for name in PROCESSES:
        pid = _alive(name)
        print(f"{name:<16} {f'running (pid {pid})' if pid else 'stopped'}")
    if ENGINE == "cluster":
        cluster("status")


def demo() -> None:
    up()
    _, which = model_env()
    say(f"demo: one session of agents/coder.yaml on {which}")
    cli_env = {**os.environ, "DA_DATA_DIR": str(DATA)}  # the CLI shares the stack's payload store and keys
    started = subprocess.run(
        [DA, "start", "--agent", "agents/coder.yaml", "--one-shot", DEMO_TASK],
        cwd=ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        sys.exit(started.stderr)
    session_id = started.stdout.strip()
    say(f"session {session_id} started; its events:")
    follow_env = {**cli_env, "DA_LIVE_URL": LIVE_URL}  # model text token by token
    subprocess.run([DA, "follow", session_id], cwd=ROOT, env=follow_env, check=True)
    result = subprocess.run([DA, "result", session_id], cwd=ROOT, env=cli_env, capture_output=True, text=True)
    print("\n" + "=" * 72)
    print(f"model:   {which}")
    print(f"session: {session_id}")
    print(f"UI:      {UI_URL}/namespaces/default/workflows/{session_id}")
    print(f"live:    {LIVE_URL}/sessions/{session_id}/events (Server-Sent Events)")
    print(f"console: {LIVE_URL}/console/sessions/{session_id}")
    print("answer:\n" + (result.stdout.strip() or result.stderr.strip()))
    print("=" * 72)
    say("the stack keeps running for the CLI (`make down` stops it)")


if __name__ == "__main__":
    actions = {"up": up, "down": down, "status": status, "demo": demo}
    if len(sys.argv) != 2 or sys.argv[1] not in actions:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(actions)}}}")
    actions[sys.argv[1]]()
