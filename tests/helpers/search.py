"""A web_search backend for tests (DA_WEB_SEARCH=tests.helpers.search:backend): canned hits that
name the query, and every query asked, so a test sees what reached the backend."""

from __future__ import annotations

from durable_agents.web_search import SearchHit

QUERIES: list[str] = []


class CannedSearch:
    def search(self, query: str, max_results: int) -> list[SearchHit | dict[str, str]]:
        QUERIES.append(query)
        hits: list[SearchHit | dict[str, str]] = [
            SearchHit(title=f"About {query}", url="https://docs.test/about", snippet=f"All about {query}."),
            {"title": "Second", "url": "https://docs.test/second", "description": "a mapping hit"},
            {"title": "Third", "url": "https://docs.test/third"},
        ]
        return hits[:max_results]


def backend() -> CannedSearch:
    return CannedSearch()
