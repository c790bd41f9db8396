"""`client.beta.vaults` and their credentials, on this runtime's vault: a credential's secret goes
to the vault (`durable_agents.vault`: the encrypted file the workers read), write-only; its
metadata to the API's database. A session given `vault_ids` gets them where they apply:
- `static_bearer` (`token`, `mcp_server_url`): the `Authorization: Bearer` header of the agent's
  MCP server at that URL (the harness worker adds it; the model never sees it);
- `environment_variable` with `limited` networking and header injection: the credential the
  egress proxy adds for those hosts (the sandbox never holds it).
`mcp_oauth` credentials are refused (OAuth flows are not wired here yet)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from durable_agents.api.http import (
    Gate,
    Param,
    body_of,
    guarded,
    invalid,
    not_found,
    page_of,
    patch_metadata,
    query_bool,
)
from durable_agents.api.store import Record, Store, new_id, now
from durable_agents.contracts import AgentSpec, EgressRule, SecretRef
from durable_agents.vault import FileVault

VAULT, CREDENTIAL = "vault", "credential"


class VaultCreate(Param):
    display_name: str = Field(min_length=1, max_length=256)
    metadata: dict[str, str] | None = None


class VaultUpdate(Param):
    display_name: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, str | None] | None = None


class NetworkingParam(Param):
    type: Literal["unrestricted", "limited"]
    allowed_hosts: list[str] | None = None


class InjectionParam(Param):
    body: bool | None = None
    header: bool | None = None


class AuthParam(Param):
    type: Literal["static_bearer", "environment_variable", "mcp_oauth"]
    token: str | None = None
    mcp_server_url: str | None = None
    secret_name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_value: str | None = None
    networking: NetworkingParam | None = None
    injection_location: InjectionParam | None = None
    access_token: str | None = None
    expires_at: Any = None
    refresh: Any = None


class CredentialCreate(Param):
    auth: AuthParam
    display_name: str | None = None
    metadata: dict[str, str] | None = None


class CredentialUpdate(Param):
    auth: AuthParam | None = None
    display_name: str | None = None
    metadata: dict[str, str | None] | None = None


def _secret_name(credential_id: str) -> str:
    return f"api-{credential_id}".replace("_", "-")


def _public_auth(auth: AuthParam) -> dict[str, Any]:
    """The auth as answers show it: never the secret."""
    if auth.type == "static_bearer":
        if not auth.token or not auth.mcp_server_url:
            raise invalid("auth: a static_bearer credential needs token and mcp_server_url")
        return {"type": "static_bearer", "mcp_server_url": auth.mcp_server_url}
    if auth.type == "environment_variable":
        if not auth.secret_name or auth.secret_value is None or auth.networking is None:
            raise invalid("auth: an environment_variable credential needs secret_name, secret_value and networking")
        networking: dict[str, Any] = {"type": auth.networking.type}
        if auth.networking.type == "limited":
            networking["allowed_hosts"] = auth.networking.allowed_hosts or []
        injection = auth.injection_location or InjectionParam()
        return {
            "type": "environment_variable",
            "secret_name": auth.secret_name,
            "networking": networking,
            "injection_location": {"body": bool(injection.body), "header": bool(injection.header)},
        }
    raise invalid("auth.type: 'mcp_oauth' credentials are not supported yet (use static_bearer)")


def _vault_answer(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "type": "vault",
        "display_name": r.body["display_name"],
        "metadata": r.body.get("metadata") or {},
        "created_at": r.created_at.isoformat(),
        "updated_at": r.body.get("updated_at") or r.created_at.isoformat(),
        "archived_at": r.archived_at.isoformat() if r.archived_at else None,
    }


def _credential_answer(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "type": "vault_credential",
        "vault_id": r.parent,
        "auth": r.body["auth"],
        "display_name": r.body.get("display_name"),
        "metadata": r.body.get("metadata") or {},
        "created_at": r.created_at.isoformat(),
        "updated_at": r.body.get("updated_at") or r.created_at.isoformat(),
        "archived_at": r.archived_at.isoformat() if r.archived_at else None,
    }


class Vaults:
    def __init__(self, store: Store, secrets: FileVault | None = None) -> None:
        self.store = store
        self.secrets = secrets or FileVault()

    async def get(self, vault_id: str) -> Record:
        record = await self.store.get(VAULT, vault_id)
        if record is None:
            raise not_found(f"no vault {vault_id!r}")
        return record

    async def credential(self, vault_id: str, credential_id: str) -> Record:
        record = await self.store.get(CREDENTIAL, credential_id)
        if record is None or record.parent != vault_id:
            raise not_found(f"vault {vault_id!r} has no credential {credential_id!r}")
        return record

    # --- what a session gets from its vaults ----------------------------------------------------

    async def apply(self, agent: AgentSpec, vault_ids: list[str]) -> AgentSpec:
        """The agent with its vaults' credentials where they apply (secrets by name, never values)."""
        servers = list(agent.mcp_servers)
        egress = list(agent.sandbox.egress)
        for i, vault_id in enumerate(vault_ids):
            vault = await self.store.get(VAULT, vault_id)
            if vault is None:
                raise invalid(f"vault_ids.{i}: no vault {vault_id!r}")
            for credential in await self.store.all(CREDENTIAL, parent=vault_id, include_archived=False):
                auth, name = credential.body["auth"], credential.body["secret"]
                if auth["type"] == "static_bearer":
                    servers = [
                        s.model_copy(
                            update={"headers": {**s.headers, "Authorization": SecretRef(secret=name, prefix="Bearer ")}}
                        )
                        if s.url == auth["mcp_server_url"]
                        else s
                        for s in servers
                    ]
                elif auth["networking"]["type"] == "limited" and auth["injection_location"]["header"]:
                    egress += [
                        EgressRule(host=host, secret=SecretRef(secret=name, prefix="Bearer "))
                        for host in auth["networking"]["allowed_hosts"]
                    ]
        sandbox = (
            agent.sandbox.model_copy(update={"egress": egress}) if egress != agent.sandbox.egress else agent.sandbox
        )
        return agent.model_copy(update={"mcp_servers": servers, "sandbox": sandbox})

    # --- vaults ---------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        params = await body_of(request, VaultCreate)
        record = await self.store.put(
            VAULT, new_id("vlt"), {"display_name": params.display_name, "metadata": params.metadata or {}}
        )
        return JSONResponse(_vault_answer(record))

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(_vault_answer(await self.get(request.path_params["vault_id"])))

    async def update(self, request: Request) -> Response:
        record = await self.get(request.path_params["vault_id"])
        params = await body_of(request, VaultUpdate)
        given = params.model_dump(exclude_unset=True)
        body = dict(record.body)
        if params.display_name is not None:
            body["display_name"] = params.display_name
        if "metadata" in given:
            body["metadata"] = patch_metadata(body.get("metadata") or {}, params.metadata)
        body["updated_at"] = now().isoformat()
        await self.store.replace(VAULT, record.id, body)
        return JSONResponse(_vault_answer(await self.get(record.id)))

    async def list(self, request: Request) -> Response:
        include = query_bool(request, "include_archived")
        return page_of(request, [_vault_answer(r) for r in await self.store.all(VAULT, include_archived=include)])

    async def archive(self, request: Request) -> Response:
        record = await self.get(request.path_params["vault_id"])
        await self.store.archive(VAULT, record.id)
        return JSONResponse(_vault_answer(await self.get(record.id)))

    async def delete(self, request: Request) -> Response:
        record = await self.get(request.path_params["vault_id"])
        for credential in await self.store.all(CREDENTIAL, parent=record.id):
            self.secrets.delete(credential.body["secret"])
            await self.store.remove(CREDENTIAL, credential.id)
        await self.store.remove(VAULT, record.id)
        return JSONResponse({"id": record.id, "type": "vault_deleted"})

    # --- credentials ----------------------------------------------------------------------------

    async def create_credential(self, request: Request) -> Response:
        vault = await self.get(request.path_params["vault_id"])
        params = await body_of(request, CredentialCreate)
        public = _public_auth(params.auth)
        credential_id = new_id("vcrd")
        secret = _secret_name(credential_id)
        value = params.auth.token if params.auth.type == "static_bearer" else params.auth.secret_value
        self.secrets.set(secret, value or "")
        body = {
            "auth": public,
            "secret": secret,
            "display_name": params.display_name,
            "metadata": params.metadata or {},
        }
        record = await self.store.put(CREDENTIAL, credential_id, body, parent=vault.id)
        return JSONResponse(_credential_answer(record))

    async def retrieve_credential(self, request: Request) -> Response:
        record = await self.credential(request.path_params["vault_id"], request.path_params["credential_id"])
        return JSONResponse(_credential_answer(record))

    async def update_credential(self, request: Request) -> Response:
        record = await self.credential(request.path_params["vault_id"], request.path_params["credential_id"])
        params = await body_of(request, CredentialUpdate)
        given = params.model_dump(exclude_unset=True)
        body = dict(record.body)
        if params.auth is not None:
            if params.auth.type != body["auth"]["type"]:
                raise invalid(f"auth.type: a {body['auth']['type']} credential cannot become {params.auth.type}")
            value = params.auth.token if params.auth.type == "static_bearer" else params.auth.secret_value
            if value is not None:
                self.secrets.set(body["secret"], value)
            if params.auth.type == "environment_variable" and params.auth.networking is not None:
                merged = {**body["auth"], "networking": _public_auth(
                    params.auth.model_copy(update={"secret_name": body["auth"]["secret_name"], "secret_value": ""})
                )["networking"]}  # fmt: skip
                body["auth"] = merged
        if "display_name" in given:
            body["display_name"] = params.display_name
        if "metadata" in given:
            body["metadata"] = patch_metadata(body.get("metadata") or {}, params.metadata)
        body["updated_at"] = now().isoformat()
        await self.store.replace(CREDENTIAL, record.id, body)
        return JSONResponse(_credential_answer(await self.credential(record.parent or "", record.id)))

    async def list_credentials(self, request: Request) -> Response:
        vault = await self.get(request.path_params["vault_id"])
        include = query_bool(request, "include_archived")
        found = await self.store.all(CREDENTIAL, parent=vault.id, include_archived=include)
        return page_of(request, [_credential_answer(r) for r in found])

    async def archive_credential(self, request: Request) -> Response:
        record = await self.credential(request.path_params["vault_id"], request.path_params["credential_id"])
        await self.store.archive(CREDENTIAL, record.id)
        return JSONResponse(_credential_answer(await self.credential(record.parent or "", record.id)))

    async def delete_credential(self, request: Request) -> Response:
        record = await self.credential(request.path_params["vault_id"], request.path_params["credential_id"])
        self.secrets.delete(record.body["secret"])
        await self.store.remove(CREDENTIAL, record.id)
        return JSONResponse({"id": record.id, "type": "vault_credential_deleted"})

    def routes(self, gate: Gate) -> list[Route]:
        one = "/v1/vaults/{vault_id}"
        cred = f"{one}/credentials/{{credential_id}}"
        return [
            Route("/v1/vaults", guarded(gate, self.create), methods=["POST"]),
            Route("/v1/vaults", guarded(gate, self.list), methods=["GET"]),
            Route(one, guarded(gate, self.retrieve), methods=["GET"]),
            Route(one, guarded(gate, self.update), methods=["POST"]),
            Route(one, guarded(gate, self.delete), methods=["DELETE"]),
            Route(f"{one}/archive", guarded(gate, self.archive), methods=["POST"]),
            Route(f"{one}/credentials", guarded(gate, self.create_credential), methods=["POST"]),
            Route(f"{one}/credentials", guarded(gate, self.list_credentials), methods=["GET"]),
            Route(cred, guarded(gate, self.retrieve_credential), methods=["GET"]),
            Route(cred, guarded(gate, self.update_credential), methods=["POST"]),
            Route(cred, guarded(gate, self.delete_credential), methods=["DELETE"]),
            Route(f"{cred}/archive", guarded(gate, self.archive_credential), methods=["POST"]),
        ]
