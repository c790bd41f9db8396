"""What every contract module shares: strict models, the token estimate. No I/O."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

# Strings at least this long are shared by content (see `shared`); shorter ones cost little twice.
SHARED_MIN_CHARS = 1024
# sys.intern keeps a string only while something else refers to it (a "mortal" interned string),
# except on a free-threaded build, where interned strings are immortal: there it would never free.
_INTERN = bool(getattr(sys, "_is_gil_enabled", lambda: True)())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def shared(text: str) -> str:
    """One object for equal long texts in this process: a tool's output arrives in the session's
    workflow (its activity result) and again in the model call's context cache (the call's new
    messages); decoded apart, each held a copy for as long as the session is cached. Interned,
    both hold the first copy, which goes when neither refers to it any more."""
    return sys.intern(text) if _INTERN and len(text) >= SHARED_MIN_CHARS else text


# A text field whose long values are `shared`.
SharedText = Annotated[str, AfterValidator(shared)]


# What a token of context is taken to be, in bytes of JSON (estimate_tokens, and its way back to bytes).
BYTES_PER_TOKEN = 4


def estimate_tokens(value: Any) -> int:
    """Tokens of a piece of context, estimated at BYTES_PER_TOKEN bytes of JSON a token (the API's
    usage figures replace the estimate wherever a request has been answered)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False)) // BYTES_PER_TOKEN + 1


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
