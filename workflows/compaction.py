"""Compaction, workflow side: when the context outgrows its budget (or the API says it is too
long), summarise its older part with a model call, or, after a failed summary and until the
context has grown enough to try again, leave the oldest turns out. The events stay as they
are: only what the model sees changes. The decisions are `workflows.context`'s pure functions.
"""

from __future__ import annotations

from temporalio.exceptions import ActivityError

from durable_agents.contracts import estimate_tokens
from durable_agents.workflows import versions
from durable_agents.workflows.context import (
    compaction_cut,
    compaction_method,
    retry_summary_at,
    summary_blocks,
    truncation_blocks,
    truncation_note,
)
from durable_agents.workflows.core import Session
from durable_agents.workflows.failures import failure_message
from durable_agents.workflows.harness import text_of
from durable_agents.workflows.model_calls import ModelCalls

MIN_COMPACTION_TOKENS = 1_000  # a summary of less than this saves nothing


class Compaction:
    def __init__(self, session: Session, model: ModelCalls) -> None:
        self.session = session
        self.model = model

    def over_budget(self) -> bool:
        budget = self.session.agent.limits.context_tokens
        return budget is not None and self.session.context.estimated_tokens() > budget

    async def compact(self, forced: bool = False) -> None:
        """Summarise the older part of the context; keep the newest turns verbatim. forced: the API
        said the context is too long for the model, whatever the estimate."""
        session, context, state = self.session, self.session.context, self.session.state.compaction
        limits = session.agent.limits
        before = context.estimated_tokens()
        # Over the model's window, whatever the budget says: keep at most a quarter of it verbatim.
        keep = min(limits.keep_tokens(), before // 4) if forced else limits.keep_tokens()
        cut = compaction_cut(context.messages, keep)
        if cut is None or estimate_tokens(context.messages[:cut]) < MIN_COMPACTION_TOKENS:
            return  # nothing worth summarising: the newest turns alone are over the budget
        why = "the model's context window" if forced else f"its budget of {limits.context_tokens}"
        reason = f"context ~{before} tokens over {why}"
        if compaction_method(limits, state.failures, state.retry_at, context.grown) == "truncation":
            self._leave_out(cut, reason)
            return
        request = context.compaction_request(cut, session.id, session.agent.model)
        try:
            turn = await self.model.call(request, f"compaction: summarise {cut} of {len(context.messages)} messages")
        except ActivityError as e:
            self._summary_failed(cut, before, reason, f"compaction failed: {failure_message(e)}")
            return
        session.spend(turn.usage, session.agent.model.cost(turn.usage))
        summary = text_of(turn.content)
        if not summary:
            self._summary_failed(cut, before, reason, "compaction failed: the model wrote an empty summary")
            return
        kept = len(context.messages) - cut
        first, last = self._covers(cut)
        context.compact(cut, summary_blocks(summary))
        session.record(
            "compaction",
            text=summary,
            covers=[first, last],
            usage=turn.usage,
            model=turn.model,
            method="summary",
            reason=f"{reason}: {cut} messages summarised, {kept} kept; now ~{context.estimated_tokens()} tokens",
        )
        state.compacted_until = last + 1

    def _covers(self, cut: int) -> tuple[int, int]:
        """The offsets of the events whose content is in messages[:cut]."""
        until = self.session.context.covered_until(cut)
        return (
            self.session.state.compaction.compacted_until,
            until if until is not None else self.session.next_offset - 1,
        )

    def _summary_failed(self, cut: int, before: int, reason: str, problem: str) -> None:
        """Back off (the next summary only once the context has grown) and leave the oldest turns
        out for now."""
        session, state = self.session, self.session.state.compaction
        if not versions.patched(versions.COMPACTION_BACKOFF):
            session.error(f"{problem}; the context stays as it is")
            return
        limits = session.agent.limits
        state.failures += 1
        state.retry_at = retry_summary_at(limits, session.context.grown, before)
        if state.failures >= limits.compaction_max_failures:
            then = f"no more summaries this session ({state.failures} failed)"
        else:
            then = f"the next summary once ~{state.retry_at - session.context.grown} more tokens are added"
        session.error(f"{problem}; the oldest turns are left out instead, {then}")
        self._leave_out(cut, reason)

    def _leave_out(self, cut: int, reason: str) -> None:
        """The deterministic fallback: the oldest turns leave the context (never the log), cut
        where no tool_result loses its tool_use; the user's own words stay."""
        session, context = self.session, self.session.context
        first, last = self._covers(cut)
        kept = len(context.messages) - cut
        shown = sum(1 for m in context.messages[cut:] if m["role"] == "assistant")
        note = truncation_note(session.state.turns - shown, first, last)
        context.compact(cut, truncation_blocks(context.messages[:cut], note))
        session.record(
            "compaction",
            text=note,
            covers=[first, last],
            method="truncation",
            reason=f"{reason}: {cut} messages left out, {kept} kept; now ~{context.estimated_tokens()} tokens",
        )
        session.state.compaction.compacted_until = last + 1
