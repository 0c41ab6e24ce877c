"""Sign-in with a password, throttled per user name and per client address.

Failed sign-ins are counted in the database (table sys_signin_failure), so every server process
sharing it counts together. After `ThrottlePolicy.per_user` failures for one user name, or
`per_address` from one address, within `window`, further attempts are refused, the right
password included, until `lockout` has passed. Unknown user names are counted like known ones
(a lockout tells nothing about which names exist). A success clears the user name's counter,
not the address's (one known password must not reset an address that guesses others).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .access import Actor
from .config import Config
from .records import now
from .storage import Storage
from .users import Alongside, Carried, credentials, verify

TABLE = "sys_signin_failure"
USER, ADDRESS = "user", "address"


@dataclass(frozen=True)
class ThrottlePolicy:
    per_user: int = Config.login_failures_per_user
    per_address: int = Config.login_failures_per_address
    lockout: dt.timedelta = dt.timedelta(seconds=Config.login_lockout_seconds)
    window: dt.timedelta = dt.timedelta(seconds=Config.login_lockout_seconds)

    @classmethod
    def from_config(cls, config: Config) -> ThrottlePolicy:
        """Failures count within a window as long as the lockout (CASELOOM_LOGIN_LOCKOUT_SECONDS)."""
        seconds = dt.timedelta(seconds=config.login_lockout_seconds)
        return cls(config.login_failures_per_user, config.login_failures_per_address, seconds, seconds)

    def limit(self, kind: str) -> int:
        return self.per_user if kind == USER else self.per_address


class TooManyFailures(Exception):
    """Sign-in refused without checking the password: too many recent failures."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after  # seconds
        super().__init__(f"too many failed sign-ins for this user name or from this address; "
                         f"try again in {self.wait}")

    @property
    def wait(self) -> str:
        """How long to wait, for people: '45 seconds', '5 minutes'."""
        if self.retry_after < 60:
            return f"{self.retry_after} second{'s' if self.retry_after != 1 else ''}"
        minutes = math.ceil(self.retry_after / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"


@dataclass(frozen=True)
class Attempt:
    """Who is signing in, from where: the names their failures are counted under."""

    user_name: str
    address: str | None = None

    def keys(self) -> list[tuple[str, str]]:
        keys = [(USER, self.user_name.strip().lower()[:255])]
        if self.address:
            keys.append((ADDRESS, address_key(self.address)))
        return keys


def address_key(address: str) -> str:
    """An IPv6 client counts by its /64 network (one host usually holds all of it); IPv4 as is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:255]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Throttle:
    """The failure counters of sys_signin_failure under one policy."""

    def __init__(self, storage: Storage, policy: ThrottlePolicy):
        self.table = storage.internal(TABLE)
        self.policy = policy

    def check(self, conn: sa.Connection, attempt: Attempt) -> bool:
        """Raises TooManyFailures while a key of the attempt is locked out; otherwise whether the
        user name has failures on record (a success then clears them). One indexed read."""
        at, alongside = now(), self.alongside(attempt)
        return self.judge(conn.execute(sa.select(*alongside.columns), alongside.params).one(), at)

    def alongside(self, attempt: Attempt) -> Alongside:
        """The counters of the attempt's keys as two columns, for a statement of their own (`check`)
        or the sign-in's own (`users.credentials`): the latest lockout among them, and whether the
        user name has failures on record. Built once per number of keys."""
        keys = attempt.keys()
        params = {f"{part}{i}": value for i, key in enumerate(keys) for part, value in zip(("kind", "name"), key, strict=True)}
        return Alongside(("throttle", len(keys)), _counters(self.table, len(keys)), params)

    def judge(self, row: sa.Row, at: dt.datetime) -> bool:
        """`check`'s answer from a row with the `alongside` columns, read at `at` or just after."""
        locked_until = row.throttle_locked_until
        if locked_until is not None and locked_until > at:
            raise TooManyFailures(max(1, math.ceil((locked_until - at).total_seconds())))
        return bool(row.throttle_had_failures)

    def failed(self, conn: sa.Connection, attempt: Attempt) -> None:
        """Count a failure under each key of the attempt; a key reaching its limit is locked out."""
        t, at = self.table, now()
        conn.execute(sa.delete(t).where(t.c.window_start <= at - self.policy.window,
                                        sa.or_(t.c.locked_until.is_(None), t.c.locked_until <= at)))
        for kind, name in attempt.keys():
            conn.execute(self._count(conn.dialect.name, kind, name, at))
            conn.execute(sa.update(t).where(t.c.kind == kind, t.c.name == name,
                                            t.c.failures >= self.policy.limit(kind))
                         .values(failures=0, window_start=at, locked_until=at + self.policy.lockout))

    def succeeded(self, conn: sa.Connection, attempt: Attempt) -> None:
        """Forget the user name's failures."""
        t, (kind, name) = self.table, attempt.keys()[0]
        conn.execute(sa.delete(t).where(t.c.kind == kind, t.c.name == name))

    def _count(self, dialect: str, kind: str, name: str, at: dt.datetime) -> sa.Executable:
        """One statement, atomic under concurrent failures: insert the counter or add one to it
        (starting a new window when the old one is over)."""
        t = self.table
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t)
        stale = t.c.window_start <= at - self.policy.window
        return insert.values(kind=kind, name=name, failures=1, window_start=at).on_conflict_do_update(
            index_elements=[t.c.kind, t.c.name],
            set_={"failures": sa.case((stale, 1), else_=t.c.failures + 1),
                  "window_start": sa.case((stale, at), else_=t.c.window_start)})


@functools.lru_cache(maxsize=16)
def _counters(t: sa.Table, keys: int) -> tuple[sa.ColumnElement, ...]:
    """The columns of `Throttle.alongside` for `keys` (kind, name) pairs, built once: every request
    signing in with HTTP Basic reads them, so they must cost no more than the read itself."""
    matches = [sa.and_(t.c.kind == sa.bindparam(f"kind{i}"), t.c.name == sa.bindparam(f"name{i}")) for i in range(keys)]
    latest = sa.select(sa.func.max(t.c.locked_until)).where(sa.or_(*matches)).scalar_subquery()
    return (latest.label("throttle_locked_until"), sa.exists().where(matches[0]).label("throttle_had_failures"))


Write = Callable[[Callable[[sa.Connection], None]], None]


def sign_in(storage: Storage, policy: ThrottlePolicy, conn: sa.Connection, attempt: Attempt, password: str,
            write: Write, also: Carried | None = None) -> Actor | None:
    """The Actor for a user name and password, or None; raises TooManyFailures while locked out.
    Reads on `conn`; counter changes go through `write`, which must run them in a transaction of
    their own and commit it (a failure counts even though the request that made it fails).
    A correct sign-in with no failures on record writes nothing. `also`: more columns for the
    same statement, handed over before anything is judged."""
    throttle, at = Throttle(storage, policy), now()
    alongside = throttle.alongside(attempt)
    rows = credentials(storage, conn, attempt.user_name, alongside + also.alongside if also else alongside)  # one round trip
    if also is not None:
        storage = also.then(rows[0])
    had_failures = throttle.judge(rows[0], at)
    actor = verify(storage, rows, attempt.user_name, password)
    if actor is None:
        write(lambda c: throttle.failed(c, attempt))
    elif had_failures:
        write(lambda c: throttle.succeeded(c, attempt))
    return actor
