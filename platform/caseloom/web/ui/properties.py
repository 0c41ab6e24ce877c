"""System properties for administrators: an input per property type, changes audited; a
property's declaration (type, default, description) edited through the Definitions area."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, g, redirect, render_template, request, url_for

from ...definitions.basics import parse_property_value
from ...definitions.changes import declaring_file
from ...definitions.model import bound_text
from ...definitions.yamledit import set_entry
from ...fieldtypes import FieldValueError
from ...properties import render_value
from ...records import RecordError
from .. import db, live_definitions
from ..auth import connection, properties, records, rollback, runtime
from . import admin_required, blueprint
from .definitions import review_rewrite

PROPERTY_TYPES = ("boolean", "integer", "decimal", "string", "list")

TABLE = "sys_properties"


def _rows() -> dict[str, dict]:
    table = runtime().storage.physical(TABLE)
    rows = connection().execute(sa.select(table.c.sys_id, table.c.name, table.c.value, table.c.type,
                                                     table.c.description, table.c.sys_mod_count))
    return {r.name: dict(r._mapping) for r in rows}


@blueprint.route("/ui/properties", methods=["GET", "POST"], endpoint="properties")
@admin_required
def properties_page():
    defs = runtime().defs
    errors: dict[str, str] = {}
    typed: dict[str, str] = {}
    if request.method == "POST":
        name = request.form["name"]
        declared = defs.properties.get(name)
        row = _rows().get(name)
        if row is None:
            abort(404)
        value = request.form.getlist("value")[-1] if declared and declared.type == "boolean" else request.form.get("value", "")
        if declared and declared.type == "list":
            value = ",".join(v.strip() for v in value.replace("\n", ",").split(",") if v.strip())
        try:
            records().update(TABLE, row["sys_id"], {"value": value})
        except RecordError as exc:
            rollback()
            errors[name], typed[name] = exc.message, value
        else:
            db.session.commit()
            flash(f"{name} saved; it applies from the next request.")
            return redirect(url_for("ui.properties") + f"#{name}")
    stored = _rows()
    current = properties()
    items = []
    for name in sorted(set(defs.properties) | set(stored)):
        declared = defs.properties.get(name)
        ptype = declared.type if declared else (stored.get(name, {}).get("type") or "string")
        value = typed.get(name, render_value(ptype, current.get(name)))
        items.append({"name": name, "type": ptype, "value": value, "range": declared.range_words if declared else "",
                      "description": declared.description if declared
                      else stored.get(name, {}).get("description") or "", "error": errors.get(name),
                      "choices": declared.choices if declared else (), "sys_id": stored.get(name, {}).get("sys_id"),
                      "file": declaring_file(defs, declared.location) if declared else None,
                      "line": declared.location.line if declared and declared.location else 1})
    return render_template("properties.html", items=items, actor=g.actor), (422 if errors else 200)


@blueprint.route("/ui/properties/<name>/declaration", methods=["GET", "POST"], endpoint="property_declaration")
@admin_required
def declaration(name: str):
    """A property's declaration as a small form; saving rewrites its entry in the declaring file
    and goes through the Definitions area's review and apply."""
    defs = runtime().defs
    declared = defs.properties.get(name) or abort(404)
    path = declaring_file(defs, declared.location)
    if path is None:
        abort(404, f"{name} is declared by the platform; its declaration is not edited here")
    text = live_definitions.store().texts()[path]
    values = request.form if request.method == "POST" else {
        "type": declared.type, "default": render_value(declared.type, declared.default),
        "description": declared.description, "choices": "\n".join(declared.choices),
        "min": bound_text(declared.minimum), "max": bound_text(declared.maximum)}

    def page(status: int = 200, errors: dict | None = None):
        return render_template("property_declaration.html", name=name, path=path, values=values, errors=errors or {},
                               types=PROPERTY_TYPES, line=declared.location.line), status

    if request.method == "GET":
        return page()
    spec, errors = _declaration(request.form)
    if errors:
        return page(422, errors)
    return review_rewrite(path, text, lambda t: set_entry(t, "properties", name, spec),
                          url_for("ui.properties") + f"#{name}", page)


def _declaration(form) -> tuple[dict, dict[str, str]]:
    """(YAML of a property declaration, errors by input) from the declaration form."""
    ptype = form.get("type", "")
    if ptype not in PROPERTY_TYPES:
        return {}, {"type": f"Choose one of {', '.join(PROPERTY_TYPES)}."}
    spec: dict = {"type": ptype}
    if form.get("default", "").strip():
        try:
            spec["default"] = parse_property_value(ptype, form["default"].strip())
        except FieldValueError as exc:
            return spec, {"default": f"Not {_a(ptype)}: {exc}."}
    if form.get("description", "").strip():
        spec["description"] = form["description"].strip()
    choices = [c.strip() for c in form.get("choices", "").splitlines() if c.strip()]
    if choices and ptype == "string":
        spec["choices"] = choices
    errors = {}
    for key in ("min", "max"):
        text = form.get(key, "").strip()
        if not text:
            continue
        if ptype not in ("integer", "decimal"):
            errors[key] = f"Only an integer or decimal property has a {key}imum."
            continue
        try:
            spec[key] = parse_property_value(ptype, text)
        except FieldValueError as exc:
            errors[key] = f"Not {_a(ptype)}: {exc}."
    if not errors and "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        errors["max"] = f"The maximum is below the minimum ({bound_text(spec['min'])})."
    for key, check in (("min", lambda d, b: d < b), ("max", lambda d, b: d > b)):
        if not errors and key in spec and "default" in spec and check(spec["default"], spec[key]):
            errors["default"] = f"The default is outside the range ({key}imum {bound_text(spec[key])})."
    return spec, errors


def _a(ptype: str) -> str:
    """`an integer`, `a decimal`: a type with its article."""
    return f"{'an' if ptype[0] in 'aeiou' else 'a'} {ptype}"
