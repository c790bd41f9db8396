"""The skills agents learn (`save_skill`): one registry per agent name, in the API's database
(`DA_DATABASE_URL`; a SQLite file in the data directory by default), every save a new version.

- A learned skill: name, description, trigger words, instructions, files, the session that
  saved it, and how the sessions that loaded it ended their outcomes (successes / failures).
- `for_task`: every learned skill of an agent, each marked `suggested` when its triggers or its
  description's words meet the task and its confidence is at least `min_confidence`; the prompt
  lists the suggested ones with their descriptions and the rest by name only.
- Confidence: (successes + 1) / (successes + failures + 2), so a new skill starts at 0.5 and
  two failed outcomes with none satisfied (0.25) stop it being suggested.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from durable_agents.api.store import Record, Store, now
from durable_agents.contracts import SaveSkillRequest, Skill
from durable_agents.errors import UserError

KIND = "learned_skill"
DEFAULT_MIN_CONFIDENCE = 0.34
_WORD = re.compile(r"[a-z0-9][a-z0-9_-]{2,}")


class SkillNotFound(UserError):
    pass


def skill_id(agent: str, name: str) -> str:
    return "lsk_" + hashlib.sha256(f"{agent}\n{name}".encode()).hexdigest()[:24]


def confidence(body: dict[str, Any]) -> float:
    s, f = int(body.get("successes", 0)), int(body.get("failures", 0))
    return (s + 1) / (s + f + 2)


def matches(body: dict[str, Any], task: str) -> bool:
    """A trigger in the task (as words or a phrase), or two of the description's longer words."""
    text = task.lower()
    words = set(_WORD.findall(text))
    if any(t.strip().lower() and (t.strip().lower() in words or " " in t.strip() and t.lower() in text)
           for t in body.get("triggers", [])):  # fmt: skip
        return True
    described = {w for w in _WORD.findall(str(body.get("description", "")).lower()) if len(w) > 3}
    return len(described & words) >= 2


class SkillRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def save(self, req: SaveSkillRequest) -> Record:
        """A new version of the agent's skill (its counts start again: it is a new procedure)."""
        sid = skill_id(req.agent, req.name)
        version = (await self.store.latest_version(KIND, sid) or 0) + 1
        body = {
            "agent": req.agent,
            "name": req.name,
            "description": req.description,
            "triggers": req.triggers,
            "instructions": req.instructions,
            "files": req.files,
            "session_id": req.session_id,
            "saved_at": now().isoformat(),
            "successes": 0,
            "failures": 0,
        }
        return await self.store.put(KIND, sid, body, version=version, parent=req.agent[:64])

    async def skills(self, agent: str | None = None) -> list[Record]:
        """Each learned skill's newest version (of one agent, or of all), newest first."""
        found = await self.store.all(KIND, parent=agent[:64] if agent else None, include_archived=False)
        return [r for r in found if agent is None or r.body["agent"] == agent]

    async def get(self, agent: str, name: str, version: int | None = None) -> Record:
        record = await self.store.get(KIND, skill_id(agent, name), version)
        if record is None or record.archived_at is not None:
            raise SkillNotFound(f"agent {agent!r} has no learned skill {name!r}" + (f" v{version}" if version else ""))
        return record

    async def remove(self, agent: str, name: str) -> None:
        await self.get(agent, name)
        await self.store.remove(KIND, skill_id(agent, name))

    async def for_task(self, agent: str, task: str, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> list[Skill]:
        out = []
        for r in sorted(await self.skills(agent), key=lambda r: r.body["name"]):
            b = r.body
            out.append(
                Skill(
                    name=b["name"],
                    description=b["description"],
                    body=b["instructions"],
                    files=b.get("files") or {},
                    triggers=b.get("triggers") or [],
                    learned=True,
                    registry_version=r.version,
                    suggested=matches(b, task) and confidence(b) >= min_confidence,
                )
            )
        return out

    async def record_results(self, agent: str, names: list[str], succeeded: bool) -> None:
        """An outcome ended: the skills its session loaded count one more success or failure."""
        for name in dict.fromkeys(names):
            try:
                record = await self.get(agent, name)
            except SkillNotFound:
                continue  # removed meanwhile
            body = dict(record.body)
            key = "successes" if succeeded else "failures"
            body[key] = int(body.get(key, 0)) + 1
            await self.store.replace(KIND, record.id, body, version=record.version)
