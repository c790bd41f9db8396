"""SessionWorkflow: the harness loop. Its history is the session's durable log.

It builds the model's context from the session's events, calls `call_model`, routes each
tool call (sandbox tools go to the sandbox host that provisioned the session's container, on
first use), records results, and idles for the next user message. Decisions live in
`workflows.harness`; this module only orchestrates.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from durable_agents.contracts import (
        AGENT_NOT_FOUND,
        APPROVE,
        CALL_MCP_TOOL,
        CALL_MODEL,
        CHECK_SECRETS,
        CONTEXT_TOO_LONG,
        DENY,
        DESTROY_SANDBOX,
        DISCOVER_MCP_TOOLS,
        END_SESSION,
        EXECUTE,
        GET_EVENTS,
        GET_MODEL_CONTEXT,
        GET_STATE,
        INTERRUPT,
        LAST_SCHEDULED_RESULT,
        LOAD_SKILL,
        MODEL_NOT_CONFIGURED,
        MODEL_REQUEST_REJECTED,
        PREPARE_SESSION,
        PROVISION_SANDBOX,
        REFRESH_TOOLS,
        SA_AGENT_NAME,
        SA_AGENT_VERSION,
        SA_PARENT_SESSION,
        SA_SESSION_STATUS,
        SANDBOX_IMAGE_MISSING,
        SANDBOX_LOST,
        SANDBOXES_QUEUE,
        SECRET_MISSING,
        SEND_MESSAGE,
        SESSION_WORKFLOW,
        SNAPSHOT_WORKSPACE,
        SPAWN_AGENT,
        TOOL_RESULT,
        AgentSpec,
        ClientToolResult,
        ExecuteRequest,
        ExecuteResult,
        McpCallRequest,
        McpDiscoverRequest,
        McpDiscovery,
        McpTool,
        ModelContext,
        ModelRequest,
        ModelTurn,
        ProvisionRequest,
        SandboxHandle,
        SecretCheck,
        SessionCarry,
        SessionEvent,
        SessionInput,
        SessionResult,
        SessionSetup,
        SessionSetupRequest,
        SessionState,
        SessionStatus,
        SnapshotRef,
        SnapshotRequest,
        ToolCall,
        ToolResult,
        Usage,
        agent_version,
        attribute_allowed,
        attribute_pairs,
        unresolved_agent,
    )
    from durable_agents.workflows.harness import (
        ContextBuilder,
        LoopGuard,
        available_tools,
        budget_exhausted,
        check_tool_call,
        compaction_cut,
        compaction_method,
        estimate_tokens,
        is_sandbox_tool,
        parse_tool_uses,
        render_task,
        retry_summary_at,
        sandbox_reset_message,
        session_summary,
        spawn_refusal,
        summary_blocks,
        system_prompt,
        text_of,
        tool_definitions,
        tool_error,
        tool_summary,
        tool_timeout,
        truncation_blocks,
        truncation_note,
        validation_problems,
    )

STATUS_KEY = SearchAttributeKey.for_keyword(SA_SESSION_STATUS)
INTERRUPTED = "Interrupted by the user before this call finished."
MIN_COMPACTION_TOKENS = 1_000  # a summary of less than this saves nothing

MCP_RETRY = RetryPolicy(  # transport errors only: a tool's own error comes back as an is_error result
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=[SECRET_MISSING],
)
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=[MODEL_REQUEST_REJECTED, MODEL_NOT_CONFIGURED],
)
SETUP_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=10), maximum_attempts=5, non_retryable_error_types=[AGENT_NOT_FOUND]
)
SANDBOX_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
    non_retryable_error_types=[SANDBOX_LOST, SANDBOX_IMAGE_MISSING],
)
# Workflow versions (workflow.patched): new commands that histories recorded before them lack.
SNAPSHOTS_PATCH = "workspace-snapshots"
COMPACTION_BACKOFF_PATCH = "compaction-backoff"  # a failed summary: back off and leave turns out


def _error_type(error: ActivityError) -> str | None:
    cause = error.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _failure_message(error: BaseException) -> str:
    cause = error.cause if isinstance(error, ActivityError) else error
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, TemporalTimeout):
        return f"{cause.type.name.lower().replace('_', '-')} timeout" if cause.type else "timeout"
    return str(cause) if cause is not None else str(error)


def _is_sandbox_lost(error: ActivityError) -> bool:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == SANDBOX_LOST:
        return True
    return isinstance(cause, TemporalTimeout) and cause.type == TimeoutType.SCHEDULE_TO_START


def _check_waiting(
    tool_use_id: str, waiting: dict[str, ToolCall], answered: dict[str, Any], noun: str, what: str
) -> None:
    """An update validator's refusal: nothing with this id waits for an answer (or it has one)."""
    if tool_use_id not in waiting or tool_use_id in answered:
        listing = ", ".join(f"{i} ({c.name})" for i, c in waiting.items()) or "none"
        raise ValueError(f"no {noun} {tool_use_id!r} is waiting for {what} (waiting: {listing})")


# A session input that does not validate (a plain client's JSON) fails the workflow with the
# reason, instead of failing its first workflow task over and over.
@workflow.defn(name=SESSION_WORKFLOW, failure_exception_types=[ValidationError])
class SessionWorkflow:
    @workflow.init
    def __init__(self, inp: SessionInput) -> None:
        self.input = inp
        self.search_attributes = inp.search_attributes  # None: asked at the start (a plain client's session)
        self.events: list[SessionEvent] = []
        self.mcp_tools: dict[str, McpTool] = {}  # discovered when the session starts, by namespaced name
        # An agent named by agent_ref is resolved at the start; until then a placeholder of that name.
        self._use_agent(inp.agent or unresolved_agent(inp.agent_ref or "?"))
        self.pending: list[str] = [inp.task]
        self.status: SessionStatus = "running"
        self.ending = False
        self.turns = 0
        self.usage = Usage()
        self.last_answer: str | None = None
        self.last_error: str | None = None
        # A subagent sharing its parent's sandbox uses it but neither snapshots nor destroys it.
        self.sandbox: SandboxHandle | None = inp.shared_sandbox
        self.owns_sandbox = inp.shared_sandbox is None
        self.snapshot: SnapshotRef | None = None
        self.snapshot_at = workflow.now()
        self.children_started = 0
        self.children_running = 0
        self._sandbox_lock = asyncio.Lock()  # sandbox calls of one turn run one at a time, in order
        self._turn: asyncio.Task[None] | None = None
        self._interrupt_requested = False
        self._turn_calls: list[ToolCall] = []
        self._turn_results: dict[str, ToolResult] = {}
        self.cost_usd: float | None = 0.0  # None once a model's price is unknown
        self.stop_reason: str | None = None  # a budget ran out: the session ends
        self.awaiting: dict[str, ToolCall] = {}  # tool calls waiting for approval, by tool-use id
        self._decisions: dict[str, str | None] = {}  # tool-use id -> None (approved) or the denial reason
        self.client_waiting: dict[str, ToolCall] = {}  # custom tool calls waiting for the client's result
        self._client_results: dict[str, ClientToolResult] = {}
        # Continue-as-new: where this run's events start, and what the previous run left to do.
        self.first_offset = 0
        self.run_number = 1
        self.resume = False  # go on answering without a new user message (continued mid-answer)
        self.response_turns = 0  # model calls made for the current user message
        self.compacted_until = 0  # offset of the first event no compaction has summarised yet
        self.compaction_failures = 0  # failed summaries; after some, and between them, turns are left out
        self.compaction_retry_at: int | None = None  # context growth at which to summarise again
        self._continuing = False
        self._refresh_requested = False
        self._refreshed_at = 0
        if inp.carry is not None:
            self._restore(inp.carry)

    def _use_agent(self, agent: AgentSpec) -> None:
        self.agent = agent
        self.base_tools = available_tools(agent)
        self.system = system_prompt(agent)
        self.base_definitions = tool_definitions(self.base_tools, agent.subagents, agent.skills, agent.custom_tools)
        self.context = ContextBuilder(self.system, self.base_definitions)
        self.loop_guard = LoopGuard(agent.limits.loop_limit)

    @property
    def tools(self) -> list[str]:
        return [*self.base_tools, *self.mcp_tools]

    def _use_mcp_tools(self, tools: list[McpTool]) -> None:
        """The context with these MCP tools after the built-in ones (in discovery order: a stable prompt prefix)."""
        self.mcp_tools = {t.name: t for t in tools if t.name not in self.base_tools}
        definitions = self.base_definitions + [t.definition() for t in self.mcp_tools.values()]
        self.context = self.context.with_tools(definitions)

    def _restore(self, c: SessionCarry) -> None:
        self.context = ContextBuilder.restore(self.system, self.base_definitions, c.messages, c.synced, c.message_upto)
        self._use_mcp_tools(c.mcp_tools)
        self.context.measured_tokens, self.context.measured_count = c.measured_tokens, c.measured_count
        self.context.grown = c.context_grown
        self.compaction_failures, self.compaction_retry_at = c.compaction_failures, c.compaction_retry_at
        self.first_offset, self.run_number = c.first_offset, c.run
        self.pending, self.status = list(c.pending), c.status
        self.resume, self.response_turns = c.resume, c.response_turns
        self.turns, self.usage, self.cost_usd = c.turns, c.usage, c.cost_usd
        self.last_answer, self.last_error = c.last_answer, c.last_error
        self.sandbox, self.owns_sandbox, self.snapshot = c.sandbox, c.owns_sandbox, c.snapshot
        self.children_started = c.children_started
        self.loop_guard = LoopGuard(self.agent.limits.loop_limit, c.loop_last, c.loop_count)
        self.compacted_until = c.compacted_until

    def _carry(self) -> SessionCarry:
        last, count = self.loop_guard.state()
        return SessionCarry(
            first_offset=self.next_offset,
            run=self.run_number + 1,
            messages=self.context.messages,
            synced=self.context.synced,
            pending=self.pending,
            status=self.status,
            resume=self.resume,
            response_turns=self.response_turns,
            turns=self.turns,
            usage=self.usage,
            cost_usd=self.cost_usd,
            last_answer=self.last_answer,
            last_error=self.last_error,
            sandbox=self.sandbox,
            owns_sandbox=self.owns_sandbox,
            snapshot=self.snapshot,
            children_started=self.children_started,
            loop_last=last,
            loop_count=count,
            measured_tokens=self.context.measured_tokens,
            measured_count=self.context.measured_count,
            compacted_until=self.compacted_until,
            mcp_tools=list(self.mcp_tools.values()),
            compaction_failures=self.compaction_failures,
            compaction_retry_at=self.compaction_retry_at,
            context_grown=self.context.grown,
            message_upto=self.context.upto,
        )

    def _should_continue(self) -> bool:
        """Temporal suggests it (history count or size), or this run reached the agent's limit."""
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() >= self.agent.limits.history_events
        )

    # --- the log ----------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        """The offset the next event gets (earlier runs hold those before first_offset)."""
        return self.first_offset + len(self.events)

    def _record(self, kind: Any, **fields: Any) -> SessionEvent:
        event = SessionEvent(offset=self.next_offset, kind=kind, at=workflow.now(), **fields)
        self.events.append(event)
        return event

    def _set_status(self, status: SessionStatus) -> None:
        if status == self.status:
            return
        self.status = status
        self._record("status", status=status)
        if attribute_allowed(self.search_attributes, SA_SESSION_STATUS):
            workflow.upsert_search_attributes([STATUS_KEY.value_set(status)])
        self._details()  # the UI's current details show the new status (a done session: "done")

    def _details(self, last: str | None = None) -> None:
        u = self.usage
        tokens_in = u.total_tokens - u.output_tokens  # cached or not
        text = f"status: {self.status} · turn {self.turns} · tokens in {tokens_in} / out {u.output_tokens}"
        if last:
            text += f" · last: {last}"
        workflow.set_current_details(text)

    # --- the loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: SessionInput) -> SessionResult:
        await self._begin(inp)
        try:
            while not self.stop_reason:  # set at the start when the session cannot run (unknown secret)
                if self._should_continue():
                    self._continuing = True
                    break
                if not self.resume:
                    try:
                        await workflow.wait_condition(
                            lambda: bool(self.pending) or self.ending or self._refresh_requested,
                            timeout=timedelta(seconds=self.agent.limits.idle_timeout_s),
                            timeout_summary="idle: waiting for a user message",
                        )
                    except TimeoutError:  # the idle timeout
                        break
                    if self._refresh_requested and not self.ending:
                        await self._refresh_mcp_tools()
                        continue
                    if self.ending or not self.pending:
                        break
                    self._set_status("running")
                    text = "\n\n".join(self.pending)
                    self.pending.clear()
                    message = self._record("user_message", text=text)
                    self.context.add_user_text(text, at=message.offset)
                    self.response_turns = 0
                self.resume = False
                await self._respond_interruptibly()
                if self._continuing:  # in the middle of the answer: the next run goes on with it
                    break
                if inp.one_shot or self.stop_reason:
                    break
                if self.sandbox is not None and self.owns_sandbox and workflow.patched(SNAPSHOTS_PATCH):
                    await self._snapshot()
                self._set_status("idle")
                self._details()
        finally:
            if not self._continuing:  # the next run keeps the sandbox
                await self._destroy_sandbox()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._continuing:
            carry = self._carry()
            resolved = {"agent": self.agent, "search_attributes": self.search_attributes}
            workflow.continue_as_new(
                inp.model_copy(update={"carry": carry, "schedule": None, **resolved}),
                memo={"first_offset": carry.first_offset, "run": carry.run, "previous_run_id": workflow.info().run_id},
            )
        final: SessionStatus = "failed" if (inp.one_shot and self.last_error) or self.stop_reason else "done"
        self._set_status(final)
        return SessionResult(
            status=final,
            answer=self.last_answer,
            turns=self.turns,
            usage=self.usage,
            error=self.stop_reason or self.last_error,
            cost_usd=self.cost_usd,
        )

    async def _begin(self, inp: SessionInput) -> None:
        """The run's first event: the session's start, or where a continued run picks up."""
        if inp.carry is not None:
            previous = workflow.info().continued_run_id
            self._record(
                "continued",
                run_id=previous,
                text=f"run {self.run_number} of this session, continued from run {previous} "
                f"(events before offset {self.first_offset} are in the earlier runs)",
            )
            return
        if inp.agent is None or self.search_attributes is None:
            problem = await self._prepare(inp)
            if problem is not None:
                self.stop_reason = f"the session cannot start: {problem}"
                self._record("session_started", text=self.pending[0])
                self._record("error", text=self.stop_reason)
                return
        if inp.schedule is not None:
            self.pending = [await self._render_scheduled_task(inp.task, inp.schedule)]
        self._record(
            "session_started",
            text=self.pending[0],
            model=self.agent.model.name,
            agent=self.agent,
            agent_version=agent_version(self.agent),
        )
        try:
            await self._check_sandbox_secrets(inp)
            await self._discover_mcp_tools()
        except ActivityError as e:  # an unknown secret: nothing will work as the agent file says
            self.stop_reason = f"the session cannot start: {_failure_message(e)}"
            self._record("error", text=self.stop_reason)
            return
        if self.agent.sandbox.eager and self.owns_sandbox:
            try:
                await self._ensure_sandbox()
            except ActivityError as e:  # the first sandbox tool call tries again
                self._record("error", text=f"eager provisioning failed: {_failure_message(e)}")

    async def _prepare(self, inp: SessionInput) -> str | None:
        """A plain client's session: resolve its agent_ref and learn which search attributes the
        namespace has, in one activity; then set those the starter did not. The problem, or None."""
        try:
            setup: SessionSetup = await workflow.execute_activity(
                PREPARE_SESSION,
                SessionSetupRequest(
                    agent_ref=inp.agent_ref if inp.agent is None else None,
                    check_attributes=self.search_attributes is None,
                ),
                result_type=SessionSetup,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SETUP_RETRY,
                summary=f"prepare: agent {inp.agent_ref}" if inp.agent is None else "prepare: search attributes",
            )
        except ActivityError as e:
            return _failure_message(e)
        if setup.agent is not None:
            self._use_agent(setup.agent)
        if self.search_attributes is None:
            self.search_attributes = setup.search_attributes or False
            already = {pair.key.name for pair in workflow.info().typed_search_attributes}
            wanted = {
                SA_AGENT_NAME: self.agent.name,
                SA_AGENT_VERSION: agent_version(self.agent),
                SA_SESSION_STATUS: self.status,
            }
            pairs = attribute_pairs(self.search_attributes, {k: v for k, v in wanted.items() if k not in already})
            if pairs.search_attributes:
                workflow.upsert_search_attributes([pair.key.value_set(pair.value) for pair in pairs])
        return None

    async def _check_sandbox_secrets(self, inp: SessionInput) -> None:
        """Secrets the sandbox workers will need (egress credentials, a git token), checked now on one
        of them: an unknown name is an error at the start, not at the first tool call."""
        uses = {name: "sandbox egress" for name in self.agent.sandbox.secrets()}
        git = inp.workspace.git if inp.workspace else None
        if git is not None and git.token_secret:
            uses[git.token_secret] = f"git clone of {git.url}"
        if not uses or not self.owns_sandbox:
            return
        await workflow.execute_activity(
            CHECK_SECRETS,
            SecretCheck(names=list(uses), uses=uses),
            task_queue=SANDBOXES_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(seconds=self.agent.sandbox.host_wait_s + 30),
            retry_policy=MCP_RETRY,
            summary=f"check secrets: {', '.join(uses)}",
        )

    async def _discover_mcp_tools(self, refresh: bool = False) -> None:
        servers = self.agent.mcp_servers
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
            self._record("error", text=f"{failure}; the session goes on without its tools")
        self._use_mcp_tools(found.tools)
        self._record("mcp_tools", text=", ".join(self.mcp_tools) or "no MCP tools")

    async def _refresh_mcp_tools(self) -> None:
        try:
            await self._discover_mcp_tools(refresh=True)
        except ActivityError as e:
            self._record("error", text=f"refreshing the MCP tools failed, the old list stays: {_failure_message(e)}")
        self._refreshed_at = self.next_offset - 1
        self._refresh_requested = False

    async def _call_mcp(self, call: ToolCall) -> ToolResult:
        tool = self.mcp_tools[call.name]
        server = self.agent.mcp_server(tool.server)
        assert server is not None
        request = McpCallRequest(
            server=server,
            tool=tool.tool,
            input=call.input,
            call_id=call.id,
            output_cap=self.agent.limits.tool_output_cap,
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
            result = tool_error(call, f"{call.name} failed: {_failure_message(e)}")
        return result

    async def _respond_interruptibly(self) -> None:
        self._interrupt_requested = False
        self._turn = asyncio.create_task(self._respond())
        try:
            await self._turn
        except asyncio.CancelledError:
            if not self._interrupt_requested:
                raise  # the session itself is being cancelled
            # Every tool_use needs a tool_result, or the next request is invalid.
            missing = [c for c in self._turn_calls if c.id not in self._turn_results]
            if missing:
                cut = [tool_error(c, INTERRUPTED) for c in missing]
                for result in cut:
                    self._record("tool_result", tool_result=result)
                self.context.add_tool_results(cut, at=self.next_offset - 1)
            self.last_error = None
            self._record("interrupted", text=f"interrupted by the user; {len(missing)} tool call(s) cut short")
        finally:
            self._turn = None
            self._turn_calls = []
            self._turn_results = {}

    async def _respond(self) -> None:
        """Model and tools until the model ends its turn (or the turn budget runs out)."""
        self.last_error = None
        retried_too_long = False  # the API's "prompt is too long": compact, then one more try
        while self.response_turns < self.agent.limits.max_turns:
            if self.response_turns and self._should_continue():
                self.resume = self._continuing = True
                return
            if self._refresh_requested:
                await self._refresh_mcp_tools()
            if self._over_context_budget():
                await self._compact()
            request = self.context.request(workflow.info().workflow_id, self.agent.model)
            try:
                turn = await self._call_model(request, f"model: {request.model}")
            except ActivityError as e:
                if _error_type(e) == CONTEXT_TOO_LONG and not retried_too_long:
                    retried_too_long = True
                    self._record("error", text=f"{_failure_message(e)}; compacting the context and trying again")
                    await self._compact(forced=True)
                    continue
                self.last_error = f"model call failed: {_failure_message(e)}"
                self._record("error", text=self.last_error)
                return
            retried_too_long = False
            self.turns += 1
            self.response_turns += 1
            self._spend(turn.usage, self.agent.model.cost(turn.usage))
            # Whatever shape the model's tool_use blocks have: malformed ones get an error result, not a crash.
            calls, content, malformed = parse_tool_uses(turn.content, str(self.next_offset))
            answered_at = self.next_offset  # the model_turn event's
            self.context.model_answered(content, turn.usage.total_tokens - turn.usage.output_tokens, answered_at)
            self._record(
                "model_turn",
                content=turn.content,
                text=text_of(turn.content) or None,
                tool_calls=calls or None,
                usage=turn.usage,
                model=turn.model,
                stop_reason=turn.stop_reason,
            )
            self._details()
            if not calls:
                self.last_answer = text_of(turn.content)
                self._over_budget()  # the answer stands; a spent budget ends the session after it
                return
            if self._over_budget():
                return
            self._turn_calls, self._turn_results = calls, {}
            results = await asyncio.gather(*(self._run_tool(call, malformed.get(call.id)) for call in calls))
            self.context.add_tool_results(list(results), at=self.next_offset - 1)
            self._turn_calls = []
            if self._over_budget():  # subagents spend too
                return
        self.last_error = f"the turn limit ({self.agent.limits.max_turns} model calls) was reached"
        self._record("error", text=self.last_error)

    async def _call_model(self, request: ModelRequest, summary: str) -> ModelTurn:
        # The call's event (its turn, compaction or error) is the next one recorded: its offset
        # keys the call's live deltas.
        turn: ModelTurn = await workflow.execute_activity(
            CALL_MODEL,
            request.model_copy(update={"event_offset": self.next_offset}),
            result_type=ModelTurn,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=15),
            retry_policy=MODEL_RETRY,
            summary=summary,
        )
        return turn

    # --- compaction -------------------------------------------------------------------------

    def _over_context_budget(self) -> bool:
        budget = self.agent.limits.context_tokens
        return budget is not None and self.context.estimated_tokens() > budget

    async def _compact(self, forced: bool = False) -> None:
        """Summarise the older part of the context (a model call); keep the newest turns verbatim.
        After a summary failed, and until the context has grown enough to try again, leave the
        oldest turns out instead (no model call). The events stay as they are: only what the
        model sees changes. forced: the API said the context is too long, whatever the estimate."""
        limits = self.agent.limits
        before = self.context.estimated_tokens()
        # Over the model's window, whatever the budget says: keep at most a quarter of it verbatim.
        keep = min(limits.keep_tokens(), before // 4) if forced else limits.keep_tokens()
        cut = compaction_cut(self.context.messages, keep)
        if cut is None or estimate_tokens(self.context.messages[:cut]) < MIN_COMPACTION_TOKENS:
            return  # nothing worth summarising: the newest turns alone are over the budget
        why = "the model's context window" if forced else f"its budget of {limits.context_tokens}"
        reason = f"context ~{before} tokens over {why}"
        method = compaction_method(limits, self.compaction_failures, self.compaction_retry_at, self.context.grown)
        if method == "truncation":
            self._leave_out(cut, reason)
            return
        request = self.context.compaction_request(cut, workflow.info().workflow_id, self.agent.model)
        try:
            turn = await self._call_model(
                request, f"compaction: summarise {cut} of {len(self.context.messages)} messages"
            )
        except ActivityError as e:
            self._summary_failed(cut, before, reason, f"compaction failed: {_failure_message(e)}")
            return
        self._spend(turn.usage, self.agent.model.cost(turn.usage))
        summary = text_of(turn.content)
        if not summary:
            self._summary_failed(cut, before, reason, "compaction failed: the model wrote an empty summary")
            return
        kept = len(self.context.messages) - cut
        first, last = self._covers(cut)
        self.context.compact(cut, summary_blocks(summary))
        self._record(
            "compaction",
            text=summary,
            covers=[first, last],
            usage=turn.usage,
            model=turn.model,
            method="summary",
            stop_reason=f"{reason}: {cut} messages summarised, {kept} kept; now ~{self.context.estimated_tokens()} "
            "tokens",
        )
        self.compacted_until = last + 1

    def _covers(self, cut: int) -> tuple[int, int]:
        """The offsets of the events whose content is in messages[:cut]."""
        until = self.context.covered_until(cut)
        return self.compacted_until, until if until is not None else self.next_offset - 1

    def _summary_failed(self, cut: int, before: int, reason: str, problem: str) -> None:
        """Back off (the next summary only once the context has grown) and leave the oldest turns
        out for now; sessions recorded before the back-off kept the context as it was."""
        if not workflow.patched(COMPACTION_BACKOFF_PATCH):
            self._record("error", text=f"{problem}; the context stays as it is")
            return
        limits = self.agent.limits
        self.compaction_failures += 1
        self.compaction_retry_at = retry_summary_at(limits, self.context.grown, before)
        if self.compaction_failures >= limits.compaction_max_failures:
            then = f"no more summaries this session ({self.compaction_failures} failed)"
        else:
            then = f"the next summary once ~{self.compaction_retry_at - self.context.grown} more tokens are added"
        self._record("error", text=f"{problem}; the oldest turns are left out instead, {then}")
        self._leave_out(cut, reason)

    def _leave_out(self, cut: int, reason: str) -> None:
        """The deterministic fallback: the oldest turns leave the context (never the log), cut
        where no tool_result loses its tool_use."""
        first, last = self._covers(cut)
        kept = len(self.context.messages) - cut
        shown = sum(1 for m in self.context.messages[cut:] if m["role"] == "assistant")
        note = truncation_note(self.turns - shown, first, last)
        self.context.compact(cut, truncation_blocks(self.context.messages[:cut], note))
        self._record(
            "compaction",
            text=note,
            covers=[first, last],
            method="truncation",
            stop_reason=f"{reason}: {cut} messages left out, {kept} kept; now ~{self.context.estimated_tokens()} "
            "tokens",
        )
        self.compacted_until = last + 1

    # --- tools ------------------------------------------------------------------------------

    async def _run_tool(self, call: ToolCall, malformed: str | None = None) -> ToolResult:
        schemas = [*self.agent.custom_tools, *self.mcp_tools.values()]
        problem = malformed or check_tool_call(call, self.tools, schemas) or self.loop_guard.check(call)
        if problem is None and self.agent.policy(call.name) == "always_ask":
            denial = await self._await_approval(call)
            if denial is not None:
                problem = f"The user denied this {call.name} call: {denial}"
        if problem is not None:
            result = tool_error(call, problem)
        elif self.agent.custom_tool(call.name) is not None:
            result = await self._await_client(call)
        elif call.name in self.mcp_tools:
            result = await self._call_mcp(call)
        elif call.name == SPAWN_AGENT:
            result = await self._spawn(call)
        elif call.name == LOAD_SKILL:
            async with self._sandbox_lock:
                result = await self._load_skill(call)
        elif is_sandbox_tool(call.name):
            async with self._sandbox_lock:
                result = await self._run_in_sandbox(call)
        else:  # pragma: no cover - check_tool_call admits no other tool
            result = tool_error(call, "not implemented")
        self._turn_results[call.id] = result
        self._record("tool_result", tool_result=result)
        self._details(tool_summary(call))
        return result

    async def _ensure_sandbox(self) -> SandboxHandle:
        if self.sandbox is None:
            restore = self.snapshot if workflow.patched(SNAPSHOTS_PATCH) else None
            self.sandbox = await workflow.execute_activity(
                PROVISION_SANDBOX,
                ProvisionRequest(
                    session_id=workflow.info().workflow_id,
                    spec=self.agent.sandbox,
                    restore=restore,
                    seed=self.input.workspace if restore is None else None,
                ),
                result_type=SandboxHandle,
                schedule_to_start_timeout=timedelta(minutes=2),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=SANDBOX_RETRY,
                task_queue=SANDBOXES_QUEUE,
                summary=f"provision: {self.agent.sandbox.image}" + (" (restore snapshot)" if restore else ""),
            )
            self.owns_sandbox = True
            self.snapshot_at = workflow.now()
            self._record("sandbox_provisioned", sandbox=self.sandbox)
        return self.sandbox

    def _lost(self, handle: SandboxHandle) -> None:
        self.sandbox = None
        self._record("sandbox_destroyed", sandbox=handle, text="lost")

    async def _run_in_sandbox(self, call: ToolCall) -> ToolResult:
        try:
            handle = await self._ensure_sandbox()
        except ActivityError as e:
            return tool_error(call, f"No sandbox could be provisioned: {_failure_message(e)}")
        timeout_s = tool_timeout(call, self.agent.sandbox.timeout_s)
        try:
            out: ExecuteResult = await workflow.execute_activity(
                EXECUTE,
                ExecuteRequest(
                    handle=handle,
                    call_id=call.id,
                    name=call.name,
                    input=call.input,
                    timeout_s=timeout_s,
                    output_cap=self.agent.limits.tool_output_cap,
                ),
                result_type=ExecuteResult,
                task_queue=handle.host_queue,
                schedule_to_start_timeout=self._host_wait(),
                start_to_close_timeout=timedelta(seconds=timeout_s + 60),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=SANDBOX_RETRY,
                summary=tool_summary(call),
            )
        except ActivityError as e:
            self._raise_if_interrupted()
            if not _is_sandbox_lost(e):
                return tool_error(call, f"Tool failed: {_failure_message(e)}")
            self._lost(handle)
            if not workflow.patched(SNAPSHOTS_PATCH):
                return tool_error(
                    call,
                    "The sandbox was lost (its container or host went away) and this call did not "
                    "complete. The next call runs in a new, empty sandbox.",
                )
            # Cattle: a new sandbox at once, with the workspace as last snapshotted.
            try:
                replacement = await self._ensure_sandbox()
            except ActivityError as provision_error:
                return tool_error(call, sandbox_reset_message(None, self.snapshot, _failure_message(provision_error)))
            return tool_error(call, sandbox_reset_message(replacement, self.snapshot))
        result = ToolResult(call_id=call.id, name=call.name, output=out.output, is_error=out.is_error)
        every = self.agent.sandbox.snapshot_every_s
        if (
            every
            and self.owns_sandbox
            and workflow.patched(SNAPSHOTS_PATCH)
            and workflow.now() - self.snapshot_at >= timedelta(seconds=every)
        ):
            await self._snapshot()
        return result

    def _host_wait(self) -> timedelta:
        return timedelta(seconds=self.agent.sandbox.host_wait_s)

    async def _snapshot(self) -> None:
        """Snapshot /workspace (a no-op activity when it is unchanged since the last one)."""
        handle = self.sandbox
        if handle is None:
            return
        try:
            ref: SnapshotRef = await workflow.execute_activity(
                SNAPSHOT_WORKSPACE,
                SnapshotRequest(handle=handle, session_id=workflow.info().workflow_id, previous=self.snapshot),
                result_type=SnapshotRef,
                task_queue=handle.host_queue,
                schedule_to_start_timeout=self._host_wait(),
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=SANDBOX_RETRY,
                summary="snapshot: /workspace",
            )
        except ActivityError as e:
            if _is_sandbox_lost(e):
                self._lost(handle)
            else:
                workflow.logger.warning("workspace snapshot failed: %s", _failure_message(e))
            return
        self.snapshot_at = workflow.now()
        if self.snapshot is None or ref.key != self.snapshot.key:
            self.snapshot = ref
            self._record("sandbox_snapshot", snapshot=ref)

    async def _destroy_sandbox(self) -> None:
        if not self.owns_sandbox:
            self.sandbox = None  # the parent's: it stays
            return
        if self.sandbox is not None and workflow.patched(SNAPSHOTS_PATCH):
            await self._snapshot()
        handle, self.sandbox = self.sandbox, None
        if handle is None:
            return
        try:
            await workflow.execute_activity(
                DESTROY_SANDBOX,
                handle,
                task_queue=handle.host_queue,
                schedule_to_start_timeout=self._host_wait(),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=SANDBOX_RETRY,
                summary=f"destroy: {handle.sandbox_id[:12]}",
            )
        except ActivityError as e:
            workflow.logger.warning("sandbox not destroyed: %s", _failure_message(e))
        self._record("sandbox_destroyed", sandbox=handle)

    async def _render_scheduled_task(self, template: str, schedule: str) -> str:
        last = ""
        if "{last_result}" in template:
            try:
                last = await workflow.execute_activity(
                    LAST_SCHEDULED_RESULT,
                    schedule,
                    result_type=str,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=3),
                    summary=f"last result of schedule {schedule}",
                )
            except ActivityError as e:
                workflow.logger.warning("no last result for %s: %s", schedule, _failure_message(e))
        return render_task(template, workflow.now(), last)

    def _spend(self, usage: Usage, cost_usd: float | None) -> None:
        self.usage = self.usage + usage
        self.cost_usd = None if cost_usd is None or self.cost_usd is None else self.cost_usd + cost_usd

    def _over_budget(self) -> bool:
        reason = budget_exhausted(self.agent.limits, self.usage, self.cost_usd)
        if reason is not None:
            self.stop_reason = reason
            self._record("error", text=f"stopped: {reason}")
        return reason is not None

    async def _load_skill(self, call: ToolCall) -> ToolResult:
        name = str(call.input["name"])
        skill = next((s for s in self.agent.skills if s.name == name), None)
        if skill is None:
            known = ", ".join(s.name for s in self.agent.skills)
            return tool_error(call, f"Unknown skill {name!r} ({known}).")
        note = ""
        if call.input.get("copy_files") and skill.files:
            for i, (rel, content) in enumerate(sorted(skill.files.items())):
                write = ToolCall(
                    id=f"{call.id}-file-{i}",
                    name="write_file",
                    input={"path": f"/workspace/skills/{name}/{rel}", "content": content},
                )
                written = await self._run_in_sandbox(write)
                if written.is_error:
                    return tool_error(call, written.output)
            copied = ", ".join(sorted(skill.files))
            note = f"\n\n[{len(skill.files)} file(s) copied to /workspace/skills/{name}/: {copied}]"
        self._record("skill_loaded", text=name)
        return ToolResult(call_id=call.id, name=call.name, output=skill.body + note)

    async def _wait_on_someone(
        self, call: ToolCall, waiting: dict[str, ToolCall], answers: dict[str, Any], kind: Any, what: str
    ) -> Any:
        """Wait, durably (hours or days, across worker restarts), until an update answers `call`."""
        waiting[call.id] = call
        self._record(kind, tool_calls=[call], text=tool_summary(call))
        self._set_status("waiting")
        self._details(f"{what}: {tool_summary(call)}")
        try:
            await workflow.wait_condition(lambda: call.id in answers)
        finally:
            waiting.pop(call.id, None)
            if not self.awaiting and not self.client_waiting and self.status == "waiting":
                self._set_status("running")
        return answers.pop(call.id)

    async def _await_approval(self, call: ToolCall) -> str | None:
        """approve (None) or deny (the reason)."""
        denial: str | None = await self._wait_on_someone(
            call, self.awaiting, self._decisions, "approval_requested", "waiting for approval"
        )
        if denial is None:
            self._record("approval_granted", tool_calls=[call], text=tool_summary(call))
        else:
            self._record("approval_denied", tool_calls=[call], text=denial)
        return denial

    async def _await_client(self, call: ToolCall) -> ToolResult:
        """A custom tool: the client runs it and posts the result."""
        posted: ClientToolResult = await self._wait_on_someone(
            call, self.client_waiting, self._client_results, "tool_requested", "waiting for the client"
        )
        return ToolResult(call_id=call.id, name=call.name, output=posted.content, is_error=posted.is_error)

    # --- subagents ---------------------------------------------------------------------------

    async def _spawn(self, call: ToolCall) -> ToolResult:
        """Run a subagent as a child SessionWorkflow; its final answer is the tool result."""
        name, task = str(call.input["agent"]), str(call.input["task"])
        sub = self.agent.subagent(name)
        refusal = spawn_refusal(
            sub, name, self.input.depth, self.agent.limits, self.children_started, self.children_running
        )
        if refusal is not None or sub is None or sub.spec is None:
            return tool_error(call, refusal or "")
        share = call.input.get("share_sandbox")
        shared = None
        if sub.share_sandbox if share is None else share:
            try:
                async with self._sandbox_lock:
                    shared = await self._ensure_sandbox()
            except ActivityError as e:
                return tool_error(call, f"No sandbox to share could be provisioned: {_failure_message(e)}")
        self.children_started += 1
        self.children_running += 1
        child_id = f"{workflow.info().workflow_id}/sub-{self.children_started}"
        self._record("subagent_started", child=child_id, text=f"{name}: {task}", sandbox=shared)
        try:
            result: SessionResult = await workflow.execute_child_workflow(
                SESSION_WORKFLOW,
                SessionInput(
                    agent=sub.spec,
                    task=task,
                    one_shot=True,
                    search_attributes=self.search_attributes,
                    parent_session=workflow.info().workflow_id,
                    depth=self.input.depth + 1,
                    shared_sandbox=shared,
                ),
                id=child_id,
                task_queue=workflow.info().task_queue,
                result_type=SessionResult,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                static_summary=session_summary(sub.spec.name, task),
                search_attributes=self._child_attributes(sub.spec),
            )
        except ChildWorkflowError as e:
            self._raise_if_interrupted()
            reason = _failure_message(e.cause) if e.cause else str(e)
            self._record("subagent_finished", child=child_id, status="failed", text=reason)
            return tool_error(call, f"Subagent {child_id} ({name}) failed: {reason}")
        finally:
            self.children_running -= 1
        self._spend(result.usage, result.cost_usd)
        self._record(
            "subagent_finished",
            child=child_id,
            status=result.status,
            usage=result.usage,
            text=result.answer if result.status == "done" else result.error,
        )
        if result.status != "done":
            return tool_error(call, f"Subagent {child_id} ({name}) failed: {result.error}")
        return ToolResult(
            call_id=call.id, name=call.name, output=f"Subagent {child_id} ({name}) answered:\n{result.answer or ''}"
        )

    def _raise_if_interrupted(self) -> None:
        """A cancellation that arrived as an activity or child failure still cuts the turn short."""
        if self._interrupt_requested and self._turn is not None:
            raise asyncio.CancelledError

    def _child_attributes(self, agent: AgentSpec) -> TypedSearchAttributes | None:
        if not self.search_attributes:
            return None
        return attribute_pairs(
            self.search_attributes,
            {
                SA_AGENT_NAME: agent.name,
                SA_SESSION_STATUS: "running",
                SA_AGENT_VERSION: agent_version(agent),
                SA_PARENT_SESSION: workflow.info().workflow_id,
            },
        )

    # --- handlers ---------------------------------------------------------------------------

    @workflow.update(name=APPROVE)
    def approve(self, tool_use_id: str) -> int:
        self._decisions[tool_use_id] = None
        return self.next_offset

    @approve.validator
    def _validate_approve(self, tool_use_id: str) -> None:
        self._check_awaiting(tool_use_id)

    @workflow.update(name=DENY)
    def deny(self, tool_use_id: str, reason: str) -> int:
        self._decisions[tool_use_id] = reason.strip() or "no reason given"
        return self.next_offset

    @deny.validator
    def _validate_deny(self, tool_use_id: str, reason: str) -> None:
        self._check_awaiting(tool_use_id)

    def _check_awaiting(self, tool_use_id: str) -> None:
        _check_waiting(tool_use_id, self.awaiting, self._decisions, "tool call", "approval")

    @workflow.update(name=TOOL_RESULT)
    def tool_result(self, tool_use_id: str, result: dict[str, Any]) -> int:
        self._client_results[tool_use_id] = ClientToolResult.model_validate(result)
        return self.next_offset

    @tool_result.validator
    def _validate_tool_result(self, tool_use_id: str, result: dict[str, Any]) -> None:
        _check_waiting(tool_use_id, self.client_waiting, self._client_results, "custom tool call", "a result")
        try:
            ClientToolResult.model_validate(result)
        except ValidationError as e:
            shape = '{"content": string, "is_error": bool (optional)}'
            raise ValueError(f"a tool result is a JSON object {shape}: {validation_problems(e, 'result')}") from None

    @workflow.update(name=INTERRUPT)
    async def interrupt(self) -> int:
        """Cancel the model call, tool runs and subagents in flight; the session goes idle."""
        self._interrupt_requested = True
        if self._turn is not None:
            self._turn.cancel()
        await workflow.wait_condition(lambda: self._turn is None)
        return self.next_offset

    @interrupt.validator
    def _validate_interrupt(self) -> None:
        if self._turn is None or self._turn.done():
            raise ValueError(f"nothing to interrupt: the session is {self.status}")

    @workflow.update(name=SEND_MESSAGE)
    async def send_message(self, text: str) -> int:
        """Queue a user message; returns the offset the session log had when it arrived."""
        self.pending.append(text)
        return self.next_offset

    @send_message.validator
    def _validate_message(self, text: str) -> None:
        if not text or not text.strip():
            raise ValueError("the message is empty")
        if self.ending or self.status in ("done", "failed"):
            raise ValueError(f"the session is {'ending' if self.ending else self.status}; start a new one")
        if self.input.one_shot:
            raise ValueError("this is a one-shot session; it takes no further messages")

    @workflow.update(name=REFRESH_TOOLS)
    async def refresh_tools(self) -> int:
        """Re-list the MCP servers' tools (bypassing the workers' caches) before the next model call;
        answers once done, with the offset of the new `mcp_tools` event."""
        self._refresh_requested = True
        await workflow.wait_condition(lambda: not self._refresh_requested)
        return self._refreshed_at

    @refresh_tools.validator
    def _validate_refresh(self) -> None:
        if not self.agent.mcp_servers:
            raise ValueError("this session's agent lists no MCP servers")
        if self.status in ("done", "failed"):
            raise ValueError(f"the session is {self.status}")

    @workflow.signal(name=END_SESSION)
    def end_session(self) -> None:
        self.ending = True

    @workflow.query(name=GET_EVENTS)
    def get_events(self, start: int = 0, stop: int | None = None) -> list[SessionEvent]:
        """Events by offset; this run holds those from first_offset on (earlier runs, the others)."""
        lo = max(0, start - self.first_offset)
        hi = None if stop is None else max(0, stop - self.first_offset)
        return self.events[lo:hi]

    @workflow.query(name=GET_STATE)
    def get_state(self) -> SessionState:
        return SessionState(
            status=self.status,
            agent=self.agent.name,
            turns=self.turns,
            events=self.next_offset,
            usage=self.usage,
            last_answer=self.last_answer,
            sandbox=self.sandbox,
            cost_usd=self.cost_usd,
            awaiting_approval=list(self.awaiting.values()),
            awaiting_client=list(self.client_waiting.values()),
            first_offset=self.first_offset,
            run=self.run_number,
            context_tokens=self.context.estimated_tokens(),
            error=self.stop_reason or self.last_error,
        )

    @workflow.query(name=GET_MODEL_CONTEXT)
    def model_context(self) -> ModelContext:
        return ModelContext(system=self.context.system, tools=self.context.tools, messages=self.context.messages)
