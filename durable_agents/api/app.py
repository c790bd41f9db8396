"""The API's routes, assembled: what `da serve` serves under /v1 beside the live relay."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.routing import BaseRoute
from temporalio.client import Client

from durable_agents.api.agents import Agents
from durable_agents.api.deployments import Deployments
from durable_agents.api.environments import Environments
from durable_agents.api.event_routes import SessionEvents
from durable_agents.api.http import Gate
from durable_agents.api.memory_stores import MemoryStores
from durable_agents.api.sessions import Sessions
from durable_agents.api.store import Store
from durable_agents.api.vaults import Vaults
from durable_agents.live.relay import Relay
from durable_agents.settings import Settings, settings


@dataclass
class Api:
    store: Store
    routes: list[BaseRoute]


async def create_api(client: Client, relay: Relay, config: Settings | None = None) -> Api:
    """The /v1 routes on a started store (its schema made where missing)."""
    config = config or settings()
    store = Store(config.database_url)
    await store.start()
    gate = Gate(config, store)
    agents, environments, vaults = Agents(store), Environments(store), Vaults(store)
    sessions = Sessions(client, store, agents, environments, vaults, temporal_ui_url=config.temporal_ui_url)
    deployments = Deployments(client, store, agents, environments, vaults)
    routes: list[BaseRoute] = [
        *SessionEvents(client, relay).routes(gate),
        *agents.routes(gate),
        *environments.routes(gate),
        *sessions.routes(gate),
        *vaults.routes(gate),
        *deployments.routes(gate),
        *MemoryStores(store).routes(gate),
    ]
    return Api(store, routes)
