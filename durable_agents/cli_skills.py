"""`da skill list | show | rm`: the skills agents learned (save_skill), in the API's database."""

from __future__ import annotations

import argparse
from typing import Any

from durable_agents.settings import settings


def add_parser(sub: Any) -> None:
    s = sub.add_parser("skill", help="skills agents learned (save_skill): list, show, rm")
    commands = s.add_subparsers(dest="skill_command", required=True)
    commands.add_parser("list", help="learned skills, each agent's").add_argument("--agent", help="only this agent's")
    show = commands.add_parser("show", help="a learned skill: its instructions, files and record")
    show.add_argument("agent")
    show.add_argument("name")
    show.add_argument("--version", type=int, help="an earlier version")
    rm = commands.add_parser("rm", help="remove a learned skill (every version)")
    rm.add_argument("agent")
    rm.add_argument("name")


async def cmd_skill(args: argparse.Namespace) -> int:
    from durable_agents.api.store import Store
    from durable_agents.cli import print_table
    from durable_agents.skill_registry import SkillRegistry, confidence

    store = Store(settings().database_url)
    await store.start()
    registry = SkillRegistry(store)
    try:
        if args.skill_command == "list":
            rows = [
                (
                    r.body["agent"],
                    r.body["name"],
                    f"v{r.version}",
                    f"{r.body.get('successes', 0)}/{r.body.get('failures', 0)}",
                    f"{confidence(r.body):.2f}",
                    r.body["session_id"],
                )
                for r in await registry.skills(args.agent)
            ]
            header = ("AGENT", "SKILL", "VERSION", "OK/FAILED", "CONFIDENCE", "LEARNED IN")
            print_table(header, rows, "no learned skills (agents with skills: {learn: true} save them)")
        elif args.skill_command == "show":
            r = await registry.get(args.agent, args.name, args.version)
            b = r.body
            print(f"{b['name']} v{r.version} (learned, agent {b['agent']}, session {b['session_id']}, {b['saved_at']})")
            print(f"description: {b['description']}")
            print(f"triggers: {', '.join(b['triggers']) or '(none)'}")
            print(f"outcomes: {b.get('successes', 0)} satisfied, {b.get('failures', 0)} not; "
                  f"confidence {confidence(b):.2f}")  # fmt: skip
            print(f"files: {', '.join(sorted(b.get('files') or {})) or '(none)'}\n")
            print(b["instructions"])
        else:
            await registry.remove(args.agent, args.name)
            print(f"removed {args.agent}/{args.name}")
    finally:
        await store.close()
    return 0
