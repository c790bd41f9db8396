"""The skill registry's activities (harness side): what an agent learned, offered to its next
sessions; a saved skill; the outcomes of the sessions that loaded learned skills. The registry is
in the API's database (`durable_agents.skill_registry`), opened once per worker."""

from __future__ import annotations

from temporalio import activity

from durable_agents.api.store import Store
from durable_agents.contracts import (
    LEARNED_SKILLS,
    RECORD_SKILL_RESULTS,
    SAVE_LEARNED_SKILL,
    LearnedSkillsRequest,
    SaveSkillRequest,
    Skill,
    SkillResults,
)
from durable_agents.errors import translate_errors
from durable_agents.settings import settings
from durable_agents.skill_registry import SkillRegistry


class SkillActivities:
    def __init__(self, database_url: str | None = None) -> None:
        self.url = database_url
        self._registry: SkillRegistry | None = None

    async def registry(self) -> SkillRegistry:
        if self._registry is None:
            store = Store(self.url or settings().database_url)
            await store.start()
            self._registry = SkillRegistry(store)
        return self._registry

    @activity.defn(name=LEARNED_SKILLS)
    @translate_errors
    async def learned_skills(self, req: LearnedSkillsRequest) -> list[Skill]:
        return await (await self.registry()).for_task(req.agent, req.task, settings().skill_min_confidence)

    @activity.defn(name=SAVE_LEARNED_SKILL)
    @translate_errors
    async def save_learned_skill(self, req: SaveSkillRequest) -> int:
        return (await (await self.registry()).save(req)).version

    @activity.defn(name=RECORD_SKILL_RESULTS)
    @translate_errors
    async def record_skill_results(self, req: SkillResults) -> None:
        await (await self.registry()).record_results(req.agent, req.names, req.succeeded)
