"""Records in ServiceNow's Table API shape: every value a string, references as links."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from ..definitions.model import FieldDef, TableDef
from ..definitions.tables import resolve_path
from ..query import QueryError

DISPLAY_MODES = ("false", "true", "all")


@dataclass(frozen=True)
class Shape:
    """How to render records: which paths, display values, reference links."""

    table: TableDef
    fields: Mapping[str, FieldDef]  # path -> the field it ends at, in output order
    tables: Mapping[str, TableDef]
    display: str = "false"
    links: bool = True
    base_url: str = ""
    readable: Callable[[str], bool] | None = None  # the user's read access: display values only from readable tables

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self.fields)

    def columns(self) -> list[str]:
        """The paths to SELECT: stored fields asked for, plus display paths of references."""
        cols: list[str] = []
        for path, field in self.fields.items():
            if field.stored and not field.ftype.hidden:
                cols.append(path)
                display = self.display_path(path, field) if self.display != "false" else None
                if display:
                    cols.append(display)
        cols.append("sys_id")
        if self.display != "false" and self.relabelled:
            cols.append("sys_class_name")  # a child class's own choice labels
        return list(dict.fromkeys(cols))

    @cached_property
    def relabelled(self) -> bool:
        """Whether a class below this table declares other choices for a choice field asked for."""
        own = [(path, f) for path, f in self.fields.items() if "." not in path and f.choices]
        return bool(own) and any(
            t.field(path) is not None and t.field(path).choices != f.choices
            for t in self.tables.values() if t.root == self.table.root and t.name != self.table.name
            for path, f in own)

    def choice_field(self, path: str, field: FieldDef, row: dict) -> FieldDef:
        """The field whose choices label a value: the record's own class's, on a list of a base table."""
        cls = row.get("sys_class_name")
        if "." in path or not cls or cls == self.table.name or cls not in self.tables:
            return field
        return self.tables[cls].field(path) or field

    def display_path(self, path: str, field: FieldDef) -> str | None:
        """The path of a reference's display value; None when there is none, or the user may not read
        the referenced table (its records' display values are theirs to hide: the value stays a sys_id),
        or the display field is hidden."""
        if field.type != "reference":
            return None
        target = self.tables.get(field.reference)
        if target is None or not target.display or (self.readable is not None and not self.readable(target.name)):
            return None
        shown = target.field(target.display)
        return f"{path}.{target.display}" if shown is not None and not shown.ftype.hidden else None


def make_shape(tables: Mapping[str, TableDef], table: TableDef, fields_param: str | None, display: str | None,
               exclude_links: str | None, base_url: str, readable: Callable[[str], bool] | None = None) -> Shape:
    """A Shape from the sysparm_fields / sysparm_display_value / sysparm_exclude_reference_link
    parameters; unknown fields raise QueryError naming them."""
    display = (display or "false").lower()
    if display not in DISPLAY_MODES:
        raise QueryError(f"sysparm_display_value must be one of {', '.join(DISPLAY_MODES)}, not {display!r}")
    links = (exclude_links or "false").lower()
    if links not in ("true", "false"):
        raise QueryError(f"sysparm_exclude_reference_link must be true or false, not {exclude_links[:40]!r}")
    if fields_param:
        paths = list(dict.fromkeys(p.strip() for p in fields_param.split(",") if p.strip()))
        if not paths:
            raise QueryError(f"sysparm_fields names no field ({fields_param[:40]!r}); leave it out for every field")
    else:
        paths = [name for name, f in table.fields.items() if not f.ftype.hidden]
    resolved: dict[str, FieldDef] = {}
    for path in paths:
        field = resolve_path(tables, table, path)
        if field is None:
            raise QueryError(f"sysparm_fields: {path!r} is not a field of {table.name!r}")
        if readable is None or _readable_path(tables, table, path, readable):
            resolved[path] = field  # a field the user may not read is left out, as ServiceNow does
    return Shape(table, resolved, tables, display, links != "true", base_url, readable)


def _readable_path(tables: Mapping[str, TableDef], table: TableDef, path: str, readable: Callable) -> bool:
    """Whether every field on a path may be read (its field rules); tables are checked where it is queried."""
    check = getattr(readable, "field", None)
    if check is None:
        return True
    tdef = table
    for part in path.split("."):
        field = tdef.field(part)
        if field is None or not check(tdef.name, part):
            return False
        if field.type == "reference" and field.reference in tables:
            tdef = tables[field.reference]
    return True


def render_record(shape: Shape, row: dict) -> dict:
    out = {}
    for path, field in shape.fields.items():
        if field.ftype.hidden:
            continue  # never read back, even when sysparm_fields names it
        value = row.get(path) if field.stored else None
        raw = field.render(value) if value is not None else ""
        out[path] = _render_value(shape, path, field, raw, row)
    return out


def _render_value(shape: Shape, path: str, field: FieldDef, raw: str, row: dict):
    if field.type == "reference":
        display_path = shape.display_path(path, field)
        display_raw = row.get(display_path) if display_path else None
        display_text = "" if display_raw is None else str(display_raw)
        link = f"{shape.base_url}api/now/table/{field.reference}/{raw}" if raw else ""
        if shape.display == "true":
            return display_text
        if shape.display == "all":
            out = {"display_value": display_text, "value": raw}
            if shape.links and raw:
                out["link"] = link
            return out
        return {"link": link, "value": raw} if shape.links and raw else raw
    if shape.display == "false":
        return raw
    if field.choices and raw != "":
        display_text = shape.choice_field(path, field, row).choice_label(raw) or field.choice_label(raw) or raw
    elif field.ftype.words is not None and raw != "":
        display_text = field.ftype.words(row.get(path))
    else:
        display_text = raw
    if shape.display == "true":
        return display_text
    return {"display_value": display_text, "value": raw}


def value_words(field: FieldDef | None, value: str | None, names: dict[tuple[str, str], str]) -> str:
    """What a person reads for a stored value: a choice's label, the referenced record's display value
    (`names`: display_names for the references), else the value itself."""
    if value in (None, "") or field is None:
        return value or ""
    if field.choices:
        return field.choice_label(value) or value
    if field.type == "reference":
        return names.get((field.reference, value), value)
    if field.ftype.words is not None:
        try:
            return field.ftype.words(field.parse(value))
        except ValueError:
            return value
    return value


NOT_READABLE, GONE = "(a record you may not read)", "(a deleted record)"


def audit_names(service, tdef: TableDef, rows: Iterable[Mapping]) -> dict[tuple[str, str], str]:
    """The display values of the records that audit rows' old and new values of references name (for
    change_words), in one query per referenced table; a record the user may not read, or one since
    deleted, in words, never its sys_id."""
    wanted: dict[str, set[str]] = {}
    for r in rows:
        field = tdef.field(r["fieldname"])
        if field is not None and field.type == "reference":
            wanted.setdefault(field.reference, set()).update(v for v in (r["oldvalue"], r["newvalue"]) if v)
    names = display_names(service, wanted)
    for table, ids in wanted.items():
        unnamed = {i for i in ids if (table, i) not in names}
        if unnamed and table in service.defs.tables:
            there = service.existing_ids(table, unnamed)
            names.update(((table, i), NOT_READABLE if i in there else GONE) for i in unnamed)
    return names


def change_words(tdef: TableDef, row: Mapping, names: dict[tuple[str, str], str]) -> str:
    """One audited change in words: "State changed from Open to Awaiting Info", "Assigned to set to
    Alex Agent", "Assigned to emptied (was Alex Agent)"."""
    field = tdef.field(row["fieldname"])
    label = field.label if field is not None else row["fieldname"]
    old, new = value_words(field, row["oldvalue"], names), value_words(field, row["newvalue"], names)
    if not new:
        return f"{label} emptied (was {old})"
    return f"{label} changed from {old} to {new}" if old else f"{label} set to {new}"


def record_name(tdef: TableDef | None, record: dict) -> str:
    """How a person names a record: its number, else its display value, else a short sys_id."""
    if tdef is not None:
        for key in ("number", tdef.display):
            if key and record.get(key) not in (None, ""):
                return str(record[key])
    return f"{str(record.get('sys_id', ''))[:8]}…"


def display_names(service, wanted: Mapping[str, set[str]]) -> dict[tuple[str, str], str]:
    """(table, sys_id) -> the display value of each record `wanted` names (table -> sys_ids): one
    query per table the user may read; records of other tables, or without a display value, are left out."""
    from ..query import Query, Term

    names = {}
    for table, ids in wanted.items():
        target = service.defs.tables.get(table)
        if target is None or not target.display or not ids or not service.can(table, "read"):
            continue
        for row in service.query(table, Query(Term("sys_id", "in", sorted(ids))), ["sys_id", target.display]):
            if row.get(target.display) not in (None, ""):
                names[(table, row["sys_id"])] = str(row[target.display])
    return names


def base_url() -> str:
    """Where absolute links point: CASELOOM_BASE_URL, or else the URL this request came to."""
    from flask import current_app, request

    return current_app.extensions["caseloom"].config.base_url or request.url_root
