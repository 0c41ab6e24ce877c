"""Operations: `GET /health` (the database, the queue and the workers), `GET /metrics` (Prometheus,
counted across gunicorn's processes), JSON logs, and the sys_worker table workers stamp.

Real databases (SQLite and PostgreSQL), real queues and real processes: a `caseloom worker` killed
with SIGKILL, a `caseloom serve --workers 2` whose two processes both count requests."""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from caseloom.cli import main
from caseloom.config import Config
from caseloom.health import Prober
from caseloom.jobs import create_job, liveness, workers
from caseloom.logs import JsonFormatter, redacted
from caseloom.migrate import migrate
from caseloom.records import now
from caseloom.runtime import Runtime
from caseloom.web import create_app
from caseloom.web.jobs_api import queue
from conftest import DEFINITIONS, ROOT, basic, database_copy, free_port, ui_sign_in
from test_job_recovery import wait_for
from test_readme_reference import README, section

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}  # a client address that is not the loopback


def samples(text: str) -> list[tuple[str, dict, float]]:
    """Every sample of a Prometheus text exposition: (name, labels, value)."""
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[tuple[str, dict, float]], metric: str, /, **labels: str) -> float | None:
    """The one sample of `metric` with these labels (others it has may be anything), or None."""
    matching = [v for n, ls, v in found if n == metric and all(ls.get(k) == want for k, want in labels.items())]
    assert len(matching) <= 1, f"{metric}{labels}: {len(matching)} samples"
    return matching[0] if matching else None


def scrape(client) -> list[tuple[str, dict, float]]:
    answer = client.get("/metrics", headers=basic("admin"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    return samples(answer.get_data(as_text=True))


def counts(runtime: Runtime, table: str, *fields: str) -> dict[tuple, int]:
    """Rows of a record table by the values of `fields`, counted here with SQL of the test's own."""
    physical = runtime.storage.physical(table)
    columns = [physical.c[f] for f in fields]
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(*columns, sa.func.count()).where(columns[0].is_not(None)).group_by(*columns)).all()
    return {tuple(r[:-1]): r[-1] for r in rows}


def label(v: object) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


# -- /health ----------------------------------------------------------------------------------------


def environment(config: Config, tmp_path: Path, **extra: str) -> dict:
    return {**os.environ, "CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": str(DEFINITIONS),
            "CASELOOM_QUEUE": config.queue, "CASELOOM_INSTANCE": str(tmp_path / "instance"),
            "CASELOOM_UI": str(ROOT / "ui"), "CASELOOM_SCRIPTS": str(ROOT / "scripts"),
            "CASELOOM_SECRET_KEY": "test-secret", **extra}


@contextmanager
def process(args: list[str], env: dict, cwd: Path, log: Path):
    """`caseloom ARGS` in a process of its own, its output in `log`; killed at the end if still running."""
    with open(log, "w") as out:
        started = subprocess.Popen([sys.executable, "-m", "caseloom.cli", *args], env=env, cwd=cwd,
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            yield started
        finally:
            if started.poll() is None:
                started.kill()
            started.wait(timeout=30)


def health(client) -> tuple[int, dict]:
    answer = client.get("/health", environ_base=REMOTE)  # no sign-in, from anywhere
    return answer.status_code, answer.json


def test_health_follows_a_worker_process_from_start_to_kill_and_graceful_stop(client, config, tmp_path, monkeypatch):
    """`caseloom worker` stamps sys_worker: /health is 200 while it runs; killed (SIGKILL), its row
    ages past CASELOOM_JOB_LOST_SECONDS and /health is 503, listing it as last seen seconds ago;
    a worker stopped with Ctrl-C deletes its row. Its log lines are JSON objects."""
    monkeypatch.setenv("CASELOOM_JOB_LOST_SECONDS", "2")
    env = environment(config, tmp_path, CASELOOM_JOB_LOST_SECONDS="2", CASELOOM_LOG_FORMAT="json")
    assert health(client)[0] == 503
    with process(["worker", "--workers", "1"], env, tmp_path, tmp_path / "killed.log") as killed:
        assert wait_for(lambda: health(client)[0] == 200, 30), (tmp_path / "killed.log").read_text()
        status, body = health(client)
        assert body["status"] == "ok" and body["workers"]["ok"] and body["workers"]["alive"] == 1
        seen = body["workers"]["seen"][0]
        assert (seen["pid"], seen["threads"]) == (killed.pid, 1) and seen["node"] == liveness.node()
        assert 0 <= seen["last_seen_seconds"] < 2
        assert body["database"]["ok"] and isinstance(body["database"]["ms"], float)
        assert (body["queue"]["ok"], body["queue"]["kind"], type(body["queue"]["pending"])) == (True, "sqlite", int)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=10)
        assert wait_for(lambda: health(client)[0] == 503, 10)
        status, body = health(client)
        assert body["status"] == "down" and body["workers"]["ok"] is False and body["workers"]["alive"] == 0
        assert body["workers"]["seen"][0]["pid"] == killed.pid and body["workers"]["seen"][0]["last_seen_seconds"] >= 2
        assert body["database"]["ok"] and body["queue"]["ok"]  # only the workers are down

    with process(["worker", "--workers", "1"], env, tmp_path, tmp_path / "stopped.log") as stopped:
        assert wait_for(lambda: health(client)[0] == 200, 30), (tmp_path / "stopped.log").read_text()
        stopped.send_signal(signal.SIGINT)  # graceful: its row goes
        assert stopped.wait(timeout=30) == 0
    status, body = health(client)
    assert status == 503 and [w["pid"] for w in body["workers"]["seen"]] == [killed.pid]
    lines = [json.loads(line) for line in (tmp_path / "stopped.log").read_text().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"] == "caseloom.cli" and line["message"].startswith("caseloom worker: 1 thread(s) on sqlite:///")
               for line in lines)


def test_health_is_503_without_a_worker_and_ignores_one_silent_too_long(client, runtime):
    status, body = health(client)
    assert status == 503
    assert body["status"] == "down" and body["workers"] == {"ok": False, "alive": 0, "seen": []}
    assert body["database"]["ok"] and body["queue"]["ok"]
    table = runtime.storage.internal("sys_worker")
    with runtime.engine.begin() as conn:  # a worker on another machine, silent for a minute
        conn.execute(sa.insert(table).values(id="elsewhere/1:42:beef", node="elsewhere/1", pid=42, threads=4,
                                             started_on=now() - dt.timedelta(hours=1),
                                             seen_on=now() - dt.timedelta(seconds=60)))
    status, body = health(client)
    assert status == 503 and body["workers"]["alive"] == 0
    assert [(w["node"], w["pid"], w["threads"]) for w in body["workers"]["seen"]] == [("elsewhere/1", 42, 4)]
    assert body["workers"]["seen"][0]["last_seen_seconds"] >= 60
    workers.stamp(runtime.engine, runtime.storage, "elsewhere/1:42:beef", 4)  # it speaks again
    status, body = health(client)
    assert status == 200 and body["status"] == "ok" and body["workers"]["alive"] == 1


def test_a_lost_seconds_setting_that_cannot_be_used_puts_the_workers_down_not_the_server(client, monkeypatch):
    monkeypatch.setenv("CASELOOM_JOB_LOST_SECONDS", "soon")
    status, body = health(client)
    assert status == 503 and body["workers"] == {"ok": False, "alive": 0, "seen": [], "error": "ValueError"}
    assert body["database"]["ok"] and body["queue"]["ok"]
    found = scrape(client)  # the rest is answered
    assert value(found, "caseloom_workers_alive") is None and value(found, "caseloom_queue_pending") is not None
    assert [n for n, _, _ in found if n == "caseloom_task_slas"]


def test_health_says_the_database_is_down_and_shows_no_secret(definitions, tmp_path):
    """An app on a database nobody answers still starts, and /health says so: 503, database down,
    its error by kind only (no URL, host or password)."""
    url = f"postgresql+psycopg://caseloom:s3cret-pw@127.0.0.1:{free_port()}/caseloom"
    config = Config(database_url=url, definitions=str(DEFINITIONS), ui=str(ROOT / "ui"), instance=str(tmp_path / "i"),
                    secret_key="test-secret", queue=f"sqlite:///{tmp_path / 'queue.db'}")
    app = create_app(config, definitions, testing=True)
    answer = app.test_client().get("/health")
    body = answer.json
    assert answer.status_code == 503 and body["status"] == "down"
    assert body["database"]["ok"] is False and body["database"]["error"] == "OperationalError"
    assert body["workers"]["ok"] is False and body["queue"]["ok"] is True
    text = answer.get_data(as_text=True)
    assert "s3cret" not in text and "127.0.0.1" not in text and "caseloom@" not in text


def test_health_says_the_queue_is_down(config, definitions):
    app = create_app(dataclasses.replace(config, queue=f"redis://:s3cret@127.0.0.1:{free_port()}/0"), definitions,
                     testing=True)
    status, body = health(app.test_client())
    assert status == 503 and body["status"] == "down"
    assert body["queue"]["ok"] is False and body["queue"]["kind"] == "redis" and body["queue"]["pending"] is None
    assert body["queue"]["error"] == "ConnectionError"
    assert body["database"]["ok"] is True
    assert "s3cret" not in json.dumps(body)


@pytest.mark.skipif(not os.environ.get("CASELOOM_TEST_REDIS_URL"), reason="CASELOOM_TEST_REDIS_URL is not set")
def test_health_counts_what_waits_in_a_redis_queue(config, definitions):
    app = create_app(dataclasses.replace(config, queue=os.environ["CASELOOM_TEST_REDIS_URL"]), definitions, testing=True)
    jobs = queue(app)
    jobs.huey.flush()
    try:
        before = health(app.test_client())[1]["queue"]
        assert (before["ok"], before["kind"], before["pending"]) == (True, "redis", 0)
        jobs.enqueue("deliver_email")
        jobs.enqueue("deliver_email")
        assert health(app.test_client())[1]["queue"]["pending"] == 2
    finally:
        jobs.huey.flush()


def test_a_check_that_hangs_is_down_after_the_timeout_and_not_started_twice():
    release, calls = threading.Event(), []

    def hanging() -> str:
        calls.append(1)
        release.wait(10)
        return "answered"

    prober = Prober(timeout=0.2)
    started = time.monotonic()
    first = prober.run({"database": hanging})["database"]
    assert time.monotonic() - started < 1
    assert (first.ok, first.error, first.value) == (False, "timeout", None) and first.ms >= 200
    assert prober.run({"database": hanging})["database"].error == "timeout"
    assert len(calls) == 1  # the second call waited on the first attempt, still in flight
    release.set()
    assert wait_for(lambda: prober.run({"database": hanging})["database"].value == "answered", 5)


# -- /metrics -----------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status_never_by_raw_path(client, runtime):
    account = runtime.storage.physical("customer_account")
    with runtime.engine.connect() as conn:
        sys_id = conn.execute(sa.select(account.c.sys_id).limit(1)).scalar_one()
    admin = basic("admin")
    assert client.get(f"/api/now/table/customer_account/{sys_id}", headers=admin).status_code == 200
    assert client.get(f"/api/now/table/customer_account/{'f' * 32}", headers=admin).status_code == 404
    assert client.get("/no/such/page/" + "e" * 32).status_code == 404
    found = scrape(client)
    route = "/api/now/table/<table>/<sys_id>"
    assert value(found, "caseloom_http_requests_total", method="GET", route=route, status="200") == 1
    assert value(found, "caseloom_http_requests_total", method="GET", route=route, status="404") == 1
    assert value(found, "caseloom_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(found, "caseloom_http_request_duration_seconds_count", method="GET", route=route) == 2
    assert value(found, "caseloom_http_request_duration_seconds_bucket", method="GET", route=route, le="+Inf") == 2
    assert 0 < value(found, "caseloom_http_request_duration_seconds_sum", method="GET", route=route) < 60
    assert not [ls for _, ls, _ in found if any(sys_id in v or "e" * 32 in v for v in ls.values())]
    again = scrape(client)  # the first scrape is counted too
    assert value(again, "caseloom_http_requests_total", method="GET", route="/metrics", status="200") == 1


def test_metrics_read_emails_jobs_slas_workers_and_the_queue_from_the_database(client, app):
    runtime = app.extensions["caseloom"]
    with runtime.transaction() as service:  # committed e-mail: its delivery is enqueued (nothing consumes it here)
        for state in ("ready", "ready", "sent", "error"):
            service.insert("sys_email", {"recipients": "ann@example.test", "subject": "s", "body": "b", "state": state})
    job = runtime.storage.internal("sys_job")
    with runtime.engine.begin() as conn:
        done = create_job(conn, runtime.storage, "ops_test_job")
        create_job(conn, runtime.storage, "ops_test_job")
        created = conn.execute(sa.select(job.c.created_on).where(job.c.id == done)).scalar_one()
        conn.execute(sa.update(job).where(job.c.id == done).values(state="done",
                                                                   updated_on=created + dt.timedelta(seconds=2.5)))
    workers.stamp(runtime.engine, runtime.storage, "here/1:7:cafe", 3)
    found = scrape(client)
    for (state,), n in counts(runtime, "sys_email", "state").items():
        assert value(found, "caseloom_emails", state=state) == n
    assert value(found, "caseloom_emails", state="error") >= 1
    for (stage, breached), n in counts(runtime, "task_sla", "stage", "has_breached").items():
        assert value(found, "caseloom_task_slas", stage=stage, has_breached=label(breached)) == n
    assert counts(runtime, "task_sla", "stage"), "the demo data has task SLAs"
    for (state,), n in counts(runtime, "em_alert", "state").items():
        assert value(found, "caseloom_em_alerts", state=state) == n
    assert value(found, "caseloom_jobs", name="ops_test_job", state="queued") == 1
    assert value(found, "caseloom_jobs", name="ops_test_job", state="done") == 1
    assert value(found, "caseloom_job_duration_seconds_count", name="ops_test_job", state="done") == 1
    assert value(found, "caseloom_job_duration_seconds_sum", name="ops_test_job", state="done") == pytest.approx(2.5, abs=0.01)
    assert value(found, "caseloom_job_duration_seconds_count", name="ops_test_job", state="queued") is None
    assert value(found, "caseloom_workers_alive") == 1
    assert value(found, "caseloom_queue_pending") == queue(app).pending() >= 1


def test_a_table_that_cannot_be_read_is_left_out_and_the_rest_answered(client, runtime):
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE sys_email"))
    found = scrape(client)  # on PostgreSQL, after the failed statement, the transaction is rolled back to go on
    assert not [n for n, _, _ in found if n == "caseloom_emails"]
    assert value(found, "caseloom_workers_alive") == 0 and [n for n, _, _ in found if n == "caseloom_task_slas"]


def test_every_metric_and_label_is_in_the_readme(client, app):
    """A metric or label added to /metrics fails here until the README's Metrics table names it."""
    runtime = app.extensions["caseloom"]
    with runtime.transaction() as service:
        service.insert("sys_email", {"recipients": "ann@example.test", "subject": "s", "body": "b"})
    with runtime.engine.begin() as conn:
        create_job(conn, runtime.storage, "ops_test_job")
    client.get("/login")
    answer = client.get("/metrics", headers=basic("admin")).get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(answer)}
    assert set(families) == {
        "caseloom_http_requests", "caseloom_http_request_duration_seconds", "caseloom_queue_pending", "caseloom_jobs",
        "caseloom_job_duration_seconds", "caseloom_emails", "caseloom_workers_alive", "caseloom_task_slas",
        "caseloom_em_alerts"}
    text = section(section(README.read_text(), 2, "Operations"), 3, "Metrics")
    spans = set(re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL)))
    missing = [name for name, family in families.items()
               if name not in spans and f"{name}_{family.type}" not in spans and f"{name}_total" not in spans]
    labels = {k for f in families.values() for s in f.samples for k in s.labels} - {"le", "quantile"}
    assert labels == {"method", "route", "status", "name", "state", "stage", "has_breached"}
    missing += sorted(labels - spans)
    assert not missing, f"README, ### Metrics: not named: {', '.join(missing)}"


def test_metrics_are_for_administrators_only_from_anywhere(client, app):
    assert client.get("/metrics", environ_base=REMOTE).status_code == 401
    answer = client.get("/metrics")  # the loopback is no exception: a reverse proxy's requests come from there
    assert answer.status_code == 401 and answer.json["error"]["message"] == "User Not Authenticated"
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="Caseloom"'
    refused = client.get("/metrics", headers=basic("agent"), environ_base=REMOTE)
    assert refused.status_code == 403 and refused.json["status"] == "failure"
    assert client.get("/metrics", headers=basic("admin", "wrong")).status_code == 401
    assert client.get("/metrics", headers=basic("admin"), environ_base=REMOTE).status_code == 200
    browser = app.test_client()
    ui_sign_in(browser, "admin")
    assert browser.get("/metrics", environ_base=REMOTE).status_code == 200


# -- logs -------------------------------------------------------------------------------------------


@contextmanager
def access_lines():
    """The access log lines of requests served meanwhile, formatted as CASELOOM_LOG_FORMAT=json does."""
    logger, out = logging.getLogger("caseloom.access"), io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    lines: list[str] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines.extend(out.getvalue().splitlines())


def test_a_json_access_line_has_the_request_and_no_query_string(client):
    with access_lines() as lines:
        answer = client.get("/api/now/table/customer_account?sysparm_limit=1&api_key=hunter2", headers=basic("admin"))
        echoed = client.get("/login", headers={"X-Request-ID": "lb-7f3a.1"})
        made_up = client.get("/login", headers={"X-Request-ID": "not sane"})
    assert answer.status_code == 200 and len(lines) == 3
    assert not any("hunter2" in line or "?" in line for line in lines)
    entry = json.loads(lines[0])
    assert entry["ts"].endswith("Z") and dt.datetime.fromisoformat(entry["ts"])
    assert {k: entry[k] for k in ("level", "logger", "method", "path", "route", "status", "user")} == {
        "level": "INFO", "logger": "caseloom.access", "method": "GET", "path": "/api/now/table/customer_account",
        "route": "/api/now/table/<table>", "status": 200, "user": "admin"}
    assert isinstance(entry["ms"], float) and entry["ms"] > 0
    assert entry["request_id"] == answer.headers["X-Request-ID"] and len(entry["request_id"]) == 32
    assert entry["message"].startswith("GET /api/now/table/customer_account 200 ")
    assert json.loads(lines[1])["request_id"] == echoed.headers["X-Request-ID"] == "lb-7f3a.1"
    assert json.loads(lines[1])["user"] is None
    assert "not sane" not in made_up.headers["X-Request-ID"] and json.loads(lines[2])["request_id"] == made_up.headers[
        "X-Request-ID"]


def test_a_json_line_carries_the_traceback_of_an_exception():
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord("caseloom.x", logging.ERROR, __file__, 1, "failed: %s", ("it",), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "caseloom.x", "failed: it")
    assert "ValueError: broken" in entry["exc"]


@pytest.mark.parametrize("raw, expected", [(None, "text"), ("", "text"), ("json", "json"), ("JSON", "json"),
                                           ("text", "text")])
def test_the_log_format_setting(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("CASELOOM_LOG_FORMAT", raising=False)
    else:
        monkeypatch.setenv("CASELOOM_LOG_FORMAT", raw)
    assert Config.from_env().log_format == expected


def test_a_bad_log_format_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("CASELOOM_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match=r"CASELOOM_LOG_FORMAT='xml': expected one of text, json"):
        Config.from_env()
    result = CliRunner().invoke(main, ["validate", str(DEFINITIONS)])
    assert result.exit_code == 1
    assert "caseloom: CASELOOM_LOG_FORMAT='xml': expected one of text, json" in result.output


def test_a_url_is_logged_without_its_password():
    assert redacted("redis://:s3cret@cache.internal:6379/0") == "redis://:***@cache.internal:6379/0"
    assert redacted("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert redacted("sqlite:////srv/queue.db") == "sqlite:////srv/queue.db"


# -- sys_worker in the schema -----------------------------------------------------------------------


def test_migrating_an_older_database_creates_sys_worker(runtime):
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE sys_worker"))
    assert migrate(runtime.engine, runtime.storage) == ["create table sys_worker"]
    workers.stamp(runtime.engine, runtime.storage, "here/1:9:0a0a", 2)
    with runtime.engine.connect() as conn:
        assert [(w.pid, w.threads) for w in workers.seen(conn, runtime.storage)] == [(9, 2)]
        assert workers.alive_count(conn, runtime.storage) == 1
    workers.forget(runtime.engine, runtime.storage, "here/1:9:0a0a")
    with runtime.engine.connect() as conn:
        assert workers.seen(conn, runtime.storage) == []


def test_a_worker_silent_for_an_hour_is_forgotten_by_the_next_stamp(runtime):
    table = runtime.storage.internal("sys_worker")
    old = now() - workers.FORGET_AFTER - dt.timedelta(minutes=1)
    with runtime.engine.begin() as conn:
        conn.execute(sa.insert(table).values(id="gone/1:5:dead", node="gone/1", pid=5, threads=1, started_on=old,
                                             seen_on=old))
    workers.stamp(runtime.engine, runtime.storage, "here/1:6:beef", 1)
    with runtime.engine.connect() as conn:
        assert [w.id for w in workers.seen(conn, runtime.storage)] == ["here/1:6:beef"]


# -- `caseloom serve --workers 2` -------------------------------------------------------------------


@pytest.fixture
def sqlite_url(templates, tmp_path):
    yield from database_copy(templates, "sqlite", tmp_path, "serve")


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_two_server_processes_count_into_one_scrape(sqlite_url, tmp_path):
    """gunicorn's two processes each count the requests they answer; /metrics, answered by either,
    sums both, and keeps the counts of a process that was killed and replaced. /health answers 200
    (the server's own worker process is alive). Every log line is JSON; none has a query string."""
    port = free_port()
    config = Config(database_url=sqlite_url, queue=f"sqlite:///{tmp_path / 'queue.db'}")
    env = environment(config, tmp_path, CASELOOM_LOG_FORMAT="json")
    base, folder = f"http://127.0.0.1:{port}", tmp_path / "instance" / "metrics"
    folder.mkdir(parents=True)
    (folder / "counter_1.db").write_bytes(b"an earlier run's")  # cleared at start
    with process(["serve", "--port", str(port), "--workers", "2", "--threads", "2"], env, tmp_path,
                 tmp_path / "serve.log") as server:
        assert wait_for(lambda: server.poll() is None and _answers(base), 60, 0.2), (tmp_path / "serve.log").read_text()
        assert wait_for(lambda: get(base + "/health")[0] == 200, 30, 0.2), get(base + "/health")
        made = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while len(_login_pids(tmp_path / "serve.log")) < 2 and made < 400:
                statuses = list(pool.map(lambda _: get(base + "/login?next=/x&token=hunter2")[0], range(40)))
                assert statuses == [200] * 40
                made += 40
        pids = sorted(_login_pids(tmp_path / "serve.log"))
        assert len(pids) == 2, "both processes answered"
        assert sorted(int(p.stem.split("_")[1]) for p in folder.glob("counter_*.db")) == pids  # an earlier run's: gone
        found = _scrape(base)
        assert value(found, "caseloom_http_requests_total", method="GET", route="/login", status="200") == made
        assert value(found, "caseloom_http_request_duration_seconds_count", method="GET", route="/login") == made
        assert value(found, "caseloom_workers_alive") == 1
        os.kill(pids[0], signal.SIGKILL)  # gunicorn starts another process; the counts of this one stay
        assert wait_for(lambda: _answers(base) and len(_gunicorn_children(server.pid)) == 2, 30, 0.2)
        found = _scrape(base)
        assert value(found, "caseloom_http_requests_total", method="GET", route="/login", status="200") == made
        assert value(found, "caseloom_http_requests_total", method="GET", route="/metrics", status="200") >= 1
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    log = (tmp_path / "serve.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "caseloom.access" and line["route"] == "/login"]
    assert len(access) >= made and {line["path"] for line in access} == {"/login"}
    assert "hunter2" not in log
    assert {"gunicorn.error", "caseloom.cli"} <= {line["logger"] for line in lines}


def _login_pids(log: Path) -> set[int]:
    """The processes whose access lines for /login are in the server's (JSON) log so far."""
    found = set()
    for line in log.read_text().splitlines():
        if '"caseloom.access"' in line and '"route": "/login"' in line:
            found.add(json.loads(line)["pid"])
    return found


def _answers(base: str) -> bool:
    try:
        return get(base + "/health")[0] in (200, 503)
    except OSError:
        return False


def _scrape(base: str) -> list[tuple[str, dict, float]]:
    token = base64.b64encode(b"admin:admin").decode()
    status, text = get(base + "/metrics", {"Authorization": f"Basic {token}"})
    assert status == 200, text
    return samples(text)


def _gunicorn_children(master: int) -> list[int]:
    """The processes gunicorn's master has forked that are alive (the server's `caseloom worker` is not one:
    it runs another program)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == master and fields[0] not in ("Z", "X") and b"\x00worker\x00" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_request_refused_before_the_app_sees_it_is_timed_too(client):
    """A form post without its CSRF token is refused by a check that runs before the request's own
    code: its access line still has its time and request id (it had -0.0 ms)."""
    with access_lines() as lines:
        refused = client.post("/sn_customerservice_case.do?sys_id=-1", data={"short_description": "x"})
    assert refused.status_code == 400 and len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["status"] == 400 and entry["ms"] > 0 and entry["request_id"] == refused.headers["X-Request-ID"]
    assert "-" not in entry["message"].split(" ms ")[0]
