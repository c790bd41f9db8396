"""Live streaming: pieces of a model call in progress, relayed outside history. No I/O."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from durable_agents.contracts._base import _Strict

DeltaKind = Literal["start", "text", "tool_use", "end"]


class LiveDelta(_Strict):
    """A piece of a model call in progress, relayed outside history (`starter.py serve`).

    `offset` is the offset the call's durable event will get; a retried call (`attempt` + 1)
    starts its text again; `seq` counts a call attempt's deltas from 0. The durable event
    supersedes the deltas: the final turn is recorded once, in history."""

    session: str
    offset: int = Field(ge=0)
    attempt: int = Field(ge=1)
    seq: int = Field(ge=0)
    kind: DeltaKind
    at: float  # when the activity received it from the model API (Unix time)
    index: int | None = None  # text, tool_use: the content block
    text: str | None = None  # text: the new text
    tool_use_id: str | None = None  # tool_use: a tool call begins
    name: str | None = None  # tool_use: the tool
    model: str | None = None  # start
    stop_reason: str | None = None  # end

    @property
    def sse_id(self) -> str:
        return f"{self.offset}.{self.attempt}.{self.seq}"


class LiveBatch(_Strict):
    """What a worker posts to the live relay: deltas of any sessions, in the order received."""

    deltas: list[LiveDelta]
