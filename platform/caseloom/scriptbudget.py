"""The CPU budget of sandboxed scripts: the CPU seconds one user's script runs may use per hour.

Usage is counted per user and clock hour in `sys_script_usage`, so every server process shares
one budget. A run is refused before it starts once the hour's budget is spent (429 with
Retry-After in the web layer). What a run used is charged after its unit of work ends,
committed or not, in a transaction of its own: a script that fails still pays for its CPU.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from .database import write_transaction
from .storage import Storage

TABLE = "sys_script_usage"


class BudgetExhausted(Exception):
    """The user's scripts have used this hour's CPU budget; `retry_after` seconds until the next hour."""

    def __init__(self, user_name: str, limit: float, retry_after: int):
        self.user_name, self.limit, self.retry_after = user_name, limit, retry_after
        super().__init__(f"user {user_name!r} has used the CPU budget of {limit:g} s an hour for sandboxed scripts; "
                         f"try again in {retry_after} s (CASELOOM_SCRIPT_CPU_BUDGET_SECONDS)")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def spent(conn: sa.Connection, storage: Storage, user_name: str, moment: dt.datetime | None = None) -> float:
    """CPU seconds the user's scripts used in this clock hour."""
    table = storage.internal(TABLE)
    hour = _hour(moment or _now())
    value = conn.execute(sa.select(table.c.cpu_seconds).where(table.c.user_name == user_name,
                                                               table.c.hour == hour)).scalar()
    return float(value or 0.0)


def charge(engine: sa.Engine, storage: Storage, user_name: str, seconds: float) -> None:
    """Add CPU seconds to the user's hour, in a transaction of its own (one row per user and hour)."""
    if seconds <= 0:
        return
    table = storage.internal(TABLE)
    hour = _hour(_now())
    with write_transaction(engine) as conn:
        updated = conn.execute(sa.update(table).where(table.c.user_name == user_name, table.c.hour == hour)
                               .values(cpu_seconds=table.c.cpu_seconds + seconds)).rowcount
        if not updated:
            conn.execute(sa.insert(table).values(user_name=user_name, hour=hour, cpu_seconds=seconds))
        conn.execute(sa.delete(table).where(table.c.hour < hour - dt.timedelta(days=1)))  # keep a day


@dataclass
class ScriptMeter:
    """One user's script runs in one unit of work: checked against the budget before each run, their
    CPU seconds collected to be charged (`settle`) once the unit of work has ended."""

    user_name: str
    limit: float
    pending: float = 0.0

    def require(self, conn: sa.Connection, storage: Storage) -> None:
        moment = _now()
        if spent(conn, storage, self.user_name, moment) + self.pending >= self.limit:
            retry = int((_hour(moment) + dt.timedelta(hours=1) - moment).total_seconds()) + 1
            raise BudgetExhausted(self.user_name, self.limit, retry)

    def add(self, seconds: float) -> None:
        self.pending += seconds

    def settle(self, engine: sa.Engine, storage: Storage) -> None:
        seconds, self.pending = self.pending, 0.0
        charge(engine, storage, self.user_name, seconds)
