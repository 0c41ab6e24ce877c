"""The huey queue of CASELOOM_QUEUE, with the platform's tasks registered on it.

Tasks carry only ids; the work and its progress live in the database (sys_job), so any
process can answer how far a job is, and a lost task message loses no work: the periodic
sweep enqueues queued jobs that waited too long and running jobs whose worker went silent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.api import TaskWrapper
from huey.consumer import Consumer
from sqlalchemy.exc import DBAPIError

from ..access import SYSTEM, Actor
from ..database import absolute_url
from ..records import RecordService, now
from .email import deliver_pending
from .progress import QUEUED, RUNNING, STALE_AFTER, active_job, create_job
from .registry import execute_job

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger(__name__)

NAME = "caseloom"
SQLITE = "sqlite:///"
# A committed write to the table enqueues the task: new e-mail is delivered right away.
FOLLOW_UPS: dict[str, str] = {"sys_email": "deliver_email"}


def make_huey(url: str, immediate: bool = False) -> Huey:
    """A huey instance for CASELOOM_QUEUE: `sqlite:///path` (relative to the working directory,
    folder created) or `redis://host:port/db`. `immediate` runs tasks at once, in memory (tests)."""
    if url.startswith(SQLITE) and url != SQLITE + ":memory:":
        path = absolute_url(url)[len(SQLITE):]
        return SqliteHuey(NAME, filename=path, results=False, immediate=immediate)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(NAME, url=url, results=False, immediate=immediate)
    raise ValueError(f"CASELOOM_QUEUE={url!r}: expected sqlite:///path/to/queue.db or redis://host:port/db")


def is_embedded(url: str) -> bool:
    """Whether the queue is a SQLite file, which `caseloom serve` consumes in-process."""
    return url.startswith(SQLITE)


class EmbeddedConsumer(Consumer):
    """A consumer that runs beside a server in the same process: the server keeps its signal
    handlers (huey's would swallow Ctrl-C), and stopping is the server's to do."""

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    """The platform's tasks on one huey instance, bound to a runtime. The huey instance is built
    on first use, so a process that never enqueues never opens the queue."""

    def __init__(self, runtime: Runtime, huey: Huey | None = None):
        self._runtime = runtime
        self._generation: int | None = None
        self._lock = threading.RLock()
        self._huey = huey
        self._tasks: dict[str, TaskWrapper] | None = None
        runtime.commit_hooks.append(self.follow_up)

    # -- huey -----------------------------------------------------------------------------------

    @property
    def huey(self) -> Huey:
        return self._registered()[0]

    def _registered(self) -> tuple[Huey, dict[str, TaskWrapper]]:
        with self._lock:
            if self._tasks is None:
                huey = self._huey if self._huey is not None else make_huey(self._runtime.config.queue)
                self._tasks = {
                    "run_job": huey.task(name="run_job")(self._run_job),
                    "deliver_email": huey.task(name="deliver_email")(self._deliver_email),
                    "sweep": huey.periodic_task(crontab(minute="*"), name="sweep")(self._sweep),
                }
                self._huey = huey
            return self._huey, self._tasks

    def consumer(self, workers: int = 2, embedded: bool = False) -> Consumer:
        """A huey consumer of this queue with `workers` threads; periodic tasks (the sweep) on."""
        factory = EmbeddedConsumer if embedded else Consumer
        return factory(self.huey, workers=workers, worker_type="thread", periodic=True,
                       initial_delay=0.1, backoff=1.15, max_delay=2.0, shutdown_timeout=30)

    def enqueue(self, task: str, *args) -> None:
        self._registered()[1][task](*args)

    # -- starting jobs ------------------------------------------------------------------------------

    def start(self, name: str, *, actor: Actor = SYSTEM, target_table: str | None = None,
              target_sys_id: str | None = None, params: dict | None = None, total: int = 0,
              unique: bool = False) -> str:
        """Create a job (its own transaction) and enqueue it; returns its id. With `unique`, a queued
        or running job of the same name for the same record is returned instead of a second one."""
        runtime = self.runtime()
        with runtime.engine.begin() as conn:
            existing = active_job(conn, runtime.storage, name, target_table, target_sys_id) if unique else None
            if existing is not None:
                return existing.id
            job_id = create_job(conn, runtime.storage, name, created_by=actor.user_name, target_table=target_table,
                                target_sys_id=target_sys_id, params=params, total=total)
        self.enqueue_job(job_id)
        return job_id

    def enqueue_job(self, job_id: str) -> None:
        """Enqueue a job created in a transaction that has committed (see create_job)."""
        self.enqueue("run_job", job_id)

    def follow_up(self, service: RecordService) -> None:
        """After a unit of work committed: enqueue the tasks its writes call for (FOLLOW_UPS)."""
        written, service.written = set(service.written), set()
        self.after_commit(written)

    def after_commit(self, written: Iterable[str]) -> None:
        tasks = sorted({FOLLOW_UPS[t] for t in written if t in FOLLOW_UPS})
        for task in tasks:
            try:
                self.enqueue(task)
            except Exception:  # the queue is down: the periodic sweep delivers later
                log.exception("could not enqueue %s after commit", task)

    # -- the tasks --------------------------------------------------------------------------------

    def _run_job(self, job_id: str) -> None:
        execute_job(self.runtime(), job_id)

    def _deliver_email(self) -> None:
        deliver_pending(self.runtime())

    def _sweep(self) -> None:
        """Every minute: deliver waiting e-mail, and enqueue jobs whose task message was lost
        (queued for long) or whose worker died (running, silent); claiming keeps a job that is
        in fact still going from running twice."""
        runtime = self.runtime()
        deliver_pending(runtime)
        for job_id in lost_jobs(runtime):
            log.warning("re-enqueueing job %s", job_id)
            self.enqueue_job(job_id)

    # -- definitions ------------------------------------------------------------------------------

    def runtime(self) -> Runtime:
        """The runtime with the definitions the database holds now: a long-running worker follows
        changes made through the definitions API, as server processes do."""
        from ..definitions import load_sources
        from ..definitions.store import DefinitionStore
        from ..runtime import Runtime

        with self._lock:
            current = self._runtime
            try:
                with current.engine.connect() as conn:
                    store = DefinitionStore(current.storage, conn)
                    generation = store.generation()
                    moved = self._generation is not None and generation != self._generation
                    texts = store.texts() if moved else {}
            except DBAPIError:
                return current  # not initialised yet (`caseloom init`)
            if texts:
                self._runtime = Runtime(current.config, load_sources(sorted(texts.items())), engine=current.engine)
                self._runtime.commit_hooks.append(self.follow_up)
            self._generation = generation
            return self._runtime


def lost_jobs(runtime: Runtime) -> list[str]:
    """Jobs queued for longer than STALE_AFTER, or running without a report for that long."""
    table = runtime.storage.internal("sys_job")
    cutoff = now() - STALE_AFTER
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(table.c.id).where(
            table.c.state.in_((QUEUED, RUNNING)), table.c.updated_on < cutoff).order_by(table.c.created_on)).scalars())
