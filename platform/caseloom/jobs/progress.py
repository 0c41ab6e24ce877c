"""The sys_job table: one row per background job, so every process sees its progress.

A job moves queued -> running -> done | failed. Claiming is one guarded UPDATE, so two
workers handed the same job never both run it; a failed job, or a running one whose
worker stopped reporting for `STALE_AFTER`, may be claimed again (a re-run), and a done
job never is. Progress is written in the caller's transaction, so the counts a client
reads always match the work committed with them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..records import new_sys_id, now
from ..storage import Storage

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
STALE_AFTER = dt.timedelta(minutes=10)  # a running job silent this long is taken to have lost its worker


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

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED)

    def as_result(self) -> dict:
        """What the jobs API returns (contract section 7)."""
        return {"state": self.state, "done": self.done, "total": self.total, "message": self.message}


def _table(storage: Storage) -> sa.Table:
    return storage.internal("sys_job")


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


def claim_job(conn: sa.Connection, storage: Storage, job_id: str, stale_after: dt.timedelta = STALE_AFTER) -> bool:
    """Mark a job running if it may run now: queued, failed (a re-run), or running but silent for
    `stale_after` (its worker died). One guarded UPDATE: of two claimers, one wins."""
    table, stamp = _table(storage), now()
    runnable = sa.or_(table.c.state.in_((QUEUED, FAILED)),
                      sa.and_(table.c.state == RUNNING, table.c.updated_on < stamp - stale_after))
    result = conn.execute(sa.update(table).where(table.c.id == job_id, runnable)
                          .values(state=RUNNING, message=None, updated_on=stamp))
    return result.rowcount == 1


def report_progress(conn: sa.Connection, storage: Storage, job_id: str, done: int, total: int | None = None,
                    message: str | None = None) -> None:
    """Record how far a running job is (also its heartbeat: a job reporting is not stale)."""
    values: dict[str, Any] = {"done": done, "updated_on": now()}
    if total is not None:
        values["total"] = total
    if message is not None:
        values["message"] = message
    table = _table(storage)
    conn.execute(sa.update(table).where(table.c.id == job_id).values(**values))


def finish_job(conn: sa.Connection, storage: Storage, job_id: str, message: str | None = None,
               done: int | None = None, total: int | None = None) -> None:
    """Mark a job done; `done` and `total` are its final counts when given."""
    _end(conn, storage, job_id, DONE, message, done, total)


def fail_job(conn: sa.Connection, storage: Storage, job_id: str, message: str) -> None:
    """Mark a job failed with the reason; its counts stay where the work stopped."""
    _end(conn, storage, job_id, FAILED, message, None, None)


def _end(conn: sa.Connection, storage: Storage, job_id: str, state: str, message: str | None,
         done: int | None, total: int | None) -> None:
    values: dict[str, Any] = {"state": state, "message": message, "updated_on": now()}
    if done is not None:
        values["done"] = done
    if total is not None:
        values["total"] = total
    table = _table(storage)
    conn.execute(sa.update(table).where(table.c.id == job_id).values(**values))


def _job(row) -> Job:
    values = dict(row)
    values["params"] = json.loads(values["params"] or "{}")
    return Job(**values)
