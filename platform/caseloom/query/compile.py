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
from ..storage import Storage
from .conditions import TEXT_QUERY, fields_of
from .dynamic import resolve_dynamic
from .meaning import Check, coerce, compared, display_of, meaning, other_path
from .nodes import All, AnyOf, Node, Not, Query, QueryError, Term
from .operators import Operator, operator
from .sqltext import ordered, text_of

__all__ = ["MAX_OFFSET", "Readable", "Selection", "coerce", "count_rows", "select_rows"]

Readable = Callable[[str], bool]  # a table name -> whether the user may read its records
MAX_OFFSET = 10**12  # far beyond any table, well inside the 64-bit integers databases take


class Selection:
    """A SELECT over one logical table, with the joins its dot-walked paths need."""

    def __init__(self, storage: Storage, table: str, alias: bool = True, readable: Readable | None = None,
                 shared: bool = False):
        """`alias=False`: the base is the physical table itself, for an UPDATE's WHERE. `shared`: the
        aliases are the storage's, made once (Storage.alias) rather than per statement: only for a
        statement no other Selection nests in, since a subquery over the very same alias object
        would be correlated to it (select_rows, the outermost SELECT of a read). `readable`: the
        user's read access; a path that walks into a table or field it refuses raises AccessDenied
        (None: the platform's own queries, which read everything). When it is an access.Reader, its
        row conditions are part of the SQL: the base table's in the WHERE, a dot-walked table's in
        its join (a record the user may not read walks to nothing)."""
        self.storage = storage
        self.defs = storage.defs
        self.readable = readable
        if table not in self.defs.tables:
            raise QueryError(f"unknown table {table!r}")
        self.table: TableDef = self.defs.tables[table]
        self.shared = shared
        self.base = self._alias(table, "t0") if alias else storage.physical(table)
        self._joins: dict[str, tuple[sa.FromClause, TableDef]] = {"": (self.base, self.table)}
        self._from: sa.FromClause = self.base
        self._root = ""  # where paths start: "" the base table; RULE... while an access rule compiles
        self.rows_ruled = False  # whether the user's access rule limits the rows (a count cannot take shortcuts)

    def column(self, path: str) -> tuple[sa.ColumnElement, FieldDef]:
        """The SQL column for a field path such as `state` or `account.primary_contact.email`."""
        root = self._root
        trusted = self.readable is None or root.startswith(RULE)
        parts = path.split(".")
        alias, tdef = self._joins[root]
        for i, part in enumerate(parts):
            field = tdef.field(part)
            if field is None:
                raise QueryError(f"{path}: table {tdef.name!r} has no field {part!r}")
            rule = True if trusted else _field_rule(self.readable, tdef.name, part)
            if rule is False:
                raise AccessDenied(f"{path}: no read access to field {tdef.name}.{part}, so it cannot be read, "
                                   "filtered or sorted on")
            # a field rule with a condition: the field reads as empty on the records it does not match
            # (in lists, filters and sorts alike), and a dot-walk through it walks to nothing there
            guard = None if rule is True else self._rule_on(alias, tdef, rule)
            if i == len(parts) - 1:
                if not field.stored:
                    raise QueryError(f"{path}: {field.type} fields cannot be queried")
                return (alias.c[part] if guard is None else sa.case((guard, alias.c[part]))), field
            if field.type != "reference":
                raise QueryError(f"{path}: {part!r} is not a reference, so it cannot be dot-walked")
            prefix = ".".join(parts[: i + 1])
            alias, tdef = self._join(f"{root}.{prefix}" if root else prefix, alias, field, trusted, guard)
        raise QueryError(f"empty field path {path!r}")

    def _join(self, prefix: str, parent: sa.FromClause, field: FieldDef, trusted: bool = False,
              guard: sa.ColumnElement | None = None) -> tuple[sa.FromClause, TableDef]:
        if prefix not in self._joins:
            target = self.defs.tables[field.reference]
            rule: Any = True
            if not trusted:
                rule = _rows(self.readable, target.name)
                if rule is False:
                    raise AccessDenied(f"{prefix}: no read access to {target.name!r}, so it cannot be dot-walked")
            alias = self._alias(target.name, f"t{len(self._joins)}")
            on = alias.c.sys_id == parent.c[field.name]
            if rule is not True:
                on = sa.and_(on, self._rule_on(alias, target, rule))
            if guard is not None:
                on = sa.and_(on, guard)
            self._from = self._from.outerjoin(alias, on)
            self._joins[prefix] = (alias, target)
        return self._joins[prefix]

    def _alias(self, table: str, name: str) -> sa.FromClause:
        return self.storage.alias(table, name) if self.shared else self.storage.physical(table).alias(name)

    def _rule_on(self, alias: sa.FromClause, target: TableDef, rule: Node) -> sa.ColumnElement:
        """A dot-walked table's access condition, for its join: on its own columns when it reads
        only them, else as `sys_id IN (the records it matches)` (a join's ON cannot reach later joins)."""
        resolved = resolve_dynamic(rule)
        if all("." not in path for path in fields_of(resolved)):  # a field comparison's other field too
            inner = Selection(self.storage, target.name, alias=False)
            inner.base = alias
            inner._joins[""] = (alias, target)
            return inner._compile(resolved)
        inner = Selection(self.storage, target.name)
        return alias.c.sys_id.in_(inner.select(inner.base.c.sys_id, where=resolved))

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
        rule = _rows(self.readable, self.table.name) if self.readable is not None else True
        if rule is False:
            raise AccessDenied(f"no read access to {self.table.name!r}")
        if rule is not True:  # compiled as the platform: the rule's own dot-walks need no access
            self.rows_ruled = True
            outer, self._root = self._root, RULE
            self._joins[RULE] = self._joins[""]
            try:
                clauses.append(self._compile(resolve_dynamic(rule)))
            finally:
                self._root = outer
        node = resolve_dynamic(node)
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
            return sa.and_(sa.true(), *parts)
        if isinstance(node, AnyOf):
            return sa.or_(sa.false(), *parts)
        raise QueryError(f"{node!r} cannot be part of a query (a property condition works in rules only)")

    def _term(self, term: Term) -> sa.ColumnElement:
        if term.field == TEXT_QUERY:
            return self._text_search(term)
        op = operator(term.op)
        if op is None:
            raise QueryError(f"{term.field}: unknown operator {term.op!r}")
        if op.change is not None:
            raise QueryError(f"{term.field}{op.token}: {op.token} compares a record before and after a write, so it "
                             "works in rule conditions only, not in a query")
        column, field = self.column(term.field)
        if op.field:
            return self._compared(op, term, column, field)
        found = meaning(term, field, display_of(self.defs.tables, field), self.defs.tables)
        parts = [self._check(check) for check in found.checks]
        if len(parts) == 1:
            return parts[0]
        return sa.or_(*parts) if found.any else sa.and_(*parts)

    def _compared(self, op: Operator, term: Term, column: sa.ColumnElement, field: FieldDef) -> sa.ColumnElement:
        """A comparison of two fields of the record (`sameas`, `gt_field`): the other one read as any path is,
        its dot-walks joined and its access checked."""
        other_column, other = self.column(other_path(term))
        compared(self.defs.tables, term, field, other)
        if op.ordered:
            column, other_column = ordered(column), ordered(other_column)
        return op.sql(column, other_column)

    def _text_search(self, term: Term) -> sa.ColumnElement:
        """`123TEXTQUERY321=words`: the record has every word (each as a prefix) in its text index."""
        from .. import textindex

        if term.op != "eq":
            raise QueryError(f"{TEXT_QUERY}: a keyword search takes = and the words")
        if not self.table.text_index:
            raise QueryError(f"{TEXT_QUERY}: table {self.table.name!r} has no text index (`text_index:` in its "
                             "definition), so it cannot be searched by keyword")
        return textindex.match(self.storage, self.base, self.table.name, str(term.value or ""))

    def _check(self, check: Check) -> sa.ColumnElement:
        column, _ = self.column(check.path)
        if check.text:
            column = text_of(column)
        elif check.op.ordered:
            column = ordered(column)
        return check.op.sql(column, check.value)

    def order_by(self, order: tuple[tuple[str, bool], ...]) -> list[sa.ColumnElement]:
        return [column.desc() if descending else column.asc() for column, descending in self.sort_keys(order)]

    def sort_keys(self, order: tuple[tuple[str, bool], ...]) -> list[tuple[sa.ColumnElement, bool]]:
        """The columns a read is ordered by, each with whether it is descending."""
        keys = []
        for path, descending in order:
            column, field = self.column(path)
            _refuse(path, field, "sorted on", field.ftype.sortable)
            keys.append((column, descending))
        if not keys:
            keys.append((self.base.c.sys_id, False))  # a stable order for paging when none is asked for
        # (after an explicit order, a sys_id tie-breaker would stop the database using that field's index)
        return keys


RULE = "\0rule"  # the join namespace of access rules' own dot-walks (never checked, never shared with the user's)


def _rows(readable: Readable | None, table: str) -> Any:
    """The user's row condition on a table: True (all), False (none) or a condition Node."""
    if readable is None:
        return True
    rows = getattr(readable, "rows", None)  # an access.Reader; a plain callable decides per table only
    return rows(table) if rows is not None else bool(readable(table))


def _field_readable(readable: Readable, table: str, field: str) -> bool:
    return _field_rule(readable, table, field) is not False


def _field_rule(readable: Readable, table: str, field: str) -> Any:
    """The user's field rule: True, False or the condition a record must match for its value to be read."""
    rule = getattr(readable, "field_rule", None)  # an access.Reader; a plain callable decides per table only
    return True if rule is None else rule(table, field)


def _refuse(path: str, field: FieldDef, use: str, allowed: bool) -> None:
    """A field whose type does not allow this use (its `queryable` or `sortable` flag): a password
    hash is never returned, so it cannot be filtered or sorted on either (a STARTSWITH probe would
    read it out one character at a time)."""
    if not allowed:
        raise QueryError(f"{path}: {field.type} fields cannot be {use}")


def select_rows(storage: Storage, table: str, query: Query, columns: list[str] | None = None,
                limit: int | None = None, offset: int = 0,
                readable: Readable | None = None, from_matches: bool = False) -> tuple[sa.Select, Selection]:
    """A SELECT of `columns` (paths; default every stored field) of the matching rows; every
    dot-walk (in columns, condition and order) through tables `readable` allows. `from_matches`
    (with a `limit`): the page is read from all the matches, found first (`_page_from_matches`)."""
    if not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"offset {offset} is out of range (0 to {MAX_OFFSET})")
    sel = Selection(storage, table, readable=readable, shared=True)
    paths = columns or [f.name for f in sel.table.stored_fields
                        if readable is None or _field_readable(readable, table, f.name)]
    if from_matches and limit is not None:
        return _page_from_matches(sel, query, paths, limit, offset), sel
    cols = [_named(sel.column(p)[0], p) for p in paths]
    where = sel.condition(query.where)
    order = sel.order_by(query.order)
    stmt = sa.select(*cols).select_from(sel.from_clause)
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.order_by(*order).offset(offset or None)
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt, sel


def _page_from_matches(sel: Selection, query: Query, paths: list[str], limit: int, offset: int) -> sa.Select:
    """A page read from all the matching rows: for a condition the caller has counted few matches of.

    A page is otherwise one SELECT ordered and limited, and PostgreSQL may read it by walking the
    index of the order and testing each row until the page is full. That is right when the matches
    are many. When they are few and the planner expects many (a keyword search's estimate is a
    guess: "case" and a word beginning "4242" were expected in 18,000 of a million records and are in
    111), the walk reads most of the table: 600 ms for a page whose count took 2 ms. Here the
    matches' keys and sort values are found first, in a subquery whose `OFFSET 0` keeps the planner
    from merging it with the order and the limit (so it is planned as the count is), sorted and
    cut to the page; only the page's rows are then read with their columns and dot-walks. The page
    costs about what the count did, whatever the planner expects."""
    inner = Selection(sel.storage, sel.table.name, readable=sel.readable)  # aliases of its own: a subquery
    where = inner.condition(query.where)
    keys = inner.sort_keys(query.order)
    matches = sa.select(inner.base.c.sys_id, *(column.label(f"k{i}") for i, (column, _) in enumerate(keys)))
    matches = matches.select_from(inner.from_clause)
    if where is not None:
        matches = matches.where(where)
    matches = matches.offset(0).subquery("matches")

    def ordered_by(source: sa.FromClause) -> list[sa.ColumnElement]:
        return [source.c[f"k{i}"].desc() if descending else source.c[f"k{i}"].asc()
                for i, (_, descending) in enumerate(keys)]

    page = (sa.select(matches).order_by(*ordered_by(matches)).limit(limit).offset(offset or None)
            .subquery("page"))
    cols = [_named(sel.column(p)[0], p) for p in paths]  # the outer read's joins: the page's rows only
    joined = page.join(sel.from_clause, sel.base.c.sys_id == page.c.sys_id)
    return sa.select(*cols).select_from(joined).order_by(*ordered_by(page))


def _named(column: sa.ColumnElement, path: str) -> sa.ColumnElement:
    """`column` as `path` in the result: a table's own column already has the name (a label for
    each of the 40 columns of a record costs a tenth of a one-record read)."""
    return column if isinstance(column, sa.Column) and column.name == path else column.label(path)


COUNT_OTHERS_LIMIT = 10_000


def count_rows(storage: Storage, table: str, query: Query, readable: Readable | None = None) -> sa.Select:
    """A count of the matching rows, an outermost statement (so its aliases are the storage's: Selection's `shared`)."""
    sel = Selection(storage, table, readable=readable, shared=True)
    where = sel.condition(query.where)
    stmt = sa.select(sa.func.count()).select_from(sel.from_clause)
    if query.where is None and where is not None and not sel.rows_ruled:
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
