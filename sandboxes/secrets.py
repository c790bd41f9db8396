"""`check_secrets`, on a sandbox worker: the secrets a session's sandbox will need (egress
credentials, a git token for the workspace's clone) are checked when the session starts, in this
worker's vault, so an unknown name is an error at once rather than at the first tool call."""

from __future__ import annotations

from temporalio import activity

from durable_agents.contracts import CHECK_SECRETS, SecretCheck
from durable_agents.errors import SecretMissing, translate_errors
from durable_agents.vault import load_vault


@activity.defn(name=CHECK_SECRETS)
@translate_errors
async def check_secrets(req: SecretCheck) -> None:
    """Fails, naming them, if secrets the session will need are in none of this worker's vaults."""
    missing = load_vault().missing(req.names)
    if missing:
        listed = ", ".join(f"{n!r}" + (f" ({req.uses[n]})" if n in req.uses else "") for n in missing)
        raise SecretMissing(
            f"unknown secret(s): {listed}; add them with `da vault set NAME` on the sandbox workers' "
            "machine (or DA_SECRET_<NAME>)"
        )
