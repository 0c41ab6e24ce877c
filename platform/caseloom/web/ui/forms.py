"""Forms of any table: inputs per field type, activity, related lists, history, actions, saving."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import abort, current_app, flash, g, redirect, render_template, request, url_for

from ...actions import available_actions, run_action
from ...definitions.model import FieldDef, TableDef
from ...effects import EffectFailed
from ...query import Query, Term
from ...records import AccessDenied, Conflict, NotFound, RecordError
from .. import db
from ..auth import connection, records, rollback, runtime
from ..serialize import base_url, display_names, make_shape, record_name, render_record
from . import blueprint, login_required
from .lists import readable_columns, row_number
from .members import member_panel, running_job

RELATED_PAGE = 10


@dataclass
class Widget:
    """One field on a form: what to show and how."""

    field: FieldDef
    value: str  # the raw value as the input holds it
    display: str  # what a person reads (choice label, referenced record's display value)
    read_only: bool
    mandatory: bool
    hidden: bool
    error: str | None = None

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def input(self) -> str:
        return self.field.ftype.input


def _lifecycle_flags(tdef: TableDef, record: dict) -> tuple[set, set, set, str | None]:
    lifecycle = runtime().defs.lifecycle(tdef.name)
    if lifecycle is None:
        return set(), set(), set(), None
    state = lifecycle.state(record.get(lifecycle.field))
    if state is None:
        return set(), set(), set(), lifecycle.field
    return set(state.read_only), set(state.mandatory), set(state.hidden), lifecycle.field


def _input_value(field: FieldDef, cell) -> tuple[str, str]:
    """(raw value for the input, display text) from a rendered API cell."""
    if isinstance(cell, dict):
        raw, display = cell.get("value", ""), cell.get("display_value", "")
    else:
        raw = display = cell or ""
    if field.ftype.input == "datetime-local" and raw:
        raw = raw.replace(" ", "T")[:16]
    return raw, display


def _widgets(tdef: TableDef, rendered: dict, record: dict, new: bool, can_write: bool,
             typed: dict | None = None, errors: dict | None = None) -> dict[str, Widget]:
    read_only, mandatory, hidden, lifecycle_field = _lifecycle_flags(tdef, record)
    widgets = {}
    for name, field in tdef.fields.items():
        if field.ftype.hidden:
            continue  # never read back: a password has no widget to show it in
        raw, display = _input_value(field, rendered.get(name, ""))
        if typed is not None and name in typed:
            raw = display = typed[name]
        locked = (field.system or field.read_only or name in read_only or not can_write
                  or (name == lifecycle_field and not new))
        widgets[name] = Widget(field, raw, display, locked, field.mandatory or name in mandatory, name in hidden,
                               (errors or {}).get(name))
    return widgets


def _sections(tdef: TableDef, widgets: dict[str, Widget]) -> list[tuple[str, list[Widget]]]:
    if tdef.form:
        sections = [(s.title, [widgets[f] for f in s.fields if f in widgets and not widgets[f].field.ftype.journal])
                    for s in tdef.form]
    else:
        sections = [("", [w for w in widgets.values() if not w.field.system and not w.field.ftype.journal])]
    return [(title, items) for title, items in sections if items]


def _load(tdef: TableDef, sys_id: str) -> tuple[dict, dict]:
    defs = runtime().defs
    shape = make_shape(defs.tables, tdef, None, "all", "true", base_url(), records().readable)
    rows = records().query(tdef.name, Query(Term("sys_id", "eq", sys_id)), shape.columns(), 1)
    if not rows:
        abort(404)
    return render_record(shape, rows[0]), rows[0]


def form(table: str, typed: dict | None = None, errors: dict | None = None, conflict: dict | None = None,
         status: int = 200):
    defs = runtime().defs
    if table not in defs.tables:
        abort(404)
    service = records()
    try:
        service.table(table, "read")
    except AccessDenied:
        abort(403)
    if request.method == "POST" and typed is None:
        return save(table)
    sys_id = request.args.get("sys_id", "-1")
    new = sys_id == "-1"
    tdef = defs.tables[table]
    if new:
        if not service.can(table, "create"):
            abort(403)
        rendered, record = {}, {}
        for name, field in tdef.fields.items():
            if field.default is not None and not field.system:
                rendered[name] = field.render(field.default)
                record[name] = field.default
    else:
        rendered, record = _load(tdef, sys_id)
        tdef = defs.tables.get(record.get("sys_class_name"), tdef)
    can_write = service.can(tdef.name, "create" if new else "write")
    widgets = _widgets(tdef, rendered, record, new, can_write, typed, errors)
    context = {
        "tdef": tdef, "record": record, "rendered": rendered, "new": new, "sections": _sections(tdef, widgets),
        "journal_widgets": [w for w in widgets.values() if w.field.ftype.journal] if can_write else [],
        "can_write": can_write, "errors": errors or {}, "conflict": conflict, "actor": g.actor,
        "actions": [] if new else available_actions(service, tdef.name, record),
        "activity": [] if new else _activity(tdef, sys_id),
        "history": [] if new else _history(tdef, sys_id),
        "related": [] if new else [_related(tdef, record, i) for i in range(len(tdef.related_lists))],
        "parents": [] if new else _parents(tdef, record),
        "can_delete": not new and service.can(tdef.name, "delete"),
        "job": None if new else running_job(tdef.name, sys_id),
        "members": None if new else member_panel(tdef.name, record),
        "member_list_name": getattr(runtime().defs.member_list_for(tdef.name), "name", ""),
    }
    return render_template("form.html", **context), status


def _form_values(tdef: TableDef, record: dict) -> dict:
    """The values the form posted for fields a person may change."""
    read_only, _, _, lifecycle_field = _lifecycle_flags(tdef, record)
    values = {}
    new = not record
    for name, field in tdef.fields.items():
        if field.system or field.read_only or field.ftype.hidden or name in read_only:
            continue
        if name == lifecycle_field and not new:
            continue
        if name not in request.form:
            continue
        value = request.form.getlist(name)[-1]  # checkboxes post a hidden "false" before "true"
        if field.type == "reference" and not value and request.form.get(f"{name}__display"):
            value = _resolve_display(field, request.form[f"{name}__display"])
        if field.ftype.journal and not value.strip():
            continue
        values[name] = value
    return values


def _field_problems(tdef: TableDef, values: dict, record: dict) -> dict[str, str]:
    """What is wrong with each value a form posted, field by field: a value its type refuses, and a
    mandatory field left empty (the write path checks them again, and everything else, when it saves)."""
    from ...fieldtypes import FieldValueError

    problems = {}
    for name, value in values.items():
        field = tdef.field(name)
        if field is None or field.ftype.journal:
            continue
        try:
            parsed = field.parse(value)
        except FieldValueError as exc:
            problems[name] = str(exc)
            continue
        if field.choices and parsed not in (None, "") and field.choice_label(parsed) is None:
            problems[name] = f"{value!r} is not one of the choices ({', '.join(label for _, label in field.choices)})"
        elif field.mandatory and parsed in (None, "") and (not record or name in values):
            problems[name] = "is mandatory"
    if not record:  # a new record: mandatory fields the form did not post at all
        for name, field in tdef.fields.items():
            numbered = tdef.number is not None and name == "number"
            if field.mandatory and not (field.system or field.read_only or field.ftype.journal or numbered) \
                    and name not in values and field.default is None:
                problems.setdefault(name, "is mandatory")
    return problems


def _resolve_display(field: FieldDef, text: str) -> str:
    """A reference typed by its display value (no JavaScript): the one record that has it; else a
    RecordError that says so in words ("no account named 'Acme 999'")."""
    target = runtime().defs.tables[field.reference]
    noun = target.label.lower()
    if not target.display:
        raise RecordError(field.name, f"choose the {noun} from the list")
    rows = records().query(target.name, Query(Term(target.display, "eq", text.strip())), ["sys_id"], 2)
    if not rows:
        raise RecordError(field.name, f"no {noun} named {text.strip()!r}")
    if len(rows) > 1:
        raise RecordError(field.name, f"more than one {noun} is named {text.strip()!r}: choose one from the list")
    return rows[0]["sys_id"]


def save(table: str):
    service = records()
    defs = runtime().defs
    sys_id = request.args.get("sys_id", "-1")
    tdef = defs.tables[table]
    record = {} if sys_id == "-1" else (service.get(table, sys_id) or abort(404))
    if record:
        tdef = defs.tables.get(record["sys_class_name"], tdef)
    try:
        values = _form_values(tdef, record)
    except RecordError as exc:  # a reference typed by a name no record has
        typed = {k: v for k, v in request.form.items() if tdef.field(k) and not tdef.field(k).ftype.journal}
        return form(table, typed, {exc.field or "__all__": exc.message}, status=422)
    typed = {k: v for k, v in values.items() if not tdef.field(k).ftype.journal}
    problems = _field_problems(tdef, values, record)
    if problems:  # every field's mistake at once, before anything is written
        return form(table, typed, problems, status=422)
    expected = request.form.get("sys_mod_count", "")
    try:
        if sys_id == "-1":
            saved = service.insert(tdef.name, values)
        else:
            saved = service.update(tdef.name, sys_id, values,
                                   expected_mod_count=int(expected) if expected.isdigit() else None)
    except RecordError as exc:
        rollback()
        return form(table, typed, {exc.field or "__all__": exc.message}, status=422)
    except Conflict as exc:
        rollback()
        since = int(expected) if expected.isdigit() else 0
        return form(table, typed, {}, {"message": str(exc), "changes": _history(tdef, sys_id, after=since)}, status=409)
    except AccessDenied:
        abort(403)
    db.session.commit()
    flash(f"{tdef.label} {saved.get('number') or saved.get(tdef.display or 'sys_id') or ''} saved.")
    return redirect(url_for("ui.dispatch", name=tdef.name, sys_id=saved["sys_id"]))


def _parents(tdef: TableDef, record: dict) -> list[dict]:
    """The records this one is a child of, through a table's own related list of children (a work
    order's sub-orders: `parent`): shown as a banner that links up ("Part of work order WO0001234: Leak")."""
    defs, service = runtime().defs, records()
    lineage = set(defs.lineage(tdef.name))
    out = []
    for owner in (defs.tables[name] for name in defs.lineage(tdef.name)):
        for spec in owner.related_lists:
            parent_id = record.get(spec.field)
            if spec.table not in lineage or not parent_id or any(p["sys_id"] == parent_id for p in out):
                continue
            try:
                parent = service.get(owner.name, parent_id)
            except AccessDenied:
                continue
            if parent is None:
                continue
            ptdef = defs.tables.get(parent.get("sys_class_name"), owner)
            out.append({"sys_id": parent_id, "table": ptdef.name, "label": ptdef.label.lower(),
                        "name": record_name(ptdef, parent), "title": _title(ptdef, parent)})
    return out


def _title(tdef: TableDef, record: dict) -> str:
    """A record's title: the first text column of its list that is not its display field."""
    for name in tdef.list_columns:
        field = tdef.field(name)
        if field is not None and field.type in ("string", "text") and name not in ("number", tdef.display):
            return str(record.get(name) or "")
    return ""


def _activity(tdef: TableDef, sys_id: str) -> list[dict]:
    """The record's activity stream, newest first: its journal entries and the e-mails sent about it."""
    labels = {f.name: f.label for f in tdef.journal_fields}
    entries = [{**entry, "label": labels.get(entry["element"], entry["element"])}
               for entry in records().journal(tdef.name, sys_id)]
    entries += _emails(tdef, sys_id)
    return sorted(entries, key=lambda e: e["sys_created_on"], reverse=True)


EMAILS_SHOWN = 50


def _emails(tdef: TableDef, sys_id: str) -> list[dict]:
    """The e-mails filed under the record (sys_email `instance`), as ServiceNow's activity stream shows
    them to who may read the record: when, to whom, the subject, and whether it was sent or failed."""
    defs = runtime().defs
    if "sys_email" not in defs.tables:
        return []
    email = runtime().storage.physical("sys_email")
    stmt = (sa.select(email.c.sys_created_on, email.c.sys_created_by, email.c.recipients, email.c.subject,
                      email.c.state, email.c.error)
            .where(email.c.instance == sys_id, email.c.target_table.in_(defs.lineage(tdef.name)))
            .order_by(email.c.sys_created_on.desc()).limit(EMAILS_SHOWN))
    states = defs.tables["sys_email"].field("state")
    return [{**row, "element": "email", "label": f"E-mail · {states.choice_label(row['state']) or row['state']}",
             "value": row["subject"]} for row in connection().execute(stmt).mappings()]


def _history(tdef: TableDef, sys_id: str, after: int | None = None) -> list[dict]:
    audit = runtime().storage.physical("sys_audit")
    stmt = sa.select(audit).where(audit.c.documentkey == sys_id, audit.c.tablename.in_(runtime().defs.lineage(tdef.name)))
    if after is not None:
        stmt = stmt.where(audit.c.record_checkpoint > after)
    rows = list(connection().execute(stmt.order_by(audit.c.sys_created_on.desc()).limit(100)).mappings())
    names = _display_names(tdef, rows)
    out = []
    for r in rows:
        field = tdef.field(r["fieldname"])
        out.append({**r, "label": field.label if field else r["fieldname"],
                    "old_shown": _audit_word(field, r["oldvalue"], names), "new_shown": _audit_word(field, r["newvalue"], names)})
    return out


def _audit_word(field: FieldDef | None, value: str | None, names: dict[tuple[str, str], str]) -> str:
    """What a person reads for an audited value: a choice's label, the referenced record's display value."""
    if value in (None, "") or field is None:
        return value or ""
    if field.choices:
        return field.choice_label(value) or value
    if field.type == "reference":
        return names.get((field.reference, value), value)
    return value


def _display_names(tdef: TableDef, rows: list) -> dict[tuple[str, str], str]:
    """(table, sys_id) -> display value of every record the audit rows' references name."""
    wanted: dict[str, set[str]] = {}
    for r in rows:
        field = tdef.field(r["fieldname"])
        if field is not None and field.type == "reference":
            wanted.setdefault(field.reference, set()).update(v for v in (r["oldvalue"], r["newvalue"]) if v)
    return display_names(records(), wanted)


def _related(tdef: TableDef, record: dict, index: int, first: int = 1) -> dict:
    """One related list (records of another table pointing at this one), a page of it, and
    counts by the related table's lifecycle state."""
    defs = runtime().defs
    spec = tdef.related_lists[index]
    other = defs.tables[spec.table]
    service = records()
    info = {"index": index, "label": spec.label, "table": other, "field": spec.field, "rows": [], "total": 0,
            "first": first, "page": RELATED_PAGE, "counts": [], "parent": record["sys_id"], "parent_table": tdef.name}
    if not service.can(other.name, "read"):
        return info
    query = Query(Term(spec.field, "eq", record["sys_id"]))
    columns = [c for c in readable_columns(service, other) if c != spec.field]
    shape = make_shape(defs.tables, other, ",".join(columns), "all", "true", base_url(), service.readable)
    info["columns"] = [(c, shape.fields[c]) for c in columns]
    rows = service.query(other.name, query, shape.columns(), RELATED_PAGE, first - 1)
    info["rows"] = [render_record(shape, r) | {"sys_id": r["sys_id"]} for r in rows]
    info["total"] = service.count(other.name, query)
    info["query"] = f"{spec.field}={record['sys_id']}"
    lifecycle = defs.lifecycle(other.name)
    if lifecycle is not None and info["total"]:
        info["counts"] = _counts_by(other, lifecycle.field, spec.field, record["sys_id"])
    return info


def _counts_by(tdef: TableDef, group_field: str, reference: str, parent_id: str) -> list[tuple[str, int]]:
    from ...query import Selection

    selection = Selection(runtime().storage, tdef.name)
    column, field = selection.column(group_field)
    stmt = selection.select(column, sa.func.count(), where=Term(reference, "eq", parent_id)).group_by(column)
    counts = {str(value): n for value, n in connection().execute(stmt)}
    return [(label, counts[str(value)]) for value, label in field.choices if str(value) in counts]


@blueprint.get("/ui/related/<table>/<sys_id>/<int:index>")
@login_required
def related_page(table: str, sys_id: str, index: int):
    defs = runtime().defs
    if table not in defs.tables or index >= len(defs.tables[table].related_lists):
        abort(404)
    record = records().get(table, sys_id) or abort(404)
    tdef = defs.tables[record["sys_class_name"]]
    first = row_number(request.args.get("first"))
    return render_template("_related.html", rl=_related(tdef, record, index, first))


@blueprint.get("/ui/reference/<table>/<field>")
@login_required
def reference_search(table: str, field: str):
    """Type-ahead for a reference field: records of the referenced table whose display value
    (or number) contains what was typed."""
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
        query = Query(terms[0] if terms else None, ((target.display, False),))
        rows = records().query(target.name, query, ["sys_id", target.display], 10)
        options = [{"sys_id": r["sys_id"], "display": r[target.display]} for r in rows]
    return render_template("_ref_options.html", options=options, field=field, text=text)


@blueprint.get("/ui/action/<table>/<sys_id>/<action>")
@login_required
def action_page(table: str, sys_id: str, action: str):
    """An action's inputs on a page of their own: what the form's dialog shows, without JavaScript."""
    defs = runtime().defs
    if table not in defs.tables:
        abort(404)
    service = records()
    try:
        record = service.get(table, sys_id)
    except AccessDenied:
        abort(403)
    if record is None:
        abort(404)
    tdef = defs.tables.get(record.get("sys_class_name"), defs.tables[table])
    offered = {a.name: a for a in available_actions(service, tdef.name, record)}
    spec = offered.get(action)
    if spec is None:
        known = defs.action(table, action)
        flash(f"{known.label if known else action}: not available for this {tdef.label.lower()} now.", "error")
        return redirect(url_for("ui.dispatch", name=table, sys_id=sys_id))
    return render_template("action.html", a=spec, tdef=tdef, record=record, name=record_name(tdef, record),
                           actor=g.actor)


@blueprint.post("/ui/action/<table>/<sys_id>/<action>")
@login_required
def action(table: str, sys_id: str, action: str):
    """Run an action from its button or dialog, through the same service as the action API."""
    defs = runtime().defs
    spec = defs.action(table, action) or abort(404)
    inputs = {}
    for item in spec.inputs:
        value = request.form.get(item.name, "")
        if item.type == "records":
            inputs[item.name] = _records_input(item.table or table, value)
        elif value.strip():
            inputs[item.name] = value
    back = url_for("ui.dispatch", name=table, sys_id=sys_id)
    try:
        outcome = run_action(records(), table, sys_id, action, inputs)
    except (RecordError, Conflict, AccessDenied, EffectFailed, NotFound) as exc:
        rollback()
        flash(f"{spec.label}: not done. {exc}", "error")
        return redirect(back)
    message = None if outcome.job is not None else _done_message(spec, table, sys_id, outcome)  # read in this unit
    db.session.commit()
    if outcome.job is not None:
        from ..jobs_api import queue

        queue(current_app).enqueue_job(outcome.job)
        flash(f"{'; '.join(outcome.messages) or spec.label + ' started'}; its progress shows below.")
        return redirect(back)
    flash(message)
    return redirect(_landing(table, outcome) or back)


def _landing(table: str, outcome) -> str | None:
    """Where the user goes after an action that made one new record of the same kind (an action that
    splits a record into a new parent and its child lands on the new parent)."""
    lineage = set(runtime().defs.lineage(table))
    made = [c for c in outcome.result.get("created", []) if c["table"] in lineage]
    if len(made) != 1:
        return None
    return url_for("ui.dispatch", name=made[0]["table"], sys_id=made[0]["sys_id"])


def _done_message(spec, table: str, sys_id: str, outcome) -> str:
    """What an action did, in words: the record by its number or name, its new state, what it created."""
    defs, service = runtime().defs, records()
    record = service.get(table, sys_id) or {}
    tdef = defs.tables.get(record.get("sys_class_name"), defs.tables[table])
    name = record_name(tdef, record)
    lifecycle = defs.lifecycle(tdef.name)
    if spec.to_state is not None and lifecycle is not None and lifecycle.state(spec.to_state) is not None:
        message = f"{tdef.label} {name} is now {lifecycle.state(spec.to_state).label}."
    else:
        message = f"{spec.label}: done on {tdef.label.lower()} {name}."
    if outcome.messages:
        message += " " + "; ".join(outcome.messages) + "."
    for refused in outcome.result.get("refused", []):
        message += f" {refused.get('number') or refused['sys_id']}: {refused['reason']}."
    for created in outcome.result.get("created", []):
        made = defs.tables.get(created["table"])
        row = service.get(created["table"], created["sys_id"]) if made and service.can(made.name, "read") else None
        message += f" Created {made.label.lower() if made else created['table']} {record_name(made, row or created)}."
    return message


def _records_input(table: str, text: str) -> list[str]:
    """Record references typed as numbers, display values or sys_ids, separated by commas or lines."""
    tdef = runtime().defs.tables[table]
    tokens = [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]
    ids = []
    for token in tokens:
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
            ids.append(token)
            continue
        key = "number" if tdef.field("number") is not None else tdef.display
        rows = records().query(table, Query(Term(key, "eq", token)), ["sys_id"], 1) if key else []
        ids.append(rows[0]["sys_id"] if rows else token)
    return ids


@blueprint.post("/ui/delete/<table>/<sys_id>")
@login_required
def delete(table: str, sys_id: str):
    try:
        records().delete(table, sys_id)
    except (AccessDenied, NotFound) as exc:
        flash(str(exc), "error")
        return redirect(url_for("ui.dispatch", name=table, sys_id=sys_id))
    db.session.commit()
    flash("Record deleted.")
    return redirect(url_for("ui.dispatch", name=f"{table}_list"))
