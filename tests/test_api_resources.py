"""The Managed Agents resources through the official SDK against a real `da serve` (its own data
directory), the dev server, in-process workers and the scripted model: agents and versions,
environments, sessions, vaults and credentials, deployments; authentication, rate limits, bad
input for each resource, and state that survives a restart of the server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from temporalio.client import Client

from durable_agents.api.store import Store
from durable_agents.client import start_agent_session
from durable_agents.testing.scripted_model import ScriptedModelServer, Step, ToolUse
from durable_agents.vault import FileVault
from tests.helpers import DA, ROOT, add_scenario, coder, free_port, serve
from tests.helpers.postgres import postgres_server
from tests.helpers.scenarios import requests_holding

pytestmark = pytest.mark.usefixtures("workers")
KEY = "resources-test-key"
TOOLSET = [{"type": "agent_toolset_20260401"}]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-resources")


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"DA_API_KEY": KEY, "DA_DATA_DIR": str(data_dir), **extra}


@pytest.fixture(scope="module")
def api_url(address: str, data_dir: Path, port: int) -> Iterator[str]:
    with serve(address, port, server_env(data_dir)) as url:
        yield url


@pytest.fixture
async def sdk(api_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=api_url, api_key=KEY, max_retries=0)
    yield client
    await client.close()  # its connections (unclosed, the collector finds them outside any loop)


async def test_authentication_and_keys(api_url: str, data_dir: Path) -> None:
    for key in ("wrong-key", ""):
        bad = anthropic.AsyncAnthropic(base_url=api_url, api_key=key or "x", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await bad.beta.agents.list()
        assert refused.value.type == "authentication_error"
    env = {**os.environ, "DA_DATA_DIR": str(data_dir)}
    made = subprocess.run([str(DA), "api-key", "create", "ci"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("da-") and key not in (data_dir / "api.db").read_bytes().decode(errors="ignore")
    second = anthropic.AsyncAnthropic(base_url=api_url, api_key=key, max_retries=0)
    await second.beta.agents.list()  # a made key works, sent as Authorization: Bearer
    key_id = made.stderr.split()[0]
    revoke = subprocess.run([str(DA), "api-key", "revoke", key_id], cwd=ROOT, env=env, capture_output=True, text=True)
    assert revoke.returncode == 0, revoke.stderr
    with pytest.raises(anthropic.AuthenticationError, match="invalid API key"):
        await second.beta.agents.list()


async def test_agents_are_versioned_and_refuse_what_this_runtime_cannot_run(
    scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    agents = sdk.beta.agents
    agent = await agents.create(name="coder bot", model="claude-sonnet-5-5", system="Be brief.", tools=TOOLSET)
    assert agent.version == 1 and agent.model.id == "claude-sonnet-5-5" and agent.type == "agent"
    configs = {c.name: c for c in agent.tools[0].configs}
    assert configs["bash"].enabled and configs["read"].enabled and configs["glob"].enabled
    assert configs["web_search"].enabled is False  # no search backend on this server: shown off
    v2 = await agents.update(agent.id, version=1, system="Be very brief.", metadata={"team": "a"})
    assert v2.version == 2 and v2.system == "Be very brief." and v2.metadata == {"team": "a"}
    with pytest.raises(anthropic.ConflictError, match="at version 2, not 1"):
        await agents.update(agent.id, version=1, system="stale")
    assert (await agents.retrieve(agent.id, version=1)).system == "Be brief."
    assert (await agents.retrieve(agent.id)).version == 2
    versions = [v.version async for v in agents.versions.list(agent.id)]
    assert versions == [2, 1]
    asked = [
        {"type": "agent_toolset_20260401", "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}]}
    ]
    careful = await agents.create(name="careful", model={"id": "claude-sonnet-5-5"}, tools=asked)  # type: ignore[list-item]
    assert {c.name: c.permission_policy.type for c in careful.tools[0].configs}["bash"] == "always_ask"
    for _ in range(3):
        await agents.create(name="filler", model="claude-haiku-5-5")
    listed = [a.id async for a in agents.list(limit=2)]  # pages of 2, followed by the SDK
    assert agent.id in listed and careful.id in listed and len(listed) == len(set(listed)) >= 5
    archived = await agents.archive(careful.id)
    assert archived.archived_at is not None
    assert careful.id not in [a.id async for a in agents.list()]
    skilled = await agents.create(name="s", model="m", skills=[{"type": "custom", "skill_id": "python-checks"}])
    assert skilled.skills[0].type == "custom" and len(skilled.skills[0].version) == 12
    env = await sdk.beta.environments.create(name="for skills")
    marker = add_scenario(scripted, [Step(text="ok")])
    await answer_of(sdk, skilled.id, env.id, f"check {marker}")
    asked = requests_holding(scripted, marker)[0]
    assert "python-checks" in json.dumps(asked["system"]) and "load_skill" in [t["name"] for t in asked["tools"]]
    search_on = [{"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": True}]}]
    no_server = [{"type": "mcp_toolset", "mcp_server_name": "nope"}]
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"name": "x", "model": "m", "tools": search_on},
            "'web_search' is not offered by this server: no search backend is configured",
        ),
        ({"name": "", "model": "m"}, "name: String should have at least 1 character"),
        ({"name": "x", "model": "m", "tools": [{"type": "mystery"}]}, "tools.0.type"),
        ({"name": "x", "model": "m", "extra_body": {"colour": "red"}}, "colour: unknown field"),
        ({"name": "x", "model": "m", "tools": no_server}, "'nope' is not in mcp_servers"),
        (
            {"name": "x", "model": "m", "skills": [{"type": "custom", "skill_id": "s"}]},
            "skills.0.skill_id: no skill 's'",
        ),
        (
            {"name": "x", "model": "m", "skills": [{"type": "anthropic", "skill_id": "xlsx"}]},
            "skills.0: Anthropic's pre-built skills are not available here",
        ),
        (
            {"name": "x", "model": "m", "skills": [{"type": "custom", "skill_id": "python-checks", "version": "1"}]},
            "skills.0.version: skill 'python-checks' is at version",
        ),
    ]
    before = [a.id async for a in agents.list()]
    for body, message in cases:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await agents.create(**body)
        assert message in refused.value.message, refused.value.message
    assert [a.id async for a in agents.list()] == before, "nothing was created"
    with pytest.raises(anthropic.NotFoundError):
        await agents.retrieve("agent_nope")


async def test_environments_map_onto_sandboxes_and_refuse_what_they_cannot_do(sdk: anthropic.AsyncAnthropic) -> None:
    envs = sdk.beta.environments
    limited = await envs.create(
        name="py", config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["pypi.org"]}}
    )
    assert limited.config.networking.type == "limited" and limited.config.networking.allowed_hosts == ["pypi.org"]
    default = await envs.create(name="plain")
    assert default.config.networking.type == "limited" and default.config.networking.allowed_hosts == []
    updated = await envs.update(limited.id, description="for python", metadata={"k": "v"})
    assert updated.description == "for python" and updated.metadata == {"k": "v"}
    assert (await envs.retrieve(limited.id)).name == "py"
    assert {e.id async for e in envs.list()} >= {limited.id, default.id}
    pkgs = await envs.create(name="pkgs", config={"type": "cloud", "packages": {"pip": ["requests==2.32.3"]}})
    assert pkgs.config.packages.pip == ["requests==2.32.3"] and pkgs.config.packages.apt == []
    with pytest.raises(anthropic.BadRequestError, match="config.packages.pip.0: String should match pattern"):
        await envs.create(name="bad", config={"type": "cloud", "packages": {"pip": ["x; rm -rf /"]}})
    with pytest.raises(anthropic.BadRequestError, match="config.networking.allow_package_managers: package"):
        await envs.create(
            name="bad", config={"type": "cloud", "networking": {"type": "limited", "allow_package_managers": True}}
        )
    with pytest.raises(anthropic.BadRequestError, match="self_hosted"):
        await envs.create(name="mine", config={"type": "self_hosted"})
    await envs.archive(default.id)
    deleted = await envs.delete(default.id)
    assert deleted.type == "environment_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await envs.retrieve(default.id)


async def test_the_issue_example_a_session_through_the_sdk(
    client: Client, scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    marker = add_scenario(
        scripted,
        [
            Step(tool_use=ToolUse(name="write_file", input={"path": "fib.py", "content": "print(1, 1, 2, 3, 5)\n"})),
            Step(tool_use=ToolUse(name="bash", input={"command": "python3 fib.py"})),
            Step(text="It prints: {last_tool_result}"),
        ],
    )
    agent = await sdk.beta.agents.create(name="coder", model="claude-sonnet-5-5", system="…", tools=TOOLSET)
    env = await sdk.beta.environments.create(name="py", config={"type": "cloud", "networking": {"type": "limited"}})
    session = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id, title="fib", metadata={"n": "5"})
    assert session.status == "idle" and session.title == "fib" and session.agent.id == agent.id
    got = []
    async with await sdk.beta.sessions.events.stream(session.id) as stream:
        await sdk.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": f"fib {marker}"}]}]
        )
        async for event in stream:
            got.append(event)
            if event.type == "session.status_idle" and event.stop_reason.type == "end_turn":
                break
    kinds = [e.type for e in got]
    assert kinds[0] == "user.message" and "agent.tool_use" in kinds and "agent.tool_result" in kinds
    assert [e for e in got if e.type == "agent.message"][-1].content[0].text == "It prints: 1 1 2 3 5"
    read = await sdk.beta.sessions.retrieve(session.id)
    assert read.status == "idle" and read.usage.output_tokens and read.metadata == {"n": "5"}
    updated = await sdk.beta.sessions.update(session.id, title="fib 2", metadata={"n": None, "m": "1"})
    assert updated.title == "fib 2" and updated.metadata == {"m": "1"}
    budget = await sdk.beta.sessions.update(
        session.id, budget={"type": "limit", "max_list_cost": {"amount": "5.00", "currency": "USD"}}
    )
    assert budget.budget is not None and budget.budget.max_list_cost.amount == "5.00"
    # A session `da start` made is listed too.
    plain = await start_agent_session(client, coder(), f"plain {marker}")
    listed = {s.id: s async for s in sdk.beta.sessions.list()}
    assert session.id in listed and plain.id in listed
    assert listed[plain.id].agent.name == "coder"
    only_idle = [s.id async for s in sdk.beta.sessions.list(statuses=["terminated"])]
    assert session.id not in only_idle
    archived = await sdk.beta.sessions.archive(session.id)
    assert archived.archived_at is not None
    assert session.id not in [s.id async for s in sdk.beta.sessions.list()]
    deleted = await sdk.beta.sessions.delete(session.id)
    assert deleted.type == "session_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await sdk.beta.sessions.retrieve(session.id)
    await plain.signal("end_session")
    with pytest.raises(anthropic.BadRequestError, match="environment_id: String should have at least 1 character"):
        await sdk.beta.sessions.create(agent=agent.id, environment_id="")
    with pytest.raises(anthropic.NotFoundError, match="no environment"):
        await sdk.beta.sessions.create(agent=agent.id, environment_id="env_nope")


async def answer_of(sdk: anthropic.AsyncAnthropic, agent_id: str, env_id: str, text: str) -> tuple[str, list[Any]]:
    """One user message through the SDK's stream: the last agent.message's text and every event."""
    session = await sdk.beta.sessions.create(agent=agent_id, environment_id=env_id)
    got: list[Any] = []
    async with await sdk.beta.sessions.events.stream(session.id) as stream:
        await sdk.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
        )
        async for event in stream:
            got.append(event)
            if event.type == "session.status_idle" and event.stop_reason.type == "end_turn":
                break
    await sdk.beta.sessions.archive(session.id)
    return [e for e in got if e.type == "agent.message"][-1].content[0].text, got


async def test_environment_packages_are_installed_into_a_derived_image_once(
    scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    """apt and pip packages from the real mirrors, in an image derived from the sandbox image on the
    sandbox host; the second session reuses it; its sandbox is as hardened as any; a package that
    does not exist is a clear tool error at the first provision."""
    import docker

    from durable_agents.sandboxes.packages import REPOSITORY

    probe = "jq --version; python3 -c 'import six; print(\"six\", six.__version__)'; id -u"
    steps = [Step(tool_use=ToolUse(name="bash", input={"command": probe})), Step(text="Got: {last_tool_result}")]
    agent = await sdk.beta.agents.create(name="pkg", model="claude-sonnet-5-5", tools=TOOLSET)
    packages = {"apt": ["jq"], "pip": ["six==1.16.0"]}
    env = await sdk.beta.environments.create(name="pkgs", config={"type": "cloud", "packages": packages})
    answer, _ = await answer_of(sdk, agent.id, env.id, f"probe {add_scenario(scripted, steps)}")
    assert "jq-1." in answer and "six 1.16.0" in answer and answer.rstrip().endswith("1000"), answer
    images = docker.from_env().images.list(name=REPOSITORY)
    made = {i.id: i.attrs["Created"] for i in images}
    assert made, "a derived image exists"
    again, _ = await answer_of(sdk, agent.id, env.id, f"again {add_scenario(scripted, steps)}")
    assert "six 1.16.0" in again
    assert {i.id: i.attrs["Created"] for i in docker.from_env().images.list(name=REPOSITORY)} == made, "reused"

    missing = await sdk.beta.environments.create(
        name="missing", config={"type": "cloud", "packages": {"apt": ["no-such-package-da-test"]}}
    )
    steps = [Step(tool_use=ToolUse(name="bash", input={"command": "true"})), Step(text="Saw: {last_tool_result}")]
    answer, events = await answer_of(sdk, agent.id, missing.id, f"fail {add_scenario(scripted, steps)}")
    result = next(e for e in events if e.type == "agent.tool_result")
    assert result.is_error, result
    assert "environment packages could not be installed: `apt-get install no-such-package-da-test` failed" in answer
    assert "Unable to locate package no-such-package-da-test" in answer, answer


async def test_vaults_keep_secrets_write_only(sdk: anthropic.AsyncAnthropic, data_dir: Path) -> None:
    vault = await sdk.beta.vaults.create(display_name="team", metadata={"a": "1"})
    credential = await sdk.beta.vaults.credentials.create(
        vault.id, auth={"type": "static_bearer", "token": "s3cret-token", "mcp_server_url": "https://mcp.example/mcp"}
    )
    assert credential.auth.type == "static_bearer" and "token" not in credential.auth.model_dump()
    listed = [c async for c in sdk.beta.vaults.credentials.list(vault.id)]
    assert [c.id for c in listed] == [credential.id]
    assert "s3cret-token" not in (data_dir / "api.db").read_bytes().decode(errors="ignore")
    secrets = FileVault(data_dir / "vault.json")
    assert "s3cret-token" in [secrets.get(n) for n in secrets.names()], "the secret went to the vault"
    with pytest.raises(anthropic.BadRequestError, match="mcp_oauth"):
        await sdk.beta.vaults.credentials.create(
            vault.id, auth={"type": "mcp_oauth", "access_token": "t", "mcp_server_url": "https://x"}
        )
    deleted = await sdk.beta.vaults.credentials.delete(credential.id, vault_id=vault.id)
    assert deleted.type == "vault_credential_deleted"
    assert "s3cret-token" not in [secrets.get(n) for n in secrets.names()]
    assert (await sdk.beta.vaults.delete(vault.id)).type == "vault_deleted"


async def test_deployments_run_on_schedules(
    client: Client, scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    marker = add_scenario(scripted, [Step(text="Daily report: all fine.")])
    agent = await sdk.beta.agents.create(name="reporter", model="claude-sonnet-5-5", tools=TOOLSET)
    env = await sdk.beta.environments.create(name="reports")
    deployment = await sdk.beta.deployments.create(
        name="daily",
        agent=agent.id,
        environment_id=env.id,
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": f"Report. {marker}"}]}],
        schedule={"type": "cron", "expression": "0 9 * * 1-5", "timezone": "Europe/Berlin"},
    )
    assert deployment.status == "active" and deployment.schedule is not None
    assert deployment.schedule.upcoming_runs_at, "the schedule says when it runs next"
    paused = await sdk.beta.deployments.pause(deployment.id)
    assert paused.status == "paused"
    assert (await sdk.beta.deployments.unpause(deployment.id)).status == "active"
    run = await sdk.beta.deployments.run(deployment.id)
    assert run.type == "deployment_run" and run.session_id and run.trigger_context.type == "manual"
    result = await asyncio.wait_for(client.get_workflow_handle(run.session_id).result(), 60)
    assert result["answer"] if isinstance(result, dict) else result.answer == "Daily report: all fine."
    runs = [r async for r in sdk.beta.deployment_runs.list(deployment_id=deployment.id)]
    assert [r.id for r in runs] == [run.id]
    with pytest.raises(anthropic.BadRequestError, match="schedule"):
        await sdk.beta.deployments.create(
            name="bad",
            agent=agent.id,
            environment_id=env.id,
            initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "x"}]}],
            schedule={"type": "cron", "expression": "every day", "timezone": "Mars/Olympus"},
        )
    archived = await sdk.beta.deployments.archive(deployment.id)
    assert archived.archived_at is not None


async def test_state_survives_a_restart_and_the_rate_limit_answers_429(address: str, tmp_path: Path) -> None:
    port = free_port()
    with serve(address, port, server_env(tmp_path)) as url:
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
        agent = await sdk.beta.agents.create(name="kept", model="claude-sonnet-5-5")
        env = await sdk.beta.environments.create(name="kept")
    with serve(address, port, server_env(tmp_path, DA_API_RATE_LIMIT="3")) as url:
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
        assert (await sdk.beta.agents.retrieve(agent.id)).name == "kept"
        assert (await sdk.beta.environments.retrieve(env.id)).name == "kept"
        await sdk.beta.agents.list()
        with pytest.raises(anthropic.RateLimitError) as limited:
            await sdk.beta.agents.list()
        assert int(limited.value.response.headers["retry-after"]) > 0


async def test_the_same_code_on_postgresql(address: str, tmp_path: Path) -> None:
    """DA_DATABASE_URL names a PostgreSQL database (Debian's PostgreSQL, a cluster of the test's own):
    agents, versions and keys are kept there across a restart of the server."""
    with postgres_server() as url:
        store = Store(url)
        await store.start()
        await store.start()  # idempotent
        record, key = await store.create_key("pg")
        assert await store.key_id_of(key) == record.id
        await store.close()
        port = free_port()
        env = server_env(tmp_path, DA_DATABASE_URL=url)
        with serve(address, port, env) as api:
            sdk = anthropic.AsyncAnthropic(base_url=api, api_key=key, max_retries=0)
            agent = await sdk.beta.agents.create(name="on pg", model="claude-sonnet-5-5")
            await sdk.beta.agents.update(agent.id, version=1, system="v2")
        with serve(address, port, env) as api:
            sdk = anthropic.AsyncAnthropic(base_url=api, api_key=key, max_retries=0)
            assert [v.version async for v in sdk.beta.agents.versions.list(agent.id)] == [2, 1]
        assert not (tmp_path / "api.db").exists(), "nothing went to the SQLite default"


async def test_fifty_sessions_driven_at_once_through_the_sdk(
    client: Client, scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    marker = add_scenario(scripted, [Step(text="Answer {n}.".replace("{n}", "one"))])
    agent = await sdk.beta.agents.create(name="many", model="claude-sonnet-5-5")
    env = await sdk.beta.environments.create(name="many")
    made: list[str] = []

    async def one(i: int) -> list[str]:
        session = await sdk.beta.sessions.create(agent=agent.id, environment_id=env.id, title=f"s{i}")
        made.append(session.id)
        text = [{"type": "text", "text": f"Go {i}. {marker}"}]
        await sdk.beta.sessions.events.send(session.id, events=[{"type": "user.message", "content": text}])
        for _ in range(300):
            kinds = [e.type async for e in sdk.beta.sessions.events.list(session.id)]
            if "user.message" in kinds and "session.status_idle" in kinds[kinds.index("user.message") :]:
                return kinds
            await asyncio.sleep(0.2)
        raise AssertionError(f"session {i} did not answer")

    done = await asyncio.gather(*(one(i) for i in range(50)))
    for session_id in made:  # they would idle for an hour otherwise
        await client.get_workflow_handle(session_id).signal("end_session")
    assert all("agent.message" in kinds and kinds.count("user.message") == 1 for kinds in done), done[0]


async def test_a_budget_reached_ends_the_session_and_says_so(
    scripted: ScriptedModelServer, sdk: anthropic.AsyncAnthropic
) -> None:
    marker = add_scenario(scripted, [Step(text="Expensive answer.")])
    agent = await sdk.beta.agents.create(name="spender", model="claude-sonnet-5-5")
    env = await sdk.beta.environments.create(name="budget")
    budget = {"type": "limit", "max_list_cost": {"amount": "0.000001", "currency": "USD"}}
    first = [{"type": "user.message", "content": [{"type": "text", "text": f"Spend. {marker}"}]}]
    session = await sdk.beta.sessions.create(
        agent=agent.id,
        environment_id=env.id,
        budget=budget,
        initial_events=first,  # type: ignore[arg-type]
    )
    for _ in range(100):
        kinds = [e async for e in sdk.beta.sessions.events.list(session.id)]
        if kinds and kinds[-1].type == "session.status_terminated":
            break
        await asyncio.sleep(0.2)
    idle = [e for e in kinds if e.type == "session.status_idle"]
    assert idle[-1].stop_reason.type == "budget_reached"
    assert [e for e in kinds if e.type == "agent.message"][0].content[0].text == "Expensive answer."
    assert (await sdk.beta.sessions.retrieve(session.id)).status == "terminated"


async def test_a_session_no_worker_answers_does_not_hold_up_the_list(
    client: Client, sdk: anthropic.AsyncAnthropic
) -> None:
    """Listing reads what Temporal's visibility has, never a query per session: one whose workers
    are gone (its queries would wait) is listed, with its agent's name, at once."""
    stranded = await start_agent_session(client, coder(), "nobody will run this", task_queue="nobody-polls-this")
    try:
        listed = {s.id: s async for s in sdk.with_options(timeout=10).beta.sessions.list()}
        assert listed[stranded.id].agent.name == "coder"
    finally:
        await stranded.terminate()
