"""The sys_job table: one row per background job, so every process sees its progress.

A job moves queued -> running -> done | failed, or is canceled (queued or running -> canceled,
see `cancel_job`). A run claims it with one guarded UPDATE that
writes its worker id (see `liveness`), so two workers handed the same job never both run it;
a failed job may be claimed again (a re-run), a done job never is. A running job whose run is
lost (silent heartbeat, or its process gone) is released back to queued, again by one guarded
UPDATE, and any worker may claim it.

A run commits its work only while it still holds the job: each unit of work takes `hold`
first (the guarded UPDATE locks the job's row on PostgreSQL until the unit commits; on SQLite
the unit already holds the write lock), and progress is written by a guarded UPDATE in the same
transaction as the work it counts. A run that lost the job gets `ClaimLost` and its unit rolls
back, so even a run wrongly thought lost never commits beside the run that took over.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from ..database import is_busy, write_transaction
from ..records import new_sys_id, now
from ..storage import Storage
from .liveness import describe_worker, process_gone, timing

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELED = "queued", "running", "done", "failed", "canceled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELED)
FINISHED = (DONE, FAILED, CANCELED)
SLICE_PARENT = "sys_job"  # the target_table of a job's slices, whose target_sys_id is the job (jobs.slices)
RECORD_JOBS = 100  # a record's jobs read for its form's panel, at most (record_jobs)
STALE_AFTER = dt.timedelta(minutes=10)  # a job queued this long has lost its task message: enqueue it again


class ClaimLost(Exception):
    """This run no longer holds its job (it was found lost and another run took it over): nothing
    more of this run may commit."""

    def __init__(self, job_id: str, worker: str):
        super().__init__(f"job {job_id}: run {worker} no longer holds the job; another worker took it over")


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    state: str
    done: int
    total: int
    message: str | None
    params: dict[str, Any]
    created_on: dt.datetime
    updated_on: dt.datetime
    created_by: str | None
    target_table: str | None
    target_sys_id: str | None
    worker: str | None = None  # the run that holds it while it is running
    heartbeat_on: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def as_result(self) -> dict:
        """What the jobs API returns (contract section 7, whose states are queued, running, done and failed:
        a stopped job did not finish its work, so it reads `failed`, its message saying who stopped it)."""
        state = FAILED if self.state == CANCELED else self.state
        return {"state": state, "done": self.done, "total": self.total, "message": self.message}


def _table(storage: Storage) -> sa.Table:
    return storage.internal("sys_job")


def clock(conn: sa.Connection) -> Any:
    """Now, for heartbeats: the database's clock on PostgreSQL, so workers on several machines
    compare one clock; on SQLite (one machine) this process's."""
    if conn.dialect.name == "postgresql":
        return sa.func.timezone("UTC", sa.func.clock_timestamp(), type_=sa.DateTime())
    return now()


def _now(conn: sa.Connection) -> dt.datetime:
    """The value of `clock` now."""
    return conn.execute(sa.select(clock(conn))).scalar_one() if conn.dialect.name == "postgresql" else now()


def create_job(conn: sa.Connection, storage: Storage, name: str, *, created_by: str | None = None,
               target_table: str | None = None, target_sys_id: str | None = None,
               params: dict | None = None, total: int = 0) -> str:
    """Add a queued job; returns its id. Enqueue it only after this transaction commits."""
    job_id, stamp = new_sys_id(), now()
    conn.execute(sa.insert(_table(storage)).values(
        id=job_id, name=name, state=QUEUED, done=0, total=total, message=None,
        params=json.dumps(params or {}, sort_keys=True), created_on=stamp, updated_on=stamp,
        created_by=created_by, target_table=target_table, target_sys_id=target_sys_id))
    return job_id


def get_jobs(conn: sa.Connection, storage: Storage, job_ids: list[str]) -> list[Job]:
    """The jobs of these ids that exist, in the order given: one query."""
    table = _table(storage)
    found = {row["id"]: _job(row) for row in conn.execute(sa.select(table).where(table.c.id.in_(job_ids))).mappings()}
    return [found[i] for i in job_ids if i in found]


def get_job(conn: sa.Connection, storage: Storage, job_id: str) -> Job | None:
    row = conn.execute(sa.select(_table(storage)).where(_table(storage).c.id == job_id)).mappings().first()
    return _job(row) if row else None


def active_job(conn: sa.Connection, storage: Storage, name: str, target_table: str | None,
               target_sys_id: str | None) -> Job | None:
    """The queued or running job of this name for this record, if there is one."""
    table = _table(storage)
    row = conn.execute(sa.select(table).where(
        table.c.name == name, table.c.target_table == target_table, table.c.target_sys_id == target_sys_id,
        table.c.state.in_((QUEUED, RUNNING))).order_by(table.c.created_on.desc()).limit(1)).mappings().first()
    return _job(row) if row else None


def record_jobs(conn: sa.Connection, storage: Storage, names: list[str], target_table: str, target_sys_id: str,
                limit: int = RECORD_JOBS) -> list[Job]:
    """The jobs of these names for this record, at most `limit`: the queued and running ones first, then the
    others, each the newest first (so the newest of all is among them). One statement, along the record's index."""
    if not names:
        return []
    table = _table(storage)
    active_first = sa.case((table.c.state.in_((QUEUED, RUNNING)), 0), else_=1)
    stmt = sa.select(table).where(
        table.c.name.in_(names), table.c.target_table == target_table, table.c.target_sys_id == target_sys_id) \
        .order_by(active_first, table.c.created_on.desc()).limit(limit)
    return [_job(row) for row in conn.execute(stmt).mappings()]


# -- claiming, holding, releasing -----------------------------------------------------------------


def claim_job(conn: sa.Connection, storage: Storage, job_id: str, worker: str) -> bool:
    """Mark a job running under `worker` if it may run now: queued, failed (a re-run), or running
    but lost (released first). Guarded UPDATEs: of two claimers, one wins. On SQLite, call it in
    a `write_transaction`, so the lost check and the claim see the same state."""
    if _claim(conn, storage, job_id, worker):
        return True
    job = get_job(conn, storage, job_id)
    return job is not None and release_job(conn, storage, job) is not None and _claim(conn, storage, job_id, worker)


def _claim(conn: sa.Connection, storage: Storage, job_id: str, worker: str) -> bool:
    table = _table(storage)
    result = conn.execute(sa.update(table).where(table.c.id == job_id, table.c.state.in_((QUEUED, FAILED)))
                          .values(state=RUNNING, worker=worker, heartbeat_on=clock(conn), message=None,
                                  updated_on=now()))
    return result.rowcount == 1


def _held(table: sa.Table, job_id: str, worker: str) -> sa.ColumnElement:
    return sa.and_(table.c.id == job_id, table.c.worker == worker, table.c.state == RUNNING)


def hold(conn: sa.Connection, storage: Storage, job_id: str, worker: str) -> None:
    """Start a unit of a run's work: stamp the heartbeat if the run still holds the job, else raise
    ClaimLost. On PostgreSQL the job's row stays locked until the unit ends, so it cannot be
    released in between (a release skips locked rows: a unit in progress is a sign of life)."""
    table = _table(storage)
    result = conn.execute(sa.update(table).where(_held(table, job_id, worker)).values(heartbeat_on=clock(conn)))
    if result.rowcount != 1:
        raise ClaimLost(job_id, worker)


BEAT_WAIT = 1.0  # seconds a heartbeat waits for SQLite's write lock before it skips its beat


def beat(engine: sa.Engine, storage: Storage, job_id: str, worker: str) -> None:
    """The heartbeat: stamp the job while `worker` holds it. The run's own unit of work stamps it
    when it commits, so a beat that would wait for that unit skips: a row it holds locked is left
    out (PostgreSQL), and a write lock not had within BEAT_WAIT is not waited for (SQLite, where a
    long job's units hold the lock from one commit to the next, and a beat waiting its 30 s would
    fail). Five beats may be skipped before the run counts as lost."""
    table = _table(storage)
    try:
        with write_transaction(engine, wait=BEAT_WAIT) as conn:
            where = _unlocked(conn, table, _held(table, job_id, worker))
            conn.execute(sa.update(table).where(where).values(heartbeat_on=clock(conn)))
    except sa.exc.OperationalError as exc:
        if not is_busy(exc):
            raise
        log.debug("the heartbeat of job %s skipped: the database is busy writing", job_id)


def _unlocked(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement) -> sa.ColumnElement:
    """`where`, less the rows another transaction holds locked (PostgreSQL; SQLite's writer is alone)."""
    if conn.dialect.name != "postgresql":
        return where
    return table.c.id.in_(sa.select(table.c.id).where(where).with_for_update(skip_locked=True).scalar_subquery())


def lost_reason(job: Job, at: dt.datetime) -> str | None:
    """Why a running job's run is taken to be lost at `at`, or None while it seems alive."""
    return _lost(job, at)[0]


def _lost(job: Job, at: dt.datetime) -> tuple[str | None, bool]:
    """(why the run is lost or None, whether that is because its process is known to be gone)."""
    if job.state != RUNNING:
        return None, False
    who = describe_worker(job.worker) if job.worker else "its worker"
    if process_gone(job.worker):
        return f"the worker running it ({who}) had stopped", True
    limit = timing().lost_after
    if (job.heartbeat_on or job.updated_on) < at - dt.timedelta(seconds=limit):
        return f"the worker running it ({who}) had not been heard from for {limit:g} s", False
    return None, False


def release_job(conn: sa.Connection, storage: Storage, job: Job) -> str | None:
    """Put a running job whose run is lost back in the queue; returns why, or None when its run
    still seems alive or it changed meanwhile. The UPDATE checks again what `job` showed (same
    run, still running, still silent) and skips a row locked by a unit of its work."""
    at = _now(conn)
    reason, gone = _lost(job, at)
    if reason is None:
        return None
    table = _table(storage)
    where = sa.and_(table.c.id == job.id, table.c.state == RUNNING, table.c.worker.is_not_distinct_from(job.worker))
    if not gone:
        cutoff = at - dt.timedelta(seconds=timing().lost_after)
        where = sa.and_(where, sa.func.coalesce(table.c.heartbeat_on, table.c.updated_on) < cutoff)
    result = conn.execute(sa.update(table).where(_unlocked(conn, table, where)).values(
        state=QUEUED, worker=None, heartbeat_on=None, message=f"resumed: {reason}", updated_on=now()))
    return reason if result.rowcount == 1 else None


def resume_lost(engine: sa.Engine, storage: Storage) -> list[str]:
    """The reaper's round: release every running job whose run is lost, and take the jobs queued
    for longer than STALE_AFTER (their task message was lost); returns the ids to enqueue. Each
    release is a guarded UPDATE of its own, so of several reapers one takes each job."""
    table = _table(storage)
    with engine.connect() as conn:
        running = [_job(row) for row in conn.execute(sa.select(table).where(table.c.state == RUNNING)).mappings()]
        at = _now(conn)
    resumed = []
    for job in running:
        if lost_reason(job, at) is None:  # most rounds find every run alive: no write, no lock
            continue
        with write_transaction(engine) as conn:
            current = get_job(conn, storage, job.id)
            if current is not None and release_job(conn, storage, current):
                resumed.append(job.id)
    return resumed + _forgotten(engine, table)


def _forgotten(engine: sa.Engine, table: sa.Table) -> list[str]:
    """Jobs queued for longer than STALE_AFTER, stamped so that other reapers leave them alone for
    another STALE_AFTER (a job still waiting behind others in a busy queue is enqueued twice at
    most every STALE_AFTER; claiming runs it once)."""
    cutoff = now() - STALE_AFTER
    stale = sa.and_(table.c.state == QUEUED, table.c.updated_on < cutoff)
    with engine.connect() as conn:
        if conn.execute(sa.select(table.c.id).where(stale).limit(1)).first() is None:
            return []  # the usual round: a read, no write lock
    with write_transaction(engine) as conn:
        waiting = list(conn.execute(sa.select(table.c.id).where(stale).order_by(table.c.created_on)).scalars())
        conn.execute(sa.update(table).where(table.c.id.in_(waiting), stale).values(updated_on=now()))
    return waiting


# -- progress and the end -------------------------------------------------------------------------


def report_progress(conn: sa.Connection, storage: Storage, job_id: str, done: int, total: int | None = None,
                    message: str | None = None, worker: str | None = None) -> None:
    """Record how far a running job is, in the transaction of the work it counts. With `worker`,
    only while that run holds the job (else ClaimLost, and the caller's transaction rolls back)."""
    values: dict[str, Any] = {"done": done, "updated_on": now()}
    if total is not None:
        values["total"] = total
    if message is not None:
        values["message"] = message
    table = _table(storage)
    where = table.c.id == job_id
    if worker is not None:
        where, values["heartbeat_on"] = _held(table, job_id, worker), clock(conn)
    result = conn.execute(sa.update(table).where(where).values(**values))
    if worker is not None and result.rowcount != 1:
        raise ClaimLost(job_id, worker)


def remember_params(conn: sa.Connection, storage: Storage, job_id: str, params: dict[str, Any], worker: str) -> None:
    """Replace a running job's params in the transaction of the work they describe, while `worker`
    holds it (else ClaimLost, and the caller's transaction rolls back)."""
    table = _table(storage)
    result = conn.execute(sa.update(table).where(_held(table, job_id, worker)).values(
        params=json.dumps(params, sort_keys=True), heartbeat_on=clock(conn)))
    if result.rowcount != 1:
        raise ClaimLost(job_id, worker)


def finish_job(conn: sa.Connection, storage: Storage, job_id: str, message: str | None = None,
               done: int | None = None, total: int | None = None, worker: str | None = None) -> bool:
    """Mark a job done; `done` and `total` are its final counts when given. With `worker`, only
    while that run holds it; returns whether the job was marked."""
    return _end(conn, storage, job_id, DONE, message, done, total, worker)


def fail_job(conn: sa.Connection, storage: Storage, job_id: str, message: str, worker: str | None = None) -> bool:
    """Mark a job failed with the reason; its counts stay where the work stopped."""
    return _end(conn, storage, job_id, FAILED, message, None, None, worker)


def _end(conn: sa.Connection, storage: Storage, job_id: str, state: str, message: str | None,
         done: int | None, total: int | None, worker: str | None) -> bool:
    values: dict[str, Any] = {"state": state, "message": message, "updated_on": now()}
    if done is not None:
        values["done"] = done
    if total is not None:
        values["total"] = total
    table = _table(storage)
    where = _held(table, job_id, worker) if worker is not None else table.c.id == job_id
    return conn.execute(sa.update(table).where(where).values(**values)).rowcount == 1


def cancel_job(conn: sa.Connection, storage: Storage, job_id: str, by: str) -> Job | None:
    """Cancel a queued or running job in the caller's transaction; returns it as canceled, or None
    when it had already finished. A queued job never starts; a running one stops at its next unit
    of work: its run no longer holds it (`hold` and guarded progress raise ClaimLost), so the unit in
    progress rolls back and what earlier units committed stays. On PostgreSQL the UPDATE waits for
    that unit to commit (it holds the job's row), so the counts said are the committed ones."""
    table = _table(storage)
    where = sa.and_(table.c.id == job_id, table.c.state.in_((QUEUED, RUNNING)))
    current = get_job(conn, storage, job_id)
    if current is None or conn.execute(sa.update(table).where(where).values(
            state=CANCELED, updated_on=now())).rowcount != 1:
        return None
    job = get_job(conn, storage, job_id)  # the counts as the last committed unit left them
    said = (f"canceled by {by} before it started" if current.state == QUEUED and not job.done
            else f"stopped by {by} after {job.done} of {job.total}")
    conn.execute(sa.update(table).where(table.c.id == job_id).values(message=said))
    # its slices (caseloom.jobs.slices) stop with it
    conn.execute(sa.update(table).where(table.c.target_table == SLICE_PARENT, table.c.target_sys_id == job_id,
                                        table.c.state.in_((QUEUED, RUNNING)))
                 .values(state=CANCELED, updated_on=now(), message=f"stopped with its job by {by}"))
    return replace(job, message=said)


def write_params(conn: sa.Connection, storage: Storage, job_id: str, params: dict[str, Any]) -> None:
    """Replace a finished job's params (what was done after it ended, e.g. an undo of its work)."""
    table = _table(storage)
    conn.execute(sa.update(table).where(table.c.id == job_id).values(
        params=json.dumps(params, sort_keys=True), updated_on=now()))


def lock_job(conn: sa.Connection, storage: Storage, job_id: str) -> Job | None:
    """The job, its row locked until the caller's transaction ends (PostgreSQL; on SQLite the
    caller holds the write lock): two undos of one job run one after the other."""
    table = _table(storage)
    stmt = sa.select(table).where(table.c.id == job_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return _job(row) if row else None


def _job(row) -> Job:
    values = dict(row)
    values["params"] = json.loads(values["params"] or "{}")
    return Job(**values)
