"""The Table API with ServiceNow's shapes (contract section 7)."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, current_app, g, jsonify, request, url_for

from ..query import Query, Term, parse_encoded
from ..records import NotFound
from . import db
from .auth import api_actor, records, runtime
from .errors import ApiError
from .serialize import Shape, make_shape, render_record

blueprint = Blueprint("api", __name__, url_prefix="/api")
MAX_LIMIT = 10000


@blueprint.before_request
def _authenticate() -> None:
    g.actor = api_actor()


def _int_param(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number", f"got {raw!r}") from None
    if value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}", f"got {value}")
    return min(value, maximum) if maximum else value


def _shape(table: str) -> Shape:
    rt = runtime()
    return make_shape(rt.defs.tables, rt.defs.tables[table], request.args.get("sysparm_fields"),
                      request.args.get("sysparm_display_value"),
                      request.args.get("sysparm_exclude_reference_link"), request.url_root)


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object", "send Content-Type: application/json")
    return body


def _one(table: str, sys_id: str, shape: Shape) -> dict:
    rows = records().query(table, Query(Term("sys_id", "eq", sys_id)), shape.columns(), limit=1)
    if not rows:
        raise NotFound(f"no {table} record with sys_id {sys_id}")
    return render_record(shape, rows[0])


@blueprint.get("/now/table/<table>")
def list_records(table: str):
    service = records()
    service.table(table, "read")
    query = parse_encoded(request.args.get("sysparm_query"))
    limit = _int_param("sysparm_limit", MAX_LIMIT, minimum=1, maximum=MAX_LIMIT)
    offset = _int_param("sysparm_offset", 0)
    shape = _shape(table)
    rows = service.query(table, query, shape.columns(), limit, offset)
    response = jsonify({"result": [render_record(shape, row) for row in rows]})
    total = service.count(table, query)
    response.headers["X-Total-Count"] = str(total)  # ServiceNow always sends it; clients such as pysnc rely on it
    if request.args.get("sysparm_suppress_pagination_header", "").lower() != "true":
        response.headers["Link"] = _links(table, total, limit, offset)
    return response


def _links(table: str, total: int, limit: int, offset: int) -> str:
    base = url_for("api.list_records", table=table, _external=True)

    def link(at: int, rel: str) -> str:
        args = {k: v for k, v in request.args.items() if k not in ("sysparm_offset", "sysparm_limit")}
        args.update(sysparm_limit=limit, sysparm_offset=max(at, 0))
        return f'<{base}?{urlencode(args)}>;rel="{rel}"'

    last = max(((total - 1) // limit) * limit, 0)
    parts = [link(0, "first")]
    if offset > 0:
        parts.append(link(offset - limit, "prev"))
    if offset + limit < total:
        parts.append(link(offset + limit, "next"))
    parts.append(link(last, "last"))
    return ",".join(parts)


@blueprint.get("/now/table/<table>/<sys_id>")
def get_record(table: str, sys_id: str):
    records().table(table, "read")
    return jsonify({"result": _one(table, sys_id, _shape(table))})


@blueprint.post("/now/table/<table>")
def create_record(table: str):
    service = records()
    service.table(table, "create")
    shape = _shape(table)
    record = service.insert(table, _body())
    result = _one(table, record["sys_id"], shape)
    db.session.commit()
    response = jsonify({"result": result})
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_record", table=table, sys_id=record["sys_id"], _external=True)
    return response


@blueprint.route("/now/table/<table>/<sys_id>", methods=["PUT", "PATCH"])
def update_record(table: str, sys_id: str):
    service = records()
    service.table(table, "write")
    shape = _shape(table)
    service.update(table, sys_id, _body())
    result = _one(table, sys_id, shape)
    db.session.commit()
    return jsonify({"result": result})


@blueprint.delete("/now/table/<table>/<sys_id>")
def delete_record(table: str, sys_id: str):
    records().delete(table, sys_id)
    db.session.commit()
    return "", 204


@blueprint.post("/caseloom/actions/<table>/<sys_id>/<action>")
def run_action_api(table: str, sys_id: str, action: str):
    """Run a lifecycle transition or declared action: 200 with the record after, 403 when the
    roles do not allow it, 409 when the record's state does not (saying why)."""
    from ..actions import run_action

    body = request.get_json(silent=True) if request.data else {}
    if body is None or not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object of the action's inputs", "")
    outcome = run_action(records(), table, sys_id, action, body)
    if outcome.job is not None:  # done in the background: 202 and the job to follow
        db.session.commit()
        from .jobs_api import queue

        queue(current_app).enqueue_job(outcome.job)
        return jsonify({"result": {"job": outcome.job}, "message": "; ".join(outcome.messages)}), 202
    shape = _shape(outcome.record["sys_class_name"])
    result = _one(table, sys_id, shape)
    db.session.commit()
    extra = {}
    if outcome.messages:
        extra["message"] = "; ".join(outcome.messages)
    if outcome.result:
        extra["details"] = outcome.result
    return jsonify({"result": result, **extra})


@blueprint.get("/caseloom/openapi.json")
def openapi_json():
    from .openapi import document

    return jsonify(document(runtime().defs, request.url_root))


@blueprint.post("/now/batch")
@blueprint.post("/now/v1/batch")
def batch():
    """ServiceNow's Batch API: several Table API requests in one call, each run as the caller
    (clients such as pysnc use it for update_multiple and delete_multiple)."""
    import base64
    import time

    from flask import current_app

    body = _body()
    requests_ = body.get("rest_requests")
    if not isinstance(requests_, list):
        raise ApiError(400, "rest_requests must be a list", "")
    passthrough = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "cookie", "x-csrftoken")}
    client = current_app.test_client()
    db.session.rollback()  # the batch itself writes nothing; each sub-request is its own unit of work
    serviced, unserviced = [], []
    for item in requests_:
        url = str(item.get("url", ""))
        if not url.startswith("/api/now/table/") or not isinstance(item.get("id"), (str, int)):
            unserviced.append(item.get("id"))
            continue
        started = time.perf_counter()
        headers = {h["name"]: h["value"] for h in item.get("headers", []) if isinstance(h, dict) and "name" in h}
        headers.update(passthrough)
        data = base64.b64decode(item["body"]) if item.get("body") else None
        with current_app.app_context():  # its own unit of work: a fresh session and g, committed on its own
            response = client.open(url, method=str(item.get("method", "GET")).upper(), headers=headers, data=data)
        serviced.append({
            "id": str(item["id"]), "status_code": response.status_code, "status_text": response.status.split(" ", 1)[-1],
            "headers": [{"name": k, "value": v} for k, v in response.headers.items()],
            "body": base64.b64encode(response.get_data()).decode(),
            "execution_time": round((time.perf_counter() - started) * 1000),
        })
    return jsonify({"batch_request_id": str(body.get("batch_request_id", "")), "serviced_requests": serviced,
                    "unserviced_requests": unserviced})



def _member_lists(name: str):
    from ..memberlists import MemberLists

    mdef = runtime().defs.member_lists.get(name)
    if mdef is None:
        raise ApiError(404, "No Record found", f"no member lists named {name!r}")
    return MemberLists(records(), mdef)


@blueprint.post("/caseloom/<name>/<sys_id>/import")
def import_members(name: str, sys_id: str):
    """Add members from a CSV (columns sys_id or the type's keys, e.g. number or email); each rejected
    row is reported with its line and why; a record already in the list is never added twice."""
    lists = _member_lists(name)
    records().table(lists.mdef.table, "write")
    text = request.get_data(as_text=True)
    if not text.strip():
        raise ApiError(400, "empty CSV", "send the CSV as the request body (Content-Type: text/csv)")
    report = lists.import_csv(sys_id, text)
    db.session.commit()
    return jsonify({"result": {"added": report.added, "rejected": report.rejected, "identified": report.identified}})


@blueprint.get("/caseloom/<name>/<sys_id>/preview")
def preview_members(name: str, sys_id: str):
    """How many records the list's condition or script identifies now, with a sample; writes nothing."""
    preview = _member_lists(name).preview(sys_id)
    preview["sample"] = [{k: ("" if v is None else str(v)) for k, v in row.items()} for row in preview["sample"]]
    return jsonify({"result": preview})


@blueprint.get("/caseloom/<name>/<sys_id>/template")
def import_template(name: str, sys_id: str):
    from flask import Response

    text = _member_lists(name).template(sys_id)
    return Response(text, mimetype="text/csv", headers={"Content-Disposition": f"attachment; filename={name}.csv"})
