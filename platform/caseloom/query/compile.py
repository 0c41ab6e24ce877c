"""Compile conditions to SQL over the physical tables, joining for dot-walked paths.

Nothing here evaluates rows in Python: a condition becomes one WHERE clause, and
`account.name` becomes a LEFT JOIN to the account's table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from ..access import AccessDenied
from ..definitions.model import FieldDef, TableDef
from ..fieldtypes import SYS_ID, FieldValueError
from ..storage import Storage
from .conditions import All, AnyOf, Node, Not, Query, QueryError, Term
from .operators import operator

Readable = Callable[[str], bool]  # a table name -> whether the user may read its records
MAX_OFFSET = 10**12  # far beyond any table, well inside the 64-bit integers databases take


class Selection:
    """A SELECT over one logical table, with the joins its dot-walked paths need."""

    def __init__(self, storage: Storage, table: str, alias: bool = True, readable: Readable | None = None):
        """`alias=False`: the base is the physical table itself, for an UPDATE's WHERE. `readable`: the
        user's read access; a path that walks into a table it refuses raises AccessDenied (None: the
        platform's own queries, which read everything)."""
        self.storage = storage
        self.defs = storage.defs
        self.readable = readable
        if table not in self.defs.tables:
            raise QueryError(f"unknown table {table!r}")
        self.table: TableDef = self.defs.tables[table]
        self.base = storage.physical(table).alias("t0") if alias else storage.physical(table)
        self._joins: dict[str, tuple[sa.FromClause, TableDef]] = {"": (self.base, self.table)}
        self._from: sa.FromClause = self.base

    def column(self, path: str) -> tuple[sa.ColumnElement, FieldDef]:
        """The SQL column for a field path such as `state` or `account.primary_contact.email`."""
        parts = path.split(".")
        alias, tdef = self._joins[""]
        for i, part in enumerate(parts):
            field = tdef.field(part)
            if field is None:
                raise QueryError(f"{path}: table {tdef.name!r} has no field {part!r}")
            if i == len(parts) - 1:
                if not field.stored:
                    raise QueryError(f"{path}: {field.type} fields cannot be queried")
                return alias.c[part], field
            if field.type != "reference":
                raise QueryError(f"{path}: {part!r} is not a reference, so it cannot be dot-walked")
            alias, tdef = self._join(".".join(parts[: i + 1]), alias, field)
        raise QueryError(f"empty field path {path!r}")

    def _join(self, prefix: str, parent: sa.FromClause, field: FieldDef) -> tuple[sa.FromClause, TableDef]:
        if prefix not in self._joins:
            target = self.defs.tables[field.reference]
            if self.readable is not None and not self.readable(target.name):
                raise AccessDenied(f"{prefix}: no read access to {target.name!r}, so it cannot be dot-walked")
            alias = self.storage.physical(target.name).alias(f"t{len(self._joins)}")
            self._from = self._from.outerjoin(alias, alias.c.sys_id == parent.c[field.name])
            self._joins[prefix] = (alias, target)
        return self._joins[prefix]

    @property
    def from_clause(self) -> sa.FromClause:
        """The base table with every join made so far: resolve conditions and columns first."""
        return self._from

    def select(self, *columns: sa.ColumnElement, where: Any = None) -> sa.Select:
        """SELECT `columns` of the rows matching `where` (a condition Node), the condition resolved
        before the FROM is built, so the joins its dot-walks need are part of it."""
        condition = self.condition(where)
        stmt = sa.select(*columns).select_from(self._from)
        return stmt if condition is None else stmt.where(condition)

    def condition(self, node: Node | None) -> sa.ColumnElement | None:
        """The WHERE clause of a condition, class filter included."""
        clauses = []
        class_filter = self.storage.class_filter(self.table.name, self.base)
        if class_filter is not None:
            clauses.append(class_filter)
        if node is not None:
            clauses.append(self._compile(node))
        return sa.and_(*clauses) if clauses else None

    def _compile(self, node: Node) -> sa.ColumnElement:
        if isinstance(node, Term):
            return self._term(node)
        if isinstance(node, Not):
            return sa.not_(self._compile(node.item))
        parts = [self._compile(item) for item in node.items]
        if isinstance(node, All):
            return sa.and_(*parts)
        if isinstance(node, AnyOf):
            return sa.or_(*parts)
        raise QueryError(f"cannot compile {node!r}")

    def _term(self, term: Term) -> sa.ColumnElement:
        op = operator(term.op)
        if op is None:
            raise QueryError(f"{term.field}: unknown operator {term.op!r}")
        if op.change is not None:
            raise QueryError(f"{term.field}{op.token}: {op.token} compares a record before and after a write, so it "
                             "works in rule conditions only, not in a query")
        column, field = self.column(term.field)
        _refuse_password(term.field, field)
        if not op.takes_value:
            return op.sql(column, None)
        if field.type == "reference" and not op.text_only and _is_display_value(term.value, op.list_value):
            column, field = self._display_column(term.field, field)
        if op.text_only:
            return op.sql(sa.cast(column, sa.String) if field.type not in ("string", "text") else column,
                          "" if term.value is None else str(term.value))
        return op.sql(column, coerce(field, term.field, term.value, op.list_value))

    def _display_column(self, path: str, field: FieldDef) -> tuple[sa.ColumnElement, FieldDef]:
        """`account=Acme` compares the account's display field, as ServiceNow does."""
        target = self.defs.tables[field.reference]
        if not target.display:
            raise QueryError(f"{path}: expected a sys_id; table {target.name!r} has no display field")
        return self.column(f"{path}.{target.display}")

    def order_by(self, order: tuple[tuple[str, bool], ...]) -> list[sa.ColumnElement]:
        clauses = []
        for path, descending in order:
            column, field = self.column(path)
            _refuse_password(path, field)
            clauses.append(column.desc() if descending else column.asc())
        if not clauses:
            clauses.append(self.base.c.sys_id.asc())  # a stable order for paging when none is asked for
        # (after an explicit order, a sys_id tie-breaker would stop the database using that field's index)
        return clauses


def _refuse_password(path: str, field: FieldDef) -> None:
    """A password hash is never returned, so it cannot be filtered or sorted on either
    (a STARTSWITH probe would read it out one character at a time)."""
    if field.type == "password":
        raise QueryError(f"{path}: password fields cannot be queried")


def _is_display_value(value: Any, is_list: bool) -> bool:
    values = value if is_list else [value]
    return any(v not in (None, "") and not SYS_ID.match(str(v)) for v in values)


def coerce(field: FieldDef, path: str, value: Any, is_list: bool = False) -> Any:
    """A query value in the field's stored type; raises QueryError naming the field."""
    try:
        if is_list:
            return [field.parse(v) for v in (value or [])]
        return field.parse(value)
    except FieldValueError as exc:
        raise QueryError(f"{path}: {exc}") from None


def select_rows(storage: Storage, table: str, query: Query, columns: list[str] | None = None,
                limit: int | None = None, offset: int = 0, readable: Readable | None = None) -> tuple[sa.Select, Selection]:
    """A SELECT of `columns` (paths; default every stored field) of the matching rows; every
    dot-walk (in columns, condition and order) through tables `readable` allows."""
    if not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"offset {offset} is out of range (0 to {MAX_OFFSET})")
    sel = Selection(storage, table, readable=readable)
    paths = columns or [f.name for f in sel.table.stored_fields]
    cols = [sel.column(p)[0].label(p) for p in paths]
    where = sel.condition(query.where)
    order = sel.order_by(query.order)
    stmt = sa.select(*cols).select_from(sel.from_clause)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(*order).offset(offset or None)
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt, sel


COUNT_OTHERS_LIMIT = 10_000


def count_rows(storage: Storage, table: str, query: Query, readable: Readable | None = None) -> sa.Select:
    sel = Selection(storage, table, readable=readable)
    where = sel.condition(query.where)
    stmt = sa.select(sa.func.count()).select_from(sel.from_clause)
    if query.where is None and where is not None:
        return _count_class(storage, table, stmt.where(where))
    return stmt.where(where) if where is not None else stmt


def _count_class(storage: Storage, table: str, direct: sa.Select) -> sa.Select:
    """Every record of a table that shares its physical table with other classes (a list with no
    filter). Counting the rows of the class reads an index entry per row (30 ms a million on
    SQLite); counting the whole table is nearly free there (SQLite counts B-tree pages), so when
    the other classes have few rows (found by range seeks on the class index, with a cap) the
    count is the table's count minus theirs; otherwise it is the direct count."""
    physical = storage.physical(table)
    column = physical.c.sys_class_name
    mine = sorted(storage.classes(table))
    ranges = [column < mine[0], column > mine[-1]]
    ranges += [sa.and_(column > low, column < high) for low, high in zip(mine, mine[1:], strict=False)]
    others = sa.or_(*ranges)
    few = sa.select(sa.literal(1)).select_from(physical).where(others).limit(COUNT_OTHERS_LIMIT).subquery()
    few_others = sa.select(sa.func.count()).select_from(few).scalar_subquery() < COUNT_OTHERS_LIMIT
    total = sa.select(sa.func.count()).select_from(physical).scalar_subquery()
    other_rows = sa.select(sa.func.count()).select_from(physical).where(others).scalar_subquery()
    return sa.select(sa.case((few_others, total - other_rows), else_=direct.scalar_subquery()))
