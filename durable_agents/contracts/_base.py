"""What every contract module shares: strict models, the token estimate. No I/O."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def estimate_tokens(value: Any) -> int:
    """Tokens of a piece of context, estimated at 4 bytes of JSON a token (the API's usage figures
    replace the estimate wherever a request has been answered)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False)) // 4 + 1


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
