"""Which job consumers are alive: each `caseloom worker` (and `caseloom serve --dev`) keeps a row of
sys_worker, stamped when it starts and every liveness heartbeat, and deleted when it stops
gracefully. A consumer that was killed leaves its row behind, growing older: it counts as alive
only while its stamp is younger than `Timing.lost_after` (the same clock and timing as the
heartbeats of running jobs), and a live consumer deletes the rows of consumers silent for an hour.

/health and /metrics read these rows (`seen`); the SQL for sys_worker is all here.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

import sqlalchemy as sa

from ..database import is_busy, write_transaction
from ..storage import Storage
from .liveness import Ticker, new_worker_id, timing, worker_place
from .progress import BEAT_WAIT, _now, clock

log = logging.getLogger(__name__)

FORGET_AFTER = dt.timedelta(hours=1)  # a row this old is a consumer that is gone: its row goes too


def _table(storage: Storage) -> sa.Table:
    return storage.internal("sys_worker")


@dataclass(frozen=True)
class SeenWorker:
    """A consumer as sys_worker last saw it, and how many seconds ago."""

    id: str
    node: str
    pid: int
    threads: int
    last_seen_seconds: float

    def alive(self, lost_after: float) -> bool:
        return self.last_seen_seconds <= lost_after

    def as_json(self) -> dict:
        return {"node": self.node, "pid": self.pid, "threads": self.threads,
                "last_seen_seconds": round(self.last_seen_seconds, 1)}


def stamp(engine: sa.Engine, storage: Storage, worker_id: str, threads: int, wait: float | None = None) -> None:
    """Say that the consumer `worker_id` (a worker id, `node:pid:token`) is alive now (its row is
    made on the first stamp), and delete the rows of consumers silent for longer than FORGET_AFTER.
    `wait`: on SQLite, the seconds to wait for the write lock before giving up (`write_transaction`)."""
    place = worker_place(worker_id)
    if place is None:
        raise ValueError(f"{worker_id!r} is not a worker id (node:pid:token)")
    table = _table(storage)
    with write_transaction(engine, wait) as conn:
        _stamp(conn, table, worker_id, threads)
        conn.execute(sa.delete(table).where(table.c.seen_on < _now(conn) - FORGET_AFTER))


def _stamp(conn: sa.Connection, table: sa.Table, worker_id: str, threads: int) -> None:
    node, pid = worker_place(worker_id)
    seen = clock(conn)
    if not conn.execute(sa.update(table).where(table.c.id == worker_id).values(seen_on=seen)).rowcount:
        conn.execute(sa.insert(table).values(id=worker_id, node=node, pid=pid, threads=threads,
                                             started_on=seen, seen_on=seen))


# The consumers of this process whose presence threads run (id: threads): a job's units stamp them too.
_PRESENT: dict[str, int] = {}
_PRESENT_LOCK = threading.Lock()


def touch(conn: sa.Connection, storage: Storage) -> None:
    """In a job's unit of work on SQLite, stamp this process's consumers as alive. Through a long job
    the units hold the write lock from one commit to the next, so a presence thread asking for it
    seldom has it, and /health would count the busy worker as gone. On PostgreSQL the presence
    thread is not held up, and a row stamped here would stay locked to the unit's end for every job
    thread of the process: nothing is done there."""
    if conn.dialect.name != "sqlite":
        return
    with _PRESENT_LOCK:
        present = dict(_PRESENT)
    for worker_id, threads in present.items():
        _stamp(conn, _table(storage), worker_id, threads)


def forget(engine: sa.Engine, storage: Storage, worker_id: str) -> None:
    """The consumer `worker_id` has stopped: its row goes."""
    table = _table(storage)
    with write_transaction(engine) as conn:
        conn.execute(sa.delete(table).where(table.c.id == worker_id))


def seen(conn: sa.Connection, storage: Storage) -> list[SeenWorker]:
    """Every consumer sys_worker holds, the most recently seen first."""
    table = _table(storage)
    rows = conn.execute(sa.select(table.c.id, table.c.node, table.c.pid, table.c.threads, table.c.seen_on)
                        .order_by(table.c.seen_on.desc(), table.c.id)).all()
    at = _now(conn)
    return [SeenWorker(r.id, r.node, r.pid, r.threads, max((at - r.seen_on).total_seconds(), 0.0)) for r in rows]


def alive_count(conn: sa.Connection, storage: Storage, lost_after: float | None = None) -> int:
    """How many consumers were seen within `lost_after` seconds (default: the liveness timing's)."""
    table = _table(storage)
    limit = timing().lost_after if lost_after is None else lost_after
    cutoff = _now(conn) - dt.timedelta(seconds=limit)
    return conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.seen_on >= cutoff)).scalar_one()


class Presence:
    """A consumer's row in sys_worker: stamped at start and every heartbeat by a thread of its own
    (a database that is away a while is tried again on the next beat), deleted at a graceful stop."""

    def __init__(self, engine: sa.Engine, storage: Storage, threads: int):
        self.engine, self.storage, self.threads = engine, storage, threads
        self.worker_id = new_worker_id()
        self._ticker = Ticker("worker-presence", self.stamp, lambda: timing().heartbeat)

    def stamp(self) -> None:
        """A beat of the presence thread. On SQLite it waits at most BEAT_WAIT for the write lock and
        skips when a job's unit of work holds it: that unit stamps this consumer (`touch`)."""
        try:
            stamp(self.engine, self.storage, self.worker_id, self.threads, wait=BEAT_WAIT)
        except sa.exc.OperationalError as exc:
            if not is_busy(exc):
                raise
            log.debug("worker-presence: %s skipped a beat: the database is busy writing", self.worker_id)

    def start(self) -> None:
        with _PRESENT_LOCK:
            _PRESENT[self.worker_id] = self.threads
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop(wait=5.0)  # a stamp under way lands before the row is deleted, not after
        with _PRESENT_LOCK:
            _PRESENT.pop(self.worker_id, None)
        try:
            forget(self.engine, self.storage, self.worker_id)
        except Exception as exc:  # the database is away: the row ages and stops counting as alive
            log.warning("worker-presence: could not remove %s from sys_worker: %s: %s", self.worker_id,
                        type(exc).__name__, exc)
