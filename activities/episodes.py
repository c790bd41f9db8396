"""The `index_session` activity (harness side): episodic memory. When a session of an agent with
`memory: {sessions: true}` goes idle or ends, what it said and did since the last time (user
messages, answers, tool calls and results) is indexed in the API's database, under the agent's
name; later sessions of that agent find it with memory_search, a hit naming the session and the
event offset (`da events SESSION --from OFFSET` opens it). The activity reads the log itself
(a query of the session): nothing is copied through history."""

from __future__ import annotations

import json
from typing import Any

from temporalio import activity
from temporalio.client import Client

from durable_agents import session_log
from durable_agents.contracts import INDEX_SESSION, IndexRequest, SessionEvent
from durable_agents.errors import translate_errors
from durable_agents.settings import settings

TEXT_CAP = 2000  # characters of one event kept in the index (a tool's long output: its head)


def episode_items(events: list[SessionEvent]) -> list[tuple[int, str, str]]:
    """(offset, kind, text) of what a session said and did, for the index."""
    items: list[tuple[int, str, str]] = []
    for e in events:
        if e.kind == "user_message":
            items.append((e.offset, "user_message", e.text))
        elif e.kind == "model_turn":
            if e.text:
                items.append((e.offset, "answer", e.text))
            for call in e.tool_calls or []:
                items.append((e.offset, "tool_call", f"{call.name} {json.dumps(call.input, ensure_ascii=False)}"))
        elif e.kind == "tool_result":
            items.append((e.offset, "tool_result", e.tool_result.output))
    return [(o, k, t[:TEXT_CAP]) for o, k, t in items if t.strip()]


class EpisodeActivities:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._dbs: dict[str, Any] = {}

    async def _db(self) -> Any:
        from durable_agents.api.memory_db import MemoryDb
        from durable_agents.api.store import Store

        url = settings().database_url
        if url not in self._dbs:
            store = Store(url)
            await store.start()
            self._dbs[url] = MemoryDb(store)
        return self._dbs[url]

    @activity.defn(name=INDEX_SESSION)
    @translate_errors
    async def index_session(self, req: IndexRequest) -> int:
        """Index the session's events from `from_offset`; the offset indexed up to."""
        events = await session_log.read_events(self.client, req.session_id, req.from_offset)
        if not events:
            return req.from_offset
        await (await self._db()).add_episodes(req.agent, req.session_id, episode_items(events))
        return events[-1].offset + 1
