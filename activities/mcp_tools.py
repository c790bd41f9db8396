"""MCP tools, on the trusted (harness) side: discovery and calls through the official `mcp` SDK.

A server is a command the harness worker starts (stdio) or a Streamable HTTP URL. Its secrets
(`env` / `headers` values given as `{secret: NAME}`) are resolved from the vault here, when the
connection opens, and go only to that server: never into an activity's input or result, a log line,
or a sandbox. Each worker keeps one open connection per server definition and reuses it; a
connection that breaks is dropped and the call retried (transport errors only). Tool lists are
cached per worker too (`refresh` re-reads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_agents.activities.heartbeat import heartbeating
from durable_agents.contracts import (
    CALL_MCP_TOOL,
    DISCOVER_MCP_TOOLS,
    MCP_SEPARATOR,
    McpCallRequest,
    McpDiscoverRequest,
    McpDiscovery,
    McpServer,
    McpTool,
    SecretRef,
    ToolResult,
)
from durable_agents.errors import SecretMissing, translate_errors
from durable_agents.logs import activity_log
from durable_agents.vault import ChainVault, VaultError, load_vault

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the Messages API accepts as a tool name
CONNECT_TIMEOUT_S = 30.0


def _innermost(error: BaseException) -> BaseException:
    """The first leaf error (the SDK wraps errors in task-group exception groups)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _message(error: BaseException) -> str:
    error = _innermost(error)
    if isinstance(error, FileNotFoundError):
        return f"command not found: {error.filename or error}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _is_transport_error(error: BaseException) -> bool:
    transport = OSError | httpx2.TransportError | anyio.ClosedResourceError | anyio.BrokenResourceError | EOFError
    return isinstance(_innermost(error), transport)


@dataclass
class _Connection:
    """One open MCP client session, held by its own task (the SDK's task groups must be entered and
    left by the same task); calls are made from activity tasks."""

    server: McpServer
    vault: ChainVault
    ready: asyncio.Future[Client] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._hold(), name=f"mcp:{self.server.name}")

    def _value(self, value: str | SecretRef) -> str:
        return value if isinstance(value, str) else value.prefix + self.vault.resolve(value.secret)

    def _client(self) -> Client:
        s = self.server
        if s.command is not None:
            env = {k: self._value(v) for k, v in s.env.items()}
            return Client(StdioServerParameters(command=s.command, args=s.args, env=env or None))
        assert s.url is not None
        headers = {k: self._value(v) for k, v in s.headers.items()}
        transport = streamable_http_client(s.url, http_client=create_mcp_http_client(headers=headers))
        return Client(transport)

    async def _hold(self) -> None:
        try:
            async with self._client() as client:
                self.ready.set_result(client)
                await self.closing.wait()
        except BaseException as e:
            if not self.ready.done():
                self.ready.set_exception(e)
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            if not self.ready.done():
                self.ready.set_exception(ConnectionError("closed"))

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done() and not self.closing.is_set()

    async def close(self) -> None:
        self.closing.set()
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.task, 5)


class McpActivities:
    def __init__(self, vault: ChainVault | None = None) -> None:
        self.vault = vault or load_vault()
        self._connections: dict[str, _Connection] = {}
        self._tools: dict[str, list[McpTool]] = {}  # server definition -> its tools, as last listed
        self._lock = asyncio.Lock()

    @staticmethod
    def _key(server: McpServer) -> str:
        return server.model_dump_json()  # the definition (secret *names* only), not the secrets

    async def _client(self, server: McpServer) -> Client:
        key = self._key(server)
        async with self._lock:
            conn = self._connections.get(key)
            if conn is None or not conn.alive:
                conn = _Connection(server, self.vault)
                conn.start()
                self._connections[key] = conn
        return await asyncio.wait_for(asyncio.shield(conn.ready), CONNECT_TIMEOUT_S)

    async def _drop(self, server: McpServer) -> None:
        conn = self._connections.pop(self._key(server), None)
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        for conn in list(self._connections.values()):
            await conn.close()
        self._connections.clear()

    def _missing_secrets(self, servers: list[McpServer]) -> list[str]:
        uses = {name: s.name for s in servers for name in s.secrets()}
        return [f"{name!r} (mcp server {uses[name]!r})" for name in self.vault.missing(list(uses))]

    @activity.defn(name=DISCOVER_MCP_TOOLS)
    @translate_errors
    async def discover_mcp_tools(self, req: McpDiscoverRequest) -> McpDiscovery:
        """Each server's tools, namespaced <server>__<tool>. A server that cannot be reached is a
        failure in the result (the session goes on without it); an unknown secret stops the session."""
        missing = self._missing_secrets(req.servers)
        if missing:
            raise SecretMissing(
                f"unknown secret(s): {', '.join(missing)}; add them with `da vault set NAME` on the "
                "harness workers' machine (or DA_SECRET_<NAME>)"
            )
        results = await asyncio.gather(*(self._discover(s, req.refresh) for s in req.servers))
        discovery = McpDiscovery()
        for server, (tools, failure) in zip(req.servers, results, strict=True):
            discovery.tools += tools
            if failure:
                discovery.failures[server.name] = failure
        activity_log().info(
            "mcp tools discovered", tools=len(discovery.tools), failed=sorted(discovery.failures) or None
        )
        return discovery

    async def _discover(self, server: McpServer, refresh: bool) -> tuple[list[McpTool], str | None]:
        key = self._key(server)
        if not refresh and key in self._tools:
            return self._tools[key], None
        try:
            client = await self._client(server)
            listed = await asyncio.wait_for(client.list_tools(cache_mode="refresh" if refresh else "use"), 30)
        except TimeoutError:
            await self._drop(server)
            return [], f"mcp server {server.name!r} did not answer within {CONNECT_TIMEOUT_S:.0f} s"
        except Exception as e:
            await self._drop(server)
            return [], f"mcp server {server.name!r} is unavailable: {_message(e)}"
        tools, skipped = [], []
        for t in listed.tools:
            if server.only is not None and t.name not in server.only:
                continue
            name = server.name + MCP_SEPARATOR + re.sub(r"[^A-Za-z0-9_-]", "_", t.name)
            if not TOOL_NAME.match(name) or any(x.name == name for x in tools):
                skipped.append(t.name)
                continue
            schema = dict(t.input_schema or {}) or {"type": "object", "properties": {}}
            tools.append(
                McpTool(
                    name=name, server=server.name, tool=t.name, description=t.description or "", input_schema=schema
                )
            )
        self._tools[key] = tools
        note = f"mcp server {server.name!r}: tools skipped (name too long or clashing): {', '.join(skipped)}"
        return tools, note if skipped else None

    @activity.defn(name=CALL_MCP_TOOL)
    @translate_errors
    async def call_mcp_tool(self, req: McpCallRequest) -> ToolResult:
        name = req.server.name + MCP_SEPARATOR + req.tool
        log = activity_log().bind(server=req.server.name, tool=req.tool)

        def result(text: str, is_error: bool = False) -> ToolResult:
            if len(text) > req.output_cap:
                text = text[: req.output_cap] + f"\n[output truncated at {req.output_cap} characters]"
            return ToolResult(call_id=req.call_id, name=name, output=text, is_error=is_error)

        try:
            client = await self._client(req.server)
        except VaultError as e:
            return result(f"mcp server {req.server.name!r}: {e}", is_error=True)
        except Exception as e:
            await self._drop(req.server)
            log.warning("mcp connect failed", error=_message(e))
            raise ApplicationError(f"mcp server {req.server.name!r} is unavailable: {_message(e)}") from None
        try:
            async with heartbeating(5):
                called = await client.call_tool(req.tool, req.input, read_timeout_seconds=req.server.timeout_s)
        except MCPError as e:  # the server answered with an error: the model should see it
            return result(f"{name}: {e}", is_error=True)
        except TimeoutError:
            return result(f"{name} did not answer within {req.server.timeout_s:g} s", is_error=True)
        except Exception as e:
            if _is_transport_error(e):
                await self._drop(req.server)
                log.warning("mcp transport failed", error=_message(e))
                raise ApplicationError(f"mcp server {req.server.name!r}: {_message(e)}") from None
            return result(f"{name} failed: {_message(e)}", is_error=True)
        log.info("mcp tool called", is_error=called.is_error)
        return result(_text_of(called), is_error=bool(called.is_error))


def _text_of(called: Any) -> str:
    parts = []
    for block in called.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource link {block.uri}]")
        else:
            parts.append(f"[{kind} content, {getattr(block, 'mime_type', '') or 'binary'}]")
    if not parts and called.structured_content is not None:
        parts.append(json.dumps(called.structured_content))
    return "\n".join(parts) or "(no output)"
