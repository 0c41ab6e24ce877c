"""System properties for administrators: an input per property type, changes audited."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, g, redirect, render_template, request, url_for

from ...properties import render_value
from ...records import RecordError
from .. import db
from ..auth import connection, properties, records, rollback, runtime
from . import blueprint, login_required

TABLE = "sys_properties"


def _rows() -> dict[str, dict]:
    table = runtime().storage.physical(TABLE)
    rows = connection().execute(sa.select(table.c.sys_id, table.c.name, table.c.value, table.c.type,
                                                     table.c.description, table.c.sys_mod_count))
    return {r.name: dict(r._mapping) for r in rows}


@blueprint.route("/ui/properties", methods=["GET", "POST"], endpoint="properties")
@login_required
def properties_page():
    if not g.actor.is_admin:
        abort(403)
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
        items.append({"name": name, "type": ptype, "value": value, "description": declared.description if declared
                      else stored.get(name, {}).get("description") or "", "error": errors.get(name),
                      "choices": declared.choices if declared else (), "sys_id": stored.get(name, {}).get("sys_id")})
    return render_template("properties.html", items=items, actor=g.actor), (422 if errors else 200)



