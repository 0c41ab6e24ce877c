"""Where a bench run's figures came from: the machine and the database server, in one line each,
printed before the figures and carried on every JSON line (a figure means little without them)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def machine() -> str:
    """`2 CPUs (Intel(R) Xeon(R) ...), 23.5 GiB, Linux 6.1.0 x86_64, Python 3.11.7`."""
    cpus = os.cpu_count() or 1
    model = _cpu_model()
    memory = _memory_gib()
    parts = [f"{cpus} CPU{'s' if cpus != 1 else ''}" + (f" ({model})" if model else "")]
    if memory:
        parts.append(f"{memory:.1f} GiB")
    parts.append(f"{platform.system()} {platform.release()} {platform.machine()}")
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def _cpu_model() -> str | None:
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return None
    return re.sub(r"\s+", " ", found.group(1)).strip() if found else None


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def database(conn, kind: str) -> str:
    """`SQLite 3.45.1` or `PostgreSQL 15.8`, from a plain DB-API connection to the bench's database."""
    cursor = conn.cursor()
    try:
        if kind == "sqlite":
            cursor.execute("select sqlite_version()")
            return f"SQLite {cursor.fetchone()[0]}"
        cursor.execute("show server_version")
        return f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
    finally:
        cursor.close()


# PostgreSQL's settings that move the write benchmarks most (deploy/postgresql.conf sets them): the same code
# on the same machine gives other figures with Debian's defaults, so a figure carries the ones it ran with
PG_SETTINGS = ("shared_buffers", "wal_buffers", "max_wal_size", "wal_compression", "synchronous_commit",
               "checkpoint_timeout")


def settings(conn, kind: str) -> str:
    """`shared_buffers=2GB, wal_buffers=64MB, ...` on PostgreSQL (as `SHOW` words them); on SQLite the
    platform's own pragmas, which every connection sets (`journal_mode=WAL, synchronous=NORMAL, ...`)."""
    if kind == "sqlite":
        from ..database import SQLITE_PRAGMAS

        return ", ".join(p.removeprefix("PRAGMA ") for p in SQLITE_PRAGMAS)
    cursor = conn.cursor()
    try:
        found = []
        for name in PG_SETTINGS:
            cursor.execute(f"show {name}")
            found.append(f"{name}={cursor.fetchone()[0]}")
        return ", ".join(found)
    finally:
        cursor.close()


__all__ = ["database", "machine", "settings"]
