"""The definitions API (admin): read, change, delete and restore definition files.

A change is validated as a whole new set (422 with every located error otherwise),
the schema is migrated, the file is written to the database (and the definitions
folder), and every server process picks the new set up on its next request.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from ..definitions.store import BadPath, DefinitionStore, check_path, version_of
from ..migrate import DataLossRefused, migrate_connection
from ..runtime import Runtime
from ..storage import Storage
from . import db
from .auth import connection, runtime
from .errors import ApiError

blueprint = Blueprint("definitions_api", __name__, url_prefix="/api/caseloom/definitions")


def _store() -> DefinitionStore:
    return DefinitionStore(runtime().storage, connection())


@blueprint.before_request
def _admin_only() -> None:
    from .auth import api_actor

    g.actor = api_actor()
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
                               for f in _store().listing()]})


@blueprint.get("/history")
def history():
    return jsonify({"result": [
        {"id": e.id, "path": e.path, "action": e.action, "user": e.user,
         "created_on": e.created_on.strftime("%Y-%m-%d %H:%M:%S")} for e in _store().history()]})


@blueprint.post("/history/<int:entry_id>/restore")
def restore(entry_id: int):
    entry = _store().entry(entry_id)
    if entry is None:
        raise ApiError(404, "No Record found", f"no definitions history entry {entry_id}")
    text = entry.new_text if entry.new_text is not None else entry.old_text
    return _change(entry.path, text, action="restore")


@blueprint.get("/<path:path>")
def get_definition(path: str):
    text = _store().texts().get(_path(path))
    if text is None:
        raise ApiError(404, "No Record found", f"no definition file {path}")
    return Response(text, mimetype="application/yaml")


@blueprint.put("/<path:path>")
def put_definition(path: str):
    text = request.get_data(as_text=True)
    if not text.strip():
        raise ApiError(400, "empty definition", "send the YAML text as the request body")
    return _change(_path(path), text)


@blueprint.delete("/<path:path>")
def delete_definition(path: str):
    path = _path(path)
    if path not in _store().texts():
        raise ApiError(404, "No Record found", f"no definition file {path}")
    return _change(path, None)


def _change(path: str, text: str | None, action: str | None = None):
    store = _store()
    _, defs = store.candidate(path, text)  # DefinitionErrors -> 422 with every error located
    force = request.args.get("force", "").lower() == "true"
    try:
        applied = migrate_connection(connection(), Storage(defs), force=force)
    except DataLossRefused as exc:
        raise ApiError(409, "the change would lose data; nothing was changed", exc.losses) from None
    store.write(path, text, g.actor.user_name, action)
    generation = store.generation()
    db.session.commit()
    _write_folder(path, text)
    _install(current_app, defs, generation)
    version = version_of(text) if text is not None else None
    return jsonify({"result": {"path": path, "action": action or ("delete" if text is None else "save"),
                               "version": version, "schema_changes": applied}})


def _write_folder(path: str, text: str | None) -> None:
    """Keep the definitions folder in step, so `caseloom init` and the repository agree."""
    folder = Path(runtime().config.definitions)
    if not folder.is_dir():
        return
    target = folder / path
    if text is None:
        target.unlink(missing_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _install(app: Flask, defs, generation: int) -> None:
    old: Runtime = app.extensions["caseloom"]
    app.extensions["caseloom"] = Runtime(old.config, defs, engine=old.engine)
    app.extensions["caseloom_generation"] = generation


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)

    @app.before_request
    def _follow_definitions() -> None:
        """Another process changed the definitions: load the new set before serving."""
        rt: Runtime = app.extensions["caseloom"]
        store = DefinitionStore(rt.storage, connection())
        generation = store.generation()
        if generation != app.extensions.get("caseloom_generation"):
            texts = store.texts()
            if texts:
                from ..definitions import load_sources

                _install(app, load_sources(sorted(texts.items())), generation)
            else:
                app.extensions["caseloom_generation"] = generation
        g.runtime = app.extensions["caseloom"]
