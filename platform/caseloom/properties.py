"""System properties: declared in YAML, stored in sys_properties, read fresh on every request."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .definitions.basics import parse_property_value
from .definitions.model import Definitions, PropertyDef, TableDef
from .fieldtypes import FieldValueError
from .records import RecordError, RecordService, validator
from .storage import Storage

TABLE = "sys_properties"


def render_value(ptype: str, value: Any) -> str:
    if ptype == "list":
        return ",".join(str(v) for v in value or [])
    if ptype == "boolean":
        return "true" if value else "false"
    return "" if value is None else str(value)


class Properties:
    """Typed values of the system properties as the database holds them now.

    Built per unit of work (a request, a job) so a change applies to the next one without
    a restart; reads every property in one query on first use.
    """

    def __init__(self, defs: Definitions, storage: Storage, conn: sa.Connection):
        self.defs, self.storage, self.conn = defs, storage, conn
        self._rows: dict[str, tuple[str | None, str | None]] | None = None

    def _load(self) -> dict[str, tuple[str | None, str | None]]:
        if self._rows is None:
            stmt = self.storage.cache.get(("properties", "all"))
            if stmt is None:  # built once per definitions set: every unit of work reads the properties
                table = self.storage.physical(TABLE)
                stmt = self.storage.cache[("properties", "all")] = sa.select(table.c.name, table.c.value, table.c.type)
            self._rows = {name: (value, ptype) for name, value, ptype in self.conn.execute(stmt)}
        return self._rows

    def get(self, name: str) -> Any:
        declared = self.defs.properties.get(name)
        stored = self._load().get(name)
        if stored is None:
            if declared is None:
                raise KeyError(f"unknown system property {name!r}")
            return list(declared.default) if isinstance(declared.default, tuple) else declared.default
        value, stored_type = stored
        ptype = declared.type if declared else (stored_type or "string")
        try:
            return parse_property_value(ptype, value)
        except FieldValueError:
            if declared is None:
                return value
            return list(declared.default) if isinstance(declared.default, tuple) else declared.default

    def items(self) -> dict[str, Any]:
        names = set(self.defs.properties) | set(self._load())
        return {name: self.get(name) for name in sorted(names)}


def seed_properties(service: RecordService) -> int:
    """Add a sys_properties row for each declared property that has none, and bring rows whose
    declaration changed (type, description) in line; values are kept unless they no longer fit
    the declaration (its type, choices or range), when the default replaces them. Returns the
    number of rows added."""
    table = service.storage.physical(TABLE)
    existing = {r.name: r for r in service.conn.execute(sa.select(table.c.sys_id, table.c.name, table.c.type,
                                                                     table.c.value, table.c.description))}
    rows = [
        {"name": p.name, "type": p.type, "value": render_value(p.type, p.default), "description": p.description}
        for p in service.defs.properties.values() if p.name not in existing
    ]
    for p in service.defs.properties.values():
        row = existing.get(p.name)
        if row is not None and ((row.type, row.description or "") != (p.type, p.description)
                                or not _fits(p, row.value)):
            service.update(TABLE, row.sys_id, {"type": p.type, "description": p.description,
                                               "value": _fitting(p, row.value)})
    return service.insert_many(TABLE, rows) if rows else 0


def _fits(declared: PropertyDef, value: str | None) -> bool:
    """Whether a stored value is one the declaration allows: its type, its choices, its range."""
    try:
        parsed = parse_property_value(declared.type, value)
    except FieldValueError:
        return False
    if declared.choices and parsed not in declared.choices:
        return False
    return not (declared.type in ("integer", "decimal") and declared.out_of_range(parsed))


def _fitting(declared: PropertyDef, value: str | None) -> str:
    """A stored value as the declared type renders it, or the default when it does not fit."""
    if not _fits(declared, value):
        return render_value(declared.type, declared.default)
    return render_value(declared.type, parse_property_value(declared.type, value))


@validator(TABLE)
def _check_property_value(service: RecordService, tdef: TableDef, record: dict, before: dict | None) -> None:
    """A value must fit its property's declared type; the declared type itself is fixed."""
    declared = service.defs.properties.get(record.get("name"))
    ptype = declared.type if declared else (record.get("type") or "string")
    if declared and record.get("type") not in (None, declared.type):
        raise RecordError("type", f"property {declared.name} is declared as {declared.type}")
    try:
        parsed = parse_property_value(ptype, record.get("value"))
    except FieldValueError as exc:
        raise RecordError("value", f"not a valid {ptype} for {record.get('name')}: {exc}") from None
    if declared and declared.choices and ptype == "string" and parsed not in declared.choices:
        raise RecordError("value", f"must be one of {', '.join(declared.choices)}")
    if declared and ptype in ("integer", "decimal") and (problem := declared.out_of_range(parsed)):
        raise RecordError("value", f"{problem} for {declared.name}")
    if declared and ptype == "list":
        _check_field_names(service.defs, declared.name, parsed)
    if declared is not None:  # kept as the type writes it: "yes" is stored as true, " 010" as 10
        record["value"] = render_value(ptype, parsed)


def _check_field_names(defs: Definitions, name: str, items: list) -> None:
    """A list property that effects read as field names (`fields_property`) names fields of their tables: a
    name none has would be left out of every copy without a word."""
    from .effects.builtin import field_list_properties

    for table in field_list_properties(defs).get(name, ()):
        tdef = defs.tables[table]
        unknown = [str(item) for item in items if tdef.field(str(item)) is None]
        if unknown:
            are = "is not a field" if len(unknown) == 1 else "are not fields"
            raise RecordError("value", f"{', '.join(map(repr, unknown))} {are} of {table!r}; {name} names the "
                                       f"fields its copies take")
