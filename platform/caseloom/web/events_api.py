"""Events in over HTTP (contract section 11): `POST /api/global/em/jsonv2` with ServiceNow's body
`{"records": [{source, node, type, resource, metric_name, severity, message_key, description,
additional_info, time_of_event}, ...]}`, for a monitoring tool to push what it sees. It needs
create access to em_event (admin, or a role an application's access rules give it, as
ServiceNow's evt_mgmt_integration). Each event is checked on its own: the good ones are kept and
folded into alerts (caseloom.events), the bad ones listed by their index and why."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request

from ..events import EVENTS, MAX_BYTES, MAX_RECORDS, EventError, ingest, records_of
from ..properties import Properties
from . import db
from .auth import act_as, api_actor, connection, records, runtime
from .errors import ApiError, bounded_body, declared_text
from .jobs_api import queue

blueprint = Blueprint("events_api", __name__, url_prefix="/api/global/em")


@blueprint.before_request
def _authenticate() -> None:
    act_as(api_actor())


@blueprint.post("/jsonv2")
def jsonv2():
    """200 and what became of the batch: `{"result": {"Default Bulk Endpoint": "N events were inserted",
    "inserted", "alerts_opened", "alerts_updated", "ignored", "errors": [{"index", "reason"}]}}`; 400
    when the body is not such a batch or no event in it could be kept (nothing is), 413 over the size
    or count limit, 415 for another content type, 403 without create access to em_event."""
    service = records()
    service.table(EVENTS, "create")
    if (request.mimetype or "").lower() != "application/json":
        raise ApiError(415, f"Content-Type {request.mimetype or '(none)'} is not JSON",
                       "send the events as a JSON body with Content-Type: application/json")
    rt = runtime()
    props = Properties(rt.defs, rt.storage, connection())
    raw = bounded_body(props.get(MAX_BYTES), MAX_BYTES)
    try:
        body = json.loads(declared_text(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "The body is not JSON", str(exc)) from None
    try:
        batch = records_of(body, props.get(MAX_RECORDS))
    except EventError as exc:
        status = 413 if str(exc).endswith(f"({MAX_RECORDS})") else 400
        raise ApiError(status, "The body is not a batch of events", str(exc)) from None
    outcome = ingest(service, batch, props)
    if batch and not outcome.inserted:
        raise ApiError(400, "No event of the batch could be kept", [r.as_json() for r in outcome.rejected])
    db.session.commit()
    for job in outcome.jobs:  # the alert rules' background actions (child cases for every customer)
        queue(current_app).enqueue_job(job)
    return jsonify({"result": outcome.as_json()})


def register(app) -> None:
    from . import csrf

    app.register_blueprint(blueprint)
    csrf.exempt(blueprint)  # API requests check CSRF themselves for cookie sessions (auth.api_actor)
