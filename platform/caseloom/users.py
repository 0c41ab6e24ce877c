"""Users, passwords and roles: `caseloom user add`, sign-in and HTTP Basic."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import sqlalchemy as sa
from werkzeug.security import check_password_hash

from .access import Actor
from .records import RecordError, RecordService
from .storage import Storage

USERS, USER_ROLES = "sys_user", "sys_user_has_role"


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
    for sys_id, role in rows:
        if role not in roles:
            service.delete(USER_ROLES, sys_id)
    have = {role for _, role in rows}
    service.insert_many(USER_ROLES, [{"user": user_sys_id, "role": r} for r in roles if r not in have])


def actor_for(storage: Storage, conn: sa.Connection, user_sys_id: str) -> Actor | None:
    """The Actor of an active user by sys_id, with the roles their roles contain."""
    users = storage.physical(USERS)
    row = conn.execute(sa.select(users.c.user_name, users.c.active)
                       .where(users.c.sys_id == user_sys_id)).first()
    if row is None or row.active is False:
        return None
    table = storage.physical(USER_ROLES)
    roles = conn.execute(sa.select(table.c.role).where(table.c.user == user_sys_id)).scalars().all()
    return Actor(row.user_name, storage.defs.role_closure(roles), user_sys_id)


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


def authenticate(storage: Storage, conn: sa.Connection, user_name: str, password: str) -> Actor | None:
    """The Actor for a user name and password, or None when they do not match an active user."""
    users = storage.physical(USERS)
    row = conn.execute(sa.select(users.c.sys_id, users.c.user_password, users.c.active)
                       .where(users.c.user_name == user_name)).first()
    if row is None or not row.user_password or row.active is False:
        return None
    if not _verified.check(user_name, password, row.user_password):
        return None
    return actor_for(storage, conn, row.sys_id)
