"""Splitting work by key ranges, for jobs that several workers run at once (caseloom.jobs.slices),
and the values a slice carries between processes. No job machinery here: effects use it too."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import sqlalchemy as sa


def worth_slicing(conn: sa.Connection, rows: int, size: int) -> bool:
    """Whether `rows` of work are worth slices of `size`: on PostgreSQL, at least two of them."""
    return conn.dialect.name == "postgresql" and rows >= 2 * size


def bounds(conn: sa.Connection, key: sa.ColumnElement, where: sa.ColumnElement, size: int) -> list[tuple[str, str | None]]:
    """Key ranges (after, upto] of `size` rows each over the rows `where` picks, in `key` order; the
    last is open-ended (upto None), so rows added after planning are not left out."""
    numbered = sa.select(key.label("k"), sa.func.row_number().over(order_by=key).label("n"),
                         sa.func.count().over().label("rows")).where(where).subquery()
    cuts = conn.execute(sa.select(numbered.c.k).where(numbered.c.n % size == 0, numbered.c.n < numbered.c.rows)
                        .order_by(numbered.c.k)).scalars().all()
    edges: list[str | None] = ["", *cuts]
    ranges = [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
    return [*ranges, (edges[-1] or "", None)]


# -- values a slice carries: JSON with the types records hold ---------------------------------------------

def encode(values: dict[str, Any]) -> dict[str, Any]:
    """Record values as JSON: datetimes, dates and decimals tagged, so `decode` gives them back."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dt.datetime):
            value = {"$datetime": value.isoformat()}
        elif isinstance(value, dt.date):
            value = {"$date": value.isoformat()}
        elif isinstance(value, decimal.Decimal):
            value = {"$decimal": str(value)}
        out[name] = value
    return out


def decode(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict) and len(value) == 1:
            (tag, text), = value.items()
            if tag == "$datetime":
                value = dt.datetime.fromisoformat(text)
            elif tag == "$date":
                value = dt.date.fromisoformat(text)
            elif tag == "$decimal":
                value = decimal.Decimal(text)
        out[name] = value
    return out
