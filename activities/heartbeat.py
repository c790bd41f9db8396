"""Heartbeating for long activities, so a dead worker is noticed at the heartbeat timeout.

`heartbeating` beats through the SDK's core (throttled, fire-and-forget), unless the activity has
switched to `AcknowledgedHeartbeats`: then every beat is also a heartbeat RPC of the activity's own
client, with the details it holds, and returns once the server has stored them. An activity that
must know its progress is on record before it goes on (a retry reads the last details) uses those.

Both kinds carry the same details, always. The core beats cannot be left out: the SDK's core counts
only its own, and cancels an activity that sent none for its heartbeat timeout plus about 5 s
(`timed_out`, `not_found`), however many the client sent (measured with temporalio 1.x on the dev
server: a 3 s heartbeat timeout, client beats every second, cancelled at 8 s). A core beat does not
erase a record: `record` hands core the new details before the acknowledged RPC, so whatever core
still holds to send carries them too, and the next beat re-sends them acknowledged. Left open: a
core beat already on the wire with the old details could land after the record; until the next
beat (seconds) a retry would then read the old details, which matters only if the worker dies then.
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
    call returns (and through core, with the same details). A cancellation the server answers with
    cancels the activity's task."""

    def __init__(self) -> None:
        info = activity.info()
        self._handle = activity.client().get_async_activity_handle(task_token=info.task_token)
        self._task = asyncio.current_task()
        self.details: tuple[Any, ...] = ()
        self.cancel_requested = False  # the server said the workflow cancelled this activity

    async def beat(self) -> None:
        activity.heartbeat(*self.details)  # core's own count: see the module's docstring
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


def cancelled_because(details: activity.ActivityCancellationDetails | None) -> str:
    """Why the SDK cancelled the current activity, in words (for an error a person reads)."""
    if details is None:
        return "no reason given"
    reasons = {
        "cancel_requested": "the workflow asked",
        "timed_out": "its heartbeat or start-to-close timeout passed",
        "not_found": "the server no longer knows this attempt",
        "worker_shutdown": "the worker is shutting down",
        "paused": "the activity was paused",
        "reset": "the activity was reset",
    }
    said = [text for field, text in reasons.items() if getattr(details, field, False)]
    return "; ".join(said) or "no reason given"
