"""Running the product as users do: `da` as a process, and free loopback ports for servers."""

from __future__ import annotations

import asyncio
import os
import socket

from tests.helpers.paths import DA, ROOT


async def cli(address: str, *args: str) -> tuple[int, str, str]:
    """`da ARGS` from the repository, against the dev server at `address`: exit code, stdout, stderr."""
    env = {**os.environ, "TEMPORAL_ADDRESS": address}
    proc = await asyncio.create_subprocess_exec(
        str(DA), *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
