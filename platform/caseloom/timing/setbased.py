"""The SLA engine in SQL, for every record a set-based write touched (caseloom.setinsert's INSERT ...
SELECT of a hundred thousand children, caseloom.setwrite's sync and cascades).

The same order and outcome as the row path (caseloom.timing.engine), with a fixed number of
statements per SLA definition: the conditions are compiled to SQL over the touched records, new
task_sla rows are one INSERT ... SELECT, and a stage change is one UPDATE per group of rows that share
their timing (children created together share their start, and paused together, their pause), whose
new values are worked out once in Python (business time needs the schedule).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from .. import stamps
from ..bulk import keep_statistics_fresh
from ..query import Selection
from ..query.nodes import Not
from ..setwrite import new_sys_id_sql, sys_id_prefix
from .engine import moment, moved, service_stamp
from .measure import ACTIVE, CANCELLED, COMPLETED, PAUSED, RUNNING, State, first, measure
from .slas import TASK_SLA, Sla, slas_for

GROUPED = ("stage", "start_time", "pause_time", "pause_duration", "business_pause_duration", "next_threshold",
           "has_breached")


def after_where(service, tdef, touched: sa.Select, new: bool = False) -> None:
    """Evaluate the SLAs of the `tdef` records whose sys_ids `touched` selects (the set path); `new`:
    records just inserted, which have no SLA yet to stop, cancel, pause or resume."""
    slas = slas_for(service, tdef.name)
    if not slas:
        return
    at = moment()
    for sla in slas:
        _evaluate(service, tdef, sla, touched, at, new)


def _evaluate(service, tdef, sla: Sla, touched: sa.Select, at: dt.datetime, new: bool) -> None:
    storage = service.storage
    ts = storage.physical(TASK_SLA)

    def records(*conditions) -> sa.Select:
        """The sys_ids of touched records where all `conditions` (Nodes; Not(...) allowed) hold."""
        selection = Selection(storage, tdef.name)
        clauses = [selection.base.c.sys_id.in_(touched.scalar_subquery())]
        for node in conditions:
            negate = isinstance(node, Not)
            clause = selection.condition(node.item if negate else node)
            clause = sa.func.coalesce(clause, sa.false()) if clause is not None else sa.true()
            clauses.append(sa.not_(clause) if negate else clause)
        return sa.select(selection.base.c.sys_id).select_from(selection.from_clause).where(*clauses)

    def active(stages=ACTIVE, *conditions) -> sa.ColumnElement:
        return sa.and_(ts.c.sla == sla.sys_id, ts.c.stage.in_(stages), ts.c.task.in_(records(*conditions)))

    if new:
        attach_where(service, tdef, sla, records, at, new=True)
        return

    if sla.stop is not None:
        move_where(service, sla, active(ACTIVE, sla.stop), COMPLETED, at)
    if sla.reset is not None:
        move_where(service, sla, active(ACTIVE, sla.reset), COMPLETED, at)
    if sla.when_to_cancel == "no_match":
        move_where(service, sla, active(ACTIVE, Not(sla.start)), CANCELLED, at)
    elif sla.when_to_cancel == "cancel_condition" and sla.cancel is not None:
        move_where(service, sla, active(ACTIVE, sla.cancel), CANCELLED, at)
    if sla.pause is not None:
        move_where(service, sla, active((RUNNING,), sla.pause), PAUSED, at)
        resume = sla.resume if sla.when_to_resume == "resume_condition" else Not(sla.pause)
        if resume is not None:
            move_where(service, sla, active((PAUSED,), resume), RUNNING, at)
    attach_where(service, tdef, sla, records, at)


def move_where(service, sla: Sla, target: sa.ColumnElement, stage: str, at: dt.datetime) -> int:
    """Move the task_sla rows `target` selects to `stage` at `at`: one UPDATE per group of rows sharing
    their timing, each stage change audited. Returns how many rows moved."""
    conn, user = service.conn, service.actor.user_name
    ts = service.storage.physical(TASK_SLA)
    columns = [ts.c[name] for name in GROUPED]
    groups = conn.execute(sa.select(*columns).where(target).group_by(*columns)).all()
    stamp = service_stamp()
    moved_rows = 0
    for group in groups:
        row = dict(zip(GROUPED, group, strict=True)) | {"end_time": None}
        same = sa.and_(target, *(c.is_(None) if v is None else c == v for c, v in zip(columns, group, strict=True)))
        values = moved(sla, row, stage, at)
        if stage != row["stage"]:
            audit = service.storage.physical("sys_audit")
            cols = (stamps.new_rows_sql("sys_audit", user, stamp, new_sys_id_sql(conn.dialect.name, ts))
                    | stamps.audit_columns_sql(ts, "stage", ts.c.stage, sa.literal(stage), user, service.transaction))
            conn.execute(sa.insert(audit).from_select(list(cols), sa.select(*cols.values()).where(same)))
        result = conn.execute(sa.update(ts).where(same).values(**values, **stamps.touched_sql(ts, user, stamp)))
        moved_rows += result.rowcount
    if groups:
        service.written.add(TASK_SLA)
    return moved_rows


def attach_where(service, tdef, sla: Sla, records, at: dt.datetime, new: bool = False) -> int:
    """One INSERT ... SELECT of a new task_sla row for every touched record the SLA attaches to
    (`new`: the records were just inserted, so none has one yet)."""
    conn, storage, user = service.conn, service.storage, service.actor.user_name
    ts = storage.physical(TASK_SLA)
    conditions = [sla.start] + ([Not(sla.stop)] if sla.stop is not None else [])
    if sla.when_to_cancel == "cancel_condition" and sla.cancel is not None:
        conditions.append(Not(sla.cancel))
    selection = Selection(storage, tdef.name)
    base = selection.base
    candidates = records(*conditions)
    has_one = sa.exists().where(ts.c.task == base.c.sys_id, ts.c.sla == sla.sys_id, ts.c.stage.in_(ACTIVE))
    running = measure(sla.clock, State(RUNNING, at, next_threshold=first(sla.clock)), at)
    paused_values = measure(sla.clock, State(PAUSED, at, pause_time=at, next_threshold=first(sla.clock)), at)
    pause_sql = None
    if sla.pause is not None:
        pause_sql = sa.func.coalesce(selection.condition(sla.pause), sa.false())

    def value(name: str, run, pause) -> sa.ColumnElement:
        column_type = ts.c[name].type
        if pause_sql is None or run == pause:
            return sa.literal(run, column_type)
        return sa.case((pause_sql, sa.literal(pause, column_type)), else_=sa.literal(run, column_type))

    prefix = sys_id_prefix()
    start = sa.literal(at, sa.DateTime)
    if sla.retroactive:
        start = sa.func.coalesce(base.c[sla.retroactive], start)
    columns = stamps.new_rows_sql(TASK_SLA, user, service_stamp(), new_sys_id_sql(conn.dialect.name, base, prefix)) | {
        "task": base.c.sys_id, "sla": sa.literal(sla.sys_id), "start_time": start,
        "transaction": sa.literal(service.transaction),
        "stage": value("stage", RUNNING, PAUSED), "pause_time": value("pause_time", None, at),
        **{name: value(name, running[name], paused_values[name]) for name in running},
    }
    select = (sa.select(*columns.values()).select_from(selection.from_clause)
              .where(base.c.sys_id.in_(candidates.scalar_subquery()), *(() if new else (~has_one,))))
    inserted = conn.execute(sa.insert(ts).from_select(list(columns), select)
                            .execution_options(preserve_rowcount=True)).rowcount
    if not inserted:
        return 0
    keep_statistics_fresh(conn, ts, inserted)
    low, high = prefix + "0" * 12, prefix + "f" * 12
    if sla.retroactive:  # each start has its own timing
        inserted_rows = ts.c.sys_id.between(low, high)
        for stage in (RUNNING, PAUSED):
            move_where(service, sla, sa.and_(inserted_rows, ts.c.stage == stage), stage, at)
    service.written.add(TASK_SLA)
    service.note_made(TASK_SLA, (low, high, inserted))
    return inserted


__all__ = ["after_where", "attach_where", "move_where"]
