"""Errors in the contract's shape: {"error": {"message", "detail"}, "status": "failure"}."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from ..database import LOCK_NOT_AVAILABLE, is_busy, is_transient, is_unreachable
from ..definitions import DefinitionErrors
from ..migrate import TablesInUse
from ..query import QueryError
from ..records import AccessDenied, Conflict, NotFound, RecordError
from . import db


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail=None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers or {}


def bounded_body(limit: int, setting: str, what: str = "The body") -> bytes:
    """The request's body, or a 413 naming the `setting` that bounds it: refused before reading when its
    Content-Length says it is too large, and after when it turns out so."""
    from flask import request

    if (request.content_length or 0) > limit:
        raise ApiError(413, f"{what} is larger than {limit:,} bytes", f"the {setting} property")
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise ApiError(413, f"{what} is larger than {limit:,} bytes", f"the {setting} property")
    return raw


def declared_text(raw: bytes) -> bytes | str:
    """A JSON body as the request declares it: decoded from the Content-Type's `charset` when it names
    one (a 415 when no codec has that name, a 400 naming the first byte that is not in it); without
    one the bytes as they are, which json.loads reads as UTF-8 (or UTF-16/32 by their BOM)."""
    import codecs

    from flask import request

    charset = request.mimetype_params.get("charset")
    if not charset:
        return raw
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        raise ApiError(415, f"charset {charset[:40]!r} is not a known character set", "send the body as UTF-8") from None
    try:
        return raw.decode(codec.name)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"The body is not {charset[:40]}: byte 0x{raw[exc.start]:02x} at offset {exc.start}",
                       "send the body in the charset its Content-Type names") from None


def error_response(status: int, message: str, detail=None, headers: dict | None = None):
    db.session.rollback()
    if not _wants_json():  # a person in a browser reads a page in words, never raw JSON
        return error_page(status, message, detail if isinstance(detail, str) else "", headers)
    body = {"error": {"message": message, "detail": detail if detail is not None else ""}, "status": "failure"}
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


MACHINE_PATHS = ("/api/", "/health", "/metrics")  # asked by programs: errors in JSON, never a page


def _wants_json() -> bool:
    return request.path.startswith(MACHINE_PATHS) or request.accept_mimetypes.best == "application/json"


# What a person reads for an error in the browser: a heading and what to do next.
PAGES = {
    400: ("This request could not be used", "Go back, check what you entered and try again."),
    401: ("Please sign in", "Your session has ended: sign in again."),
    403: ("You may not open this page", "Your roles do not give access to it. Ask an administrator if you need it."),
    404: ("Not found", "The page or record does not exist, or it was deleted."),
    405: ("This page cannot be used that way", "Go back and use the page's own buttons."),
    409: ("Not done: the record changed", "Reload the record and try again."),
    413: ("Too large", "What you sent is larger than the server accepts."),
    422: ("Not done", "Nothing was changed."),
    429: ("Too many attempts", "Wait a moment and try again."),
    503: ("Busy: nothing was changed", "Wait a moment and try again."),
}
BUSY_RETRY_SECONDS = 5
BUSY_MESSAGE = "The database is busy: try again in a moment"
RESEND_WORDS = "What you sent is kept below: send it again in a moment."
# a form sending a field so named is not kept on the busy page: what it holds is never shown back
SECRET_FIELD_WORDS = ("password", "secret")
CSRF_WORDS = ("The form had expired or did not come from this site, so nothing was done. Go back, reload the page and "
              "try again.")


def error_page(status: int, message: str, detail: str = "", headers: dict | None = None, resend: dict | None = None):
    """The error as a page of the UI (the top bar and the menu, a heading, what happened, a way on);
    `resend`: what a refused form sent, to send again from the page (`_resend`)."""
    from flask import g, render_template

    title, advice = PAGES.get(status, ("Something went wrong", "Go back and try again."))
    said = detail or message
    if "CSRF" in said:
        said, advice = CSRF_WORDS, ""
    if resend:
        advice = RESEND_WORDS
    said = said[:1].upper() + said[1:]  # a sentence of the page, whatever case the API's detail starts with
    portal = None if resend else _portal_of_request(g.get("actor"))
    if portal is not None:  # a customer stays in their portal's pages, never the staff menu (nor its advice)
        template, advice = "portal/error.html", "" if status == 403 else advice
    else:
        template = "error.html"
    page = render_template(template, status=status, title=title, message=said, advice=advice,
                           actor=g.get("actor"), resend=resend, portal=portal)
    return page, status, {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}


def _portal_of_request(actor):
    """The portal an error page belongs to: the one the request was for, or the one a user of no staff
    page lands on (a customer); None for staff."""
    from flask import current_app, g

    rt = g.get("runtime") or current_app.extensions.get("caseloom")
    if rt is None:
        return None
    defs = rt.defs
    name = (request.view_args or {}).get("name") if request.blueprint == "portal" else None
    if name in defs.portals:
        return defs.portals[name]
    return defs.portal_of(actor.roles) if actor is not None else None


UNREACHABLE_MESSAGE = "The database cannot be reached: try again in a moment"


def _busy(detail: str, message: str = BUSY_MESSAGE):
    """503 with Retry-After: the database could not do it now, and nothing was changed. A form's post
    is answered with a page that keeps what it sent, to send again."""
    headers = {"Retry-After": str(BUSY_RETRY_SECONDS)}
    if request.method == "POST" and not _wants_json():
        db.session.rollback()
        return error_page(503, message, detail, headers, _resend())
    return error_response(503, message, detail, headers)


def _resend() -> dict | None:
    """What a browser's form sent, for the busy page to send again unchanged (nothing was changed, so
    sending it again is safe; its CSRF token is the session's, which still holds) and to show, so
    nothing typed is lost: none for htmx's partial requests, a sign-in, a form with a password or a
    secret (never shown back), or one with a file (not kept: it is chosen again)."""
    if request.headers.get("HX-Request") or request.endpoint == "login" or request.files:
        return None
    fields = list(request.form.items(multi=True))
    if any(word in name.lower() for name, _ in fields for word in SECRET_FIELD_WORDS):
        return None
    typed = [(name, value) for name, value in fields if value.strip() and name != "csrf_token"]
    return {"action": request.full_path.rstrip("?"), "fields": fields, "typed": typed}


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
        return error_response(409, str(exc), {"field": exc.field, "reason": str(exc)} if exc.field else "")

    @app.errorhandler(sa.exc.OperationalError)
    def busy(exc: sa.exc.OperationalError):
        """The database could not do the work now (another write held it too long, a deadlock):
        503 with Retry-After, the request's transaction rolled back whole. Any other error of the
        database is a fault of the server, answered 500 as before."""
        if is_unreachable(exc):  # never its message: it may name the server and its user
            return _busy("the database cannot be reached now; nothing was changed", UNREACHABLE_MESSAGE)
        if not is_transient(exc):
            raise exc
        state = getattr(exc.orig, "sqlstate", None)
        if is_busy(exc) or state == LOCK_NOT_AVAILABLE:  # SQLite's write lock, or a lock on PostgreSQL, not had in time
            return _busy("the database is busy: another write held what this request needed for longer than it "
                         f"waits{f' ({state})' if state else ''}; nothing was changed")
        return _busy(f"the database stopped this write to let another one finish ({state}); nothing was changed")

    @app.errorhandler(TablesInUse)
    def tables_in_use(exc: TablesInUse):
        return _busy(str(exc))

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
            if exc.code in (301, 302, 303, 307, 308) or exc.code is None:
                return exc
            # werkzeug's own sentence ("...read-protected or not readable by the server") is not ours:
            # the page's title and advice say it; a description given with abort() is shown
            said = exc.description if exc.description != type(exc).description else ""
            return error_page(exc.code, "", said or "", dict(exc.get_headers()))
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}  # e.g. a 405's Allow
        return error_response(exc.code or 500, exc.name, exc.description, headers)
