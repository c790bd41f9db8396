"""Reading agent files (YAML) into AgentSpec, with errors that name the file and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


SKILLS_LIMIT = 1_000_000  # bytes of skill text per agent: it travels in the session's input


def _parse_skill(folder: Path) -> dict[str, Any]:
    manifest = folder / "SKILL.md"
    try:
        text = manifest.read_text()
    except OSError as e:
        raise AgentFileError(f"{manifest}: {e.strerror}") from None
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n?(.*)$", text, re.DOTALL)
    if not match:
        raise AgentFileError(f"{manifest}: expected front-matter between '---' lines (name, description)")
    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as e:
        raise AgentFileError(f"{manifest}: front-matter is not valid YAML: {e}") from None
    if not isinstance(front, dict) or not front.get("name") or not front.get("description"):
        raise AgentFileError(f"{manifest}: front-matter needs name and description")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path != manifest:
            try:
                files[str(path.relative_to(folder))] = path.read_text()
            except UnicodeDecodeError:
                raise AgentFileError(f"{path}: skills may hold text files only") from None
    return {"name": front["name"], "description": front["description"], "body": match.group(2), "files": files}


def _resolve_skills(p: Path, raw: dict[str, Any]) -> None:
    entries = raw.get("skills")
    if entries is None:
        return
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list):
        raise AgentFileError(f"{p}: skills: a folder or a list of folders")
    resolved: list[Any] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            resolved.append(entry)
            continue
        folder = p.parent / entry
        if (folder / "SKILL.md").is_file():
            resolved.append(_parse_skill(folder))
        elif folder.is_dir():  # a folder of skill folders
            resolved += [_parse_skill(sub) for sub in sorted(folder.iterdir()) if (sub / "SKILL.md").is_file()]
        else:
            raise AgentFileError(f"{p}: skills.{i}: {entry}: no such folder")
    if (
        sum(len(s["body"]) + sum(len(v) for v in s["files"].values()) for s in resolved if isinstance(s, dict))
        > SKILLS_LIMIT
    ):
        raise AgentFileError(f"{p}: skills: more than {SKILLS_LIMIT} bytes of text in all")
    raw["skills"] = resolved


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
    _resolve_skills(p, raw)
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
