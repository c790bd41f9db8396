"""Reading agent files (YAML) into AgentSpec, with errors that name the file and the field.

Every file is read with a size cap, and YAML with a loader whose aliases may not expand past a
bound: a few hundred bytes of nested aliases ("billion laughs") would otherwise expand to
gigabytes in whatever walks the result (validation, hashing, the session's input).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from durable_agents import web_search
from durable_agents.contracts import WEB_SEARCH, AgentSpec, agent_version
from durable_agents.errors import UserError

__all__ = ["AgentFileError", "agent_version", "load_agent"]


class AgentFileError(UserError, ValueError):
    pass


AGENT_FILE_LIMIT = 1_000_000  # bytes of an agent file (YAML); a longer system prompt goes in a system_file
SYSTEM_FILE_LIMIT = 16_000_000  # bytes of a system_file; the context budget bounds what is sensible
# What one YAML document may expand to: its nodes plus the characters of its scalars, counted as if
# every alias were written out. A file within AGENT_FILE_LIMIT that holds no aliases measures less
# than twice its size (its scalars and separators are in it), so only aliases can reach this.
YAML_EXPANSION_LIMIT = 2 * AGENT_FILE_LIMIT


def _read_text(path: Path, limit: int) -> str:
    """A UTF-8 text file of at most `limit` bytes (read no further), or AgentFileError naming it."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
            info = os.fstat(f.fileno())
    except OSError as e:
        raise AgentFileError(f"{path}: {e.strerror or e}") from None
    if len(data) > limit:
        what = f"{info.st_size:,} bytes" if stat.S_ISREG(info.st_mode) else f"more than {limit:,} bytes"
        raise AgentFileError(f"{path}: {what}, over the limit of {limit:,} for this file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AgentFileError(f"{path}: not a text file (UTF-8): byte {e.start} is {data[e.start]:#04x}") from None


class _ExpansionError(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures a document before constructing it: the size its aliases expand to
    is computed over the node graph (each node once, so the measure costs what the file does), and a
    document over YAML_EXPANSION_LIMIT, or an alias inside its own anchor (a loop), is refused
    before anything is expanded."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node, YAML_EXPANSION_LIMIT)
        return super().construct_document(node)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node, limit: int) -> None:
    size: dict[int, int] = {}  # id(node) -> its expanded size, once known
    open_: set[int] = set()  # nodes whose children are being measured (the path from the root)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            own = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
            total = own + sum(size[id(c)] for c in _children(node))
            if total > limit:
                raise _ExpansionError(f"its aliases expand to more than {limit:,} nodes and characters")
            size[key] = total
        elif key in open_:
            raise _ExpansionError(f"an alias refers to itself (line {node.start_mark.line + 1}): it would never end")
        elif key not in size:
            open_.add(key)
            stack.append((node, True))
            stack += [(c, False) for c in _children(node) if id(c) not in size]


def _yaml(text: str, path: Path, what: str) -> Any:
    """One YAML document, loaded with bounded alias expansion; AgentFileError naming the file."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader
    except _ExpansionError as e:
        raise AgentFileError(f"{path}: {what} is refused: {e}") from None
    except yaml.YAMLError as e:
        raise AgentFileError(f"{path}: {what} is not valid YAML: {e}") from None
    except RecursionError:
        raise AgentFileError(f"{path}: {what} is nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise AgentFileError(f"{path}: {what} holds a value that cannot be read: {e}") from None


def load_agent(path: str | Path) -> AgentSpec:
    """An agent file with its subagents' files resolved into inline specs (so a session's input
    holds the whole definition), or AgentFileError naming the file and field."""
    return _load(Path(path), chain=())


def _load(p: Path, chain: tuple[Path, ...]) -> AgentSpec:
    agent = _parse(p)
    if WEB_SEARCH in agent.tools and not web_search.configured():
        raise AgentFileError(f"{p}: tools: {web_search.NOT_CONFIGURED}")
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


def parse_skill(folder: Path) -> dict[str, Any]:
    manifest = folder / "SKILL.md"
    text = _read_text(manifest, SKILLS_LIMIT)
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n?(.*)$", text, re.DOTALL)
    if not match:
        raise AgentFileError(f"{manifest}: expected front-matter between '---' lines (name, description)")
    front = _yaml(match.group(1), manifest, "the front-matter") or {}
    if not isinstance(front, dict) or not front.get("name") or not front.get("description"):
        raise AgentFileError(f"{manifest}: front-matter needs name and description")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path != manifest:
            try:
                files[str(path.relative_to(folder))] = _read_text(path, SKILLS_LIMIT)
            except AgentFileError as e:
                raise AgentFileError(f"{e} (skills may hold text files only, {SKILLS_LIMIT:,} bytes in all)") from None
    return {"name": front["name"], "description": front["description"], "body": match.group(2), "files": files}


def _resolve_skills(p: Path, raw: dict[str, Any]) -> None:
    entries = raw.get("skills")
    if isinstance(entries, dict):  # {learn: true, folders: [...]}: save_skill, and these skills
        unknown = set(entries) - {"learn", "folders"}
        if unknown:
            raise AgentFileError(f"{p}: skills.{sorted(unknown)[0]}: unknown field (learn, folders)")
        if not isinstance(entries.get("learn", False), bool):
            raise AgentFileError(f"{p}: skills.learn: true or false")
        raw["learn_skills"] = entries.get("learn", False)
        entries = entries.get("folders") or []
    if entries is None:
        return
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list):
        raise AgentFileError(f"{p}: skills: a folder, a list of folders, or {{learn: true, folders: [...]}}")
    resolved: list[Any] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            resolved.append(entry)
            continue
        folder = p.parent / entry
        if (folder / "SKILL.md").is_file():
            resolved.append(parse_skill(folder))
        elif folder.is_dir():  # a folder of skill folders
            resolved += [parse_skill(sub) for sub in sorted(folder.iterdir()) if (sub / "SKILL.md").is_file()]
        else:
            raise AgentFileError(f"{p}: skills.{i}: {entry}: no such folder")
    if (
        sum(len(s["body"]) + sum(len(v) for v in s["files"].values()) for s in resolved if isinstance(s, dict))
        > SKILLS_LIMIT
    ):
        raise AgentFileError(f"{p}: skills: more than {SKILLS_LIMIT} bytes of text in all")
    raw["skills"] = resolved


def _resolve_system_file(p: Path, raw: dict[str, Any]) -> None:
    """The system_file's text as `system` (the session carries the text itself), before validation:
    the context budget counts it."""
    name = raw.get("system_file")
    if not isinstance(name, str):
        return  # absent, or wrong: validation says so
    if raw.get("system"):
        raise AgentFileError(f"{p}: system_file: give system or system_file, not both")
    try:
        raw["system"] = _read_text(p.parent / name, SYSTEM_FILE_LIMIT)
    except AgentFileError as e:
        problem = str(e).removeprefix(f"{p.parent / name}: ")
        raise AgentFileError(f"{p}: system_file: {name}: {problem}") from None
    del raw["system_file"]


def _resolve_rubric_file(p: Path, raw: dict[str, Any]) -> None:
    """`outcome.rubric_file`'s text as `outcome.rubric`."""
    outcome = raw.get("outcome")
    if not isinstance(outcome, dict) or not isinstance(outcome.get("rubric_file"), str):
        return
    name = outcome.pop("rubric_file")
    if outcome.get("rubric"):
        raise AgentFileError(f"{p}: outcome.rubric_file: give rubric or rubric_file, not both")
    try:
        outcome["rubric"] = _read_text(p.parent / name, SYSTEM_FILE_LIMIT)
    except AgentFileError as e:
        problem = str(e).removeprefix(f"{p.parent / name}: ")
        raise AgentFileError(f"{p}: outcome.rubric_file: {name}: {problem}") from None


def _parse(p: Path) -> AgentSpec:
    if not p.exists() and not p.is_symlink():
        raise AgentFileError(f"{p}: no such agent file")
    if p.is_dir():
        raise AgentFileError(f"{p}: is a directory, not an agent file")
    raw = _yaml(_read_text(p, AGENT_FILE_LIMIT), p, "the file")
    if not isinstance(raw, dict):
        raise AgentFileError(f"{p}: expected a mapping of fields (name, model, system, tools, ...)")
    _resolve_system_file(p, raw)
    _resolve_rubric_file(p, raw)
    _resolve_skills(p, raw)
    try:
        return AgentSpec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(part) for part in err["loc"])
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            lines.append(f"{p}: {field}: {message}" if field else f"{p}: {message.removeprefix('Value error, ')}")
        raise AgentFileError("\n".join(lines)) from None
