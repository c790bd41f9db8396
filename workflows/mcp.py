"""MCP tools, workflow side: discovering the agent's servers' tools when the session starts (or
on `refresh_tools`), and calling one. Both are activities on the harness worker, which holds
the servers' credentials; a tool's own error comes back as an is_error result, a transport
error is retried."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from durable_agents.contracts import (
    CALL_MCP_TOOL,
    DISCOVER_MCP_TOOLS,
    SECRET_MISSING,
    McpCallRequest,
    McpDiscoverRequest,
    McpDiscovery,
    ToolCall,
    ToolResult,
)
from durable_agents.workflows.core import Session
from durable_agents.workflows.failures import failure_message
from durable_agents.workflows.harness import tool_error, tool_summary

MCP_RETRY = RetryPolicy(  # transport errors only: a tool's own error comes back as an is_error result
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=[SECRET_MISSING],
)


class Mcp:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.refresh_requested = False
        self.refreshed_at = 0  # offset of the mcp_tools event the last refresh wrote

    async def discover(self, refresh: bool = False) -> None:
        """List the servers' tools (refresh: bypassing the workers' caches) and use them."""
        session = self.session
        servers = session.agent.mcp_servers
        if not servers:
            return
        found: McpDiscovery = await workflow.execute_activity(
            DISCOVER_MCP_TOOLS,
            McpDiscoverRequest(servers=servers, refresh=refresh),
            result_type=McpDiscovery,
            start_to_close_timeout=timedelta(seconds=90),
            retry_policy=MCP_RETRY,
            summary=f"mcp: list tools of {', '.join(s.name for s in servers)}",
        )
        for failure in found.failures.values():
            session.error(f"{failure}; the session goes on without its tools")
        session.use_mcp_tools(found.tools, changed=True)
        session.record("mcp_tools", text=", ".join(session.mcp_tools) or "no MCP tools")

    async def refresh(self) -> None:
        """The `refresh_tools` update asked for a new list: the old one stays if listing fails."""
        try:
            await self.discover(refresh=True)
        except ActivityError as e:
            self.session.error(f"refreshing the MCP tools failed, the old list stays: {failure_message(e)}")
        self.refreshed_at = self.session.next_offset - 1
        self.refresh_requested = False

    async def call(self, call: ToolCall) -> ToolResult:
        session = self.session
        tool = session.mcp_tools[call.name]
        server = session.agent.mcp_server(tool.server)
        assert server is not None  # routing admits only tools of the agent's servers
        request = McpCallRequest(
            server=server,
            tool=tool.tool,
            input=call.input,
            call_id=call.id,
            output_cap=session.agent.limits.tool_output_cap,
        )
        try:
            result: ToolResult = await workflow.execute_activity(
                CALL_MCP_TOOL,
                request,
                result_type=ToolResult,
                start_to_close_timeout=timedelta(seconds=server.timeout_s + 30),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=MCP_RETRY,
                summary=tool_summary(call),
            )
        except ActivityError as e:
            result = tool_error(call, f"{call.name} failed: {failure_message(e)}")
        return result
