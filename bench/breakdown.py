"""Where the milliseconds of a session go, read from its history's event timestamps.

A segment is the time between two consecutive points of a session's timeline: the client's start
call, each history event (workflow task scheduled → started → completed, activity scheduled →
started → completed, ...) and the scripted model's arrival stamps of the Messages requests. The
server stamps its events and the scripted model its arrivals with the same clock (one machine),
so the segments add up to the measured interval. What each segment is:

- `workflow task scheduled → started`: the server dispatching the task to a worker (the
  transfer queue and matching): the server's floor;
- `workflow task started → completed`: the worker's activation (our workflow code, the SDK,
  payload conversion) and its completion call;
- `X scheduled → started`: the activity's dispatch (eager: handed back in the completion's
  answer; another queue: through matching to that queue's poller);
- `X started → completed`: the activity's own work and its completion call;
- `call_model started → model request`: `call_model` before the request leaves (cache lookup,
  request building, the SDK's serialisation, the HTTP send).

An activity whose retry policy allows retries has its `started` event written only when it
closes, stamped with the time it started: ordering by time, not event id, puts it in place.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

Point = tuple[float, str]  # (unix time, what happened)

_WFT = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED: "workflow task scheduled",
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED: "workflow task started",
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED: "workflow task completed",
}
_ACTIVITY = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED: "started",
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "failed",
}
# Events that are written in the same transaction as the workflow task's completion: no time of their own.
_COMMAND_EVENTS = {
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_MARKER_RECORDED,
    EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
}


def _time(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


def timeline(history: WorkflowHistory) -> list[Point]:
    """The history's events as points, in time order (activity type names in the labels)."""
    activity_types: dict[int, str] = {}
    points: list[tuple[float, int, str]] = []
    for e in history.events:
        t = e.event_type
        if t == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            label = "workflow started"
        elif t in _WFT:
            label = _WFT[t]
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            activity_types[e.event_id] = name
            label = f"{name} scheduled"
        elif t in _ACTIVITY:
            attrs = (
                e.activity_task_started_event_attributes
                if t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                else e.activity_task_completed_event_attributes
                if t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                else e.activity_task_failed_event_attributes
            )
            label = f"{activity_types.get(attrs.scheduled_event_id, '?')} {_ACTIVITY[t]}"
        elif t in _COMMAND_EVENTS:
            continue
        else:
            label = EventType.Name(t).removeprefix("EVENT_TYPE_").lower().replace("_", " ")
        points.append((_time(e), e.event_id, label))
    points.sort()
    return [(t, label) for t, _, label in points]


def segments(points: list[Point]) -> list[tuple[str, float]]:
    """Consecutive points as (`a → b`, seconds)."""
    return [(f"{a} → {b}", tb - ta) for (ta, a), (tb, b) in zip(points, points[1:], strict=False)]


def first_request(history: WorkflowHistory, started_at: float, arrived_at: float) -> list[tuple[str, float]]:
    """From the client's start call to the first model request's arrival."""
    inside = [p for p in timeline(history) if p[0] <= arrived_at]
    return segments([(started_at, "start call"), *inside, (arrived_at, "model request")])


def between_requests(history: WorkflowHistory, arrivals: list[float]) -> list[list[tuple[str, float]]]:
    """One list of segments per interval between consecutive model requests."""
    points = timeline(history)
    out = []
    for a, b in zip(arrivals, arrivals[1:], strict=False):
        inside = [p for p in points if a < p[0] <= b]
        out.append(segments([(a, "model request"), *inside, (b, "model request")]))
    return out


def activity_time(history: WorkflowHistory, name: str) -> list[float]:
    """`name`'s own time (started → completed) for each of its runs, in order."""
    pending: dict[str, float] = {}
    out = []
    for t, label in timeline(history):
        if label == f"{name} started":
            pending["at"] = t
        elif label == f"{name} completed" and "at" in pending:
            out.append(t - pending.pop("at"))
    return out


def median_segments(runs: Iterable[list[tuple[str, float]]]) -> list[dict[str, Any]]:
    """The median of each segment over the runs that have the most common shape (the same
    segments in the same order); runs of another shape (a retry, a timer) are left out."""
    runs = list(runs)
    shapes: dict[tuple[str, ...], list[list[tuple[str, float]]]] = {}
    for run in runs:
        shapes.setdefault(tuple(name for name, _ in run), []).append(run)
    if not shapes:
        return []
    shape, same = max(shapes.items(), key=lambda kv: len(kv[1]))
    return [
        {"segment": name, "n": len(same), "p50_ms": round(statistics.median(run[i][1] for run in same) * 1000, 2)}
        for i, name in enumerate(shape)
    ]


def print_breakdown(title: str, rows: list[dict[str, Any]], measured_p50_ms: float | None = None) -> None:
    if not rows:
        return
    width = max(len(r["segment"]) for r in rows)
    total = sum(r["p50_ms"] for r in rows)
    print(f"\n{title} (medians over {rows[0]['n']} runs of the same shape)")
    for r in rows:
        print(f"  {r['segment']:<{width}}  {r['p50_ms']:>8.2f} ms")
    tail = f" (measured p50 {measured_p50_ms:.2f} ms)" if measured_p50_ms is not None else ""
    print(f"  {'sum of the medians':<{width}}  {total:>8.2f} ms{tail}")
