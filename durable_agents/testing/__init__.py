"""Test doubles shipped with the package, as the libraries we learn from ship theirs.

`durable_agents.testing.scripted_model` is a scripted, Anthropic-compatible Messages API server
on loopback: the test suite runs every session against it, and `make demo` uses it when no
ANTHROPIC_API_KEY is set. It is not part of the worker image (the Dockerfile removes this
subpackage), and no production module imports it.
"""

from __future__ import annotations

import socket
from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["free_port", "scenario_files"]


def scenario_files() -> list[Traversable]:
    """The scenario files shipped as package data (`scenarios/*.yaml`), by name."""
    folder = files(__name__) / "scenarios"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def free_port() -> int:
    """A TCP port nothing listens on now, on loopback (for a test's or benchmark's server; something
    else can still take it before that server binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
