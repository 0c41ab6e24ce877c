"""A column's value as the text the API shows, in SQL, alike on SQLite and PostgreSQL.

The text operators (LIKE and friends) compare a field's text: `true`/`false` for a boolean,
`1.5` for a decimal, `2024-01-02 03:04:05` for a date-time, as `FieldType.render` writes it in
Python. A plain CAST would not do: SQLite casts a boolean to `1`, a decimal to `1.0e-06`, and
keeps a date-time's microseconds; PostgreSQL casts a decimal to `1.500000`. Which expression a
column needs follows from its SQL type, so a new field type with a known column type needs
nothing here.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement


class _Text(FunctionElement):
    """A column's text: compiled per dialect below."""

    type = sa.String()
    inherit_cache = True


class _DecimalText(_Text):
    """A decimal without trailing zeros (`1.5`, `2`, `0.000001`); its second argument is the scale."""

    name = "decimal_text"
    inherit_cache = True  # SQLAlchemy asks each subclass


class _DateText(_Text):
    name = "date_text"
    inherit_cache = True  # SQLAlchemy asks each subclass


class _DateTimeText(_Text):
    name = "datetime_text"
    inherit_cache = True  # SQLAlchemy asks each subclass


class _Binary(_Text):
    """A text column compared by code point (PostgreSQL's collation may order `a` before `B`)."""

    name = "binary_text"
    inherit_cache = True  # SQLAlchemy asks each subclass


def _arg(element, compiler, **kw) -> str:
    return compiler.process(list(element.clauses)[0], **kw)


@compiles(_DecimalText)
def _decimal_default(element, compiler, **kw):
    return f"rtrim(rtrim(CAST({_arg(element, compiler, **kw)} AS VARCHAR), '0'), '.')"


@compiles(_DecimalText, "sqlite")
def _decimal_sqlite(element, compiler, **kw):
    # Stored as a float: printed with the scale, as SQLAlchemy reads it back (printf() prints a NULL as 0).
    scale = list(element.clauses)[1].name
    value = _arg(element, compiler, **kw)
    return f"CASE WHEN {value} IS NULL THEN NULL ELSE rtrim(rtrim(printf('%.{scale}f', {value}), '0'), '.') END"


@compiles(_DateText)
def _date_default(element, compiler, **kw):
    return f"to_char({_arg(element, compiler, **kw)}, 'YYYY-MM-DD')"


@compiles(_DateText, "sqlite")
def _date_sqlite(element, compiler, **kw):  # stored as YYYY-MM-DD text
    return f"CAST({_arg(element, compiler, **kw)} AS VARCHAR)"


@compiles(_DateTimeText)
def _datetime_default(element, compiler, **kw):
    return f"to_char({_arg(element, compiler, **kw)}, 'YYYY-MM-DD HH24:MI:SS')"


@compiles(_DateTimeText, "sqlite")
def _datetime_sqlite(element, compiler, **kw):  # stored as YYYY-MM-DD HH:MM:SS.ffffff text
    return f"substr({_arg(element, compiler, **kw)}, 1, 19)"


@compiles(_Binary)
def _binary_default(element, compiler, **kw):
    return _arg(element, compiler, **kw)


@compiles(_Binary, "postgresql")
def _binary_postgresql(element, compiler, **kw):
    return f'({_arg(element, compiler, **kw)} COLLATE "C")'


def text_of(column: ColumnElement) -> ColumnElement:
    """The column's values as the API's text; a column type with no known text is a TypeError."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return sa.case((column == sa.true(), "true"), (column == sa.false(), "false"))
    if isinstance(kind, sa.DateTime):
        return _DateTimeText(column)
    if isinstance(kind, sa.Date):
        return _DateText(column)
    if isinstance(kind, sa.Integer):
        return sa.cast(column, sa.String)
    if isinstance(kind, sa.Numeric):
        return _DecimalText(column, sa.literal_column(str(int(kind.scale or 0))))
    if isinstance(kind, sa.String):
        return column
    raise TypeError(f"no text form for a column of type {kind!r}")


def ordered(column: ColumnElement) -> ColumnElement:
    """The column as `<` and friends compare it: text by code point on every database."""
    return _Binary(column) if isinstance(column.type, sa.String) else column
