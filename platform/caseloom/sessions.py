"""Signed-in sessions, kept in the database (table sys_session) so that signing out ends them.

The browser's cookie carries a random token; the table keeps only its SHA-256, so a copy of the
table signs nobody in. A session ends when its user signs out, after `SessionPolicy.idle`
without a request, `SessionPolicy.lifetime` after sign-in, or when the user's password changes
or the user is deactivated or deleted (caseloom.users ends them in the same transaction).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from .records import now
from .storage import Storage

TABLE = "sys_session"


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lasts: `idle` without a request, `lifetime` after sign-in at most.
    Its last request is written at most once per `touch_every`, not on every request."""

    idle: dt.timedelta = dt.timedelta(hours=2)
    lifetime: dt.timedelta = dt.timedelta(hours=12)
    touch_every: dt.timedelta = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Session:
    """A live session: whose it is, and whether its last request should be written again."""

    user_sys_id: str
    stale: bool


def digest(token: str) -> str:
    """What the table keeps of a token: its SHA-256 (the token is random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def start(storage: Storage, conn: sa.Connection, user_sys_id: str, address: str | None = None,
          policy: SessionPolicy = SessionPolicy()) -> str:
    """A new session for a user; returns its token (for the cookie). Ended sessions are removed."""
    table = storage.internal(TABLE)
    at = now()
    conn.execute(sa.delete(table).where(_expired(table, policy, at)))
    token = secrets.token_urlsafe(32)
    conn.execute(sa.insert(table).values(token_hash=digest(token), user_sys_id=user_sys_id, created_on=at,
                                         last_seen=at, address=(address or "")[:64] or None))
    return token


def find(storage: Storage, conn: sa.Connection, token: str, policy: SessionPolicy = SessionPolicy()) -> Session | None:
    """The live session of a token, or None when it ended, expired or never was."""
    table = storage.internal(TABLE)
    row = conn.execute(sa.select(table.c.user_sys_id, table.c.created_on, table.c.last_seen)
                       .where(table.c.token_hash == digest(token))).first()
    at = now()
    if row is None or row.last_seen <= at - policy.idle or row.created_on <= at - policy.lifetime:
        return None
    return Session(row.user_sys_id, stale=row.last_seen <= at - policy.touch_every)


def touch(storage: Storage, conn: sa.Connection, token: str) -> None:
    """Record a request of the session now (it stays alive for another idle period)."""
    table = storage.internal(TABLE)
    conn.execute(sa.update(table).where(table.c.token_hash == digest(token)).values(last_seen=now()))


def end(storage: Storage, conn: sa.Connection, token: str) -> None:
    """Sign out: the token stops working, on every copy of the cookie."""
    table = storage.internal(TABLE)
    conn.execute(sa.delete(table).where(table.c.token_hash == digest(token)))


def end_all(storage: Storage, conn: sa.Connection, user_sys_id: str) -> int:
    """End every session of a user (password changed, deactivated, deleted); returns how many."""
    table = storage.internal(TABLE)
    return conn.execute(sa.delete(table).where(table.c.user_sys_id == user_sys_id)).rowcount


def count(storage: Storage, conn: sa.Connection, user_sys_id: str) -> int:
    """How many sessions a user has (ended ones not yet removed included)."""
    table = storage.internal(TABLE)
    return conn.execute(sa.select(sa.func.count()).select_from(table)
                        .where(table.c.user_sys_id == user_sys_id)).scalar() or 0


def _expired(table: sa.Table, policy: SessionPolicy, at: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.or_(table.c.last_seen <= at - policy.idle, table.c.created_on <= at - policy.lifetime)
