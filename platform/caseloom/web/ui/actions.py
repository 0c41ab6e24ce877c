"""Actions from the browser: an action's own page (its inputs without JavaScript), running it from its
button or dialog, the confirmation of what it would do in numbers, and the message of what it did."""

from __future__ import annotations

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for

from ...actions import Footprint, available_actions, footprint, preview_action, run_action
from ...effects import EffectFailed
from ...query import Query, Term
from ...records import AccessDenied, Conflict, NotFound, RecordError
from .. import db
from ..auth import properties, records, rollback, runtime
from ..serialize import record_name
from . import blueprint, login_required
from .references import _picker, record_or_abort


@blueprint.get("/ui/action/<table>/<sys_id>/<action>")
@login_required
def action_page(table: str, sys_id: str, action: str):
    """An action's inputs on a page of their own: what the form's dialog shows, without JavaScript."""
    defs, service = runtime().defs, records()
    tdef, record = record_or_abort(table, sys_id)
    offered = {a.name: a for a in available_actions(service, tdef.name, record)}
    spec = offered.get(action)
    if spec is None:
        known = defs.action(table, action)
        flash(f"{known.label if known else action}: not available for this {tdef.label.lower()} now.", "error")
        return redirect(url_for("ui.dispatch", name=table, sys_id=sys_id))
    pickers = {i.name: _picker(tdef, record, spec, i, request.args, "action") for i in spec.inputs
               if i.type == "records"}
    prefill = {i.name: request.args[i.name][:2000] for i in spec.inputs  # a link's suggested text (a similar list's)
               if i.type in ("text", "string") and request.args.get(i.name)}
    return render_template("action.html", a=spec, tdef=tdef, record=record, name=record_name(tdef, record),
                           actor=g.actor, pickers=pickers, prefill=prefill)


@blueprint.post("/ui/action/<table>/<sys_id>/<action>")
@login_required
def action(table: str, sys_id: str, action: str):
    """Run an action from its button or dialog, through the same service as the action API."""
    defs = runtime().defs
    spec = defs.action(table, action) or abort(404)
    back = url_for("ui.dispatch", name=table, sys_id=sys_id)
    confirmed = request.form.get("confirmed") == "1"
    try:
        inputs = {}
        for item in spec.inputs:
            value = request.form.get(item.name, "")
            if item.type == "records":  # ticked in the picker (several values), or typed numbers (the old way)
                inputs[item.name] = _records_input(item, item.table or table, request.form.getlist(item.name))
            elif value.strip():
                inputs[item.name] = value
        if not confirmed and (spec.confirm or spec.background):  # what it would do, before it does it
            would = preview_action(records(), table, sys_id, action, inputs)
            if spec.confirm or _too_many(would):
                return _confirmation(table, sys_id, spec.label, spec.style, would, request.path)
        records().made.clear()
        outcome = run_action(records(), table, sys_id, action, inputs)
        if not confirmed and outcome.job is None:
            did = footprint(records())
            if _too_many(did):
                rollback()
                return _confirmation(table, sys_id, spec.label, spec.style, did, request.path)
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


def _records_input(item, table: str, values: list[str]) -> list[str]:
    """Records ticked in a picker (sys_ids, one value each) or typed as numbers, display values or sys_ids
    separated by commas or lines (the way before the picker, still accepted). A typed value no record
    has is refused, naming it."""
    tdef = runtime().defs.tables[table]
    tokens = [t.strip() for text in values for t in text.replace("\n", ",").split(",") if t.strip()]
    ids = []
    for token in tokens:
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
            ids.append(token)
            continue
        key = "number" if tdef.field("number") is not None else tdef.display
        rows = records().query(table, Query(Term(key, "eq", token)), ["sys_id"], 1) if key else []
        if not rows:
            what = f"numbered {token!r}" if key == "number" else f"named {token!r}"
            raise RecordError(item.name, f"no {tdef.label.lower()} {what}")
        ids.append(rows[0]["sys_id"])
    return ids


CONFIRM_EMAILS = "caseloom.ui.confirm_emails_above"


def _too_many(would: Footprint) -> bool:
    """Whether it e-mails more people than the system property allows without asking."""
    return would.recipients > 0 and would.recipients > int(properties().get(CONFIRM_EMAILS) or 0)


def _confirmation(table: str, sys_id: str | None, label: str, style: str, would: Footprint, post_to: str):
    """"Create child cases on case CS0001234 creates 40 cases and sends 40 e-mails to 40 recipients":
    the same post again, with `confirmed`, or back to the record. Nothing was written."""
    defs = runtime().defs
    record = records().get(table, sys_id) if sys_id else None
    tdef = defs.tables.get((record or {}).get("sys_class_name"), defs.tables[table])
    carried = [(k, v) for k, values in request.form.lists() if k not in ("csrf_token", "confirmed") for v in values]
    return render_template("confirm.html", label=label, tdef=tdef, record=record,
                           name=record_name(tdef, record) if record else None, would=would, carried=carried,
                           post_to=post_to, danger=style == "danger" or bool(would.emails), actor=g.actor), 200
