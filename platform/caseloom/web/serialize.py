"""Records in ServiceNow's Table API shape: every value a string, references as links."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
            if field.stored:
                cols.append(path)
                display = self.display_path(path, field) if self.display != "false" else None
                if display:
                    cols.append(display)
        cols.append("sys_id")
        return list(dict.fromkeys(cols))

    def display_path(self, path: str, field: FieldDef) -> str | None:
        """The path of a reference's display value; None when there is none, or the user may not read
        the referenced table (its records' display values are theirs to hide: the value stays a sys_id)."""
        if field.type != "reference":
            return None
        target = self.tables.get(field.reference)
        if target is None or not target.display or (self.readable is not None and not self.readable(target.name)):
            return None
        return f"{path}.{target.display}"


def make_shape(tables: Mapping[str, TableDef], table: TableDef, fields_param: str | None, display: str | None,
               exclude_links: str | None, base_url: str, readable: Callable[[str], bool] | None = None) -> Shape:
    """A Shape from the sysparm_fields / sysparm_display_value / sysparm_exclude_reference_link
    parameters; unknown fields raise QueryError naming them."""
    display = (display or "false").lower()
    if display not in DISPLAY_MODES:
        raise QueryError(f"sysparm_display_value must be one of {', '.join(DISPLAY_MODES)}, not {display!r}")
    if fields_param:
        paths = list(dict.fromkeys(p.strip() for p in fields_param.split(",") if p.strip()))
    else:
        paths = [name for name, f in table.fields.items() if f.type != "password"]
    resolved: dict[str, FieldDef] = {}
    for path in paths:
        field = resolve_path(tables, table, path)
        if field is None:
            raise QueryError(f"sysparm_fields: {path!r} is not a field of {table.name!r}")
        resolved[path] = field
    return Shape(table, resolved, tables, display, (exclude_links or "false").lower() != "true", base_url, readable)


def render_record(shape: Shape, row: dict) -> dict:
    out = {}
    for path, field in shape.fields.items():
        if field.type == "password":
            continue
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
    display_text = (field.choice_label(raw) or raw) if field.choices and raw != "" else raw
    if shape.display == "true":
        return display_text
    return {"display_value": display_text, "value": raw}


def base_url() -> str:
    """Where absolute links point: CASELOOM_BASE_URL, or else the URL this request came to."""
    from flask import current_app, request

    return current_app.extensions["caseloom"].config.base_url or request.url_root
