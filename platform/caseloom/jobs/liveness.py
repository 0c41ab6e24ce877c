"""Whether the run of a job is alive: who runs it, its heartbeat, and the reaper's rhythm.

A run holds its job under a worker id, `node:pid:token`: the node is the host name with its
process-id namespace (two containers on one host each count pids from 1), the pid is the
worker's process, the token names this one run. While the run lasts, a heartbeat thread
stamps the job every `Timing.heartbeat` seconds. A running job is lost when its heartbeat is
older than `Timing.lost_after`, or at once when its node is this one and its process is gone
(a worker killed and started again on the same machine). Every consumer runs a `Reaper` that
looks for lost jobs when it starts and then every `Timing.reap_every` seconds.

Nothing here touches the database: the SQL lives in `progress` (stamping, releasing, the guard
that keeps a run which lost its job from committing), and this module hands it callables.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

log = logging.getLogger(__name__)

LOST_SECONDS = "CASELOOM_JOB_LOST_SECONDS"
DEFAULT_LOST_SECONDS = 30.0
_RUNS: set[str] = set()  # the worker ids of the runs in this process, while they last
_RUNS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Timing:
    """How often a run says it is alive, how long its silence may last, and how often consumers look."""

    lost_after: float

    @property
    def heartbeat(self) -> float:
        return self.lost_after / 6  # five beats may be missed (a busy database, a pause) before it is lost

    @property
    def reap_every(self) -> float:
        return self.lost_after / 3  # a lost job waits at most lost_after + reap_every for a new run


def timing() -> Timing:
    """The timing of CASELOOM_JOB_LOST_SECONDS (default 30 s: heartbeat every 5 s, reaper every 10 s)."""
    raw = os.environ.get(LOST_SECONDS)
    if not raw:
        return Timing(DEFAULT_LOST_SECONDS)
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0.3 <= value <= 3600:
        raise ValueError(f"{LOST_SECONDS}={raw!r}: expected a number of seconds from 0.3 to 3600, e.g. 30")
    return Timing(value)


# -- who runs a job ------------------------------------------------------------------------------


@cache
def _namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")  # "pid:[4026531836]"
    except OSError:
        return ""


def node() -> str:
    """This machine as a worker id names it: host name, and pid namespace where there is one."""
    host = socket.gethostname().replace(":", "-")
    return f"{host}/{_namespace()}" if _namespace() else host


def new_worker_id() -> str:
    """A fresh id for one run of a job in this process."""
    return f"{node()}:{os.getpid()}:{secrets.token_hex(4)}"


def describe_worker(worker: str) -> str:
    """A worker id as people read it: `host:pid` (the namespace and token say little to them)."""
    where, _, rest = worker.rpartition(":")[0].rpartition(":")
    return f"{where.split('/')[0]}:{rest}" if where else worker


def worker_place(worker: str | None) -> tuple[str, int] | None:
    """The node and the pid a worker id names; None for a text that is not a worker id."""
    try:
        where, pid_text, _ = (worker or "").rsplit(":", 2)
        return where, int(pid_text)
    except ValueError:
        return None


def process_gone(worker: str | None) -> bool:
    """Whether the run `worker` names is known to have ended: its node is this one and its process
    no longer exists (or is a zombie), or it is this process and the run is not one of its own
    (the pid was reused, e.g. a consumer that restarted itself). Elsewhere only the heartbeat tells."""
    place = worker_place(worker)
    if place is None:
        return False
    where, pid = place
    if where != node():
        return False
    if pid == os.getpid():
        with _RUNS_LOCK:
            return worker not in _RUNS
    return not _process_exists(pid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")  # killed, not yet reaped by its parent: gone all the same


@contextmanager
def running(worker: str) -> Iterator[None]:
    """Count `worker` among this process's runs for the block (enter it before claiming the job)."""
    with _RUNS_LOCK:
        _RUNS.add(worker)
    try:
        yield
    finally:
        with _RUNS_LOCK:
            _RUNS.discard(worker)


# -- threads --------------------------------------------------------------------------------------


class Ticker:
    """A daemon thread that calls `tick` at once and then every `every()` seconds until stopped.
    A tick that raises is logged and the next one comes on time: the database may be away a while."""

    def __init__(self, name: str, tick: Callable[[], object], every: Callable[[], float], at_once: bool = True):
        self.name, self._tick, self._every, self._at_once = name, tick, every, at_once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, wait: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)

    def _run(self) -> None:
        if not self._at_once and self._stop.wait(self._every()):
            return
        while True:
            try:
                self._tick()
            except Exception as exc:
                log.warning("%s: %s: %s (trying again in %.0f s)", self.name, type(exc).__name__, exc, self._every())
            if self._stop.wait(self._every()):
                return


@contextmanager
def heartbeat(beat: Callable[[], object], every: float) -> Iterator[None]:
    """Call `beat` every `every` seconds in a thread of its own while the block runs."""
    ticker = Ticker("job-heartbeat", beat, lambda: every, at_once=False)
    ticker.start()
    try:
        yield
    finally:
        ticker.stop()


def reaper(reap: Callable[[], object]) -> Ticker:
    """The thread a consumer runs to resume lost jobs: once at start, then every `reap_every` seconds."""
    return Ticker("job-reaper", reap, lambda: timing().reap_every)
