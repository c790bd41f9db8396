"""What sessions and deployments both start from: an agent version, an environment and vaults,
made into the runtime's agent for one session (its sandbox from the environment, its
credentials from the vaults, its budget), and the memory stores its `resources` attach."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.client import Client

from durable_agents.api.agents import Agents
from durable_agents.api.environments import Environments, sandbox_of
from durable_agents.api.http import invalid
from durable_agents.api.memory_stores import KIND as MEMORY_STORE
from durable_agents.api.memory_stores import mount_name
from durable_agents.api.store import Record, Store
from durable_agents.api.vaults import Vaults
from durable_agents.contracts import AgentSpec, MemoryMount


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

    async def memory_resources(self, resources: list[dict[str, Any]]) -> list[tuple[MemoryMount, dict[str, Any]]]:
        """The memory stores a session attaches, each mounted at /mnt/memory/<its name's slug>, and
        the resource as the session shows it (name and description as they were at attach time)."""
        mounts: list[tuple[MemoryMount, dict[str, Any]]] = []
        for i, resource in enumerate(resources):
            if resource.get("type") != "memory_store":
                continue
            store_id = str(resource.get("memory_store_id") or "")
            record = await self.store.get(MEMORY_STORE, store_id)
            if record is None:
                raise invalid(f"resources.{i}.memory_store_id: no memory store {store_id!r}")
            if record.archived_at is not None:
                raise invalid(f"resources.{i}.memory_store_id: memory store {record.id} is archived")
            access = resource.get("access") or "read_write"
            if access not in ("read_write", "read_only"):
                raise invalid(f"resources.{i}.access: {access!r} is not read_write or read_only")
            instructions = str(resource.get("instructions") or "")
            if len(instructions) > 4096:
                raise invalid(f"resources.{i}.instructions: longer than 4,096 characters")
            name = mount_name(record.body["name"])
            if any(m.name == name for m, _ in mounts):
                raise invalid(f"resources.{i}: two memory stores would both be mounted at /mnt/memory/{name}")
            mount = MemoryMount(
                store_id=record.id,
                name=name,
                access=access,  # type: ignore[arg-type]
                description=record.body.get("description") or "",
                instructions=instructions,
            )
            shown = {
                "type": "memory_store",
                "memory_store_id": record.id,
                "mount_path": mount.path,
                "access": access,
                "instructions": instructions or None,
                "name": record.body["name"],
                "description": mount.description,
            }
            mounts.append((mount, shown))
        return mounts
