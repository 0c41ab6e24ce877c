"""The SLA engine: after every write of a record that may have SLAs, each active SLA definition is
evaluated on the record as stored, in ServiceNow's order:

1. an SLA running or paused on the record completes when its stop condition matches;
2. it completes and a new one attaches when its reset condition matches;
3. it is cancelled when its start condition no longer matches (`when_to_cancel: no_match`, the
   default) or its cancel condition matches (`cancel_condition`);
4. a running one pauses when its pause condition matches;
5. a paused one resumes when its pause condition no longer matches (`when_to_resume: no_match`) or
   its resume condition matches (`resume_condition`);
6. with none running or paused, one attaches when the start condition matches and the stop
   condition does not (paused at once when the pause condition matches too).

Two paths, one outcome: `after_rows` evaluates conditions in Python on records the record service
has in hand; `after_where` does the same in SQL for every record a set-based write touched (a
hundred thousand children), with a fixed number of statements per SLA definition. A new task_sla
keeps the unit of work that attached it (`transaction`) and each later stage change is audited on it
(field `stage`) in the writer's transaction: the record's own audit rows of the same transaction are
the change that started, paused, resumed or stopped it (the timeline).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .. import stamps
from ..automation.conditions import resolver
from ..bulk import insert_rows, update_rows
from ..query.conditions import fields_of
from ..query.dynamic import now as clock_now
from ..query.evaluate import evaluate
from ..records import new_sys_id
from .measure import ACTIVE, CANCELLED, COMPLETED, PAUSED, RUNNING, State, first, measure
from .slas import TASK_SLA, Sla, slas_for


def moment() -> dt.datetime:
    """Now, as SLAs count it: whole seconds, and the fixed clock when a test sets one
    (caseloom.query.dynamic.fixed_clock)."""
    return clock_now()


def state_of(row: dict) -> State:
    return State(row["stage"], row["start_time"], row["pause_time"], row["pause_duration"] or 0,
                 row["business_pause_duration"] or 0, row["end_time"], row["next_threshold"])


# -- the row path ---------------------------------------------------------------------------------

class Changes:
    """The task_sla rows a unit of work adds and changes, written at once (`write`)."""

    def __init__(self):
        self._measured: dict[tuple, dict] = {}  # (SLA, start, paused) -> timing: a batch shares its moment
        self.new: list[dict] = []
        self.updated: list[dict] = []
        self.audits: list[tuple[str, int, str | None, str]] = []  # (task_sla sys_id, checkpoint, old, new stage)

    def attach(self, sla: Sla, record: dict, at: dt.datetime, paused: bool) -> None:
        start = start_of(sla, record, at)
        state = State(PAUSED if paused else RUNNING, start, pause_time=at if paused else None,
                      next_threshold=first(sla.clock))
        key = (sla.sys_id, start, paused)
        if key not in self._measured:
            self._measured[key] = measure(sla.clock, state, at)
        values = self._measured[key]
        sys_id = new_sys_id()
        self.new.append({"sys_id": sys_id, "task": record["sys_id"], "sla": sla.sys_id, "stage": state.stage,
                         "start_time": start, "pause_time": state.pause_time, "end_time": None,
                         **values, "pause_duration": 0, "business_pause_duration": 0, "transaction": None})

    def move(self, sla: Sla, row: dict, stage: str, at: dt.datetime) -> None:
        """Change a running or paused SLA's stage at `at` (or only its timing, when `stage` is its own)."""
        self.updated.append({"sys_id": row["sys_id"], **moved(sla, row, stage, at)})
        if stage != row["stage"]:
            self.audits.append((row["sys_id"], (row["sys_mod_count"] or 0) + 1, row["stage"], stage))

    def write(self, service, at: dt.datetime) -> None:
        if not (self.new or self.updated):
            return
        conn, user = service.conn, service.actor.user_name
        physical = service.storage.physical(TASK_SLA)
        stamp = service_stamp()
        # compiled once per table and set of columns (caseloom.bulk): building an INSERT or UPDATE for
        # each write cost more than running it
        if self.new:
            system = stamps.new_row(TASK_SLA, user, stamp) | {"transaction": service.transaction}
            insert_rows(conn, physical, [row | system for row in self.new])  # `attach` gives each the same keys
            service.note_made(TASK_SLA, [r["sys_id"] for r in self.new])
        by_columns: dict[tuple, list[dict]] = defaultdict(list)
        for row in self.updated:
            by_columns[tuple(sorted(k for k in row if k != "sys_id"))].append(row)
        for columns, rows in by_columns.items():
            update_rows(conn, physical, columns, rows, stamps.touched_sql, user, stamp)
        if self.audits:
            service._system_insert("sys_audit", [
                stamps.audit_row(TASK_SLA, sys_id, checkpoint, "stage", old, new, user, service.transaction)
                for sys_id, checkpoint, old, new in self.audits], stamp)
        service.written.add(TASK_SLA)


def moved(sla: Sla, row: dict, stage: str, at: dt.datetime) -> dict:
    """The values of a running or paused task_sla `row` once moved to `stage` at `at` (its own stage:
    only its timing as of `at`)."""
    state = state_of(row)
    if state.stage == PAUSED and stage != PAUSED:  # the pause ends: its time is counted in
        measured = measure(sla.clock, state, at)
        state = State(RUNNING, state.start_time, None, measured["pause_duration"], measured["business_pause_duration"],
                      None, state.next_threshold)
    if stage == PAUSED and state.stage == RUNNING:
        state = State(PAUSED, state.start_time, at, state.pause_duration, state.business_pause_duration, None,
                      state.next_threshold)
    if stage in (CANCELLED, COMPLETED):
        state = State(stage, state.start_time, None, state.pause_duration, state.business_pause_duration, at,
                      state.next_threshold)
    values = measure(sla.clock, state, at)
    if state.stage == PAUSED:  # still paused: a row keeps the pauses that have ended (`pause_time` is when this
        # one began), as the set-based path does; storing the pause so far would count it again at the resume
        values |= {"pause_duration": state.pause_duration, "business_pause_duration": state.business_pause_duration}
    values["has_breached"] = values["has_breached"] or bool(row.get("has_breached"))  # a breach stays
    if stage in (CANCELLED, COMPLETED):
        values |= {"threshold_due": None}
    return {"stage": state.stage, "pause_time": state.pause_time, "end_time": state.end_time, **values}


def service_stamp() -> dt.datetime:
    from ..records import now

    return now()


def start_of(sla: Sla, record: dict, at: dt.datetime) -> dt.datetime:
    """When an attaching SLA starts: now, or (retroactive) the record's date-time field when it has one."""
    if sla.retroactive:
        value = record.get(sla.retroactive)
        if isinstance(value, dt.datetime):
            return value.replace(microsecond=0)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day)
    return at


def after_rows(service, tdef, records: list[dict], new: bool = False) -> None:
    """Evaluate the SLAs of records the record service has just written (the row path; `new`: just
    inserted, so with no task SLA yet)."""
    slas = slas_for(service, tdef.name)
    if not slas or not records:
        return
    at = moment()
    active = {} if new else _active(service, [r["sys_id"] for r in records])
    changes = Changes()
    conditions = Conditions(service, tdef)
    for record in records:
        holds = conditions.on(record)
        for sla in slas:
            step(sla, record, active.get((record["sys_id"], sla.sys_id)), holds, at, changes)
    changes.write(service, at)


class Conditions:
    """Whether SLA conditions hold on records of one table: answered once per set of the values a
    condition reads, as a batch's records mostly share them (a condition that dot-walks is asked per
    record, through the database). For one unit of work: the conditions' nodes live through it."""

    def __init__(self, service, tdef):
        self.service, self.tdef = service, tdef
        self.answers: dict[tuple, bool] = {}
        self.reads_of: dict[int, tuple[str, ...] | None] = {}

    def on(self, record: dict) -> Callable[[Any], bool]:
        """`holds(condition)` on `record` (False for no condition)."""
        resolve = resolver(self.service, self.tdef, record)
        answers, reads_of = self.answers, self.reads_of

        def holds(node: Any) -> bool:
            if node is None:
                return False
            if id(node) not in reads_of:
                reads_of[id(node)] = _reads(node)
            reads = reads_of[id(node)]
            if reads is None:  # a dot-walk: through the database, per record
                return evaluate(node, record, resolve=resolve)
            key = (id(node), *(record.get(f) for f in reads))
            if key not in answers:
                answers[key] = evaluate(node, record, resolve=resolve)
            return answers[key]

        return holds


def step(sla: Sla, record: dict, row: dict | None, holds, at: dt.datetime, changes: Changes) -> None:
    """One SLA definition on one record, in the engine's order (see the module's docstring)."""
    if row is not None:
        if holds(sla.stop):
            changes.move(sla, row, COMPLETED, at)
            return
        if holds(sla.reset):
            changes.move(sla, row, COMPLETED, at)
            row = None
        elif _cancels(sla, holds):
            changes.move(sla, row, CANCELLED, at)
            return
        elif row["stage"] == RUNNING and holds(sla.pause):
            changes.move(sla, row, PAUSED, at)
            return
        elif row["stage"] == PAUSED and _resumes(sla, holds):
            changes.move(sla, row, RUNNING, at)
            return
        else:
            changes.move(sla, row, row["stage"], at)  # the timing as of now
            return
    if holds(sla.start) and not holds(sla.stop) and not (sla.when_to_cancel == "cancel_condition"
                                                          and holds(sla.cancel)):
        changes.attach(sla, record, at, paused=holds(sla.pause))


def _cancels(sla: Sla, holds) -> bool:
    if sla.when_to_cancel == "no_match":
        return not holds(sla.start)
    if sla.when_to_cancel == "cancel_condition":
        return holds(sla.cancel)
    return False


def _resumes(sla: Sla, holds) -> bool:
    if sla.when_to_resume == "resume_condition":
        return holds(sla.resume)
    return not holds(sla.pause)


def _reads(node: Any) -> tuple[str, ...] | None:
    """The fields of the record a bound condition reads, or None when it walks to other records."""
    fields = tuple(dict.fromkeys(fields_of(node)))
    return None if any("." in f for f in fields) else fields


ACTIVE_KEY = ("timing.engine", "active")


def _active(service, task_ids: list[str]) -> dict[tuple[str, str], dict]:
    stmt = service.storage.cache.get(ACTIVE_KEY)
    if stmt is None:  # built once per definitions set: every write of a task asks it
        physical = service.storage.physical(TASK_SLA)
        stmt = service.storage.cache[ACTIVE_KEY] = sa.select(physical).where(
            physical.c.task.in_(sa.bindparam("tasks", expanding=True)), physical.c.stage.in_(ACTIVE))
    out = {}
    for i in range(0, len(task_ids), 500):
        for row in service.conn.execute(stmt, {"tasks": task_ids[i:i + 500]}).mappings():
            out[(row["task"], row["sla"])] = dict(row)
    return out


__all__ = ["Changes", "Conditions", "after_rows", "moment", "moved", "start_of", "state_of", "step"]
