"""A record's attachments on its form: the files, each a download, a file picker to attach one and
a button to delete one, for whoever may write the record (caseloom.attachments)."""

from __future__ import annotations

from flask import flash, redirect, request, url_for

from ... import attachments
from ...definitions.model import TableDef
from ...records import AccessDenied, NotFound
from .. import db
from ..auth import records
from . import blueprint, login_required


def attachment_panel(tdef: TableDef, record: dict) -> dict:
    """The files of a record the user may read, and whether they may attach and delete."""
    service = records()
    files = attachments.of_record(service, tdef.name, record["sys_id"])
    return {"table": tdef.name, "sys_id": record["sys_id"], "can_write": service.can(tdef.name, "write"),
            "files": [f | {"size": size_words(f["size_bytes"] or 0)} for f in files]}


def size_words(size: int) -> str:
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes" if size != 1 else "1 byte"


def _back(table: str, sys_id: str):
    return redirect(url_for("ui.dispatch", name=table, sys_id=sys_id) + "#attachments")


@blueprint.post("/ui/attachments/<table>/<sys_id>")
@login_required
def attach_file(table: str, sys_id: str):
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        flash("Choose a file to attach.", "error")
        return _back(table, sys_id)
    try:
        made = attachments.attach(records(), table, sys_id, upload.filename, upload.mimetype, upload.read())
    except attachments.Refused as exc:
        flash(f"{exc.message}. {exc.detail}".strip(), "error")
        return _back(table, sys_id)
    except (AccessDenied, NotFound) as exc:
        flash(str(exc), "error")
        return _back(table, sys_id)
    db.session.commit()
    flash(f"Attached {made['file_name']}.")
    return _back(table, sys_id)


@blueprint.post("/ui/attachments/<sys_id>/delete")
@login_required
def delete_file(sys_id: str):
    service = records()
    try:
        gone = attachments.delete(service, sys_id)
    except (AccessDenied, NotFound) as exc:
        flash(str(exc), "error")
        return redirect(url_for("home"))
    db.session.commit()
    flash(f"Deleted {gone['file_name']}.")
    return _back(gone["table_name"], gone["table_sys_id"])
