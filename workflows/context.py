"""The model's context as deterministic code: the messages the model sees (kept in the session
state's `ContextState`, with a rolling digest per prefix beside them), the requests that carry
only what is new, and the compaction decisions (where to cut, summary or truncation, back-off).
No I/O, no Temporal.
"""

from __future__ import annotations

from typing import Any, Literal

from durable_agents.contracts import (
    COMPACTION_INSTRUCTION,
    ContextState,
    Limits,
    ModelRequest,
    ModelSpec,
    ToolResult,
    chain_digest,
    context_root,
    estimate_tokens,
)


class ContextBuilder:
    """The messages the model sees, with a rolling digest per prefix.

    The messages and counters live in `state` (part of the session state, carried whole across
    continue-as-new); the digests are derived from them. `synced` counts the messages the model
    activity already holds; a request carries only the messages after it, so each message
    crosses into history once, and history grows linearly.
    """

    def __init__(self, system: str, tools: list[dict[str, Any]], state: ContextState | None = None) -> None:
        self.system = system
        self.tools = tools
        self.state = state if state is not None else ContextState()
        if len(self.state.upto) != len(self.state.messages):  # carried by a run that did not know them
            self.state.upto = [-1] * len(self.state.messages)
        self.state.synced = min(self.state.synced, len(self.state.messages))
        self.digests: list[str] = [context_root(system, tools)]  # digests[n]: first n messages
        for message in self.state.messages:
            self.digests.append(chain_digest(self.digests[-1], message))

    # The state's fields, read where the context is used.
    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.state.messages

    @property
    def synced(self) -> int:
        return self.state.synced

    @property
    def grown(self) -> int:
        return self.state.grown

    @property
    def upto(self) -> list[int]:
        return self.state.upto

    def _append(self, message: dict[str, Any], at: int = -1) -> None:
        s = self.state
        s.messages.append(message)
        self.digests.append(chain_digest(self.digests[-1], message))
        s.upto.append(at)
        s.grown += estimate_tokens(message)

    def _replace_last(self, message: dict[str, Any], at: int = -1) -> None:
        s = self.state
        s.grown += estimate_tokens(message) - estimate_tokens(s.messages[-1])
        s.messages[-1] = message
        self.digests[-1] = chain_digest(self.digests[-2], message)
        s.upto[-1] = max(s.upto[-1], at)
        s.synced = min(s.synced, len(s.messages) - 1)

    def _add_user_blocks(self, blocks: list[dict[str, Any]], at: int) -> None:
        # The API wants roles to alternate; a user message after a user message is merged.
        if self.messages and self.messages[-1]["role"] == "user":
            last = self.messages[-1]["content"]
            previous = [{"type": "text", "text": last}] if isinstance(last, str) else list(last)
            self._replace_last({"role": "user", "content": previous + blocks}, at)
        else:
            self._append({"role": "user", "content": blocks}, at)

    def add_user_text(self, text: str, at: int = -1) -> None:
        """A user message; `at`: the offset of its event in the session log."""
        self._add_user_blocks([{"type": "text", "text": text}], at)

    def add_assistant(self, content: list[dict[str, Any]], at: int = -1) -> None:
        self._append({"role": "assistant", "content": content}, at)

    def add_tool_results(self, results: list[ToolResult], at: int = -1) -> None:
        """Tool results; `at`: the offset of the last one's event."""
        self._add_user_blocks(
            [
                {"type": "tool_result", "tool_use_id": r.call_id, "content": r.output, "is_error": r.is_error}
                for r in results
            ],
            at,
        )

    def covered_until(self, cut: int) -> int | None:
        """The newest session event whose content is in messages[:cut] (None where not known)."""
        known = [u for u in self.upto[:cut] if u >= 0]
        return max(known) if known else None

    def request(self, session_id: str, model: ModelSpec) -> ModelRequest:
        return self._request(session_id, model, self.synced, self.messages[self.synced :], self.digests[-1])

    def _request(
        self, session_id: str, model: ModelSpec, prefix: int, new: list[dict[str, Any]], digest: str
    ) -> ModelRequest:
        """The first `prefix` messages (which the activity holds) and the new ones after them."""
        first = prefix == 0
        return ModelRequest(
            session_id=session_id,
            model=model.name,
            max_tokens=model.max_tokens,
            temperature=model.temperature,
            prefix_count=prefix,
            prefix_digest=self.digests[prefix],
            new_messages=new,
            digest=digest,
            system=self.system if first else None,
            tools=self.tools if first else None,
        )

    def model_answered(self, content: list[dict[str, Any]], input_tokens: int | None = None, at: int = -1) -> None:
        """Record the model's answer; the activity appended the same message to its cache.
        input_tokens: what the API counted for the request (it replaces the estimate); at: the
        offset of the turn's event."""
        if input_tokens:
            self.state.measured_tokens, self.state.measured_count = input_tokens, len(self.messages)
        self.add_assistant(content, at)
        self.state.synced = len(self.messages)

    # --- size and compaction --------------------------------------------------------------

    def estimated_tokens(self) -> int:
        """The next request's size: measured where the API told us, estimated for the rest."""
        count = self.state.measured_count
        if count and count <= len(self.messages):
            return self.state.measured_tokens + sum(estimate_tokens(m) for m in self.messages[count:])
        return estimate_tokens([self.system, self.tools, self.messages])

    def compaction_request(self, cut: int, session_id: str, model: ModelSpec) -> ModelRequest:
        """A request that asks the model to summarise messages[:cut]; it shares the prompt-cache prefix
        of the session's requests up to the message before the cut."""
        instruction = {"type": "text", "text": COMPACTION_INSTRUCTION}
        last = self.messages[cut - 1]
        if last["role"] == "user":  # the instruction joins it: roles must alternate
            content = last["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            head, tail = self.messages[: cut - 1], [{**last, "content": [*blocks, instruction]}]
        else:
            head, tail = self.messages[:cut], [{"role": "user", "content": [instruction]}]
        prefix = min(self.synced, len(head))
        new = [*head[prefix:], *tail]
        digest = self.digests[prefix]
        for message in new:
            digest = chain_digest(digest, message)
        return self._request(session_id, model, prefix, new, digest)

    def compact(self, cut: int, lead: list[dict[str, Any]]) -> None:
        """Replace messages[:cut] by `lead` (a summary, or a note of what was left out), which opens
        the first kept user message. The next request starts a new prompt prefix."""
        s = self.state
        kept = s.messages[cut:]
        if kept and kept[0]["role"] == "user":
            content = kept[0]["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            kept = [{"role": "user", "content": lead + blocks}, *kept[1:]]
        else:
            kept = [{"role": "user", "content": lead}, *kept]
        upto = s.upto[cut:] if len(kept) == len(s.messages) - cut else s.upto[cut - 1 :]
        grown = s.grown
        s.messages, s.upto = [], []
        self.digests = [self.digests[0]]
        for message, at in zip(kept, upto, strict=True):
            self._append(message, at)
        s.grown = grown  # what compaction writes is not growth
        s.synced = 0
        s.measured_tokens = s.measured_count = 0


# --- compaction ---------------------------------------------------------------------------------

SUMMARY_HEADER = "[Summary of the earlier conversation, written when the context outgrew its budget]"
TRUNCATION_HEADER = "[The earlier conversation was left out to keep the context within its budget]"


def _has_tool_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def compaction_cut(messages: list[dict[str, Any]], keep_tokens: int) -> int | None:
    """Where to cut the context: messages before the cut are summarised, those from it on are kept
    verbatim. The kept part holds the newest messages that fit in keep_tokens (at least the newest
    exchange) and starts where no tool_result loses its tool_use: at an assistant message, or at a
    user message without tool results. None when there is nothing before the newest exchange."""
    valid = [
        i for i in range(1, len(messages)) if messages[i]["role"] == "assistant" or not _has_tool_results(messages[i])
    ]
    if not valid:
        return None
    kept, cut = 0, None
    sizes = [estimate_tokens(m) for m in messages]
    for i in range(len(messages) - 1, 0, -1):
        kept += sizes[i]
        if i in valid and (kept <= keep_tokens or cut is None):
            cut = i
        if kept > keep_tokens and cut is not None:
            break
    return cut


def summary_blocks(summary: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": f"{SUMMARY_HEADER}\n{summary.strip()}"}]


KEEP_USER_CHARS = 8_000  # what a truncation keeps of the user's words: the first, then the newest


def truncation_blocks(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """What stands where the oldest turns were left out: the note, then the user's own words from
    them (their task first, the newest after it, within KEEP_USER_CHARS), earlier summaries among
    them: the turns go, what was asked stays."""
    said: list[str] = []
    for message in messages:
        if message["role"] != "user":
            continue
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        said += [str(b.get("text", "")) for b in blocks if b.get("type") == "text" and b.get("text")]
    said = [t for t in said if not t.startswith(TRUNCATION_HEADER)]  # an earlier note: this one replaces it
    if said and len(said[0]) > KEEP_USER_CHARS // 2:
        said[0] = said[0][: KEEP_USER_CHARS // 2] + " […]"
    kept: list[str] = []
    room = KEEP_USER_CHARS
    for text in said[:1] + said[:0:-1]:
        if len(text) > room:
            break
        kept.append(text)
        room -= len(text)
    ordered = kept[:1] + kept[:0:-1]
    return [{"type": "text", "text": f"{TRUNCATION_HEADER}\n{note}"}] + [{"type": "text", "text": t} for t in ordered]


CompactionMethod = Literal["summary", "truncation"]


def compaction_method(limits: Limits, failures: int, retry_at: int | None, grown: int) -> CompactionMethod:
    """Summarise (a model call), or leave the oldest turns out (no call)? After a failed summary,
    summarise again only once the context has grown by the share `limits` sets, and never after
    `compaction_max_failures` failures: a summariser that fails is not paid on every turn."""
    if failures >= limits.compaction_max_failures:
        return "truncation"
    if retry_at is not None and grown < retry_at:
        return "truncation"
    return "summary"


def retry_summary_at(limits: Limits, grown: int, context_tokens: int) -> int:
    """After a failed summary of a context of `context_tokens`: the growth at which to try again."""
    return grown + max(1, int(limits.compaction_retry_growth * context_tokens))


def truncation_note(turns_left_out: int, first: int, last: int) -> str:
    """What the model reads where the turns it can no longer see were."""
    return (
        f"Your {turns_left_out} earlier turns (session events {first} to {last}) are not shown here; what the "
        "user said in them follows. Ask the user if you need something else from them."
    )
