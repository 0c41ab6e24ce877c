"""Who may do what: role containment and table-level access from the definitions."""

from __future__ import annotations

from dataclasses import dataclass

from .definitions.model import Definitions

OPERATIONS = ("read", "create", "write", "delete")
ADMIN = "admin"


@dataclass(frozen=True)
class Actor:
    """The user a piece of work is done for: name, sys_id and effective roles."""

    user_name: str
    roles: frozenset[str]
    sys_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def has_role(self, role: str) -> bool:
        return self.is_admin or role in self.roles


SYSTEM = Actor("system", frozenset({ADMIN}))


def allowed(defs: Definitions, actor: Actor, table: str, operation: str) -> bool:
    """Table-level access: the rules of the table itself, or of its nearest ancestor that has
    rules for this operation (as ServiceNow ACLs inherit); admin may do everything."""
    if actor.is_admin:
        return True
    for name in (table, *defs.ancestors(table)):
        roles = [r for rule in defs.access if rule.table == name and operation in rule.operations
                 for r in rule.roles]
        if roles:
            return bool(actor.roles.intersection(roles))
    return False
