"""E-mail in over HTTP (contract section 11): `POST /api/caseloom/email/inbound` with a raw RFC 822
message as the body (Content-Type message/rfc822), for a mail server or gateway to hand over what
arrives at the support address. It needs create access to sys_email (admin, or a role given it)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..inbound import MAX_BYTES, NotAnEmail, parse, receive
from ..properties import Properties
from . import db
from .auth import act_as, api_actor, connection, records, rollback, runtime
from .errors import ApiError, bounded_body

blueprint = Blueprint("email_api", __name__, url_prefix="/api/caseloom/email")
TYPES = ("message/rfc822", "text/plain", "application/octet-stream")


@blueprint.before_request
def _authenticate() -> None:
    act_as(api_actor())


@blueprint.post("/inbound")
def inbound():
    """200 and what the message did: `{"result": {"action": "created|commented|ignored", "table",
    "sys_id", "reason", "email"}}`; 400 for what is not an e-mail, 413 over the size limit, 415 for
    another content type, 403 without create access to sys_email."""
    service = records()
    service.table("sys_email", "create")
    ctype = (request.mimetype or "").lower()
    if ctype not in TYPES:
        raise ApiError(415, f"Content-Type {ctype or '(none)'} is not an e-mail",
                       "send the raw message as the body with Content-Type: message/rfc822")
    rt = runtime()
    raw = bounded_body(Properties(rt.defs, rt.storage, connection()).get(MAX_BYTES), MAX_BYTES, "The message")
    rollback()  # the limit was read: the message is read with no transaction open (SQLite's write lock free)
    try:
        inbound = parse(raw)
    except NotAnEmail as exc:
        raise ApiError(400, "The body is not an e-mail", str(exc)) from None
    outcome = receive(records(), inbound, rt.config.smtp_from)
    db.session.commit()
    return jsonify({"result": outcome.as_json()})


def register(app) -> None:
    from . import csrf

    app.register_blueprint(blueprint)
    csrf.exempt(blueprint)  # API requests check CSRF themselves for cookie sessions (auth.api_actor)
