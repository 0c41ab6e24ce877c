"""Who may do what: access rules from the definitions, per table, field and operation, with roles
and conditions (ServiceNow's ACLs). A table rule's condition is not tested here but handed back
as a condition on the records (`rows`), which the query compiler puts into the SQL."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # access is imported by the query compiler, which the definitions import
    from .definitions.model import AccessRule, Definitions

OPERATIONS = ("read", "create", "write", "delete")
ADMIN = "admin"
ALLOW_IF, DENY_UNLESS = "allow_if", "deny_unless"
ALWAYS_READABLE = frozenset({"sys_id", "sys_class_name"})  # what every list, link and form needs


class AccessDenied(Exception):
    """The actor's roles do not allow this (HTTP 403)."""


@dataclass(frozen=True)
class Actor:
    """The user a piece of work is done for: name, sys_id and effective roles.

    `ceiling`: another actor whose rights this one may not exceed (a script runs with the read
    access of its author, never more than that of the user running it): every check asks both.
    `name`: the person's name, as pages greet them (a browser session's actor has it); no part of
    any check."""

    user_name: str
    roles: frozenset[str]
    sys_id: str | None = None
    ceiling: Actor | None = None
    name: str | None = dataclasses.field(default=None, compare=False)

    @property
    def shown(self) -> str:
        """What a page calls this user: their name, else their user name."""
        return self.name or self.user_name

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
        return Actor(self.user_name, self.roles, self.sys_id, limit, self.name)


SYSTEM = Actor("system", frozenset({ADMIN}))


Verdict = "bool | Node"  # True: every record; False: none; a condition: the records it matches


def _index(defs: Definitions) -> dict[tuple[str, str | None, str], tuple[AccessRule, ...]]:
    """The rules by (table, field or None or "*", operation), built once per definitions set."""
    rules = defs.access
    cached = _INDEXES.get(id(rules))
    if cached is not None and cached[0] is rules:
        return cached[1]
    index: dict[tuple[str, str | None, str], list[AccessRule]] = {}
    for rule in rules:
        for operation in rule.operations:
            index.setdefault((rule.table, rule.field_name, operation), []).append(rule)
    frozen = {key: tuple(found) for key, found in index.items()}
    if len(_INDEXES) > 16:
        _INDEXES.clear()
    _INDEXES[id(rules)] = (rules, frozen)
    return frozen


_INDEXES: dict[int, tuple[tuple, dict]] = {}


def _has_roles(actor: Actor, rule: AccessRule) -> bool:
    return not rule.roles or bool(actor.roles.intersection(rule.roles))


def _decide(actor: Actor, rules: tuple[AccessRule, ...]) -> Verdict:
    """ServiceNow's order: every deny-unless rule must pass (its roles, and its condition on the
    record), then at least one allow-if rule (roles and condition); no allow-if rule passing denies."""
    from .query.nodes import All, AnyOf  # the query package imports this module
    required: list = []
    for rule in rules:
        if rule.decision == DENY_UNLESS:
            if not _has_roles(actor, rule):
                return False
            if rule.condition is not None:
                required.append(rule.condition)
    alternatives: list | None = []
    for rule in rules:
        if rule.decision != DENY_UNLESS and _has_roles(actor, rule):
            if rule.condition is None:
                alternatives = None
                break
            alternatives.append(rule.condition)
    if alternatives == []:
        return False
    if alternatives:
        required.append(alternatives[0] if len(alternatives) == 1 else AnyOf(tuple(alternatives)))
    if not required:
        return True
    return required[0] if len(required) == 1 else All(tuple(required))


def _both(a: Verdict, b: Verdict) -> Verdict:
    from .query.nodes import All
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    return All((a, b))


def row_rule(defs: Definitions, actor: Actor, table: str, operation: str) -> Verdict:
    """Which records of `table` the actor may `operation`: the table rules of the table itself or of
    its nearest ancestor that has some for this operation (as ServiceNow ACLs inherit). admin may do
    everything; an actor with a ceiling gets no more than the ceiling does."""
    limit = row_rule(defs, actor.ceiling, table, operation) if actor.ceiling is not None else True
    if limit is False:
        return False
    if ADMIN in actor.roles:
        return limit
    index = _index(defs)
    for name in (table, *defs.ancestors(table)):
        found = index.get((name, None, operation))
        if found:
            return _both(_decide(actor, found), limit)
    return False


def allowed(defs: Definitions, actor: Actor, table: str, operation: str) -> bool:
    """Whether the actor may `operation` some records of `table` (the table rule passes, for at least
    the records its condition matches)."""
    return row_rule(defs, actor, table, operation) is not False


def field_rule(defs: Definitions, actor: Actor, table: str, field: str, operation: str) -> Verdict:
    """Field rules, once the table rule has passed: `table.field`, then the same field on each
    ancestor, then `table.*` and each ancestor's; the first that has rules for the operation decides
    (a field with no create rules anywhere: its write rules). No field rule: the table rule is enough.
    True (on every record the table rule allows), False, or a condition on the record: a rule's
    condition, which the field's value is read or written under only where the record matches it."""
    limit = field_rule(defs, actor.ceiling, table, field, operation) if actor.ceiling is not None else True
    if limit is False:
        return False
    if ADMIN in actor.roles:
        return limit
    index = _index(defs)
    lineage = (table, *defs.ancestors(table))
    keys = (*((name, field) for name in lineage), *((name, "*") for name in lineage))
    for op in (operation, "write") if operation == "create" else (operation,):  # no create rule: the write rules
        for key in keys:
            found = index.get((*key, op))
            if found:
                return _both(_decide(actor, found), limit)
    return limit


def field_allowed(defs: Definitions, actor: Actor, table: str, field: str, operation: str) -> bool:
    """Whether the field rules let the actor `operation` the field on some records at least (all of
    them, or those a rule's condition matches: see field_rule)."""
    return field_rule(defs, actor, table, field, operation) is not False


class Reader:
    """One actor's read access, handed to the query compiler: callable with a table name (may the
    actor read any of its records), with `rows` (which ones: True, or the condition compiled into
    the SQL), `field` (may it read that field, on some records at least) and `field_rule` (on which:
    True, or a condition the compiler puts around the field's column)."""

    def __init__(self, defs: Definitions, actor: Actor):
        self.defs, self.actor = defs, actor
        self._rows: dict[str, Verdict] = {}
        self._fields: dict[tuple[str, str], Verdict] = {}

    def __call__(self, table: str) -> bool:
        return self.rows(table) is not False

    def rows(self, table: str) -> Verdict:
        if table not in self._rows:
            self._rows[table] = row_rule(self.defs, self.actor, table, "read")
        return self._rows[table]

    def field(self, table: str, field: str) -> bool:
        return self.field_rule(table, field) is not False

    def field_rule(self, table: str, field: str) -> Verdict:
        if field in ALWAYS_READABLE:
            return True
        key = (table, field)
        if key not in self._fields:
            self._fields[key] = field_rule(self.defs, self.actor, table, field, "read")
        return self._fields[key]
