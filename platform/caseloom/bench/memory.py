"""Peak memory of the process while one piece of work runs (sampled, as the kernel reports it)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@contextmanager
def peak_rss(every: float = 0.01) -> Iterator[dict]:
    """Yields a dict whose "peak_mb" holds, once the block ends, the highest resident set size
    seen while it ran."""
    found = {"peak_mb": 0.0}
    stop = threading.Event()
    peak = [rss_bytes()]

    def sample() -> None:
        while not stop.wait(every):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join()
        found["peak_mb"] = max(peak[0], rss_bytes()) / 2**20
