"""Kinds of job and how one job runs: claim it, run its function, mark it done or failed.

A job kind is a function registered by name. It gets a JobRun (the job, the runtime, the
actor it runs for), does its work in transactions of its own (`run.transaction()`), reports
progress in them (`run.progress(...)`), and returns a closing message. It must be idempotent:
a re-run, after a failure or a lost worker, picks up what is still to do (it selects the
work by its state, never by a list made before) so nothing is done twice.

A run holds its job while it works (see `progress`): `run.transaction()` starts with `run.hold`
and `run.progress` is guarded, so once another run has taken the job over, or the job was
canceled (`cancel`), this one's next unit raises ClaimLost, rolls back, and the run stops without
marking the job. What the run creates is noted in the job as it goes (`undo.recording`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..access import Actor
from ..database import write_transaction
from ..query import acting_as
from ..records import AccessDenied, Conflict, NotFound, RecordError, RecordService
from ..users import actor_named, user_lookup
from .liveness import heartbeat, new_worker_id, running, timing
from .progress import (
    CANCELED,
    ClaimLost,
    Job,
    beat,
    claim_job,
    fail_job,
    finish_job,
    get_job,
    hold,
    remember_params,
    report_progress,
)
from .undo import recording
from .workers import touch

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger(__name__)

JobFunction = Callable[["JobRun"], str | None]
JOBS: dict[str, JobFunction] = {}
LABELS: dict[str, str] = {}  # job kind -> what a person reads for it ("Repair SLAs"), where it has one
# job kind -> what it does when stopped, in the stopping unit of work (`cancel.stop_job`): the SLA repair
# ends its log there
STOPPED: dict[str, Callable[[RecordService, Job], None]] = {}
# job kind -> the table of the records it reports on (its jobs' target): their forms show its panel
TARGETS: dict[str, str] = {}


class JobRefused(Exception):
    """A job that cannot run at all (unknown kind, its user gone); it is marked failed."""


def job(name: str, label: str | None = None, *, target: str | None = None,
        stopped: Callable[[RecordService, Job], None] | None = None) -> Callable[[JobFunction], JobFunction]:
    """Register a kind of job under `name` (see the module docstring for what it must promise), with
    the `label` its panel shows, the `target` table whose record's form shows its panel, and what it
    does when `stopped`."""

    def register(function: JobFunction) -> JobFunction:
        if name in JOBS and JOBS[name] is not function:
            raise ValueError(f"a job named {name!r} is already registered ({JOBS[name].__module__})")
        JOBS[name] = function
        if label:
            LABELS[name] = label
        if target:
            TARGETS[name] = target
        if stopped:
            STOPPED[name] = stopped
        return function

    return register


@dataclass
class JobRun:
    """One run of a job, handed to its function."""

    job: Job
    runtime: Runtime
    actor: Actor
    worker: str  # this run's worker id: its work commits only while the job is held under it

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @contextmanager
    def transaction(self) -> Iterator[RecordService]:
        """A unit of work for the job's user, begun by `hold`; its follow-ups (e.g. e-mail delivery)
        run after commit. It holds SQLite's write lock from the start: a job runs beside requests
        that write too."""
        with self.runtime.transaction(self.actor, write_lock=True) as service:
            self.hold(service.conn)
            yield service

    def hold(self, conn: sa.Connection) -> None:
        """Begin a unit of work in `conn`'s transaction: ClaimLost when another run took the job over.
        On SQLite the unit also stamps this process's worker as present (`workers.touch`)."""
        hold(conn, self.runtime.storage, self.job.id, self.worker)
        touch(conn, self.runtime.storage)

    def remember(self, conn: sa.Connection, **params: Any) -> None:
        """Add to the job's params in the transaction of the work they describe, so both commit
        together: what a re-run must know of the work done so far (ClaimLost as `progress`)."""
        merged = {**self.job.params, **params}
        remember_params(conn, self.runtime.storage, self.job.id, merged, self.worker)
        self.job = replace(self.job, params=merged)

    def next_unit(self, conn: sa.Connection, transaction: sa.RootTransaction, service: RecordService, done: int,
                  total: int) -> sa.RootTransaction:
        """Commit the unit in progress with the run's progress (its follow-ups run after the commit),
        and begin the next one holding the job; returns its transaction."""
        self.progress(conn, done, total, f"{done} of {total}")
        transaction.commit()
        self.runtime.committed(service)
        transaction = conn.begin()
        try:
            self.hold(conn)
        except BaseException:
            transaction.rollback()
            raise
        return transaction

    def slicer(self, commit: Callable[[], None], begin: Callable[[], RecordService], service: RecordService):
        """What splits this run's big work into slices that other workers run too (caseloom.jobs.slices)."""
        from .slices import Slicer

        return Slicer(self, commit, begin, service)

    def progress(self, conn: sa.Connection, done: int, total: int | None = None, message: str | None = None) -> None:
        """Report progress inside the transaction that did the work, so both commit together
        (ClaimLost, and nothing commits, when another run took the job over)."""
        report_progress(conn, self.runtime.storage, self.job.id, done, total, message, worker=self.worker)


def execute_job(runtime: Runtime, job_id: str) -> Job | None:
    """Run a job if it may run now (queued, failed, or running but lost; see claim_job) and return
    it as it ended. A done job, or one another worker is running, is returned untouched: running
    a job twice never does its work twice."""
    storage, worker = runtime.storage, new_worker_id()
    with running(worker):  # counted as this process's before the claim, so no reaper here takes it for lost
        with write_transaction(runtime.engine) as conn:
            claimed = claim_job(conn, storage, job_id, worker)
            job_row = get_job(conn, storage, job_id)
        if job_row is None or not claimed:
            return job_row
        with heartbeat(lambda: beat(runtime.engine, storage, job_id, worker), timing().heartbeat):
            _run(runtime, job_row, worker)
    with runtime.engine.connect() as conn:
        return get_job(conn, storage, job_id)


def _run(runtime: Runtime, job_row: Job, worker: str) -> None:
    """Run a claimed job's function, then mark the job done or failed (if this run still holds it)."""
    try:
        function = job_function(job_row.name)
        if function is None:
            raise JobRefused(f"no job named {job_row.name!r} is registered; known: {', '.join(sorted(JOBS))}")
        actor = _actor(runtime, job_row)
        run = JobRun(job_row, runtime, actor, worker)
        lookup = user_lookup(runtime.storage, runtime.engine.connect, actor.sys_id)
        with acting_as(actor.sys_id, actor.user_name, lookup), recording(run):  # conditions' dynamic values: the starter
            message = function(run)
    except Exception as exc:
        if claim_lost(exc):
            _stopped(runtime, job_row)
            return
        log.exception("job %s (%s) failed", job_row.id, job_row.name)
        outcome, reason = "failed", describe(exc)
        with write_transaction(runtime.engine) as conn:
            ended = fail_job(conn, runtime.storage, job_row.id, reason, worker=worker)
    else:
        outcome = "done"
        with write_transaction(runtime.engine) as conn:
            ended = finish_job(conn, runtime.storage, job_row.id, message, worker=worker)
    if not ended:
        log.warning("job %s (%s): this run ended (%s) after another worker took the job over; left to that one",
                    job_row.id, job_row.name, outcome)


def _stopped(runtime: Runtime, job_row: Job) -> None:
    """Say why a run stopped on ClaimLost: its job was canceled, or another worker took it over."""
    with runtime.engine.connect() as conn:
        current = get_job(conn, runtime.storage, job_row.id)
    if current is not None and current.state == CANCELED:
        log.info("job %s (%s) %s; its unit in progress was rolled back", job_row.id, job_row.name, current.message)
    else:
        log.warning("job %s (%s): another worker took it over; this run stopped, its last unit undone",
                    job_row.id, job_row.name)


def claim_lost(exc: BaseException | None) -> bool:
    """Whether the run stopped because it lost its job (possibly wrapped, e.g. by a failing effect)."""
    while exc is not None:
        if isinstance(exc, ClaimLost):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def describe(exc: BaseException) -> str:
    """An error as a job's message: our own errors say enough; others are named by their type."""
    if isinstance(exc, (RecordError, Conflict, NotFound, AccessDenied, JobRefused)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _actor(runtime: Runtime, job_row: Job) -> Actor:
    """The user the job was started by, with their roles as they are now."""
    with runtime.engine.connect() as conn:
        actor = actor_named(runtime.storage, conn, job_row.created_by)
    if actor is None:
        raise JobRefused(f"user {job_row.created_by!r}, who started the job, no longer exists or is inactive")
    return actor


def _background_action(run: JobRun) -> str | None:
    from ..actions import run_in_job

    return run_in_job(run)


def job_function(name: str) -> JobFunction | None:
    """The function of a job kind: a registered one, or a background action (`action:<name>`)."""
    if name.startswith("action:"):
        return _background_action
    return JOBS.get(name)
