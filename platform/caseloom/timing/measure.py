"""How far an SLA has run: elapsed and business time, percentages, time left, the breach time and
when its next escalation is due, from the few values a task_sla row keeps (pure: no database).

A running SLA's business elapsed time is the schedule's business time from its start to now, less
its business pause time; it reaches the duration at `add_business(start, duration + pauses)`.
Everything here works on naive UTC datetimes, as the records store them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from ..fieldtypes import DURATION_MAX
from .schedule import Schedule, add_business, business_seconds

RUNNING, PAUSED, CANCELLED, COMPLETED = "in_progress", "paused", "cancelled", "completed"
ACTIVE = (RUNNING, PAUSED)


@dataclass(frozen=True)
class Clock:
    """An SLA's duration and the schedule its business time counts in (None: 24x7)."""

    duration: int  # seconds
    schedule: Schedule | None
    thresholds: tuple[int, ...] = (100,)  # escalation percentages, ascending (100, the breach, always there)


@dataclass(frozen=True)
class State:
    """What a task_sla row keeps of its timing."""

    stage: str
    start_time: dt.datetime
    pause_time: dt.datetime | None = None
    pause_duration: int = 0
    business_pause_duration: int = 0
    end_time: dt.datetime | None = None
    next_threshold: int | None = None  # the next escalation percentage to fire; None: all have fired


def _elapsed(clock: Clock, state: State, at: dt.datetime) -> tuple[float, float, float, float]:
    """(actual elapsed, business elapsed, actual pause, business pause) as of `at` (or the end)."""
    until = state.end_time or at
    pause, business_pause = float(state.pause_duration or 0), float(state.business_pause_duration or 0)
    if state.stage == PAUSED and state.pause_time is not None:  # the pause so far counts as pause time
        pause += max((until - state.pause_time).total_seconds(), 0.0)
        business_pause += business_seconds(clock.schedule, state.pause_time, until)
    actual = max((until - state.start_time).total_seconds(), 0.0) - pause
    business = business_seconds(clock.schedule, state.start_time, until) - business_pause
    return max(actual, 0.0), max(business, 0.0), pause, business_pause


def due_at(clock: Clock, state: State, percent: float, business_pause: float) -> dt.datetime | None:
    """When the business elapsed time reaches `percent` of the duration (None: never, a schedule
    with no business time)."""
    return add_business(clock.schedule, state.start_time, clock.duration * percent / 100 + business_pause)


def measure(clock: Clock, state: State, at: dt.datetime) -> dict:
    """The task_sla fields of the timing as of `at`: elapsed times, percentages, time left, the breach
    time (`planned_end_time`), whether it has breached, and the next escalation due."""
    actual, business, pause, business_pause = _elapsed(clock, state, at)
    duration = max(clock.duration, 1)
    business_percentage = business * 100 / duration
    planned = due_at(clock, state, 100, business_pause)
    if state.stage == PAUSED and planned is not None and state.pause_time is not None:
        planned = max(planned, at)  # as if it resumed now
    actual, business = min(actual, DURATION_MAX), min(business, DURATION_MAX)
    pause, business_pause = min(pause, DURATION_MAX), min(business_pause, DURATION_MAX)
    out = {
        "duration": round(actual), "business_duration": round(business),
        "pause_duration": round(pause), "business_pause_duration": round(business_pause),
        "percentage": _percent(actual * 100 / duration), "business_percentage": _percent(business_percentage),
        "time_left": max(round(clock.duration - actual), 0), "business_time_left": max(round(clock.duration - business), 0),
        "planned_end_time": _ceil(planned), "has_breached": business_percentage >= 100, "timing_at": _second(at),
    }
    out |= next_due(clock, state, business_percentage, business_pause)
    return out


def next_due(clock: Clock, state: State, business_percentage: float, business_pause: float) -> dict:
    """The next escalation not fired yet (`state.next_threshold`; None once every one has fired) and
    when it is due; no due time while not running. A threshold already passed stays the next one
    until the tick fires it (caseloom.timing.tick)."""
    threshold = state.next_threshold
    if threshold is None or state.stage != RUNNING:
        return {"next_threshold": threshold, "threshold_due": None}
    return {"next_threshold": threshold, "threshold_due": _ceil(due_at(clock, state, threshold, business_pause))}


def first(clock: Clock) -> int | None:
    """The first escalation of a new SLA."""
    return clock.thresholds[0] if clock.thresholds else None


def _percent(value: float) -> Decimal:
    return Decimal(str(round(value, 2)))


def _second(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(microsecond=0)


def _ceil(value: dt.datetime | None) -> dt.datetime | None:
    """Up to the whole second (the columns keep seconds): a due time is never before the moment itself."""
    if value is None or not value.microsecond:
        return value
    return value.replace(microsecond=0) + dt.timedelta(seconds=1)


__all__ = ["ACTIVE", "CANCELLED", "COMPLETED", "PAUSED", "RUNNING", "Clock", "State", "due_at", "first", "measure",
           "next_due"]
