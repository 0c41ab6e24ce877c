"""SQLite commits leave the WAL checkpoint to a background thread of the process, and its writers
take turns; PostgreSQL connections end a statement whose client died, and its array parameters go as
the arrays' text, every value as it is."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from caseloom import stamps
from caseloom.bulk import update_rows
from caseloom.database import WRITE_LOCK, Checkpointer, array_text, is_transient, write_transaction
from caseloom.records import now
from conftest import database_held, form_token, long_job_on_sqlite, ui_sign_in


def checkpointed_count(path: str, table: str) -> int:
    """Rows of `table` in the database file itself, ignoring its WAL (what a checkpoint has copied)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_a_commit_returns_before_the_checkpoint_and_a_background_thread_runs_it(runtime, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite matter: PostgreSQL checkpoints on its own")
    path = database_url[len("sqlite:///"):]
    with runtime.transaction() as service:
        service.insert_many("customer_account", ({"name": f"Checkpointed {i}"} for i in range(500)))
        total = service.conn.exec_driver_sql("SELECT count(*) FROM customer_account").scalar()
    deadline = time.monotonic() + 10
    copied = None
    while copied != total and time.monotonic() < deadline:
        try:
            copied = checkpointed_count(path, "customer_account")
        except sqlite3.DatabaseError:  # read mid-checkpoint, the file half written ("malformed"): not yet
            copied = None
        if copied != total:
            time.sleep(0.05)
    assert copied == total
    assert any(key[1] == path for key in Checkpointer._running)  # the thread that did it waits for the next commit


def test_on_sqlite_writers_get_their_turn_between_a_long_jobs_units(as_user, runtime, database_url):
    """A long job on SQLite begins each unit of work as soon as the last one commits. SQLite's busy
    handler is not fair: a save that waited for the job failed after 30 s with "database is locked"
    (or waited for the whole job). Writers take turns: the job's next unit gives way to those that
    came during its last one, in this process or another."""
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite matter: PostgreSQL's writers wait only for the rows they change")
    with long_job_on_sqlite(database_url) as running:
        for name in ("Night shift", "Weekend shift"):
            asked = time.monotonic()
            created = as_user("admin").post("/api/now/table/sys_user_group", json={"name": name})
            assert created.status_code == 201, created.json
            assert running() and time.monotonic() - asked < 10  # in between the job's units
        asked = time.monotonic()
        with write_transaction(runtime.engine) as conn:  # a worker's claim, the SLA clock
            conn.exec_driver_sql("CREATE TABLE turns_taken (n INTEGER)")
        assert running() and time.monotonic() - asked < 10
    names = {g["name"] for g in as_user("admin").get("/api/now/table/sys_user_group?sysparm_fields=name").json["result"]}
    assert {"Night shift", "Weekend shift"} <= names


def test_on_sqlite_two_jobs_take_turns_unit_by_unit(runtime, database_url):
    """Two jobs on SQLite, each beginning its next unit as soon as the last commits: before, one
    kept the lock and the other waited for it to end; now they alternate."""
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite matter")
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE turns_taken (job INTEGER)")
    units: dict[int, int] = {}

    def job(number: int) -> None:
        with runtime.engine.connect() as conn:
            conn.execution_options(**{WRITE_LOCK: True})
            end = time.monotonic() + 2
            while time.monotonic() < end:
                with conn.begin():
                    conn.exec_driver_sql(f"INSERT INTO turns_taken VALUES ({number})")
                    time.sleep(0.05)
                units[number] = units.get(number, 0) + 1

    jobs = [threading.Thread(target=job, args=(number,)) for number in (1, 2)]
    for thread in jobs:
        thread.start()
    for thread in jobs:
        thread.join()
    assert min(units.values()) >= 8, units  # about 20 each; before, 39 and 1


def test_a_lock_not_had_is_transient_and_a_wrong_statement_is_not(runtime, database_url):
    """What the API answers 503 (try again) rather than 500: SQLite's write lock not had in time,
    PostgreSQL's lock not available (and its deadlock and serialization failure, SQLSTATE 40P01 and
    40001, which `is_transient` reads the same way)."""
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE transient_rows (n INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO transient_rows VALUES (1)")
    with runtime.engine.connect() as holder, runtime.engine.connect() as other:
        holder.begin()
        holder.exec_driver_sql("UPDATE transient_rows SET n = 1")
        with pytest.raises(sa.exc.OperationalError) as refused:
            if database_url.startswith("sqlite"):
                other.connection.dbapi_connection.execute("PRAGMA busy_timeout=0")  # no transaction begun
                other.execution_options(**{WRITE_LOCK: True}).begin()
            else:
                other.begin()
                other.exec_driver_sql("SELECT n FROM transient_rows FOR UPDATE NOWAIT")
        assert is_transient(refused.value)
        holder.rollback()
        if database_url.startswith("sqlite"):
            other.connection.dbapi_connection.execute("PRAGMA busy_timeout=30000")
    with runtime.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as wrong:
        conn.exec_driver_sql("SELECT no_such_column FROM transient_rows")
    assert not is_transient(wrong.value)


def test_the_servers_requests_wait_for_a_lock_as_long_as_on_sqlite_and_workers_as_long_as_it_takes(app, runtime,
                                                                                                   database_url):
    """On PostgreSQL a request gives up a lock it could not have in 30 s (503), as on SQLite; a worker
    or the command line (`make_engine`) waits for it."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite waits 30 s for its write lock on every connection (busy_timeout)")
    with app.extensions["caseloom"].engine.connect() as served, runtime.engine.connect() as worker:
        assert served.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
        assert worker.exec_driver_sql("SHOW lock_timeout").scalar() == "0"


@pytest.mark.parametrize("method", ["post", "patch", "delete"])
def test_a_write_that_cannot_have_the_database_is_503_and_changes_nothing(app, as_user, database_url, method,
                                                                          monkeypatch):
    """A write that waited its whole time for a lock (SQLite's write lock held by a connection, not a
    job's units, which give way; on PostgreSQL the table held against writes) is answered 503 with
    Retry-After, its transaction rolled back, never a 500; once the lock is free the same request
    succeeds."""
    admin = as_user("admin")
    group = admin.post("/api/now/table/sys_user_group", json={"name": "Before"}).json["result"]["sys_id"]
    path = "/api/now/table/sys_user_group" + ("" if method == "post" else f"/{group}")
    send = (lambda: admin.post(path, json={"name": "During"})) if method == "post" else (
        (lambda: admin.patch(path, json={"name": "During"})) if method == "patch" else (lambda: admin.delete(path)))
    with database_held(app, database_url, monkeypatch, "sys_user_group"):
        busy = send()
    assert busy.status_code == 503, busy.get_data(as_text=True)
    assert busy.headers["Retry-After"] == "5"
    assert busy.json["error"]["message"] == "The database is busy: try again in a moment"
    assert "nothing was changed" in busy.json["error"]["detail"]
    names = lambda: sorted(g["name"] for g in admin.get("/api/now/table/sys_user_group?sysparm_fields=name"  # noqa: E731
                                                      "&sysparm_query=nameINBefore,During").json["result"])
    assert names() == ["Before"]
    assert send().status_code in (200, 201, 204)
    assert names() == {"post": ["Before", "During"], "patch": ["During"], "delete": []}[method]


def test_a_form_save_refused_as_busy_shows_the_form_again_with_what_was_typed(app, client, as_user, database_url,
                                                                             monkeypatch):
    """In the browser, a save the database refused as busy is the form again (503), with the values
    and the work note typed and a sentence saying nothing was saved; a save refused for a bad value
    (422) keeps the typed work note too. On PostgreSQL the case's row is held by another transaction."""
    case = as_user("agent").get("/api/now/table/sn_customerservice_case?sysparm_query=state=10&sysparm_limit=1"
                                "&sysparm_fields=sys_id,short_description").json["result"][0]
    ui_sign_in(client, "agent")
    url = f"/sn_customerservice_case.do?sys_id={case['sys_id']}"
    token = form_token(client, url)
    typed = {"short_description": "Typed while the database was busy", "work_notes": "A note worth keeping",
             "csrf_token": token}
    with database_held(app, database_url, monkeypatch, "task", case["sys_id"]):
        busy = client.post(url, data=typed)
    page = html.unescape(busy.get_data(as_text=True))
    assert busy.status_code == 503, page
    assert "The database is busy, so nothing was saved. What you typed is still here" in page
    assert 'value="Typed while the database was busy"' in page
    assert re.search(r'<textarea id="f_work_notes"[^>]*>A note worth keeping</textarea>', page)
    after = as_user("agent").get(f"/api/now/table/sn_customerservice_case/{case['sys_id']}"
                                 "?sysparm_fields=short_description").json["result"]
    assert after["short_description"] == case["short_description"]
    refused = client.post(url, data={**typed, "account": "", "account__display": "Acme 999"})
    page = html.unescape(refused.get_data(as_text=True))
    assert refused.status_code == 422 and "no account named 'Acme 999'" in page
    assert re.search(r'<textarea id="f_work_notes"[^>]*>A note worth keeping</textarea>', page)
    saved = client.post(url, data=typed)
    assert saved.status_code == 302


def _resend_form(page: str) -> tuple[str, dict]:
    """The busy page's form that sends again what was sent: its action and its hidden fields."""
    form = re.search(r'<form method="post" action="([^"]+)" class="resend">(.*?)</form>', page, re.S)
    assert form, page
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2))
    return html.unescape(form.group(1)), {html.unescape(k): html.unescape(v) for k, v in fields}


def test_a_portal_comment_refused_as_busy_is_kept_on_the_page_to_send_again(app, client, as_user, database_url,
                                                                          monkeypatch):
    """Any other form of the browser refused as busy (here a customer's comment in the portal) is a
    503 page that shows what was sent and sends it again unchanged with one button; nothing was
    saved the first time, and the button saves it once."""
    case = as_user("customer").get("/api/now/table/sn_customerservice_case?sysparm_limit=1&sysparm_fields=sys_id"
                                   ).json["result"][0]["sys_id"]
    ui_sign_in(client, "customer")
    url = f"/csm/record/{case}"
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).get_data(as_text=True)).group(1)
    sent = {"text": "Still down <b>here</b>,\nsince 9:00", "csrf_token": token}
    comments = lambda: [e["value"] for e in as_user("admin").get(  # noqa: E731
        f"/api/now/table/sys_journal_field?sysparm_query=element_id={case}^element=comments").json["result"]]
    with database_held(app, database_url, monkeypatch, "task", case):
        busy = client.post(f"{url}/comment", data=sent)
    page = busy.get_data(as_text=True)
    assert busy.status_code == 503, page
    assert busy.headers["Retry-After"] == "5"
    assert "Busy: nothing was changed" in page and "What you sent is kept below: send it again in a moment." in page
    assert "Still down &lt;b&gt;here&lt;/b&gt;,\nsince 9:00</pre>" in page  # shown, as text
    assert "Still down <b>here</b>" not in comments()
    action, fields = _resend_form(page)
    assert (action, fields) == (f"{url}/comment", sent)
    again = client.post(action, data=fields)
    assert again.status_code == 302, again.get_data(as_text=True)
    assert comments().count("Still down <b>here</b>,\nsince 9:00") == 1


def test_a_sign_in_refused_as_busy_never_shows_the_password_back(app, client, database_url, monkeypatch):
    """A form with a password (a sign-in, whose failure is counted) refused as busy is the 503 page
    without what was sent."""
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    with database_held(app, database_url, monkeypatch, "sys_signin_failure"):
        busy = client.post("/login", data={"user_name": "agent", "user_password": "agent-Secret-42",
                                           "csrf_token": token})
    page = busy.get_data(as_text=True)
    assert busy.status_code == 503, page
    assert "agent-Secret-42" not in page and 'class="resend"' not in page


def test_postgresql_connections_run_without_jit(runtime, database_url):
    """Every connection Caseloom opens on PostgreSQL turns JIT compiling off: a count over a major case's
    300,000 e-mails spent about 100 ms compiling before it ran (database.JIT)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    with runtime.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"


def test_a_statement_whose_process_died_ends_within_seconds_on_postgresql(runtime, database_url):
    """A process killed in the middle of a statement (a worker mid-batch) leaves PostgreSQL's server
    process running it until it ends, with its transaction's locks, unless the connection checks its
    client (`client_connection_check_interval`, set on every connection Caseloom opens): then it ends
    within a second or so. Here a 120 s statement, killed after it started, must be gone in 20 s."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL matter: SQLite's statements die with their process")
    with runtime.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW client_connection_check_interval").scalar() == "1s"
    name = f"caseloom_dying_{uuid.uuid4().hex[:12]}"
    url = sa.engine.make_url(database_url).update_query_dict({"application_name": name})
    script = ("import sys; from caseloom.database import make_engine\n"
              "with make_engine(sys.argv[1]).connect() as conn: conn.exec_driver_sql('SELECT pg_sleep(120)')")
    dying = subprocess.Popen([sys.executable, "-c", script, url.render_as_string(hide_password=False)])

    def running() -> bool:
        with runtime.engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n "
                                        "AND state = 'active'"), {"n": name}).scalar() > 0

    try:
        deadline = time.monotonic() + 30
        while not running():
            assert dying.poll() is None and time.monotonic() < deadline, "the statement never started"
            time.sleep(0.1)
    finally:
        dying.kill()
        dying.wait()
    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(), "the dead process's statement still runs"


def test_a_database_out_of_reach_is_told_from_one_that_refused_the_work(tmp_path):
    """A server whose database is down answers 503 (try again) rather than 500; a database error of
    another kind (a table that is not there) stays the server's fault."""
    import sqlite3

    from caseloom.database import is_unreachable

    down = sa.create_engine("postgresql+psycopg://caseloom:secret@127.0.0.1:1/caseloom")
    with pytest.raises(sa.exc.OperationalError) as refused:
        down.connect()
    down.dispose()
    assert is_unreachable(refused.value)
    with pytest.raises(sqlite3.OperationalError) as missing:
        sqlite3.connect(f"file:{tmp_path / 'no' / 'such.db'}?mode=rw", uri=True)
    assert is_unreachable(missing.value)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(sa.exc.OperationalError) as wrong, engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    engine.dispose()
    assert not is_unreachable(wrong.value)


def test_on_sqlite_a_table_grown_past_its_statistics_is_analysed_every_hour(runtime, database_url):
    """SQLite keeps the statistics of `caseloom init`: the audit rows, few then, were planned as few for ever
    after, and a lookup of 500 records' history scanned them all. The worker's hourly task analyses the
    tables that have grown well past their statistics (sampling), and then only those."""
    from caseloom.bootstrap import refresh_grown
    from caseloom.jobs import JobQueue
    from caseloom.records import new_sys_id

    audit = runtime.storage.physical("sys_audit")
    if not database_url.startswith("sqlite"):
        assert refresh_grown(runtime.engine, runtime.storage.metadata) == []  # autovacuum's work there
        return
    assert "statistics" in JobQueue(runtime)._registered()[1]  # every hour, at minute 17
    keys = [new_sys_id() for _ in range(3000)]
    now = dt.datetime(2026, 12, 6)
    rows = [{"sys_id": new_sys_id(), "sys_class_name": "sys_audit", "sys_created_on": now, "sys_updated_on": now,
             "sys_created_by": "t", "sys_updated_by": "t", "sys_mod_count": 0, "tablename": "x", "documentkey": key,
             "fieldname": "state", "record_checkpoint": n} for key in keys for n in (1, 2)]
    with runtime.engine.begin() as conn:  # 6,000 audit rows, and the statistics `caseloom init` left on a small table
        conn.execute(audit.insert(), rows)
        conn.exec_driver_sql("ANALYZE sqlite_schema")
        conn.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE tbl = 'sys_audit'")
        conn.exec_driver_sql("INSERT INTO sqlite_stat1 VALUES ('sys_audit', 'ixn_sys_audit_documentkey', '2 1'), "
                             "('sys_audit', 'ixn_sys_audit_transaction', '2 2'), "
                             "('sys_audit', 'ixa_sys_audit_parent_newvalue', '1 1'), "  # (CSM's workspace's)
                             "('sys_audit', 'sqlite_autoindex_sys_audit_1', '2 1')")
    runtime.engine.dispose()  # every connection reads the statistics again

    def plan() -> str:
        marks = ", ".join("?" * 500)
        with runtime.engine.connect() as conn:
            return " ".join(r[3] for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN SELECT sys_id FROM sys_audit WHERE documentkey IN ({marks})", tuple(keys[:500])))

    assert plan().startswith("SCAN sys_audit")
    assert "sys_audit" in refresh_grown(runtime.engine, runtime.storage.metadata)
    runtime.engine.dispose()
    assert "USING INDEX ixn_sys_audit_documentkey" in plan()
    assert refresh_grown(runtime.engine, runtime.storage.metadata) == []  # nothing has grown since


# Values an array's text must carry as they are: quotes, backslashes, commas, braces, blanks, the word NULL
TRICKY = ['say "hi"', "back\\slash", '\\"', "NULL", "null", "a,b", "{braces}", " padded ", "new\nline", "é 日本",
          "'quoted'", "\\N", "x"]


def test_records_updated_many_at_once_keep_every_character_as_those_updated_one_by_one(runtime, database_url):
    # on PostgreSQL twenty or more records are one UPDATE fed by an array of each field's values, given to
    # the driver as the arrays' text (caseloom.database.array_text); one by one they are plain parameters
    count = 2 * len(TRICKY)
    with runtime.transaction() as service:
        ids = [service.insert("customer_account", {"name": f"Account {i}"})["sys_id"] for i in range(2 * count)]
    values = [{"name": TRICKY[i % len(TRICKY)], "notes": None if i % 5 == 0 else TRICKY[-1 - i % len(TRICKY)],
               "customer": i % 2 == 0} for i in range(count)]
    with runtime.transaction() as service:
        assert service.update_many("customer_account", list(zip(ids[:count], values, strict=True))) == count
        for sys_id, given in zip(ids[count:], values, strict=True):
            service.update("customer_account", sys_id, given)
    with runtime.transaction() as service:
        stored = [service.get("customer_account", sys_id) for sys_id in ids]
    fields = ("name", "notes", "customer")
    at_once = [{k: r[k] for k in fields} for r in stored[:count]]
    one_by_one = [{k: r[k] for k in fields} for r in stored[count:]]
    assert at_once == one_by_one
    assert [r["name"] for r in at_once] == [v["name"] for v in values]  # every character kept


@pytest.mark.parametrize(("sql_type", "values", "as_text"), [
    ("varchar", [*TRICKY, "", None], True),
    ("integer", [1, -2, 0, None], True),
    ("bigint", [2 ** 62, -(2 ** 62)], True),
    ("boolean", [True, False, None], True),
    ("float8", [1.5, -0.0, 1e-300, 1e300, None], True),
    ("numeric", [Decimal("1.50"), Decimal("-1E+5"), None], True),
    ("date", [dt.date(2026, 1, 2), dt.date(1, 1, 1), None], True),
    ("timestamp", [dt.datetime(2026, 1, 2, 3, 4, 5, 6), dt.datetime(2026, 1, 2), None], True),
    ("float8", [float("inf"), 1.0], False),  # no text for it here: the list itself, as psycopg adapts it
    ("timestamp", [dt.datetime(2026, 1, 2, tzinfo=dt.UTC)], False),
    ("integer", [], True),
])
def test_an_arrays_text_reads_back_as_the_array_psycopg_would_send(runtime, database_url, sql_type, values, as_text):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's arrays")
    given = array_text(values)
    assert isinstance(given, str) is as_text
    with runtime.engine.connect() as conn:
        read = conn.execute(sa.text(f"SELECT CAST(:a AS {sql_type}[]), CAST(:b AS {sql_type}[])"),
                            {"a": given, "b": list(values)}).one()
    assert read[0] == read[1]
    assert len(read[0]) == len(values)


@pytest.mark.parametrize("count", [1, 25])  # one UPDATE a row, and one UPDATE ... FROM unnest(...) of 25
def test_a_value_too_long_for_its_column_is_refused_by_an_update_of_many_rows_as_of_one(runtime, database_url,
                                                                                       count):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's lengths: SQLite keeps any length, and the record service checks it first")
    with runtime.transaction() as service:
        ids = [service.insert("customer_account", {"name": f"Account {i}"})["sys_id"] for i in range(count)]
    physical = runtime.storage.physical("customer_account")
    rows = [{"phone": "9" * 41, "sys_id": sys_id} for sys_id in ids]  # the phone field holds 40 characters
    with pytest.raises(sa.exc.DataError, match="too long"), runtime.engine.begin() as conn:
        update_rows(conn, physical, ("phone",), rows, stamps.touched_sql, "admin", now())
    with runtime.transaction() as service:
        assert [service.get("customer_account", sys_id)["phone"] for sys_id in ids] == [None] * count
