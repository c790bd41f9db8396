"""Heartbeating for long activities, so a dead worker is noticed at the heartbeat timeout.

`heartbeating` beats through the SDK's core (throttled, fire-and-forget), unless the activity has
switched to `AcknowledgedHeartbeats`: then every beat is a heartbeat RPC of the activity's own
client, with the details it holds, and returns once the server has stored them. An activity that
must know its progress is on record before it goes on (a retry reads the last details) uses those,
for all its beats: a core beat still queued could otherwise land later and overwrite them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

from temporalio import activity
from temporalio.client import AsyncActivityCancelledError


class AcknowledgedHeartbeats:
    """Heartbeats of the current activity through its client, each stored by the server before the
    call returns. A cancellation the server answers with cancels the activity's task."""

    def __init__(self) -> None:
        info = activity.info()
        self._handle = activity.client().get_async_activity_handle(task_token=info.task_token)
        self._task = asyncio.current_task()
        self.details: tuple[Any, ...] = ()
        self.cancel_requested = False  # the server said the workflow cancelled this activity

    async def beat(self) -> None:
        try:
            await self._handle.heartbeat(*self.details)
        except AsyncActivityCancelledError:
            self.cancel_requested = True
            if self._task is not None:
                self._task.cancel()

    async def record(self, *details: Any) -> None:
        """On record with the server from now on: a retry of this activity finds these details."""
        self.details = details
        await self.beat()


_acknowledged: ContextVar[AcknowledgedHeartbeats | None] = ContextVar("acknowledged_heartbeats", default=None)


@contextmanager
def acknowledged(beats: AcknowledgedHeartbeats) -> Iterator[None]:
    """Within the block, `heartbeating` beats through `beats`."""
    token = _acknowledged.set(beats)
    try:
        yield
    finally:
        _acknowledged.reset(token)


@asynccontextmanager
async def heartbeating(every_s: float) -> AsyncIterator[None]:
    """Heartbeat every `every_s` while the block runs. Not at once: a heartbeat still pending
    when the activity completes delays the completion."""
    beats = _acknowledged.get()

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            if beats is None:
                activity.heartbeat()
            else:
                await beats.beat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
