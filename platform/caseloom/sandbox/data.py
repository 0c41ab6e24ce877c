"""Where a script's `records` calls are answered, in the parent: the DataSource shape and fixtures.

A worker never touches the database. Each `records.query` / `records.get` in a script is a
message to the parent, which answers it with plain data from the DataSource the caller gave
`run_script`. A DataSource raises DataError for a call it refuses; the script sees that as a
`RecordsError` it may catch. Any other exception is a fault of the caller's, not the script's:
the run is abandoned and the exception propagates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class DataError(Exception):
    """A records call the data source refuses (unknown table or field, no read access)."""


class DataSource(Protocol):
    def query(self, table: str, equals: dict[str, Any]) -> list[dict]:
        """Records of `table` whose fields equal `equals`, as plain JSON-able dicts."""
        ...

    def get(self, table: str, sys_id: str) -> dict | None:
        """One record of `table`, as a plain JSON-able dict, or None."""
        ...


def _text(value: Any) -> str:
    """A value as ServiceNow writes it in exports, so `state=1` matches "1" and `active=True` "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class FixtureData:
    """Records from a mapping of table name -> list of records (`caseloom script run --records`)."""

    def __init__(self, tables: Mapping[str, Any], source: str = "fixture"):
        if not isinstance(tables, Mapping):
            raise ValueError(f"{source}: expected a JSON object mapping table names to lists of records")
        self.tables: dict[str, list[dict]] = {}
        for name, rows in tables.items():
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise ValueError(f"{source}: {name!r} must be a list of records (JSON objects)")
            self.tables[str(name)] = [dict(row) for row in rows]

    @classmethod
    def from_file(cls, path: str | Path) -> FixtureData:
        try:
            return cls(json.loads(Path(path).read_text(encoding="utf-8")), source=str(path))
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None

    def _rows(self, table: str) -> list[dict]:
        if table not in self.tables:
            raise DataError(f"unknown table {table!r} (the fixture has {', '.join(sorted(self.tables)) or 'no tables'})")
        return self.tables[table]

    def query(self, table: str, equals: dict[str, Any]) -> list[dict]:
        rows = self._rows(table)
        fields = {field for row in rows for field in row}
        unknown = [field for field in equals if rows and field not in fields]
        if unknown:
            raise DataError(f"table {table!r} has no field {unknown[0]!r}")
        wanted = {field: _text(value) for field, value in equals.items()}
        return [dict(row) for row in rows if all(_text(row.get(f)) == v for f, v in wanted.items())]

    def get(self, table: str, sys_id: str) -> dict | None:
        return next((dict(row) for row in self._rows(table) if row.get("sys_id") == sys_id), None)
