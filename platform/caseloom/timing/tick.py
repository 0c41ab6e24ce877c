"""The clock's tick: every running SLA whose next escalation is due (`threshold_due <= now`, one
indexed query) escalates, once.

Each due threshold's effects run on the SLA's record, and the SLA moves on to its next threshold in
the same transaction, so an escalation is never fired twice (a second worker's tick finds the row
moved on; PostgreSQL's SKIP LOCKED keeps two ticks off the same rows) and never lost (a tick that
comes late, after a restart, finds every threshold whose moment passed and fires each once, in
order). Reaching 100 % marks the SLA breached.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..definitions.model import TableDef
from ..effects import EffectContext
from ..effects.run import run_effects
from .engine import moment
from .measure import RUNNING, State, measure
from .slas import SLA, TASK_SLA, Sla, slas_for

log = logging.getLogger(__name__)
BATCH = 10_000  # due thresholds handled per transaction


@dataclass
class TickReport:
    escalated: int = 0  # thresholds fired
    breached: int = 0  # of which breaches
    by_threshold: dict[tuple[str, int], int] = field(default_factory=dict)  # (SLA name, percentage) -> count


def tick(runtime, at: dt.datetime | None = None, rounds: int = 20) -> TickReport:
    """Fire every escalation due at `at` (now): as many transactions of BATCH as it takes (at most
    `rounds`); a late tick catches up every threshold passed meanwhile, one round per threshold."""
    report = TickReport()
    if runtime.defs.sla_root is None:
        return report
    at = at or moment()
    for _ in range(rounds):
        with runtime.transaction(write_lock=True) as service:
            fired = escalate_due(service, at, report)
        if not fired:
            break
    return report


def escalate_due(service, at: dt.datetime, report: TickReport) -> int:
    """One transaction's share of the due thresholds; returns how many fired."""
    ts = service.storage.physical(TASK_SLA)
    stmt = (sa.select(ts.c.sys_id, ts.c.task, ts.c.sla, ts.c.next_threshold, ts.c.start_time,
                      ts.c.pause_duration, ts.c.business_pause_duration)
            .where(ts.c.threshold_due <= at, ts.c.stage == RUNNING).order_by(ts.c.threshold_due).limit(BATCH))
    if service.conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    due = service.conn.execute(stmt).mappings().all()
    if not due:
        return 0
    slas = _definitions(service, {row["sla"] for row in due})
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in due:
        groups[(row["sla"], row["next_threshold"])].append(dict(row))
    for (sla_id, threshold), rows in groups.items():
        sla = slas.get(sla_id)
        if sla is None:
            continue
        _advance(service, sla, threshold, rows, at)
        _run_escalation(service, sla, threshold, [r["task"] for r in rows])
        report.escalated += len(rows)
        report.breached += len(rows) if threshold >= 100 else 0
        report.by_threshold[(sla.name, threshold)] = report.by_threshold.get((sla.name, threshold), 0) + len(rows)
    return len(due)


def _definitions(service, ids: set[str]) -> dict[str, Sla]:
    """The SLA definitions of the due rows, whatever their table."""
    physical = service.storage.physical(SLA)
    tables = set(service.conn.execute(sa.select(physical.c.collection).where(physical.c.sys_id.in_(ids))).scalars())
    return {s.sys_id: s for table in tables for s in slas_for(service, table) if s.sys_id in ids}


def _advance(service, sla: Sla, threshold: int, rows: list[dict], at: dt.datetime) -> None:
    """Move the rows past `threshold`: their next threshold and when it is due, their timing as of now
    (breached once past 100 %), one UPDATE per group of rows with the same timing."""
    ts = service.storage.physical(TASK_SLA)
    later = [t for t in sla.clock.thresholds if t > threshold]
    by_timing: dict[tuple, list[str]] = defaultdict(list)
    for row in rows:
        by_timing[(row["start_time"], row["pause_duration"] or 0, row["business_pause_duration"] or 0)].append(
            row["sys_id"])
    user = service.actor.user_name
    from .. import stamps
    from .engine import service_stamp

    stamp = service_stamp()
    for (start, pause, business_pause), ids in by_timing.items():
        state = State(RUNNING, start, None, pause, business_pause, None, later[0] if later else None)
        values = measure(sla.clock, state, at)
        if not later:
            values |= {"next_threshold": None, "threshold_due": None}
        values["has_breached"] = values["has_breached"] or threshold >= 100
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            service.conn.execute(sa.update(ts).where(ts.c.sys_id.in_(chunk)).values(
                **values, **stamps.touched_sql(ts, user, stamp)))
    service.written.add(TASK_SLA)


def _run_escalation(service, sla: Sla, threshold: int, task_ids: list[str]) -> None:
    escalation = sla.escalations.get(threshold)
    if escalation is None or not escalation.effects:
        return
    defs = service.defs
    from ..query import Query, Term, select_rows

    root = defs.tables[sla.table]
    automation = service.automation
    with service.by_definitions():
        for i in range(0, len(task_ids), 500):
            stmt, _ = select_rows(service.storage, root.name, Query(Term("sys_id", "in", task_ids[i:i + 500])))
            for record in service.conn.execute(stmt).mappings():
                record = dict(record)
                tdef: TableDef = defs.tables.get(record.get("sys_class_name"), root)
                ctx = EffectContext(service=service, table=tdef, record=record,
                                    inputs={"sla": sla.name, "percentage": threshold},
                                    properties=_properties(service),
                                    notify=automation.notifier(service) if automation is not None else None)
                run_effects(ctx, escalation.effects)


def _properties(service):
    from ..automation.conditions import unit_properties

    return unit_properties(service).get


__all__ = ["BATCH", "TickReport", "escalate_due", "tick"]
