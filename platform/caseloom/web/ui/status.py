"""System status for administrators (`/ui/status`): what `caseloom.status` reads, as a page that
refreshes itself (the part `/ui/status?part=1`, every few seconds, no more often than its reads allow)."""

from __future__ import annotations

from flask import current_app, render_template, request

from ...jobs.cancel import cancel_refusal
from ...status import JobLine, Status, read_status
from ..auth import records, runtime
from ..jobs_api import queue
from ..operations import HEALTH
from ..serialize import display_names
from . import admin_required, blueprint
from .members import job_label
from .slas import short_words
from .workspace import refresh_every

REFRESH = 5  # seconds between two refreshes of the page's part, at least


@blueprint.get("/ui/status", endpoint="status")
@admin_required
def status_page():
    shown = _shown(read_status(runtime(), queue(current_app), current_app.extensions[HEALTH]))
    if request.args.get("part") == "1":
        return render_template("_status.html", s=shown)
    return render_template("status.html", s=shown)


def _shown(status: Status) -> dict:
    """The status as the page draws it: each job with its label, its record's name and link, its times in words."""
    service = records()
    defs = runtime().defs
    lines = status.active + status.ended
    wanted: dict[str, set[str]] = {}
    for line in lines:
        if line.record and line.record[0] in defs.tables:
            wanted.setdefault(line.record[0], set()).add(line.record[1])
    names = display_names(service, wanted) if wanted else {}
    return {"status": status, "refresh": refresh_every(REFRESH, status.read_seconds),
            "active": [_job(line, names, service) for line in status.active],
            "ended": [_job(line, names, service) for line in status.ended],
            "lost": len(status.lost)}


def _job(line: JobLine, names: dict, service) -> dict:
    job, record, tables = line.job, line.record, runtime().defs.tables
    known = record is not None and record[0] in tables
    return {"line": line, "job": job, "label": job_label(service, job),
            "record_url": f"/{record[0]}.do?sys_id={record[1]}" if known else None,
            "record_name": (names.get(record) or record[1]) if record else None,
            "record_table": tables[record[0]].label if known else (record[0] if record else None),
            "took": short_words(line.seconds), "heard": None if line.heard_seconds is None else short_words(line.heard_seconds),
            "percent": int(100 * job.done / job.total) if job.total else None,
            "can_stop": not job.finished and cancel_refusal(service, job) is None}
