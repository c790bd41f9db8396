"""Reading agent files (YAML) into AgentSpec, with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from contracts import AgentSpec


class AgentFileError(ValueError):
    pass


def load_agent(path: str | Path) -> AgentSpec:
    p = Path(path)
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
