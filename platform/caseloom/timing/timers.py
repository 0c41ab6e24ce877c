"""Timers: effects that run on a record once it has matched a condition for a while (business time
when a schedule governs it), or at a date-time field of it plus an offset.

A timer waiting on a record is a sys_timer row with its due time, written with the record's own
writes: set when the record comes to match (or its date is set), moved when the date moves, removed
when the condition stops matching. The worker's tick (caseloom.timing.tick) finds the due rows with
one indexed query, runs the effects and marks the rows fired, in one transaction: durable, never
lost, never fired twice; a fired timer fires again only after its condition stopped matching and
matched again (or its date changed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from .. import stamps
from ..automation.conditions import resolver
from ..bulk import insert_rows, update_rows
from ..definitions.model import TableDef, TimerDef
from ..query import Query, Selection, Term, select_rows
from ..query.evaluate import evaluate
from ..records import new_sys_id
from ..setwrite import Touched, new_sys_id_sql, sys_id_prefix
from .engine import moment, service_stamp
from .schedule import add_business
from .slas import condition

TIMER, WAITING, FIRED = "sys_timer", "waiting", "fired"


def after_rows(service, tdef: TableDef, records: list[dict], new: bool = False) -> None:
    """Set, move or remove the timers of records the record service has just written (`new`: just
    inserted, so with no timer yet)."""
    timers = service.defs.timers_for(tdef.name)
    if not timers or not records:
        return
    at = moment()
    wanted = []
    for record in records:
        resolve = resolver(service, tdef, record)
        for timer in timers:
            node = _condition(service, tdef, timer)
            holds = node is None or evaluate(node, record, resolve=resolve)
            wanted.append((record["sys_id"], timer, holds, record.get(timer.at) if timer.at else None))
    _apply(service, tdef, wanted, at, new)


def after_where(service, tdef: TableDef, touched: Touched, new: bool = False) -> None:
    """The same for every record a set-based write touched (`new`: just inserted, so with no timer
    yet). A timer of a duration is due at the same moment for them all: its rows are one DELETE of
    those whose record stopped matching and one INSERT ... SELECT for those that came to match. A
    timer at a date is due at each record's own date: one SELECT of whether each record matches and
    of its date, then its rows written together."""
    timers = service.defs.timers_for(tdef.name)
    if not timers:
        return
    at = moment()
    wanted = []
    for timer in timers:
        selection = Selection(service.storage, tdef.name)
        node = _condition(service, tdef, timer)
        holds = sa.true() if node is None else sa.func.coalesce(selection.condition(node), sa.false())
        if not timer.at:
            _duration_where(service, tdef, timer, selection, holds, touched, at, new)
            continue
        stmt = (sa.select(selection.base.c.sys_id, holds, selection.base.c[timer.at])
                .select_from(selection.from_clause).where(touched.where(selection.base)))
        wanted.extend((sys_id, timer, bool(match), value) for sys_id, match, value in service.conn.execute(stmt))
    if wanted:
        _apply(service, tdef, wanted, at, new)


def _duration_where(service, tdef: TableDef, timer: TimerDef, selection: Selection, holds: sa.ColumnElement,
                    touched: Touched, at: dt.datetime, new: bool) -> None:
    """A duration timer's rows for the touched records, in SQL: dropped where the condition no longer
    holds, set where it holds and there is none (a fired one stays fired until it stops holding)."""
    conn, physical = service.conn, service.storage.physical(TIMER)
    base = selection.base
    mine = sa.and_(physical.c.timer == timer.name, touched.of(physical.c.document))
    written = 0
    if not new:
        matching = sa.select(base.c.sys_id).select_from(selection.from_clause).where(touched.where(base), holds)
        written += conn.execute(sa.delete(physical).where(
            mine, physical.c.document.not_in(matching.scalar_subquery()))).rowcount
    due = due_time(service, timer, at, None)
    if due is not None:
        columns = stamps.new_rows_sql(TIMER, service.actor.user_name, service_stamp(),
                                      new_sys_id_sql(conn.dialect.name, base, sys_id_prefix())) | {
            "timer": sa.literal(timer.name), "table_name": sa.literal(tdef.name), "document": base.c.sys_id,
            "due": sa.literal(due, sa.DateTime), "state": sa.literal(WAITING)}
        has_one = sa.exists().where(physical.c.document == base.c.sys_id, physical.c.timer == timer.name)
        select = sa.select(*columns.values()).select_from(selection.from_clause).where(
            touched.where(base), holds, *(() if new else (~has_one,)))
        written += conn.execute(sa.insert(physical).from_select(list(columns), select)
                                .execution_options(preserve_rowcount=True)).rowcount
    if written:
        service.written.add(TIMER)


def _condition(service, tdef: TableDef, timer: TimerDef) -> Any:
    memo = service.memo.setdefault("timing.timers", {})
    key = (timer.name, tdef.name)
    if key not in memo:
        memo[key] = condition(service.defs, tdef, timer.condition)
    return memo[key]


def due_time(service, timer: TimerDef, at: dt.datetime, value: Any) -> dt.datetime | None:
    """When a timer set now fires: `at` plus the duration (business time under its schedule), or the
    record's date plus the offset; None when it has no date."""
    if timer.at:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            value = dt.datetime(value.year, value.month, value.day)
        return value + dt.timedelta(seconds=timer.offset)
    return add_business(_schedule(service, timer), at, timer.duration or 0)


def _schedule(service, timer: TimerDef):
    if timer.schedule is None:
        return None
    from .slas import SCHEDULE, _schedules

    table = service.storage.physical(SCHEDULE)
    ids = set(service.conn.execute(sa.select(table.c.sys_id).where(table.c.name == timer.schedule)).scalars())
    found = _schedules(service, ids)
    return next(iter(found.values()), None)


def _apply(service, tdef: TableDef, wanted: list[tuple[str, TimerDef, bool, Any]], at: dt.datetime,
           new_records: bool = False) -> None:
    """Write the timer rows `wanted` calls for: (record, timer, whether its condition holds, its date)."""
    physical = service.storage.physical(TIMER)
    existing = {} if new_records else _existing(service, {sys_id for sys_id, *_ in wanted})
    new, moved, gone = [], [], []
    dues: dict[tuple[str, Any], dt.datetime | None] = {}
    for sys_id, timer, holds, value in wanted:
        row = existing.get((sys_id, timer.name))
        if not holds or (timer.at and value is None):
            if row is not None:
                gone.append(row["sys_id"])
            continue
        key = (timer.name, value)
        if key not in dues:
            dues[key] = due_time(service, timer, at, value)
        due = dues[key]
        if due is None:
            continue
        if row is None:
            new.append({"sys_id": new_sys_id(), "timer": timer.name, "table_name": tdef.name, "document": sys_id,
                        "due": due, "state": WAITING})
        elif timer.at and row["due"] != due:  # the date moved: the timer follows it (and fires again)
            moved.append({"sys_id": row["sys_id"], "due": due, "state": WAITING})
    user, stamp = service.actor.user_name, service_stamp()
    conn = service.conn
    if new:  # compiled once per table (caseloom.bulk), as every write of a timed record may add one
        system = stamps.new_row(TIMER, user, stamp)
        insert_rows(conn, physical, [r | system for r in new])
    if moved:
        update_rows(conn, physical, ("due", "state"), moved, stamps.touched_sql, user, stamp)
    for i in range(0, len(gone), 500):
        conn.execute(sa.delete(physical).where(physical.c.sys_id.in_(gone[i:i + 500])))
    if new or moved or gone:
        service.written.add(TIMER)


EXISTING_KEY = ("timing.timers", "existing")


def _existing(service, ids: Iterable[str]) -> dict[tuple[str, str], dict]:
    stmt = service.storage.cache.get(EXISTING_KEY)
    if stmt is None:  # built once per definitions set: every write of a timed record asks it
        physical = service.storage.physical(TIMER)
        stmt = service.storage.cache[EXISTING_KEY] = sa.select(
            physical.c.sys_id, physical.c.document, physical.c.timer, physical.c.due, physical.c.state
        ).where(physical.c.document.in_(sa.bindparam("documents", expanding=True)))
    ids = list(ids)
    out = {}
    for i in range(0, len(ids), 500):
        for row in service.conn.execute(stmt, {"documents": ids[i:i + 500]}).mappings():
            out[(row["document"], row["timer"])] = dict(row)
    return out


def any_due(service, at: dt.datetime) -> bool:
    """Whether a timer is due at `at`."""
    physical = service.storage.physical(TIMER)
    return service.conn.execute(sa.select(physical.c.sys_id).where(physical.c.state == WAITING, physical.c.due <= at)
                                .limit(1)).first() is not None


def fire_due(service, at: dt.datetime, run_effects_on) -> tuple[int, int]:
    """Fire the timers due at `at` (at most 10,000 a call): their effects on each record
    (`run_effects_on(tdef, record, effects, inputs)`), then the rows marked fired. Returns how many
    rows were due and how many fired (a record that no longer matches does not)."""
    physical = service.storage.physical(TIMER)
    conn, defs = service.conn, service.defs
    rows = conn.execute(sa.select(physical.c.sys_id, physical.c.timer, physical.c.table_name, physical.c.document)
                        .where(physical.c.state == WAITING, physical.c.due <= at)
                        .order_by(physical.c.due).limit(10_000)).mappings().all()
    fired = 0
    by_timer: dict[str, list[dict]] = {}
    for row in rows:
        by_timer.setdefault(row["timer"], []).append(dict(row))
    for name, group in by_timer.items():
        timer = defs.timers.get(name)
        found: set[str] = set()
        if timer is not None and timer.table in defs.tables:
            count, found = _fire(service, timer, [r["document"] for r in group], run_effects_on)
            fired += count
        ids = [r["sys_id"] for r in group if r["document"] in found]
        for i in range(0, len(ids), 500):  # fired (or no longer matching): not due again
            conn.execute(sa.update(physical).where(physical.c.sys_id.in_(ids[i:i + 500])).values(
                state=FIRED, **stamps.touched_sql(physical, service.actor.user_name, service_stamp())))
        gone = [r["sys_id"] for r in group if r["document"] not in found]
        for i in range(0, len(gone), 500):  # the record is gone, or the timer no longer declared
            conn.execute(sa.delete(physical).where(physical.c.sys_id.in_(gone[i:i + 500])))
    if rows:
        service.written.add(TIMER)
    return len(rows), fired


def _fire(service, timer: TimerDef, documents: list[str], run_effects_on) -> tuple[int, set[str]]:
    """Run the timer's effects on each of the records that still matches; (how many, the records found)."""
    defs = service.defs
    root = defs.tables[timer.table]
    fired, found = 0, set()
    for i in range(0, len(documents), 500):
        stmt, _ = select_rows(service.storage, root.name, Query(Term("sys_id", "in", documents[i:i + 500])))
        for record in service.conn.execute(stmt).mappings().all():
            record = dict(record)
            found.add(record["sys_id"])
            tdef = defs.tables.get(record.get("sys_class_name"), root)
            node = _condition(service, tdef, timer)  # still matching: a write that raced the tick wins
            if node is not None and not evaluate(node, record, resolve=resolver(service, tdef, record)):
                continue
            run_effects_on(tdef, record, timer.effects, {"timer": timer.name})
            fired += 1
    return fired, found


__all__ = ["FIRED", "TIMER", "WAITING", "after_rows", "after_where", "due_time", "fire_due"]
