"""What every API route shares: the error body the SDK reads, authentication (`Authorization:
Bearer KEY` or `x-api-key`, against `DA_API_KEY` and the keys `da api-key create` made, stored
hashed), a per-key rate limit, bodies validated into pydantic models with errors that name the
field, and the `page` / `next_page` pagination the SDK follows."""

from __future__ import annotations

import hmac
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from durable_agents.api.store import Store
from durable_agents.errors import UserError
from durable_agents.settings import Settings

log = structlog.get_logger("api")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]


class ApiError(UserError):
    """An answer the SDK reads as an error: HTTP status, error type, and a message naming what is wrong."""

    def __init__(self, status: int, kind: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"type": "error", "error": {"type": self.kind, "message": str(self)}}
        headers = {"request-id": request_id(), **self.headers}
        if self.status == 409:  # the SDK retries 409s unless told not to: a stale version stays stale
            headers["x-should-retry"] = "false"
        return JSONResponse(body, status_code=self.status, headers=headers)


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found_error", message)


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict_error", message)


def request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def problems(error: ValidationError, root: str = "") -> str:
    """A pydantic error as one line naming each field: `tools.0.type: Input should be …`."""
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in (root, *err["loc"]) if p != "")
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where or 'body'}: {message}")
    return "; ".join(parts)


class Param(BaseModel):
    """A request body: unknown fields are refused, naming them."""

    model_config = ConfigDict(extra="forbid")


async def body_of(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise invalid(f"the body is not JSON: {e.msg} at line {e.lineno}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise invalid(problems(e)) from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid(f"{name}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise invalid(f"{name}: {value} is not between {low} and {high}")
    return value


def query_bool(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "false").lower()
    if text not in ("true", "false"):
        raise invalid(f"{name}: {text!r} is not true or false")
    return text == "true"


def query_time(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{name}: {text!r} is not an ISO 8601 time") from None


def page_of(
    request: Request, items: Sequence[dict[str, Any]], default_limit: int = 20, max_limit: int = 100
) -> Response:
    """One page of a list the SDK pages through: `data`, and `next_page` (null on the last)."""
    limit = query_int(request, "limit", default_limit, 1, max_limit)
    start = 0
    if page := request.query_params.get("page"):
        try:
            start = int(page)
        except ValueError:
            raise invalid(f"page: {page!r} is not a page of this list") from None
    chunk = items[start : start + limit]
    after = start + limit if start + limit < len(items) else None
    before = max(0, start - limit) if start > 0 else None
    body = {
        "data": list(chunk),
        "next_page": str(after) if after is not None else None,
        "prev_page": str(before) if before is not None else None,
    }
    return JSONResponse(body)


@dataclass
class Gate:
    """Who may call the API, and how often."""

    settings: Settings
    store: Store
    _windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # key id -> (minute, requests)

    async def admit(self, request: Request) -> str:
        """The caller's key id; ApiError 401 without a valid key, 429 over the rate limit."""
        key = _presented_key(request)
        if key is None:
            raise ApiError(401, "authentication_error", "no API key: send it as Authorization: Bearer KEY or x-api-key")
        who = None
        configured = self.settings.api_key
        if configured is not None and hmac.compare_digest(key, configured.get_secret_value()):
            who = "DA_API_KEY"
        else:
            who = await self.store.key_id_of(key)
        if who is None:
            raise ApiError(401, "authentication_error", "invalid API key (unknown or revoked)")
        self._count(who)
        return who

    def _count(self, who: str) -> None:
        limit = self.settings.api_rate_limit
        if not limit:
            return
        minute = int(time.time() // 60)
        window, used = self._windows.get(who, (minute, 0))
        if window != minute:
            window, used = minute, 0
        if used >= limit:
            wait = math.ceil(60 - time.time() % 60)
            raise ApiError(
                429,
                "rate_limit_error",
                f"rate limit of {limit} requests a minute reached for this key; try again in {wait} s",
                headers={"retry-after": str(wait)},
            )
        self._windows[who] = (window, used + 1)


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return request.headers.get("x-api-key") or None


def patch_metadata(current: dict[str, str], given: dict[str, str | None] | None) -> dict[str, str]:
    """`metadata` in an update: a patch whose null values delete keys; null itself clears it."""
    if given is None:
        return {}
    merged = dict(current)
    for key, value in given.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def resource_routes(gate: Gate, base: str, one: str, **handlers: Handler) -> list[Route]:
    """A resource's usual routes (create, list, retrieve, update, delete, archive), where it has the handler."""
    methods = {
        "create": (base, "POST"),
        "list": (base, "GET"),
        "retrieve": (one, "GET"),
        "update": (one, "POST"),
        "delete": (one, "DELETE"),
        "archive": (f"{one}/archive", "POST"),
    }
    return [Route(methods[name][0], guarded(gate, h), methods=[methods[name][1]]) for name, h in handlers.items()]


def guarded(gate: Gate, handler: Handler) -> Handler:
    """A route handler behind authentication, with our errors answered as the SDK expects."""

    async def run(request: Request) -> Response:
        try:
            request.state.key_id = await gate.admit(request)
            response = await handler(request)
        except ApiError as e:
            return e.response()
        except Exception as e:  # noqa: BLE001 - a bug or an outage: the SDK still gets its error body
            log.exception("api request failed", path=request.url.path)
            return ApiError(500, "api_error", f"{type(e).__name__}: {e}").response()
        response.headers.setdefault("request-id", request_id())
        return response

    return run
