"""The warm pool: worker processes started ahead of time, one script at a time each.

A run takes an idle worker, sends it the job, answers its `records` calls from the caller's
DataSource, and waits for the reply until the wall-clock deadline. A worker that went past a
limit (killed by the kernel for CPU, by us for wall-clock time or a flood, or retired after
running out of memory) is replaced by a fresh process at once, so the pool stays full and
the calling process carries on.
"""

from __future__ import annotations

import atexit
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import wire
from .data import DataError, DataSource
from .limits import Limits
from .result import ScriptFailed
from .standins import SCALARS

STARTUP_SECONDS = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MAX_RUNS = 500  # then a worker is replaced, so nothing a long life accumulates can matter
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds `caseloom`


def worker_command() -> list[str]:
    # -P: no script directory on sys.path; -s: no user site-packages; -B: never write .pyc files
    return [sys.executable, "-P", "-s", "-B", "-m", "caseloom.sandbox.worker"]


def worker_environment() -> dict[str, str]:
    """Only what Python needs to start: no database URL, no secrets from our environment."""
    return {"PATH": os.defpath, "PYTHONPATH": str(PACKAGE_ROOT), "PYTHONUTF8": "1"}


class ProtocolError(Exception):
    """A worker sent something it never should: it is killed and the run fails."""


class Worker:
    """One worker process and our ends of its pipes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=worker_environment(), cwd="/",
                                     start_new_session=True)  # a Ctrl-C in our terminal is ours to handle
        self.reader = wire.Reader(self.proc.stdout.fileno())
        os.set_blocking(self.proc.stdin.fileno(), False)  # so a worker that stops reading cannot block us
        self.ready = False
        self.runs = 0

    def wait_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        if self.ready:
            return
        try:
            message = self.reader.read(time.monotonic() + timeout, 64 * 1024)
        except (wire.WireClosed, wire.WireTimeout) as exc:
            message = {"fatal": type(exc).__name__}
        if not isinstance(message, dict) or message.get("ready") is not True:
            detail = message.get("fatal") if isinstance(message, dict) else "it exited"
            raise RuntimeError(f"the sandbox worker did not start ({detail}); command: {' '.join(worker_command())}")
        self.ready = True

    def run(self, job: dict, data: DataSource, limits: Limits) -> dict:
        """Send a job and serve its `records` calls until the worker replies or the deadline passes."""
        self.runs += 1
        deadline = time.monotonic() + limits.wall_seconds
        self.send({"job": job}, deadline)
        while True:
            message = self.reader.read(deadline, limits.result_bytes + 2 * limits.log_bytes + 64 * 1024)
            if message is None:
                raise wire.WireClosed()
            if not isinstance(message, dict):
                raise ProtocolError("a message that is not an object")
            if "call" not in message:
                return message
            self.send(answer(data, message), deadline)

    def send(self, message: Any, deadline: float) -> None:
        wire.send(self.proc.stdin.fileno(), wire.encode(message), deadline)

    def cpu_seconds(self) -> float | None:
        """CPU time the process has used so far (user and system, from /proc), or None when it is gone
        or the system has no /proc."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat

    def exit_signal(self) -> int | None:
        """The signal that ended the process (it must have ended: its pipe closed), if any."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return -code if code < 0 else None

    def stop(self) -> None:
        """Kill the process and reap it (a finished worker would exit on EOF; we do not wait for it)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def answer(data: DataSource, message: dict) -> dict:
    """The parent's answer to one `records` call: {"value": ...} or {"error": ...} for the script."""
    call, table = message.get("call"), message.get("table")
    if not isinstance(table, str):
        raise ProtocolError("a records call without a table name")
    try:
        if call == "query":
            equals = message.get("equals")
            if not isinstance(equals, dict) or not all(isinstance(v, SCALARS) for v in equals.values()):
                raise ProtocolError("records.query with values that are not plain")
            return {"value": data.query(table, equals)}
        if call == "get" and isinstance(message.get("sys_id"), str):
            return {"value": data.get(table, message["sys_id"])}
    except DataError as exc:
        return {"error": str(exc)}
    raise ProtocolError(f"an unknown call {call!r}")


class WorkerPool:
    """`size` workers started ahead of time; a run waits for an idle one."""

    def __init__(self, size: int = 2, max_runs: int = MAX_RUNS):
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size, self.max_runs = size, max_runs
        self._pid = os.getpid()
        self._closed = False
        self._idle: queue.Queue[Worker] = queue.Queue()
        for _ in range(size):
            self._idle.put(Worker())

    def run(self, job: dict, data: DataSource, limits: Limits, filename: str,
            on_cpu: Callable[[float], None] | None = None) -> tuple[dict, int]:
        """Run a job on an idle worker; returns the worker's reply and the milliseconds it took.
        Raises ScriptFailed for a limit the worker could not report itself (CPU, wall clock, size).
        `on_cpu` hears the CPU seconds the run used, however it ended (a budget counts them)."""
        worker = self._acquire()
        healthy = False
        started = time.monotonic()
        cpu_before = worker.cpu_seconds() if on_cpu is not None else None
        try:
            reply = worker.run(job, data, limits)
            healthy = not (isinstance(reply.get("failed"), dict) and reply["failed"].get("limit") == "memory")
            return reply, round((time.monotonic() - started) * 1000)
        except wire.WireTimeout:
            raise _limit(filename, limits, "wall") from None
        except wire.MessageTooLarge:
            raise _limit(filename, limits, "result_bytes") from None
        except (wire.WireClosed, BrokenPipeError):
            if worker.exit_signal() == signal.SIGXCPU:
                raise _limit(filename, limits, "cpu") from None
            raise ScriptFailed(f"{filename}: the sandbox worker stopped unexpectedly "
                               f"(exit status {worker.proc.returncode})") from None
        except (ProtocolError, ValueError) as exc:  # ValueError: a reply that is not JSON
            raise ScriptFailed(f"{filename}: the sandbox worker misbehaved: {exc}") from None
        finally:
            if on_cpu is not None:
                on_cpu(_cpu_used(worker, cpu_before, time.monotonic() - started, limits))
            self._release(worker, healthy)

    def _acquire(self) -> Worker:
        if self._closed:
            raise RuntimeError("the sandbox worker pool is closed")
        worker = self._idle.get()
        if worker.proc.poll() is not None:  # died while idle
            worker.stop()
            worker = Worker()
        try:
            worker.wait_ready()
        except Exception:
            worker.stop()
            self._idle.put(Worker())
            raise
        return worker

    def _release(self, worker: Worker, healthy: bool) -> None:
        if healthy and not self._closed and worker.runs < self.max_runs:
            self._idle.put(worker)
            return
        worker.stop()
        if not self._closed:
            self._idle.put(Worker())

    def close(self) -> None:
        """Stop the idle workers (busy ones stop when their run ends)."""
        self._closed = True
        if os.getpid() != self._pid:  # a forked copy: the workers are the parent's, not ours to stop
            return
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return


def _cpu_used(worker: Worker, before: float | None, wall: float, limits: Limits) -> float:
    """The CPU seconds a run used: measured when the worker lives on; when it was killed (its CPU
    limit, or the wall clock), at most the wall-clock time it ran, never more than its CPU limit."""
    after = worker.cpu_seconds() if worker.proc.poll() is None else None
    if before is not None and after is not None:
        return max(after - before, 0.0)
    return min(wall, float(limits.cpu_seconds))


def _limit(filename: str, limits: Limits, limit: str) -> ScriptFailed:
    return ScriptFailed(f"{filename}: {limits.exceeded(limit)}", limit=limit)


_default: WorkerPool | None = None
_default_lock = threading.Lock()


def default_pool() -> WorkerPool:
    """The process's shared pool, started on first use; call it at start-up to have it warm."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WorkerPool()
            atexit.register(_default.close)
        return _default


def _forget_default_pool() -> None:  # in a forked child: start its own pool when it needs one
    global _default, _default_lock
    _default, _default_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_default_pool)
