"""Member lists in the browser: preview, CSV import with its report, the script editor, job progress."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for

from ...jobs import Job, find_undo, get_job, job_refusal, stop_job, undo_job
from ...jobs.cancel import cancel_refusal, job_action
from ...jobs.progress import QUEUED, RUNNING, record_jobs
from ...jobs.registry import LABELS, TARGETS
from ...jobs.undo import UNDONE, created_count, created_noun, undo_conflict, undo_refusal
from ...memberlists import MemberLists
from ...records import AccessDenied, Conflict, NotFound, RecordError
from .. import db
from ..api import text_stream
from ..auth import connection, records, rollback, runtime, safe_path
from . import blueprint, login_required


def _lists(table: str) -> MemberLists:
    mdef = runtime().defs.member_list_for(table)
    if mdef is None:
        abort(404)
    return MemberLists(records(), mdef)


def member_panel(table: str, record: dict) -> dict | None:
    """What a list's form shows about its members (None for tables that hold no lists)."""
    mdef = runtime().defs.member_list_for(table)
    if mdef is None or not record:
        return None
    lists = MemberLists(records(), mdef)
    mtype = mdef.types.get(record.get(mdef.type_field))
    return {"count": lists.count_members(record["sys_id"]), "can_write": records().can(table, "write"),
            "script_field": mdef.script_field, "type": record.get(mdef.type_field),
            "conditions_field": mdef.conditions_field, "target": mtype.table if mtype else None,
            "conditions": record.get(mdef.conditions_field) or "" if mdef.conditions_field else ""}


@blueprint.post("/ui/members/<table>/<sys_id>/condition")
@login_required
def use_condition(table: str, sys_id: str):
    """The filter built in the list of the list's type table becomes the list's condition."""
    lists = _lists(table)
    if not lists.mdef.conditions_field:
        abort(404)
    try:
        records().update(table, sys_id, {lists.mdef.conditions_field: request.form.get("sysparm_query", "")})
    except (RecordError, AccessDenied) as exc:
        rollback()
        flash(f"Condition not saved: {exc}", "error")
    else:
        db.session.commit()
        flash("Condition saved. Preview or Refresh to see who it identifies.")
    return redirect(url_for("ui.dispatch", name=table, sys_id=sys_id))


def running_job(table: str, sys_id: str) -> JobPanel | None:
    """The job panel of a record's form: its background action's job while it is queued or running
    (with Stop), else its last one if it created records it has not undone (with Undo); for a record a
    kind of job reports on (`registry.TARGETS`: an SLA repair's log), that job's, running or ended."""
    reporting = [name for name, target in TARGETS.items() if target == table]
    names = [f"action:{a.name}" for a in runtime().defs.actions_for(table) if a.background]
    jobs = record_jobs(connection(), runtime().storage, reporting + names, table, sys_id)  # the active ones first

    def newest(kinds: list[str]) -> Job | None:
        return max((j for j in jobs if j.name in kinds), key=lambda j: j.created_on, default=None)

    job = newest(reporting)
    if job is not None:
        return job_panel(job)
    for name in names:
        job = next((j for j in jobs if j.name == name and j.state in (QUEUED, RUNNING)), None)
        if job is not None:
            return job_panel(job)
    job = newest(names)
    if job is None or not created_count(job) or job.params.get(UNDONE):
        return None
    return job_panel(job)


@dataclass(frozen=True)
class JobPanel:
    """A job as its panel shows it (`_job.html`): the job's own attributes, its action's label, and
    what the user may do with it now."""

    job: Job
    label: str
    can_cancel: bool
    undo_offer: str | None  # "Undo: remove the 40 cases it created", for who may undo it now

    def __getattr__(self, name: str):
        if name == "job":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.job, name)


def job_label(service, job: Job) -> str:
    """A job's name as people read it: its action's label, or its kind's ("Repair SLAs")."""
    action = job_action(service, job)
    return action.label if action is not None else LABELS.get(job.name) or job.name.replace("_", " ").capitalize()


def job_panel(job: Job) -> JobPanel:
    service = records()
    label = job_label(service, job)
    can_cancel = not job.finished and cancel_refusal(service, job) is None
    offer = None
    count = created_count(job)
    if job.finished and count and undo_conflict(job) is None and undo_refusal(service, job) is None:
        offer = f"Undo: remove the {count} {created_noun(service, job, count)} it created"
    return JobPanel(job, label, can_cancel, offer)


@blueprint.get("/ui/members/<table>/<sys_id>/preview")
@login_required
def preview(table: str, sys_id: str):
    lists = _lists(table)
    try:
        result = lists.preview(sys_id)
        target = runtime().defs.tables[lists.mtype(lists.record(sys_id)).table]
    except AccessDenied:
        abort(403)
    except (RecordError, NotFound) as exc:
        return render_template("_preview.html", error=str(exc))
    except Exception as exc:  # a script refused or failed: show why, with its line
        return render_template("_preview.html", error=str(exc))
    columns, rows = _sample(target, [r["sys_id"] for r in result["sample"]])
    return render_template("_preview.html", preview=result, target=target, columns=columns, rows=rows)


def _sample(target, ids: list[str]) -> tuple[list, list[dict]]:
    """A preview's sample as a list of the members' table shows it: its declared columns, in words."""
    from ...query import Query, Term
    from ..serialize import base_url, make_shape, render_record
    from .lists import readable_columns

    service = records()
    columns = readable_columns(service, target)
    shape = make_shape(runtime().defs.tables, target, ",".join(columns), "all", "true", base_url(), service.readable)
    found = {r["sys_id"]: r for r in service.query(target.name, Query(Term("sys_id", "in", ids)), shape.columns())} \
        if ids else {}
    rows = [render_record(shape, found[i]) | {"sys_id": i} for i in ids if i in found]
    return [(c, shape.fields[c]) for c in columns], rows


@blueprint.post("/ui/members/<table>/<sys_id>/import")
@login_required
def import_csv(table: str, sys_id: str):
    lists = _lists(table)
    upload = request.files.get("file")
    source = text_stream(upload.stream) if upload else request.form.get("csv", "")
    try:
        records().table(table, "write")
        report = lists.import_csv(sys_id, source, runtime().config.max_import_rows)
    except (RecordError, AccessDenied) as exc:
        rollback()
        flash(f"Import refused: {exc}", "error")
        return redirect(url_for("ui.dispatch", name=table, sys_id=sys_id))
    db.session.commit()
    return render_template("import_report.html", report=report, table=table, sys_id=sys_id, actor=g.actor)


@blueprint.route("/ui/script/<table>/<sys_id>", methods=["GET", "POST"])
@login_required
def script_editor(table: str, sys_id: str):
    """For implementers: edit a list's script, run it as a preview against the database (count,
    sample, log, time, errors at their line), and save it."""
    lists = _lists(table)
    mdef = lists.mdef
    if not mdef.script_field:
        abort(404)
    record = lists.record(sys_id)
    if not records().can(table, "write"):
        abort(403)
    source = request.form.get("script", record.get(mdef.script_field) or "")
    outcome, error = None, None
    if request.method == "POST" and request.form.get("do") == "save":
        try:
            values = {mdef.script_field: source}
            if mdef.script_flag_field:
                values[mdef.script_flag_field] = "true"
            records().update(table, sys_id, values)
        except RecordError as exc:
            rollback()
            error = str(exc)
        else:
            db.session.commit()
            flash("Script saved.")
            return redirect(url_for("ui.script_editor", table=table, sys_id=sys_id))
    elif request.method == "POST":
        outcome, error = _run(lists, record, source)
    return render_template("script_editor.html", record=record, source=source, outcome=outcome, error=error,
                           table=table, tdef=runtime().defs.tables[table], actor=g.actor)


def _run(lists: MemberLists, record: dict, source: str):
    service = records()
    started = time.perf_counter()
    try:  # the text being edited is the user's own: it reads with the user's access
        result = lists.run_script(record, source, "script", service.actor)
    except Exception as exc:  # refused (FILE:LINE: why), failed, past a limit or the budget: the message says which
        return None, str(exc)
    mtype = lists.mtype(record)
    found = service.existing_ids(mtype.table, set(result.sys_ids))
    sample = [i for i in result.sys_ids if i in found][:10]
    target = runtime().defs.tables[mtype.table]
    columns = ["sys_id"] + [c for c in (target.display, "number") if c and target.field(c) is not None]
    from ...query import Query, Term

    rows = service.query(mtype.table, Query(Term("sys_id", "in", sample)), list(dict.fromkeys(columns))) if sample else []
    return {"count": result.count, "valid": len(found), "rejected": result.count - len(found), "sample": rows,
            "log": result.log, "elapsed_ms": result.elapsed_ms,
            "total_ms": round((time.perf_counter() - started) * 1000)}, None


@blueprint.get("/ui/job/<job_id>")
@login_required
def job_progress(job_id: str):
    """The progress fragment; it polls itself while the job runs. Only for users who may see the
    job (who may read its target record; for a job without one, admins and who started it)."""
    job = get_job(connection(), runtime().storage, job_id)
    if job is None:
        abort(404)
    if job_refusal(records(), job):
        abort(403)
    response = current_app.make_response(render_template("_job.html", job=job_panel(job)))
    if job.finished:  # the record's related lists reload: the children the job made show at once
        response.headers["HX-Trigger"] = "job-finished"
    return response


def _job_or_404(job_id: str) -> Job:
    job = get_job(connection(), runtime().storage, job_id)
    if job is None:
        abort(404)
    if job_refusal(records(), job):
        abort(403)
    return job


def _back(job: Job) -> str:
    """Where the job's controls return to: the page the form names (`back`, a path of this site: System status),
    else its record's form (the home page for a job without one)."""
    named = safe_path(request.form.get("back")) if request.method == "POST" else None
    if named:
        return named
    if job.target_table and job.target_sys_id:
        return url_for("ui.dispatch", name=job.target_table, sys_id=job.target_sys_id)
    return url_for("home")


@blueprint.post("/ui/job/<job_id>/cancel")
@login_required
def job_cancel(job_id: str):
    """Stop a queued or running job from its panel (a plain form post: no JavaScript needed)."""
    job = _job_or_404(job_id)
    label = job_panel(job).label
    try:
        stopped = stop_job(records(), job_id)
    except (AccessDenied, Conflict) as exc:
        rollback()
        flash(f"{label}: not stopped. {exc}", "error")
        return redirect(_back(job))
    db.session.commit()
    flash(f"{label} {stopped.message}. What it did so far stays; running it again does the rest.")
    return redirect(_back(job))


@blueprint.get("/ui/job/<job_id>/undo")
@login_required
def job_undo_page(job_id: str):
    """The confirmation of an undo, with its numbers: what would be removed, what stays and why."""
    job = _job_or_404(job_id)
    _, plan, why = find_undo(records(), job_id)
    return render_template("job_undo.html", job=job_panel(job), plan=plan, why=why, back=_back(job), actor=g.actor)


@blueprint.post("/ui/job/<job_id>/undo")
@login_required
def job_undo(job_id: str):
    """Undo what the job created (caseloom.jobs.undo), in this request's one transaction."""
    job = _job_or_404(job_id)
    label = job_panel(job).label
    try:
        done = undo_job(records(), job_id)
    except (AccessDenied, Conflict, NotFound) as exc:
        rollback()
        flash(f"Undo {label.lower()}: not done. {exc}", "error")
        return redirect(_back(job))
    db.session.commit()
    flash(f"Undo {label.lower()}: {done.sentence()}")
    return redirect(_back(job))
