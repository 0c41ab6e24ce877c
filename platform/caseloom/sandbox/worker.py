"""The worker process: runs one script at a time for the parent, under CPU and memory limits.

Started by the pool as `python -m caseloom.sandbox.worker` with a scrubbed environment (no
database URL, no secrets) and no database code loaded. It reads jobs from stdin and answers
on a private copy of stdout (fd 1 itself goes to /dev/null, so nothing else can write to the
parent). A script's `records` calls are messages to the parent; the answers are plain JSON.

Limits are set with `setrlimit` around each run, relative to what the worker already uses:
RLIMIT_CPU (the kernel ends the process with SIGXCPU, which the parent reports as the CPU
limit) and RLIMIT_AS (allocations fail with MemoryError, reported as the memory limit; the
worker is then retired).
"""

from __future__ import annotations

import math
import os
import resource
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import wire
from .limits import Limits
from .policy import compile_script, script_globals
from .result import ResultShapeError, ScriptRefused, result_items
from .standins import DATETIME, OutputLimitExceeded, Records, RecordsError, ScriptLog

MB = 1024 * 1024


class Channel:
    """The worker's end of the pipes."""

    def __init__(self, read_fd: int, write_fd: int):
        self.reader = wire.Reader(read_fd)
        self.write_fd = write_fd

    def send(self, message: Any) -> None:
        wire.send(self.write_fd, wire.encode(message))

    def receive(self) -> Any:
        return self.reader.read()

    def call(self, name: str, **args: Any) -> Any:
        """A `records` call: ask the parent, wait for its answer."""
        self.send({"call": name, **args})
        reply = self.receive()
        if reply is None:  # the parent is gone: nothing left to do
            os._exit(0)
        if "error" in reply:
            raise RecordsError(reply["error"])
        return reply["value"]


def run_job(job: dict, channel: Channel) -> tuple[bytes, bool]:
    """Run one script; returns the encoded reply and whether this worker should retire."""
    limits = Limits(**job["limits"])
    filename = job["filename"]
    log = ScriptLog(limits.log_bytes)
    names: dict[str, Any] = {}
    try:
        with rlimits(limits):
            code = compile_script(job["source"], filename)
            names = script_globals({"records": Records(channel.call), "params": job["params"], "datetime": DATETIME,
                                    "log": log.function(), "_print_": log.printer})
            exec(code, names)
            if log.exceeded:
                raise OutputLimitExceeded()
            return _done(names.get("result"), log, limits), False
    except ScriptRefused as exc:
        return wire.encode({"refused": {"line": exc.line, "why": exc.why}}), False
    except MemoryError:
        names.clear()
        return wire.encode({"failed": {"limit": "memory"}}), True
    except _ResultLimit as exc:
        return wire.encode({"failed": {"limit": exc.limit}}), False
    except BaseException as exc:  # whatever the script raised, SystemExit included
        if log.exceeded:  # OutputLimitExceeded, or what a script that caught it raised next
            return wire.encode({"failed": {"limit": "output"}}), False
        return wire.encode({"failed": _error(exc, filename)}), False
    finally:
        names.clear()


class _ResultLimit(Exception):
    def __init__(self, limit: str):
        self.limit = limit


def _done(raw: Any, log: ScriptLog, limits: Limits) -> bytes:
    """The reply of a script that finished, checked here first so a huge result fails fast."""
    try:
        if len(result_items(raw)) > limits.result_items:
            raise _ResultLimit("result")
    except ResultShapeError:
        pass  # the parent names the shape problem
    try:
        payload = wire.encode({"done": {"result": raw, "log": log.lines}})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`result` is not plain data: {exc}") from None
    if len(payload) > limits.result_bytes:
        raise _ResultLimit("result_bytes")
    return payload


def _error(exc: BaseException, filename: str) -> dict:
    """What went wrong and on which line of the script (the innermost script frame)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    text = str(exc)
    text = text if len(text) <= 500 else text[:500] + "..."
    return {"error": f"{type(exc).__name__}: {text}" if text else type(exc).__name__, "line": line}


@contextmanager
def rlimits(limits: Limits) -> Iterator[None]:
    """CPU and address-space limits for one run, on top of what the worker already uses."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = math.ceil(usage.ru_utime + usage.ru_stime + limits.cpu_seconds)
    memory = _address_space() + limits.memory_mb * MB
    saved = {which: resource.getrlimit(which) for which in (resource.RLIMIT_CPU, resource.RLIMIT_AS)}
    _lower(resource.RLIMIT_CPU, cpu)
    _lower(resource.RLIMIT_AS, memory)
    try:
        yield
    finally:
        for which, value in saved.items():
            resource.setrlimit(which, value)


def _lower(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):  # e.g. RLIMIT_AS where the system does not support it (macOS)
        pass


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def harden() -> None:
    """Process-wide limits that hold for the worker's whole life."""
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # the CPU limit ends the process, even in C code
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a worker stops
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file when SIGXCPU ends it
    for which in (resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE):  # no child processes, no file writes
        try:
            resource.setrlimit(which, (0, 0))
        except (ValueError, OSError):
            pass


def warm_up() -> None:
    """Load now what scripts would otherwise load lazily (a first run pays nothing extra)."""
    import _strptime  # noqa: F401  datetime.strptime imports it on first use
    import time  # noqa: F401  datetime.strftime imports it

    code = compile_script("result = sorted(str(x) for x in [2, 1])\nlog('{0}'.format(1))", "<warm-up>")
    names = script_globals({"records": Records(lambda *args, **kwargs: []), "params": {}, "datetime": DATETIME,
                            "log": ScriptLog(1024).function()})
    exec(code, names)
    DATETIME.datetime.strptime("2000-01-01", "%Y-%m-%d")


def main() -> None:
    out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    channel = Channel(0, out)
    try:
        warm_up()
        harden()
    except BaseException as exc:
        channel.send({"fatal": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)
    channel.send({"ready": True, "pid": os.getpid()})
    while (message := channel.receive()) is not None:
        reply, retire = run_job(message["job"], channel)
        wire.send(out, reply)
        if retire:
            break


if __name__ == "__main__":
    main()
