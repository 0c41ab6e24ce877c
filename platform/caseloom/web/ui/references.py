"""References on forms and pickers: the type-ahead (with a field's qualifier, over what the form holds
now), a referenced record's preview card, a reference typed by name without JavaScript, and the picker
of a records input (its candidates, searched and paged)."""

from __future__ import annotations

from flask import abort, g, render_template, request

from ...actions import available_actions
from ...definitions.model import FieldDef, TableDef
from ...query import Query, Term
from ...records import AccessDenied, RecordError
from ..auth import records, runtime
from ..serialize import base_url, make_shape, record_name, render_record
from . import blueprint, login_required
from .lists import readable_columns, row_number


def _resolve_display(field: FieldDef, text: str) -> str:
    """A reference typed by its display value (no JavaScript): the one record that has it among those the
    field offers (its qualifier, over what the form posted); else a RecordError that says so in words
    ("no account named 'Acme 999'", "no contact named 'Jane Doe' where Account is Acme")."""
    target = runtime().defs.tables[field.reference]
    noun = target.label.lower()
    if not target.display:
        raise RecordError(field.name, f"choose the {noun} from the list")
    named = Term(target.display, "eq", text.strip())
    offered = qualifier_for(field, (request.view_args or {}).get("name") or field.table, request.form)
    rows = records().query(target.name, Query(_all_of(named, offered)), ["sys_id"], 2)
    if not rows and offered is not None and records().query(target.name, Query(named), ["sys_id"], 1):
        raise RecordError(field.name, f"no {noun} named {text.strip()!r} where {_sentence(target, offered)}")
    if not rows:
        raise RecordError(field.name, f"no {noun} named {text.strip()!r}")
    if len(rows) > 1:
        raise RecordError(field.name, f"more than one {noun} is named {text.strip()!r}: choose one from the list")
    return rows[0]["sys_id"]


@blueprint.get("/ui/reference/<table>/<field>")
@login_required
def reference_search(table: str, field: str):
    """Type-ahead for a reference field: the first ten records, by display value, of the referenced
    table whose display value (or number) contains what was typed, among those its qualifier allows
    for the values the form holds now (sent along, over the stored record named by `sys_id`). A record
    without a display value is never offered (it would be an empty option): saying so lets the
    database walk the display field's index, which holds only records with one, in the options'
    order, and stop at the tenth (a table's `contains_index` serves the rare matches)."""
    defs = runtime().defs
    tdef = defs.tables.get(table) or abort(404)
    fdef = tdef.field(field)
    if fdef is None or fdef.type != "reference":
        abort(404)
    target = defs.tables[fdef.reference]
    text = request.args.get(f"{field}__display", request.args.get("q", "")).strip()
    options = []
    if target.display and records().can(target.name, "read"):
        terms = [Term(target.display, "like", text)] if text else []
        if text and target.field("number") is not None and target.display != "number":
            from ...query import AnyOf

            terms = [AnyOf((terms[0], Term("number", "like", text)))]
        offered = qualifier_for(fdef, tdef.name, request.args)
        named = Term(target.display, "notempty", None)
        query = Query(_all_of(named, terms[0] if terms else None, offered), ((target.display, False),))
        rows = records().query(target.name, query, ["sys_id", target.display], 10)
        options = [{"sys_id": r["sys_id"], "display": r[target.display]} for r in rows]
    return render_template("_ref_options.html", options=options, field=field, text=text)


PREVIEW_FIELDS = 4  # fields a reference's preview card shows besides the record's name


PICK_PAGE = 10  # rows of a records picker per page


PICK_COLUMNS = 5  # columns of the picked table's list a picker shows


def _all_of(*nodes):
    """The conditions that are given, all of them (None when none is)."""
    given = tuple(n for n in nodes if n is not None)
    if len(given) < 2:
        return given[0] if given else None
    from ...query.conditions import All

    return All(given)


def _sentence(tdef: TableDef, node) -> str:
    from .filters import filter_sentence

    return filter_sentence(tdef, Query(node))


def bound_condition(node, tdef: TableDef, record: dict):
    """A condition whose values may be templates over `record` (a record of `tdef`, dot-walks read as
    needed), with them rendered: an empty value renders empty, as ServiceNow's `account=` matches records
    whose account is empty."""
    from ...effects.build import bind
    from ...effects.walks import walk_values

    def render(template) -> str:
        values = record
        if template.walks:
            values = {**record, **walk_values(records(), tdef, [record], template.walks)[0]}
        return template.render({"record": {k: "" if v is None else v for k, v in values.items()}})

    return bind(node, render)


def qualifier_for(field: FieldDef, table: str, values) -> object:
    """A reference field's qualifier for the record being edited on a form of `table`: its templates
    rendered over the stored record (`sys_id` in the URL) and the `values` the form holds now."""
    if field.qualifier is None:
        return None
    tdef, record = _editing_record(table, values)
    return bound_condition(field.qualifier, tdef, record)


def _editing_record(table: str, values) -> tuple[TableDef, dict]:
    """The record a form edits, as it holds it now: the stored values overlaid with those posted (a
    reference typed by name without JavaScript counts as the record it names, when exactly one does)."""
    defs = runtime().defs
    tdef, record = defs.tables[table], {}
    sys_id = request.args.get("sys_id", "")
    if sys_id not in ("", "-1"):
        try:
            record = records().get(table, sys_id) or {}
        except AccessDenied:
            record = {}
        tdef = defs.tables.get(record.get("sys_class_name"), tdef)
    for name, field in tdef.fields.items():
        if name not in values or field.system or field.ftype.hidden or field.ftype.journal:
            continue
        record[name] = values.getlist(name)[-1]
        if field.type == "reference" and not record[name] and values.get(f"{name}__display", "").strip():
            record[name] = _named(field, values[f"{name}__display"])
    return tdef, record


def _named(field: FieldDef, text: str) -> str:
    """The sys_id of the one record of a reference's table whose display value is `text` ("" if not one)."""
    target = runtime().defs.tables[field.reference]
    if not target.display or not records().can(target.name, "read"):
        return ""
    rows = records().query(target.name, Query(Term(target.display, "eq", text.strip())), ["sys_id"], 2)
    return rows[0]["sys_id"] if len(rows) == 1 else ""


@blueprint.app_template_global()
def ref_preview_id() -> str:
    """A fresh element id for one reference link's preview (the same record may be linked twice on a page)."""
    g.ref_previews = g.get("ref_previews", 0) + 1
    return f"ref-preview-{g.ref_previews}"


@blueprint.get("/ui/preview/<table>/<sys_id>")
@login_required
def reference_preview(table: str, sys_id: str):
    """A referenced record at a glance, for the card a reference link shows on hover or focus: its name
    and the first fields of its list in words. Nothing of it without read access (403), or if none (404)."""
    defs, service = runtime().defs, records()
    if table not in defs.tables:
        abort(404)
    if not service.can(table, "read"):
        abort(403)
    found = service.query(table, Query(Term("sys_id", "eq", sys_id)), ["sys_id", "sys_class_name"], 1)
    if not found:
        abort(404)
    tdef = defs.tables.get(found[0]["sys_class_name"], defs.tables[table])
    if not service.can(tdef.name, "read"):
        abort(403)
    name_fields = [n for n in ("number", tdef.display) if n and tdef.field(n) is not None]
    columns = [c for c in readable_columns(service, tdef) if c not in name_fields][:PREVIEW_FIELDS]
    shape = make_shape(defs.tables, tdef, ",".join(dict.fromkeys([*name_fields, *columns])), "all", "true",
                       base_url(), service.readable)
    row = service.query(tdef.name, Query(Term("sys_id", "eq", sys_id)), shape.columns(), 1)[0]
    rendered = render_record(shape, row)
    fields = [(shape.fields[c].label if "." not in c else c, _shown(rendered.get(c))) for c in columns]
    return render_template("_ref_preview.html", tdef=tdef, sys_id=sys_id, name=record_name(tdef, row),
                           fields=fields)


def _shown(cell) -> str:
    return cell.get("display_value", "") if isinstance(cell, dict) else (cell or "")


def record_or_abort(table: str, sys_id: str) -> tuple[TableDef, dict]:
    """A record the actor may read, with its own class's table; 404 (no such table or record) or 403."""
    defs = runtime().defs
    if table not in defs.tables:
        abort(404)
    try:
        record = records().get(table, sys_id)
    except AccessDenied:
        abort(403)
    if record is None:
        abort(404)
    return defs.tables.get(record.get("sys_class_name"), defs.tables[table]), record


@blueprint.get("/ui/pick/<table>/<sys_id>/<action>/<name>")
@login_required
def pick(table: str, sys_id: str, action: str, name: str):
    """A page of a records input's picker (its search, its next page), for htmx in the action's dialog."""
    service = records()
    tdef, record = record_or_abort(table, sys_id)
    spec = next((a for a in available_actions(service, tdef.name, record) if a.name == action), None)
    item = next((i for i in spec.inputs if i.name == name and i.type == "records"), None) if spec else None
    if item is None:
        abort(404)
    prefix = request.args.get("prefix", "action")
    if not prefix.replace("-", "").replace("_", "").isalnum():
        abort(400)
    picker = _picker(tdef, record, spec, item, request.args, prefix)
    return render_template("_pick_rows.html", picker=picker, tdef=tdef, record=record, a=spec, i=item, prefix=prefix)


def _picker(tdef: TableDef, record: dict, spec, item, args, prefix: str) -> dict:
    """What a records input's picker shows: the records a person may tick (its `candidates` for this
    record), narrowed by a search on their number, display value and text columns, a page at a time;
    the records ticked already (`args[item.name]`) stay ticked above the page."""
    defs, service = runtime().defs, records()
    target = defs.tables[item.table or tdef.name]
    q = args.get(f"{item.name}__q", "").strip()
    first = row_number(args.get(f"{item.name}__first"))
    picker = {"input": item.name, "target": target, "q": q, "first": first, "page": PICK_PAGE, "rows": [],
              "selected": [], "total": 0, "columns": [], "prefix": prefix,
              "url": f"/ui/action/{tdef.name}/{record['sys_id']}/{spec.name}",
              "fragment": f"/ui/pick/{tdef.name}/{record['sys_id']}/{spec.name}/{item.name}"}
    if not service.can(target.name, "read"):
        return picker
    columns = readable_columns(service, target)[:PICK_COLUMNS]
    shape = make_shape(defs.tables, target, ",".join(columns), "all", "true", base_url(), service.readable)
    picker["columns"] = [(c, shape.fields[c]) for c in columns]
    chosen = [v for v in dict.fromkeys(args.getlist(item.name)) if len(v) == 32 and v.isalnum()]
    offered = bound_condition(item.candidates, tdef, record) if item.candidates is not None else None
    where = _all_of(offered, _pick_search(target, columns, q), Term("sys_id", "notin", chosen) if chosen else None)
    order = (("number", True),) if target.field("number") is not None else ()
    wanted = list(dict.fromkeys(["sys_id", *shape.columns()]))
    picker["total"] = service.count(target.name, Query(where))  # first: few matches are read from themselves
    rows = service.query(target.name, Query(where, order), wanted, PICK_PAGE, first - 1, matching=picker["total"])
    picker["rows"] = [render_record(shape, r) | {"sys_id": r["sys_id"]} for r in rows]
    if chosen:
        kept = service.query(target.name, Query(_all_of(offered, Term("sys_id", "in", chosen))), wanted)
        picker["selected"] = [render_record(shape, r) | {"sys_id": r["sys_id"]} for r in kept]
    return picker


def _pick_search(target: TableDef, columns: list[str], text: str):
    """Records whose number, display value or a text column of their list contains `text`."""
    if not text:
        return None
    from ...query.conditions import AnyOf

    names = [n for n in ("number", target.display) if n and target.field(n) is not None]
    names += [c for c in columns if "." not in c and target.field(c).type in ("string", "text")]
    terms = tuple(Term(n, "like", text) for n in dict.fromkeys(names))
    return AnyOf(terms) if len(terms) > 1 else (terms[0] if terms else None)
