"""Forms of any table: inputs per field type, activity, related lists, history, saving (actions from the
form: web.ui.actions; references and pickers: web.ui.references)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask import abort, flash, g, redirect, render_template, request, url_for

from ...actions import available_actions, footprint
from ...definitions.model import FieldDef, TableDef
from ...query import Query, Term
from ...records import AccessDenied, Conflict, NotFound, RecordError, now
from .. import db
from ..auth import connection, records, rollback, runtime
from ..serialize import NOT_READABLE, audit_names, base_url, make_shape, record_name, render_record, value_words
from . import blueprint, login_required
from .actions import _confirmation, _too_many
from .attachments import attachment_panel
from .lists import readable_columns, row_number
from .members import member_panel, running_job
from .references import _resolve_display
from .similar import similar_panels
from .slas import sla_panel, task_sla_repair
from .workspace import counted, workspace_for, workspace_panel

RELATED_PAGE = 10


CONTINUING = ("is ", "are ", "must ", "has ", "was ", "cannot ", "may ", "takes ")  # what reads on from a label


def error_sentence(label: str, error: str) -> str:
    """A field's error as a sentence that names it: "Priority is read-only", "Priority: expected a number"."""
    return f"{label} {error}" if error.startswith(CONTINUING) else f"{label}: {error}"


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
    kept: str = ""  # a journal entry typed into a form that was not saved, shown again

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def error_text(self) -> str:
        """The error as a sentence about the field: "Short description is mandatory", "Account: no
        account named 'Acme 999'"."""
        return error_sentence(self.field.label, self.error or "")

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
        if field.type == "reference" and raw and not display:
            display = NOT_READABLE  # the referenced table's or record's rules hide its name: never its sys_id
    else:
        raw = display = cell or ""
    if field.ftype.input == "datetime-local" and raw:
        raw = raw.replace(" ", "T")[:16]
    elif field.ftype.words is not None and display:
        raw = display  # a duration reads "8 Hours 30 Minutes", which it also parses
    return raw, display


def _widgets(tdef: TableDef, rendered: dict, record: dict, new: bool, can_write: bool,
             typed: dict | None = None, errors: dict | None = None) -> dict[str, Widget]:
    read_only, mandatory, hidden, lifecycle_field = _lifecycle_flags(tdef, record)
    service = records()
    widgets = {}
    for name, field in tdef.fields.items():
        if field.ftype.hidden or not service.can_read_field(tdef.name, name, record):
            continue  # never read back (a password), or the user's field rules hide it
        raw, display = _input_value(field, rendered.get(name, ""))
        if typed is not None and name in typed:
            stored, shown = raw, display
            raw = display = typed[name]
            if field.type == "reference":  # the name typed or picked, not the sys_id it stands for
                display = typed.get(f"{name}__display", shown if raw == stored else raw)
        locked = (field.system or field.read_only or name in read_only or not can_write
                  or (name == lifecycle_field and not new)
                  or not service.can_write_field(tdef.name, name, "create" if new else "write", None if new else record))
        kept = str(typed.get(name) or "") if typed is not None and field.ftype.journal else ""
        widgets[name] = Widget(field, raw, display, locked, field.mandatory or name in mandatory, name in hidden,
                               (errors or {}).get(name), kept)
    return widgets


def _sections(tdef: TableDef, widgets: dict[str, Widget]) -> list[tuple[str, list[Widget]]]:
    if tdef.form:
        sections = [(s.title, [widgets[f] for f in s.fields if f in widgets and not widgets[f].field.ftype.journal])
                    for s in tdef.form]
    else:
        sections = [("", [w for w in widgets.values() if not w.field.system and not w.field.ftype.journal])]
    return [(title, items) for title, items in sections if items]


def _journal_widgets(widgets: dict[str, Widget], can_write: bool) -> list[Widget]:
    """The boxes that add to the activity (a work note, a comment): for who may write the record."""
    return [w for w in widgets.values() if w.field.ftype.journal and not w.read_only] if can_write else []


def _on_the_form(tdef: TableDef, widgets: dict[str, Widget], can_write: bool) -> dict[str, Widget]:
    """The widgets the form shows, by field name: its sections' (read-only ones too) and the journal boxes."""
    shown = {w.name: w for _, items in _sections(tdef, widgets) for w in items}
    shown.update((w.name, w) for w in _journal_widgets(widgets, can_write))
    return shown


def _new_record(tdef: TableDef) -> tuple[dict, dict]:
    """(rendered, record) of a new record's form: the fields' defaults; a `default: now` field
    shows when the form was opened, as ServiceNow's does."""
    rendered, record = {}, {}
    opened = now()
    for name, field in tdef.fields.items():
        value = field.initial(opened)
        if value is not None and not field.system:
            rendered[name] = field.render(value)
            record[name] = value
    return rendered, record


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
        rendered, record = _new_record(tdef)
    else:
        rendered, record = _load(tdef, sys_id)
        tdef = defs.tables.get(record.get("sys_class_name"), tdef)
    can_write = service.can(tdef.name, "create" if new else "write")
    widgets = _widgets(tdef, rendered, record, new, can_write, typed, errors)
    shown = _on_the_form(tdef, widgets, can_write)
    job = None if new else running_job(tdef.name, sys_id)
    actions = [] if new else available_actions(service, tdef.name, record)
    # the similar lists come after the form (htmx asks for them as it loads); without JavaScript, a link
    # shows the form with them (`similar=1`)
    inline = not new and request.args.get("similar") == "1"
    similar, suggestions = similar_panels(tdef, record, actions) if inline else ([], [])
    context = {
        "tdef": tdef, "record": record, "rendered": rendered, "new": new, "sections": _sections(tdef, widgets),
        "journal_widgets": _journal_widgets(widgets, can_write),
        "can_write": can_write, "errors": errors or {}, "conflict": conflict, "actor": g.actor,
        "unplaced_errors": _unplaced_errors(tdef, errors or {}, shown),
        "actions": actions, "similar": similar, "suggestions": suggestions,
        "similar_later": not new and not inline and bool(tdef.similar and tdef.text_index),
        "activity": [] if new else _activity(tdef, sys_id),
        "history": [] if new else _history(tdef, sys_id),
        "related": [] if new else [_related(tdef, record, i, row_number(request.args.get(f"related{i}_first")))
                                   for i in range(len(tdef.related_lists))],
        "parents": [] if new else _parents(tdef, record),
        "can_delete": not new and service.can(tdef.name, "delete"),
        "job": job,
        "members": None if new else member_panel(tdef.name, record),
        # its communications are drawn after it too (`communications=1`: in it, without JavaScript)
        "workspace": None if new else workspace_panel(tdef, record, rendered, job,
                                                      communications=request.args.get("communications") == "1"),
        "member_list_name": getattr(runtime().defs.member_list_for(tdef.name), "name", ""),
        "slas": None if new else sla_panel(tdef, record),  # its SLA bars, live
        "repair_task": None if new else task_sla_repair(tdef, record),  # a task SLA's: its task's Repair SLAs
        "attachments": None if new else attachment_panel(tdef, record),
    }
    return render_template("form.html", **context), status


def _unplaced_errors(tdef: TableDef, errors: dict[str, str], shown: dict[str, Widget]) -> list[str]:
    """The errors of names the form shows no field for (one it leaves out, a name no field has), as
    sentences for the top of the form: every other error is shown at its field."""
    return [error_sentence(field.label if (field := tdef.field(name)) is not None else repr(name), error)
            for name, error in errors.items() if name != "__all__" and name not in shown]


# What a form posts besides its fields: its CSRF token, the version it was read at, a confirmation's mark.
BOOKKEEPING = ("csrf_token", "sys_mod_count", "confirmed")
DISPLAY_SUFFIX = "__display"  # a reference box's typed name: FIELD__display


def _not_on_the_form(tdef: TableDef, record: dict, new: bool, posted) -> dict[str, str]:
    """What a post holds that its form does not send, as problems by field name: a field the form
    leaves out or shows read-only (a lifecycle state's, the state itself), a name no field has. A
    browser never sends them, so the post was made by hand or from a form since changed: it is
    answered with the form and these errors, never saved without them."""
    if new:
        _, record = _new_record(tdef)
    shown = _on_the_form(tdef, _widgets(tdef, {}, record, new, True), True)
    inputs = {name for name, w in shown.items() if not w.read_only}
    problems = {}
    for name in posted:
        if name in BOOKKEEPING:
            continue
        field = tdef.field(name)
        if field is None and name.endswith(DISPLAY_SUFFIX):  # a reference box's name stands for its field
            box = tdef.field(name[: -len(DISPLAY_SUFFIX)])
            field = box if box is not None and box.type == "reference" else None
        if field is None:
            problems[name] = f"is not a field of {tdef.label}"
        elif field.name in inputs:
            continue
        elif field.name in shown:
            problems[field.name] = _read_only_why(tdef, field.name, record, new)
        else:
            problems[field.name] = "is not on this form"
    return problems


def _read_only_why(tdef: TableDef, name: str, record: dict, new: bool) -> str:
    """Why a field the form shows cannot be changed from it: its lifecycle, or its own flags and rules."""
    lifecycle = runtime().defs.lifecycle(tdef.name)
    if lifecycle is not None:
        state = lifecycle.state(record.get(lifecycle.field))
        if name == lifecycle.field and not new:
            return "is changed by the record's actions, not by saving the form"
        if state is not None and name in state.read_only:
            return f"is read-only while {tdef.field(lifecycle.field).label} is {state.label}"
    return "is read-only"


def _form_values(tdef: TableDef, record: dict, problems: dict[str, str] | None = None) -> dict:
    """The values the form posted for fields a person may change. A reference typed by a name no
    record has is a problem of its field in `problems` (every one of them, not only the first),
    and left out; without `problems`, the first raises its RecordError."""
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
            try:
                value = _resolve_display(field, request.form[f"{name}__display"])
            except RecordError as exc:
                if problems is None:
                    raise
                problems[exc.field or name] = exc.message
                continue
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
                    and name not in values and not field.has_default:
                problems.setdefault(name, "is mandatory")
    return problems


def save(table: str):
    service = records()
    defs = runtime().defs
    sys_id = request.args.get("sys_id", "-1")
    tdef = defs.tables[table]
    record = {} if sys_id == "-1" else (service.get(table, sys_id) or abort(404))
    if record:
        tdef = defs.tables.get(record["sys_class_name"], tdef)
    expected = request.form.get("sys_mod_count", "")
    # a form read before the record last changed is answered by the conflict page below (what changed
    # since), not by the fields its newer state locks; without the right to write: a 403 below
    stale = bool(record) and expected.isdigit() and int(expected) != record.get("sys_mod_count")
    stray = _not_on_the_form(tdef, record, not record, request.form) \
        if not stale and service.can(tdef.name, "write" if record else "create") else {}
    unnamed: dict[str, str] = {}  # references typed by a name no record has
    values = {k: v for k, v in _form_values(tdef, record, unnamed).items() if k not in stray}
    typed = {**values, **_displays(tdef, request.form)}
    problems = {**_field_problems(tdef, values, record), **unnamed, **stray}
    if problems:  # every field's mistake at once, before anything is written
        kept = _typed(tdef, request.form) if unnamed else typed
        kept = {k: v for k, v in kept.items() if k.removesuffix(DISPLAY_SUFFIX) not in stray}  # stored values shown
        return form(table, kept, problems, status=422)
    service.made.clear()
    service.notices.clear()
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
    if request.form.get("confirmed") != "1":
        did = footprint(service)
        if _too_many(did):  # a save that would e-mail many people says how many first
            rollback()
            return _confirmation(tdef.name, saved["sys_id"] if sys_id != "-1" else None, "Save", "primary", did,
                                 request.full_path.rstrip("?"))
    db.session.commit()
    flash(f"{tdef.label} {saved.get('number') or saved.get(tdef.display or 'sys_id') or ''} saved.")
    for notice in service.notices:
        flash(notice, "warning")
    return redirect(url_for("ui.dispatch", name=tdef.name, sys_id=saved["sys_id"]))


BUSY_WORDS = "The database is busy, so nothing was saved. What you typed is still here: save again in a moment."


def busy_form(table: str):
    """A form's save the database refused as busy (`is_transient`): the form again (503), with what
    was typed and BUSY_WORDS; the request has given up writing first (`only_read_from_now`)."""
    tdef = runtime().defs.tables.get(table)
    if tdef is None:
        abort(404)
    return form(table, _typed(tdef, request.form), {"__all__": BUSY_WORDS}, status=503)


def _typed(tdef: TableDef, posted) -> dict:
    """What a form posted for the table's fields, to show again when it was not saved (a reference's
    name as typed too)."""
    return {**{k: v for k, v in posted.items() if tdef.field(k)}, **_displays(tdef, posted)}


def _displays(tdef: TableDef, posted) -> dict:
    """The names a form's reference boxes held (`FIELD__display`): what a person typed or picked."""
    return {k: v for k, v in posted.items()
            if k.endswith("__display") and (f := tdef.field(k[:-9])) is not None and f.type == "reference"}


def _parents(tdef: TableDef, record: dict) -> list[dict]:
    """The records this one is a child of, through a table's own related list of children (a work
    order's sub-orders: `parent`): shown as a banner that links up ("Part of work order WO0001234: Leak"; a
    parent shown as a workspace by the workspace's label: "Part of major case CS0001234: Storage outage")."""
    defs, service = runtime().defs, records()
    lineage = set(defs.lineage(tdef.name))
    out = []
    for owner in (defs.tables[name] for name in defs.lineage(tdef.name)):
        for spec in owner.related_lists:
            parent_id = record.get(spec.field)
            if spec.on or spec.table not in lineage or not parent_id or any(p["sys_id"] == parent_id for p in out):
                continue
            try:
                parent = service.get(owner.name, parent_id)
            except AccessDenied:
                continue
            if parent is None:
                continue
            ptdef = defs.tables.get(parent.get("sys_class_name"), owner)
            hub = workspace_for(ptdef, parent)  # a parent shown as a workspace is named as one ("major case")
            out.append({"sys_id": parent_id, "table": ptdef.name, "label": (hub.label if hub else ptdef.label).lower(),
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
                      email.c.state, email.c.error, email.c.type, email.c.sender)
            .where(email.c.instance == sys_id, email.c.target_table.in_(defs.lineage(tdef.name)))
            .order_by(email.c.sys_created_on.desc()).limit(EMAILS_SHOWN))
    states = defs.tables["sys_email"].field("state")
    out = []
    for row in connection().execute(stmt).mappings():
        if row["type"] in ("received", "received-ignored"):  # an e-mail in: from whom, and what it did
            label = "E-mail received" + (" · ignored" if row["type"] == "received-ignored" else "")
            out.append({**row, "element": "email", "label": label, "value": row["subject"],
                        "recipients": f"from {row['sender']}"})  # the template says "from", not "to"
        else:
            out.append({**row, "element": "email", "value": row["subject"],
                        "label": f"E-mail · {states.choice_label(row['state']) or row['state']}"})
    return out


def _history(tdef: TableDef, sys_id: str, after: int | None = None) -> list[dict]:
    audit = runtime().storage.physical("sys_audit")
    stmt = sa.select(audit).where(audit.c.documentkey == sys_id, audit.c.tablename.in_(runtime().defs.lineage(tdef.name)))
    if after is not None:
        stmt = stmt.where(audit.c.record_checkpoint > after)
    service = records()
    rows = [r for r in connection().execute(stmt.order_by(audit.c.sys_created_on.desc()).limit(100)).mappings()
            if tdef.field(r["fieldname"]) is None or service.can_read_field(tdef.name, r["fieldname"], {"sys_id": sys_id})]
    names = audit_names(service, tdef, rows)
    out = []
    for r in rows:
        field = tdef.field(r["fieldname"])
        out.append({**r, "label": field.label if field else r["fieldname"],
                    "old_shown": value_words(field, r["oldvalue"], names), "new_shown": value_words(field, r["newvalue"], names)})
    return out


def _related(tdef: TableDef, record: dict, index: int, first: int = 1) -> dict:
    """One related list (records of another table pointing at this one, or holding this one's `on`
    value), a page of it, and counts by the related table's lifecycle state."""
    defs = runtime().defs
    spec = tdef.related_lists[index]
    other = defs.tables[spec.table]
    service = records()
    info = {"index": index, "label": spec.label, "table": other, "field": spec.field, "rows": [], "total": 0,
            "first": first, "page": RELATED_PAGE, "counts": [], "parent": record["sys_id"], "parent_table": tdef.name}
    value = record.get(spec.on) if spec.on else record["sys_id"]
    if not service.can(other.name, "read") or value in (None, ""):
        return info
    value = other.field(spec.field).render(value) if spec.on else value
    query = Query(Term(spec.field, "eq", value))
    columns = [c for c in readable_columns(service, other) if c != spec.field]
    shape = make_shape(defs.tables, other, ",".join(columns), "all", "true", base_url(), service.readable)
    info["columns"] = [(c, shape.fields[c]) for c in columns]
    # counted first (few matches are read from themselves), by lifecycle state in the same statement; the
    # workspace of a record whose related list this is counts the same children, with its attention flag
    lifecycle = defs.lifecycle(other.name)
    ws = workspace_for(tdef, record)
    flag = ws.attention if ws is not None and (ws.child_table, ws.children) == (other.name, spec.field) else None
    counts = counted(other.name, spec.field, value, lifecycle.field if lifecycle else None, flag)
    info["total"] = counts.total
    rows = service.query(other.name, query, shape.columns(), RELATED_PAGE, first - 1, matching=info["total"])
    info["rows"] = [render_record(shape, r) | {"sys_id": r["sys_id"]} for r in rows]
    info["query"] = f"{spec.field}={value}"
    if lifecycle is not None and info["total"]:
        info["counts"] = [(label, n) for _, label, n in counts.by_choice(other.field(lifecycle.field))]
    return info


@blueprint.get("/ui/related/<table>/<sys_id>/<int:index>")
@login_required
def related_page(table: str, sys_id: str, index: int):
    defs = runtime().defs
    if table not in defs.tables or index >= len(defs.tables[table].related_lists):
        abort(404)
    record = records().get(table, sys_id) or abort(404)
    tdef = defs.tables[record["sys_class_name"]]
    first = row_number(request.args.get("first"))
    if not request.headers.get("HX-Request"):  # a link followed without JavaScript: the form, at that page
        return redirect(url_for("ui.dispatch", name=tdef.name, sys_id=sys_id, **{f"related{index}_first": first})
                        + f"#related-{index}")
    return render_template("_related.html", rl=_related(tdef, record, index, first))


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
