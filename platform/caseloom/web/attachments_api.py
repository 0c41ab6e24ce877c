"""ServiceNow's Attachment API (contract section 11): upload a file to a record, list, read its
metadata, download it, delete it. Access follows the record (caseloom.attachments)."""

from __future__ import annotations

import json
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request

from .. import attachments
from ..query import parse_encoded
from ..query.compile import MAX_OFFSET
from . import db
from .api import MAX_LIMIT, _int_param, request_shape
from .auth import act_as, api_actor, records, runtime
from .errors import ApiError
from .serialize import Shape, base_url, make_shape, render_record

blueprint = Blueprint("attachments_api", __name__, url_prefix="/api/now/attachment")


@blueprint.before_request
def _authenticate() -> None:
    act_as(api_actor())


def render(record: dict, shape: Shape | None = None) -> dict:
    """An attachment as ServiceNow returns it: its fields as strings, and where to download it (always,
    whatever `shape` holds)."""
    out = render_record(shape or _shape(), record)
    out["download_link"] = f"{base_url().rstrip('/')}/api/now/attachment/{record['sys_id']}/file"
    return out


def _shape() -> Shape:
    """Every field, as values."""
    rt = runtime()
    return make_shape(rt.defs.tables, rt.defs.tables[attachments.TABLE], None, None, "true", base_url())


def _asked_shape() -> Shape:
    """The fields and display values the request asks for, read as the Table API reads them (its 400s
    for an unknown field or mode too); access is the record's (caseloom.attachments), not field rules."""
    return request_shape(attachments.TABLE, None)


def _refused(exc: attachments.Refused) -> ApiError:
    return ApiError(exc.status, exc.message, exc.detail)


@blueprint.post("/file")
def upload():
    """POST /api/now/attachment/file?table_name=T&table_sys_id=ID&file_name=F, the file as the body."""
    args = request.args
    missing = [name for name in ("table_name", "table_sys_id", "file_name") if not args.get(name)]
    if missing:
        raise ApiError(400, f"{missing[0]} is required", "POST /api/now/attachment/file?table_name=T&table_sys_id=ID"
                                                         "&file_name=F with the file as the body")
    try:
        record = attachments.attach(records(), args["table_name"], args["table_sys_id"], args["file_name"],
                                    request.content_type, request.get_data(cache=False))
    except attachments.Refused as exc:
        raise _refused(exc) from None
    db.session.commit()
    response = jsonify({"result": render(record)})
    response.status_code = 201
    response.headers["Location"] = f"{base_url().rstrip('/')}/api/now/attachment/{record['sys_id']}"
    return response


@blueprint.get("")
def list_attachments():
    """GET /api/now/attachment?sysparm_query=...: the attachments of records the user may read, with the
    fields and display values `sysparm_fields` and `sysparm_display_value` ask for."""
    limit = _int_param("sysparm_limit", MAX_LIMIT, minimum=1, maximum=MAX_LIMIT, clamp=True)
    offset = _int_param("sysparm_offset", 0, maximum=MAX_OFFSET)
    shape = _asked_shape()
    rows, total = attachments.find(records(), parse_encoded(request.args.get("sysparm_query")), limit, offset)
    response = jsonify({"result": [render(row, shape) for row in rows]})
    response.headers["X-Total-Count"] = str(total)
    return response


@blueprint.get("/<sys_id>")
def get_attachment(sys_id: str):
    shape = _asked_shape()
    return jsonify({"result": render(attachments.get(records(), sys_id), shape)})


@blueprint.get("/<sys_id>/file")
def download(sys_id: str):
    """The file's bytes, always as a download (never shown inline: an uploaded HTML or SVG file must
    not run in the application's origin)."""
    file = attachments.content(records(), sys_id)
    name = file.record["file_name"]
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    response = Response(file.data, mimetype=file.record["content_type"] or "application/octet-stream")
    response.headers["Content-Disposition"] = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["X-Attachment-Metadata"] = json.dumps(render(file.record))  # as ServiceNow sends it
    return response


@blueprint.delete("/<sys_id>")
def delete_attachment(sys_id: str):
    attachments.delete(records(), sys_id)
    db.session.commit()
    return Response(status=204)


def register(app) -> None:
    from . import csrf

    app.register_blueprint(blueprint)
    csrf.exempt(blueprint)  # API requests check CSRF themselves for cookie sessions (auth.api_actor)
