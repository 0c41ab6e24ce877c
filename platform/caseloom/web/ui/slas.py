"""The SLAs of a record on its form: each task SLA as a bar with its definition's name, its stage, the
business elapsed percentage, the time left (or since the breach) and the breach time, coloured as
ServiceNow colours them, live as of now; under each, its timeline: when it attached, paused, resumed,
completed or was cancelled, by whom, and which change of the record did it (the record's audit rows
of the same unit of work). Generic: any table whose records can have SLAs (`sla: true`) has it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, url_for

from ...definitions.model import TableDef
from ...fieldtypes import duration_words
from ...query import Query, QueryError, Term
from ...records import AccessDenied
from ...timing.engine import moment, state_of
from ...timing.measure import ACTIVE, CANCELLED, COMPLETED, PAUSED, RUNNING, due_at, measure
from ...timing.repair import RepairRefused, repair
from ...timing.slas import SLA, TASK_SLA, Sla, enabled, slas_for
from .. import db
from ..auth import connection, records, runtime
from ..serialize import audit_names, change_words, display_names
from . import blueprint, login_required

SHOWN = 20  # task SLAs on one form, newest first
CAUSE_WINDOW = dt.timedelta(seconds=5)  # an SLA attached this soon after the record's creation: by it
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # as the rest of the UI shows moments


@dataclass(frozen=True)
class Band:
    """How far along an SLA is, as ServiceNow colours it: the CSS class and the same in words."""

    below: float  # business elapsed percentage this band ends at (exclusive)
    css: str
    words: str


BANDS = (
    Band(50, "sla-ok", "On track"),
    Band(75, "sla-half", "Over half elapsed"),
    Band(100, "sla-near", "Nearly breached"),
    Band(float("inf"), "sla-breached", "Breached"),
)

EVENTS = {  # (old stage, new stage) -> what happened; None as old: it attached
    (None, RUNNING): "Attached", (None, PAUSED): "Attached and paused at once",
    (RUNNING, PAUSED): "Paused", (PAUSED, RUNNING): "Resumed",
    (RUNNING, COMPLETED): "Completed", (PAUSED, COMPLETED): "Completed",
    (RUNNING, CANCELLED): "Cancelled", (PAUSED, CANCELLED): "Cancelled",
}


def band(percentage: float, breached: bool = False) -> Band:
    """The band of a business elapsed percentage (a breached SLA is red whatever its percentage)."""
    if breached:
        return BANDS[-1]
    return next(b for b in BANDS if percentage < b.below)


def width_class(percentage: float) -> str:
    """The bar's width as a CSS class in steps of 5 % (the CSP allows no inline style), at most 100."""
    step = min(max(int(percentage // 5) * 5, 0), 100)
    return f"sla-w-{step}"


def short_words(seconds: float) -> str:
    """A span as a person reads it, to the minute once it is a minute or more ("2 Hours 15 Minutes")."""
    seconds = max(int(seconds), 0)
    return duration_words(seconds - seconds % 60 if seconds >= 60 else seconds)


def time_words(stage: str, breached: bool, time_left: int, breach_at: dt.datetime | None, now: dt.datetime) -> str:
    """What is left, or how long ago it breached: "2 Hours 15 Minutes left", "Breached 1 Hour ago"."""
    if breached:
        if stage in ACTIVE and breach_at is not None:
            return f"Breached {short_words((now - breach_at).total_seconds())} ago"
        return "Breached"
    if stage in ACTIVE:
        return f"{short_words(time_left)} left" + (" (paused)" if stage == PAUSED else "")
    return f"Stopped with {short_words(time_left)} left"


def sla_panel(tdef: TableDef, record: dict) -> dict | None:
    """The SLA section of a record's form; None when its table cannot have SLAs or the reader may not
    read task SLAs."""
    service = records()
    if not enabled(runtime().defs, tdef.name) or not record.get("sys_id") or not service.can(TASK_SLA, "read"):
        return None
    rows = service.query(TASK_SLA, Query(Term("task", "eq", record["sys_id"]),
                                         (("sys_created_on", True), ("start_time", True))), None, SHOWN)
    definitions = {s.sys_id: s for s in slas_for(service, tdef.name)}
    names = _names(definitions, {r["sla"] for r in rows if r["sla"]})
    timelines = _timelines(tdef, record, rows)
    now = moment()
    bars = [_bar(row, definitions.get(row["sla"]), names, timelines.get(row["sys_id"], []), now) for row in rows]
    return {"table": tdef.name, "sys_id": record["sys_id"], "label": tdef.label, "bars": bars,
            "can_repair": service.actor.is_admin and tdef.audit}


def task_sla_repair(tdef: TableDef, record: dict) -> dict | None:
    """On a task SLA's form, for administrators: its task's Repair SLAs (ServiceNow's *Repair* on the SLA
    form), which makes that task's SLAs again, this one among them; None elsewhere, or when the task
    cannot be repaired (no history) or the reader may not read it."""
    defs = runtime().defs
    service = records()
    if tdef.name != TASK_SLA or not record.get("task") or not service.actor.is_admin:
        return None
    base = defs.tables[TASK_SLA].field("task").reference
    try:
        task = service.get(base, record["task"])
    except AccessDenied:
        return None
    if task is None:
        return None
    task_def = defs.tables.get(task.get("sys_class_name") or "", defs.tables[base])
    if not task_def.audit or not enabled(defs, task_def.name):
        return None
    shown = display_names(service, {task_def.name: {task["sys_id"]}}).get((task_def.name, task["sys_id"]))
    return {"table": task_def.name, "sys_id": task["sys_id"], "label": task_def.label,
            "name": shown or task["sys_id"]}


def _names(definitions: dict[str, Sla], ids: set[str]) -> dict[str, str]:
    """SLA definition sys_id -> its name: from the active definitions, else its record (read as the reader)."""
    names = {i: definitions[i].name for i in ids if i in definitions}
    missing = ids - set(names)
    if missing:
        names |= {sys_id: name for (_, sys_id), name in display_names(records(), {SLA: missing}).items()}
    return names


def _live(row: dict, sla: Sla | None, now: dt.datetime) -> dict:
    """The row's timing as of now when it is running or paused (its stored values once it has ended,
    or when its definition is no longer active)."""
    if sla is None or row["stage"] not in ACTIVE:
        return row
    live = row | measure(sla.clock, state_of(row), now)
    live["has_breached"] = live["has_breached"] or bool(row["has_breached"])
    return live


def _breach_moment(row: dict, sla: Sla | None) -> dt.datetime | None:
    """When it breached (or will): its pauses before the current one counted, not the current one."""
    if sla is None:
        return row["planned_end_time"]
    state = state_of(row)
    due = due_at(sla.clock, state, 100, state.business_pause_duration)
    return None if due is None else due.replace(microsecond=0)


def _bar(row: dict, sla: Sla | None, names: dict[str, str], timeline: list[dict], now: dt.datetime) -> dict:
    live = _live(row, sla, now)
    percentage = float(live["business_percentage"] or 0)
    breached = bool(live["has_breached"])
    breach_at = _breach_moment(row, sla) if breached else live["planned_end_time"]
    shown = band(percentage, breached)
    stage_field = runtime().defs.tables[TASK_SLA].field("stage")
    if breached and breach_at is not None and breach_at <= now:
        timeline = sorted([*timeline, {"when": breach_at, "what": "Breached", "who": "", "cause": ""}],
                          key=lambda e: e["when"])
    return {
        "name": names.get(row["sla"], "An SLA definition no longer there"),
        "stage": stage_field.choice_label(row["stage"]) or row["stage"], "ended": row["stage"] not in ACTIVE,
        "percentage": int(percentage), "band": shown, "width": width_class(percentage),
        "status": _status(row["stage"], shown, breached),
        "time": time_words(row["stage"], breached, int(live["business_time_left"] or 0), breach_at, now),
        "breach_time": breach_at.strftime(TIME_FORMAT) if breach_at else "", "breached": breached,
        "breach_iso": breach_at.isoformat() if breach_at else "",
        "timeline": [e | {"shown": e["when"].strftime(TIME_FORMAT), "iso": e["when"].isoformat()} for e in timeline],
        "sys_id": row["sys_id"],
    }


def _status(stage: str, shown: Band, breached: bool) -> str:
    """The bar's verdict in words: its band while it runs; once it has ended, met or breached."""
    if stage in ACTIVE or breached:
        return shown.words
    return "Met" if stage == COMPLETED else ""


def _timelines(tdef: TableDef, record: dict, rows: list[dict]) -> dict[str, list[dict]]:
    """task SLA sys_id -> what happened to it, oldest first, each with what of the record caused it: it
    attached (the row's own stamps and unit of work), then each audited stage change."""
    if not rows:
        return {}
    audit = runtime().storage.physical("sys_audit")
    stages = list(connection().execute(
        sa.select(audit.c.documentkey, audit.c.oldvalue, audit.c.newvalue, audit.c.user, audit.c.sys_created_on,
                  audit.c.transaction)
        .where(audit.c.tablename == TASK_SLA, audit.c.documentkey.in_([r["sys_id"] for r in rows]),
               audit.c.fieldname == "stage")
        .order_by(audit.c.sys_created_on)).mappings())
    changes: dict[str, list[dict]] = {}
    for r in stages:
        changes.setdefault(r["documentkey"], []).append(dict(r))
    for row in rows:
        steps = changes.setdefault(row["sys_id"], [])
        if not steps or steps[0]["oldvalue"] is not None:  # its attaching is the row itself
            first = steps[0]["oldvalue"] if steps else row["stage"]
            steps.insert(0, {"oldvalue": None, "newvalue": first, "user": row.get("sys_created_by"),
                             "sys_created_on": row.get("sys_created_on"), "transaction": row.get("transaction")})
    causes = _causes(tdef, record, {s["transaction"] for steps in changes.values() for s in steps if s["transaction"]})
    return {sys_id: [_event(tdef, record, s, causes) for s in steps if s["sys_created_on"] is not None]
            for sys_id, steps in changes.items()}


def _event(tdef: TableDef, record: dict, step: dict, causes: dict[str, str]) -> dict:
    cause = causes.get(step["transaction"] or "", "")
    if not cause and step["oldvalue"] is None and _soon_after(record.get("sys_created_on"), step["sys_created_on"]):
        cause = f"{tdef.label} created"
    return {"when": step["sys_created_on"], "what": EVENTS.get((step["oldvalue"], step["newvalue"]), "Changed"),
            "who": step["user"] or "", "cause": cause}


def _soon_after(created: dt.datetime | None, when: dt.datetime | None) -> bool:
    return created is not None and when is not None and dt.timedelta(0) <= when - created <= CAUSE_WINDOW


def _causes(tdef: TableDef, record: dict, transactions: set[str]) -> dict[str, str]:
    """transaction -> the record's changes in it, in words ("State changed from Open to Awaiting Info")."""
    if not transactions:
        return {}
    defs = runtime().defs
    audit = runtime().storage.physical("sys_audit")
    rows = list(connection().execute(
        sa.select(audit.c.transaction, audit.c.fieldname, audit.c.oldvalue, audit.c.newvalue)
        .where(audit.c.documentkey == record["sys_id"], audit.c.tablename.in_(defs.lineage(tdef.name)),
               audit.c.transaction.in_(transactions))
        .order_by(audit.c.sys_created_on)).mappings())
    names = audit_names(records(), tdef, rows)
    out: dict[str, list[str]] = {}
    for r in rows:
        field = tdef.field(r["fieldname"])
        if field is None or field.ftype.journal or field.system:
            continue
        out.setdefault(r["transaction"], []).append(change_words(tdef, r, names))
    return {t: "; ".join(parts) for t, parts in out.items()}


@blueprint.get("/ui/slas/<table>/<sys_id>")
@login_required
def slas_part(table: str, sys_id: str):
    """The SLA section alone, as of now (htmx refreshes it on the form while the page is open)."""
    from .references import record_or_abort

    tdef, record = record_or_abort(table, sys_id)
    panel = sla_panel(tdef, record)
    if panel is None:
        abort(404)
    return render_template("_slas.html", slas=panel)


@blueprint.post("/ui/slas/<table>/<sys_id>/repair")
@login_required
def repair_record(table: str, sys_id: str):
    """Repair SLAs (administrators): the record's task SLAs made again from its history
    (caseloom.timing.repair); back to its form, saying what was done."""
    from .references import record_or_abort

    tdef, record = record_or_abort(table, sys_id)
    try:
        done = repair(records(), tdef.name, Term("sys_id", "eq", record["sys_id"]), source="form")
    except AccessDenied:  # not an administrator
        abort(403)
    except RepairRefused as exc:
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash(f"{done.words(tdef.label.lower())}. Logged as {done.number}.")
    return redirect(url_for("ui.dispatch", name=tdef.name, sys_id=record["sys_id"]) + "#slas")


@blueprint.post("/ui/slas/<table>/repair")
@login_required
def repair_list(table: str):
    """Repair SLAs (administrators) of the records a list's filter matches (`sysparm_query`): back to the
    list saying what was done, or, for more than one request repairs, with the panel of the background
    job doing it (`job`)."""
    from ...jobs import repair_or_start
    from ..jobs_api import queue
    from .lists import readable_table

    tdef = readable_table(table)
    query = request.form.get("sysparm_query", "")
    back = {"name": f"{tdef.name}_list", "sysparm_query": query or None}
    try:
        outcome = repair_or_start(records(), tdef.name, query, source="list")
    except AccessDenied:  # not an administrator
        abort(403)
    except (RepairRefused, QueryError) as exc:
        flash(f"The SLAs were not repaired: {exc}", "error")
        return redirect(url_for("ui.dispatch", **back))
    logged = f" Logged as {outcome.log.number}."
    db.session.commit()
    if outcome.job is not None:
        queue(current_app).enqueue_job(outcome.job)
        flash(f"{outcome.message}; its progress shows below.{logged}")
        return redirect(url_for("ui.dispatch", **back, job=outcome.job))
    flash(outcome.message + "." + logged)
    return redirect(url_for("ui.dispatch", **back))


__all__ = ["BANDS", "Band", "band", "short_words", "sla_panel", "time_words", "width_class"]
