"""A PostgreSQL server of a test's own (Debian's PostgreSQL, started as the postgres user on a
free port, in a directory it owns), for the code that runs on PostgreSQL given a URL."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.processes import free_port


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise AssertionError("Debian's postgresql is not installed: run `make setup`")
    return Path(found[-1]).parent


def _as_postgres(*argv: str) -> None:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr or done.stdout}")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh cluster with a database `da`: its SQLAlchemy URL (psycopg)."""
    where = Path(tempfile.mkdtemp(prefix="da-pg-"))
    os.chmod(where, 0o755)
    data, sockets = where / "data", where / "run"
    sockets.mkdir()
    shutil.chown(where, "postgres", "postgres")
    shutil.chown(sockets, "postgres", "postgres")
    port = free_port()
    pg = _bin()
    _as_postgres(str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    _as_postgres(str(pg / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(where / "log"), "start")
    try:
        _as_postgres("psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE da")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/da"
    finally:
        _as_postgres(str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(where, ignore_errors=True)
