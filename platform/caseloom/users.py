"""Users, passwords and roles: `caseloom user add`, sign-in and HTTP Basic."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from . import sessions
from .access import ADMIN, SYSTEM, Actor
from .definitions.model import TableDef
from .query import Selection
from .query.dynamic import USER_GROUPS
from .records import Conflict, RecordError, RecordService, deletion_guard, validator
from .storage import Storage

USERS, USER_ROLES, GROUP_MEMBERS = "sys_user", "sys_user_has_role", "sys_user_grmember"


def add_user(service: RecordService, user_name: str, password: str | None, roles: list[str],
             values: dict | None = None) -> dict:
    """Add a user, or update an existing one; its roles become exactly `roles`."""
    unknown = [r for r in roles if r not in service.defs.roles]
    if unknown:
        raise RecordError("role", f"unknown role {unknown[0]!r}; declared roles: {', '.join(sorted(service.defs.roles))}")
    users = service.storage.physical(USERS)
    existing = service.conn.execute(sa.select(users.c.sys_id).where(users.c.user_name == user_name)).scalar()
    fields = dict(values or {})
    if password is not None:
        fields["user_password"] = password
    if existing:
        user = service.update(USERS, existing, fields)
    else:
        user = service.insert(USERS, {"user_name": user_name, **fields})
    set_roles(service, user["sys_id"], roles)
    return user


def set_roles(service: RecordService, user_sys_id: str, roles: list[str]) -> None:
    table = service.storage.physical(USER_ROLES)
    rows = service.conn.execute(sa.select(table.c.sys_id, table.c.role).where(table.c.user == user_sys_id)).all()
    have = {role for _, role in rows}
    # new roles first, then old ones go: a user moving from one admin role to another stays an admin throughout
    service.insert_many(USER_ROLES, [{"user": user_sys_id, "role": r} for r in roles if r not in have])
    for sys_id, role in rows:
        if role not in roles:
            service.delete(USER_ROLES, sys_id)


def user_lookup(storage: Storage, connect: Callable[[], AbstractContextManager[sa.Connection]],
                user_sys_id: str | None) -> Callable[[str], Any]:
    """What a condition's `gs.getUser().getRecord().getValue('path')` and `getMyGroups()` read (see
    caseloom.query.dynamic): a path of the user's own record, or USER_GROUPS, each read once, with
    the platform's access (a rule may walk where the user cannot). `connect` gives a connection to
    read with, as a context manager."""
    memo: dict[str, Any] = {}

    def lookup(path: str) -> Any:
        if path not in memo:
            with connect() as conn:
                memo[path] = _user_value(storage, conn, user_sys_id, path)
        return memo[path]

    return lookup


def _user_value(storage: Storage, conn: sa.Connection, user_sys_id: str | None, path: str) -> Any:
    if path == USER_GROUPS:
        members = storage.physical(GROUP_MEMBERS)
        return tuple(conn.execute(sa.select(members.c.group).where(members.c.user == user_sys_id)
                                  .order_by(members.c.group)).scalars())
    key = ("user value", path)  # built once per definitions set and path: a rule reads it on every request
    stmt = storage.cache.get(key)
    if stmt is None:
        sel = Selection(storage, USERS)
        column, _ = sel.column(path)
        stmt = storage.cache[key] = sa.select(column).select_from(sel.from_clause).where(
            sel.base.c.sys_id == sa.bindparam("user")).limit(1)
    return conn.execute(stmt, {"user": user_sys_id}).scalar()


def actor_for(storage: Storage, conn: sa.Connection, user_sys_id: str) -> Actor | None:
    """The Actor of an active user by sys_id, with the roles their roles contain (one round trip:
    a row per role, every request of a browser session asks it)."""
    users, roles = storage.physical(USERS), storage.physical(USER_ROLES)
    rows = conn.execute(storage.cached(("users", "by sys_id, with roles"), lambda: sa.select(
        users.c.user_name, users.c.active, roles.c.role)
        .select_from(users.outerjoin(roles, roles.c.user == users.c.sys_id))
        .where(users.c.sys_id == sa.bindparam("user"))), {"user": user_sys_id}).all()
    if not rows or rows[0].active is False:
        return None
    return Actor(rows[0].user_name, storage.defs.role_closure([r.role for r in rows if r.role is not None]), user_sys_id)


def signed_in(storage: Storage, conn: sa.Connection, token: str, policy: sessions.SessionPolicy,
              also: Carried | None = None) -> tuple[sessions.Session | None, dict[str, Actor]]:
    """The live session of a browser token (see sessions.judge) and the active users its rows name,
    by sys_id (its own user, and whom it views as), with their roles: one round trip, every
    request of a browser session asks it. Always at least one row (its session columns NULL when
    the token has none), so `also`'s columns come back; they are handed over before the session
    and its users are judged."""
    table, users, roles = storage.internal(sessions.TABLE), storage.physical(USERS), storage.physical(USER_ROLES)
    extra = also.alongside if also is not None else Alongside(None, (), {})

    def build() -> sa.Select:
        anchor = sa.select(sa.literal_column("1").label("one")).subquery("anchor")
        mine = table.c.token_hash.in_((sa.bindparam("own"), sa.bindparam("linked")))
        return (sa.select(table.c.token_hash, table.c.user_sys_id, table.c.created_on, table.c.last_seen,
                          users.c.user_name, users.c.name, users.c.active, roles.c.role, *extra.columns)
                .select_from(anchor.outerjoin(table, mine)
                             .outerjoin(users, users.c.sys_id == table.c.user_sys_id)
                             .outerjoin(roles, roles.c.user == users.c.sys_id)))
    keys = dict(zip(("own", "linked"), sessions.keys(token), strict=True))
    rows = conn.execute(storage.cached(("users", "of a session, with roles", extra.key), build), {**extra.params, **keys}).all()
    if also is not None:
        storage = also.then(rows[0])
    held: dict[str, tuple[str, str | None, set[str]]] = {}  # an active user's sys_id: their names and roles
    for row in rows:
        if row.user_name is not None and row.active is not False:
            roles_held = held.setdefault(row.user_sys_id, (row.user_name, row.name, set()))[2]
            if row.role is not None:
                roles_held.add(row.role)
    actors = {sys_id: Actor(user_name, storage.defs.role_closure(roles_of), sys_id, name=name)
              for sys_id, (user_name, name, roles_of) in held.items()}
    return sessions.judge(rows, token, policy), actors


def actor_named(storage: Storage, conn: sa.Connection, user_name: str | None) -> Actor | None:
    """The Actor of a user by name, as actor_for: SYSTEM for the platform's own name (or none);
    None when no active user has it (who started a job, who wrote a script)."""
    if user_name in (None, SYSTEM.user_name):
        return SYSTEM
    users = storage.physical(USERS)
    sys_id = conn.execute(sa.select(users.c.sys_id).where(users.c.user_name == user_name)).scalar()
    return actor_for(storage, conn, sys_id) if sys_id else None


class _VerifiedCache:
    """Remembers recent successful password checks, so HTTP Basic does not pay a slow hash per
    request. Keyed by a digest of (user, password, stored hash): a changed password misses."""

    def __init__(self, size: int = 1024):
        self._items: OrderedDict[str, bool] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @staticmethod
    def key(user_name: str, password: str, stored: str) -> str:
        return hashlib.sha256(f"{user_name}\0{password}\0{stored}".encode()).hexdigest()

    def check(self, user_name: str, password: str, stored: str) -> bool:
        key = self.key(user_name, password, stored)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return True
        if not check_password_hash(stored, password):
            return False
        with self._lock:
            self._items[key] = True
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return True


_verified = _VerifiedCache()


@cache
def _dummy_hash() -> str:
    """A hash of a random password, made as stored passwords are (the field type's default)."""
    return generate_password_hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Alongside:
    """Columns another part computes in the sign-in's own statement (the throttle's counters), so a
    sign-in costs one round trip: `key` names them in the statement cache, `params` binds them."""

    key: Hashable
    columns: tuple[sa.ColumnElement, ...]
    params: dict[str, Any]

    def __add__(self, other: Alongside) -> Alongside:
        return Alongside((self.key, other.key), self.columns + other.columns, {**self.params, **other.params})


@dataclass(frozen=True)
class Carried:
    """What another part reads in a sign-in's statement (the definitions' generation): its columns,
    and `then`, given the first row before anyone is judged, answering the storage the sign-in goes
    on with (a new definition set's, when the row says the set changed)."""

    alongside: Alongside
    then: Callable[[sa.Row], Storage]


def credentials(storage: Storage, conn: sa.Connection, user_name: str, alongside: Alongside | None = None) -> list[sa.Row]:
    """The rows of the user named `user_name`, one per role, with `alongside`'s columns: always at
    least one row (its user columns NULL when no user has the name), so those columns come back."""
    users, roles = storage.physical(USERS), storage.physical(USER_ROLES)
    extra = alongside or Alongside(None, (), {})

    def build() -> sa.Select:
        anchor = sa.select(sa.literal_column("1").label("one")).subquery("anchor")
        return (sa.select(users.c.sys_id, users.c.user_name, users.c.user_password, users.c.active, roles.c.role,
                          *extra.columns)
                .select_from(anchor.outerjoin(users, users.c.user_name == sa.bindparam("name"))
                             .outerjoin(roles, roles.c.user == users.c.sys_id)))
    stmt = storage.cached(("users", "by name, with roles", extra.key), build)
    return conn.execute(stmt, {**extra.params, "name": user_name}).all()


def verify(storage: Storage, rows: list[sa.Row], user_name: str, password: str) -> Actor | None:
    """The Actor for `credentials`' rows and a password, or None when they do not match an active
    user. An unknown or inactive user, or one without a password, costs the same hash as a wrong
    password (against a dummy hash), so the answer time does not tell which names exist."""
    row = rows[0] if rows else None
    if row is None or row.sys_id is None or not row.user_password or row.active is False:
        check_password_hash(_dummy_hash(), password)
        return None
    if not _verified.check(user_name, password, row.user_password):
        return None
    held = [r.role for r in rows if r.sys_id == row.sys_id and r.role is not None]
    return Actor(row.user_name, storage.defs.role_closure(held), row.sys_id)


def authenticate(storage: Storage, conn: sa.Connection, user_name: str, password: str) -> Actor | None:
    """The Actor for a user name and password, or None (see `verify`); one round trip."""
    return verify(storage, credentials(storage, conn, user_name), user_name, password)


@validator(USERS)
def _end_sessions_on_new_credentials(service: RecordService, tdef: TableDef, record: dict,
                                     before: dict | None) -> None:
    """A new password or a deactivation signs the user out everywhere, in the same transaction."""
    if before is None:
        return
    deactivated = record.get("active") is False and before.get("active") is not False
    if deactivated or record.get("user_password") != before.get("user_password"):
        sessions.end_all(service.storage, service.conn, record["sys_id"])


# -- the last administrator ------------------------------------------------------------------------

def admin_roles(service: RecordService) -> list[str]:
    """The roles that make a user an administrator: admin, and every declared role containing it."""
    return sorted({ADMIN} | {r for r in service.defs.roles if ADMIN in service.defs.role_closure({r})})


def active_admins(service: RecordService, *, user: str | None = None, except_user: str | None = None,
                  except_role_row: str | None = None) -> int:
    """How many active administrators there are: only `user` (a sys_user sys_id) counted, or all
    but `except_user`, or counting without one role assignment (`except_role_row`)."""
    users, has_role = service.storage.physical(USERS), service.storage.physical(USER_ROLES)
    stmt = (sa.select(sa.func.count(sa.distinct(users.c.sys_id))).select_from(users)
            .join(has_role, has_role.c.user == users.c.sys_id)
            .where(has_role.c.role.in_(admin_roles(service)), users.c.active.is_not(False)))
    for column, value, keep in ((users.c.sys_id, user, True), (users.c.sys_id, except_user, False),
                                (has_role.c.sys_id, except_role_row, False)):
        if value is not None:
            stmt = stmt.where(column == value if keep else column != value)
    return service.conn.execute(stmt).scalar_one()


def _last_admin(service: RecordService, user: str | None, **without: str) -> bool:
    """Whether `user` is an active administrator and none would be left `without` (see active_admins)."""
    return bool(user) and active_admins(service, user=user) > 0 and active_admins(service, **without) == 0


LAST_ADMIN = "the last active administrator cannot be {what}: give another active user the admin role first"


@deletion_guard(USERS)
def _keep_the_last_admin(service: RecordService, tdef: TableDef, current: dict) -> None:
    if _last_admin(service, current["sys_id"], except_user=current["sys_id"]):
        raise Conflict(LAST_ADMIN.format(what="deleted"))


@validator(USERS)
def _keep_the_last_admin_active(service: RecordService, tdef: TableDef, record: dict, before: dict | None) -> None:
    if before is None or record.get("active") is not False or before.get("active") is False:
        return
    if _last_admin(service, record["sys_id"], except_user=record["sys_id"]):
        raise Conflict(LAST_ADMIN.format(what="deactivated"))


@deletion_guard(USER_ROLES)
def _keep_the_last_admins_role(service: RecordService, tdef: TableDef, current: dict) -> None:
    if current.get("role") in admin_roles(service) and _last_admin(service, current.get("user"),
                                                                   except_role_row=current["sys_id"]):
        raise Conflict(LAST_ADMIN.format(what="stripped of the admin role"))


@validator(USER_ROLES)
def _keep_the_last_admins_role_on_update(service: RecordService, tdef: TableDef, record: dict,
                                         before: dict | None) -> None:
    if before is None or before.get("role") not in admin_roles(service):
        return
    if (record.get("role") != before.get("role") or record.get("user") != before.get("user")) \
            and _last_admin(service, before.get("user"), except_role_row=before["sys_id"]):
        raise Conflict(LAST_ADMIN.format(what="stripped of the admin role"))
