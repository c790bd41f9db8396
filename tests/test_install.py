"""The package as a user installs it: `pip install .` (not editable) into a fresh virtualenv, then
`da` and `da-worker` from an empty directory, with nothing written inside the installed package.

The virtualenv is the real thing: no system site-packages, every dependency installed by pip from
pyproject.toml (from pip's cache when `make setup` has filled it; about 20 s here). Then, as the
Dockerfile does, the scripted test model (durable_agents/testing) is removed from it, which also
shows that workers never need it: the model they talk to is the tests' own scripted server.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

from durable_agents.testing.scripted_model import ScriptedModelServer
from tests.helpers import CHAOS_NAMESPACE, ROOT, remove_host_containers, wait_for

OLD_TOP_LEVEL = {
    "contracts",
    "logs",
    "codec",
    "connection",
    "agent_files",
    "session_log",
    "schedules",
    "payload_store",
    "vault",
    "telemetry",
    "worker",
    "starter",
    "workflows",
    "activities",
    "sandboxes",
    "live",
    "scripted_model",
}


def _run(*argv: str | Path, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _sources(into: Path) -> Path:
    """The files git knows of (tracked, or new and not ignored): no .venv, no build/ left over."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name)
    return into


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without anything that points at the repository or its settings."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DA_", "TEMPORAL_", "ANTHROPIC_", "PYTHON"))}
    keep.pop("VIRTUAL_ENV", None)
    return {**keep, **extra}


async def test_a_non_editable_install_runs_from_an_empty_directory(
    address: str, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    src = _sources(tmp_path / "src")
    env = _clean_env()
    made = await asyncio.to_thread(_run, sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    installed = await asyncio.to_thread(_run, *pip, src, cwd=tmp_path, env=env, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    (site,) = (venv / "lib").glob("python3.*/site-packages")

    # One import name of ours, no generic top-level names, the scenarios as package data, no data.
    dist_info = next(site.glob("durable_agents-*.dist-info"))
    ours = importlib.metadata.Distribution.at(dist_info)
    tops = {Path(f).parts[0] for f in ours.files or [] if not str(f).startswith("..")}  # bin/ is ../../../bin
    assert tops == {"durable_agents", dist_info.name}, tops
    assert (ours.read_text("top_level.txt") or "").split() == ["durable_agents"]
    assert OLD_TOP_LEVEL & {p.name.removesuffix(".py") for p in site.iterdir()} == set()
    package = site / "durable_agents"
    subpackages = {"workflows", "activities", "sandboxes", "live", "contracts", "testing"}
    assert subpackages <= {p.name for p in package.iterdir()}
    assert (package / "testing" / "scenarios" / "coder-demo.yaml").is_file()
    assert {"index.html", "app.js", "console.css"} <= {p.name for p in (package / "console" / "static").iterdir()}
    assert not [p for p in package.rglob("*") if p.name == ".data"]
    shutil.rmtree(package / "testing")  # as the Dockerfile does
    before = _tree(package)

    bin_ = venv / "bin"
    shown = await asyncio.to_thread(_run, bin_ / "da", "--help", cwd=empty, env=env)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: da "), shown.stderr
    assert "tool-result" in shown.stdout and "schedule" in shown.stdout

    host = f"install-{uuid.uuid4().hex[:6]}"
    run_env = _clean_env(
        TEMPORAL_ADDRESS=address,
        TEMPORAL_NAMESPACE=CHAOS_NAMESPACE,  # where only this test's worker polls
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=scripted.url,
        SANDBOX_HOST_ID=host,
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(  # noqa: ASYNC220 - runs through the test, stopped below
            [str(bin_ / "da-worker"), "--warm-pool", "0"], cwd=empty, env=run_env, stdout=out, stderr=out
        )
    try:

        async def started() -> bool:
            assert worker.poll() is None, log.read_text()
            return b'"worker started"' in log.read_bytes()

        await wait_for(started, within_s=60, what="da-worker to start")
        task = "Write fib.py, run it, fix it, tell me the output."
        agent = ROOT / "agents" / "coder.yaml"
        answered = await asyncio.to_thread(
            _run, bin_ / "da", "start", "--agent", agent, "--one-shot", "--wait", task, cwd=empty, env=run_env
        )
        assert answered.returncode == 0, answered.stdout + answered.stderr + log.read_text()
        assert "First 10 Fibonacci numbers: 0 1 1 2 3 5 8 13 21 34" in answered.stdout

        async def released() -> bool:  # by the worker's host, once the session has closed
            return any((empty / ".data" / "blobs").glob("releases/*/*.json"))

        await wait_for(released, within_s=60, what="the sandbox's release")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        remove_host_containers(host)
    # Its data went to the empty directory's .data (the one-shot session's workspace snapshot),
    # and nothing was written inside the installed package.
    assert [p.name for p in (empty / ".data" / "blobs").rglob("*") if p.is_file()], sorted(empty.rglob("*"))
    assert _tree(package) == before


def test_the_repository_scripts_are_shims_for_the_console_scripts() -> None:
    for script, usage in (("starter.py", "usage: da "), ("worker.py", "usage: worker.py ")):
        shown = subprocess.run(
            [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
        )
        assert shown.stdout.startswith(usage), shown.stdout[:200]


def _parse(source: str) -> ast.Module:
    """ast.parse with the collector off: CPython 3.11 can fail building an AST ("recursion depth
    mismatch") when a finalizer (an earlier test's abandoned coroutine) runs in the middle of it."""
    gc.collect()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        gc.enable()


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names the package imports (not the standard library, not itself), and where."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {"durable_agents", *pyproject["tool"]["setuptools"]["package-dir"].values()}
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(_parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"durable_agents"}:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _name(requirement: str) -> str:
    for cut in "[=<>~; ":
        requirement = requirement.split(cut)[0]
    return requirement.lower().replace("_", "-")


def test_every_direct_import_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for r in project["optional-dependencies"]["s3"]}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for top, where in _third_party_imports().items():
        if top == "aioboto3":  # DA_PAYLOAD_STORE=s3://, imported only there: the `s3` extra
            assert "temporalio" in optional
            continue
        provided_by = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
        if not provided_by & declared:
            undeclared[top] = (sorted(provided_by), sorted(where))
    assert undeclared == {}, f"imported but not in pyproject.toml's dependencies: {undeclared}"


def test_the_editable_install_has_no_generic_top_level_module_either() -> None:
    """Outside the repository (whose root is on sys.path while pytest runs), the old names are gone."""
    probe = (
        "import importlib.util, sys\n"
        f"found = [n for n in {sorted(OLD_TOP_LEVEL)!r} if importlib.util.find_spec(n)]\n"
        "import durable_agents.workflows.session, durable_agents.testing.scripted_model\n"
        "sys.exit(', '.join(found) or None)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
