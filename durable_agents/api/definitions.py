"""What sessions and deployments both start from: an agent version, an environment and vaults,
made into the runtime's agent for one session (its sandbox from the environment, its
credentials from the vaults, its budget)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client

from durable_agents.api.agents import Agents
from durable_agents.api.environments import Environments, sandbox_of
from durable_agents.api.http import invalid
from durable_agents.api.store import Record, Store
from durable_agents.api.vaults import Vaults
from durable_agents.contracts import AgentSpec


@dataclass
class Definitions:
    client: Client
    store: Store
    agents: Agents
    environments: Environments
    vaults: Vaults

    async def session_agent(
        self,
        agent_id: str,
        version: int | None,
        environment_id: str,
        vault_ids: list[str],
        max_cost_usd: float | None = None,
    ) -> tuple[Record, AgentSpec]:
        """The agent version and the spec a session of it runs; archived ones are refused."""
        record, spec = await self.agents.spec(agent_id, version)
        if record.archived_at is not None:
            raise invalid(f"agent: agent {agent_id!r} is archived")
        environment = await self.environments.get(environment_id)
        if environment.archived_at is not None:
            raise invalid(f"environment_id: environment {environment_id!r} is archived")
        spec = spec.model_copy(update={"sandbox": sandbox_of(environment.body["config"], spec.sandbox)})
        if max_cost_usd is not None:
            spec = spec.model_copy(update={"limits": spec.limits.model_copy(update={"max_cost_usd": max_cost_usd})})
        return record, await self.vaults.apply(spec, vault_ids)
