"""Outcomes: when the agent ends its turn on an outcome's work, a grader (a separate model call in
its own conversation, with the rubric, the description, the answer and the workspace files the
answer names) returns `satisfied`, `needs_revision` (its feedback goes back to the agent as the
next message) or `failed`; after `max_iterations` cycles the result is `max_iterations_reached`.
The grader's usage counts against the session's budget; an interrupt stops the loop
(`interrupted`).

The grader keeps one conversation per outcome (its earlier verdicts as its own turns), so a
later cycle sees what it asked for before. Its calls go through `call_model` under a context key
of their own (`<session id>:grader:<outcome id>`), with no live deltas (they are not the agent's).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agents.contracts import (
        CALL_MODEL,
        RECORD_SKILL_RESULTS,
        ModelRequest,
        ModelTurn,
        OutcomeState,
        SkillResults,
        ToolCall,
        chain_digest,
        context_root,
    )
    from durable_agents.workflows.core import Session
    from durable_agents.workflows.failures import failure_message
    from durable_agents.workflows.harness import text_of
    from durable_agents.workflows.model_calls import MODEL_RETRY
    from durable_agents.workflows.sandbox import Sandbox

GRADER_SYSTEM = (
    "You grade an AI agent's work against a rubric. You are given the task description, the rubric, "
    "the agent's final answer and the contents of the workspace files the answer names. Judge only "
    "against the rubric. Answer with one JSON object and nothing else: "
    '{"result": "satisfied" | "needs_revision" | "failed", "explanation": "..."}. '
    "`satisfied`: every criterion is met. `needs_revision`: say exactly which criteria are not met and "
    "what to change (the agent reads this as its next instruction). `failed`: the rubric cannot apply "
    "to this work at all."
)
GRADER_MAX_TOKENS = 2048
FILES_CAP = 60_000  # bytes of workspace files shown to the grader per cycle
FILE_CAP = 20_000
_PATH = re.compile(r"(?<![\w/.-])((?:/workspace/)?[\w.-]+(?:/[\w.-]+)*\.[A-Za-z0-9]{1,8})(?![\w/-])")
_VERDICTS = ("needs_revision", "satisfied", "failed")


def named_paths(answer: str, limit: int = 10) -> list[str]:
    """Workspace files an answer names (`fib.py`, `/workspace/out/report.md`), in order, at most `limit`."""
    found: list[str] = []
    for match in _PATH.finditer(answer):
        path = match.group(1).removeprefix("/workspace/")
        if ".." not in path.split("/") and path not in found and not re.fullmatch(r"[\d.]+", path):
            found.append(path)
    return found[:limit]


def files_script(paths: list[str]) -> str:
    quoted = " ".join(shlex.quote(p) for p in paths)
    return (
        f'total=0; for f in {quoted}; do [ -f "$f" ] || continue; '
        f'[ "$total" -ge {FILES_CAP} ] && break; echo "=== $f"; head -c {FILE_CAP} "$f"; echo; '
        'total=$((total + $(stat -c %s "$f"))); done'
    )


def grading_message(state: OutcomeState, answer: str, files: str) -> dict[str, Any]:
    o = state.outcome
    parts = [
        f"Evaluation {state.iteration + 1} of at most {o.max_iterations}.",
        f"<task_description>\n{o.description}\n</task_description>",
        f"<rubric>\n{o.rubric}\n</rubric>",
        f"<agent_answer>\n{answer or '(the agent gave no text)'}\n</agent_answer>",
        f"<workspace_files>\n{files or '(none named, or no workspace)'}\n</workspace_files>",
    ]
    return {"role": "user", "content": [{"type": "text", "text": "\n\n".join(parts)}]}


def parse_verdict(text: str) -> tuple[str, str]:
    """The grader's result and explanation: its JSON object, or else the first verdict word it
    uses; an answer with neither is `needs_revision` with the grader's text as the feedback."""
    for match in re.finditer(r"\{.*\}", text, re.DOTALL):
        try:
            data = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("result") in _VERDICTS:
            return str(data["result"]), str(data.get("explanation") or "").strip()
    words = [(text.find(v), v) for v in _VERDICTS if v in text]
    if words:
        return min(words)[1], text.strip()
    return "needs_revision", text.strip() or "The grader gave no verdict."


def revision_message(state: OutcomeState) -> str:
    return (
        f"A grader checked your work against the rubric and asks for a revision "
        f"(evaluation {state.iteration} of at most {state.outcome.max_iterations}):\n\n{state.explanation}"
    )


class Outcomes:
    def __init__(self, session: Session, sandbox: Sandbox) -> None:
        self.session = session
        self.sandbox = sandbox

    @property
    def active(self) -> OutcomeState | None:
        outcomes = self.session.state.outcomes
        if outcomes and outcomes[-1].result in ("running", "evaluating"):
            return outcomes[-1]
        return None

    def define(self, state: OutcomeState) -> None:
        """A new outcome supersedes one still open (it ends `interrupted`)."""
        if self.active is not None:
            self.finish(self.active, "interrupted", "a new outcome was defined", None)
        self.session.state.outcomes.append(state)

    async def evaluate(self, answer: str) -> bool:
        """Grade the answer the agent just ended its turn with; True: revise (the feedback is the
        next user message in the context), False: the outcome is settled (or there is none)."""
        state = self.active
        if state is None:
            return False
        session = self.session
        state.result = "evaluating"
        start = session.record("outcome_evaluation_start", outcome_id=state.outcome.id, iteration=state.iteration)
        files = await self._files(named_paths(answer), state)
        messages = [*state.grader_messages, grading_message(state, answer, files)]
        grading = asyncio.ensure_future(self._grade(state, messages))
        try:
            while not (await asyncio.wait([grading], timeout=state.outcome.heartbeat_s))[0]:
                session.record("outcome_evaluation_ongoing", outcome_id=state.outcome.id, iteration=state.iteration)
        except BaseException:  # an interrupt: the grader's call goes with it
            grading.cancel()
            raise
        try:
            turn = grading.result()
        except ActivityError as e:
            session.raise_if_interrupted()
            self.finish(state, "failed", f"the grader's model call failed: {failure_message(e)}", start.offset)
            return False
        session.spend(turn.usage, session.agent.model.cost(turn.usage))
        state.usage = state.usage + turn.usage
        state.grader_messages = [*messages, {"role": "assistant", "content": turn.content}]
        result, explanation = parse_verdict(text_of(turn.content))
        if result == "needs_revision" and state.iteration + 1 >= state.outcome.max_iterations:
            result = "max_iterations_reached"
        self.finish(state, result, explanation, start.offset)
        if result != "needs_revision":
            await self._skill_results(result == "satisfied")
            return False
        if session.over_budget():
            return False
        state.iteration += 1
        state.result = "running"
        session.context.add_user_text(revision_message(state), at=session.next_offset - 1)
        return True

    def finish(self, state: OutcomeState, result: str, explanation: str, started_at: int | None) -> None:
        state.result, state.explanation = result, explanation  # type: ignore[assignment]
        if result != "needs_revision":
            state.completed_at = workflow.now()
        self.session.record(
            "outcome_evaluation_end",
            outcome_id=state.outcome.id,
            iteration=state.iteration,
            result=result,
            explanation=explanation,
            usage=state.usage,
            started_at=started_at,
        )

    async def _skill_results(self, succeeded: bool) -> None:
        """The learned skills this session loaded count the outcome (their confidence follows it)."""
        session = self.session
        if not session.state.learned_loaded:
            return
        request = SkillResults(
            agent=session.agent.name, names=session.state.learned_loaded, succeeded=succeeded, session_id=session.id
        )
        try:
            await workflow.execute_activity(
                RECORD_SKILL_RESULTS,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
                summary=f"skill results: {', '.join(request.names)} {'succeeded' if succeeded else 'failed'}",
            )
        except ActivityError as e:
            session.error(f"the learned skills' results were not recorded: {failure_message(e)}")

    def interrupted(self) -> None:
        if (state := self.active) is not None:
            self.finish(state, "interrupted", "interrupted by the user", None)

    async def _files(self, paths: list[str], state: OutcomeState) -> str:
        """The named files' contents, from the session's sandbox if it has one (none is made for it)."""
        if not paths or self.session.state.sandbox.handle is None:
            return ""
        call = ToolCall(
            id=f"grade-{state.outcome.id}-{state.iteration}",
            name="bash",
            input={"command": files_script(paths)},
        )
        result = await self.sandbox.run(call)
        return "" if result.is_error else result.output

    async def _grade(self, state: OutcomeState, messages: list[dict[str, Any]]) -> ModelTurn:
        model = self.session.agent.model
        root = context_root(GRADER_SYSTEM, [])
        digest = root
        for message in messages:
            digest = chain_digest(digest, message)
        request = ModelRequest(
            session_id=f"{self.session.id}:grader:{state.outcome.id}",
            model=model.name,
            max_tokens=min(model.max_tokens, GRADER_MAX_TOKENS),
            prefix_count=0,
            prefix_digest=root,
            new_messages=messages,
            digest=digest,
            system=GRADER_SYSTEM,
            tools=[],
        )
        turn: ModelTurn = await workflow.execute_activity(
            CALL_MODEL,
            request,
            result_type=ModelTurn,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=15),
            retry_policy=MODEL_RETRY,
            summary=f"grade outcome {state.outcome.id} (evaluation {state.iteration + 1})",
        )
        return turn
