"""Portals (definitions kind `portal`): a simple, mobile-friendly UI of its own at /NAME for people
outside, such as customers, on the same server and sign-in as the staff UI.

Everything a portal shows goes through the user's access rules: its lists are the user's rows of
the portal's table (the rules' conditions in the SQL), a record page shows only fields the user may
read, and its activity only the portal's journal field (`comment`) and the e-mails to and from the
user, never another journal field. A record's parent (a major issue) shows its own `comment`
entries there too: its public updates, read by the platform for the user, nothing else of it.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from werkzeug.routing import BaseConverter

from .. import attachments
from ..actions import available_actions, run_action
from ..definitions.model import PortalDef, TableDef
from ..definitions.portals import RESERVED
from ..effects import EffectFailed
from ..query import All, Query, Term
from ..query.dynamic import NO_USER, recognise, value_now
from ..query.nodes import Not
from ..records import AccessDenied, Conflict, NotFound, RecordError
from . import db
from .auth import act_as, records, rollback, runtime, session_actor
from .serialize import make_shape, record_name, render_record

blueprint = Blueprint("portal", __name__)
SHOWN = 50  # records per section of the home page
NAME = "<portal:name>"  # a portal's name: lower-case letters, digits and _ (no dot: /x.do is a staff page)


def _portal(name: str) -> PortalDef:
    """The portal at /name, for a signed-in user who may use it (one of its roles, or admin)."""
    portal = runtime().defs.portals.get(name)
    if portal is None:
        abort(404)
    actor = g.actor
    if not actor.is_admin and not any(actor.has_role(r) for r in portal.roles):
        abort(403)
    return portal


def _signed_in():
    actor = session_actor()
    if actor is None:
        return redirect(url_for("login", next=request.full_path.rstrip("?")))
    act_as(actor)
    return None


@blueprint.before_request
def _authenticate():
    return _signed_in()


@blueprint.context_processor
def _context() -> dict:
    return {"actor": g.get("actor")}


def _rows(portal: PortalDef, tdef: TableDef, where, limit: int = SHOWN) -> tuple[list[dict], int, list]:
    service = records()
    columns = [c for c in portal.list_columns if service.can_read_path(tdef.name, c)]
    shape = make_shape(runtime().defs.tables, tdef, ",".join(columns), "all", "true", "", service.readable)
    query = Query(where, (("sys_updated_on", True),))
    total = service.count(tdef.name, Query(where))  # first: few matches are read from themselves
    rows = service.query(tdef.name, query, shape.columns(), limit, matching=total)
    return [render_record(shape, r) | {"sys_id": r["sys_id"]} for r in rows], total, list(shape.fields.items())


@blueprint.get(f"/{NAME}")
def home(name: str):
    """My records: those waiting for me first, then open, then closed; newest first in each."""
    portal = _portal(name)
    tdef = runtime().defs.tables[portal.table]
    sections = []
    needed = portal.action_needed
    opened = portal.open
    parts = [("Action needed", needed),
             ("Open", _and(opened, Not(needed) if needed is not None else None)),
             ("Closed", Not(opened) if opened is not None else None)]
    if opened is None:
        parts = parts[:1] + [("All", Not(needed) if needed is not None else None)]
    for title, where in parts:
        if title == "Action needed" and needed is None:
            continue
        rows, total, columns = _rows(portal, tdef, where)
        sections.append({"title": title, "rows": rows, "total": total, "columns": columns})
    return render_template("portal/home.html", portal=portal, tdef=tdef, sections=sections)


def _and(a, b):
    items = tuple(x for x in (a, b) if x is not None)
    return None if not items else items[0] if len(items) == 1 else All(items)


def _record(portal: PortalDef, sys_id: str) -> tuple[TableDef, dict]:
    service = records()
    record = service.get(portal.table, sys_id)
    if record is None:
        abort(404)
    return runtime().defs.tables[record["sys_class_name"]], record


@blueprint.get(f"/{NAME}/record/<sys_id>")
def record_page(name: str, sys_id: str, status: int = 200, errors: dict | None = None):
    portal = _portal(name)
    tdef, record = _record(portal, sys_id)
    service = records()
    fields = [c for c in (portal.show or tdef.list_columns) if service.can_read_path(tdef.name, c)]
    shape = make_shape(runtime().defs.tables, tdef, ",".join(fields), "all", "true", "", service.readable)
    rows = service.query(tdef.name, Query(Term("sys_id", "eq", sys_id)), shape.columns(), 1)
    shown = render_record(shape, rows[0]) if rows else {}
    details = [(shape.fields[p].label, _words(shown.get(p))) for p in shape.fields if _words(shown.get(p))]
    offered = [a for a in available_actions(service, tdef.name, record) if a.name in portal.actions]
    return render_template("portal/record.html", portal=portal, tdef=tdef, record=record,
                           title=record_name(tdef, record), details=details, activity=_activity(portal, tdef, record),
                           actions=offered, files=attachments.of_record(service, tdef.name, sys_id),
                           can_comment=service.can_write_field(tdef.name, portal.comment, record=record),
                           closed=not _is_open(portal, tdef, record),
                           errors=errors or {}), status


def _words(value) -> str:
    if isinstance(value, dict):
        return str(value.get("display_value") or "")
    return "" if value is None else str(value)


def _activity(portal: PortalDef, tdef: TableDef, record: dict) -> list[dict]:
    """What the user may see happen: entries of the portal's journal field, e-mails to or from
    them, and the parent's public entries; newest first."""
    service = records()
    entries = [{"when": e["sys_created_on"], "who": e["sys_created_by"], "text": e["value"], "kind": "comment"}
               for e in service.journal(tdef.name, record["sys_id"], portal.comment)]
    entries += _emails(tdef, record)
    parent_id = record.get(portal.parent) if portal.parent else None
    if parent_id:
        parent_field = tdef.field(portal.parent)
        system = runtime().records(service.conn)  # the parent may not be the user's to read: only its public entries
        parent = system.get(parent_field.reference, parent_id)
        if parent is not None:
            ptdef = runtime().defs.tables[parent["sys_class_name"]]
            label = f"{parent_field.label} {record_name(ptdef, parent)}"
            own = {e["text"]: e["when"] for e in entries if e["kind"] == "comment"}
            entries += [{"when": e["sys_created_on"], "who": label, "text": e["value"], "kind": "parent"}
                        for e in system.journal(ptdef.name, parent_id, portal.comment)
                        if not _copied(own.get(e["value"]), e["sys_created_on"])]
    return sorted(entries, key=lambda e: e["when"], reverse=True)


def _copied(own_when, parent_when) -> bool:
    """Whether the parent's entry is one the case already shows: copied to it by a sync (the same text,
    written within a minute of it)."""
    return own_when is not None and abs((own_when - parent_when).total_seconds()) < 60


def _emails(tdef: TableDef, record: dict) -> list[dict]:
    rt = runtime()
    if "sys_email" not in rt.defs.tables:
        return []
    from ..inbound.receive import named_addresses

    service = records()
    system = rt.records(service.conn)
    user = system.get("sys_user", g.actor.sys_id) if g.actor.sys_id else None
    # the user's own address and those of the contact or consumer their login belongs to
    addresses = sorted(named_addresses(system, rt.defs.tables["sys_user"], user)) if user else []
    if not addresses:
        return []
    email = rt.storage.physical("sys_email")
    mine = sa.or_(*(sa.or_(sa.func.lower(email.c.sender) == address,
                           sa.func.lower(email.c.recipients).contains(address, autoescape=True)) for address in addresses))
    stmt = (sa.select(email.c.sys_created_on, email.c.subject, email.c.type, email.c.state, email.c.body, email.c.sender)
            .where(email.c.instance == record["sys_id"], email.c.target_table.in_(rt.defs.lineage(tdef.name)), mine,
                   email.c.type != "received-ignored")
            .order_by(email.c.sys_created_on.desc()).limit(50))
    out = []
    for row in service.conn.execute(stmt).mappings():
        received = row["type"] == "received"
        delivery = "" if received else {"sent": " (delivered)", "error": " (not delivered)"}.get(row["state"], " (sending)")
        out.append({"when": row["sys_created_on"], "who": "You, by e-mail" if received else f"E-mail to you{delivery}",
                    "text": row["subject"] or "", "kind": "email"})
    return out


def _is_open(portal: PortalDef, tdef: TableDef, record: dict) -> bool:
    """Whether the record is one of the portal's open ones (its `open` condition): a closed one takes
    no more comments or files here; the person opens a new one."""
    return portal.open is None or records().count(
        tdef.name, Query(_and(Term("sys_id", "eq", record["sys_id"]), portal.open))) > 0


CLOSED_WORDS = "This {label} is closed, so it takes no more {what}. If you still need help, open a new one."


@blueprint.post(f"/{NAME}/record/<sys_id>/comment")
def comment(name: str, sys_id: str):
    portal = _portal(name)
    tdef, record = _record(portal, sys_id)
    if not _is_open(portal, tdef, record):
        return record_page(name, sys_id, 409, {"comment": CLOSED_WORDS.format(label=tdef.label.lower(), what="comments")})
    text = request.form.get("text", "").strip()
    if not text:
        return record_page(name, sys_id, 400, {"comment": "Write something first."})
    try:
        records().update(tdef.name, sys_id, {portal.comment: text[:20000]})
    except (RecordError, Conflict) as exc:
        rollback()
        return record_page(name, sys_id, 400, {"comment": str(exc)})
    except AccessDenied:
        abort(403)
    db.session.commit()
    flash("Your comment was added.")
    return redirect(url_for("portal.record_page", name=name, sys_id=sys_id))


@blueprint.post(f"/{NAME}/record/<sys_id>/action/<action>")
def act(name: str, sys_id: str, action: str):
    portal = _portal(name)
    tdef, _ = _record(portal, sys_id)
    if action not in portal.actions:
        abort(404)
    spec = runtime().defs.action(tdef.name, action) or abort(404)
    inputs = {i.name: request.form.get(i.name, "").strip() for i in spec.inputs if request.form.get(i.name, "").strip()}
    try:
        run_action(records(), tdef.name, sys_id, action, inputs)
    except (RecordError, Conflict, EffectFailed) as exc:
        rollback()
        return record_page(name, sys_id, 400 if not isinstance(exc, Conflict) else 409, {action: str(exc)})
    except AccessDenied:
        abort(403)
    except NotFound:
        abort(404)
    db.session.commit()
    flash(f"{spec.label}: done.")
    return redirect(url_for("portal.record_page", name=name, sys_id=sys_id))


@blueprint.post(f"/{NAME}/record/<sys_id>/attach")
def attach(name: str, sys_id: str):
    portal = _portal(name)
    tdef, record = _record(portal, sys_id)
    if not _is_open(portal, tdef, record):
        return record_page(name, sys_id, 409, {"file": CLOSED_WORDS.format(label=tdef.label.lower(), what="files")})
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return record_page(name, sys_id, 400, {"file": "Choose a file first."})
    try:
        attachments.attach(records(), tdef.name, sys_id, upload.filename, upload.mimetype, upload.read())
    except attachments.Refused as exc:
        rollback()
        return record_page(name, sys_id, exc.status, {"file": f"{exc.message}. {exc.detail}".strip()})
    except AccessDenied:
        abort(403)
    db.session.commit()
    flash(f"{upload.filename} was attached.")
    return redirect(url_for("portal.record_page", name=name, sys_id=sys_id))


@blueprint.route(f"/{NAME}/new", methods=["GET", "POST"])
def new(name: str):
    portal = _portal(name)
    if not portal.create_fields:
        abort(404)
    tdef = runtime().defs.tables[portal.table]
    fields = [tdef.field(f) for f in portal.create_fields]
    errors: dict[str, str] = {}
    typed = {f.name: request.form.get(f.name, "") for f in fields}
    if request.method == "POST":
        values = {k: v for k, v in typed.items() if v.strip()}
        for key, value in portal.create_values.items():
            resolved = value_now(recognise(value)) if isinstance(value, str) else value
            if resolved is not NO_USER and resolved not in (None, ""):
                values[key] = resolved
        try:
            made = records().insert(tdef.name, values)
        except RecordError as exc:
            rollback()
            errors[exc.field or ""] = exc.message
        except AccessDenied as exc:
            rollback()
            errors[""] = str(exc)
        else:
            db.session.commit()
            flash(f"{tdef.label} {record_name(tdef, made)} was created.")
            return redirect(url_for("portal.record_page", name=name, sys_id=made["sys_id"]))
    return render_template("portal/new.html", portal=portal, tdef=tdef, fields=fields, typed=typed,
                           errors=errors), 400 if errors else 200


class PortalName(BaseConverter):
    """A name that may be a portal's: never one of the platform's own first segments (GET /logout
    must stay the sign-out route's 405, not a portal's 404)."""

    regex = rf"(?!(?:{'|'.join(sorted(RESERVED))})\b)[a-z][a-z0-9_]{{1,30}}"


def register(app) -> None:
    app.url_map.converters["portal"] = PortalName
    app.register_blueprint(blueprint)
