"""A form's similar lists (a table's `similar:`; caseloom.similar): the records most like this one, each
with its score, an Add button where the list names an action, and the suggestion a list raises."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import abort, redirect, render_template, request, url_for

from ... import similar
from ...actions import available_actions
from ...definitions.model import TableDef
from ...query.evaluate import evaluate
from ..auth import properties, records, runtime
from ..serialize import base_url, make_shape, render_record
from . import blueprint, login_required
from .lists import readable_columns
from .references import record_or_abort


def similar_panels(tdef: TableDef, record: dict, offered: list) -> tuple[list[dict], list[dict]]:
    """The similar lists shown on `record`'s form (those whose `when` it meets) and the suggestions they
    raise, each through the user's read access."""
    if not tdef.similar or not tdef.text_index:
        return [], []
    service, rt, props = records(), runtime(), properties()
    actions = {a.name: a for a in offered}
    weighted = similar.weights_of(rt.storage, service.conn, tdef.name, record)  # shared by every list's search
    panels, suggestions = [], []
    for sdef in tdef.similar:
        if sdef.when is not None and not evaluate(sdef.when, record):
            continue
        other = rt.defs.tables[sdef.table]
        if not service.can(other.name, "read"):
            continue
        columns = readable_columns(service, other)
        shape = make_shape(rt.defs.tables, other, ",".join(["sys_id", *columns]), "all", "true", base_url(),
                           service.readable)
        found = similar.listed(rt.storage, service.conn, sdef, record, props, service.readable, shape.columns(),
                               weighted)
        panels.append({
            "def": sdef, "table": other, "min_score": similar.setting(props, sdef.min_score),
            "columns": [(c, shape.fields[c]) for c in columns],
            "rows": [render_record(shape, m.row) | {"sys_id": m.sys_id, "score": m.score} for m in found],
            "add": sdef.add_action if sdef.add_action in actions else None,
        })
        found_suggestion = similar.suggestion(rt.storage, service.conn, sdef, record, props, service.readable,
                                              exclude=record["sys_id"], weighted=weighted)
        if found_suggestion is not None:
            spec = actions.get(found_suggestion.action or "")
            link = None
            if spec is not None:
                text_input = next((i.name for i in spec.inputs if i.type in ("text", "string")), None)
                query = urlencode({text_input: found_suggestion.message}) if text_input else ""
                link = f"/ui/action/{tdef.name}/{record['sys_id']}/{spec.name}" + (f"?{query}" if query else "")
            suggestions.append({"message": found_suggestion.message, "link": link,
                                "label": spec.label if spec is not None else None, "list": sdef.name})
    return panels, suggestions


@blueprint.get("/ui/similar/<table>/<sys_id>")
@login_required
def similar_page(table: str, sys_id: str):
    """A form's similar lists and suggestions, asked for by htmx once the form has loaded (the suggestions
    swapped in above the form); followed without JavaScript, the form with them."""
    tdef, record = record_or_abort(table, sys_id)
    if not request.headers.get("HX-Request"):
        return redirect(url_for("ui.dispatch", name=tdef.name, sys_id=sys_id, similar=1))
    if not tdef.similar:
        abort(404)
    panels, suggestions = similar_panels(tdef, record, available_actions(records(), tdef.name, record))
    return render_template("_similar_all.html", tdef=tdef, record=record, similar=panels, suggestions=suggestions)
