"""What a deployment is doing now, for its administrators (README: Operations, System status): the
health checks of `GET /health`, the job workers, the background jobs queued and running (a run
taken for lost says so) and the last ones to end, and the outbound e-mail by state. One reading
serves the browser's page (`/ui/status`), the API (`GET /api/caseloom/status`) and `caseloom status`.

Every read is bounded: the jobs a state at a time along the index of their state and when they last
changed, the e-mails by the state index delivery walks. A part that cannot be read (the database
away) is named in `problems` by the kind of its error, never a URL or a password, and the rest is
still shown.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .health import Health, HealthReport
from .jobs.email import TABLE as EMAIL_TABLE
from .jobs.email import WAITING
from .jobs.liveness import describe_worker
from .jobs.progress import FINISHED, QUEUED, RUNNING, SLICE_PARENT, Job, _job, _now, lost_reason

if TYPE_CHECKING:
    from .jobs import JobQueue
    from .runtime import Runtime

log = logging.getLogger(__name__)

ACTIVE_SHOWN = 50  # queued and running jobs listed, the oldest first
ENDED_SHOWN = 20  # jobs that ended, the newest first


@dataclass(frozen=True)
class JobLine:
    """A job as the status shows it, read at `at` (the jobs' clock)."""

    job: Job
    at: dt.datetime
    lost: str | None = None  # why its run is taken to be lost (a running job only)

    @property
    def slice_of(self) -> str | None:
        """The job this one is a slice of (several workers on one job), or None."""
        return self.job.target_sys_id if self.job.target_table == SLICE_PARENT else None

    @property
    def record(self) -> tuple[str, str] | None:
        """The record the job works on: (table, sys_id), or None (a slice's is its job)."""
        if self.slice_of or not self.job.target_table or not self.job.target_sys_id:
            return None
        return self.job.target_table, self.job.target_sys_id

    @property
    def seconds(self) -> float:
        """How long: since it was queued (still active), or from queued to its end."""
        end = self.job.updated_on if self.job.finished else self.at
        return max((end - self.job.created_on).total_seconds(), 0.0)

    @property
    def worker(self) -> str | None:
        """The run of a running job as people read it (`host:pid`: the run's token is its own)."""
        return describe_worker(self.job.worker) if self.job.worker and self.job.state == RUNNING else None

    @property
    def heard_seconds(self) -> float | None:
        """Since its run was last heard from (a running job), else None."""
        if self.job.state != RUNNING:
            return None
        return max((self.at - (self.job.heartbeat_on or self.job.updated_on)).total_seconds(), 0.0)

    def as_json(self) -> dict:
        job = self.job
        heard = self.heard_seconds
        return {"id": job.id, "name": job.name, "state": job.state, "done": job.done, "total": job.total,
                "message": job.message, "created_on": _iso(job.created_on), "updated_on": _iso(job.updated_on),
                "created_by": job.created_by, "target_table": None if self.slice_of else job.target_table,
                "target_sys_id": None if self.slice_of else job.target_sys_id, "slice_of": self.slice_of,
                "worker": self.worker,
                "seconds": round(self.seconds, 1), "heard_seconds": None if heard is None else round(heard, 1),
                "lost": self.lost}


@dataclass(frozen=True)
class EmailSummary:
    by_state: list[tuple[str, str, int]]  # (state, label, how many), in the state field's choices' order
    oldest_waiting_seconds: float | None  # the oldest message not yet delivered, failed or bounced
    sent_last_minute: int  # accepted by the SMTP server in the last 60 seconds (what the rate limit counts)

    @property
    def waiting(self) -> int:
        return sum(n for state, _, n in self.by_state if state in WAITING)

    def as_json(self) -> dict:
        oldest = self.oldest_waiting_seconds
        return {"by_state": {state: n for state, _, n in self.by_state}, "waiting": self.waiting,
                "oldest_waiting_seconds": None if oldest is None else round(oldest, 1),
                "sent_last_minute": self.sent_last_minute}


@dataclass(frozen=True)
class Status:
    health: HealthReport
    active: list[JobLine] = field(default_factory=list)
    ended: list[JobLine] = field(default_factory=list)
    email: EmailSummary | None = None  # None: the definitions have no sys_email, or it could not be read
    database: dict = field(default_factory=dict)  # {"kind", "version"}
    problems: dict[str, str] = field(default_factory=dict)  # a part not read -> the kind of its error
    read_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Up, as /health says: the database, the queue and a worker."""
        return self.health.ok

    @property
    def lost(self) -> list[JobLine]:
        return [line for line in self.active if line.lost]

    def as_json(self) -> dict:
        return {"status": "ok" if self.ok else "down", "health": self.health.as_json(), "database": self.database,
                "jobs": {"active": [line.as_json() for line in self.active],
                         "ended": [line.as_json() for line in self.ended]},
                "email": self.email.as_json() if self.email is not None else None,
                "problems": self.problems}


def read_status(runtime: Runtime, queue: JobQueue, health: Health) -> Status:
    """The status now: `health`'s checks (each bounded in time), then the jobs and the e-mail, read
    through one connection; a part that fails is left out and named in `problems`."""
    started = time.perf_counter()
    report = health.check(runtime.engine, runtime.storage, queue)
    problems: dict[str, str] = {}
    parts: dict[str, Any] = {}
    if not report.database.ok:  # nothing more can be read; the health part says why
        return Status(report, database={"kind": runtime.engine.dialect.name, "version": None},
                      problems={"database": report.database.error or "down"},
                      read_seconds=time.perf_counter() - started)
    try:
        with runtime.engine.connect() as conn:
            parts["database"] = {"kind": conn.dialect.name, "version": _version(conn)}
            readers: dict[str, Callable[[], Any]] = {"jobs": lambda: _jobs(conn, runtime),
                                                     "email": lambda: _email(conn, runtime)}
            for name, read in readers.items():
                try:
                    parts[name] = read()
                except sa.exc.SQLAlchemyError as exc:
                    log.warning("status: %s could not be read: %s: %s", name, type(exc).__name__,
                                (str(exc).splitlines() or [""])[0])
                    problems[name] = type(exc).__name__
                    conn.rollback()  # PostgreSQL refuses any statement after an error in the transaction
    except sa.exc.SQLAlchemyError as exc:  # the database went away between the check and the reads
        problems["database"] = type(exc).__name__
    active, ended = parts.get("jobs", ([], []))
    return Status(report, active, ended, parts.get("email"),
                  parts.get("database", {"kind": runtime.engine.dialect.name, "version": None}), problems,
                  time.perf_counter() - started)


def _version(conn: sa.Connection) -> str:
    if conn.dialect.name == "sqlite":
        return sqlite3.sqlite_version
    info = conn.dialect.server_version_info or ()
    return ".".join(str(part) for part in info)


def _jobs(conn: sa.Connection, runtime: Runtime) -> tuple[list[JobLine], list[JobLine]]:
    """The queued and running jobs, the oldest first, and the last to end, the last to end first."""
    table = runtime.storage.internal("sys_job")
    at = _now(conn)
    # a state at a time, by the index that starts with it (SQLite's statistics, which average the rows per state,
    # make an IN list of the few active states look like most of the table, and read all of it)
    active = _first(conn, table, (QUEUED, RUNNING), "created_on", False, ACTIVE_SHOWN)
    ended = _first(conn, table, FINISHED, "updated_on", True, ENDED_SHOWN)
    return ([JobLine(job, at, lost_reason(job, at)) for job in active], [JobLine(job, at) for job in ended])


def _first(conn: sa.Connection, table: sa.Table, states: tuple[str, ...], column: str, descending: bool,
           limit: int) -> list[Job]:
    """The first `limit` jobs in `states` by `column` (then id), each state read along its own index."""
    keys = [table.c[column], table.c.id]
    order = [key.desc() for key in keys] if descending else keys
    jobs = [_job(row) for state in states for row in conn.execute(
        sa.select(table).where(table.c.state == state).order_by(*order).limit(limit)).mappings()]
    return sorted(jobs, key=lambda job: (getattr(job, column), job.id), reverse=descending)[:limit]


def _email(conn: sa.Connection, runtime: Runtime) -> EmailSummary | None:
    """The outbound and inbound e-mail by state, the oldest waiting, and the last minute's sending."""
    if EMAIL_TABLE not in runtime.defs.tables:
        return None
    email = runtime.storage.physical(EMAIL_TABLE)
    counts = dict(conn.execute(sa.select(email.c.state, sa.func.count())
                               .where(email.c.state.is_not(None)).group_by(email.c.state)).all())
    state = runtime.defs.tables[EMAIL_TABLE].field("state")
    by_state = [(value, label, counts.pop(value)) for value, label in state.choices if value in counts]
    by_state += [(value, value, n) for value, n in sorted(counts.items())]  # a state no longer declared
    at = _now(conn)
    oldest = conn.execute(sa.select(sa.func.min(email.c.sys_created_on)).where(email.c.state.in_(WAITING))).scalar()
    sent = conn.execute(sa.select(sa.func.count()).where(email.c.sent_on >= at - dt.timedelta(seconds=60))).scalar_one()
    return EmailSummary(by_state, None if oldest is None else max((at - oldest).total_seconds(), 0.0), sent)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def status_lines(status: Status) -> list[str]:
    """The status as `caseloom status` prints it: a verdict, then a line per part, worker, job and e-mail state."""
    h = status.health.as_json()
    down = [part for part in ("database", "queue", "workers") if not h[part]["ok"]]
    lines = ["status: ok" if status.ok else f"status: down ({', '.join(down)})"]
    db = status.database
    lines.append(f"database: {_up(h['database'])}, {db.get('kind')} {db.get('version') or ''}".rstrip()
                 + f", {h['database']['ms']:.1f} ms")
    pending = h["queue"]["pending"]
    lines.append(f"queue: {_up(h['queue'])}, {h['queue']['kind']}, "
                 + (f"{pending} task message(s) waiting" if pending is not None else "its waiting messages not counted"))
    lost_after = status.health.workers.value.lost_after if status.health.workers.ok else None
    silent = f"down (none seen within {lost_after:g} s)" if lost_after is not None and not h["workers"]["ok"] else None
    lines.append(f"workers: {silent or _up(h['workers'])}, {h['workers']['alive']} alive")
    for w in status.health.seen[:20]:
        alive = "" if lost_after is None or w.alive(lost_after) else ", silent"
        lines.append(f"  {w.node} pid {w.pid}, {w.threads} thread(s), seen {w.last_seen_seconds:.0f} s ago{alive}")
    for part, problem in status.problems.items():
        lines.append(f"{part}: not read ({problem})")
    lines.append(f"jobs in progress: {len(status.active)}" + (f", {len(status.lost)} lost" if status.lost else ""))
    lines += [f"  {_job_words(line)}" for line in status.active]
    lines.append(f"last ended: {len(status.ended)}")
    lines += [f"  {_job_words(line)}" for line in status.ended]
    if status.email is not None:
        e = status.email
        counts = ", ".join(f"{n:,} {label.lower()}" for _, label, n in e.by_state) or "none yet"
        oldest = "" if e.oldest_waiting_seconds is None else \
            f"; the oldest waiting written {e.oldest_waiting_seconds / 60:.0f} min ago"
        lines.append(f"e-mail: {counts}{oldest}; {e.sent_last_minute:,} delivered in the last minute")
    return lines


def _up(part: dict) -> str:
    return "up" if part["ok"] else f"down ({part.get('error') or 'not answering'})"


def _job_words(line: JobLine) -> str:
    job = line.job
    on = f" on {job.target_table} {job.target_sys_id}" if line.record else \
        (f" (a slice of {line.slice_of})" if line.slice_of else "")
    done = f"{job.done} of {job.total}" if job.total else f"{job.done} done"
    worker = f", {line.worker} heard {line.heard_seconds:.0f} s ago" if line.worker else ""
    lost = f"; LOST: {line.lost}" if line.lost else ""
    message = f": {job.message}" if job.message and job.finished else ""
    return f"{job.id} {job.name} {job.state}{on}, {done}, {line.seconds:.0f} s{worker}{lost}{message}"
