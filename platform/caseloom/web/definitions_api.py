"""The definitions API (admin): read, change, delete and restore definition files.

A change goes the one way every change to the definitions goes (web.live_definitions):
validated as a whole new set (422 with every located error otherwise), the schema migrated
(409 with what would be lost, unless `?force=true`), the file stored with its history and
written to the definitions folder, and every server process picks the new set up on its
next request.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, g, jsonify, request

from ..containsindex import ExtensionMissing
from ..definitions.store import BadPath, check_path, version_of
from ..migrate import DataLossRefused
from . import live_definitions
from .errors import ApiError

blueprint = Blueprint("definitions_api", __name__, url_prefix="/api/caseloom/definitions")
MAX_ENTRY_ID = 2**31 - 1  # history ids are 32-bit integers: a larger one names no entry


@blueprint.before_request
def _admin_only() -> None:
    from .auth import act_as, api_actor

    act_as(api_actor())
    if not g.actor.is_admin:
        raise ApiError(403, "User Not Authorized", "the definitions API needs the admin role")


def _path(path: str) -> str:
    try:
        return check_path(path)
    except BadPath as exc:
        raise ApiError(400, "bad definition path", str(exc)) from None


@blueprint.get("")
def list_definitions():
    return jsonify({"result": [{**f, "updated_on": f["updated_on"].strftime("%Y-%m-%d %H:%M:%S")}
                               for f in live_definitions.store().listing()]})


@blueprint.get("/history")
def history():
    return jsonify({"result": [
        {"id": e.id, "path": e.path, "action": e.action, "user": e.user,
         "created_on": e.created_on.strftime("%Y-%m-%d %H:%M:%S")} for e in live_definitions.store().history()]})


@blueprint.post("/history/<int:entry_id>/restore")
def restore(entry_id: int):
    entry = live_definitions.store().entry(entry_id) if entry_id <= MAX_ENTRY_ID else None
    if entry is None:
        raise ApiError(404, "No Record found", f"no definitions history entry {entry_id}")
    return _change(entry.path, entry.restored_text, action="restore")


@blueprint.get("/<path:path>")
def get_definition(path: str):
    text = live_definitions.store().texts().get(_path(path))
    if text is None:
        raise ApiError(404, "No Record found", f"no definition file {path}")
    return Response(text, mimetype="application/yaml")


@blueprint.put("/<path:path>")
def put_definition(path: str):
    raw = request.get_data()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} cannot be "
                            f"read", "send the YAML file as UTF-8") from None
    if not text.strip():
        raise ApiError(400, "empty definition", "send the YAML text as the request body")
    return _change(_path(path), text)


@blueprint.delete("/<path:path>")
def delete_definition(path: str):
    path = _path(path)
    if path not in live_definitions.store().texts():
        raise ApiError(404, "No Record found", f"no definition file {path}")
    return _change(path, None)


def _change(path: str, text: str | None, action: str | None = None):
    asked = request.args.get("force", "false").lower()
    if asked not in ("true", "false"):
        raise ApiError(400, f"force: expected true or false, got {request.args['force'][:50]!r}", "force")
    force = asked == "true"
    try:
        done = live_definitions.apply({path: text}, force=force, action=action)
    except DataLossRefused as exc:
        raise ApiError(409, "the change would lose data; nothing was changed", exc.losses) from None
    except ExtensionMissing as exc:
        raise ApiError(409, "the database cannot make what the change needs; nothing was changed", str(exc)) from None
    return jsonify({"result": {"path": path, "action": action or ("delete" if text is None else "save"),
                               "version": version_of(text) or None, "schema_changes": list(done.schema_changes),
                               "not_built": list(done.not_built)}})


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)
    live_definitions.register(app)
