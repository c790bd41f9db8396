"""Running the product as users do: `da` as a process, and free loopback ports for servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

import httpx

from durable_agents.testing import free_port
from tests.helpers.paths import DA, ROOT


async def cli(address: str, *args: str) -> tuple[int, str, str]:
    """`da ARGS` from the repository, against the dev server at `address`: exit code, stdout, stderr."""
    env = {**os.environ, "TEMPORAL_ADDRESS": address}
    proc = await asyncio.create_subprocess_exec(
        str(DA), *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Until `da serve` at `url` answers its health check (it must not exit meanwhile)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "da serve exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError("da serve did not answer")


@contextlib.contextmanager
def serve(address: str, port: int | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """`da serve` as a process, as deployed, against the dev server at `address`: its URL."""
    port = port or free_port()
    proc = subprocess.Popen(
        [str(DA), "serve", "--port", str(port)],
        cwd=ROOT,
        # One payload store with the workers (they run in the repository): large answers live there.
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "DA_PAYLOAD_DIR": str(ROOT / ".data" / "payloads"),
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
