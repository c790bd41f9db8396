"""web_search's pluggable backend, named by `DA_WEB_SEARCH` on the sandbox workers (and on `da serve`,
which offers the tool only where one is configured):

- `module:factory`: `factory()` returns an object with `search(query, max_results)` (or is itself
  such a callable), sync or async, answering a list of hits: `SearchHit`s or mappings with
  `title`, `url` and `snippet` (or `description` / `content`);
- `http://…` or `https://…`: a service answering `GET URL?q=QUERY&count=N` with JSON, a list of
  hits or `{"results": [...]}`.

The backend runs in the sandbox worker's `execute` activity (trusted side: a search API's key stays
out of the sandbox); the answer is recorded in the sandbox as the call's output, so a retried call
returns it instead of searching again.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from durable_agents.errors import UserError
from durable_agents.settings import settings

__all__ = ["SearchBackend", "SearchHit", "WebSearchError", "configured", "render_hits", "search_backend"]

NOT_CONFIGURED = (
    "web_search is not offered: no search backend is configured (set DA_WEB_SEARCH to module:factory or to a "
    "search service's URL, on the sandbox workers and on `da serve`)"
)


class WebSearchError(UserError, RuntimeError):
    """No backend, a backend that cannot be loaded, or one that failed."""


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str = ""


class SearchBackend(Protocol):
    def search(self, query: str, max_results: int) -> Any: ...


def configured() -> str | None:
    """The configured backend (DA_WEB_SEARCH), or None: then web_search is not offered."""
    return settings().web_search


class UrlBackend:
    """A search service over HTTP: GET URL?q=QUERY&count=N -> JSON hits."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def search(self, query: str, max_results: int) -> Any:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.get(self.url, params={"q": query, "count": max_results})
        if answer.status_code >= 400:
            raise WebSearchError(f"the search service answered HTTP {answer.status_code}: {answer.text[:300]}")
        body = answer.json()
        return body.get("results", []) if isinstance(body, dict) else body


def search_backend(spec: str | None = None) -> SearchBackend:
    """The backend `spec` (default: DA_WEB_SEARCH) names; WebSearchError if none or it cannot load."""
    spec = spec or configured()
    if not spec:
        raise WebSearchError(NOT_CONFIGURED)
    if spec.startswith(("http://", "https://")):
        return UrlBackend(spec)
    module, sep, factory = spec.partition(":")
    if not sep or not module or not factory:
        raise WebSearchError(f"DA_WEB_SEARCH={spec!r}: give module:factory or an http(s) URL")
    try:
        made = getattr(importlib.import_module(module), factory)()
    except (ImportError, AttributeError) as e:
        raise WebSearchError(f"DA_WEB_SEARCH={spec!r} cannot be loaded: {e}") from e
    if hasattr(made, "search"):
        return made  # type: ignore[no-any-return]
    if callable(made):
        return _Callable(made)
    raise WebSearchError(f"DA_WEB_SEARCH={spec!r}: the factory made neither a backend nor a callable")


class _Callable:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def search(self, query: str, max_results: int) -> Any:
        return self.fn(query, max_results)


async def run_search(backend: SearchBackend, query: str, max_results: int) -> list[SearchHit]:
    found = backend.search(query, max_results)
    if inspect.isawaitable(found):
        found = await found
    return [_hit(h) for h in list(found)[:max_results]]


def _hit(raw: Any) -> SearchHit:
    if isinstance(raw, SearchHit):
        return raw
    if isinstance(raw, Mapping):
        snippet = raw.get("snippet") or raw.get("description") or raw.get("content") or ""
        return SearchHit(
            title=str(raw.get("title") or raw.get("url") or ""), url=str(raw.get("url") or ""), snippet=str(snippet)
        )
    raise WebSearchError(f"the search backend answered a hit of type {type(raw).__name__} (a mapping or SearchHit)")


def render_hits(query: str, hits: list[SearchHit]) -> str:
    """The model's view of the results: numbered, title, URL, snippet."""
    if not hits:
        return f"No results for {query!r}."
    lines = [f"Results for {query!r}:"]
    for i, hit in enumerate(hits, 1):
        lines += [f"{i}. {hit.title}", f"   {hit.url}"] + ([f"   {hit.snippet.strip()}"] if hit.snippet.strip() else [])
    return "\n".join(lines)
