"""The model wire format: what the workflow sends `call_model` (only what is new, with digests of
the prefix), what it returns, usage, and the compaction instruction. No I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from durable_agents.contracts._base import _Strict

# The instruction that turns a model call into a compaction (a summary of the conversation so far).
COMPACTION_INSTRUCTION = (
    "[compaction] The conversation above is about to be replaced by your summary of it, to keep the "
    "context within its budget. Write that summary now: the user's goals and instructions, what you did "
    "and found (files, commands, results, errors), decisions made, and what remains to be done. Be "
    "complete about facts you will need; be brief about everything else. Answer with the summary only."
)


class Usage(_Strict):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Every token billed: input (uncached, read from and written to the cache) and output."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


def chain_digest(previous: str, message: dict[str, Any]) -> str:
    """Rolling digest of a context: digest(n) = sha256(digest(n-1) + canonical json of message n).

    The workflow and the model activity compute it independently; equal digests mean equal
    contexts, so the activity can trust its cached prefix.
    """
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((previous + canonical).encode()).hexdigest()


def context_root(system: str, tools: list[dict[str, Any]]) -> str:
    return chain_digest("", {"system": system, "tools": tools})


class ModelContext(_Strict):
    """The whole context of a model call. Crosses the wire only on a cache miss (as a query)."""

    system: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]


class ModelRequest(_Strict):
    """What the workflow sends the model activity: only what is new since the previous call.

    The activity keeps the context prefix in a worker-local cache, keyed by session id and
    checked by digest; on a miss it asks the workflow (a query: no history) for the whole context.
    """

    session_id: str
    model: str
    max_tokens: int
    temperature: float | None = None
    prefix_count: int  # messages the activity should already hold
    prefix_digest: str  # digest of system + tools + those messages
    new_messages: list[dict[str, Any]]
    digest: str  # digest after appending new_messages
    # Sent only with the first request of a run (prefix_count == 0): constant per session.
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    # The offset the call's durable event (model_turn, compaction, or the error) will get: it keys
    # the call's live deltas. None from workflows that predate streaming (nothing is published).
    event_offset: int | None = None


class ModelTurn(_Strict):
    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: Usage
    model: str
    request_id: str | None = None
