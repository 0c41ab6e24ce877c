"""Peak memory of the process while one piece of work runs (sampled, as the kernel reports it)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def give_back() -> None:
    """Return the memory this process has freed to the system (glibc keeps it otherwise), so what a
    benchmark then reports as its peak is its own: the setup's page cache, freed when its connection
    closed, would count in every figure measured in this process after it."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to ask
        pass


def children(pid: int) -> list[int]:
    """The processes `pid` started (a gunicorn master's workers)."""
    with open(f"/proc/{pid}/task/{pid}/children") as found:
        return [int(p) for p in found.read().split()]


@contextmanager
def peak_rss(every: float = 0.01, pid: int | str = "self") -> Iterator[dict]:
    """Yields a dict whose "peak_mb" holds, once the block ends, the highest resident set size of the
    process (this one, or `pid`) seen while it ran."""
    found = {"peak_mb": 0.0}
    stop = threading.Event()
    peak = [rss_bytes(pid)]

    def sample() -> None:
        while not stop.wait(every):
            peak[0] = max(peak[0], rss_bytes(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join()
        found["peak_mb"] = max(peak[0], rss_bytes(pid)) / 2**20
