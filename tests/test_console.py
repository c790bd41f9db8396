"""The web console (`da serve` at /console/) in a real browser: Debian's Chromium driven by
Playwright, against a real `da serve` process, the dev server, the in-process workers (their
model calls publish to this `da serve`, so text streams) and the scripted model. Sign in (a
wrong key is refused), find a session in the list, open it, see its tool call and answer, send
a message and see the reply stream in, approve a waiting call, deny one (the reason reaches the
model), answer a custom tool; agents' versions and their diff; a deployment run from the page.
Screenshots of the list and of a session go to docs/ (the README shows them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from playwright.async_api import Browser, Page, expect
from temporalio.client import Client

from durable_agents.client import session_events, start_agent_session
from durable_agents.contracts import Skill, Subagent
from durable_agents.live.publisher import DeltaPublisher
from durable_agents.testing.scripted_model import ScriptedError, ScriptedModelServer, Step, ToolUse
from tests.helpers import ROOT, Workers, add_scenario, coder, serve, spawn, state_of, wait_for, with_subagents

KEY = "console-test-key"
UI = "http://temporal-ui.example:8233"  # TEMPORAL_UI_URL of this da serve: the session's link goes there
DOCS = ROOT / "docs"
OUTPUT = ROOT / "tests" / "output"
TOOLSET = {"type": "agent_toolset_20260401"}
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
async def console(address: str, workers: Workers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """`da serve` with a key, and the harness worker's model calls publishing their text to it."""
    data = tmp_path_factory.mktemp("console-data")
    # Started and stopped off the event loop: the in-process workers (on it) answer the queries of
    # requests still in flight while `da serve` shuts down.
    server = serve(address, env={"DA_API_KEY": KEY, "DA_DATA_DIR": str(data), "TEMPORAL_UI_URL": UI})
    url = await asyncio.to_thread(server.__enter__)
    publisher, saved = DeltaPublisher(url), workers.model.publisher
    workers.model.publisher = publisher
    try:
        yield url
    finally:
        workers.model.publisher = saved
        await publisher.close()
        await asyncio.to_thread(server.__exit__, None, None, None)


@pytest.fixture
async def sdk(console: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=console, api_key=KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page at 1280 px, already signed in (the key in this tab's sessionStorage, as sign-in leaves it)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(f"sessionStorage.setItem('durable-agents.api-key', {json.dumps(KEY)})")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: print(f"browser console: {m.type}: {m.text}"))
    yield page
    await context.close()
    assert errors == [], f"the page threw: {errors}"


async def environment(sdk: anthropic.AsyncAnthropic) -> str:
    return (await sdk.beta.environments.create(name="console-env")).id


async def idle_after(client: Client, session_id: str, turns: int) -> bool:
    state = await state_of(client, session_id)
    return state.status == "idle" and state.turns >= turns


def tool(page: Page, text: str) -> Any:
    """The tool card whose input shows `text`."""
    return page.locator(".tool").filter(has=page.locator("pre.input", has_text=text))


async def test_sign_in_find_a_session_open_it_and_talk_to_it(
    console: str, browser: Browser, client: Client, scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    reply = " ".join(f"streamed{i}" for i in range(60))
    marker = add_scenario(
        scripted,
        [
            Step(text="Running it.", tool_use=ToolUse(name="bash", input={"command": "echo console-tour"})),
            Step(text="It printed: {last_tool_result}"),
            Step(text=reply, stream_chunk=5, stream_delay_ms=25),
        ],
    )
    agent = await sdk.beta.agents.create(name="console-coder", model="claude-sonnet-5-5", tools=[TOOLSET])  # type: ignore[list-item]
    session = await sdk.beta.sessions.create(
        agent=agent.id,
        environment_id=await environment(sdk),
        title="Console tour",
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": f"Run echo. {marker}"}]}],
    )
    await wait_for(lambda: idle_after(client, session.id, 2), 60, "the session's first answer")

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        # A wrong key is refused (the API's 401), the right one signs in.
        await page.goto(f"{console}/console/")
        await page.get_by_label("API key").fill("not-the-key")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#sign-in-error")).to_contain_text("That key was refused: invalid API key")
        await expect(page.locator("#sessions")).to_have_count(0)
        await page.get_by_label("API key").fill(KEY)
        await page.get_by_role("button", name="Sign in").click()

        # The list: newest first, with the session's agent, status, turns, tokens and cost.
        row = page.locator(f"tr[data-session='{session.id}']")
        await expect(row).to_contain_text("Console tour")
        await expect(row).to_contain_text("console-coder v1")
        await expect(row.locator("td").nth(4)).to_have_text("2")
        await expect(row.locator("td").nth(6)).to_contain_text("$")
        await expect(row.locator(".badge")).to_have_text("idle")
        # Filtered by its agent: only this agent's sessions.
        await page.locator("#filter-agent").select_option(agent.id)
        await expect(page).to_have_url(re.compile(rf"agent_id={agent.id}"))
        await expect(page.locator("#sessions tbody tr")).to_have_count(1)
        await page.locator("#filter-status").select_option("terminated")
        await expect(page.locator("#sessions tbody")).to_contain_text("No sessions.")

        # The session: its tool call with input and output, its answer, its Temporal UI link.
        await page.goto(f"{console}/console/sessions")
        await page.locator(f"tr[data-session='{session.id}'] a").click()
        await expect(page).to_have_url(f"{console}/console/sessions/{session.id}")
        await see_the_first_turn(page)
        link = page.locator("#temporal-link")
        await expect(link).to_have_attribute("href", f"{UI}/namespaces/default/workflows/{session.id}")
        await page.reload()  # a deep link: the same page again, still signed in (this tab's session)
        await see_the_first_turn(page)

        # A message (Shift+Enter is a new line, Enter sends) and the reply, streamed in.
        box = page.get_by_label("Message")
        await box.fill("Tell me more.")
        await box.press("Shift+Enter")
        await box.type("Please.")
        await box.press("Enter")
        await expect(page.locator(".msg.user").last).to_contain_text("Tell me more.\nPlease.")
        streaming = page.locator(".msg.agent.streaming")
        await expect(streaming).to_have_count(1)  # the reply, arriving token by token
        partial = await streaming.locator(".text").text_content()
        assert partial is not None and reply.startswith(partial) and len(partial) < len(reply), partial
        answer = page.locator(".msg.agent").last
        await expect(answer.locator(".text")).to_have_text(reply)
        await expect(streaming).to_have_count(0)
        await expect(page.locator("#turns")).to_have_text("3")
        await expect(box).to_have_value("")
        # The whole page in one frame (a full-page capture would leave the sticky message box mid-page).
        height = await page.evaluate("document.documentElement.scrollHeight")
        await page.set_viewport_size({"width": 1280, "height": height})
        await page.screenshot(path=str(DOCS / "console-session.png"))
        await page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the session page is {width} px wide on a 390 px phone"
        await page.get_by_role("link", name="console-coder v1").click()  # its agent, at that version
        await expect(page.locator("#definition")).to_contain_text('"name": "console-coder"')
    finally:
        await context.close()
    await client.get_workflow_handle(session.id).signal("end_session")


async def see_the_first_turn(page: Page) -> None:
    await expect(page.locator(".msg.user").first).to_contain_text("Run echo.")
    card = tool(page, "echo console-tour")
    await expect(card.locator(".name")).to_have_text("bash")
    await expect(card.locator("pre.result")).to_have_text("console-tour")
    await expect(card.locator(".state")).to_have_text("done")
    await expect(card).not_to_contain_text("null")  # nothing missing is printed as such
    await expect(page.locator(".msg.agent").last).to_contain_text("It printed: console-tour")
    await expect(page.locator("#status .badge")).to_have_text("idle")


async def test_approve_deny_and_answer_a_custom_tool_from_the_page(
    console: str, page: Page, client: Client, scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    reason = "not on my watch, use a copy"
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "echo approved-run"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "rm -rf /workspace"})),
            Step(tool_use=ToolUse(name="lookup", input={"q": "the answer"})),
            Step(text="Done: {last_tool_result}"),
        ],
    )
    asked = {**TOOLSET, "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}]}
    lookup = {"type": "custom", "name": "lookup", "description": "look it up", "input_schema": {"type": "object"}}
    agent = await sdk.beta.agents.create(name="console-careful", model="claude-sonnet-5-5", tools=[asked, lookup])  # type: ignore[list-item]
    first_message = {"type": "user.message", "content": [{"type": "text", "text": f"Careful. {marker}"}]}
    session = await sdk.beta.sessions.create(
        agent=agent.id, environment_id=await environment(sdk), initial_events=[first_message]
    )
    await page.goto(f"{console}/console/sessions/{session.id}")  # a deep link, opened first

    first = tool(page, "echo approved-run")
    await expect(first.locator(".state")).to_have_text("waiting for approval")
    await expect(page.locator("#status .badge")).to_have_text("idle")
    await first.get_by_role("button", name="Allow").click()
    await expect(first.locator("pre.result")).to_have_text("approved-run")  # it ran

    second = tool(page, "rm -rf /workspace")
    await expect(second.locator(".state")).to_have_text("waiting for approval")
    await second.get_by_label("Reason for denying").fill(reason)
    await second.get_by_label("Reason for denying").press("Enter")  # the form's submit: Deny
    await expect(second.locator(".state")).to_have_text(f"denied: {reason}")

    custom = page.locator(".tool").filter(has_text="custom tool")
    await expect(custom.locator(".state")).to_have_text("waiting for its result")
    await custom.get_by_label("Tool result").fill("forty-two")
    await custom.get_by_role("button", name="Send result").click()
    await expect(page.locator(".msg.agent").last).to_contain_text("Done: forty-two")
    await expect(second.locator("pre.result")).to_contain_text(reason)

    # The model was told why: a request carried the reason in the denied call's tool result.
    def denied_results() -> list[str]:
        found = []
        for r in scripted.requests:
            if marker not in json.dumps(r.body.get("messages", [])[:1]):
                continue
            for m in r.body["messages"]:
                for block in m["content"] if isinstance(m["content"], list) else []:
                    if block.get("type") == "tool_result" and reason in json.dumps(block.get("content")):
                        found.append(block["tool_use_id"])
        return found

    await expect(second).to_have_attribute("data-tool-use-id", re.compile(".+"))
    denied_id = await second.get_attribute("data-tool-use-id")
    assert denied_id in denied_results(), "the deny message reached the model"
    await client.get_workflow_handle(session.id).signal("end_session")


async def test_interrupt_from_the_page_stops_the_reply_as_it_streams(
    console: str, page: Page, client: Client, scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    slow = " ".join(f"slow{i}" for i in range(200))
    marker = add_scenario(scripted, [Step(text=slow, stream_chunk=4, stream_delay_ms=50)])
    agent = await sdk.beta.agents.create(name="console-slow", model="claude-sonnet-5-5")
    first_message = {"type": "user.message", "content": [{"type": "text", "text": f"Talk slowly. {marker}"}]}
    session = await sdk.beta.sessions.create(
        agent=agent.id, environment_id=await environment(sdk), initial_events=[first_message]
    )
    await page.goto(f"{console}/console/sessions/{session.id}")
    await expect(page.locator(".msg.agent.streaming")).to_have_count(1)
    await expect(page.locator("#status .badge")).to_have_text("running")
    await page.get_by_role("button", name="Interrupt").click()
    # The reply stops where it was cut; the log says interrupted, not that the model call failed.
    await expect(page.locator("#status .badge")).to_have_text("idle")
    await expect(page.locator(".msg.agent.streaming")).to_have_count(0)
    cut = page.locator(".msg.agent").last
    await expect(cut).to_contain_text("interrupted here")
    shown = await cut.locator(".text").text_content() or ""
    assert slow.startswith(shown) and len(shown) < len(slow), "the reply was cut short"
    state = await state_of(client, session.id)
    assert state.status == "idle" and state.last_answer != slow
    events = await session_events(client, session.id)
    assert [e.kind for e in events].count("interrupted") == 1
    assert not [e for e in events if e.kind == "error" and "model call failed" in e.text], "not a failure"
    await client.get_workflow_handle(session.id).signal("end_session")


async def test_a_long_output_collapsed_with_its_truncation_note_and_an_error(
    console: str, page: Page, client: Client, scripted: ScriptedModelServer
) -> None:
    refusal = ScriptedError(status=400, type="invalid_request_error", message="scripted refusal")
    marker = add_scenario(
        scripted,
        [Step(tool_use=ToolUse(name="bash", input={"command": "seq 1 20000"})), Step(error=refusal)],
    )
    handle = await start_agent_session(client, coder(), f"Count. {marker}")
    await page.goto(f"{console}/console/sessions/{handle.id}")
    card = tool(page, "seq 1 20000")
    output = card.locator("details")
    await expect(output.locator("summary")).to_contain_text("truncated")
    await expect(output).not_to_have_attribute("open", "")  # collapsed until asked
    await expect(card.locator(".truncated")).to_contain_text("[output truncated: 108894 bytes in all")
    await output.locator("summary").click()
    await expect(card.locator("pre.result")).to_contain_text("19999\n20000")
    error = page.locator(".errorbox")
    await expect(error).to_contain_text("model_request_failed_error")
    await expect(error).to_contain_text("scripted refusal")
    await handle.signal("end_session")


async def test_a_compaction_with_its_raw_events_a_subagent_as_a_nested_thread_and_the_pages_of_the_list(
    console: str, page: Page, client: Client, scripted: ScriptedModelServer
) -> None:
    child = add_scenario(
        scripted,
        [Step(tool_use=ToolUse(name="bash", input={"command": "ls /workspace | wc -l"})), Step(text="0 files")],
    )
    reads = [
        Step(tool_use=ToolUse(name="load_skill", input={"name": "tick", "copy_files": i % 2 == 0})) for i in range(10)
    ]
    marker = add_scenario(
        scripted, [*reads, Step(tool_use=spawn("helper", f"Count the files.\n{child}")), Step(text="All read.")]
    )
    bulky = Skill(name="tick", description="returns a lot of text", body="lorem ipsum " * 150)  # ~1,800 bytes a read
    limits = coder().limits.model_copy(update={"context_tokens": 3000, "keep_recent_tokens": 1000})
    agent = with_subagents(coder(), Subagent(name="helper", description="counts", spec=coder()))
    agent = agent.model_copy(update={"limits": limits, "skills": [bulky], "name": "console-reader"})
    handle = await start_agent_session(client, agent, f"Read a lot. {marker}", one_shot=True)
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.status == "done", result

    await page.goto(f"{console}/console/sessions/{handle.id}")
    await expect(page.locator(".msg.agent").last).to_contain_text("All read.")
    await expect(page.locator("#status .badge")).to_have_text("terminated")
    await expect(page.locator("form.composer")).to_be_hidden()  # an ended session takes no messages
    compaction = page.locator(".compaction").first
    await expect(compaction).to_contain_text("Context compacted (summary)")
    # The subagent: a nested thread, its own tool call inside it.
    thread = page.locator("details.thread")
    await expect(thread.locator("summary")).to_contain_text("subagent helper")
    await expect(thread.locator("summary .badge")).to_have_text("done")
    await thread.locator("summary").click()
    nested = thread.locator(".tool").filter(has=page.locator("pre.input", has_text="ls /workspace | wc -l"))
    await expect(nested.locator("pre.result")).to_have_text("0")
    await expect(thread.locator(".msg.agent").last).to_contain_text("0 files")
    # The compaction's raw events: exactly those it covers.
    raw = compaction.locator("a.raw")
    covered = int(re.sub(r"\D", "", await raw.text_content() or ""))
    await raw.click()
    await expect(page).to_have_url(re.compile(r"/events\?page="))
    await expect(page.locator("#raw-events > .card")).to_have_count(covered)
    assert covered > 3

    # The list a session a page: the next page holds the next older one.
    another = add_scenario(scripted, [Step(text="hi")])
    await (await start_agent_session(client, coder(), f"Hello. {another}", one_shot=True)).result()
    await page.goto(f"{console}/console/sessions?limit=1")
    await expect(page.locator("#sessions tbody tr")).to_have_count(1)
    newest = await page.locator("#sessions tbody tr").get_attribute("data-session")
    await page.get_by_role("link", name="Older →").click()
    await expect(page).to_have_url(re.compile(r"page=1"))
    await expect(page.locator("#sessions tbody tr")).to_have_count(1)
    await expect(page.locator("#sessions tbody tr")).not_to_have_attribute("data-session", newest or "")
    await page.get_by_role("link", name="← Newer").click()
    await expect(page.locator("#sessions tbody tr")).to_have_attribute("data-session", newest or "")


async def test_agent_versions_their_diff_and_a_deployment_run_from_the_page(
    console: str, page: Page, client: Client, scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    agent = await sdk.beta.agents.create(name="console-versions", model="claude-sonnet-5-5", system="Be brief.")
    await sdk.beta.agents.update(agent.id, version=1, system="Be very brief.")
    await page.goto(f"{console}/console/agents")
    await page.get_by_role("link", name="console-versions").click()
    await expect(page.locator("#definition")).to_contain_text('"system": "Be very brief."')
    await page.get_by_role("button", name="Show the diff").click()  # v1 → v2, as offered
    await expect(page.locator("#diff .del")).to_have_text('-   "system": "Be brief.",')
    await expect(page.locator("#diff .add")).to_have_text('+   "system": "Be very brief.",')

    marker = add_scenario(scripted, [Step(text="Scheduled hello.")])
    deployment = await sdk.beta.deployments.create(
        name="console-nightly",
        agent=agent.id,
        environment_id=await environment(sdk),
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": f"Hello. {marker}"}]}],
        schedule={"type": "cron", "expression": "0 3 * * *", "timezone": "Europe/Paris"},
    )
    await page.goto(f"{console}/console/deployments")
    row = page.locator(f"tr[data-deployment='{deployment.id}']")
    await expect(row).to_contain_text("0 3 * * * (Europe/Paris)")
    await expect(row).to_contain_text("no runs yet")
    await row.get_by_role("button", name="Pause").click()
    await expect(row.locator(".badge")).to_have_text("paused")
    await row.get_by_role("button", name="Resume").click()
    await expect(row.locator(".badge")).to_have_text("active")
    await row.get_by_role("button", name="Run now").click()  # a session at once, and its page
    await expect(page).to_have_url(re.compile(r"/console/sessions/sesn_"))
    await expect(page.locator(".msg.agent").last).to_contain_text("Scheduled hello.")
    await sdk.beta.deployments.archive(deployment.id)

    # The list with sessions in each state (the screenshot in the README): one answering, one idle.
    idle_marker = add_scenario(scripted, [Step(text="Ready when you are.")])
    busy_marker = add_scenario(scripted, [Step(text="thinking " * 400, stream_chunk=4, stream_delay_ms=50)])
    env_id = await environment(sdk)
    made = []
    for title, marker in (("Waiting for its next message", idle_marker), ("Answering right now", busy_marker)):
        first = {"type": "user.message", "content": [{"type": "text", "text": f"Hi. {marker}"}]}
        made.append(
            await sdk.beta.sessions.create(agent=agent.id, environment_id=env_id, title=title, initial_events=[first])
        )
    await page.goto(f"{console}/console/sessions")
    await expect(page.locator(f"tr[data-session='{made[1].id}'] .badge")).to_have_text("running")
    await expect(page.locator(f"tr[data-session='{made[0].id}'] .badge")).to_have_text("idle")
    for session in made:  # their figures in (other rows' may still be coming, read from older sessions)
        await expect(page.locator(f"tr[data-session='{session.id}'] td", has_text="…")).to_have_count(0)
    with contextlib.suppress(AssertionError):  # for the picture only: every row's figures, if they come soon
        await expect(page.locator("#sessions tbody td", has_text="…")).to_have_count(0, timeout=15_000)
    await page.screenshot(path=str(DOCS / "console-sessions.png"))
    for session in made:
        await client.get_workflow_handle(session.id).signal("end_session")

    # On a phone the tables become cards; a dark system scheme gets dark colours.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{console}/console/agents")
    await expect(page.locator("#agents thead")).to_be_hidden()
    await expect(page.locator("#agents")).to_contain_text("console-versions")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px phone"
    light = await page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    await page.emulate_media(color_scheme="dark")
    dark = await page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert (light, dark) == ("rgb(247, 247, 248)", "rgb(19, 20, 23)")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    await page.goto(f"{console}/console/sessions")
    await expect(page.locator("#sessions tbody tr[data-session]").first).to_be_visible()
    await page.screenshot(path=str(OUTPUT / "console-phone-dark.png"), full_page=True)  # for people to look at


async def test_a_page_outside_the_app_and_the_assets(console: str) -> None:
    async def get(path: str) -> tuple[int, str, str]:
        def fetch() -> tuple[int, str, str]:
            import urllib.request

            with urllib.request.urlopen(f"{console}{path}", timeout=10) as r:
                return r.status, r.headers.get("content-type", ""), r.read().decode()

        return await asyncio.to_thread(fetch)

    status, kind, body = await get("/console/sessions/whatever/deep")
    assert status == 200 and kind.startswith("text/html") and "/console/assets/app.js" in body
    status, kind, body = await get("/console/assets/session.js")
    assert status == 200 and "javascript" in kind and "class Conversation" in body
