"""Signed-in sessions, kept in the database (table sys_session) so that signing out ends them.

The browser's cookie carries a random token; the table keeps only its SHA-256, so a copy of the
table signs nobody in. A session ends when its user signs out, after `SessionPolicy.idle`
without a request, `SessionPolicy.lifetime` after sign-in, or when the user's password changes
or the user is deactivated or deleted (caseloom.users ends them in the same transaction).

An administrator viewing as another user (impersonation) adds a second row, for the impersonated
user, keyed by a digest derived from the same token: the session's own row says who signed in,
the linked row whom they view as. Signing out removes both; the impersonated user's deactivation,
deletion or new password removes the linked row (their sessions end), which ends the impersonation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from . import stamps
from .records import new_sys_id, now
from .storage import Storage

TABLE = "sys_session"
IMPERSONATION = "impersonation"  # the fieldname of the audit rows of impersonations, on the sys_user record


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
    impersonating: str | None = None  # the user this session views as (an administrator impersonating)


def digest(token: str) -> str:
    """What the table keeps of a token: its SHA-256 (the token is random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _linked(token: str) -> str:
    """The key of a session's impersonation row: nobody holds a token for it, so it signs nobody in."""
    return digest(f"{token}\0impersonation")


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


def keys(token: str) -> tuple[str, str]:
    """The table's keys of a session's rows: its own, and its impersonation's."""
    return digest(token), _linked(token)


def judge(rows: Iterable, token: str, policy: SessionPolicy) -> Session | None:
    """The live session of a token, or None when it ended, expired or never was, from the table's
    rows of `keys(token)` (columns token_hash, user_sys_id, created_on, last_seen; other columns and
    repeated rows are ignored). `users.signed_in` reads them with the session's users."""
    own, linked = keys(token)
    found = {r.token_hash: r for r in rows}
    row, at = found.get(own), now()
    if row is None or row.last_seen <= at - policy.idle or row.created_on <= at - policy.lifetime:
        return None
    viewing = found[linked].user_sys_id if linked in found else None
    return Session(row.user_sys_id, stale=row.last_seen <= at - policy.touch_every, impersonating=viewing)


def touch(storage: Storage, conn: sa.Connection, token: str) -> None:
    """Record a request of the session now (it stays alive for another idle period, and so does
    its impersonation: both rows age together)."""
    table = storage.internal(TABLE)
    conn.execute(sa.update(table).where(table.c.token_hash.in_((digest(token), _linked(token)))).values(last_seen=now()))


def end(storage: Storage, conn: sa.Connection, token: str) -> None:
    """Sign out: the token stops working, on every copy of the cookie, and its impersonation ends."""
    table = storage.internal(TABLE)
    conn.execute(sa.delete(table).where(table.c.token_hash.in_((digest(token), _linked(token)))))


def impersonate(storage: Storage, conn: sa.Connection, token: str, user_sys_id: str) -> None:
    """The session of `token` views as another user from now on (replacing whom it viewed as)."""
    table = storage.internal(TABLE)
    at = now()
    conn.execute(sa.delete(table).where(table.c.token_hash == _linked(token)))
    conn.execute(sa.insert(table).values(token_hash=_linked(token), user_sys_id=user_sys_id, created_on=at,
                                         last_seen=at, address=None))


def stop_impersonating(storage: Storage, conn: sa.Connection, token: str) -> str | None:
    """The session of `token` is its own user's again; returns whom it viewed as (None: nobody)."""
    table = storage.internal(TABLE)
    linked = _linked(token)
    viewed = conn.execute(sa.select(table.c.user_sys_id).where(table.c.token_hash == linked)).scalar()
    conn.execute(sa.delete(table).where(table.c.token_hash == linked))
    return viewed


def audit_impersonation(storage: Storage, conn: sa.Connection, by: str, user_sys_id: str, text: str) -> None:
    """A sys_audit row on the impersonated user's record (field `impersonation`): who (`by`, the
    administrator's user name), whom (the record), when (its sys_created_on) and what (`text`)."""
    users = storage.physical("sys_user")
    checkpoint = conn.execute(sa.select(users.c.sys_mod_count).where(users.c.sys_id == user_sys_id)).scalar() or 0
    row = stamps.audit_row("sys_user", user_sys_id, checkpoint, IMPERSONATION, None, text, by, new_sys_id())
    conn.execute(sa.insert(storage.physical("sys_audit")).values(row | stamps.new_row("sys_audit", by, now(), new_sys_id())))


def end_all(storage: Storage, conn: sa.Connection, user_sys_id: str) -> int:
    """End every session of a user (password changed, deactivated, deleted); returns how many."""
    table = storage.internal(TABLE)
    return conn.execute(sa.delete(table).where(table.c.user_sys_id == user_sys_id)).rowcount


def count(storage: Storage, conn: sa.Connection, user_sys_id: str) -> int:
    """How many sessions a user has (ended ones not yet removed, and impersonations of the user, included)."""
    table = storage.internal(TABLE)
    return conn.execute(sa.select(sa.func.count()).select_from(table)
                        .where(table.c.user_sys_id == user_sys_id)).scalar() or 0


def _expired(table: sa.Table, policy: SessionPolicy, at: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.or_(table.c.last_seen <= at - policy.idle, table.c.created_on <= at - policy.lifetime)
