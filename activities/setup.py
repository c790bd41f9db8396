"""The `prepare_session` activity (harness side): what a session started by a plain Temporal
client needs before its first turn, asked once and recorded in its history.

- `agent_ref`: the agent by name (or `name@version`) from the agent files this worker was started
  with (`da-worker --agents DIR`, or DA_AGENTS_DIR; default `agents/`). An unknown name is a non-retryable
  `AgentNotFound` that names the known agents.
- search attributes: which of ours the namespace has, so the session sets only those.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity
from temporalio.client import Client

from durable_agents.agent_files import AgentFileError, load_agent
from durable_agents.connection import check_search_attributes
from durable_agents.contracts import (
    PREPARE_SESSION,
    AgentSpec,
    SessionSetup,
    SessionSetupRequest,
    agent_version,
)
from durable_agents.errors import AgentNotFound, translate_errors
from durable_agents.settings import settings


class AgentFiles:
    """Agents by name, read from the YAML files of one folder (read again on each lookup: a file
    added or edited while the worker runs is seen by the next session)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else settings().agents_dir

    def _read(self) -> tuple[dict[str, AgentSpec], dict[str, str]]:
        agents: dict[str, AgentSpec] = {}
        broken: dict[str, str] = {}  # file stem -> why it does not load
        files = sorted([*self.folder.glob("*.yaml"), *self.folder.glob("*.yml")]) if self.folder.is_dir() else []
        for path in files:
            try:
                agent = load_agent(path)
            except AgentFileError as e:
                broken[path.stem] = str(e)
                continue
            agents.setdefault(agent.name, agent)
        return agents, broken

    def resolve(self, ref: str) -> AgentSpec:
        """The agent `ref` names (`name` or `name@version`, the version being the content hash
        `agent_version` prints), or AgentNotFound naming the known ones."""
        name, _, version = ref.partition("@")
        agents, broken = self._read()
        agent = agents.get(name)
        if agent is None:
            if name in broken:
                raise _not_found(f"agent {name!r} does not load: {broken[name]}")
            known = ", ".join(sorted(agents)) or "none"
            where = self.folder.resolve()
            raise _not_found(f"unknown agent {name!r}: the harness worker knows {known} (agent files in {where})")
        if version and not agent_version(agent).startswith(version):
            raise _not_found(
                f"agent {name!r} is at version {agent_version(agent)}, not {version!r} "
                f"(its file in {self.folder.resolve()} has changed)"
            )
        return agent


def _not_found(message: str) -> AgentNotFound:
    return AgentNotFound(message)


class SetupActivities:
    def __init__(self, client: Client, agents: AgentFiles | None = None, register_attributes: bool = True) -> None:
        self._client = client
        self.agents = agents or AgentFiles()
        self._register = register_attributes

    @activity.defn(name=PREPARE_SESSION)
    @translate_errors
    async def prepare_session(self, req: SessionSetupRequest) -> SessionSetup:
        agent = await asyncio.to_thread(self.agents.resolve, req.agent_ref) if req.agent_ref else None
        attributes = None
        if req.check_attributes:
            # The worker said at its start which are missing and how to add them: not again per session.
            attributes = list((await check_search_attributes(self._client, register=self._register)).present)
        return SessionSetup(agent=agent, search_attributes=attributes)
