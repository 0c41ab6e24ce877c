"""Operations over HTTP (README: Operations).

- `GET /health`, for load balancers and orchestrators, without sign-in: the database, the queue
  and the workers (caseloom.health), 200 when all are up and 503 when one is down. It is answered
  before anything else in a request touches the database, so it can say the database is down.
- `GET /api/caseloom/status`, for administrators: the health checks, the workers, the jobs and the
  e-mail (caseloom.status), as the System status page shows them.
- `GET /metrics`, for Prometheus: the platform's shared authentication, as for the API (HTTP Basic
  or the browser session), and the admin role. No exception for the loopback address: behind a
  reverse proxy on the same machine every request comes from there.
- Every request: its HTTP metrics (caseloom.metrics), an `X-Request-ID` (the client's, when it sent
  a sane one), and one access log line without the query string, which can carry secrets.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.serving import WSGIRequestHandler

from ..health import Health
from ..metrics import CONTENT_TYPE, HttpMetrics, exposition
from . import live_definitions
from .auth import act_as, api_actor, runtime
from .errors import ApiError
from .jobs_api import queue

HEALTH, METRICS = "caseloom_health", "caseloom_http_metrics"
REQUEST_ID = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("caseloom.access")


def health():
    rt = current_app.extensions["caseloom"]  # the runtime as it is: nothing read from the database first
    report = current_app.extensions[HEALTH].check(rt.engine, rt.storage, queue(current_app))
    response = jsonify(report.as_json())
    response.status_code = 200 if report.ok else 503
    response.cache_control.no_store = True
    return response


def metrics():
    act_as(api_actor())
    if not g.actor.is_admin:
        raise ApiError(403, "User Not Authorized", "/metrics needs the admin role")
    body = exposition(current_app.extensions[METRICS], runtime(), queue(current_app))
    response = Response(body, content_type=CONTENT_TYPE)
    response.cache_control.no_store = True
    return response


def status():
    """`GET /api/caseloom/status`: the administrators' reading of the deployment (caseloom.status), 200 also
    when a part is down (its `status` says so; /health is the one that answers 503)."""
    from ..status import read_status

    act_as(api_actor())
    if not g.actor.is_admin:
        raise ApiError(403, "User Not Authorized", "/api/caseloom/status needs the admin role")
    response = jsonify({"result": read_status(runtime(), queue(current_app), current_app.extensions[HEALTH]).as_json()})
    response.cache_control.no_store = True
    return response


def _start() -> None:
    g.request_started = time.perf_counter()
    sent = request.headers.get(REQUEST_ID, "")
    g.request_id = sent if SANE_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


def _finish(response: Response) -> Response:
    finished = time.perf_counter()
    seconds = finished - g.get("request_started", finished)
    route = request.url_rule.rule if request.url_rule is not None else None
    current_app.extensions[METRICS].observe(request.method, route, response.status_code, seconds)
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers.setdefault(REQUEST_ID, request_id)
    if access_log.isEnabledFor(logging.INFO):
        actor = g.get("actor")
        user = actor.user_name if actor is not None else None
        ms = round(seconds * 1000, 1)
        access_log.info("%s %s %s %.1f ms user=%s id=%s", request.method, request.path, response.status_code, ms,
                        user or "-", request_id,
                        extra={"method": request.method, "path": request.path, "route": route,
                               "status": response.status_code, "ms": ms, "user": user, "request_id": request_id})
    return response


class QuietRequestHandler(WSGIRequestHandler):
    """The development server without its own request lines (they show the query string): the
    app logs every request itself."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def register(app: Flask) -> None:
    """Register before everything else, so a request's time and the health check come first."""
    app.extensions[HEALTH] = Health()
    app.extensions[METRICS] = HttpMetrics()
    # first of all, also before a check registered earlier (CSRF) that may end the request
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.add_url_rule("/health", "health", health)
    live_definitions.standalone(app, "health")
    app.add_url_rule("/metrics", "metrics", metrics)
    app.add_url_rule("/api/caseloom/status", "status", status)
