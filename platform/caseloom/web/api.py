"""The Table API with ServiceNow's shapes (contract section 7)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import time
from collections.abc import Callable
from urllib.parse import urlencode

from flask import Blueprint, current_app, jsonify, request, url_for

from ..query import Query, parse_encoded
from ..query.aggregate import aggregate
from ..query.compile import MAX_OFFSET
from ..query.nodes import All
from ..query.total import EXACT_COUNT_LIMIT, Total
from ..records import NotFound
from ..typedinput import meant_values
from . import db
from .auth import act_as, api_actor, properties, read_only, records, runtime
from .errors import ApiError, declared_text
from .serialize import Shape, base_url, make_shape, render_record
from .stats import parse_request, render

blueprint = Blueprint("api", __name__, url_prefix="/api")
MAX_LIMIT = 10000
MAX_DEPTH = 32  # how deeply a request body's objects and lists may nest


@blueprint.before_request
def _authenticate() -> None:
    act_as(api_actor())


def _int_param(name: str, default: int, minimum: int = 0, maximum: int | None = None, clamp: bool = False) -> int:
    """A whole-number query parameter; out of range is a 400 naming it (or, with `clamp`, the maximum)."""
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw) if len(raw) <= 30 else None
    except ValueError:
        value = None
    if value is None:
        raise ApiError(400, f"{name} must be a whole number", f"got {raw[:40]!r}")
    if value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}", f"got {value}")
    if maximum is not None and value > maximum:
        if clamp:
            return maximum
        raise ApiError(400, f"{name} must be at most {maximum}", f"got {value}")
    return value


def _shape(table: str) -> Shape:
    return request_shape(table, records().readable)


def request_shape(table: str, readable: Callable[[str], bool] | None) -> Shape:
    """How the request's sysparm_fields, sysparm_display_value and sysparm_exclude_reference_link shape
    records of `table` (a 400 naming a bad one); `readable`: the user's read access to fields and
    referenced tables, None where the route checks access itself (the Attachment API)."""
    rt = runtime()
    return make_shape(rt.defs.tables, rt.defs.tables[table], request.args.get("sysparm_fields"),
                      request.args.get("sysparm_display_value"),
                      request.args.get("sysparm_exclude_reference_link"), base_url(), readable)


def _body(empty: dict | None = None) -> dict:
    """The request's JSON object (`empty` when there is no body and that is allowed). Not JSON, not an
    object, or nested deeper than MAX_DEPTH is a 400 saying which."""
    data = request.get_data(cache=True)
    if not data.strip() and empty is not None:
        return empty
    try:
        body = json.loads(declared_text(data))
    except RecursionError:
        raise ApiError(400, "Request body is nested too deeply", f"at most {MAX_DEPTH} levels of objects and lists") from None
    except ValueError as exc:
        raise ApiError(400, "Request body is not valid JSON", str(exc)[:200]) from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object", "send Content-Type: application/json")
    if _depth(body) > MAX_DEPTH:
        raise ApiError(400, "Request body is nested too deeply", f"at most {MAX_DEPTH} levels of objects and lists")
    return body


def _depth(value, level: int = 0) -> int:
    """How deeply objects and lists nest in a JSON value (counting stops past MAX_DEPTH)."""
    if not isinstance(value, (dict, list)) or level > MAX_DEPTH:
        return level
    items = value.values() if isinstance(value, dict) else value
    return max((_depth(item, level + 1) for item in items), default=level + 1)


def _one(table: str, sys_id: str, shape: Shape) -> dict:
    row = records().one(table, sys_id, shape.columns())
    if row is None:
        raise NotFound(f"no {table} record with sys_id {sys_id}")
    return render_record(shape, row)


@blueprint.get("/now/table/<table>")
def list_records(table: str):
    service = records()
    service.table(table, "read")
    query = parse_encoded(request.args.get("sysparm_query"))
    limit = _int_param("sysparm_limit", MAX_LIMIT, minimum=1, maximum=MAX_LIMIT, clamp=True)
    offset = _int_param("sysparm_offset", 0, maximum=MAX_OFFSET)
    shape = _shape(table)
    counted = not _flag("sysparm_no_count")  # ServiceNow's: no count(*) of the matches at all
    # first: few matches are read from themselves (RecordService.query)
    total = _total(table, query) if counted else None
    rows = service.query(table, query, shape.columns(), limit, offset,
                         matching=total.rows if total is not None and not total.estimated else None)
    response = jsonify({"result": [render_record(shape, row) for row in rows]})
    if total is not None:  # ServiceNow sends it unless told not to count; clients such as pysnc rely on it
        response.headers["X-Total-Count"] = str(total.rows)
        if total.estimated:
            response.headers["X-Total-Count-Estimated"] = "true"
        if _wants_estimate():
            response.headers["Preference-Applied"] = "count=estimated"
    if request.args.get("sysparm_suppress_pagination_header", "").lower() != "true":
        response.headers["Link"] = _links(table, total, limit, offset, len(rows))
    return response


def _flag(name: str) -> bool:
    """A true/false query parameter (absent: false); anything else is a 400 naming it."""
    raw = request.args.get(name, "false").strip().lower()
    if raw not in ("true", "false", ""):
        raise ApiError(400, f"Invalid {name}", f"{name}: true or false, not {raw[:40]!r}")
    return raw == "true"


def _wants_estimate() -> bool:
    """`Prefer: count=estimated` (PostgREST's word): the client takes an estimated total above the
    exact-count limit. Without it X-Total-Count is exact, as ServiceNow's: pysnc stops paging at
    X-Total-Count, so an estimate below the truth would silently drop records."""
    return any(part.strip().lower() == "count=estimated"
               for value in request.headers.getlist("Prefer") for part in value.split(","))


def _total(table: str, query: Query) -> Total:
    if not _wants_estimate():
        return Total(records().count(table, query))
    return records().total(table, query, properties().get(EXACT_COUNT_LIMIT))


def _links(table: str, total: Total | None, limit: int, offset: int, shown: int) -> str:
    """first, prev, next and last; from an estimated total, or none (`sysparm_no_count`), no last (it would be a
    guess), and next while the page is full."""
    base = base_url() + url_for("api.list_records", table=table).lstrip("/")

    def link(at: int, rel: str) -> str:
        args = {k: v for k, v in request.args.items() if k not in ("sysparm_offset", "sysparm_limit")}
        args.update(sysparm_limit=limit, sysparm_offset=max(at, 0))
        return f'<{base}?{urlencode(args)}>;rel="{rel}"'

    parts = [link(0, "first")]
    if offset > 0:
        parts.append(link(offset - limit, "prev"))
    known = total is not None and not total.estimated
    if (offset + limit < total.rows) if known else (shown == limit):
        parts.append(link(offset + limit, "next"))
    if known:
        parts.append(link(max(((total.rows - 1) // limit) * limit, 0), "last"))
    return ",".join(parts)


@blueprint.get("/now/table/<table>/<sys_id>")
def get_record(table: str, sys_id: str):
    records().table(table, "read")
    return jsonify({"result": _one(table, sys_id, _shape(table))})


# the Table API's reads write nothing: on PostgreSQL without a transaction (auth.connection)
blueprint.record_once(lambda state: read_only(state.app, "api.get_record", "api.list_records"))


@blueprint.get("/caseloom/similar/<table>/<sys_id>")
def similar_records(table: str, sys_id: str):
    """The records most like one (contract section 11): `{"result": [{"sys_id", "number", "score", ...}]}`,
    best first, scores from 0 to 1 against the record itself (caseloom.similar). `sysparm_list` names one of
    the table's similar lists (its condition, minimum score and limit); `sysparm_query` narrows the
    candidates; `sysparm_min_score` and `sysparm_limit` override; `sysparm_fields` and
    `sysparm_display_value` shape each record as the Table API does."""
    from .. import similar

    service = records()
    tdef = service.table(table, "read")
    if not tdef.text_index:
        raise ApiError(400, "No text index", f"table {table!r} has no text index (`text_index:` in its definition), "
                                             "so similar records cannot be found")
    name = request.args.get("sysparm_list")
    listed = next((s for s in tdef.similar if s.name == name), None) if name else None
    if name and listed is None:
        raise ApiError(400, "Unknown similar list", f"sysparm_list: {table!r} has no similar list {name[:80]!r} "
                                                    f"(it has: {', '.join(s.name for s in tdef.similar) or 'none'})")
    where = parse_encoded(request.args.get("sysparm_query")).where
    if listed is not None and listed.condition is not None:
        where = listed.condition if where is None else All((listed.condition, where))
    props = properties()
    min_score = _score_param(similar.setting(props, listed.min_score) if listed else 0.0)
    limit = _int_param("sysparm_limit", listed.limit if listed else 10, minimum=1, maximum=100)
    fields = request.args.get("sysparm_fields") or ",".join(
        dict.fromkeys(["sys_id", *(["number"] if tdef.field("number") else []), *tdef.list_columns, *tdef.text_index]))
    rt = runtime()
    shape = make_shape(rt.defs.tables, tdef, fields, request.args.get("sysparm_display_value"),
                       request.args.get("sysparm_exclude_reference_link"), base_url(), service.readable)
    record = service.get(table, sys_id)  # through the user's access: a 404 otherwise
    if record is None:
        raise NotFound(f"no {table} record with sys_id {sys_id}")
    text = similar.text_of(rt.storage, table, record)
    columns = list(dict.fromkeys([*shape.columns(), *(["number"] if tdef.field("number") else [])]))
    found = similar.find(rt.storage, service.conn, table, text, exclude=sys_id, where=where, min_score=min_score,
                         limit=limit, columns=columns, readable=service.readable)
    result = []
    for match in found:
        shown = render_record(shape, match.row)
        result.append({"sys_id": match.sys_id, "number": match.row.get("number", ""), "score": match.score, **shown})
    return jsonify({"result": result})


def _score_param(default: float) -> float:
    raw = request.args.get("sysparm_min_score")
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN included
        raise ApiError(400, "Invalid sysparm_min_score", f"sysparm_min_score: a number from 0 to 1, not {raw[:40]!r}")
    return value


@blueprint.get("/now/stats/<table>")
def stats(table: str):
    """ServiceNow's Aggregate API: counts, averages, sums, minimums and maximums, grouped or not, in
    one SQL statement through the user's read access (web/stats.py has the shapes)."""
    service = records()
    tdef = service.table(table, "read")
    query, display = parse_request(request.args)
    rt = runtime()
    if not query.group_by and not (query.measures or query.having):
        return jsonify({"result": {"stats": {}}})  # nothing asked: ServiceNow answers no aggregate
    groups, answers = aggregate(rt.storage, service.conn, table, query, service.readable)
    return jsonify({"result": render(rt.defs.tables, tdef, query, groups, answers, display)})


@blueprint.get("/caseloom/report/<name>")
def report_data(name: str):
    """A declared report's numbers (definitions kind `reports`) for this user over `range` (7, 30, 90
    or 365 days, or all): each with its display value and the encoded query of its records."""
    from ..insight import RANGES, run_report
    from .ui.reports import may_open

    found = runtime().defs.reports.get(name)
    if found is None or not may_open(found):
        raise ApiError(404, "No such report", f"no report named {name!r} that you may open")
    days = request.args.get("range", "30")
    if days not in RANGES:
        raise ApiError(400, "Invalid range", f"range: one of {', '.join(RANGES)}, not {days[:20]!r}")
    return jsonify({"result": run_report(records(), found, days).as_json()})


def _typed_as_shown(service, table: str, body: dict) -> dict:
    """`sysparm_input_display_value=true`: the body's values are what a person reads (a choice's label, the name
    of the record a reference points at), as ServiceNow takes them; `false` (the default): stored values."""
    return meant_values(service, table, body) if _flag("sysparm_input_display_value") else body


@blueprint.post("/now/table/<table>")
def create_record(table: str):
    service = records()
    service.table(table, "create")
    shape = _shape(table)
    record = service.insert(table, _typed_as_shown(service, table, _body()))
    result = _one(table, record["sys_id"], shape)
    db.session.commit()
    response = jsonify({"result": result})
    response.status_code = 201
    response.headers["Location"] = base_url() + url_for("api.get_record", table=table, sys_id=record["sys_id"]).lstrip("/")
    return response


@blueprint.route("/now/table/<table>/<sys_id>", methods=["PUT", "PATCH"])
def update_record(table: str, sys_id: str):
    service = records()
    service.table(table, "write")
    shape = _shape(table)
    service.update(table, sys_id, _typed_as_shown(service, table, _body()))
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

    outcome = run_action(records(), table, sys_id, action, _body(empty={}))
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


@blueprint.post("/caseloom/slas/repair/<table>")
def repair_slas(table: str):
    """ServiceNow's Repair SLAs: the task SLAs of the table's records matching `sysparm_query` (every
    record when none is given) deleted and made again from their history (caseloom.timing.repair):
    200 with what was done, or, for more records than one request repairs, 202 and the background job
    doing it. Administrators only (403); 404 for an unknown table; 400 for a table without SLAs or
    history, or a bad query."""
    from ..jobs import repair_or_start
    from ..timing.repair import RepairRefused

    try:  # who may repair is checked there (AccessDenied: 403)
        outcome = repair_or_start(records(), table, request.args.get("sysparm_query") or "")
    except RepairRefused as exc:
        raise ApiError(400, "The SLAs cannot be repaired", str(exc)) from None
    db.session.commit()
    if outcome.job is not None:
        from .jobs_api import queue

        queue(current_app).enqueue_job(outcome.job)
        return jsonify({"result": {"job": outcome.job, "log": outcome.log.log}, "message": outcome.message}), 202
    return jsonify({"result": outcome.done.as_json(), "message": outcome.message})


@blueprint.get("/caseloom/openapi.json")
def openapi_json():
    from .openapi import document

    return jsonify(document(runtime().defs, base_url()))


@blueprint.post("/now/batch")
@blueprint.post("/now/v1/batch")
def batch():
    """ServiceNow's Batch API: several Table API requests in one call, each run as the caller
    (clients such as pysnc use it for update_multiple and delete_multiple)."""
    body = _body()
    requests_ = body.get("rest_requests")
    if not isinstance(requests_, list):
        raise ApiError(400, "rest_requests must be a list", "the body is {\"batch_request_id\": ..., "
                                                            "\"rest_requests\": [{\"id\", \"method\", \"url\", ...}]}")
    most = runtime().config.max_batch_requests
    if len(requests_) > most:
        raise ApiError(400, f"rest_requests: {len(requests_)} requests; at most {most} in one batch",
                       "CASELOOM_MAX_BATCH_REQUESTS")
    passthrough = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "cookie", "x-csrftoken")}
    client = current_app.test_client()
    db.session.rollback()  # the batch itself writes nothing; each sub-request is its own unit of work
    serviced, unserviced = [], []
    for item in requests_:
        if not isinstance(item, dict) or _batch_id(item) is None:  # nothing to answer it by: unserviced
            unserviced.append(_batch_id(item) if isinstance(item, dict) else None)
            continue
        sub_request = _sub_request(item)
        if isinstance(sub_request, str):  # answered as its own 400, saying what is wrong with it
            body_ = {"error": {"message": sub_request, "detail": f"rest_requests item {item['id']!r}"},
                     "status": "failure"}
            serviced.append({"id": str(item["id"]), "status_code": 400, "status_text": "Bad Request",
                             "headers": [{"name": "Content-Type", "value": "application/json"}],
                             "body": base64.b64encode(json.dumps(body_).encode()).decode(), "execution_time": 0})
            continue
        url, method, headers, data = sub_request
        started = time.perf_counter()
        headers.update(passthrough)
        with current_app.app_context():  # its own unit of work: a fresh session and g, committed on its own
            response = client.open(url, method=method, headers=headers, data=data)
        serviced.append({
            "id": str(item["id"]), "status_code": response.status_code, "status_text": response.status.split(" ", 1)[-1],
            "headers": [{"name": k, "value": v} for k, v in response.headers.items()],
            "body": base64.b64encode(response.get_data()).decode(),
            "execution_time": round((time.perf_counter() - started) * 1000),
        })
    return jsonify({"batch_request_id": str(body.get("batch_request_id", "")), "serviced_requests": serviced,
                    "unserviced_requests": unserviced})


BATCH_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _batch_id(item: dict) -> str | int | None:
    """A Batch API item's id: a string or a whole number (not a boolean), else None."""
    value = item.get("id")
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _sub_request(item: dict) -> tuple[str, str, dict, bytes | None] | str:
    """(url, method, headers, body) of one Batch API item, or what is wrong with it."""
    url, method = item.get("url"), item.get("method", "GET")
    if not isinstance(url, str) or not url:
        return "url is missing: a Table API path such as /api/now/table/incident"
    if not url.startswith("/api/now/table/"):
        return f"url {url[:200]!r}: only Table API requests (/api/now/table/...) run in a batch"
    if not isinstance(method, str) or method.upper() not in BATCH_METHODS:
        return f"method {method!r} is not one of {', '.join(BATCH_METHODS)}"
    headers = item.get("headers", [])
    if not isinstance(headers, list) or not all(isinstance(h, dict) and isinstance(h.get("name"), str)
                                                and isinstance(h.get("value"), str)
                                                and h["name"].isprintable() and h["value"].isprintable() for h in headers):
        return "headers must be a list of {\"name\": ..., \"value\": ...} objects of printable text"
    try:
        data = base64.b64decode(item["body"], validate=True) if item.get("body") else None
    except (binascii.Error, TypeError, ValueError):
        return "body is not base64"
    return url, method.upper(), {h["name"]: h["value"] for h in headers}, data



def _member_lists(name: str):
    from ..memberlists import MemberLists

    mdef = runtime().defs.member_lists.get(name)
    if mdef is None:
        raise ApiError(404, "No Record found", f"no member lists named {name!r}")
    return MemberLists(records(), mdef)


# What a CSV may be sent as: its own type, plain text, and what spreadsheets and browsers label one with.
CSV_TYPES = ("text/csv", "text/plain", "application/csv", "application/vnd.ms-excel", "application/octet-stream")


@blueprint.post("/caseloom/<name>/<sys_id>/import")
def import_members(name: str, sys_id: str):
    """Add members to a list of the member list `name` from a CSV (columns: the list type's `match` keys,
    sys_id first); each rejected row is reported with its line and why; a record already in the list is
    never added twice."""
    lists = _member_lists(name)
    records().table(lists.mdef.table, "write")
    if request.mimetype and request.mimetype not in CSV_TYPES:
        raise ApiError(415, f"The body is {request.mimetype}, not CSV: send the CSV itself as the body "
                            f"(Content-Type: text/csv)", "Content-Type")
    report = lists.import_csv(sys_id, text_stream(request.stream), runtime().config.max_import_rows)
    db.session.commit()
    return jsonify({"result": {"added": report.added, "rejected": report.rejected,
                               "rejected_total": report.rejected_total, "identified": report.identified}})


def text_stream(binary) -> io.TextIOWrapper:
    """A request body or an uploaded file read as UTF-8 text line by line, never held whole (CSV imports)."""
    return io.TextIOWrapper(io.BufferedReader(binary) if isinstance(binary, io.RawIOBase) else binary,
                            encoding="utf-8", errors="strict", newline="")


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
