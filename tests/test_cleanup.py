"""The table cleaner (sys_auto_flush, caseloom.cleanup): each active rule deletes the records of its table
whose match field is older than its age and that match its conditions, through the record service (audited,
references cleared, deleted or keeping them), oldest first in chunks; bad rules are refused naming their
field; only administrators see the rules; `caseloom cleanup` and the worker's hourly task run them."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa

from caseloom import cleanup
from caseloom.cleanup import clean
from caseloom.jobs.queue import JobQueue
from caseloom.query import parse_encoded
from caseloom.records import now
from conftest import DEFINITIONS, ROOT, Api, form_token, ui_sign_in

TABLE_API = "/api/now/table"
CASES = "sn_customerservice_case"
DAY = 86_400


def make_case(api: Api, text: str, **values) -> str:
    r = api.post(f"{TABLE_API}/{CASES}", json={"short_description": text, **values})
    assert r.status_code == 201, r.json
    return r.json["result"]["sys_id"]


def make_rule(api: Api, **values) -> dict:
    r = api.post(f"{TABLE_API}/sys_auto_flush", json=values)
    assert r.status_code == 201, r.json
    return r.json["result"]


def test_a_rule_deletes_its_old_matching_records_oldest_first_and_keeps_the_rest(app, runtime, monkeypatch):
    monkeypatch.setattr(cleanup, "CHUNK", 2)  # three records: two units of work
    admin = Api(app.test_client(), "admin")
    old = [make_case(admin, f"cleaner old {i}") for i in range(3)]
    other = make_case(admin, "cleaner other")
    child = make_case(admin, "cleaner child", parent=old[0])
    rule = make_rule(admin, tablename=CASES, age=str(DAY), conditions="short_descriptionSTARTSWITHcleaner old")
    assert (rule["matchfield"], rule["active"]) == ("sys_created_on", "true")

    young, = clean(runtime, at=now() + dt.timedelta(hours=1))  # not a day old yet
    assert (young.matched, young.deleted, young.words()) == (0, 0, f"{CASES}: 0 record(s) deleted")

    done, = clean(runtime, at=now() + dt.timedelta(days=2))
    assert (done.table, done.matched, done.deleted, done.kept, done.error) == (CASES, 3, 3, 0, None)
    assert done.words() == f"{CASES}: 3 record(s) deleted"
    for sys_id in old:
        assert admin.get(f"{TABLE_API}/{CASES}/{sys_id}").status_code == 404
    assert admin.get(f"{TABLE_API}/{CASES}/{other}").status_code == 200
    assert admin.get(f"{TABLE_API}/{CASES}/{child}").json["result"]["parent"] == ""  # on_delete: clear
    with runtime.transaction() as service:
        deleted = service.query("sys_audit", parse_encoded(f"fieldname=DELETED^documentkeyIN{','.join(old)}"))
    assert sorted(a["documentkey"] for a in deleted) == sorted(old)
    assert json.loads(deleted[0]["oldvalue"])["short_description"].startswith("cleaner old")
    noted = admin.get(f"{TABLE_API}/sys_auto_flush/{rule['sys_id']}").json["result"]
    assert (noted["last_deleted"], noted["last_result"]) == ("3", f"{CASES}: 3 record(s) deleted")
    assert noted["last_run"]


def test_a_runs_bookkeeping_is_not_audited_and_a_change_of_the_rule_is(app, runtime):
    """Every run writes the rule's last run, count and outcome: `audit: false` fields, so an hourly run
    adds nothing to the rule's history, while an administrator's change of the rule is in it."""
    admin = Api(app.test_client(), "admin")
    make_case(admin, "cleaner history")
    rule = make_rule(admin, tablename=CASES, age=str(DAY), conditions="short_description=cleaner history")
    for days in (2, 3):
        done, = clean(runtime, at=now() + dt.timedelta(days=days))
        assert done.error is None
    assert admin.patch(f"{TABLE_API}/sys_auto_flush/{rule['sys_id']}", json={"age": str(2 * DAY)}).status_code == 200
    with runtime.transaction() as service:
        history = service.query("sys_audit", parse_encoded(f"documentkey={rule['sys_id']}"))
    assert [(a["fieldname"], a["oldvalue"], a["newvalue"]) for a in history] == [("age", str(DAY), str(2 * DAY))]
    noted = admin.get(f"{TABLE_API}/sys_auto_flush/{rule['sys_id']}").json["result"]
    assert (noted["last_deleted"], noted["last_result"]) == ("0", f"{CASES}: 0 record(s) deleted")


def test_an_inactive_rule_and_a_dry_run_delete_nothing(app, runtime):
    admin = Api(app.test_client(), "admin")
    case = make_case(admin, "cleaner dry")
    rule = make_rule(admin, tablename=CASES, age="60", conditions="short_description=cleaner dry")
    later = now() + dt.timedelta(days=1)
    counted, = clean(runtime, at=later, dry_run=True)
    assert (counted.matched, counted.deleted, counted.words()) == (1, 0, f"{CASES}: 1 record(s) would be deleted")
    assert admin.get(f"{TABLE_API}/sys_auto_flush/{rule['sys_id']}").json["result"]["last_run"] == ""
    assert admin.patch(f"{TABLE_API}/sys_auto_flush/{rule['sys_id']}", json={"active": "false"}).status_code == 200
    assert clean(runtime, at=later) == []
    assert admin.get(f"{TABLE_API}/{CASES}/{case}").status_code == 200


def test_a_record_something_must_keep_is_kept_and_the_rest_go(app, runtime):
    """A schedule an SLA definition uses (on_delete: restrict) stays; the other one is deleted."""
    admin = Api(app.test_client(), "admin")
    windows = {"time_zone": "Europe/London", "windows": "mon-fri 09:00-17:00"}
    used = admin.post(f"{TABLE_API}/cmn_schedule", json={"name": "cleaner used", **windows}).json["result"]["sys_id"]
    unused = admin.post(f"{TABLE_API}/cmn_schedule", json={"name": "cleaner unused", **windows}).json["result"]["sys_id"]
    sla = admin.post(f"{TABLE_API}/contract_sla", json={"name": "cleaner sla", "collection": CASES, "duration": 3600,
                                                         "start_condition": "priority=1", "schedule": used})
    assert sla.status_code == 201, sla.json
    make_rule(admin, tablename="cmn_schedule", age=str(DAY), conditions="nameSTARTSWITHcleaner")
    done, = clean(runtime, at=now() + dt.timedelta(days=2))
    assert (done.matched, done.deleted, done.kept) == (2, 1, 1)
    assert done.words() == "cmn_schedule: 1 record(s) deleted, 1 kept (something refers to them or a guard refused)"
    assert admin.get(f"{TABLE_API}/cmn_schedule/{used}").status_code == 200
    assert admin.get(f"{TABLE_API}/cmn_schedule/{unused}").status_code == 404


@pytest.mark.parametrize(("values", "field", "words"), [
    ({"tablename": "nosuch"}, "tablename", "unknown table 'nosuch'"),
    ({"matchfield": "short_description"}, "matchfield", "is not a date or date-time field"),
    ({"matchfield": "nosuch"}, "matchfield", "is not a date or date-time field"),
    ({"age": "0"}, "age", "at least 1"),
    ({"conditions": "nosuch=1"}, "conditions", "'nosuch' is not a field"),
    ({"conditions": "stateCHANGESTO3"}, "conditions", "about a change"),
    ({"conditions": "priority=high"}, "conditions", "priority"),
    ({"conditions": "ORDERBYnumber"}, "conditions", "has no order"),
])
def test_a_bad_rule_is_refused_naming_its_field(app, values, field, words):
    admin = Api(app.test_client(), "admin")
    r = admin.post(f"{TABLE_API}/sys_auto_flush", json={"tablename": CASES, "age": "86400", **values})
    assert r.status_code == 400, r.json
    text = json.dumps(r.json)
    assert field in text and words in text, r.json
    assert admin.get(f"{TABLE_API}/sys_auto_flush").json["result"] == []  # nothing written


@pytest.mark.parametrize("user", ["agent", "manager"])
def test_only_administrators_see_and_write_the_rules(app, user):
    rule = make_rule(Api(app.test_client(), "admin"), tablename=CASES, age="60")
    api = Api(app.test_client(), user)
    assert api.get(f"{TABLE_API}/sys_auto_flush").status_code == 403
    assert api.get(f"{TABLE_API}/sys_auto_flush/{rule['sys_id']}").status_code == 403
    assert api.post(f"{TABLE_API}/sys_auto_flush", json={"tablename": CASES, "age": "60"}).status_code == 403


def run_cli(config, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": str(DEFINITIONS)}
    return subprocess.run([sys.executable, "-m", "caseloom.cli", "cleanup", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_the_command_runs_the_rules_and_says_what_each_did(app, config, runtime):
    admin = Api(app.test_client(), "admin")
    closed = now() - dt.timedelta(days=10)
    cases = [make_case(admin, "cleaner closed", state="3", close_notes="done", resolution_code="solved_permanently")
             for _ in range(2)]
    with runtime.transaction() as service:  # closed ten days ago
        physical = service.storage.physical(CASES)
        service.conn.execute(sa.update(physical).where(physical.c.sys_id.in_(cases)).values(closed_at=closed))
    make_rule(admin, tablename=CASES, matchfield="closed_at", age=str(7 * DAY), conditions="short_description=cleaner closed")

    dry = run_cli(config, "--dry-run")
    assert (dry.returncode, dry.stdout) == (0, f"{CASES}: 2 record(s) would be deleted\n"), dry.stderr
    done = run_cli(config, "--json")
    assert done.returncode == 0, done.stderr
    assert [{k: v for k, v in json.loads(line).items() if k != "rule"} for line in done.stdout.splitlines()] == [
        {"table": CASES, "matched": 2, "deleted": 2, "kept": 0, "error": None, "dry_run": False}]
    assert all(admin.get(f"{TABLE_API}/{CASES}/{c}").status_code == 404 for c in cases)


def test_a_rule_the_definitions_no_longer_allow_says_so_and_the_others_run(app, config, runtime):
    """A rule saved for a table the definitions have since dropped: its run fails with the reason, on its
    record and from the command (exit 1); the other rules still run."""
    admin = Api(app.test_client(), "admin")
    good = make_rule(admin, tablename=CASES, age="60", conditions="short_description=cleaner nothing")
    stale = make_rule(admin, tablename=CASES, age="60")
    with runtime.transaction() as service:  # as if its table had been taken out of the definitions
        physical = service.storage.physical("sys_auto_flush")
        service.conn.execute(sa.update(physical).where(physical.c.sys_id == stale["sys_id"]).values(tablename="x_gone"))
    results = {c.rule: c for c in clean(runtime)}
    assert results[stale["sys_id"]].error == "tablename: unknown table 'x_gone'"
    assert results[good["sys_id"]].error is None
    noted = admin.get(f"{TABLE_API}/sys_auto_flush/{stale['sys_id']}").json["result"]
    assert noted["last_result"] == "x_gone: not run: tablename: unknown table 'x_gone'"
    done = run_cli(config)
    assert done.returncode == 1
    assert "x_gone: not run: tablename: unknown table 'x_gone'" in done.stdout
    assert f"{CASES}: 0 record(s) deleted" in done.stdout
    # it can still be switched off, and then nothing fails
    assert admin.patch(f"{TABLE_API}/sys_auto_flush/{stale['sys_id']}", json={"active": "false"}).status_code == 200
    assert run_cli(config).returncode == 0


def test_several_workers_run_each_rule_once_an_hour(app, runtime):
    """The hourly task claims each rule by its last run: a second worker woken at the same minute finds
    it claimed and leaves it; an hour later it runs again. `caseloom cleanup` runs whenever asked."""
    admin = Api(app.test_client(), "admin")
    make_rule(admin, tablename=CASES, age="60", conditions="short_description=cleaner none")
    at = now()
    assert [c.table for c in clean(runtime, at=at, hourly=True)] == [CASES]
    assert clean(runtime, at=at + dt.timedelta(seconds=5), hourly=True) == []
    assert [c.table for c in clean(runtime, at=at + dt.timedelta(seconds=5))] == [CASES]
    assert [c.table for c in clean(runtime, at=at + dt.timedelta(hours=1), hourly=True)] == [CASES]


def test_a_record_another_run_is_deleting_is_left_to_it(app, config, runtime):
    """On PostgreSQL a record locked by another transaction (another run deleting it) is skipped, not
    waited for and not deleted twice; the rest go, and the result says one is left for the next run."""
    if not config.database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time: its write lock keeps two runs apart")
    admin = Api(app.test_client(), "admin")
    cases = [make_case(admin, "cleaner locked") for _ in range(3)]
    make_rule(admin, tablename=CASES, age="60", conditions="short_description=cleaner locked")
    other = sa.create_engine(config.database_url)
    try:
        with other.connect() as conn, conn.begin():
            physical = runtime.storage.physical(CASES)
            conn.execute(sa.select(physical.c.sys_id).where(physical.c.sys_id == cases[1]).with_for_update())
            done, = clean(runtime, at=now() + dt.timedelta(days=1))
    finally:
        other.dispose()
    assert (done.matched, done.deleted, done.kept) == (3, 2, 0)
    assert done.words() == f"{CASES}: 2 record(s) deleted, 1 left for the next run (at most 100,000 a run)"
    assert [admin.get(f"{TABLE_API}/{CASES}/{c}").status_code for c in cases] == [404, 200, 404]


def test_the_worker_runs_the_rules_every_hour(runtime):
    """The queue's periodic `cleanup` task: due at 23 minutes past each hour, and only then."""
    huey = JobQueue(runtime).huey
    due = {minute: {task.name for task in huey.read_periodic(dt.datetime(2026, 12, 7, 10, minute))}
           for minute in (22, 23, 24)}
    assert "cleanup" in due[23] and "cleanup" not in due[22] | due[24]


def test_an_administrator_adds_a_rule_in_the_browser_and_reads_its_last_run(app, runtime):
    client = app.test_client()
    ui_sign_in(client, "admin")
    menu = client.get("/").get_data(as_text=True)
    assert "Table cleaner" in menu and "/sys_auto_flush_list.do" in menu
    values = {"tablename": CASES, "matchfield": "closed_at", "age": "86400", "active": "true",
              "conditions": "state=3^short_description=cleaner none",
              "csrf_token": form_token(client, "/sys_auto_flush.do?sys_id=-1")}
    refused = client.post("/sys_auto_flush.do?sys_id=-1", data={**values, "matchfield": "short_description"})
    assert refused.status_code == 422 and b"is not a date or date-time field" in refused.data, refused.status_code
    assert Api(client, "admin").get(f"{TABLE_API}/sys_auto_flush").json["result"] == []
    answer = client.post("/sys_auto_flush.do?sys_id=-1", data=values)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    sys_id = answer.headers["Location"].rsplit("sys_id=", 1)[1]
    clean(runtime)
    form = client.get(f"/sys_auto_flush.do?sys_id={sys_id}").get_data(as_text=True)
    assert "Deleted by the last run" in form and f"{CASES}: 0 record(s) deleted" in form
    listed = client.get("/sys_auto_flush_list.do").get_data(as_text=True)
    assert "closed_at" in listed and "state=3^short_description=cleaner none" in listed


def test_old_sla_repair_logs_go_with_their_entries(app, runtime):
    """The README's rule: repair logs older than 90 days that are not in progress, their entries with them."""
    admin = Api(app.test_client(), "admin")
    case = make_case(admin, "cleaner repaired", priority="1")
    r = admin.post(f"/api/caseloom/slas/repair/{CASES}?sysparm_query=sys_id={case}")
    assert r.status_code == 200, r.json
    log = r.json["result"]["log"]
    entries = admin.get(f"{TABLE_API}/sla_repair_log_entry?sysparm_query=repair_log={log}").json["result"]
    assert entries
    make_rule(admin, tablename="sla_repair_log", age=str(90 * DAY), conditions="state!=in_progress")
    assert clean(runtime, at=now() + dt.timedelta(days=89))[0].deleted == 0
    done, = clean(runtime, at=now() + dt.timedelta(days=91))
    assert (done.table, done.deleted) == ("sla_repair_log", 1)
    assert admin.get(f"{TABLE_API}/sla_repair_log/{log}").status_code == 404
    assert admin.get(f"{TABLE_API}/sla_repair_log_entry?sysparm_query=repair_log={log}").json["result"] == []
    assert admin.get(f"{TABLE_API}/{CASES}/{case}").status_code == 200


@pytest.mark.parametrize(("cleaned", "words"), [
    (cleanup.Cleaned("r", "t", matched=5, deleted=5), "t: 5 record(s) deleted"),
    (cleanup.Cleaned("r", "t", matched=5, deleted=3, kept=1), "t: 3 record(s) deleted, 1 kept (something refers to "
                                                               "them or a guard refused), 1 left for the next run "
                                                               "(at most 100,000 a run)"),
    (cleanup.Cleaned("r", "t", matched=5, dry_run=True), "t: 5 record(s) would be deleted"),
    (cleanup.Cleaned("r", "t", error="tablename: unknown table 't'"), "t: not run: tablename: unknown table 't'"),
    (cleanup.Cleaned("r", "t", matched=9, deleted=2000, error="the database is busy"),
     "t: 2,000 record(s) deleted, 0 kept, then stopped: the database is busy"),
])
def test_what_a_run_says(cleaned, words):
    assert cleaned.words() == words


def test_the_command_on_a_database_without_the_rules_says_so(tmp_path):
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    env = {**os.environ, "CASELOOM_DATABASE_URL": f"sqlite:///{empty}", "CASELOOM_DEFINITIONS": str(DEFINITIONS)}
    done = subprocess.run([sys.executable, "-m", "caseloom.cli", "cleanup"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"caseloom cleanup: the database sqlite:///{empty} has no table cleaner rules "
                                   "table (run `caseloom init`)")
