"""Logging: structlog, one JSON line per event (LOG_FORMAT=console for humans).

Standard-library records (Temporal's own, workflow.logger) go through the same renderer, so
a worker's output is one stream of JSON. Nothing here ever logs a request body or a header.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from temporalio import activity

from durable_agents.settings import Settings, settings


def configure_logging(level: str | None = None, config: Settings | None = None) -> None:
    config = config or settings()
    console = config.log_format == "console"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        # A record below the level is dropped first, before its timestamp is formatted (a worker
        # at WARNING logs an INFO line per model call otherwise built for nothing).
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or config.log_level)
    # The HTTP clients log request lines (URLs only), which is noise at INFO.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def activity_log() -> Any:
    """A logger bound to the running activity: session id, run id, activity name, attempt."""
    info = activity.info()
    return structlog.get_logger("activity").bind(
        session_id=info.workflow_id,
        run_id=info.workflow_run_id,
        activity=info.activity_type,
        activity_id=info.activity_id,
        attempt=info.attempt,
    )
