"""The condition tree: terms, their and/or/not, and a query's order (no parsing here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FIELD = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")  # a field path: `name`, `owner.email`


class QueryError(ValueError):
    """An encoded query or condition that cannot be understood; the message says where."""


@dataclass(frozen=True)
class Term:
    field: str
    op: str  # an operator's YAML name
    value: Any = None


@dataclass(frozen=True)
class All:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class PropertyTerm:
    """A condition on a system property's current value (rules and actions, not queries)."""

    name: str
    op: str
    value: Any = None


Node = Term | All | AnyOf | Not | PropertyTerm


@dataclass(frozen=True)
class Query:
    where: Node | None = None
    order: tuple[tuple[str, bool], ...] = ()  # (field path, descending)
