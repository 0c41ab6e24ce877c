"""`caseloom serve`: the app under gunicorn, a production WSGI server.

gunicorn's master forks `workers` processes, each building its own app (and its own database
pool) after the fork. With one thread (the default) a process is gunicorn's `sync` worker,
answering a request at a time; with more it is the `gthread` worker, answering `threads` at once
(they share one interpreter lock, so each is slower, and the hand-offs cost CPU: README,
*Performance*). The master restarts a worker that dies or stops answering within `timeout` (a sync
worker's request running longer than that, unless it says it is still working: `still_working`),
replaces the workers one by one on SIGHUP (a graceful restart: each finishes its requests first),
and stops on SIGTERM or Ctrl-C, giving requests in progress `graceful_timeout` seconds. Every
process works on the shared database only, so several processes (here or on other machines)
behave as one: sessions, definition switches, job claims and numbers all live in the database.

With the embedded queue (a SQLite file), the server also runs a `caseloom worker` process of its
own, which dies with it; with Redis, workers are started separately (`caseloom worker`).

Metrics: each process counts the requests it answers into files of a folder under the instance
folder (prometheus_client's multiprocess mode, `prepare_metrics`), so /metrics answered by any
process sums them all; the master removes a dead worker's live gauges (`metrics_hooks`). Logs:
gunicorn's lines and the app's go to stderr in the CASELOOM_LOG_FORMAT format (caseloom.logs).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from .logs import gunicorn_config

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# prometheus_client's setting, read once when it is first imported: set before the app is built
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
METRICS_FOLDER = "metrics"  # under the instance folder
LOCK_FILE = "serve.lock"  # in the metrics folder: the server using it holds an flock on it
# how long a starting server waits for that lock: a server killed a moment ago (kill -9) holds it until
# its worker processes have noticed and ended, about a second, and a restart then goes ahead
LOCK_WAIT_SECONDS = 3.0


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    threads: int = 4
    timeout: int = 60  # a worker silent this long (a request stuck in Python) is killed and replaced
    graceful_timeout: int = 30  # requests in progress at a stop or restart get this long to finish
    keepalive: int = 5
    max_requests: int = 20_000  # a worker is replaced after this many requests (with jitter): bounded memory
    embedded_worker: bool = False  # start a `caseloom worker` beside the server (the embedded queue)
    log_format: str = "text"  # CASELOOM_LOG_FORMAT: text | json

    def settings(self) -> dict:
        return {
            "bind": f"{self.host}:{self.port}",
            "workers": self.workers,
            "threads": self.threads,
            "worker_class": f"{__name__}.{(JsonSyncWorker if self.threads == 1 else JsonThreadWorker).__name__}",
            "post_worker_init": _beating,
            "timeout": self.timeout,
            "graceful_timeout": self.graceful_timeout,
            "keepalive": self.keepalive,
            "limit_request_line": REQUEST_LINE_BYTES,  # gunicorn's most: long encoded queries in a GET's URL
            "max_requests": self.max_requests,
            "max_requests_jitter": self.max_requests // 10,
            "preload_app": False,  # each worker opens its own database connections after the fork
            "accesslog": None,  # requests are logged by the app (caseloom.web.operations), as JSON on request
            "errorlog": "-",
            "loglevel": "info",
            "logconfig_dict": gunicorn_config(self.log_format),
            "logger_class": ServerLogger,
            "proc_name": "caseloom",
            "forwarded_allow_ips": "127.0.0.1",
            "control_socket_disable": True,  # gunicorn 27's shared per-user socket: several servers run on one machine
        }


REQUEST_LINE_BYTES = 8190  # a request's first line (method, path and query) at most; longer is a 414


class JsonLimits:
    """A request past gunicorn's limits (its first line, its headers) refused in the API's error shape
    (`{"error": {"message", "detail"}, "status": "failure"}`, caseloom.web.errors) rather than gunicorn's
    HTML page: the app never sees such a request, and its clients read JSON. gunicorn answers every
    other malformed request itself."""

    def handle_error(self, req, client, addr, exc) -> None:
        if isinstance(exc, LimitRequestLine):
            status, message = "414 URI Too Long", "The request line is too long"
            detail = (f"{exc}: a request's method, path and query string take at most {REQUEST_LINE_BYTES:,} "
                      f"bytes (a query with thousands of values does not fit a GET)")
        elif isinstance(exc, LimitRequestHeaders):
            status, message, detail = "431 Request Header Fields Too Large", "The request's headers are too large", \
                str(exc)
        else:
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        body = json.dumps({"error": {"message": message, "detail": detail}, "status": "failure"}).encode()
        head = (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            util.write_nonblock(client, head + body)
        except OSError:
            self.log.debug("Failed to send error message.")


class JsonSyncWorker(JsonLimits, SyncWorker):
    """gunicorn's `sync` worker (one request at a time), its limits answered as JSON."""


class JsonThreadWorker(JsonLimits, ThreadWorker):
    """gunicorn's `gthread` worker (`threads` requests at once), its limits answered as JSON."""


_heartbeat: Callable[[], None] | None = None  # this server process's gunicorn worker's `notify`


def _beating(worker) -> None:  # gunicorn's post_worker_init: runs in each server process, once ready
    global _heartbeat
    _heartbeat = worker.notify


def still_working() -> None:
    """Tell the server's master that this process is busy, not stuck: a response that goes on making
    progress (an export streaming a million rows) is not killed at `--timeout`. Cheap (it touches a
    file's time); nothing outside a `caseloom serve` process."""
    if _heartbeat is not None:
        _heartbeat()


class ServerLogger(Logger):
    """gunicorn's logger without access lines: the app logs each request itself (logs.gunicorn_config
    silences `gunicorn.access`, but gunicorn would still build every line's fields first)."""

    access_log_enabled = False

    def access(self, resp, req, environ, request_time) -> None:
        pass


class Server(BaseApplication):
    """gunicorn with the app built by `factory` in every worker process."""

    def __init__(self, factory: Callable[[], object], options: ServeOptions, hooks: dict | None = None):
        self.factory, self.options, self.hooks = factory, options, hooks or {}
        super().__init__()

    def load_config(self) -> None:
        for key, value in {**self.options.settings(), **self.hooks}.items():
            self.cfg.set(key, value)

    def load(self):
        return self.factory()


class MetricsFolderInUse(Exception):
    """Another `caseloom serve` holds the metrics folder (its lock): emptying it would reset its counts."""

    def __init__(self, folder: Path):
        super().__init__(f"{folder} is used by another `caseloom serve` (its metrics); stop that server, or give "
                         f"this one another instance folder (CASELOOM_INSTANCE)")
        self.folder = folder


_held_lock = None  # the metrics folder's lock file, open (and locked) for as long as this process lives


def prepare_metrics(instance: str | Path) -> Path:
    """The folder where the server's processes keep their metrics, `METRICS_FOLDER` under the instance
    folder, locked for this server (MetricsFolderInUse when another server holds it: its files are
    left alone), emptied of an earlier run's files (counters start again from zero, as Prometheus
    expects of a restart) and named in PROMETHEUS_MULTIPROC_DIR. Call it before the app is first built."""
    folder = Path(instance).resolve() / METRICS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    _lock(folder)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_DIR] = str(folder)
    return folder


def _lock(folder: Path) -> None:
    """An exclusive flock on the folder's LOCK_FILE, held until the server's processes end: the system
    lets go of it however they end (kill -9 included), so a lock left behind cannot stop the next
    start. gunicorn's processes share it (forked); the job worker does not (its files are closed)."""
    global _held_lock
    handle = open(folder / LOCK_FILE, "a")  # noqa: SIM115  (kept open: closing it would let go of the lock)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise MetricsFolderInUse(folder) from None
            time.sleep(0.1)
    _held_lock = handle


def serving_here(instance: str | Path) -> Path | None:
    """The metrics folder of a `caseloom serve` of `instance` running now on this machine (it holds the
    folder's lock), else None: what a restore must not pull the database from under, whatever queue it
    uses (a server on Redis runs no job worker, so no `sys_worker` row says it is there)."""
    lock = Path(instance).resolve() / METRICS_FOLDER / LOCK_FILE
    try:
        handle = open(lock)  # noqa: SIM115  (closed below; opening never creates it)
    except OSError:
        return None  # no server of this instance has ever run here
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.parent
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def metrics_hooks() -> dict:
    """gunicorn hooks for the multiprocess metrics: a worker process that exits leaves no live gauges."""
    return {"child_exit": _child_exit}


def _child_exit(server, worker) -> None:  # runs in gunicorn's master
    # imported here: this module is imported before prepare_metrics sets the folder prometheus_client reads
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker is killed when the server's process ends without stopping it (kill -9), as
    jobs run in the server's own process would be: its unit in progress rolls back, and the next
    server's worker resumes the job. A server that stops normally stops it first (`stop_worker`)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def start_worker(threads: int = 2) -> subprocess.Popen:
    """A `caseloom worker` for the embedded queue, with this process's environment."""
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_DIR}  # it counts no requests
    return subprocess.Popen([sys.executable, "-m", "caseloom.cli", "worker", "--workers", str(threads)],
                            env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                            start_new_session=True)  # a Ctrl-C reaches the server, which stops it (KeptWorker)


class KeptWorker:
    """The server's `caseloom worker`, started again when it stops while the server runs (killed, out
    of memory, a crash): its jobs would otherwise wait, running, for a worker that never comes. Only
    the server stops it (`stop`): it runs in a session of its own, so a Ctrl-C at the terminal reaches
    the server, which stops it in turn. A thread of the server's main process looks every
    POLL_SECONDS (gunicorn's master reaps every child, so whether it is there is asked of the
    system, not of its exit code); a worker that keeps dying is started at most once every
    RESTART_SECONDS."""

    POLL_SECONDS, RESTART_SECONDS = 2.0, 10.0

    def __init__(self, threads: int = 2):
        self.threads, self.process = threads, start_worker(threads)
        self._stopping, self._stopped = threading.Event(), threading.Event()
        self._last_start = time.monotonic()
        self._thread = threading.Thread(target=self._keep, name="worker-keeper", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        # A worker this thread started dies with the thread (PR_SET_PDEATHSIG is the starting thread's):
        # once asked to stop, it waits until `stop` has stopped the worker gracefully.
        while not self._stopping.wait(self.POLL_SECONDS):
            if _running(self.process):
                continue
            wait = self.RESTART_SECONDS - (time.monotonic() - self._last_start)
            if wait > 0 and self._stopping.wait(wait):
                break
            log.warning("the server's job worker (pid %s) has stopped; starting another", self.process.pid)
            self.process, self._last_start = start_worker(self.threads), time.monotonic()
            log.info("background jobs: run by this server's worker process %s", self.process.pid)
        self._stopped.wait()

    def stop(self) -> None:
        self._stopping.set()
        try:
            stop_worker(self.process)
        finally:
            self._stopped.set()
            self._thread.join(timeout=5)


def _running(process: subprocess.Popen) -> bool:
    """Whether the worker is still there: not by its exit code, which gunicorn's master may have
    reaped, but by the system's process table (a zombie is not running)."""
    if process.poll() is not None:
        return False
    try:
        return Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone, or no /proc (not Linux): ask with signal 0
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def port_in_use(host: str, port: int, tries: int = 5) -> bool:
    """Whether another process listens on host:port, still after `tries` looks a second apart (as
    gunicorn tries its bind: a killed server's processes let go of it within a moment): checked
    before anything of this server's (its metrics folder) is touched, so a second server that cannot
    start leaves the first one's alone."""
    import socket

    target = (host if host not in ("0.0.0.0", "::", "") else "127.0.0.1", port)
    for attempt in range(tries):
        try:
            with socket.create_connection(target, timeout=1):
                pass
        except OSError:
            return False
        if attempt < tries - 1:
            time.sleep(1)
    return True


def stop_worker(process: subprocess.Popen | None) -> None:
    """Stop the server's worker: SIGINT lets its jobs finish their unit (huey's graceful stop), then kill."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=35)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
