"""`da`: the user's CLI for agent sessions, built on the Python client API (durable_agents.client).

    da start --agent agents/coder.yaml [--id ID] [--wait] [--one-shot] "task"
    da send ID "text" [--wait]
    da follow ID [--from N] [--json] [--server URL]
    da serve [--host 127.0.0.1] [--port 8780]
    da events ID [--from N] [--to M] [--child sub-N] [--json]
    da export ID > session.jsonl
    da tool-result ID TOOL_USE_ID (--file out.json | --text "..." [--error])
    da interrupt ID;  da refresh-tools ID
    da approve ID TOOL_USE_ID [--wait];  da deny ID TOOL_USE_ID --reason "..." [--wait]
    da result ID
    da sessions
    da end ID
    da schedule create NAME --agent FILE (--cron "0 9 * * 1-5" | --every 1h) [--timezone TZ]
                             [--overlap skip|buffer_one|allow_all|cancel_other] [--paused] "prompt"
    da schedule list | describe NAME | pause NAME | unpause NAME | trigger NAME | delete NAME
    da schedule backfill NAME --from ISO --to ISO;  schedule update NAME [--agent] [--prompt] [--cron] ...
    da agent schema | agent validate FILE
    da vault set NAME < value | vault list | vault delete NAME
    da codec-key new | codec-key rotate;  da codec-server [--port 8081] [--cors-origin URL]

Connects to TEMPORAL_ADDRESS (default localhost:7233), namespace TEMPORAL_NAMESPACE.
(`python starter.py ...` in the repository is the same program.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleSpec,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
)
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from durable_agents import cli_memory, cli_skills, codec, schedules, session_log, telemetry, vault
from durable_agents import client as api
from durable_agents.agent_files import agent_version, load_agent
from durable_agents.client import ClientError
from durable_agents.connection import connect, temporal_address
from durable_agents.contracts import (
    SA_AGENT_NAME,
    SA_SESSION_STATUS,
    SESSION_WORKFLOW,
    AgentSpec,
    GitSource,
    SessionEvent,
    SessionState,
    WorkspaceSeed,
)
from durable_agents.errors import UserError
from durable_agents.live.follow import FollowError, follow
from durable_agents.live.publisher import LIVE_URL_ENV
from durable_agents.live.relay import DEFAULT_PORT, Relay, create_app
from durable_agents.live.render import JsonRenderer, PlainRenderer, RichRenderer, event_text, format_event
from durable_agents.settings import settings
from durable_agents.workflows.harness import available_tools


class CliError(ClientError):
    """A problem with the command line the user can fix; printed without a traceback."""


# --- printing -------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    if not rows:
        print(empty)
        return
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers) - 1)]
    for row in [headers, *rows]:
        print("  ".join(f"{str(v):<{w}}" for v, w in zip(row, widths, strict=False)) + "  " + str(row[-1]))


def print_events(events: list[SessionEvent], as_json: bool) -> None:
    for e in events:
        print_event(e, as_json)


def print_event(e: SessionEvent, as_json: bool) -> None:
    if as_json:
        print(json.dumps(e.model_dump(mode="json")), flush=True)
    else:
        print(format_event(e), flush=True)


# --- commands -------------------------------------------------------------------------------


def read_text_arg(path: str, option: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise CliError(f"{option} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{option} {path}: not a text file") from None


def workspace_seed(args: argparse.Namespace) -> WorkspaceSeed | None:
    """--file LOCAL[=DEST] and --git URL [--git-ref REF] [--git-token-secret NAME] as a seed."""
    files = {}
    for spec in args.file or []:
        local, _, dest = spec.partition("=")
        files[dest or Path(local).name] = read_text_arg(local, "--file")
    git = None
    if args.git:
        git = GitSource(url=args.git, ref=args.git_ref, token_secret=args.git_token_secret)
    if not files and git is None:
        return None
    try:
        return WorkspaceSeed(files=files, git=git)
    except ValidationError as e:
        raise CliError("; ".join(err["msg"] for err in e.errors())) from None


async def cmd_start(client: Client, args: argparse.Namespace) -> int:
    agent = load_agent(args.agent)
    outcome = None
    if args.outcome is not None:
        rubric = read_text_arg(args.outcome, "--outcome")
        iterations = args.max_iterations or (agent.outcome.max_iterations if agent.outcome else 3)
        outcome = api.new_outcome(args.task, rubric, iterations)
    elif args.max_iterations is not None:
        raise CliError("--max-iterations goes with --outcome RUBRIC.md")
    handle = await api.start_agent_session(
        client,
        agent,
        args.task,
        session_id=args.id,
        one_shot=args.one_shot,
        source=args.agent,
        workspace=workspace_seed(args),
        reuse_closed_id=False,
        outcome=outcome,
        memory=await cli_memory.mounts(args.memory or [], agent.memory.stores),
    )
    print(handle.id, flush=True)
    warning = await api.check_taken_up(handle)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.wait:
        return print_settled(await api.wait_until_settled(client, handle.id), handle.id)
    return 0


async def cmd_send(client: Client, args: argparse.Namespace) -> int:
    offset = await api.send_message(client, args.id, args.text)
    if args.wait:
        return print_settled(await api.wait_until_settled(client, args.id, after_event=offset), args.id)
    print(f"queued at event {offset}")
    return 0


async def cmd_follow(client: Client, args: argparse.Namespace) -> int:
    """The session as it happens, its subagents nested, until it is idle or has ended: through the
    live server (tokens as they stream) when one is given, else from Temporal (events only)."""
    if args.from_ < 0:
        raise CliError(f"--from {args.from_}: offsets start at 0")
    server = args.server if args.server is not None else (settings().live_url or "")
    source, problem = await api.follow_source(client, server)
    if problem:
        print(f"note: {problem}; showing durable events from Temporal", file=sys.stderr)
    if not source.live:
        print(
            "note: no live server: showing durable events only; token streaming needs `da serve` "
            f"(--server URL or {LIVE_URL_ENV})",
            file=sys.stderr,
        )
    renderer: JsonRenderer | PlainRenderer | RichRenderer
    if args.json:
        renderer = JsonRenderer()
    elif sys.stdout.isatty():
        renderer = RichRenderer(args.id, live=source.live)
    else:
        renderer = PlainRenderer(args.id)
    try:
        await follow(source, args.id, args.from_, renderer)
    except FollowError as e:
        raise CliError(f"{args.id}: {e}") from None
    return 0


SHUTDOWN_GRACE_S = 5


async def cmd_serve(client: Client, args: argparse.Namespace) -> int:
    """The live relay: workers post model-call deltas, clients read sessions as Server-Sent Events."""
    from durable_agents import console
    from durable_agents.api.app import create_api  # the API's database layer: only where it is served

    relay = Relay(client, poll_s=args.poll_ms / 1000)
    api = await create_api(client, relay)
    app = create_app(relay, [*api.routes, *console.routes()])
    # Open event streams do not hold a stop up: cut after SHUTDOWN_GRACE_S, clients resume by event id.
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    server = uvicorn.Server(config)
    url = f"http://{args.host}:{args.port}"
    print(
        f"live server on {url}: GET {url}/sessions/ID/events (Server-Sent Events); workers publish with "
        f"{LIVE_URL_ENV}={url}; the console on {url}/console/",
        flush=True,
    )
    await server.serve()
    return 0 if server.started else 2


async def cmd_events(client: Client, args: argparse.Namespace) -> int:
    stop = None if args.to is None else args.to + 1
    session_id = args.id
    if args.child:
        session_id = args.child if args.child.startswith(args.id + "/") else f"{args.id}/{args.child}"
    events = await api.session_events(client, session_id, args.from_, stop)
    if not events:
        count = (await api.session_state(client, session_id)).events
        if args.from_ >= count:
            raise CliError(
                f"{session_id}: --from {args.from_} is past the end: the session has {count} events (0..{count - 1})"
            )
    print_events(events, args.json)
    return 0


async def cmd_export(client: Client, args: argparse.Namespace) -> int:
    count = await session_log.export(client, args.id, sys.stdout)
    print(f"{args.id}: {count} events exported", file=sys.stderr)
    return 0


def client_tool_result(args: argparse.Namespace) -> dict[str, Any]:
    """--file out.json ({"content": "...", "is_error": false}) or --text "..." [--error]."""
    if (args.file is None) == (args.text is None):
        raise CliError("give the result with --file out.json or --text TEXT (one of them)")
    if args.text is not None:
        return {"content": args.text, "is_error": args.error}
    raw = read_text_arg(args.file, "--file")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CliError(f"--file {args.file}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(body, dict):
        raise CliError(f'--file {args.file}: expected a JSON object {{"content": "...", "is_error": false}}')
    if args.error:
        body["is_error"] = True
    return body


async def cmd_tool_result(client: Client, args: argparse.Namespace) -> int:
    offset = await api.post_tool_result(client, args.id, args.tool_use_id, client_tool_result(args))
    print(f"{args.tool_use_id}: result posted")
    if args.wait:
        return print_settled(await api.wait_until_settled(client, args.id, after_event=offset), args.id)
    return 0


def print_settled(state: SessionState, session_id: str) -> int:
    """The answer, what the session waits for, or why it has none; 1 when the session failed."""
    if state.status == "waiting":
        for call in state.awaiting_approval:
            print(f"waiting for approval: {call.id} {call.name} {json.dumps(call.input)[:200]}")
            print(f"  da approve {session_id} {call.id}   |   da deny {session_id} {call.id} --reason ...")
        for call in state.awaiting_client:
            print(f"waiting for the client: {call.id} {call.name} {json.dumps(call.input)[:200]}")
            print(f"  da tool-result {session_id} {call.id} --file out.json")
        return 0
    if state.last_answer:
        print(state.last_answer)
    if state.error or not state.last_answer:
        print(no_answer(state, answered=bool(state.last_answer)))
    return 1 if state.error else 0


def no_answer(state: SessionState, answered: bool = False) -> str:
    """The line that says the session has no (further) answer, and why if it failed."""
    why = f": {state.error}" if state.error else ""
    return f"({'' if answered else 'no answer; '}session status: {state.status}{why})"


async def cmd_decide(client: Client, args: argparse.Namespace) -> int:
    if args.command == "approve":
        offset, done = await api.approve(client, args.id, args.tool_use_id), "approved"
    else:
        offset, done = await api.deny(client, args.id, args.tool_use_id, args.reason), "denied"
    print(f"{args.tool_use_id}: {done}")
    if args.wait:
        return print_settled(await api.wait_until_settled(client, args.id, after_event=offset), args.id)
    return 0


async def cmd_interrupt(client: Client, args: argparse.Namespace) -> int:
    offset = await api.interrupt(client, args.id)
    print(f"{args.id}: interrupted (event {offset - 1}); the session is idle")
    return 0


async def cmd_refresh_tools(client: Client, args: argparse.Namespace) -> int:
    offset = await api.refresh_tools(client, args.id)
    events = await api.session_events(client, args.id, offset, offset + 1)
    print(f"{args.id}: MCP tools now: {event_text(events[0]) if events else '?'}")
    return 0


async def cmd_result(client: Client, args: argparse.Namespace) -> int:
    try:
        state = await api.session_state(client, args.id)
    except (RPCError, WorkflowQueryFailedError):  # a terminated session may not replay: its close says why
        closed = await api.closed_reason(client, args.id)
        if closed is None:
            raise
        print(f"(no answer; session {closed})", file=sys.stderr)
        return 1
    if state.last_answer is not None:
        print(state.last_answer)
    if state.last_answer is None or state.error:
        print(no_answer(state, answered=state.last_answer is not None), file=sys.stderr)
        return 1
    return 0


async def cmd_sessions(client: Client, args: argparse.Namespace) -> int:
    rows = []
    async for wf in client.list_workflows(f'WorkflowType="{SESSION_WORKFLOW}"', limit=args.limit):
        attrs = wf.typed_search_attributes
        agent = attrs.get(SearchAttributeKey.for_keyword(SA_AGENT_NAME)) or "?"
        status = attrs.get(SearchAttributeKey.for_keyword(SA_SESSION_STATUS)) or "?"
        if wf.status != WorkflowExecutionStatus.RUNNING and wf.status is not None:
            status = wf.status.name.lower()
        rows.append((wf.id, agent, status, wf.start_time.strftime("%Y-%m-%d %H:%M:%S")))
    print_table(("SESSION", "AGENT", "STATUS", "STARTED (UTC)"), rows, "no sessions")
    return 0


async def cmd_end(client: Client, args: argparse.Namespace) -> int:
    print(f"{args.id}: {await api.end_session(client, args.id)}")
    return 0


# --- schedules ------------------------------------------------------------------------------


def _schedule_time(times: Sequence[datetime]) -> str:
    return times[0].strftime("%Y-%m-%d %H:%M:%S") if times else "-"


def _spec_text(spec: ScheduleSpec) -> str:
    parts = list(spec.cron_expressions) + [f"every {i.every}" for i in spec.intervals]
    zone = f" ({spec.time_zone_name})" if spec.time_zone_name else ""
    return (", ".join(parts) or "-") + zone


async def cmd_schedule(client: Client, args: argparse.Namespace) -> int:
    action = args.schedule_command
    if action == "create":
        req = schedules.ScheduleRequest(
            name=args.name, agent_path=args.agent, prompt=args.prompt, paused=args.paused, **_timing(args)
        )
        handle = await schedules.create(client, req)
        description = await handle.describe()
        print(f"schedule {args.name} created; next run: {_schedule_time(description.info.next_action_times)}")
        return 0
    if action == "list":
        rows = []
        async for s in await client.list_schedules():
            last = s.info.recent_actions[-1] if s.info.recent_actions else None
            result = "-"
            if last is not None and isinstance(last.action, ScheduleActionExecutionStartWorkflow):
                result = await schedules.last_result(client, last.action.workflow_id)
            paused = "paused" if s.schedule.state.paused else "active"
            rows.append((s.id, paused, _schedule_time(s.info.next_action_times), result))
        print_table(("SCHEDULE", "STATE", "NEXT RUN (UTC)", "LAST RESULT"), rows, "no schedules")
        return 0
    handle = client.get_schedule_handle(args.name)
    if action == "describe":
        d = await handle.describe()
        inp = await schedules.session_input(client, d.schedule.action)  # type: ignore[arg-type]
        print(f"schedule:  {d.id}")
        print(f"spec:      {_spec_text(d.schedule.spec)}")
        print(f"overlap:   {d.schedule.policy.overlap.name.lower()}")
        print(
            f"state:     {'paused' if d.schedule.state.paused else 'active'}"
            + (f" ({d.schedule.state.note})" if d.schedule.state.note else "")
        )
        if inp is not None:
            print(f"agent:     {inp.agent.name} (version {agent_version(inp.agent)})")
            print(f"prompt:    {inp.task}")
        print(f"runs:      {d.info.num_actions} ({d.info.num_actions_skipped_overlap} skipped for overlap)")
        print("next runs: " + ", ".join(t.strftime("%Y-%m-%d %H:%M:%S") for t in d.info.next_action_times[:5]))
        for r in d.info.recent_actions[-5:]:
            if isinstance(r.action, ScheduleActionExecutionStartWorkflow):
                print(
                    f"  {r.started_at:%Y-%m-%d %H:%M:%S}  {r.action.workflow_id}  "
                    f"{await schedules.last_result(client, r.action.workflow_id)}"
                )
        return 0
    if action == "pause":
        await handle.pause(note=args.note or "paused with da")
    elif action == "unpause":
        await handle.unpause(note=args.note or "unpaused with da")
    elif action == "trigger":
        await handle.trigger()
    elif action == "backfill":
        await schedules.backfill(client, args.name, _parse_time(args.from_), _parse_time(args.to))
    elif action == "update":
        await schedules.update(client, args.name, agent_path=args.agent, prompt=args.prompt, **_timing(args))
    elif action == "delete":
        await handle.delete()
    print(f"schedule {args.name}: {action} done")
    return 0


def _timing(args: argparse.Namespace) -> dict[str, Any]:
    """The timing flags `schedule create` and `schedule update` share."""
    return {"cron": args.cron, "every": args.every, "timezone": args.timezone, "overlap": args.overlap}


def _parse_time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{text!r}: use an ISO time, e.g. 2026-11-20T09:00:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- agent definitions ------------------------------------------------------------------------


async def cmd_agent(args: argparse.Namespace) -> int:
    if args.agent_command == "schema":
        print(json.dumps(AgentSpec.model_json_schema(), indent=2))
        return 0
    agent = load_agent(args.file)
    parts = [
        f"agent {agent.name}",
        f"version {agent_version(agent)}",
        f"model {agent.model.name}",
        f"tools: {', '.join(available_tools(agent))}",
    ]
    if agent.policies:
        parts.append("policies: " + ", ".join(f"{k}={v}" for k, v in agent.policies.items()))
    if agent.subagents:
        parts.append(f"subagents: {', '.join(s.name for s in agent.subagents)}")
    if agent.skills:
        parts.append(f"skills: {', '.join(s.name for s in agent.skills)}")
    for server in agent.mcp_servers:
        where = server.url or " ".join([server.command or "", *server.args])
        secrets = f", secrets: {', '.join(server.secrets())}" if server.secrets() else ""
        parts.append(f"mcp {server.name} ({where}; {server.policy}{secrets})")
    print(f"{args.file}: valid — " + ", ".join(parts))
    return 0


# --- the vault (this machine's encrypted file; workers read it, nothing else does) ---------------


async def cmd_api_key(args: argparse.Namespace) -> int:
    """Keys of the Managed Agents API (`da serve`), stored hashed in its database; a key is shown once."""
    from durable_agents.api.store import Store

    store = Store(settings().database_url)
    await store.start()
    try:
        if args.key_command == "create":
            record, key = await store.create_key(args.name)
            print(f"{record.id}  {record.name}", file=sys.stderr)
            print(key)
            print("(shown once: keep it; the server keeps only its hash)", file=sys.stderr)
        elif args.key_command == "list":
            rows = [
                (
                    k.id,
                    k.name,
                    f"{k.created_at:%Y-%m-%d %H:%M:%S}",
                    f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active",
                )
                for k in await store.keys()
            ]
            print_table(("ID", "NAME", "CREATED (UTC)", "STATE"), rows, "no API keys (DA_API_KEY gives the server one)")
        elif not await store.revoke_key(args.id):
            raise CliError(f"no active API key {args.id!r} (da api-key list shows them)")
        else:
            print(f"revoked {args.id}", file=sys.stderr)
    finally:
        await store.close()
    return 0


async def cmd_vault(args: argparse.Namespace) -> int:
    store = vault.FileVault()
    if args.vault_command == "list":
        for name in vault.load_vault().names():
            print(name)
        return 0
    if args.vault_command == "delete":
        if not store.delete(args.name):
            raise CliError(f"no secret {args.name!r} in {store.path}")
        print(f"deleted {args.name}", file=sys.stderr)
        return 0
    if sys.stdin.isatty():
        print(f"value for {args.name} (then Enter; it is not echoed):", file=sys.stderr)
        import getpass

        value = getpass.getpass(prompt="")
    else:
        value = sys.stdin.read()
    store.set(args.name, value.rstrip("\n"))
    print(f"stored {args.name} in {store.path}", file=sys.stderr)
    return 0


# --- encrypted history ---------------------------------------------------------------------------


async def cmd_codec_key(args: argparse.Namespace) -> int:
    path = codec.key_file()
    if args.codec_command == "new" and path.exists():
        raise CliError(f"{path} exists already (`codec-key rotate` adds a key to it)")
    if args.codec_command == "rotate" and not path.exists():
        raise CliError(f"{path} does not exist (`codec-key new` creates it)")
    ring = codec.new_key_file(path)
    print(f"{path}: active key {ring.active} (keys: {', '.join(ring.keys)})", file=sys.stderr)
    return 0


async def cmd_codec_server(args: argparse.Namespace) -> int:
    import uvicorn

    app = codec.codec_server_app(codec.EncryptionCodec(codec.KeyRing.load()), args.cors_origin)
    print(f"codec server on http://{args.host}:{args.port} (CORS: {', '.join(args.cors_origin)})", file=sys.stderr)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    await server.serve()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="da", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="start a session; prints its id")
    s.add_argument("--agent", required=True, help="agent file (YAML)")
    s.add_argument("--id", help="session id (default: session-<random>)")
    s.add_argument("--wait", action="store_true", help="wait for the answer and print it")
    s.add_argument("--one-shot", action="store_true", help="end the session after the first answer")
    s.add_argument("--file", action="append", metavar="LOCAL[=DEST]", help="seed /workspace with a local file")
    s.add_argument("--git", metavar="URL", help="seed /workspace with a clone of this repository")
    s.add_argument("--git-ref", metavar="REF", help="branch or tag to clone")
    s.add_argument("--git-token-secret", metavar="NAME", help="secret the sandbox worker uses to clone")
    s.add_argument("--outcome", metavar="RUBRIC.md", help="grade the answer against this rubric, revising until met")
    s.add_argument("--max-iterations", type=int, metavar="N", help="evaluate-then-revise cycles (1-20, default 3)")
    s.add_argument(
        "--memory",
        action="append",
        metavar="STORE[:read_only]",
        help="attach a memory store (id or name), mounted at /mnt/memory/<name>; read_write unless :read_only",
    )
    s.add_argument("task")
    s = sub.add_parser("send", help="add a user message to a running session")
    s.add_argument("id")
    s.add_argument("text")
    s.add_argument("--wait", action="store_true", help="wait for the answer and print it")
    for name, helptext in (
        ("follow", "show the session as it happens until it is idle or has ended"),
        ("events", "print a slice of the session log"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("id")
        s.add_argument("--from", dest="from_", type=int, default=0, help="first event offset")
        if name == "events":
            s.add_argument("--to", type=int, default=None, help="last event offset (inclusive)")
            s.add_argument("--child", help="a subagent's events instead: sub-N or its full session id")
        else:
            s.add_argument(
                "--server",
                help=f"the live server (`da serve`) for token streaming (default: env {LIVE_URL_ENV}; '' for none)",
            )
        s.add_argument("--json", action="store_true", help="one JSON object per line")
    s = sub.add_parser("serve", help="the live server: sessions as Server-Sent Events, model text as it streams")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this host only)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--poll-ms", type=int, default=200, help="how often a watched session's log is read")
    s = sub.add_parser("export", help="write the whole session log as JSON Lines to stdout")
    s.add_argument("id")
    s = sub.add_parser("tool-result", help="post the result of a custom tool call the session waits on")
    s.add_argument("id")
    s.add_argument("tool_use_id")
    s.add_argument("--file", help='JSON file: {"content": "...", "is_error": false}')
    s.add_argument("--text", help="the result text")
    s.add_argument("--error", action="store_true", help="the tool failed: the model sees an error")
    s.add_argument("--wait", action="store_true", help="wait for the answer and print it")
    s = sub.add_parser("result", help="print the session's last answer")
    s.add_argument("id")
    s = sub.add_parser("sessions", help="list sessions with their status")
    s.add_argument("--limit", type=int, default=50)
    _schedule_parsers(sub)
    a = sub.add_parser("agent", help="agent definitions: schema, validate").add_subparsers(
        dest="agent_command", required=True
    )
    a.add_parser("schema", help="print the JSON Schema of agent files")
    a.add_parser("validate", help="validate an agent file without running it").add_argument("file")
    keys = sub.add_parser("api-key", help="keys of the Managed Agents API (da serve): create, list, revoke")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    key_commands.add_parser("create", help="make a key; it is printed once").add_argument("name")
    key_commands.add_parser("list", help="keys with their state (never the keys)")
    key_commands.add_parser("revoke", help="revoke a key by its id").add_argument("id")
    cli_memory.add_parser(sub)
    cli_skills.add_parser(sub)
    v = sub.add_parser("vault", help="secrets the workers resolve by name: set, list, delete").add_subparsers(
        dest="vault_command", required=True
    )
    v.add_parser("set", help="store a secret; the value is read from stdin").add_argument("name")
    v.add_parser("list", help="secret names (never values)")
    v.add_parser("delete", help="remove a secret").add_argument("name")
    k = sub.add_parser("codec-key", help="keys of the encrypted history (DA_CODEC_KEY_FILE)").add_subparsers(
        dest="codec_command", required=True
    )
    k.add_parser("new", help="create the key file with one key")
    k.add_parser("rotate", help="add a key and make it the one new payloads use (old keys still decrypt)")
    c = sub.add_parser("codec-server", help="decrypt payloads for the Temporal UI and CLI (the key stays here)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8081)
    c.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        help="a Web UI origin allowed to call it (repeatable; default http://localhost:8233 and 127.0.0.1:8233)",
    )
    for name, helptext in (
        ("approve", "let a tool call that waits for approval run"),
        ("deny", "refuse a tool call that waits for approval; the model is told why"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("id")
        s.add_argument("tool_use_id")
        if name == "deny":
            s.add_argument("--reason", default="")
        s.add_argument("--wait", action="store_true", help="wait for the answer and print it")
    s = sub.add_parser("interrupt", help="stop what the session is doing (model call, tools, subagents)")
    s.add_argument("id")
    s = sub.add_parser("refresh-tools", help="re-list the MCP servers' tools before the session's next model call")
    s.add_argument("id")
    s = sub.add_parser("end", help="end a session (its sandbox is destroyed)")
    s.add_argument("id")
    return p


def _schedule_parsers(sub: Any) -> None:
    sched = sub.add_parser("schedule", help="recurring agents on Temporal Schedules").add_subparsers(
        dest="schedule_command", required=True
    )

    def timing(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cron", help='cron expression, e.g. "0 9 * * 1-5"')
        p.add_argument("--every", help="interval, e.g. 30s, 5m, 1h, 1d")
        p.add_argument("--timezone", help="IANA time zone for the cron, e.g. Europe/Berlin")
        p.add_argument(
            "--overlap",
            choices=sorted(schedules.OVERLAP),
            default=None,
            help="when a run is still going at the next time (default skip)",
        )

    c = sched.add_parser("create", help="create a schedule that starts one-shot sessions")
    c.add_argument("name")
    c.add_argument("--agent", required=True)
    timing(c)
    c.add_argument("--paused", action="store_true")
    c.add_argument("prompt", help="the task; may use {date} and {last_result}")
    sched.add_parser("list", help="schedules with next run and last result")
    for name in ("describe", "pause", "unpause", "trigger", "delete"):
        p = sched.add_parser(name)
        p.add_argument("name")
        if name in ("pause", "unpause"):
            p.add_argument("--note")
    b = sched.add_parser("backfill", help="run the schedule for a past time range")
    b.add_argument("name")
    b.add_argument("--from", dest="from_", required=True)
    b.add_argument("--to", required=True)
    u = sched.add_parser("update", help="change a schedule's agent, prompt, timing or overlap")
    u.add_argument("name")
    u.add_argument("--agent")
    u.add_argument("--prompt")
    timing(u)


COMMANDS = {
    "start": cmd_start,
    "send": cmd_send,
    "follow": cmd_follow,
    "serve": cmd_serve,
    "events": cmd_events,
    "export": cmd_export,
    "tool-result": cmd_tool_result,
    "result": cmd_result,
    "sessions": cmd_sessions,
    "end": cmd_end,
    "interrupt": cmd_interrupt,
    "refresh-tools": cmd_refresh_tools,
    "approve": cmd_decide,
    "deny": cmd_decide,
    "schedule": cmd_schedule,
}


async def amain(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "agent":
            return await cmd_agent(args)
        if args.command == "api-key":
            return await cmd_api_key(args)
        if args.command == "vault":
            return await cmd_vault(args)
        if args.command == "memory":
            return await cli_memory.cmd_memory(args)
        if args.command == "skill":
            return await cli_skills.cmd_skill(args)
        if args.command == "codec-key":
            return await cmd_codec_key(args)
        if args.command == "codec-server":
            args.cors_origin = args.cors_origin or ["http://localhost:8233", "http://127.0.0.1:8233"]
            return await cmd_codec_server(args)
        if args.command == "schedule" and args.schedule_command == "create":
            args.overlap = args.overlap or "skip"
            # Bad input fails before anything connects.
            load_agent(args.agent)
            schedules._spec(args.cron, args.every, args.timezone)
        if args.command == "start":
            agent = load_agent(args.agent)  # bad input fails before anything connects
            workspace_seed(args)
            await cli_memory.mounts(args.memory or [], agent.memory.stores)
        try:
            client = await connect()
        except RuntimeError as e:
            raise CliError(f"cannot reach Temporal at {temporal_address()}: {e} (is `make up` running?)") from None
        return await COMMANDS[args.command](client, args)
    except UserError as e:  # what the user can fix: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND and "already completed" in e.message:
            print(f"error: session {getattr(args, 'id', '')!r} has ended; start a new one", file=sys.stderr)
        elif e.status == RPCStatusCode.NOT_FOUND:
            print(f"error: no session {getattr(args, 'id', '')!r}: {e.message}", file=sys.stderr)
        elif e.status == RPCStatusCode.ALREADY_EXISTS:
            print(f"error: a session with id {args.id!r} already exists", file=sys.stderr)
        else:
            print(f"error: Temporal said: {e.message}", file=sys.stderr)
        return 2


def main() -> None:
    code = asyncio.run(amain(sys.argv[1:]))
    telemetry.shutdown()  # os._exit skips the exit hooks that would export the last spans
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the client's Rust threads can abort it at exit
    # ("PyGILState_Release ... finalizing", temporalio/sdk-python issue 300).
    os._exit(code)


if __name__ == "__main__":
    main()
