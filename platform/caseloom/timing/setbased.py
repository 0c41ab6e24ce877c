"""The SLA engine in SQL, for every record a set-based write touched (caseloom.setinsert's INSERT ...
SELECT of a hundred thousand children, caseloom.setwrite's sync and cascades).

The same order and outcome as the row path (caseloom.timing.engine), with a fixed number of
statements per SLA definition: the conditions are compiled to SQL over the touched records, new
task_sla rows are one INSERT ... SELECT, and a stage change is one UPDATE, its new values worked out
in Python (business time needs the schedule) once per group of rows that share their timing (children
created together share their start, and paused together, their pause).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from .. import stamps
from ..query import Selection
from ..query.conditions import fields_of
from ..query.evaluate import evaluate
from ..query.nodes import Not
from ..setwrite import Touched, kept_rows, kept_values, new_sys_id_sql, sys_id_prefix
from .engine import _cancels, _resumes, moment, moved, service_stamp
from .measure import ACTIVE, CANCELLED, COMPLETED, PAUSED, RUNNING, State, first, measure
from .slas import TASK_SLA, Sla, slas_for

GROUPED = ("stage", "start_time", "pause_time", "pause_duration", "business_pause_duration", "next_threshold",
           "has_breached")


MAX_GROUPS = 64  # distinct value sets of the touched records worked out in Python; more: all in SQL


def after_where(service, tdef, touched: Touched, new: bool = False) -> None:
    """Evaluate the SLAs of the `tdef` records a set-based write touched (the set path); `new`:
    records just inserted, which have no SLA yet to stop, cancel, pause or resume.

    The records a set-based write touches mostly share the values the SLA conditions read (the
    children of one major case): the conditions are evaluated once per distinct set of those values,
    in Python, and only the transitions that happen are written, each for its group of records.
    With more than MAX_GROUPS distinct sets, each step is one statement with the conditions in SQL."""
    slas = slas_for(service, tdef.name)
    if not slas:
        return
    at = moment()
    groups = _groups(service, tdef, slas, touched)
    if groups is None:
        for sla in slas:
            _evaluate(service, tdef, sla, touched, at, new)
        return
    active = {} if new else _active(service, tdef, touched)
    for values, group in groups:
        for sla in slas:
            _decide(service, tdef, sla, values, group, at, new, active.get(sla.sys_id, NONE_ACTIVE))


Group = Callable[[Selection], list[sa.ColumnElement]]  # the WHERE clauses of one group's records


def _groups(service, tdef, slas: list[Sla], touched: Touched) -> list[tuple[dict, Group]] | None:
    """(values, the clauses that select the touched records that have them) per distinct set of the
    values the SLAs' conditions read; None when there are more than MAX_GROUPS."""
    def all_touched(selection: Selection) -> list[sa.ColumnElement]:
        return [touched.where(selection.base)]

    paths = sorted({path for sla in slas for node in _nodes(sla) for path in fields_of(node)})
    if not paths:
        return [({}, all_touched)]
    selection = Selection(service.storage, tdef.name)
    columns = [selection.column(path)[0] for path in paths]
    rows = service.conn.execute(sa.select(*columns).select_from(selection.from_clause)
                                .where(touched.where(selection.base)).distinct().limit(MAX_GROUPS + 1)).all()
    if len(rows) > MAX_GROUPS:
        return None
    if len(rows) == 1:  # every touched record has these values: the group is the touched records, and
        # saying so alone keeps the planner from estimating it by statistics taken before the write (on
        # PostgreSQL, one row for a state no record had then: nested loops over 100,000 rows)
        return [(dict(zip(paths, rows[0], strict=True)), all_touched)]

    def group(values: dict) -> Group:
        def where(selection: Selection) -> list[sa.ColumnElement]:
            return [*all_touched(selection), *(
                selection.column(p)[0].is_(None) if v is None else selection.column(p)[0] == v
                for p, v in values.items())]
        return where

    return [(values, group(values)) for values in (dict(zip(paths, row, strict=True)) for row in rows)]


def _nodes(sla: Sla) -> list:
    return [n for n in (sla.start, sla.stop, sla.pause, sla.resume, sla.cancel, sla.reset) if n is not None]


@dataclass(frozen=True)
class Active:
    """One SLA definition's task SLAs on the touched records before the write: the stages of those
    running or paused, and whether every touched record has one running or paused."""

    stages: frozenset[str] = frozenset()
    everywhere: bool = False


NONE_ACTIVE = Active()


def _active(service, tdef, touched: Touched) -> dict[str, Active]:
    """Per SLA definition running or paused on any of the touched records, what `Active` tells (one
    indexed pass, and a count of the touched records when there is any). A transition whose stage no
    touched record has, or an attachment every touched record has already, is then not looked for."""
    ts = service.storage.physical(TASK_SLA)
    has = {stage: sa.func.max(sa.case((ts.c.stage == stage, 1), else_=0)) for stage in ACTIVE}
    rows = service.conn.execute(sa.select(ts.c.sla, sa.func.count(ts.c.task.distinct()), *has.values()).where(
        touched.of(ts.c.task), ts.c.stage.in_(ACTIVE)).group_by(ts.c.sla)).all()
    if not rows:
        return {}
    records = service.conn.execute(touched.count(service.storage.physical(tdef.name))).scalar_one()
    return {sla: Active(frozenset(stage for stage, found in zip(has, flags, strict=True) if found), tasks >= records)
            for sla, tasks, *flags in rows}


def _records(service, tdef, where: Group) -> sa.Select:
    """The sys_ids of the `tdef` records `where` selects."""
    selection = Selection(service.storage, tdef.name)
    clauses = where(selection)  # before the FROM: the joins its dot-walks need are part of it
    return sa.select(selection.base.c.sys_id).select_from(selection.from_clause).where(*clauses)


def _of(service, sla: Sla, stages, records: sa.Select) -> sa.ColumnElement:
    """The task_sla rows of `sla` in one of `stages` on the records `records` selects."""
    ts = service.storage.physical(TASK_SLA)
    return sa.and_(ts.c.sla == sla.sys_id, ts.c.stage.in_(stages), ts.c.task.in_(records.scalar_subquery()))


def _decide(service, tdef, sla: Sla, values: dict, group: Group, at: dt.datetime, new: bool,
            before: Active) -> None:
    """One SLA definition on one group of records sharing `values`, in the engine's order
    (caseloom.timing.engine.step): only the transitions that happen are written, and only those
    `before` allows are looked for."""
    def holds(node) -> bool:
        return node is not None and evaluate(node, values, resolve=values.get)

    ts = service.storage.physical(TASK_SLA)

    def active(*stages: str) -> sa.ColumnElement:
        return _of(service, sla, stages, _records(service, tdef, group))

    ended = False  # the group's running or paused task SLAs of this definition were completed
    if before.stages:
        if holds(sla.stop):
            move_where(service, sla, active(*ACTIVE), COMPLETED, at)
            return
        if holds(sla.reset):
            move_where(service, sla, active(*ACTIVE), COMPLETED, at)
            ended = True
        elif _cancels(sla, holds):
            move_where(service, sla, active(*ACTIVE), CANCELLED, at)
            return
        else:
            if holds(sla.pause) and RUNNING in before.stages:
                move_where(service, sla, active(RUNNING), PAUSED, at)
            if _resumes(sla, holds) and PAUSED in before.stages:  # not the ones that have just paused
                move_where(service, sla, sa.and_(active(PAUSED), ts.c.pause_time != at), RUNNING, at)
    if holds(sla.start) and not holds(sla.stop) and not (sla.when_to_cancel == "cancel_condition"
                                                          and holds(sla.cancel)):
        if ended or not before.everywhere:  # otherwise every record has one running or paused already
            attach_ids(service, tdef, sla, group, at, paused=holds(sla.pause), new=new)


def _matching(selection: Selection, touched: Touched, conditions) -> list[sa.ColumnElement]:
    """The WHERE clauses of the touched records where all `conditions` (Nodes; Not(...) allowed) hold."""
    clauses = [touched.where(selection.base)]
    for node in conditions:
        negate = isinstance(node, Not)
        clause = selection.condition(node.item if negate else node)
        clause = sa.func.coalesce(clause, sa.false()) if clause is not None else sa.true()
        clauses.append(sa.not_(clause) if negate else clause)
    return clauses


def _evaluate(service, tdef, sla: Sla, touched: Touched, at: dt.datetime, new: bool) -> None:
    def active(stages=ACTIVE, *conditions) -> sa.ColumnElement:
        return _of(service, sla, stages, _records(service, tdef, lambda s: _matching(s, touched, conditions)))

    if new:
        attach_where(service, tdef, sla, touched, at, new=True)
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
    attach_where(service, tdef, sla, touched, at)


def move_where(service, sla: Sla, target: sa.ColumnElement, stage: str, at: dt.datetime) -> int:
    """Move the task_sla rows `target` selects to `stage` at `at`, each stage change audited: the new
    values are worked out once per group of rows sharing their timing, and written by one UPDATE for
    every group (a statement per group would read the task SLAs once per group: on PostgreSQL, a scan
    of the whole table each). Returns how many rows moved."""
    conn, user = service.conn, service.actor.user_name
    ts = service.storage.physical(TASK_SLA)
    # `target` is found once (it joins the touched records, their values and the task SLAs): the
    # rows are kept with their timing and the number of their group
    group_of = sa.func.dense_rank().over(order_by=[ts.c[name] for name in GROUPED]).label("grp")
    with kept_rows(conn, sa.select(ts.c.sys_id, group_of, *(ts.c[name] for name in GROUPED)).where(target),
                   "moving") as moving:
        groups = conn.execute(sa.select(moving.c.grp, *(moving.c[name] for name in GROUPED)).distinct()).all()
        if not groups:
            return 0
        moves = {grp: moved(sla, dict(zip(GROUPED, timing, strict=True)) | {"end_time": None}, stage, at)
                 for grp, *timing in groups}
        names = list(next(iter(moves.values())))
        columns = [sa.Column(name, ts.c[name].type) for name in names]
        rows = [{"grp": grp, **values} for grp, values in moves.items()]
        key = sa.Column("grp", sa.Integer, primary_key=True, autoincrement=False)
        with kept_values(conn, "moves", key, columns, rows) as new:
            stamp = service_stamp()
            mine = ts.c.sys_id == moving.c.sys_id
            if any(row.stage != stage for row in groups):
                audit = service.storage.physical("sys_audit")
                cols = (stamps.new_rows_sql("sys_audit", user, stamp, new_sys_id_sql(conn.dialect.name, ts))
                        | stamps.audit_columns_sql(ts, "stage", ts.c.stage, sa.literal(stage), user, service.transaction))
                conn.execute(sa.insert(audit).from_select(list(cols), sa.select(*cols.values()).select_from(
                    ts.join(moving, mine)).where(moving.c.stage != stage)))
            result = conn.execute(sa.update(ts).where(mine, moving.c.grp == new.c.grp).values(
                **{name: new.c[name] for name in names}, **stamps.touched_sql(ts, user, stamp)))
    service.written.add(TASK_SLA)
    return result.rowcount


def attach_ids(service, tdef, sla: Sla, group: Group, at: dt.datetime, paused: bool, new: bool) -> int:
    """A new task_sla row (paused at once when `paused`) for every record of the group that has none
    of this SLA running or paused (`new`: records just inserted have none)."""
    selection = Selection(service.storage, tdef.name)
    return _attach(service, sla, selection, group(selection), paused, at, new)


def attach_where(service, tdef, sla: Sla, touched: Touched, at: dt.datetime, new: bool = False) -> int:
    """A new task_sla row for every touched record the SLA attaches to, paused at once where its
    pause condition holds (`new`: the records were just inserted, so none has one yet)."""
    conditions = [sla.start] + ([Not(sla.stop)] if sla.stop is not None else [])
    if sla.when_to_cancel == "cancel_condition" and sla.cancel is not None:
        conditions.append(Not(sla.cancel))
    selection = Selection(service.storage, tdef.name)
    paused = sa.func.coalesce(selection.condition(sla.pause), sa.false()) if sla.pause is not None else False
    return _attach(service, sla, selection, _matching(selection, touched, conditions), paused, at, new)


def _attach(service, sla: Sla, selection: Selection, clauses: list[sa.ColumnElement],
            paused: bool | sa.ColumnElement, at: dt.datetime, new: bool) -> int:
    """One INSERT ... SELECT of a new task_sla row for every record of `selection` that `clauses`
    select and that has none of this SLA running or paused (unless `new`), started at `at` (or at its
    retroactive date); paused at once where `paused` holds: for them all (a bool), or per record (an
    SQL condition). `clauses` are resolved already, so the FROM holds the joins they need."""
    conn, user = service.conn, service.actor.user_name
    ts = service.storage.physical(TASK_SLA)
    base = selection.base
    timing = {stage: measure(sla.clock, State(stage, at, pause_time=at if stage == PAUSED else None,
                                              next_threshold=first(sla.clock)), at)
                     | {"stage": stage, "pause_time": at if stage == PAUSED else None}
              for stage in (RUNNING, PAUSED)}

    def value(name: str) -> sa.ColumnElement:
        run, pause, column_type = timing[RUNNING][name], timing[PAUSED][name], ts.c[name].type
        if isinstance(paused, bool) or run == pause:
            return sa.literal(pause if paused is True else run, column_type)
        return sa.case((paused, sa.literal(pause, column_type)), else_=sa.literal(run, column_type))

    prefix = sys_id_prefix()
    start = sa.literal(at, sa.DateTime)
    if sla.retroactive:
        start = sa.func.coalesce(base.c[sla.retroactive], start)
    columns = stamps.new_rows_sql(TASK_SLA, user, service_stamp(), new_sys_id_sql(conn.dialect.name, base, prefix)) | {
        "task": base.c.sys_id, "sla": sa.literal(sla.sys_id), "start_time": start,
        "transaction": sa.literal(service.transaction), **{name: value(name) for name in timing[RUNNING]},
    }
    has_one = sa.exists().where(ts.c.task == base.c.sys_id, ts.c.sla == sla.sys_id, ts.c.stage.in_(ACTIVE))
    select = (sa.select(*columns.values()).select_from(selection.from_clause)
              .where(*clauses, *(() if new else (~has_one,))))
    stages = (RUNNING, PAUSED) if not isinstance(paused, bool) else (PAUSED,) if paused else (RUNNING,)
    return _inserted(service, sla, sa.insert(ts).from_select(list(columns), select), prefix, at, stages)


def _inserted(service, sla: Sla, statement, prefix: str, at: dt.datetime, stages: tuple[str, ...]) -> int:
    """Run one INSERT ... SELECT of task SLAs whose sys_ids start with `prefix`: a retroactive SLA's
    rows given the timing of their own start, the rows noted as made. The statistics are left to
    autovacuum: what reads the rows next is keyed by their tasks (caseloom.setinsert)."""
    conn, ts = service.conn, service.storage.physical(TASK_SLA)
    inserted = conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount
    if not inserted:
        return 0
    low, high = prefix + "0" * 12, prefix + "f" * 12
    if sla.retroactive:  # each start has its own timing
        for stage in stages:
            move_where(service, sla, sa.and_(ts.c.sys_id.between(low, high), ts.c.stage == stage), stage, at)
    service.written.add(TASK_SLA)
    service.note_made(TASK_SLA, (low, high, inserted))
    return inserted


__all__ = ["MAX_GROUPS", "after_where", "attach_ids", "attach_where", "move_where"]
