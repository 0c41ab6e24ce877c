"""Errors in the contract's shape: {"error": {"message", "detail"}, "status": "failure"}."""

from __future__ import annotations

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from ..definitions import DefinitionErrors
from ..query import QueryError
from ..records import AccessDenied, Conflict, NotFound, RecordError
from . import db


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail=None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers or {}


def error_response(status: int, message: str, detail=None, headers: dict | None = None):
    db.session.rollback()
    body = {"error": {"message": message, "detail": detail if detail is not None else ""}, "status": "failure"}
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.message, exc.detail, exc.headers)

    @app.errorhandler(RecordError)
    def record_error(exc: RecordError):
        detail = {"field": exc.field, "reason": exc.message}
        if exc.row is not None:
            detail["row"] = exc.row
        return error_response(400, str(exc), detail)

    @app.errorhandler(QueryError)
    def query_error(exc: QueryError):
        return error_response(400, f"invalid query: {exc}", str(exc))

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound):
        return error_response(404, "No Record found", str(exc))

    @app.errorhandler(AccessDenied)
    def denied(exc: AccessDenied):
        return error_response(403, "User Not Authorized", str(exc))

    @app.errorhandler(Conflict)
    def conflict(exc: Conflict):
        return error_response(409, str(exc), "")

    from ..effects import EffectFailed
    from ..sandbox import ScriptFailed, ScriptRefused, ScriptsDisabled

    @app.errorhandler(ScriptRefused)
    def script_refused(exc: ScriptRefused):
        return error_response(422, f"the script was refused before running: {exc}", str(exc))

    @app.errorhandler(ScriptFailed)
    def script_failed(exc: ScriptFailed):
        return error_response(422, f"the script failed and was stopped: {exc}", str(exc))

    @app.errorhandler(ScriptsDisabled)
    def scripts_disabled(exc: ScriptsDisabled):
        return error_response(409, str(exc), "the system property caseloom.scripts.enabled is false")

    @app.errorhandler(EffectFailed)
    def effect_failed(exc: EffectFailed):
        return error_response(422, f"the action failed and nothing was changed: {exc}", str(exc))

    @app.errorhandler(DefinitionErrors)
    def invalid_definitions(exc: DefinitionErrors):
        return error_response(422, "invalid definitions", [e.as_dict() for e in exc.errors])

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not _wants_json():
            return exc
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}  # e.g. a 405's Allow
        return error_response(exc.code or 500, exc.name, exc.description, headers)
