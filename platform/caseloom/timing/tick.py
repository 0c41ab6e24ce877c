"""The clock's tick: the timers due fire (caseloom.timing.timers), and every running SLA whose next
escalation is due (`threshold_due <= now`: per SLA definition and threshold, an index seek on
`(sla, next_threshold, threshold_due)`) escalates, once.

Per SLA definition and threshold, the escalation's effects run on the records of the due SLAs, then
the SLAs move on to their next threshold, in one transaction: an escalation is never fired twice (a
second worker's tick finds the rows moved on; on PostgreSQL one tick at a time holds the clock's
lock) and never lost (a tick that comes late, after a restart, finds every threshold whose moment
passed and fires each once, in order). Reaching 100 % marks the SLA breached.

Set-based where the effects allow: a `notify` whose recipients are one field path and whose texts are
plain substitutions is one INSERT ... SELECT of e-mails, and the SLAs move on with one UPDATE per
group of rows sharing their timing. Other effects run record by record, as rules run them, with the
e-mails of their notifications written together.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa

from .. import stamps
from ..definitions.model import EffectDef, TableDef
from ..effects import EffectContext
from ..effects.run import run_effects
from ..query import Query, Term, select_rows
from ..query.dynamic import fixed_clock
from . import timers
from .engine import moment, service_stamp
from .measure import RUNNING, State, measure
from .slas import TASK_SLA, Sla, active_slas

log = logging.getLogger(__name__)
LOCK = 0x5CA1E  # the PostgreSQL advisory lock of the clock


@dataclass
class TickReport:
    escalated: int = 0  # thresholds fired
    breached: int = 0  # of which breaches
    by_threshold: dict[tuple[str, int], int] = field(default_factory=dict)  # (SLA name, percentage) -> count
    timers: int = 0  # timers fired


def tick(runtime, at: dt.datetime | None = None, rounds: int = 20) -> TickReport:
    """Fire every escalation due at `at` (now): one transaction per round, each round firing the
    thresholds due (a late tick catches up one threshold per round, at most `rounds`)."""
    report = TickReport()
    if runtime.defs.sla_root is None and not runtime.defs.timers:
        return report
    at = (at or moment()).replace(microsecond=0)
    with fixed_clock(at):
        for _ in range(rounds):
            with runtime.engine.connect() as conn:  # most ticks find nothing due: a read, no write lock
                if not anything_due(runtime.records(conn), at):
                    break
            with runtime.transaction(write_lock=True) as service:
                fired = escalate_due(service, at, report)
            if not fired:
                break
    return report


def anything_due(service, at: dt.datetime) -> bool:
    """Whether a timer or an SLA's escalation is due at `at` (each look an index seek)."""
    if service.defs.timers and timers.any_due(service, at):
        return True
    return service.defs.sla_root is not None and any(
        service.conn.execute(sa.select(sa.literal(1)).where(due).limit(1)).first() is not None
        for _, _, due in _due(service, at))


def _due(service, at: dt.datetime) -> Iterator[tuple[Sla, int, sa.ColumnElement]]:
    """Per active SLA definition and threshold, the condition of its SLAs due at `at`."""
    ts = service.storage.physical(TASK_SLA)
    for sla in active_slas(service):
        for threshold in sla.clock.thresholds:  # each an index seek on (sla, next_threshold, threshold_due)
            yield sla, threshold, sa.and_(ts.c.sla == sla.sys_id, ts.c.next_threshold == threshold,
                                          ts.c.threshold_due <= at, ts.c.stage == RUNNING)


def escalate_due(service, at: dt.datetime, report: TickReport) -> int:
    """One round: each (SLA definition, threshold) with due SLAs escalates; returns how many fired."""
    conn = service.conn
    if conn.dialect.name == "postgresql" and not conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(LOCK))).scalar():
        return 0  # another worker's tick holds the clock
    fired = 0
    if service.defs.timers:
        with _runner(service) as run_on:
            fired, ran = timers.fire_due(service, at, run_on)
        report.timers += ran
    if service.defs.sla_root is None:
        return fired
    ts = service.storage.physical(TASK_SLA)
    for sla, threshold, due in _due(service, at):
        count = conn.execute(sa.select(sa.func.count()).where(due)).scalar_one()
        if not count:
            continue
        _run_escalation(service, sla, threshold, sa.select(ts.c.task).where(due))
        _advance(service, sla, threshold, due, at)
        fired += count
        report.escalated += count
        report.breached += count if threshold >= 100 else 0
        report.by_threshold[(sla.name, threshold)] = report.by_threshold.get((sla.name, threshold), 0) + count
    return fired


def _advance(service, sla: Sla, threshold: int, due: sa.ColumnElement, at: dt.datetime) -> None:
    """Move the due rows past `threshold`: their next threshold (None after the last) and when it is
    due, their timing as of now (breached once at 100 %), one UPDATE per group sharing their timing."""
    ts = service.storage.physical(TASK_SLA)
    later = [t for t in sla.clock.thresholds if t > threshold]
    timing = (ts.c.start_time, ts.c.pause_duration, ts.c.business_pause_duration, ts.c.has_breached)
    user, stamp = service.actor.user_name, service_stamp()
    for start, pause, business_pause, breached in service.conn.execute(
            sa.select(*timing).where(due).group_by(*timing)).all():
        state = State(RUNNING, start, None, pause or 0, business_pause or 0, None, later[0] if later else None)
        values = measure(sla.clock, state, at)
        values["has_breached"] = bool(values["has_breached"] or breached or threshold >= 100)
        same = sa.and_(due, *(c.is_(None) if v is None else c == v
                              for c, v in zip(timing, (start, pause, business_pause, breached), strict=True)))
        service.conn.execute(sa.update(ts).where(same).values(**values, **stamps.touched_sql(ts, user, stamp)))
    service.written.add(TASK_SLA)


def _run_escalation(service, sla: Sla, threshold: int, tasks: sa.Select) -> None:
    """The escalation's effects on the records `tasks` selects."""
    escalation = sla.escalations.get(threshold)
    if escalation is None or not escalation.effects:
        return
    tdef = service.defs.tables[sla.table]
    in_sql = _notify_in_sql(service, tdef, escalation.effects)
    if in_sql is not None:
        for write in in_sql:
            write(lambda base: base.c.sys_id.in_(tasks.scalar_subquery()))
        return
    _run_per_record(service, sla, threshold, escalation.effects, tasks)


def _notify_in_sql(service, tdef: TableDef, effects: tuple[EffectDef, ...]) -> list | None:
    """The e-mail writers of effects that are all notifications SQL can write; else None."""
    from ..automation.notifications import email_writer, role_addresses
    from ..effects.builtin import NotifyArgs

    writers = []
    for effect in effects:
        if not isinstance(effect.args, NotifyArgs):
            return None
        note = service.defs.notifications[effect.args.name]
        if note.children is not None:
            return None
        writer = email_writer(service, note, tdef, {}, set(tdef.fields), role_addresses(service, note.roles))
        if writer is None:
            return None
        writers.append(writer)
    return writers


def _run_per_record(service, sla: Sla, threshold: int, effects, tasks: sa.Select) -> None:
    """Effects record by record, as rules run them; the e-mails of `notify` are written together."""
    defs = service.defs
    root = defs.tables[sla.table]
    ids = list(service.conn.execute(tasks).scalars())
    with _runner(service) as run_on:
        for i in range(0, len(ids), 500):
            stmt, _ = select_rows(service.storage, root.name, Query(Term("sys_id", "in", ids[i:i + 500])))
            for record in service.conn.execute(stmt).mappings().all():
                record = dict(record)
                tdef: TableDef = defs.tables.get(record.get("sys_class_name"), root)
                run_on(tdef, record, effects, {"sla": sla.name, "percentage": threshold})


@contextmanager
def _runner(service) -> Iterator:
    """A function running effects on one record as rules run them (declared: trusted), whose
    notifications' e-mails are written together when the block ends."""
    properties = _properties(service)
    with service.by_definitions(), service.automation.notifications.batched(service) as notify:
        def run_on(tdef: TableDef, record: dict, effects, inputs: dict) -> None:
            run_effects(EffectContext(service=service, table=tdef, record=record, properties=properties,
                                      inputs=inputs, notify=notify), effects)

        yield run_on


def _properties(service):
    from ..automation.conditions import unit_properties

    return unit_properties(service).get


__all__ = ["LOCK", "TickReport", "anything_due", "escalate_due", "tick"]
