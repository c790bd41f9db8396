"""The Temporal Web UI in a real browser: Debian's Chromium, driven by Playwright (the Python
package, pinned in pyproject.toml, launching the system browser), opens a dev server's UI, finds
a session by its AgentName search attribute and sees its summary, its activities' summaries and
its subagent. Screenshots go to tests/output/ (paths printed; `pytest -s` shows them)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from durable_agents.client import start_agent_session
from durable_agents.connection import DEV_SERVER_TUNING, SEARCH_ATTRIBUTES
from durable_agents.contracts import Subagent
from durable_agents.payload_store import data_converter
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from tests.helpers import (
    ROOT,
    TEMPORAL_CLI,
    add_scenario,
    coder,
    free_port,
    running_workers,
    spawn,
    wait_for,
    with_subagents,
)

OUTPUT = ROOT / "tests" / "output"
# How long an expectation waits for the page to show what it expects (a loaded machine is slow).
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
async def ui_server() -> AsyncIterator[tuple[Client, str]]:
    """A dev server of its own with the Web UI on (the shared one runs headless)."""
    if not TEMPORAL_CLI.exists():
        pytest.fail(f"{TEMPORAL_CLI} is missing: run `make setup`")
    port = free_port()
    env = await WorkflowEnvironment.start_local(
        data_converter=data_converter(),
        dev_server_existing_path=str(TEMPORAL_CLI),
        ui=True,
        ui_port=port,
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
        dev_server_extra_args=DEV_SERVER_TUNING,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    async def up() -> bool:
        return await asyncio.to_thread(answers)

    try:
        await wait_for(up, within_s=60, what=f"the Temporal UI on {url}")
        yield env.client, url
    finally:
        await env.shutdown()


async def shoot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"ui-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def panel(page: Page, heading: str) -> Locator:
    """What the User Metadata tab shows under one heading (Summary, Details, Events with Metadata,
    Current Details)."""
    return page.locator(
        f"xpath=//h3[normalize-space()='{heading}']"
        "/ancestor::div[contains(@class, 'surface-information')][1]/following-sibling::*[1]"
    )


def rendered(page: Page, heading: str) -> Locator:
    """The text the UI renders (as Markdown, in an iframe) under a heading."""
    return panel(page, heading).frame_locator("iframe").locator("body")


async def metadata_rows(page: Page) -> list[list[str]]:
    """[kind, summary] of each row of "Events with Metadata" (Activity / Child Workflow ...)."""
    rows = panel(page, "Events with Metadata").locator("div.justify-between")
    return await rows.evaluate_all(
        "rows => rows.map(r => [r.querySelector('p')?.textContent.trim(), r.querySelector('span')?.textContent.trim()])"
    )


async def summaries_in_history(client: Client, workflow_id: str) -> list[list[str]]:
    """[kind, summary] of each activity and child workflow the session started, from its history."""
    kinds = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "Activity",
        EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "Child Workflow",
    }
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        [kinds[e.event_type], json.loads(e.user_metadata.summary.data)] for e in history.events if e.event_type in kinds
    ]


async def open_user_metadata(page: Page, workflow_id: str) -> None:
    await page.get_by_role("tab", name="User Metadata").click()
    await expect(page).to_have_url(re.compile(r"/user-metadata$"))
    await expect(page.get_by_role("heading", name=workflow_id, exact=True)).to_be_visible()


async def test_the_ui_finds_a_session_by_agent_and_shows_its_summaries_and_its_subagent(
    ui_server: tuple[Client, str], browser: Browser, scripted: ScriptedModelServer
) -> None:
    client, url = ui_server
    agent_name = f"ui-{uuid.uuid4().hex[:6]}"
    child = add_scenario(
        scripted,
        [Step(tool_use=ToolUse(name="bash", input={"command": "ls /workspace | wc -l"})), Step(text="0 files")],
    )
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="bash", input={"command": "ls -la /workspace"})),
            Step(tool_use=spawn("helper", f"Count the files.\n{child}")),
            Step(text="The helper counted 0 files."),
        ],
    )
    helper = coder().model_copy(update={"name": "helper"})
    agent = with_subagents(coder(), Subagent(name="helper", description="counts", spec=helper))
    agent = agent.model_copy(update={"name": agent_name})
    async with running_workers(client, scripted):
        handle = await start_agent_session(
            client, agent, f"List the workspace, then have a helper count the files.\n{marker}", one_shot=True
        )
        result = await asyncio.wait_for(handle.result(), timeout=120)
        assert result.status == "done", result
        session_id, child_id = handle.id, f"{handle.id}/sub-1"

        page = await browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            best = await browse_session(page, url, client, agent_name, session_id, child_id)
        except BaseException:
            await shoot(page, "failure")  # what the page showed when an expectation failed
            raise
        finally:
            await page.close()
    print(f"best screenshot: {best}")


async def browse_session(page: Page, url: str, client: Client, agent_name: str, session_id: str, child_id: str) -> Path:
    """Find the session by its agent, check what its pages show; returns the most telling screenshot."""
    summary = f"{agent_name}: List the workspace, then have a helper count the files."
    child_summary = "helper: Count the files."
    # 1. The workflow list, filtered by the search attribute: this session, not its subagent.
    query = urllib.parse.quote(f'AgentName="{agent_name}"')
    await page.goto(f"{url}/namespaces/default/workflows?query={query}")
    await expect(page.get_by_role("link", name=session_id, exact=True)).to_be_visible()
    listed = page.get_by_role("link", name=re.compile(r"^session-"))
    await expect(listed).to_have_count(1)
    await shoot(page, "1-list")

    # 2. The session: its history's timeline labels each activity with its summary.
    await page.get_by_role("link", name=session_id, exact=True).click()
    await expect(page.get_by_role("heading", name=session_id, exact=True)).to_be_visible()
    first_call = "provision_and_execute • provision + bash: ls -la /workspace"  # with its provisioning
    await expect(page.get_by_text(first_call, exact=True)).to_be_visible()
    await expect(page.get_by_text("call_model • model: claude-sonnet-5-5", exact=True).first).to_be_visible()
    await shoot(page, "2-history")

    # 3. User Metadata: the static summary (agent + first line of the task), details, every
    # activity's and the child's summary in the history's order, and the current details.
    await open_user_metadata(page, session_id)
    await expect(rendered(page, "Summary")).to_have_text(summary)
    await expect(rendered(page, "Details")).to_contain_text("model: claude-sonnet-5-5")
    await expect(rendered(page, "Current Details")).to_contain_text("status: done")
    events = panel(page, "Events with Metadata")
    await expect(events.get_by_text(child_summary, exact=True)).to_be_visible()
    rows = await metadata_rows(page)
    assert rows == await summaries_in_history(client, session_id)
    for row in (
        ["Activity", "model: claude-sonnet-5-5"],
        ["Activity", "provision + bash: ls -la /workspace"],
        ["Child Workflow", child_summary],
    ):
        assert row in rows, f"{row} not shown; the UI shows {rows}"
    best = await shoot(page, "3-user-metadata")

    # 4. Relationships: the subagent as a child workflow, and its own page and summaries.
    await page.get_by_role("tab", name="Relationships").click()
    child_link = page.get_by_role("link", name=child_id, exact=True)
    await expect(child_link).to_be_visible()
    await shoot(page, "4-relationships")
    await child_link.click()
    await expect(page.get_by_role("heading", name=child_id, exact=True)).to_be_visible()
    await open_user_metadata(page, child_id)
    await expect(rendered(page, "Summary")).to_have_text(child_summary)
    child_events = panel(page, "Events with Metadata")
    await expect(child_events.get_by_text("provision + bash: ls /workspace | wc -l", exact=True)).to_be_visible()
    await shoot(page, "5-subagent")
    return best
