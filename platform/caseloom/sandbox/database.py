"""DatabaseData: a script's `records` calls answered by the record service, as one user may read.

Kept apart from the rest of the sandbox so a worker process never loads database code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from ..access import SYSTEM, Actor
from ..definitions.model import FieldDef, TableDef
from ..query import All, Query, QueryError, Term
from ..records import AccessDenied, NotFound, RecordError, RecordService
from .data import DataError

REFUSALS = (AccessDenied, NotFound, QueryError, RecordError)


class DatabaseData:
    """Reads through `RecordService` for `actor` (its read access applies); values come back as
    plain JSON types: datetimes and decimals as strings, password fields never.

    `conn` reads inside the caller's transaction; `service` reads through a unit of work the
    caller already has (its connection and its actor)."""

    def __init__(self, runtime: Any = None, actor: Actor = SYSTEM, conn: sa.Connection | None = None, *,
                 service: RecordService | None = None):
        if runtime is None and service is None:
            raise TypeError("DatabaseData needs a runtime or a record service")
        self.runtime, self.actor, self.conn, self.service = runtime, actor, conn, service

    @contextmanager
    def _service(self) -> Iterator[RecordService]:
        if self.service is not None:
            yield self.service
            return
        if self.conn is not None:
            yield self.runtime.records(self.conn, self.actor)
            return
        with self.runtime.engine.connect() as conn:
            yield self.runtime.records(conn, self.actor)

    def query(self, table: str, equals: dict[str, Any]) -> list[dict]:
        terms = tuple(Term(field, "eq", value) for field, value in equals.items())
        where = None if not terms else terms[0] if len(terms) == 1 else All(terms)
        with self._service() as service:
            try:
                tdef = service.table(table, "read")
                rows = service.query(table, Query(where), [f.name for f in _readable(tdef, service)])
            except REFUSALS as exc:
                raise DataError(f"records.query({table!r}): {exc}") from None
        return [plain_record(tdef, row) for row in rows]

    def get(self, table: str, sys_id: str) -> dict | None:
        with self._service() as service:
            try:
                tdef = service.table(table, "read")
                rows = service.query(table, Query(Term("sys_id", "eq", sys_id)),
                                     [f.name for f in _readable(tdef, service)])
            except REFUSALS as exc:
                raise DataError(f"records.get({table!r}): {exc}") from None
        return plain_record(tdef, rows[0]) if rows else None


def service_data(service: RecordService) -> DatabaseData:
    """The DataSource of a unit of work: reads on its connection, as its actor may."""
    return DatabaseData(service=service)


def _readable(tdef: TableDef, service: RecordService | None = None) -> list[FieldDef]:
    """The fields a script may read: never a password; only those the actor's field rules allow."""
    return [f for f in tdef.stored_fields if f.type != "password"
            and (service is None or service.can_read_field(tdef.name, f.name))]


def plain_record(tdef: TableDef, row: dict) -> dict:
    """A row as a script sees it: str, int, float, bool or None for every readable field it holds."""
    return {f.name: plain_value(f, row.get(f.name)) for f in _readable(tdef) if f.name in row}


def plain_value(field: FieldDef, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return field.ftype.render(value)  # datetimes "YYYY-MM-DD HH:MM:SS", decimals "12.5", dates ISO
