"""Durable names: task queues, the workflow, activities, updates and queries, search attributes,
the error types activities report, the built-in sandbox tools. A running session's history refers
to them, so they are defined once, here, and never renamed."""

from __future__ import annotations

from typing import Literal

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from durable_agents.errors import ErrorType

AGENTS_QUEUE = "agents"
SANDBOXES_QUEUE = "sandboxes"
SESSION_WORKFLOW = "SessionWorkflow"

SPAWN_AGENT = "spawn_agent"
LOAD_SKILL = "load_skill"
SAVE_SKILL = "save_skill"
# Activities of the skill registry (harness workers).
LEARNED_SKILLS = "learned_skills"
SAVE_LEARNED_SKILL = "save_learned_skill"
RECORD_SKILL_RESULTS = "record_skill_results"

CALL_MODEL = "call_model"
PROVISION_SANDBOX = "provision_sandbox"
EXECUTE = "execute"
PROVISION_AND_EXECUTE = "provision_and_execute"  # a session's first sandbox call, with its provisioning
DESTROY_SANDBOX = "destroy_sandbox"
LAST_SCHEDULED_RESULT = "last_scheduled_result"
DISCOVER_MCP_TOOLS = "discover_mcp_tools"
CALL_MCP_TOOL = "call_mcp_tool"
CHECK_SECRETS = "check_secrets"
PREPARE_SESSION = "prepare_session"  # a session from a plain client: its agent by name, its search attributes
MCP_SEPARATOR = "__"  # the model sees MCP tools as <server>__<tool>
SNAPSHOT_WORKSPACE = "snapshot_workspace"
INDEX_SESSION = "index_session"  # episodic memory: a session's log into its agent's search index

# Queries and updates of SessionWorkflow.
SEND_MESSAGE = "send_message"
END_SESSION = "end_session"
REFRESH_TOOLS = "refresh_tools"  # re-list the MCP servers' tools before the next model call
INTERRUPT = "interrupt"
APPROVE = "approve"
DENY = "deny"
SET_BUDGET = "set_budget"  # the session's cost budget (US$; None: none), changed while it runs
TOOL_RESULT = "tool_result"  # the result of a custom (client-executed) tool call
GET_EVENTS = "events"
GET_STATE = "state"
GET_MODEL_CONTEXT = "model_context"

# Custom search attributes (Keyword), registered when the dev server starts.
SA_AGENT_NAME = "AgentName"
SA_SESSION_STATUS = "SessionStatus"
SA_AGENT_VERSION = "AgentVersion"
SA_PARENT_SESSION = "ParentSession"  # set on subagents: the session that spawned them
SEARCH_ATTRIBUTE_NAMES = (SA_AGENT_NAME, SA_SESSION_STATUS, SA_AGENT_VERSION, SA_PARENT_SESSION)


def attribute_allowed(setting: bool | list[str] | None, name: str) -> bool:
    """May a session set this search attribute? `SessionInput.search_attributes`: True (all of
    ours are registered), a list (only these are), False or None (none, or not known yet)."""
    return setting is True or (isinstance(setting, list) and name in setting)


def attribute_pairs(setting: bool | list[str] | None, values: dict[str, str]) -> TypedSearchAttributes:
    """Keyword search attributes, leaving out those the namespace does not have (setting one
    would fail the workflow task)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in values.items()
            if attribute_allowed(setting, name)
        ]
    )


# The built-in tools; each runs in the sandbox through `execute`. An agent that names no tools gets
# the file tools (DEFAULT_TOOLS): the others are opted into (web_search needs a search backend).
# memory_search is not named by agents: a session with memory stores attached has it.
MEMORY_SEARCH = "memory_search"
SANDBOX_TOOLS = (
    "bash",
    "read_file",
    "write_file",
    "edit_file",
    "glob",
    "grep",
    "web_fetch",
    "web_search",
    MEMORY_SEARCH,
)
DEFAULT_TOOLS = ("bash", "read_file", "write_file", "edit_file")
KNOWN_TOOLS = tuple(t for t in SANDBOX_TOOLS if t != MEMORY_SEARCH)
# Other names an agent file may give a built-in tool (Managed Agents' toolset names them so).
TOOL_ALIASES = {"read": "read_file", "write": "write_file", "edit": "edit_file"}
WEB_SEARCH = "web_search"
GLOB_CAP = 1000  # paths a glob returns at most
GREP_CAP = 1000  # lines, files or counts a grep returns at most
GREP_DEFAULT_LIMIT = 250  # ... unless its head_limit says otherwise


def host_queue(host_id: str) -> str:
    """The task queue that reaches one sandbox host (the worker-specific-task-queue pattern)."""
    return f"{SANDBOXES_QUEUE}-{host_id}"


ToolPolicy = Literal["always_allow", "always_ask"]

# ApplicationError types that cross from activities to the workflow (durable_agents.errors.ErrorType).
SANDBOX_LOST = ErrorType.SANDBOX_LOST
SANDBOX_IMAGE_MISSING = ErrorType.SANDBOX_IMAGE_MISSING
SANDBOX_PROVISIONED = ErrorType.SANDBOX_PROVISIONED
MODEL_REQUEST_REJECTED = ErrorType.MODEL_REQUEST_REJECTED
MODEL_NOT_CONFIGURED = ErrorType.MODEL_NOT_CONFIGURED
CONTEXT_TOO_LONG = ErrorType.CONTEXT_TOO_LONG
SECRET_MISSING = ErrorType.SECRET_MISSING
AGENT_NOT_FOUND = ErrorType.AGENT_NOT_FOUND

SANDBOX_TMP_MB = 128  # size of a sandbox's /tmp (tmpfs), which also holds the tool-call records
