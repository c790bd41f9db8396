"""The Managed Agents API through the official SDK: prints a table and writes bench/results/api.json.

    .venv/bin/python -m bench.api [--sends 30] [--turns 400] [--sessions 50]

A local stack (dev server on SQLite, scripted model answering at once, harness and sandbox
workers as processes) and `da serve` as a process, driven by `anthropic.AsyncAnthropic`:
- send → first streamed event: an idle session's stream is open; `events.send` of a
  user.message, until the stream delivers its first event (the message itself, then the turn);
- `events.list` of a long session (--turns `bash true` tool turns, about 4 events each): every page
  of 1,000, cold (the server's first read) and warm (read again);
- --sessions sessions created, sent a message and answered, all at once.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from typing import Any

import anthropic

from bench.common import add_scenario, local_stack, report, serve_api, summary
from durable_agents.testing.scripted_model import Step, ToolUse

KEY = "bench-key"


async def _idle_after(sdk: anthropic.AsyncAnthropic, session_id: str, sent: int) -> None:
    while True:
        kinds = [e.type async for e in sdk.beta.sessions.events.list(session_id, limit=1000)]
        if kinds.count("user.message") >= sent and kinds[-1] == "session.status_idle":
            return
        await asyncio.sleep(0.05)


async def main(sends: int, turns: int, sessions: int) -> None:
    async with local_stack(warm_pool=0) as (client, server):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        address = client.service_client.config.target_host
        data = tempfile.mkdtemp()
        proc = serve_api(address, port, data, KEY)
        try:
            sdk = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0)
            agent = await sdk.beta.agents.create(name="bench", model="claude-sonnet-5-5", system="Be brief.")
            env = await sdk.beta.environments.create(name="bench")
            rows: list[dict[str, Any]] = []

            # send -> first streamed event
            marker = add_scenario(server, [Step(text="ok", repeat=sends + 1)])
            session = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id)
            firsts, answers = [], []
            for i in range(sends):
                stream = await sdk.beta.sessions.events.stream(session.id)
                await asyncio.sleep(0.3)  # the stream is open and its first read done
                started = time.perf_counter()
                text = [{"type": "text", "text": f"{i} {marker}"}]
                await sdk.beta.sessions.events.send(session.id, events=[{"type": "user.message", "content": text}])
                first = None
                async for event in stream:
                    first = first or time.perf_counter()
                    if event.type == "session.status_idle":
                        answers.append(time.perf_counter() - started)
                        break
                firsts.append((first or time.perf_counter()) - started)
                await stream.close()
            rows += [summary("send -> first streamed event", firsts), summary("send -> idle again (answered)", answers)]

            # events.list of a long session
            # An agent answers a message in at most 100 model calls: messages of 99 tool turns each.
            per_message = 99
            messages = max(1, turns // per_message)
            steps = [
                Step(tool_use=ToolUse(name="bash", input={"command": "true"}), repeat=per_message),
                Step(text="ok"),
            ]
            long_marker = add_scenario(server, steps * messages)
            long = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id)
            for m in range(messages):
                text = [{"type": "text", "text": f"many {m} {long_marker}"}]
                await sdk.beta.sessions.events.send(long.id, events=[{"type": "user.message", "content": text}])
                await _idle_after(sdk, long.id, m + 1)
            proc.terminate()
            proc.wait(timeout=30)
            proc = serve_api(address, port, data, KEY)  # a fresh server process: nothing mapped yet
            cold_started = time.perf_counter()
            listed = [e async for e in sdk.beta.sessions.events.list(long.id, limit=1000)]
            cold = time.perf_counter() - cold_started
            warm_started = time.perf_counter()
            again = [e async for e in sdk.beta.sessions.events.list(long.id, limit=1000)]
            warm = time.perf_counter() - warm_started
            assert [e.id for e in again] == [e.id for e in listed]
            rows += [summary(f"events.list, {len(listed)} events, cold", [cold])]
            rows += [summary(f"events.list, {len(listed)} events, warm", [warm])]

            # many sessions at once
            many_marker = add_scenario(server, [Step(text="hi")])

            async def one(i: int) -> float:
                started = time.perf_counter()
                s = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id, title=f"s{i}")
                text = [{"type": "text", "text": f"{i} {many_marker}"}]
                await sdk.beta.sessions.events.send(s.id, events=[{"type": "user.message", "content": text}])
                await _idle_after(sdk, s.id, 1)
                return time.perf_counter() - started

            all_started = time.perf_counter()
            durations = await asyncio.gather(*(one(i) for i in range(sessions)))
            total = time.perf_counter() - all_started
            rows += [summary(f"{sessions} SDK sessions at once: each, create -> answered", list(durations))]
            rows += [summary(f"{sessions} SDK sessions at once: all answered", [total])]
            report("api", rows, {"sends": sends, "turns": turns, "sessions": sessions, "events_listed": len(listed)})
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=30)
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.sends, args.turns, args.sessions))
