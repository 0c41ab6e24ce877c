"""Kinds of job and how one job runs: claim it, run its function, mark it done or failed.

A job kind is a function registered by name. It gets a JobRun (the job, the runtime, the
actor it runs for), does its work in transactions of its own (`run.transaction()`), reports
progress in them (`run.progress(...)`), and returns a closing message. It must be idempotent:
a re-run, after a failure or a lost worker, picks up what is still to do (it selects the
work by its state, never by a list made before) so nothing is done twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..access import SYSTEM, Actor
from ..records import AccessDenied, Conflict, NotFound, RecordError, RecordService
from ..users import USERS, actor_for
from .progress import Job, claim_job, fail_job, finish_job, get_job, report_progress

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger(__name__)

JobFunction = Callable[["JobRun"], str | None]
JOBS: dict[str, JobFunction] = {}


class JobRefused(Exception):
    """A job that cannot run at all (unknown kind, its user gone); it is marked failed."""


def job(name: str) -> Callable[[JobFunction], JobFunction]:
    """Register a kind of job under `name` (see the module docstring for what it must promise)."""

    def register(function: JobFunction) -> JobFunction:
        if name in JOBS and JOBS[name] is not function:
            raise ValueError(f"a job named {name!r} is already registered ({JOBS[name].__module__})")
        JOBS[name] = function
        return function

    return register


@dataclass
class JobRun:
    """One run of a job, handed to its function."""

    job: Job
    runtime: Runtime
    actor: Actor

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def transaction(self) -> AbstractContextManager[RecordService]:
        """A unit of work for the job's user; its follow-ups (e.g. e-mail delivery) run after commit.
        It holds SQLite's write lock from the start: a job runs beside requests that write too."""
        return self.runtime.transaction(self.actor, write_lock=True)

    def progress(self, conn: sa.Connection, done: int, total: int | None = None, message: str | None = None) -> None:
        """Report progress inside the transaction that did the work, so both commit together."""
        report_progress(conn, self.runtime.storage, self.job.id, done, total, message)


def execute_job(runtime: Runtime, job_id: str) -> Job | None:
    """Run a job if it may run now (queued, failed, or stale; see claim_job) and return it as it
    ended. A done job, or one another worker is running, is returned untouched: running a job
    twice never does its work twice."""
    storage = runtime.storage
    with runtime.engine.begin() as conn:
        claimed = claim_job(conn, storage, job_id)
        job_row = get_job(conn, storage, job_id)
    if job_row is None or not claimed:
        return job_row
    try:
        function = job_function(job_row.name)
        if function is None:
            raise JobRefused(f"no job named {job_row.name!r} is registered; known: {', '.join(sorted(JOBS))}")
        message = function(JobRun(job_row, runtime, _actor(runtime, job_row)))
    except Exception as exc:
        log.exception("job %s (%s) failed", job_id, job_row.name)
        with runtime.engine.begin() as conn:
            fail_job(conn, storage, job_id, describe(exc))
    else:
        with runtime.engine.begin() as conn:
            finish_job(conn, storage, job_id, message)
    with runtime.engine.connect() as conn:
        return get_job(conn, storage, job_id)


def describe(exc: BaseException) -> str:
    """An error as a job's message: our own errors say enough; others are named by their type."""
    if isinstance(exc, (RecordError, Conflict, NotFound, AccessDenied, JobRefused)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _actor(runtime: Runtime, job_row: Job) -> Actor:
    """The user the job was started by, with their roles as they are now."""
    if job_row.created_by in (None, SYSTEM.user_name):
        return SYSTEM
    users = runtime.storage.physical(USERS)
    with runtime.engine.connect() as conn:
        sys_id = conn.execute(sa.select(users.c.sys_id).where(users.c.user_name == job_row.created_by)).scalar()
        actor = actor_for(runtime.storage, conn, sys_id) if sys_id else None
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
