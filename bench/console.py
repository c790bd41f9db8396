"""What a session page of the console costs to render: prints a table and writes bench/results/console.json.

    .venv/bin/python -m bench.console [--turns 400] [--runs 5]

A local stack (dev server on SQLite, scripted model answering at once, harness and sandbox
workers as processes) and `da serve` as a process. One session through the SDK with --turns
tool turns (text, a tool call the harness refuses at once, its error result: five events each,
no sandbox), about 2,000 events as the API lists them. Then Debian's Chromium (headless, through
Playwright, as the browser tests run it) opens the session's page --runs times, each in a fresh
browser context, and reads the browser's own clock (the performance API):
- first paint: `first-contentful-paint` (the page's shell, before any data);
- first events: the first page of events (1,000) on the page and painted (`console:first-events`);
- events listed: the last page fetched from the API and put on the page (`console:events-listed`);
- conversation rendered: every event on the page, laid out and painted (`console:conversation-rendered`,
  two animation frames after the stream is open and the newest events read again).
All from the navigation's start. The first run is the server's cold read of the session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import tempfile
import time
from typing import Any

import anthropic
from playwright.async_api import async_playwright
from temporalio.client import Client

from bench.common import add_scenario, local_stack, report, serve_api, summary
from durable_agents.session_log import session_state
from durable_agents.testing.scripted_model import Step, ToolUse

KEY = "bench-key"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PER_MESSAGE = 80  # tool turns a user message asks for (an agent answers in at most 100 model calls)
METRICS = """() => {
  const at = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
  return {
    first_paint: at("first-contentful-paint"),
    first_events: at("console:first-events"),
    listed: at("console:events-listed"),
    rendered: at("console:conversation-rendered"),
    events: Number(document.querySelector("main").dataset.rendered),
    elements: document.querySelectorAll("main *").length,
  };
}"""


async def _answered(client: Client, session_id: str, turns: int) -> None:
    """Until the session is idle after `turns` model calls (its state, a query: the API maps nothing meanwhile)."""
    while True:
        state = await session_state(client, session_id)
        if state.turns >= turns and state.status == "idle":
            return
        await asyncio.sleep(0.3)


async def _long_session(client: Client, sdk: anthropic.AsyncAnthropic, server: Any, turns: int) -> tuple[str, int]:
    agent = await sdk.beta.agents.create(name="bench-console", model="claude-sonnet-5-5", system="Be brief.")
    env = await sdk.beta.environments.create(name="bench-console")
    messages = max(1, turns // PER_MESSAGE)
    step = Step(text="Looking at part {n}.", tool_use=ToolUse(name="no_such_tool", input={"part": "{n}"}))
    marker = add_scenario(server, [step.model_copy(update={"repeat": PER_MESSAGE}), Step(text="ok")] * messages)
    session = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id, title="2,000 events")
    for m in range(messages):
        text = [{"type": "text", "text": f"part {m} {marker}"}]
        await sdk.beta.sessions.events.send(session.id, events=[{"type": "user.message", "content": text}])
        await _answered(client, session.id, (m + 1) * (PER_MESSAGE + 1))
    return session.id, len([e async for e in sdk.beta.sessions.events.list(session.id, limit=1000)])


async def main(turns: int, runs: int) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is missing: run `make setup`")
    async with local_stack(warm_pool=0) as (client, server):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = serve_api(client.service_client.config.target_host, port, tempfile.mkdtemp(), KEY)
        try:
            url = f"http://127.0.0.1:{port}"
            sdk = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
            made = time.perf_counter()
            session_id, events = await _long_session(client, sdk, server, turns)
            print(f"session {session_id}: {events} events, made in {time.perf_counter() - made:.1f} s")
            proc.terminate()
            proc.wait(timeout=30)
            proc = serve_api(
                client.service_client.config.target_host, port, tempfile.mkdtemp(), KEY
            )  # nothing read yet
            sdk = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
            got = await _measure(chromium, f"{url}/console/sessions/{session_id}", runs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    for i, g in enumerate(got):
        print(
            f"run {i + 1}: first paint {g['first_paint']:.0f} ms, first events {g['first_events']:.0f} ms, "
            f"events listed {g['listed']:.0f} ms, "
            f"conversation rendered {g['rendered']:.0f} ms ({g['events']} events, {g['elements']} elements)"
        )
    rows = [
        summary("first paint (first-contentful-paint)", [g["first_paint"] / 1000 for g in got]),
        summary("first 1,000 events painted", [g["first_events"] / 1000 for g in got]),
        summary("every event listed from the API and on the page", [g["listed"] / 1000 for g in got]),
        summary("whole conversation rendered (stream open, caught up)", [g["rendered"] / 1000 for g in got]),
        summary("whole conversation rendered, warm server", [g["rendered"] / 1000 for g in got[1:]] or [0.0]),
    ]
    report("console", rows, {"events": got[0]["events"], "runs": got})


async def _measure(chromium: str, page_url: str, runs: int) -> list[dict[str, Any]]:
    got = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for _ in range(runs):
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            await context.add_init_script(f"sessionStorage.setItem('durable-agents.api-key', {json.dumps(KEY)})")
            page = await context.new_page()
            await page.goto(page_url)
            await page.wait_for_function("document.querySelector('main').dataset.rendered", timeout=120_000)
            got.append(await page.evaluate(METRICS))
            await context.close()
        await browser.close()
    return got


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.runs))
