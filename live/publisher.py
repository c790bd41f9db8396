"""The model activity's side of live streaming: deltas go to the relay (`da serve`),
never into history, and never hold up or fail the model call.

`publish` only appends to a bounded buffer; one task per worker process posts what has
gathered as a batch, at most every `batch_every_s` (the first delta after a quiet spell goes at
once). A full buffer or a relay that does not answer drops deltas and counts them: the durable
event still carries the whole turn.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import httpx
import structlog

from durable_agents.contracts import LiveBatch, LiveDelta
from durable_agents.settings import Settings, settings

log = structlog.get_logger("live")

LIVE_URL_ENV = "DA_LIVE_URL"
DELTAS_PATH = "/live/deltas"


class DeltaPublisher:
    """Posts model-call deltas to the relay at `url` (None: publishes nothing)."""

    def __init__(
        self,
        url: str | None,
        *,
        max_pending: int = 10_000,
        batch_every_s: float = 0.025,
        timeout_s: float = 2.0,
        retry_after_s: float = 1.0,
    ) -> None:
        if batch_every_s < 0 or timeout_s <= 0 or retry_after_s < 0 or max_pending < 1:
            raise ValueError("batch_every_s and retry_after_s must be >= 0, timeout_s > 0, max_pending >= 1")
        self.url = url.rstrip("/") if url else None
        self._max_pending = max_pending
        self._batch_every_s = batch_every_s
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._pending: deque[LiveDelta] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down_until = 0.0  # while the relay is down, deltas are dropped at once
        self._closed = False  # closed: a model call still streaming drops its deltas (no new task)
        self.published = 0
        self.dropped = 0

    @classmethod
    def from_env(cls, config: Settings | None = None) -> DeltaPublisher:
        """The publisher the settings ask for (DA_LIVE_URL; unset: one that publishes nothing)."""
        return cls((config or settings()).live_url)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def call(self, session: str, offset: int | None, attempt: int) -> LiveCall | None:
        """A publisher for one attempt of one model call; None when nothing is to be published."""
        if self.url is None or offset is None:
            return None
        return LiveCall(self, session, offset, attempt)

    def publish(self, delta: LiveDelta) -> None:
        """Queue a delta; never blocks, never raises."""
        if self._closed or len(self._pending) >= self._max_pending or time.monotonic() < self._down_until:
            self.dropped += 1
            return
        self._pending.append(delta)
        self._ready.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-deltas")

    async def _run(self) -> None:
        assert self.url is not None
        endpoint = self.url + DELTAS_PATH
        down = False
        async with httpx.AsyncClient(timeout=self._timeout_s) as http:
            while True:
                await self._ready.wait()
                self._ready.clear()
                batch = list(self._pending)
                self._pending.clear()
                try:
                    response = await http.post(
                        endpoint,
                        content=LiveBatch(deltas=batch).model_dump_json(exclude_none=True),
                        headers={"content-type": "application/json"},
                    )
                    response.raise_for_status()
                except Exception as e:  # noqa: BLE001 - the relay's trouble must never reach the model call
                    self.dropped += len(batch)
                    self._down_until = time.monotonic() + self._retry_after_s
                    if not down:
                        log.warning("live relay unreachable: deltas are dropped", url=self.url, error=str(e))
                    down = True
                else:
                    self.published += len(batch)
                    if down:
                        log.info("live relay reachable again", url=self.url, dropped=self.dropped)
                    down = False
                await asyncio.sleep(self._batch_every_s)

    async def close(self) -> None:
        """Stops posting; what is published after this is dropped (a task started then would outlive
        the publisher, pending, until the garbage collector destroyed it)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class LiveCall:
    """One attempt of one model call: numbers its deltas and stamps when each was received."""

    def __init__(self, publisher: DeltaPublisher, session: str, offset: int, attempt: int) -> None:
        self._publisher = publisher
        self._key = {"session": session, "offset": offset, "attempt": attempt}
        self._seq = 0

    def _emit(self, **fields: object) -> None:
        try:
            delta = LiveDelta.model_validate({**self._key, "seq": self._seq, "at": time.time(), **fields})
        except ValueError as e:  # a delta we cannot describe is dropped; the model call goes on
            self._publisher.dropped += 1
            log.warning("live delta dropped", error=str(e))
            return
        self._seq += 1
        self._publisher.publish(delta)

    def start(self, model: str) -> None:
        self._emit(kind="start", model=model)

    def text(self, index: int, text: str) -> None:
        self._emit(kind="text", index=index, text=text)

    def tool_use(self, index: int, tool_use_id: str, name: str) -> None:
        self._emit(kind="tool_use", index=index, tool_use_id=tool_use_id, name=name)

    def end(self, stop_reason: str | None) -> None:
        self._emit(kind="end", stop_reason=stop_reason)
