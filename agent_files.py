"""Reading agent files (YAML) into AgentSpec, with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from contracts import AgentSpec, agent_version

__all__ = ["AgentFileError", "agent_version", "load_agent"]


class AgentFileError(ValueError):
    pass


def load_agent(path: str | Path) -> AgentSpec:
    """An agent file with its subagents' files resolved into inline specs (so a session's input
    holds the whole definition), or AgentFileError naming the file and field."""
    return _load(Path(path), chain=())


def _load(p: Path, chain: tuple[Path, ...]) -> AgentSpec:
    agent = _parse(p)
    if agent.system_file is not None:
        if agent.system:
            raise AgentFileError(f"{p}: system_file: give system or system_file, not both")
        try:
            agent.system = (p.parent / agent.system_file).read_text()
        except OSError as e:
            raise AgentFileError(f"{p}: system_file: {agent.system_file}: {e.strerror}") from None
        agent.system_file = None  # resolved: the session carries the text itself
    for i, sub in enumerate(agent.subagents):
        if sub.spec is not None or sub.agent is None:
            continue
        child = (p.parent / sub.agent).resolve()
        if child in chain or child == p.resolve():
            raise AgentFileError(f"{p}: subagents.{i}.agent: {sub.agent} leads back to itself (a cycle)")
        try:
            sub.spec = _load(child, (*chain, p.resolve()))
        except AgentFileError as e:
            raise AgentFileError(f"{p}: subagents.{i}.agent: {e}") from None
    return agent


def _parse(p: Path) -> AgentSpec:
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise AgentFileError(f"{p}: no such agent file") from None
    except IsADirectoryError:
        raise AgentFileError(f"{p}: is a directory, not an agent file") from None
    except yaml.YAMLError as e:
        raise AgentFileError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise AgentFileError(f"{p}: expected a mapping of fields (name, model, system, tools, ...)")
    try:
        return AgentSpec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(part) for part in err["loc"]) or "(top level)"
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            lines.append(f"{p}: {field}: {message}")
        raise AgentFileError("\n".join(lines)) from None
