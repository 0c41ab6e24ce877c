"""Timers (caseloom.timing.timers), with a controlled clock: a condition held for a while (business
time under a schedule) and a date-time field plus an offset; set, moved and cancelled with the
record's writes on the row path and the set-based path alike; fired once by the tick, also after a
restart; bad timer definitions refused where they are written."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from caseloom.definitions import DefinitionErrors, load_sources
from caseloom.query import Term, parse_encoded
from caseloom.query.dynamic import fixed_clock
from caseloom.setwrite import update_where
from caseloom.timing.tick import tick
from small_app import small_app

JOB = "x_job"
TABLE = """table: x_job
label: Job
display: title
fields:
  title: {type: string, max_length: 80}
  state:
    type: choice
    default: 1
    choices: {1: Open, 2: Waiting, 5: Done}
  due_on: {type: datetime}
  stale: {type: boolean, default: false}
  owner: {type: reference, to: sys_user}
  work_notes: {type: journal}
"""
SCHEDULE = """schedules:
  office:
    time_zone: Europe/London
    windows: {mon-fri: ["09:00-12:30", "13:30-17:30"]}
"""
TIMERS = """timers:
  waiting_too_long:
    table: x_job
    condition: state=2
    for: 2h
    schedule: office
    effects:
      - set: {stale: true}
      - journal: {field: work_notes, text: "Waiting for two office hours"}
  due_soon:
    table: x_job
    at: due_on
    offset: -1 hour
    condition: state!=5
    effects:
      - notify: x_due_soon
      - journal: {field: work_notes, text: "Due within the hour"}
"""
NOTIFICATIONS = """notifications:
  x_due_soon:
    table: x_job
    recipients: {fields: [owner]}
    subject: "Due soon: {{ record.title }}"
    body: "{{ record.title }} is due at {{ record.due_on }}."
"""
FILES = {"tables/x_job.yaml": TABLE, "time/office.yaml": SCHEDULE, "time/timers.yaml": TIMERS,
         "notifications/jobs.yaml": NOTIFICATIONS}
MONDAY = dt.datetime(2026, 3, 2, 10, 0)  # 10:00 in London (GMT)


@pytest.fixture
def runtime(config, tmp_path):
    with small_app(config, tmp_path, FILES, {"root": ["admin"], "ann": []}) as small:
        with small.runtime.transaction() as service:
            service.update("sys_user", _user(service, "ann"), {"email": "ann@example.com"})
        yield small.runtime


def _user(service, name: str) -> str:
    return service.query("sys_user", parse_encoded(f"user_name={name}"))[0]["sys_id"]


def write(runtime, moment: dt.datetime, sys_id: str | None = None, **values) -> str:
    with fixed_clock(moment), runtime.transaction() as service:
        if sys_id is None:
            return service.insert(JOB, values)["sys_id"]
        service.update(JOB, sys_id, values)
        return sys_id


def timers(runtime, job: str) -> dict[str, tuple]:
    with runtime.transaction() as service:
        rows = service.query("sys_timer", parse_encoded(f"document={job}"))
    return {r["timer"]: (r["state"], r["due"]) for r in rows}


def job(runtime, sys_id: str) -> dict:
    with runtime.transaction() as service:
        record = service.get(JOB, sys_id)
        notes = [e["value"] for e in service.journal(JOB, sys_id, "work_notes")]
    return record | {"notes": notes}


def test_a_condition_timer_counts_business_time_and_fires_once(runtime):
    task = write(runtime, MONDAY, title="Quote", state=2)
    # two office hours from Monday 10:00: 10:00-12:30 is 2.5 h, so 12:00
    assert timers(runtime, task) == {"waiting_too_long": ("waiting", dt.datetime(2026, 3, 2, 12, 0))}
    assert tick(runtime, dt.datetime(2026, 3, 2, 11, 59, 59)).timers == 0
    assert job(runtime, task)["stale"] is False
    assert tick(runtime, dt.datetime(2026, 3, 2, 12, 0)).timers == 1
    after = job(runtime, task)
    assert after["stale"] is True and after["notes"] == ["Waiting for two office hours"]
    assert tick(runtime, dt.datetime(2026, 3, 3, 12, 0)).timers == 0  # once per wait
    assert timers(runtime, task)["waiting_too_long"][0] == "fired"


def test_a_condition_timer_crosses_the_lunch_break_and_the_weekend(runtime):
    task = write(runtime, dt.datetime(2026, 3, 6, 16, 30), title="Friday", state=2)  # Friday 16:30
    # 1 h on Friday (16:30-17:30), then 1 h on Monday (09:00-10:00)
    assert timers(runtime, task)["waiting_too_long"][1] == dt.datetime(2026, 3, 9, 10, 0)
    lunch = write(runtime, dt.datetime(2026, 3, 9, 11, 30), title="Lunch", state=2)
    # 1 h before lunch (11:30-12:30), 1 h after (13:30-14:30)
    assert timers(runtime, lunch)["waiting_too_long"][1] == dt.datetime(2026, 3, 9, 14, 30)


def test_a_condition_timer_is_cancelled_when_the_condition_stops_and_set_again_when_it_returns(runtime):
    task = write(runtime, MONDAY, title="Quote", state=2)
    write(runtime, MONDAY + dt.timedelta(hours=1), task, state=1)
    assert "waiting_too_long" not in timers(runtime, task)
    assert tick(runtime, dt.datetime(2026, 3, 2, 17, 0)).timers == 0
    write(runtime, dt.datetime(2026, 3, 2, 14, 0), task, state=2)
    assert timers(runtime, task)["waiting_too_long"] == ("waiting", dt.datetime(2026, 3, 2, 16, 0))


def test_a_date_timer_fires_at_the_date_plus_its_offset_and_follows_the_date(runtime):
    with runtime.transaction() as service:
        ann = _user(service, "ann")
    task = write(runtime, MONDAY, title="Report", owner=ann, due_on="2026-03-04 15:00:00")
    assert timers(runtime, task)["due_soon"] == ("waiting", dt.datetime(2026, 3, 4, 14, 0))
    write(runtime, MONDAY, task, due_on="2026-03-05 15:00:00")
    assert timers(runtime, task)["due_soon"] == ("waiting", dt.datetime(2026, 3, 5, 14, 0))
    assert tick(runtime, dt.datetime(2026, 3, 5, 13, 59)).timers == 0
    assert tick(runtime, dt.datetime(2026, 3, 5, 14, 0)).timers == 1
    with runtime.transaction() as service:
        emails = service.query("sys_email", parse_encoded(f"instance={task}"))
    assert [(e["recipients"], e["subject"]) for e in emails] == [("ann@example.com", "Due soon: Report")]
    assert job(runtime, task)["notes"] == ["Due within the hour"]
    # a new date after it fired: it waits again for the new one
    write(runtime, dt.datetime(2026, 3, 5, 14, 30), task, due_on="2026-03-09 12:00:00")
    assert timers(runtime, task)["due_soon"] == ("waiting", dt.datetime(2026, 3, 9, 11, 0))
    write(runtime, dt.datetime(2026, 3, 5, 14, 30), task, due_on="")
    assert "due_soon" not in timers(runtime, task)


def test_a_tick_after_a_restart_fires_what_it_missed_once(runtime):
    tasks = [write(runtime, MONDAY, title=f"Job {i}", state=2, due_on="2026-03-02 12:00:00") for i in range(3)]
    report = tick(runtime, dt.datetime(2026, 3, 10, 9, 0))  # a week late: both timers of all three
    assert report.timers == 6
    assert tick(runtime, dt.datetime(2026, 3, 10, 9, 0)).timers == 0
    assert all(job(runtime, t)["notes"].count("Waiting for two office hours") == 1 for t in tasks)


def test_the_set_based_path_sets_and_cancels_timers_as_the_row_path_does(runtime):
    tasks = [write(runtime, MONDAY, title=f"Job {i}") for i in range(4)]
    with fixed_clock(MONDAY), runtime.transaction() as service:
        update_where(service, service.defs.tables[JOB], Term("title", "startswith", "Job"), {"state": 2})
    assert {t: timers(runtime, t) for t in tasks} == {
        t: {"waiting_too_long": ("waiting", dt.datetime(2026, 3, 2, 12, 0))} for t in tasks}
    with fixed_clock(MONDAY), runtime.transaction() as service:
        update_where(service, service.defs.tables[JOB], Term("title", "eq", "Job 0"), {"state": 1})
    assert timers(runtime, tasks[0]) == {}
    assert all(timers(runtime, t) for t in tasks[1:])


def test_the_set_based_path_keeps_a_fired_timer_and_sets_a_dated_one_as_the_row_path_does(runtime):
    tasks = [write(runtime, MONDAY, title=f"Job {i}", state=2) for i in range(3)]
    assert tick(runtime, dt.datetime(2026, 3, 2, 12, 0)).timers == 3
    with fixed_clock(MONDAY + dt.timedelta(hours=3)), runtime.transaction() as service:
        update_where(service, service.defs.tables[JOB], Term("title", "startswith", "Job"),
                     {"due_on": dt.datetime(2026, 3, 4, 15, 0)})
    row_path = write(runtime, MONDAY, title="Row path", state=2)
    tick(runtime, dt.datetime(2026, 3, 2, 12, 0))
    write(runtime, MONDAY + dt.timedelta(hours=3), row_path, due_on=dt.datetime(2026, 3, 4, 15, 0))
    expected = {"waiting_too_long": ("fired", dt.datetime(2026, 3, 2, 12, 0)),
                "due_soon": ("waiting", dt.datetime(2026, 3, 4, 14, 0))}
    assert {t: timers(runtime, t) for t in [*tasks, row_path]} == {t: expected for t in [*tasks, row_path]}


def test_a_timer_row_follows_its_record_when_the_record_is_deleted(runtime):
    task = write(runtime, MONDAY, title="Gone", state=2)
    with runtime.transaction() as service:
        service.delete(JOB, task)
    assert tick(runtime, dt.datetime(2026, 3, 3, 9, 0)).timers == 0
    with runtime.engine.connect() as conn:
        left = conn.execute(sa.text("SELECT state FROM sys_timer WHERE document = :d"), {"d": task}).scalars().all()
    assert left == []  # never fires on a record that is gone, and is cleared


BAD_TIMERS = [
    ("  t:\n    table: x_job\n    condition: state=2\n    for: 2h\n    at: due_on\n    effects: []\n",
     "say either `for`"),
    ("  t:\n    table: x_job\n    for: 2h\n    effects: []\n", "give the condition"),
    ("  t:\n    table: x_job\n    at: title\n    effects: []\n", "is not a date or date-time field"),
    ("  t:\n    table: x_job\n    at: due_on\n    offset: soon\n    effects: []\n", "offset: expected a duration"),
    ("  t:\n    table: x_job\n    condition: nope=2\n    for: 2h\n    effects: []\n", "'nope' is not a field"),
    ("  t:\n    table: x_job\n    condition: state=2\n    for: 2h\n    schedule: nights\n    effects: []\n",
     "unknown schedule 'nights'"),
    ("  t:\n    table: x_job\n    condition: stateCHANGESTO2\n    for: 2h\n    effects: []\n", "about a change"),
]


@pytest.mark.parametrize(("body", "message"), BAD_TIMERS)
def test_bad_timers_are_refused_where_they_are_written(body, message):
    sources = [("tables/x_job.yaml", TABLE), ("time/office.yaml", SCHEDULE), ("time/bad.yaml", "timers:\n" + body)]
    with pytest.raises(DefinitionErrors) as caught:
        load_sources(sources)
    errors = [str(e) for e in caught.value.errors]
    assert any(e.startswith("definitions/time/bad.yaml:") and message in e for e in errors), errors
