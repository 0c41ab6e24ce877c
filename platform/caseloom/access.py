"""Who may do what: role containment and table-level access from the definitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # access is imported by the query compiler, which the definitions import
    from .definitions.model import Definitions

OPERATIONS = ("read", "create", "write", "delete")
ADMIN = "admin"


class AccessDenied(Exception):
    """The actor's roles do not allow this (HTTP 403)."""


@dataclass(frozen=True)
class Actor:
    """The user a piece of work is done for: name, sys_id and effective roles.

    `ceiling`: another actor whose rights this one may not exceed (a script runs with the read
    access of its author, never more than that of the user running it): every check asks both."""

    user_name: str
    roles: frozenset[str]
    sys_id: str | None = None
    ceiling: Actor | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles and (self.ceiling is None or self.ceiling.is_admin)

    def has_role(self, role: str) -> bool:
        mine = ADMIN in self.roles or role in self.roles
        return mine and (self.ceiling is None or self.ceiling.has_role(role))

    def within(self, other: Actor) -> Actor:
        """This actor, allowed no more than `other` is."""
        if other == self:
            return self
        limit = other if self.ceiling is None else self.ceiling.within(other)
        return Actor(self.user_name, self.roles, self.sys_id, limit)


SYSTEM = Actor("system", frozenset({ADMIN}))


def allowed(defs: Definitions, actor: Actor, table: str, operation: str) -> bool:
    """Table-level access: the rules of the table itself, or of its nearest ancestor that has
    rules for this operation (as ServiceNow ACLs inherit); admin may do everything. An actor
    with a ceiling needs both its own access and the ceiling's."""
    if actor.ceiling is not None and not allowed(defs, actor.ceiling, table, operation):
        return False
    if ADMIN in actor.roles:
        return True
    for name in (table, *defs.ancestors(table)):
        roles = [r for rule in defs.access if rule.table == name and operation in rule.operations
                 for r in rule.roles]
        if roles:
            return bool(actor.roles.intersection(roles))
    return False
