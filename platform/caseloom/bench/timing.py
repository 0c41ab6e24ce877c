"""The SLA benchmarks of `caseloom bench`, for an application whose tables have SLAs.

`sla_attach`: the children of the parent's create action, each getting its SLAs in the same
set-based pass, timed against the same children created with every SLA definition switched off
(the ratio is with / without, medians of PAIRS runs each way on copies of one database).
`sla_tick`: ten running SLAs per unit of scale, one in a hundred past its next escalation, and one
tick of the SLA clock that finds and escalates them, against the plain driver finding them and
writing the same rows.
`sla_repair`: the parent's and its children's task SLAs made again from their history (created,
synced, closed; caseloom.timing.repair), against the plain driver deleting and writing the same rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import statistics
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..access import SYSTEM
from ..query import Term
from ..records import now
from ..runtime import Runtime
from ..timing.repair import ENTRY, LOG, repair
from ..timing.slas import SLA, TASK_SLA
from ..timing.tick import tick

if TYPE_CHECKING:
    from .suite import BenchRun, Result

RUNNING_PER_UNIT, CROSSING_SHARE = 10, 100  # running SLAs per unit of scale; one in CROSSING_SHARE is due
PAIRS = 3  # sla_attach's runs each way


def has_slas(run: BenchRun) -> bool:
    return run.defs.sla_root is not None and run.defs.bench.parent_table in run.defs.descendants(run.defs.sla_root)


def sla_attach(run: BenchRun) -> Iterator[Result]:
    """create_child_cases (with the SLAs), then sla_attach: the same create action run PAIRS times
    each way, alternately with and without the SLAs, each run on a fresh copy of the database as it
    is before create_child_cases; the ratio of the medians."""
    from .suite import Result

    withs, withouts = _paired(run)
    since = now()
    result = run.create_children()
    per_child = _attached(run, since) / max(result.n, 1)
    with_slas, without = statistics.median(withs), statistics.median(withouts)
    run.say(f"sla_attach: median {with_slas:.2f} s with {per_child:.1f} SLAs per child "
            f"({', '.join(f'{s:.2f}' for s in withs)}), {without:.2f} s with no SLA "
            f"({', '.join(f'{s:.2f}' for s in withouts)}), each run on a copy of the same database")
    yield result
    yield Result("sla_attach", result.n, with_slas, without, {"slas_per_child": per_child})


def _paired(run: BenchRun) -> tuple[list[float], list[float]]:
    """The create action's seconds with the SLAs and with every SLA definition inactive, PAIRS times
    each, alternating, each on its own copy of the database (dropped afterwards): both ways start
    from the same rows, pages and free space, and one slow moment of the machine moves a median less
    than it moves a single run."""
    withs: list[float] = []
    withouts: list[float] = []
    slas = run.runtime.storage.physical(SLA)
    for _ in range(PAIRS):
        for on in (False, True):
            run.runtime.engine.dispose()
            copy = run.db.snapshot()
            config = dataclasses.replace(run.config, database_url=run.db.url_of(copy))
            runtime = Runtime(config, run.defs)
            try:
                if not on:
                    with runtime.engine.begin() as conn:
                        conn.execute(sa.update(slas).values(active=False))
                _, seconds, _ = run.run_create(runtime, config, run.new_parent(runtime))
            finally:
                runtime.engine.dispose()
                run.db.drop_snapshot(copy)
            (withs if on else withouts).append(seconds)
    return withs, withouts


def _attached(run: BenchRun, since: dt.datetime) -> int:
    """Task SLAs attached since `since`."""
    ts = run.runtime.storage.physical(TASK_SLA)
    with run.runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(ts).where(ts.c.sys_created_on >= since)).scalar_one()


def sla_tick(run: BenchRun) -> Result:
    """RUNNING_PER_UNIT x scale running SLAs, one in CROSSING_SHARE of them past its first escalation,
    and one tick."""
    running = RUNNING_PER_UNIT * run.scale
    crossing = max(running // CROSSING_SHARE, 1)
    at = now().replace(microsecond=0)
    sla = _escalating_sla(run)
    started = time.perf_counter()
    _running_slas(run, sla, running, crossing, at)
    run.say(f"sla_tick setup: {running:,} running SLAs, {crossing:,} of them due, in "
            f"{time.perf_counter() - started:.1f} s")
    ts = run.runtime.storage.physical(TASK_SLA)
    finding = sa.select(ts.c.sys_id, ts.c.task, ts.c.sla, ts.c.next_threshold).where(
        ts.c.threshold_due <= at, ts.c.stage == "in_progress")
    with run.runtime.engine.connect() as conn:
        sql = str(finding.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    tables = [TASK_SLA, "sys_email", "sys_journal_field", "sys_audit", run.runtime.storage.physical(
        run.bench.parent_table).name]

    def work() -> int:
        report = tick(run.runtime, at)
        if report.escalated != crossing:
            raise RuntimeError(f"sla_tick: the tick escalated {report.escalated} SLAs, not the {crossing} due")
        return report.escalated

    result = run.measured("sla_tick", tables, work, extra=sql)
    result.notes["running"] = running
    return result


def _escalating_sla(run: BenchRun) -> str:
    """An active SLA definition of the parent's table that has escalations (its own or its flow's)."""
    table = run.bench.parent_table
    lineage = (table, *run.defs.ancestors(table))
    declared = [s for s in run.defs.slas.values() if s.table in lineage and run.defs.escalations_of(s) and s.active]
    if not declared:
        raise RuntimeError(f"sla_tick: no declared SLA of {table!r} has escalations")
    slas = run.runtime.storage.physical(SLA)
    with run.runtime.engine.connect() as conn:
        return conn.execute(sa.select(slas.c.sys_id).where(slas.c.name == declared[0].name)).scalar_one()


def _running_slas(run: BenchRun, sla: str, running: int, crossing: int, at: dt.datetime) -> None:
    """Task SLAs written by the plain driver on the parent table's records, in order: the first
    `crossing` are due now (their records assigned to the bench user, so the escalation e-mails)."""
    storage = run.runtime.storage
    table, ts = storage.physical(run.bench.parent_table), storage.physical(TASK_SLA)
    users = storage.physical("sys_user")
    with run.runtime.engine.begin() as conn:
        tasks = list(conn.execute(sa.select(table.c.sys_id).order_by(table.c.sys_id).limit(running)).scalars())
        bench_user = conn.execute(sa.select(users.c.sys_id).where(users.c.user_name == "bench")).scalar_one()
        for i in range(0, min(crossing, len(tasks)), 500):
            conn.execute(sa.update(table).where(table.c.sys_id.in_(tasks[i:i + 500])).values(assigned_to=bench_user))
        # started now, so only the first escalation is due (forced a second ago), whatever the hour
        later, due, start = at + dt.timedelta(days=3), at - dt.timedelta(seconds=1), at
        rows = []
        for i in range(running):
            rows.append({"sys_id": f"{i:032x}", "sys_class_name": TASK_SLA, "sys_created_on": start,
                         "sys_updated_on": start, "sys_created_by": "bench", "sys_updated_by": "bench",
                         "sys_mod_count": 0, "task": tasks[i % len(tasks)], "sla": sla, "stage": "in_progress",
                         "has_breached": False, "start_time": start, "pause_duration": 0,
                         "business_pause_duration": 0, "next_threshold": 50,
                         "threshold_due": due if i < crossing else later})
            if len(rows) == 50_000:
                conn.execute(sa.insert(ts), rows)
                rows = []
        if rows:
            conn.execute(sa.insert(ts), rows)
    from ..bootstrap import refresh_statistics

    refresh_statistics(run.runtime.engine)


__all__ = ["has_slas", "sla_attach", "sla_tick"]


def sla_repair(run: BenchRun) -> Result:
    """The SLAs of the records the create step made (the parent and its children, after their sync and
    close) repaired from their history, in one transaction as `caseloom sla repair` does, with the repair's
    log and its entries (each task SLA before and after)."""
    table = run.bench.parent_table
    repaired = {}

    def work() -> int:
        with run.runtime.transaction(SYSTEM) as service:
            done = repair(service, table, Term("sys_created_on", "ge", run.created_since))
        repaired.update(done.as_json())
        return done.records

    result = run.measured("sla_repair", [TASK_SLA, "sys_audit", ENTRY, LOG], work, deleted_from=(TASK_SLA,))
    run.say(f"sla_repair: {repaired['records']:,} records, {repaired['removed']:,} task SLAs removed, "
            f"{repaired['created']:,} made from their history")
    return result
