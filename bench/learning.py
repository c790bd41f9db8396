"""Skills and outcomes: what they cost and save. Prints a table and writes bench/results/learning.json.

    .venv/bin/python -m bench.learning [--skills 8] [--skill-kb 4] [--turns 6]

A local stack (dev server, scripted model answering at once, workers as processes):
- context per turn: one agent with --skills skills of --skill-kb KB each, listed in the system
  prompt (loaded on demand) and loading one of them, against the same agent with every skill's
  text pasted into its system prompt; --turns `bash true` turns each; the model's input tokens
  per turn (the scripted model counts about 4 characters a token, as the API roughly does);
- outcome grading: an outcome that needs two revisions, then passes: per evaluation, the
  grader's input and output tokens, its list cost at Sonnet prices, and its wall time
  (outcome_evaluation_start → _end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.common import add_scenario, local_stack, report, summary
from durable_agents.client import new_outcome, session_events, start_agent_session
from durable_agents.contracts import AgentSpec, ModelSpec, Skill, Usage
from durable_agents.testing.scripted_model import Step, ToolUse


def skills(n: int, kb: int) -> list[Skill]:
    body = ("Step: check the inputs, run the script, read its output carefully. " * 64)[: kb * 1024]
    return [Skill(name=f"skill-{i}", description=f"How to do task kind {i} well", body=body) for i in range(n)]


async def per_turn_tokens(client: Any, server: Any, agent: AgentSpec, turns: int, load: bool) -> float:
    steps = [Step(tool_use=ToolUse(name="load_skill", input={"name": "skill-0"}))] if load else []
    steps += [Step(tool_use=ToolUse(name="bash", input={"command": "true"})) for _ in range(turns - len(steps) - 1)]
    marker = add_scenario(server, [*steps, Step(text="done")])
    handle = await start_agent_session(client, agent, f"Work {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=300)
    u = result.usage
    return (u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens) / result.turns


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skills", type=int, default=8)
    parser.add_argument("--skill-kb", type=int, default=4)
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    async with local_stack() as (client, server):
        model = ModelSpec(name="claude-sonnet-5-5")
        listed = AgentSpec(name="skilled", model=model, tools=["bash"], skills=skills(args.skills, args.skill_kb))
        pasted_system = "\n\n".join(f"# {s.name}\n{s.body}" for s in listed.skills)
        pasted = AgentSpec(name="pasted", model=model, tools=["bash"], system=pasted_system)
        tokens = {
            "skills listed, none loaded": await per_turn_tokens(client, server, listed, args.turns, load=False),
            "skills listed, one loaded": await per_turn_tokens(client, server, listed, args.turns, load=True),
            "skills pasted into the prompt": await per_turn_tokens(client, server, pasted, args.turns, load=False),
        }
        print(f"\ninput tokens per turn ({args.skills} skills of {args.skill_kb} KB, {args.turns} turns):")
        for name, value in tokens.items():
            print(f"  {name:<32} {value:>9.0f}")
        saved = 1 - tokens["skills listed, one loaded"] / tokens["skills pasted into the prompt"]
        print(f"  saved by loading on demand: {saved:.0%} of the pasted prompt's tokens per turn")
        extra["tokens_per_turn"] = {**tokens, "saved_fraction": round(saved, 3)}

        verdicts = [("needs_revision", "Add tests."), ("needs_revision", "Name them."), ("satisfied", "Good.")]
        task = add_scenario(server, [Step(text="Attempt {n}: fib.py written.", repeat=5)])
        # Added last, matched first: the grader's message holds the task's marker too.
        rubric = add_scenario(server, [Step(text=json.dumps({"result": r, "explanation": e})) for r, e in verdicts])
        outcome = new_outcome(f"Write fib.py {task}", f"- has named tests {rubric}", 5)
        agent = AgentSpec(name="graded", model=model, tools=["bash"])
        started = time.monotonic()
        handle = await start_agent_session(client, agent, outcome.description, outcome=outcome)
        while True:
            events = await session_events(client, handle.id)
            ends = [e for e in events if e.kind == "outcome_evaluation_end"]
            if ends and ends[-1].result == "satisfied":
                break
            if time.monotonic() - started > 120:
                raise TimeoutError("the outcome did not settle")
            await asyncio.sleep(0.1)
        await handle.signal("end_session")
        starts = {e.offset: e for e in events if e.kind == "outcome_evaluation_start"}
        walls = [(e.at - starts[e.started_at].at).total_seconds() for e in ends if e.started_at in starts]
        rows.append(summary("outcome evaluation (grader call + files), wall", walls))
        previous = None
        per_eval = []
        for e in ends:
            u = e.usage
            if previous is not None:  # the event carries the outcome's running total
                u = Usage(**{k: v - getattr(previous, k) for k, v in e.usage.model_dump().items()})
            previous = e.usage
            cost = model.cost(u) or 0.0
            per_eval.append(
                {
                    "iteration": e.iteration,
                    "result": e.result,
                    "input_tokens": u.total_tokens - u.output_tokens,
                    "output_tokens": u.output_tokens,
                    "usd": round(cost, 5),
                }
            )
        print("\ngrader per evaluation:")
        for p in per_eval:
            tokens = f"in {p['input_tokens']:>6}  out {p['output_tokens']:>4}"
            print(f"  iteration {p['iteration']} {p['result']:<15} {tokens}  ${p['usd']:.5f}")
        extra["grading"] = per_eval
    report("learning", rows, extra)


if __name__ == "__main__":
    asyncio.run(main())
