"""The per-minute rate limit of outbound e-mail: the property caseloom.email.rate_per_minute (0: no
limit), shared by every worker. A claim counts what went out in the last 60 seconds (sys_email's
indexed `sent_on`) and what other runs hold in sending, and takes at most what is left; on
PostgreSQL claims under a limit take turns (a transaction advisory lock), as SQLite's write lock
makes them anyway, so two workers cannot both take the same remainder."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from ..properties import Properties
from ..records import RecordService, now

RATE = "caseloom.email.rate_per_minute"
WINDOW = dt.timedelta(seconds=60)
LOCK = 0x63617365_6D61696C  # pg_advisory_xact_lock key of rate-limited claims ("casemail")


@dataclass(frozen=True)
class Budget:
    """What a claim may take now: `left` messages (None: no limit), and when nothing is left,
    the seconds until the oldest send of the window leaves it (`free_in`)."""

    rate: int
    left: int | None
    free_in: float = 0.0


def rate_of(service: RecordService) -> int:
    return max(int(Properties(service.defs, service.storage, service.conn).get(RATE) or 0), 0)


def budget(service: RecordService, table: sa.Table, in_flight: sa.ColumnElement) -> Budget:
    """The budget inside the caller's claiming transaction (see the module's doc)."""
    rate = rate_of(service)
    if rate == 0:
        return Budget(0, None)
    conn = service.conn
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK)))
    since = now() - WINDOW
    sent, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(table.c.sent_on))
                                .where(table.c.sent_on >= since)).one()
    flying = conn.execute(sa.select(sa.func.count()).select_from(table).where(in_flight)).scalar_one()
    left = max(rate - sent - flying, 0)
    if left or oldest is None:  # nothing left and nothing sent: wait for the runs in flight
        return Budget(rate, left, 0.0 if left else 1.0)
    return Budget(rate, 0, max((oldest - since).total_seconds(), 0.1))
