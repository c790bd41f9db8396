"""One error tree, and the one place that turns it into Temporal's `ApplicationError`.

- `DurableAgentsError` is the root of every error this package raises on purpose.
- `UserError`: a problem the user can fix (a bad agent file, an unknown session, a refused
  update): the CLI prints it without a traceback and exits 2; the Python API raises it as is.
- `SandboxError`: what goes wrong with a sandbox (gone, image missing, seeding failed).
- `ModelError`, `SecretMissing`, `AgentNotFound`: what activities raise on the trusted side.
An error that crosses an activity boundary carries an `ErrorType` (the `ApplicationError.type`
workflows read; part of the durable contract: never renamed) and whether retrying can help;
`application_error` is the translation, used by every activity through `translate_errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from functools import wraps
from typing import ClassVar, ParamSpec, TypeVar

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError


class ErrorType(StrEnum):
    """`ApplicationError` types that cross from activities to workflows."""

    SANDBOX_LOST = "SandboxLost"  # the container is gone: provision a new one
    SANDBOX_IMAGE_MISSING = "SandboxImageMissing"
    # A first call's sandbox exists (its handle in the details), but the call must go through `execute`
    # (or the workflow cancelled the activity: the second detail).
    SANDBOX_PROVISIONED = "SandboxProvisioned"
    SEED_FAILED = "SeedFailed"  # the workspace could not be seeded (a git clone failed)
    PACKAGES_FAILED = "PackagesFailed"  # an environment's packages could not be installed
    MODEL_REQUEST_REJECTED = "ModelRequestRejected"  # 4xx other than 408/409/429: retrying cannot help
    MODEL_NOT_CONFIGURED = "ModelNotConfigured"  # no API key on the harness worker
    MODEL_UNAVAILABLE = "ModelUnavailable"  # 429, 5xx, overloaded, a connection lost: retried
    MODEL_FAILED = "ModelError"  # anything else the model call raised
    CONTEXT_TOO_LONG = "ContextTooLong"  # the API's 400 "prompt is too long": compact, then try again
    STALE_CONTEXT = "StaleContext"  # the session moved on while a model call waited: retried
    SECRET_MISSING = "SecretMissing"  # a secret an agent names is in no vault backend of the worker
    AGENT_NOT_FOUND = "AgentNotFound"  # an agent_ref names no agent the harness worker knows


class DurableAgentsError(Exception):
    """The root of this package's errors. `error_type`: the ApplicationError type it becomes when
    it leaves an activity (None: a plain, retryable activity failure)."""

    error_type: ClassVar[ErrorType | None] = None
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UserError(DurableAgentsError):
    """A problem the user can fix; printed without a traceback."""


class SandboxError(DurableAgentsError):
    """Something went wrong with a sandbox."""


class SandboxGone(SandboxError):
    """The container no longer exists or does not run."""

    error_type = ErrorType.SANDBOX_LOST


class SandboxImageMissing(SandboxError, UserError):
    error_type = ErrorType.SANDBOX_IMAGE_MISSING


class SeedFailed(SandboxError):
    error_type = ErrorType.SEED_FAILED


class PackagesFailed(SandboxError, UserError):
    """An environment's packages could not be installed: the same request cannot succeed."""

    error_type = ErrorType.PACKAGES_FAILED


class SecretMissing(UserError):
    """A secret an agent names is in no vault backend of this worker."""

    error_type = ErrorType.SECRET_MISSING


class AgentNotFound(UserError):
    error_type = ErrorType.AGENT_NOT_FOUND


class ModelError(DurableAgentsError):
    """A model call that failed; `error_type` says whether retrying can help."""

    error_type = ErrorType.MODEL_FAILED
    retryable = True


class ModelUnavailable(ModelError):
    error_type = ErrorType.MODEL_UNAVAILABLE


class ModelRejected(ModelError):
    error_type = ErrorType.MODEL_REQUEST_REJECTED
    retryable = False


class ModelNotConfigured(ModelError):
    error_type = ErrorType.MODEL_NOT_CONFIGURED
    retryable = False


class ContextTooLong(ModelRejected):
    error_type = ErrorType.CONTEXT_TOO_LONG


class StaleContext(ModelError):
    error_type = ErrorType.STALE_CONTEXT


def application_error(error: DurableAgentsError) -> ApplicationError:
    """The ApplicationError an activity raises for one of our errors: its type, message, and
    whether Temporal may retry it (and when, where the API said)."""
    return ApplicationError(
        str(error),
        type=error.error_type.value if error.error_type is not None else type(error).__name__,
        non_retryable=not error.retryable,
        next_retry_delay=error.retry_after,
    )


def provisioned_error(handle: BaseModel | None, why: str, cancelled: bool = False) -> ApplicationError:
    """What `provision_and_execute` raises where its first call must not end there: the details are
    the sandbox's handle (a SandboxHandle; None where none was made yet), for the workflow to take the
    call to that host through `execute`, and whether the workflow had cancelled the activity."""
    what = f"sandbox {getattr(handle, 'sandbox_id', '')[:12]} provisioned" if handle is not None else "no sandbox yet"
    return ApplicationError(
        f"{what}; {why}",
        handle.model_dump(mode="json") if handle is not None else None,
        cancelled,
        type=ErrorType.SANDBOX_PROVISIONED.value,
        non_retryable=True,
    )


P = ParamSpec("P")
R = TypeVar("R")


def translate_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap an activity so that our errors leave it as typed ApplicationErrors (the one place
    where that mapping is made); anything else propagates as Temporal reports it."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except DurableAgentsError as e:
            raise application_error(e) from e

    return wrapper


def describe(error: BaseException) -> str:
    """One line for a person: the message, without the exception's class where it is ours."""
    return str(error) if isinstance(error, DurableAgentsError) else f"{type(error).__name__}: {error}"


__all__ = [
    "AgentNotFound",
    "ContextTooLong",
    "DurableAgentsError",
    "ErrorType",
    "ModelError",
    "ModelNotConfigured",
    "ModelRejected",
    "ModelUnavailable",
    "SandboxError",
    "SandboxGone",
    "SandboxImageMissing",
    "SecretMissing",
    "SeedFailed",
    "StaleContext",
    "UserError",
    "application_error",
    "describe",
    "provisioned_error",
    "translate_errors",
]
