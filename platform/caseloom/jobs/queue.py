"""The huey queue of CASELOOM_QUEUE, with the platform's tasks registered on it.

Tasks carry only ids; the work and its progress live in the database (sys_job), so any
process can answer how far a job is, and a lost worker or task message loses no work: every
consumer runs a reaper (see `liveness`) that, when it starts and then every few seconds,
puts running jobs whose run is lost back in the queue, and enqueues again the jobs that have
waited queued for too long.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.api import TaskWrapper
from huey.consumer import Consumer
from sqlalchemy.exc import DBAPIError

from ..access import SYSTEM, Actor
from ..config import SQLITE_QUEUE, queue_kind
from ..database import absolute_url, forget_statements, write_transaction
from ..records import RecordService
from .email import deliver_pending
from .liveness import Ticker, reaper, timing
from .progress import active_job, create_job, resume_lost
from .registry import execute_job
from .workers import Presence

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger(__name__)

NAME = "caseloom"
# A committed write to the table enqueues the task: new e-mail is delivered right away.
FOLLOW_UPS: dict[str, str] = {"sys_email": "deliver_email"}


def make_huey(url: str, immediate: bool = False) -> Huey:
    """A huey instance for CASELOOM_QUEUE (config.queue_kind): `sqlite:///path` (relative to the working
    directory; Config.from_env has checked that a path given has its folder) or `redis://host:port/db`.
    `immediate` runs tasks at once, in memory (tests)."""
    if queue_kind(url) == "sqlite":
        path = absolute_url(url)[len(SQLITE_QUEUE):]
        return SqliteHuey(NAME, filename=path, results=False, immediate=immediate)
    return RedisHuey(NAME, url=url, results=False, immediate=immediate)


def is_embedded(url: str) -> bool:
    """Whether the queue is a SQLite file, which `caseloom serve` consumes in-process."""
    return url.startswith(SQLITE_QUEUE)


# An idle thread of a consumer of the embedded queue (a SQLite file, which has no blocking read) looks
# for a task again after 0.1 s, then a little later each time, up to this: a slice of a job queued
# while a worker idles is taken within it (with 2 s, the second of two workers joined a child-creation
# job half a second after the first, a tenth of its time). A look is one short read of the queue file.
# On Redis a thread waits on the queue itself and takes a task the moment it is queued.
IDLE_POLL_SECONDS = 0.25


class JobConsumer(Consumer):
    """A huey consumer that also runs the reaper: lost jobs are resumed when it starts (a worker
    started again after a crash takes up the jobs of the one that died at once) and every few
    seconds after. With a `presence`, it says in sys_worker that it is alive (caseloom.jobs.workers)
    from its start until it stops."""

    def __init__(self, huey: Huey, reap: Callable[[], object], clock: Ticker | None = None,
                 mail: Ticker | None = None, presence: Presence | None = None, **options):
        super().__init__(huey, **options)
        self.reaper: Ticker = reaper(reap)
        self.clock = clock  # the SLA clock's tick (caseloom.timing.tick)
        self.mail = mail  # the inbound mailbox's poll (caseloom.inbound.imap), when CASELOOM_IMAP_URL is set
        self.presence = presence

    def start(self) -> None:
        super().start()
        self.reaper.start()
        for ticker in (self.clock, self.mail, self.presence):
            if ticker is not None:
                ticker.start()

    def stop(self, graceful: bool = False) -> None:
        self.reaper.stop()
        for ticker in (self.clock, self.mail):
            if ticker is not None:
                ticker.stop()
        super().stop(graceful=graceful)
        if self.presence is not None:  # last: a consumer finishing its jobs is still alive
            self.presence.stop()


class EmbeddedConsumer(JobConsumer):
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
                    "similar_suggest": huey.task(name="similar_suggest")(self._similar_suggest),
                    "sweep": huey.periodic_task(crontab(minute="*"), name="sweep")(self._sweep),
                    "statistics": huey.periodic_task(crontab(minute="17"), name="statistics")(self._statistics),
                    "cleanup": huey.periodic_task(crontab(minute="23"), name="cleanup")(self._cleanup),
                }
                self._huey = huey
            return self._huey, self._tasks

    @property
    def kind(self) -> str:
        """`sqlite` (the embedded queue, a file) or `redis`."""
        return "sqlite" if is_embedded(self._runtime.config.queue) else "redis"

    def pending(self) -> int:
        """How many task messages wait in the queue; raises when the queue cannot be reached."""
        return self.huey.pending_count()

    def consumer(self, workers: int = 2, embedded: bool = False) -> JobConsumer:
        """A huey consumer of this queue with `workers` threads, its reaper, its row in sys_worker, and
        periodic tasks (the sweep) on. Raises ValueError for a CASELOOM_QUEUE or CASELOOM_JOB_LOST_SECONDS
        it cannot use."""
        timing()  # refuse a bad setting now, not in the reaper's thread
        factory = EmbeddedConsumer if embedded else JobConsumer
        defs = self._runtime.defs
        clock = Ticker("sla-clock", self.clock_tick, self.clock_every) if defs.sla_root or defs.timers else None
        config = self._runtime.config
        mail = Ticker("mail-in", self.mail_poll, lambda: config.imap_poll_seconds) if config.imap_url else None
        presence = Presence(self._runtime.engine, self._runtime.storage, workers)
        return factory(self.huey, self.reap, clock, workers=workers, worker_type="thread", periodic=True,
                       initial_delay=0.1, backoff=1.15, max_delay=IDLE_POLL_SECONDS, shutdown_timeout=30, mail=mail,
                       presence=presence)

    def enqueue(self, task: str, *args) -> None:
        self._registered()[1][task](*args)

    # -- starting jobs ------------------------------------------------------------------------------

    def start(self, name: str, *, actor: Actor = SYSTEM, target_table: str | None = None,
              target_sys_id: str | None = None, params: dict | None = None, total: int = 0,
              unique: bool = False) -> str:
        """Create a job (its own transaction) and enqueue it; returns its id. With `unique`, a queued
        or running job of the same name for the same record is returned instead of a second one."""
        runtime = self.runtime()
        with write_transaction(runtime.engine) as conn:  # reads, then writes: on SQLite, the lock first
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
        follow_ups, service.follow_ups = list(service.follow_ups), []
        self.after_commit(written)
        for task, args in follow_ups:
            try:
                self.enqueue(task, *args)
            except Exception:  # the queue is down: what it would have done is not essential
                log.exception("could not enqueue %s after commit", task)

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

    def _similar_suggest(self, table: str, sys_id: str) -> None:
        from ..similar import suggest_after_insert

        suggest_after_insert(self.runtime(), table, sys_id)

    def _deliver_email(self) -> None:
        deliver_pending(self.runtime())

    def _sweep(self) -> None:
        """Every minute: deliver waiting e-mail (whatever a lost follow-up left behind)."""
        deliver_pending(self.runtime())

    def _statistics(self) -> None:
        """Every hour, on SQLite: fresh planner statistics for the tables that have grown well past them
        (caseloom.bootstrap.refresh_grown)."""
        from ..bootstrap import refresh_grown

        runtime = self.runtime()
        analysed = refresh_grown(runtime.engine, runtime.storage.metadata)
        if analysed:
            log.info("statistics: analysed %s, grown past their statistics", ", ".join(analysed))

    def _cleanup(self) -> None:
        """Every hour: the table cleaner's active rules (caseloom.cleanup), each run by one worker."""
        from ..cleanup import clean

        for cleaned in clean(self.runtime(), hourly=True):
            if cleaned.deleted or cleaned.kept or cleaned.error:
                log.info("table cleaner: %s", cleaned.words())

    def mail_poll(self) -> None:
        """Act on what has arrived in the inbound mailbox (caseloom.inbound.imap)."""
        from ..inbound.imap import poll

        report = poll(self.runtime())
        if report.read:
            log.info("mail-in: %s", report)

    def clock_tick(self) -> None:
        """Fire the SLA escalations and timers that are due (caseloom.timing.tick)."""
        from ..timing.tick import tick

        report = tick(self.runtime())
        if report.escalated or report.timers:
            log.info("clock: %d SLA escalation(s), %d breach(es), %d timer(s) fired", report.escalated,
                     report.breached, report.timers)

    def clock_every(self) -> float:
        """Seconds between two ticks: the property caseloom.sla.tick_seconds (1 to 60)."""
        from ..properties import Properties

        runtime = self.runtime()
        try:
            with runtime.engine.connect() as conn:
                value = Properties(runtime.defs, runtime.storage, conn).get("caseloom.sla.tick_seconds")
        except Exception:  # the database is away: the default rhythm
            value = None
        return float(min(max(int(value or 5), 1), 60))

    def reap(self) -> list[str]:
        """Resume lost jobs: release the running jobs whose run is lost, and enqueue them with the
        jobs queued for too long; returns their ids. Claiming keeps a job from running twice."""
        runtime = self.runtime()
        resumed = resume_lost(runtime.engine, runtime.storage)
        for job_id in resumed:
            log.warning("resuming job %s: its worker was lost (or its task message was)", job_id)
            self.enqueue_job(job_id)
        return resumed

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
                forget_statements(current.engine)  # the tables may have changed with the set
                self._runtime = Runtime(current.config, load_sources(sorted(texts.items())), engine=current.engine)
                self._runtime.commit_hooks.append(self.follow_up)
            self._generation = generation
            return self._runtime

