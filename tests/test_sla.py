"""The SLA engine with a controlled clock: every condition and ServiceNow's evaluation order,
business time across a weekend, a holiday and both daylight-saving changes, several SLAs on one record,
a retroactive start, escalations that fire once each (also after a restart that missed them), the
set-based paths against the row path, bad SLA definitions refused with their location, and the repair
of a record's task SLAs from its history.

The application is tests/sla_app.py's: tickets, an office schedule in Europe/London and SLAs that each
start on their own category."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import re
import shutil
import sqlite3
import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import conftest
from caseloom.bootstrap import initialise
from caseloom.cli import main
from caseloom.definitions import DefinitionErrors, load_folder, load_sources
from caseloom.query import Query, Term, parse_encoded
from caseloom.query.dynamic import fixed_clock
from caseloom.runtime import Runtime
from caseloom.setwrite import update_where
from caseloom.timing.repair import repair
from caseloom.timing.tick import tick
from sla_app import FILES, HOUR, TICKET, USERS, at, one, stages, task_slas, write
from small_app import small_app, write_folder

MONDAY = at("2026-03-02 10:00")  # London is on GMT until 2026-03-29


@pytest.fixture
def app(config, tmp_path):
    with small_app(config, tmp_path, FILES, USERS) as small:
        yield small


@pytest.fixture
def runtime(app):
    return app.runtime


# -- 1. conditions and their order ----------------------------------------------------------------

ORDER, RESUME, CANCEL, NEVER = ({"category": c, "priority": 1} for c in ("order", "resume", "cancel", "never"))
R, P, C, X = "in_progress", "paused", "completed", "cancelled"

CONDITIONS = [  # (SLA, [(values written, its stages afterwards)]): the first write inserts the ticket
    ("order", [(ORDER, [R])]),
    ("order", [({**ORDER, "priority": 2}, [])]),  # start does not match
    ("order", [({**ORDER, "state": 5}, [])]),  # start and stop both true: never attaches
    ("order", [({**ORDER, "state": 3}, [P]), ({"state": 2}, [R])]),  # start and pause: attaches paused
    ("order", [(ORDER, [R]), ({"state": 3}, [P]), ({"title": "still waiting"}, [P]), ({"state": 2}, [R])]),
    ("order", [(ORDER, [R]), ({"state": 5}, [C])]),  # stop wins over pause (pause is stateIN3,5)
    ("order", [(ORDER, [R]), ({"state": 3}, [P]), ({"state": 5}, [C])]),  # a paused one stops
    ("order", [(ORDER, [R]), ({"priority": 2}, [X])]),  # when_to_cancel no_match
    ("order", [(ORDER, [R]), ({"state": 3}, [P]), ({"priority": 2}, [X])]),  # a paused one is cancelled
    ("order", [(ORDER, [R]), ({"state": 7}, [C, R])]),  # reset: completes and re-attaches
    ("order", [(ORDER, [R]), ({"state": 7, "priority": 2}, [C])]),  # reset, start gone: nothing re-attaches
    ("resume", [(RESUME, [R]), ({"state": 3}, [P]), ({"state": 2}, [P]), ({"vip": True}, [R])]),
    ("cancel", [(CANCEL, [R]), ({"priority": 2}, [R]), ({"state": 6}, [X])]),  # only the cancel condition
    ("cancel", [(CANCEL, [R]), ({"state": 6}, [X])]),  # cancel before pause (pause is stateIN3,6)
    ("cancel", [({**CANCEL, "state": 6}, [])]),  # the cancel condition keeps it from attaching
    ("cancel", [(CANCEL, [R]), ({"state": 3}, [P]), ({"state": 2}, [R])]),
    ("never", [(NEVER, [R]), ({"priority": 2}, [R]), ({"state": 3}, [R]), ({"state": 5}, [C])]),
]


def set_write(runtime, moment: dt.datetime, sys_id: str | None = None, **values) -> str:
    """`write` through the set-based paths: an INSERT ... SELECT of one ticket, or setwrite.update_where."""
    with fixed_clock(moment), runtime.transaction() as service:
        tdef = service.defs.tables[TICKET]
        if sys_id is None:
            users = service.storage.physical("sys_user")
            select = sa.select(users.c.sys_id).where(users.c.user_name == "ann")
            tag = uuid.uuid4().hex
            assert service.insert_select(TICKET, {**values, "title": tag}, select, ["assigned_to"]) == 1, service.row_by_row
            return service.query(TICKET, parse_encoded(f"title={tag}"))[0]["sys_id"]
        parsed, _ = service._parse(tdef, values)
        assert update_where(service, tdef, Term("sys_id", "eq", sys_id), parsed) == 1
        return sys_id


def sql_write(runtime, moment: dt.datetime, sys_id: str | None = None, **values) -> str:
    """`set_write` with the conditions in SQL, as when the records touched have more than
    MAX_GROUPS distinct sets of the values the conditions read."""
    from caseloom.timing import setbased

    kept, setbased.MAX_GROUPS = setbased.MAX_GROUPS, 0
    try:
        return set_write(runtime, moment, sys_id, **values)
    finally:
        setbased.MAX_GROUPS = kept


PATHS = {"row": write, "set": set_write, "sql": sql_write}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("sla", "steps"), CONDITIONS)
def test_each_condition_in_servicenow_order(runtime, path, sla, steps):
    written = PATHS[path]
    ticket = None
    for minute, (values, expected) in enumerate(steps):
        ticket = written(runtime, MONDAY + dt.timedelta(minutes=10 * minute), ticket, **values)
        assert stages(runtime, ticket, sla) == expected, (minute, values)


def test_every_stage_change_is_audited_for_the_timeline(runtime):
    """A task SLA keeps the unit of work that attached it; each later stage change is audited in the
    transaction of the record's change that caused it."""
    ticket = write(runtime, MONDAY, **ORDER)
    write(runtime, MONDAY + dt.timedelta(minutes=5), ticket, state=3)
    write(runtime, MONDAY + dt.timedelta(minutes=9), ticket, state=5)
    row = one(runtime, ticket, "order")
    with runtime.transaction() as service:
        audit = service.query("sys_audit", parse_encoded(
            f"documentkey={row['sys_id']}^fieldname=stage^ORDERBYrecord_checkpoint"))  # the history's own order
        causes = [service.query("sys_audit", parse_encoded(f"documentkey={ticket}^transaction={a['transaction']}"))
                  for a in audit]
    assert row["transaction"]
    assert [(a["oldvalue"] or None, a["newvalue"]) for a in audit] == [(R, P), (P, C)], audit
    assert [[(c["fieldname"], c["newvalue"]) for c in cause] for cause in causes] == [[("state", "3")], [("state", "5")]], \
        (audit, causes)


# -- 2. timing across a weekend, a holiday and daylight saving -----------------------------------


def timing(row: dict) -> dict:
    keys = (
        "stage",
        "duration",
        "business_duration",
        "pause_duration",
        "business_pause_duration",
        "business_percentage",
        "business_time_left",
        "planned_end_time",
    )
    return {k: row[k] for k in keys}


TIMINGS = [  # (moments of insert, pause, resume, a later write; expected timing of "office" then)
    pytest.param(
        "2026-03-06 16:00",
        "2026-03-06 17:00",
        "2026-03-09 10:00",
        "2026-03-09 10:00",
        {
            "duration": HOUR,
            "business_duration": HOUR,
            "pause_duration": 65 * HOUR,
            "business_pause_duration": 1.5 * HOUR,
            "business_percentage": Decimal("12.5"),
            "business_time_left": 7 * HOUR,
            "planned_end_time": at("2026-03-10 09:30"),
        },
        id="weekend: paused Friday 17:00 (half an hour before closing) to Monday 10:00",
    ),
    pytest.param(
        "2026-04-02 15:30",
        "2026-04-02 17:00",
        "2026-04-07 08:00",
        "2026-04-07 09:00",
        {
            "duration": 2.5 * HOUR,
            "business_duration": 2 * HOUR,
            "pause_duration": 111 * HOUR,
            "business_pause_duration": 0,
            "business_percentage": Decimal(25),
            "business_time_left": 6 * HOUR,
            "planned_end_time": at("2026-04-07 16:00"),
        },
        id="Easter: Good Friday and Easter Monday count nothing (BST: 09:00 is 08:00 UTC)",
    ),
    pytest.param(
        "2026-03-27 16:30",
        "2026-03-27 17:00",
        "2026-03-30 08:30",
        "2026-03-30 08:30",
        {
            "duration": 1800,
            "business_duration": 1800,
            "pause_duration": 63.5 * HOUR,
            "business_pause_duration": HOUR,
            "business_percentage": Decimal("6.25"),
            "business_time_left": 7.5 * HOUR,
            "planned_end_time": at("2026-03-31 08:30"),
        },
        id="spring forward 2026-03-29: paused Friday GMT, resumed Monday 09:30 BST",
    ),
    pytest.param(
        "2026-10-23 15:30",
        "2026-10-23 16:30",
        "2026-10-26 09:30",
        "2026-10-26 09:30",
        {
            "duration": HOUR,
            "business_duration": HOUR,
            "pause_duration": 65 * HOUR,
            "business_pause_duration": 1800,
            "business_percentage": Decimal("12.5"),
            "business_time_left": 7 * HOUR,
            "planned_end_time": at("2026-10-26 17:30"),
        },
        id="fall back 2026-10-25: paused Friday 17:30 BST, resumed Monday 09:30 GMT",
    ),
]


@pytest.mark.parametrize(("opened", "paused", "resumed", "seen", "expected"), TIMINGS)
def test_business_time_across_weekends_holidays_and_daylight_saving(runtime, opened, paused, resumed, seen, expected):
    ticket = write(runtime, at(opened), category="office", state=2)
    write(runtime, at(paused), ticket, state=3)
    assert one(runtime, ticket, "office")["pause_time"] == at(paused)
    write(runtime, at(resumed), ticket, state=2)
    write(runtime, at(seen), ticket, title="looked at")
    row = one(runtime, ticket, "office")
    assert timing(row) == {"stage": R, **{k: (int(v) if isinstance(v, float) else v) for k, v in expected.items()}}
    assert row["pause_time"] is None and row["timing_at"] == at(seen)


def test_a_paused_sla_counts_its_pause_so_far_and_its_breach_moves_with_it(runtime):
    """A write while the SLA is paused measures it as of then: its pause so far stops its clock and moves
    its breach. The row's pause durations keep the pauses that have ended (`pause_time` is when this one
    began, as ServiceNow's task SLA keeps them), so the resume counts the pause once: it counted it twice
    before, and the SLA then looked an hour younger than it was."""
    ticket = write(runtime, at("2026-03-06 16:00"), category="office", state=2)
    write(runtime, at("2026-03-06 17:00"), ticket, state=3)
    write(runtime, at("2026-03-09 11:00"), ticket, title="still waiting")  # Monday, paused since Friday
    row = one(runtime, ticket, "office")
    assert timing(row) == {
        "stage": P,
        "duration": HOUR,
        "business_duration": HOUR,
        "pause_duration": 0,
        "business_pause_duration": 0,
        "business_percentage": Decimal("12.5"),
        "business_time_left": 7 * HOUR,
        "planned_end_time": at("2026-03-10 10:30"),
    }
    assert (row["pause_time"], row["next_threshold"], row["threshold_due"]) == (at("2026-03-06 17:00"), 100, None)
    write(runtime, at("2026-03-09 12:00"), ticket, state=2)  # resumed: 67 hours paused, 3.5 of them business
    assert timing(one(runtime, ticket, "office")) == {
        "stage": R,
        "duration": HOUR,
        "business_duration": HOUR,
        "pause_duration": 67 * HOUR,
        "business_pause_duration": 3.5 * HOUR,
        "business_percentage": Decimal("12.5"),
        "business_time_left": 7 * HOUR,
        "planned_end_time": at("2026-03-10 11:30"),  # 4.5 business hours on Monday, 2.5 on Tuesday
    }


def test_a_24x7_sla_counts_real_time_over_the_spring_change(runtime):
    ticket = write(runtime, at("2026-03-28 23:00"), category="office", state=2)
    write(runtime, at("2026-03-29 03:00"), ticket, title="overnight")  # 4 real hours, 5 on London's clocks
    # office hours: 7.5 h on Monday from 09:00 BST (08:00 UTC), the last half hour on Tuesday
    row = one(runtime, ticket, "office 24x7")
    assert (row["duration"], row["business_duration"], row["business_percentage"], row["planned_end_time"]) == (
        4 * HOUR,
        4 * HOUR,
        Decimal(50),
        at("2026-03-29 07:00"),
    )
    office = one(runtime, ticket, "office")  # the weekend counts nothing in office hours
    assert (office["business_duration"], office["planned_end_time"]) == (0, at("2026-03-31 08:30"))


# -- 3. several SLAs on one record; 4. retroactive start --------------------------------------------


def test_several_slas_run_on_one_record_each_with_its_own_stage(runtime):
    ticket = write(runtime, at("2026-03-02 09:00"), category="office")
    assert {r["name"]: r["stage"] for r in task_slas(runtime, ticket)} == {"office": R, "office response": R, "office 24x7": R}
    write(runtime, at("2026-03-02 10:00"), ticket, state=2)
    write(runtime, at("2026-03-02 11:00"), ticket, state=3)
    rows = {r["name"]: r for r in task_slas(runtime, ticket)}
    assert {n: r["stage"] for n, r in rows.items()} == {"office": P, "office response": C, "office 24x7": P}
    response = rows["office response"]
    assert (response["end_time"], response["business_percentage"], response["has_breached"]) == (
        at("2026-03-02 10:00"),
        Decimal(50),
        False,
    )
    assert (rows["office"]["business_duration"], rows["office 24x7"]["duration"]) == (2 * HOUR, 2 * HOUR)
    write(runtime, at("2026-03-02 12:00"), ticket, state=5)
    assert {r["name"]: r["stage"] for r in task_slas(runtime, ticket)} == {"office": C, "office response": C, "office 24x7": C}


@pytest.mark.parametrize("path", PATHS)
def test_a_retroactive_sla_starts_at_the_records_date(runtime, path):
    ticket = PATHS[path](runtime, at("2026-03-02 13:30"), category="retro", opened_at="2026-03-02 09:00:00")
    row = one(runtime, ticket, "retro")
    assert (row["start_time"], row["business_duration"], row["business_percentage"], row["planned_end_time"]) == (
        at("2026-03-02 09:00"),
        3.5 * HOUR,
        Decimal("43.75"),
        at("2026-03-03 09:30"),
    )
    assert row["duration"] == 4.5 * HOUR


def test_a_retroactive_sla_without_the_date_starts_now(runtime):
    ticket = write(runtime, at("2026-03-02 13:30"), category="retro")
    assert one(runtime, ticket, "retro")["start_time"] == at("2026-03-02 13:30")


# -- 5. escalations ------------------------------------------------------------------------------


def managed_ann(runtime) -> str:
    """ann, with an address and boss (with one too) as her manager; her sys_id."""
    with runtime.transaction() as service:
        users = {u["user_name"]: u["sys_id"] for u in service.query("sys_user", Query())}
        service.update("sys_user", users["boss"], {"email": "boss@example.com"})
        service.update("sys_user", users["ann"], {"email": "ann@example.com", "manager": users["boss"]})
    return users["ann"]


def escalating(runtime) -> str:
    return write(runtime, MONDAY, category="esc", assigned_to=managed_ann(runtime))


def seen(runtime, ticket: str) -> dict:
    """What a user sees of the ticket's escalations."""
    row = one(runtime, ticket, "escalate")
    with runtime.transaction() as service:
        record = service.get(TICKET, ticket)
        notes = [e["value"] for e in reversed(service.journal(TICKET, ticket, "work_notes"))]
        mails = sorted((e["recipients"], e["subject"]) for e in service.query("sys_email", parse_encoded(f"instance={ticket}")))
    return {
        "priority": record["priority"],
        "notes": notes,
        "mails": mails,
        "breached": row["has_breached"],
        "next": (row["next_threshold"], row["threshold_due"]),
    }


def test_each_threshold_fires_once_at_its_moment(runtime):
    ticket = escalating(runtime)
    assert seen(runtime, ticket) == {
        "priority": 4,
        "notes": [],
        "mails": [],
        "breached": False,
        "next": (50, at("2026-03-02 10:30")),
    }
    assert tick(runtime, at=at("2026-03-02 10:29:59")).escalated == 0
    report = tick(runtime, at=at("2026-03-02 10:30"))
    assert (report.escalated, report.by_threshold) == (1, {("escalate", 50): 1})
    after = seen(runtime, ticket)
    assert (
        after["priority"] == 2 and after["notes"] == [] and after["mails"] == [] and after["next"] == (75, at("2026-03-02 10:45"))
    )
    assert tick(runtime, at=at("2026-03-02 10:30")).escalated == 0
    assert tick(runtime, at=at("2026-03-02 10:44:59")).escalated == 0
    assert tick(runtime, at=at("2026-03-02 10:45")).by_threshold == {("escalate", 75): 1}
    assert seen(runtime, ticket)["notes"] == ["Three quarters of the time has gone"]
    report = tick(runtime, at=at("2026-03-02 11:00"))
    assert (report.escalated, report.breached) == (1, 1)
    assert seen(runtime, ticket) == {
        "priority": 2,
        "notes": ["Three quarters of the time has gone", "Breached"],
        "breached": True,
        "mails": [("ann@example.com,boss@example.com", f"Breached: {number(runtime, ticket)}")],
        "next": (None, None),
    }


def test_on_sqlite_the_clock_ticks_through_a_long_job(runtime):
    """A tick with nothing due only reads, so it does not wait for the write lock; one with an
    escalation due gets its turn between a long job's units instead of failing after 30 s."""
    url = runtime.config.database_url
    if not url.startswith("sqlite"):
        pytest.skip("a SQLite matter: on PostgreSQL the clock waits only for the rows it changes")
    ticket = escalating(runtime)
    writer = sqlite3.connect(runtime.engine.url.database, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a writer that keeps the lock
    try:
        asked = time.monotonic()
        assert tick(runtime, at=at("2026-03-02 10:29:59")).escalated == 0
        assert time.monotonic() - asked < 10
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    with conftest.long_job_on_sqlite(url) as running:
        asked = time.monotonic()
        assert tick(runtime, at=at("2026-03-02 10:30")).by_threshold == {("escalate", 50): 1}
        assert running() and time.monotonic() - asked < 10  # in between the job's units
    assert seen(runtime, ticket)["next"] == (75, at("2026-03-02 10:45"))


def number(runtime, ticket: str) -> str:
    with runtime.transaction() as service:
        return service.get(TICKET, ticket)["number"]


def test_a_tick_after_a_restart_fires_every_missed_threshold_once_in_order(runtime):
    ticket = escalating(runtime)
    assert tick(runtime, at=at("2026-03-02 10:31")).by_threshold == {("escalate", 50): 1}
    report = tick(runtime, at=at("2026-03-02 11:05"))  # down from 10:31 to 11:05: 75 % and the breach missed
    assert report.by_threshold == {("escalate", 75): 1, ("escalate", 100): 1}
    assert (report.escalated, report.breached) == (2, 1)
    after = seen(runtime, ticket)
    assert after["notes"] == ["Three quarters of the time has gone", "Breached"]  # in order
    assert after["breached"] is True and after["mails"] == [
        ("ann@example.com,boss@example.com", f"Breached: {number(runtime, ticket)}")
    ]
    assert tick(runtime, at=at("2026-03-02 11:05")).escalated == 0
    assert tick(runtime, at=at("2026-03-03 11:05")).escalated == 0
    assert seen(runtime, ticket) == after


def test_a_paused_sla_does_not_escalate_and_its_thresholds_move_by_the_pause(runtime):
    ticket = escalating(runtime)
    write(runtime, at("2026-03-02 10:20"), ticket, state=3)
    assert one(runtime, ticket, "escalate")["threshold_due"] is None
    assert tick(runtime, at=at("2026-03-02 11:10")).escalated == 0
    write(runtime, at("2026-03-02 11:20"), ticket, state=2)  # paused one hour
    row = one(runtime, ticket, "escalate")
    assert (row["next_threshold"], row["threshold_due"], row["planned_end_time"]) == (
        50,
        at("2026-03-02 11:30"),
        at("2026-03-02 12:00"),
    )
    assert tick(runtime, at=at("2026-03-02 11:29:59")).escalated == 0
    assert tick(runtime, at=at("2026-03-02 11:30")).by_threshold == {("escalate", 50): 1}


def test_a_stopped_sla_never_escalates(runtime):
    ticket = escalating(runtime)
    write(runtime, at("2026-03-02 10:10"), ticket, state=5)
    assert tick(runtime, at=at("2026-03-02 12:00")).escalated == 0
    row = one(runtime, ticket, "escalate")
    assert (row["stage"], row["has_breached"], row["threshold_due"]) == (C, False, None)


# -- 6. the set-based paths give what the row path gives -------------------------------------------

SEEN = (
    "stage",
    "has_breached",
    "percentage",
    "business_percentage",
    "start_time",
    "end_time",
    "planned_end_time",
    "duration",
    "business_duration",
    "time_left",
    "business_time_left",
    "pause_duration",
    "business_pause_duration",
    "pause_time",
    "next_threshold",
    "threshold_due",
    "timing_at",
)


def comparable(rows: list[dict]) -> list[tuple]:
    return sorted(tuple(str(r.get(k)) for k in ("name", *SEEN)) for r in rows)


SCENARIO = [  # (moment, values): every ticket written alike
    ("2026-03-06 16:00", {"category": "office", "state": 2}),
    ("2026-03-06 17:00", {"state": 3}),
    ("2026-03-09 09:30", {"title": "still waiting"}),  # a write while paused: the pause is counted once
    ("2026-03-09 10:00", {"state": 2}),
    ("2026-03-09 11:15", {"state": 5}),
]


def test_the_set_based_paths_write_what_the_row_path_writes(runtime):
    outcome = {}
    for path, written in PATHS.items():
        tickets = [None] * 3
        for moment, values in SCENARIO:
            tickets = [written(runtime, at(moment), t, **values) for t in tickets]
        retro = written(runtime, at("2026-03-09 11:15"), category="retro", opened_at="2026-03-06 16:30:00")
        outcome[path] = comparable([r for t in [*tickets, retro] for r in task_slas(runtime, t)])
    assert len(outcome["row"]) == 3 * 2 + 1  # office and office 24x7 on each ticket, and the retroactive one
    assert outcome["set"] == outcome["row"] and outcome["sql"] == outcome["row"]


def test_one_set_based_write_moves_each_group_of_task_slas_by_its_own_timing(runtime):
    """Tickets whose SLAs started at three different times (three groups of task_sla rows) paused,
    resumed and completed by one set-based write each: every row gets its own group's values, as the
    row path gives each ticket."""
    starts = ["2026-03-06 09:00", "2026-03-06 11:30", "2026-03-06 14:45"]
    steps = [("2026-03-06 17:00", {"state": 3}), ("2026-03-09 10:00", {"state": 2}), ("2026-03-09 11:15", {"state": 5})]
    outcome = {}
    for path in ("row", "set"):
        tickets = [write(runtime, at(moment), category="office", state=2) for moment in starts]
        for moment, values in steps:
            if path == "row":
                for ticket in tickets:
                    write(runtime, at(moment), ticket, **values)
                continue
            with fixed_clock(at(moment)), runtime.transaction() as service:
                tdef = service.defs.tables[TICKET]
                parsed, _ = service._parse(tdef, values)
                where = parse_encoded("sys_idIN" + ",".join(tickets)).where
                assert update_where(service, tdef, where, parsed) == len(tickets)
        outcome[path] = comparable([r for t in tickets for r in task_slas(runtime, t)])
    assert len(outcome["row"]) == 3 * 2
    assert len({row[SEEN.index("start_time") + 1] for row in outcome["row"]}) == 3  # three groups
    assert outcome["set"] == outcome["row"]


@pytest.mark.parametrize("path", ["row", "set"])
def test_one_set_based_write_over_tickets_in_different_stages(runtime, path):
    """One write gives three tickets the same values: the one whose SLA runs keeps it (nothing new
    attaches), the paused one resumes, and the one without gets one attached, as the row path does.
    The set path knows beforehand which stages the touched tickets' SLAs are in, and that not every
    ticket has one: it must still look for each of these."""
    running = write(runtime, MONDAY, **ORDER)
    paused = write(runtime, MONDAY, **ORDER)
    write(runtime, MONDAY + dt.timedelta(minutes=5), paused, state=3)
    without = write(runtime, MONDAY, **{**ORDER, "priority": 2})
    tickets = [running, paused, without]
    assert [stages(runtime, t, "order") for t in tickets] == [[R], [P], []]
    later = MONDAY + dt.timedelta(minutes=10)
    if path == "row":
        for ticket in tickets:
            write(runtime, later, ticket, priority=1, state=2)
    else:
        with fixed_clock(later), runtime.transaction() as service:
            tdef = service.defs.tables[TICKET]
            parsed, _ = service._parse(tdef, {"priority": 1, "state": 2})
            assert update_where(service, tdef, parse_encoded("sys_idIN" + ",".join(tickets)).where, parsed) == 3
    assert [stages(runtime, t, "order") for t in tickets] == [[R], [R], [R]]


def test_csm_major_case_children_set_based_and_row_by_row_have_the_same_slas(config, definitions):
    """CSM's real definitions: children created by create_child_cases (INSERT ... SELECT), moved to
    Awaiting Info by the parent-child sync (a set-based UPDATE) and closed with their major case (a
    set-based cascade) have exactly the task SLAs the row-by-row path gives them."""
    from test_setinsert import CASE, make_children

    outcome = {}
    for set_based, tag in ((True, "a"), (False, "b")):
        runtime = Runtime(config, definitions, set_based=set_based)
        try:
            with fixed_clock(at("2026-03-06 16:00")):
                major, children, _, _ = make_children(runtime, tag)
            with runtime.transaction() as service:
                prop = service.query("sys_properties", parse_encoded("name=sn_customerservice.parent_child_case_sync"))
                service.update("sys_properties", prop[0]["sys_id"], {"value": "true"})
            with fixed_clock(at("2026-03-06 17:00")), runtime.transaction() as service:
                service.update(CASE, major, {"state": 18, "comments": "Waiting for the logs."})
            paused = [(r["name"], r["stage"]) for c in children for r in task_slas(runtime, c["sys_id"])]
            with fixed_clock(at("2026-03-09 10:00")), runtime.transaction() as service:
                service.update(CASE, major, {"state": 3, "close_notes": "Fixed", "resolution_code": "solved_remotely"})
            rows = [r for c in children for r in task_slas(runtime, c["sys_id"])]
        finally:
            runtime.engine.dispose()
        outcome[tag] = (sorted(paused), comparable(rows))
    assert outcome["a"] == outcome["b"]
    # every child's resolution SLA was paused by the sync, then completed with the major case
    assert {stage for name, stage in outcome["a"][0] if name == "Case resolution P1"} == {P}
    assert [row[1] for row in outcome["a"][1] if row[0] == "Case resolution P1"] == [C] * 30


# -- 7. bad input ------------------------------------------------------------------------------------

TABLE_API = "/api/now/table"
GOOD_SLA = {"name": "made here", "collection": TICKET, "duration": 3600, "start_condition": "category=api"}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"start_condition": "nosuch=1"}, "start_condition", "'nosuch' is not a field of 'x_ticket'"),
        ({"pause_condition": "stateCHANGESTO3"}, "pause_condition", "about a change"),
        ({"duration": -5}, "duration", "cannot be negative"),
        ({"duration": "soon"}, "duration", "expected a duration"),
        ({"start_condition": ""}, "start_condition", ""),
        ({"retroactive": True, "set_start_to": "title"}, "set_start_to", "not a date or date-time field"),
        ({"timezone_source": "definition", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"timezone_source": "definition", "timezone": ""}, "timezone", "is needed: an IANA name"),
        # a value its field refuses: saved, it made every write of the table a 400
        ({"stop_condition": "priority=high"}, "stop_condition", "priority: expected a whole number, got 'high'"),
        ({"pause_condition": "vip=maybe"}, "pause_condition", "vip: expected true or false, got 'maybe'"),
        ({"cancel_condition": "priorityIN1,x"}, "cancel_condition", "priority"),
        # a rule set to read a condition the SLA does not have: it would never fire
        ({"pause_condition": "state=3", "when_to_resume": "resume_condition"}, "resume_condition",
         "when_to_resume is resume_condition, but there is no resume condition: a paused SLA would never resume"),
        ({"pause_condition": "state=3", "when_to_resume": "resume_condition", "resume_condition": "  "},
         "resume_condition", "give a resume condition, or set when_to_resume to no_match"),
        ({"when_to_cancel": "cancel_condition"}, "cancel_condition",
         "when_to_cancel is cancel_condition, but there is no cancel condition: the SLA would never be cancelled"),
    ],
)
def test_a_bad_sla_definition_is_refused_naming_its_field(app, changes, field, words):
    r = app.api("root").post(f"{TABLE_API}/contract_sla", json={**GOOD_SLA, **changes})
    assert r.status_code == 400, r.json
    message = str(r.json["error"])
    assert field in message and words in message


def test_an_sla_with_history_or_declared_is_not_deleted_but_set_inactive(app, runtime):
    """Deleting an SLA definition deleted its task SLAs, and the reports' figures with them; a declared
    one came back at the next init. Both are refused, saying what to do instead."""
    api = app.api("root")
    made = api.post(f"{TABLE_API}/contract_sla", json=GOOD_SLA).json["result"]["sys_id"]
    unused = api.post(f"{TABLE_API}/contract_sla", json={**GOOD_SLA, "name": "never used",
                                                          "start_condition": "category=none"}).json["result"]["sys_id"]
    write(runtime, MONDAY, category="api")
    r = api.delete(f"{TABLE_API}/contract_sla/{made}")
    assert r.status_code == 409 and "1 task SLAs were measured against this SLA definition: set it inactive" in \
        r.json["error"]["message"], r.json
    declared = api.get(f"{TABLE_API}/contract_sla?sysparm_query=sourceISNOTEMPTY&sysparm_limit=1").json["result"][0]
    r = api.delete(f"{TABLE_API}/contract_sla/{declared['sys_id']}")
    assert r.status_code == 409 and f"is declared in {declared['source']}" in r.json["error"]["message"]
    assert api.delete(f"{TABLE_API}/contract_sla/{unused}").status_code == 204  # nothing measured: it goes
    assert api.get(f"{TABLE_API}/task_sla?sysparm_query=sla={made}").json["result"]


def test_an_sla_made_through_the_table_api_takes_duration_words_and_runs(app, runtime):
    r = app.api("root").post(f"{TABLE_API}/contract_sla", json={**GOOD_SLA, "duration": "8h"})
    assert r.status_code == 201, r.json
    with runtime.transaction() as service:
        assert service.get("contract_sla", r.json["result"]["sys_id"])["duration"] == 8 * HOUR
    ticket = write(runtime, MONDAY, category="api")
    assert (one(runtime, ticket, "made here")["planned_end_time"]) == MONDAY + dt.timedelta(hours=8)


def test_an_sla_changed_elsewhere_is_read_again_and_a_rolled_back_change_never_is(app, runtime):
    """The parsed definitions are kept between units of work and read again when their version (each
    row's key, modification count and time) differs: a change in another process counts at once,
    and a change that was rolled back never stands in for a later one of the same count."""
    sla = app.api("root").post(f"{TABLE_API}/contract_sla", json={**GOOD_SLA, "duration": "8h"}).json["result"]
    ticket = write(runtime, MONDAY, category="api")  # read (and kept) with 8 hours
    assert one(runtime, ticket, "made here")["planned_end_time"] == MONDAY + dt.timedelta(hours=8)
    table = runtime.storage.physical("contract_sla")
    with pytest.raises(RuntimeError), fixed_clock(MONDAY), runtime.transaction() as service:
        service.update("contract_sla", sla["sys_id"], {"duration": 2 * HOUR})
        service.insert(TICKET, {"category": "api"})  # read with 2 hours inside this unit, then undone
        raise RuntimeError("rolled back")
    other = sa.create_engine(runtime.config.database_url)  # another process, in plain SQL
    with other.begin() as conn:
        conn.execute(sa.update(table).where(table.c.sys_id == sla["sys_id"]).values(
            duration=4 * HOUR, sys_mod_count=table.c.sys_mod_count + 1, sys_updated_on=dt.datetime(2031, 1, 1)))
    other.dispose()
    ticket = write(runtime, MONDAY, category="api")
    assert one(runtime, ticket, "made here")["planned_end_time"] == MONDAY + dt.timedelta(hours=4)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"windows": "mon-fri 09:00-12:00 11:00-13:00"}, "windows", "overlap"),
        ({"windows": "mon-fri 17:00-09:00"}, "windows", ""),
        ({"time_zone": "Europe/Londn"}, "time_zone", "did you mean Europe/London"),
        ({"holidays": "2026-13-40 Nowhen"}, "holidays", ""),
    ],
)
def test_a_bad_schedule_is_refused_naming_its_field(app, changes, field, words):
    good = {"name": "made here", "time_zone": "Europe/London", "windows": "mon-fri 09:00-17:00"}
    r = app.api("root").post(f"{TABLE_API}/cmn_schedule", json={**good, **changes})
    assert r.status_code == 400, r.json
    message = str(r.json["error"])
    assert field in message and words in message


BAD_YAML = [  # (file, text, line of the offending key, words)
    (
        "slas/bad.yaml",
        "slas:\n  bad:\n    table: x_ticket\n    duration: 1h\n    start: nosuch=1\n",
        5,
        "'nosuch' is not a field",
    ),
    ("slas/bad.yaml", "slas:\n  bad:\n    table: x_ticket\n    duration: -60\n    start: category=x\n", 4, "cannot be negative"),
    (
        "slas/bad.yaml",
        "slas:\n  bad:\n    table: x_ticket\n    duration: 1h\n    start: category=x\n    schedule: nowhere\n",
        6,
        "unknown schedule 'nowhere'",
    ),
    ("slas/bad.yaml", "slas:\n  bad:\n    table: sys_user\n    duration: 1h\n    start: active=true\n", 3, "not one of them"),
    (
        "slas/bad.yaml",
        'schedules:\n  bad:\n    time_zone: Europe/London\n    windows:\n      mon-fri: ["09:00-12:00", "11:00-13:00"]\n',
        5,
        "overlap",
    ),
    (
        "slas/bad.yaml",
        'schedules:\n  bad:\n    time_zone: Mars/Olympus\n    windows: {mon: ["09:00-17:00"]}\n',
        3,
        "unknown time zone",
    ),
]


@pytest.mark.parametrize(("rule", "line", "column", "words"), [
    ("pause: state=3\n    when_to_resume: resume_condition", 7, 21,
     "when_to_resume is resume_condition, but there is no `resume` condition: a paused SLA would never resume; "
     "give a `resume` condition, or set when_to_resume to no_match (it resumes when the pause condition no longer "
     "matches)"),
    ("when_to_cancel: cancel_condition\n    cancel: ''", 6, 21,
     "when_to_cancel is cancel_condition, but there is no `cancel` condition: the SLA would never be cancelled; "
     "give a `cancel` condition, or set when_to_cancel to no_match (cancelled when the start condition no longer "
     "matches) or never"),
], ids=["resume", "cancel"])
def test_validate_refuses_a_resume_or_cancel_rule_without_its_condition(tmp_path, rule, line, column, words):
    """`when_to_resume: resume_condition` with no `resume` (a paused SLA would stay paused) and
    `when_to_cancel: cancel_condition` with no `cancel` are errors at the rule, as the API refuses them."""
    from click.testing import CliRunner

    from caseloom.cli import main

    folder = write_folder(tmp_path / "defs", {**FILES, "slas/bad.yaml": (
        f"slas:\n  bad:\n    table: x_ticket\n    duration: 1h\n    start: category=x\n    {rule}\n")})
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[:1] == [f"{folder}/slas/bad.yaml:{line}:{column}: {words}"]


@pytest.mark.parametrize(("rule", "line", "words"), [
    ("pause: state=3\n    resume: state=1", 7,
     "`resume` is given, but when_to_resume is no_match, which never reads it; set when_to_resume to "
     "resume_condition, or remove `resume`"),
    ("cancel: state=7\n    when_to_cancel: never", 6,
     "`cancel` is given, but when_to_cancel is never, which never reads it; set when_to_cancel to "
     "cancel_condition, or remove `cancel`"),
], ids=["resume", "cancel"])
def test_validate_refuses_a_resume_or_cancel_condition_its_rule_never_reads(tmp_path, rule, line, words):
    """A `resume` condition while `when_to_resume` is `no_match` (the default), or a `cancel` one while
    `when_to_cancel` is `no_match` or `never`, would be ignored without a word: an error at the condition."""
    from click.testing import CliRunner

    from caseloom.cli import main

    folder = write_folder(tmp_path / "defs", {**FILES, "slas/bad.yaml": (
        f"slas:\n  bad:\n    table: x_ticket\n    duration: 1h\n    start: category=x\n    {rule}\n")})
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[:1] == [f"{folder}/slas/bad.yaml:{line}:13: {words}"]


@pytest.mark.parametrize(("path", "text", "line", "words"), BAD_YAML)
def test_bad_sla_and_schedule_declarations_are_refused_at_their_place(path, text, line, words):
    with pytest.raises(DefinitionErrors) as info:
        load_sources([*FILES.items(), (path, text)])
    assert [str(e).split(": ", 1)[0].rsplit(":", 1)[0] for e in info.value.errors] == [f"definitions/{path}:{line}"]
    assert words in str(info.value)


# -- 8. declared SLAs are the definitions' --------------------------------------------------------


def test_a_declared_sla_is_changed_in_its_file_not_through_the_api(app, runtime):
    with runtime.transaction() as service:
        order = service.query("contract_sla", parse_encoded("name=order"))[0]
    r = app.api("root").patch(f"{TABLE_API}/contract_sla/{order['sys_id']}", json={"duration": 7200})
    assert r.status_code == 400, r.json
    assert "slas/tickets.yaml" in str(r.json["error"])
    with runtime.transaction() as service:
        assert service.get("contract_sla", order["sys_id"])["duration"] == HOUR


def test_init_twice_changes_nothing_and_a_removed_sla_goes_inactive(app, runtime, tmp_path):
    folder = tmp_path / "small-definitions"
    config = runtime.config
    assert initialise(config, load_folder(folder), runtime=runtime).timing == 0
    slas = FILES["slas/tickets.yaml"]
    write_folder(folder, {"slas/tickets.yaml": slas[: slas.index("  never:")] + slas[slas.index("  office:") :]})
    defs = load_folder(folder)
    runtime = Runtime(config, defs)
    try:
        assert initialise(config, defs, runtime=runtime).timing == 1
        assert initialise(config, defs, runtime=runtime).timing == 0
    finally:
        runtime.engine.dispose()
    runtime = app.runtime
    with runtime.transaction() as service:
        active = {r["name"]: r["active"] for r in service.query("contract_sla", Query())}
    assert active.pop("never") is False and set(active.values()) == {True}
    ticket = write(runtime, MONDAY, **NEVER)
    assert stages(runtime, ticket, "never") == []


def test_moving_the_definitions_folder_changes_no_declared_sla(app, runtime, tmp_path):
    """A declaration's record names its file inside the folder, whatever path the folder was read from."""
    moved = tmp_path / "elsewhere" / "defs"
    shutil.copytree(tmp_path / "small-definitions", moved)
    config = dataclasses.replace(runtime.config, definitions=str(moved))
    assert initialise(config, load_folder(moved), runtime=runtime).timing == 0
    with runtime.transaction() as service:
        sources = {r["name"]: r["source"] for r in service.query("contract_sla", Query())}
        schedules = {r["source"] for r in service.query("cmn_schedule", Query())}
    assert sources["order"] == "definitions/slas/tickets.yaml" and schedules == {"definitions/slas/schedule.yaml"}


def test_init_retires_slas_of_a_removed_table(config, tmp_path):
    """The shared template holds CSM's declared SLAs on sn_customerservice_case; definitions without that
    table must still initialise, leaving those SLAs inactive."""
    with small_app(config, tmp_path, FILES, USERS, own_database=True) as small, small.runtime.transaction() as service:
        gone = service.query("contract_sla", parse_encoded("collection=sn_customerservice_case"))
        assert gone and not any(r["active"] for r in gone)


# -- 9. `caseloom validate` warns about the known pitfalls -----------------------------------------

PITFALL_TABLE = ("tables/x_t.yaml", "table: x_t\nlabel: T\nsla: true\nfields:\n"
                 "  state: {type: choice, default: 1, choices: {1: New, 2: Open, 3: Waiting, 5: Done}}\n"
                 "  owner: {type: reference, to: sys_user}\n")


@pytest.mark.parametrize(("spec", "warned"), [
    ("start: state=5\n    stop: stateIN3,5", "never attaches"),
    ("start: state=2\n    stop: state!=1", "never attaches"),
    ("start: stateIN1,2\n    pause: state=3", "cancelled where it was meant to pause"),
    ("start: stateIN1,2,3\n    stop: state=5\n    pause: state=3", None),
    ("start: state=1\n    stop: ownerISNOTEMPTY", None),
    ("start: stateIN1,2\n    pause: state=3\n    when_to_cancel: never", None),
    ("start: state=1^ORstate=2\n    stop: state=5", None),
])
def test_validate_warns_about_the_known_pitfalls(spec, warned):
    defs = load_sources([PITFALL_TABLE, ("time/s.yaml", f"slas:\n  s:\n    table: x_t\n    duration: 1h\n    {spec}\n")])
    messages = [f"{w.location}: {w.message}" for w in defs.warnings]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].startswith("definitions/time/s.yaml:") and warned in messages[0]


def test_caseloom_validate_prints_warnings_and_still_passes(tmp_path):
    from click.testing import CliRunner

    from caseloom.cli import main

    folder = write_folder(tmp_path / "defs", {PITFALL_TABLE[0]: PITFALL_TABLE[1], "time/s.yaml":
                                              "slas:\n  s:\n    table: x_t\n    duration: 1h\n    start: state=5\n"
                                              "    stop: stateIN3,5\n"})
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 0
    assert "time/s.yaml:6:11: warning: SLA 's' never attaches" in result.output
    assert "valid, 1 warning(s)" in result.output


@pytest.mark.parametrize(("conditions", "warned"), [
    ({"start_condition": "category=form^state=5", "stop_condition": "stateIN3,5"},
     "SLA 'made here' never attaches: every record its start condition matches also matches its stop condition "
     "(category=form^state=5 / stateIN3,5)"),
    ({"start_condition": "category=form^stateIN1,2", "pause_condition": "state=3"},
     "SLA 'made here' is cancelled where it was meant to pause"),
    ({"start_condition": "category=form^stateIN1,2,3", "pause_condition": "state=3"}, None),
    ({"start_condition": "category=form^stateIN1,2", "pause_condition": "state=3", "when_to_cancel": "never"}, None),
], ids=["never attaches", "cancelled not paused", "sound", "never cancelled"])
def test_the_sla_form_warns_of_the_known_pitfalls_and_saves(app, conditions, warned):
    """What `caseloom validate` warns of in a declared SLA, the form says to whoever saves one: saved, with a
    warning under the confirmation, each time it is changed and still has the pitfall."""
    app.sign_in("root")
    page = app.client.get("/contract_sla.do?sys_id=-1").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    values = {"name": "made here", "collection": TICKET, "duration": "1h", "active": "true", **conditions}
    r = app.client.post("/contract_sla.do?sys_id=-1", data={**values, "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert "SLA definition made here saved." in page
    warnings = [html.unescape(w) for w in re.findall(r'<p class="flash warning" role="status">([^<]*)</p>', page)]
    assert warnings == ([] if warned is None else [warnings[0]]) and (warned is None or warned in warnings[0])
    r = app.client.post(r.headers["Location"], data={**values, "duration": "2h", "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert ('class="flash warning"' in page) is (warned is not None)  # changed, the pitfall kept: said again
    api = app.api("root").get(f"{TABLE_API}/contract_sla?sysparm_query=name=made here").json["result"]
    assert len(api) == 1  # the warning kept nothing from being saved


def test_a_schedule_file_that_cannot_be_read_is_one_error_not_one_per_sla_naming_it():
    """A mistake is reported once, where it is written: the SLAs naming a schedule of a file that cannot be
    read (an impossible date) are not also "unknown schedule"."""
    schedules = ("schedules:\n  desk:\n    time_zone: Europe/London\n    windows: {mon-fri: ['09:00-17:00']}\n"
                 "    holidays: {2027-02-30: Nowhen}\n")
    slas = "slas:\n  one:\n    table: x_ticket\n    duration: 1h\n    start: category=x\n    schedule: desk\n"
    with pytest.raises(DefinitionErrors) as info:
        load_sources([*FILES.items(), ("schedules/desk.yaml", schedules), ("slas/one.yaml", slas)])
    assert [str(e) for e in info.value.errors] == [
        "definitions/schedules/desk.yaml:5:16: '2027-02-30' is written as a date or time but is not one (day is out "
        "of range for month); write a real one, or quote it to mean the text"]


# -- 10. repair: task SLAs made again from the history ----------------------------------------------
# SLA repair: a record's task SLAs made again from its history (its audit rows), as the engine made them
# as it happened; an SLA added or changed later applied to the past; the stage changes at their historic
# moments on the form's timeline; through the record service, the Table API's neighbour
# `/api/caseloom/slas/repair`, the form's button and `caseloom sla repair`; refused, saying why, for
# tables without SLAs or history, a bad query and people who are not administrators.
#
# The application is tests/sla_app.py's (tickets, an office schedule in London, SLAs that each start on
# their own category). Every write here is made at a moment of the past: the SLA clock is fixed to it, and
# the record's creation and each update's audit rows are stamped with it, as they would have been then.

MINUTE = dt.timedelta(minutes=1)


def historic(runtime, moment: dt.datetime, sys_id: str | None = None, path: str = "row", **values) -> str:
    """`write` at `moment` (through the row path or a set-based one: test_sla's PATHS), with the stamps it
    would have had then: the ticket's creation, or the audit rows of this update."""
    sys_id = PATHS[path](runtime, moment, sys_id, **values)
    with runtime.transaction() as service:
        tickets, audit = service.storage.physical(TICKET), service.storage.physical("sys_audit")
        count = service.conn.execute(sa.select(tickets.c.sys_mod_count).where(tickets.c.sys_id == sys_id)).scalar_one()
        if not count:
            service.conn.execute(tickets.update().where(tickets.c.sys_id == sys_id).values(sys_created_on=moment))
        else:
            service.conn.execute(audit.update().where(audit.c.documentkey == sys_id,
                                                      audit.c.record_checkpoint == count).values(sys_created_on=moment))
    return sys_id


def repaired(runtime, moment: dt.datetime, query: str, actor: str | None = None):
    with fixed_clock(moment), runtime.transaction() as service:
        return repair(service, TICKET, parse_encoded(query).where)


TIMING = ("stage", "start_time", "end_time", "pause_time", "pause_duration", "business_pause_duration", "duration",
          "business_duration", "percentage", "business_percentage", "time_left", "business_time_left",
          "has_breached", "planned_end_time", "next_threshold", "threshold_due", "timing_at")


def timings(runtime, ticket: str) -> list[tuple]:
    """Each task SLA of the ticket: its definition's name and its timing, in the order they started."""
    rows = task_slas(runtime, ticket)
    return sorted(((r["name"], *(r[k] for k in TIMING)) for r in rows), key=lambda t: (t[0], t[2], t[3] is None))


def stage_changes(runtime, ticket: str) -> list[list[tuple]]:
    """Each task SLA's audited stage changes (old, new), in the order they started."""
    rows = sorted(task_slas(runtime, ticket), key=lambda r: (r["name"], r["start_time"], r["end_time"] is None))
    with runtime.transaction() as service:
        return [[(a["oldvalue"] or None, a["newvalue"]) for a in service.query(
            "sys_audit", parse_encoded(f"documentkey={r['sys_id']}^fieldname=stage^ORDERBYsys_created_on"))]
            for r in rows]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("sla", "steps"), CONDITIONS)
def test_a_repair_makes_what_the_engine_made_as_it_happened(runtime, sla, steps, path):
    """Every condition in ServiceNow's order: replayed from the history, the same task SLAs, stages, times
    and figures as the engine wrote when the changes were made (measured as of the last change), whether
    the changes went row by row or set-based (their audit rows are the history either way)."""
    ticket, moment = None, MONDAY
    for minute, (values, _) in enumerate(steps):
        moment = MONDAY + 10 * minute * MINUTE
        ticket = historic(runtime, moment, ticket, path, **values)
    live, changes = timings(runtime, ticket), stage_changes(runtime, ticket)
    done = repaired(runtime, moment, f"sys_id={ticket}")
    assert (done.records, done.removed, done.created) == (1, len(live), len(live))
    assert timings(runtime, ticket) == live
    # the same stage changes, each attach now audited too (from nothing to its first stage)
    assert [[c for c in steps if c[0] is not None] for steps in stage_changes(runtime, ticket)] == changes


OFFICE = [  # (moment, values): an office-hours SLA over a weekend with a pause across Friday's end
    (at("2026-03-05 16:00"), {"category": "office"}),  # Thursday, London 16:00 (GMT)
    (at("2026-03-06 11:00"), {"state": 3}),  # Friday: paused after 4.5 business hours
    (at("2026-03-09 10:00"), {"state": 2}),  # Monday: resumed
    (at("2026-03-09 15:00"), {"title": "looked at"}),
]


def test_business_time_and_pauses_are_replayed_on_the_schedule(runtime):
    ticket = None
    for moment, values in OFFICE:
        ticket = historic(runtime, moment, ticket, **values)
    live = timings(runtime, ticket)
    assert {t[0] for t in live} == {"office", "office 24x7", "office response"}
    repaired(runtime, OFFICE[-1][0], f"sys_id={ticket}")
    now = timings(runtime, ticket)
    escalation = TIMING.index("next_threshold") + 1
    assert [t[:escalation] + t[escalation + 2:] for t in now] == [t[:escalation] + t[escalation + 2:] for t in live]
    # the 24x7 one breached on Sunday and the response one (2 business hours) on Friday: no tick ran here, so
    # the engine still has their breaches to fire; a repair fires nothing of the past and counts it as fired,
    # as the tick would have left it; the office one (8 business hours) has not breached yet
    escalations = {t[0]: t[escalation:escalation + 2] for t in live}
    assert escalations["office 24x7"] == (100, at("2026-03-08 23:00")) and escalations["office response"][0] == 100
    assert {t[0]: t[escalation:escalation + 2] for t in now} == {
        "office": escalations["office"], "office 24x7": (None, None), "office response": (None, None)}
    assert escalations["office"][0] == 100 and escalations["office"][1] > OFFICE[-1][0]


# -- an SLA added or changed after the fact -------------------------------------------------------

REPAIR_API = "/api/caseloom/slas/repair"
LATER = {"name": "added later", "collection": TICKET, "duration": 3600, "start_condition": "category=later",
         "stop_condition": "state=5", "pause_condition": "state=3"}
HISTORY = [(MONDAY, {"category": "later"}), (MONDAY + 10 * MINUTE, {"state": 3}),
           (MONDAY + 40 * MINUTE, {"state": 2}), (MONDAY + 90 * MINUTE, {"title": "looked at"})]


def tickets_with_history(runtime, count: int = 1) -> list[str]:
    made = []
    for _ in range(count):
        ticket = None
        for moment, values in HISTORY:
            ticket = historic(runtime, moment, ticket, **values)
        made.append(ticket)
    return made


def test_an_sla_added_later_is_applied_to_the_past(app, runtime):
    """The definition did not exist while the ticket was worked: a repair attaches it when the ticket was
    opened, pauses it for the half hour the customer was awaited, and measures it as of now."""
    ticket, other = tickets_with_history(runtime, 2)
    assert task_slas(runtime, ticket) == []
    sla = app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER).json["result"]
    done = repaired(runtime, MONDAY + 2 * 60 * MINUTE, f"sys_id={ticket}")
    assert (done.records, done.removed, done.created) == (1, 0, 1)
    row = task_slas(runtime, ticket)[0]
    assert (row["sla"], row["stage"], row["start_time"], row["pause_duration"]) == (sla["sys_id"], "in_progress", MONDAY, 30 * 60)
    assert (row["duration"], row["percentage"], row["has_breached"]) == (90 * 60, 150, True)  # 2 hours less the pause
    assert row["planned_end_time"] == MONDAY + 90 * MINUTE and row["next_threshold"] is None
    assert task_slas(runtime, other) == []  # not asked for


def test_a_changed_sla_is_measured_again_from_the_start(app, runtime):
    sla = app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER).json["result"]
    ticket, = tickets_with_history(runtime)
    before = task_slas(runtime, ticket)
    assert before[0]["planned_end_time"] == MONDAY + 90 * MINUTE  # an hour, and the half-hour pause
    assert app.api("root").patch(f"{TABLE_API}/contract_sla/{sla['sys_id']}",
                                 json={"duration": "4h", "pause_condition": ""}).status_code == 200
    done = repaired(runtime, MONDAY + 2 * 60 * MINUTE, f"sys_id={ticket}")
    assert (done.removed, done.created) == (1, 1)
    row = task_slas(runtime, ticket)[0]
    assert row["sys_id"] != before[0]["sys_id"]
    assert (row["pause_duration"], row["planned_end_time"], row["has_breached"]) == (0, MONDAY + 4 * 60 * MINUTE, False)
    assert row["next_threshold"] == 100 and row["threshold_due"] == MONDAY + 4 * 60 * MINUTE
    # a start condition the ticket never met: its task SLA goes, none is made
    app.api("root").patch(f"{TABLE_API}/contract_sla/{sla['sys_id']}", json={"start_condition": "category=other"})
    done = repaired(runtime, MONDAY + 2 * 60 * MINUTE, f"sys_id={ticket}")
    assert (done.removed, done.created) == (1, 0) and task_slas(runtime, ticket) == []


def test_a_repair_goes_through_every_matching_record_a_chunk_at_a_time(app, runtime, monkeypatch):
    from caseloom.timing import repair as module

    monkeypatch.setattr(module, "CHUNK", 2)
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    made = tickets_with_history(runtime, 5)
    with runtime.transaction() as service:  # as if they had been written before the definition came
        service.conn.execute(service.storage.physical("task_sla").delete())
    seen = []
    with fixed_clock(MONDAY + 2 * 60 * MINUTE), runtime.transaction() as service:
        done = repair(service, TICKET, parse_encoded("category=later").where, progress=lambda d: seen.append(d.records))
    assert (done.records, done.removed, done.created) == (5, 0, 5) and seen == [2, 4, 5]
    assert all(len(task_slas(runtime, t)) == 1 for t in made)


def test_the_timeline_shows_the_replayed_changes_at_their_moments_with_their_causes(app, runtime):
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    ticket, = tickets_with_history(runtime)
    with runtime.transaction() as service:
        service.conn.execute(service.storage.physical("task_sla").delete())
    app.sign_in("root")
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        page = app.client.get(f"/{TICKET}.do?sys_id={ticket}").get_data(as_text=True)
        assert "No SLAs on this ticket." in page and "Repair SLAs" in page
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        r = app.client.post(f"/ui/slas/{TICKET}/{ticket}/repair", data={"csrf_token": token})
        assert r.status_code == 302 and r.headers["Location"].endswith(f"sys_id={ticket}#slas")
        page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Repaired the SLAs of 1 ticket record: 0 task SLAs removed, 1 made from their history." in page
    events = [e.split("</li>")[0] for e in page.split('<details class="sla-timeline"')[1].split("<li>")[1:]]
    assert [(" ".join(e.split())) for e in events] == [
        '<time datetime="2026-03-02T10:00:00">2026-03-02 10:00:00</time> · <strong>Attached</strong> · by system · '
        'Ticket created',
        '<time datetime="2026-03-02T10:10:00">2026-03-02 10:10:00</time> · <strong>Paused</strong> · by system · '
        'State changed from New to Awaiting customer',
        '<time datetime="2026-03-02T10:40:00">2026-03-02 10:40:00</time> · <strong>Resumed</strong> · by system · '
        'State changed from Awaiting customer to In progress',
        '<time datetime="2026-03-02T11:30:00">2026-03-02 11:30:00</time> · <strong>Breached</strong>',
    ]


def test_a_task_sla_s_form_repairs_the_slas_of_its_task(app, runtime):
    """ServiceNow's *Repair* on an SLA's form: the task's SLAs made again, this one among them; back on the
    task's form (the task SLA it came from is gone). Only administrators see it (tests/test_ui_slas.py)."""
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    ticket, = tickets_with_history(runtime)
    [old] = task_slas(runtime, ticket)
    app.sign_in("root")
    page = app.client.get(f"/task_sla.do?sys_id={old['sys_id']}").get_data(as_text=True)
    assert f'action="/ui/slas/{TICKET}/{ticket}/repair"' in page
    assert f"Repair SLAs of {number(runtime, ticket)}" in page
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        r = app.client.post(f"/ui/slas/{TICKET}/{ticket}/repair", data={"csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"sys_id={ticket}#slas")
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Repaired the SLAs of 1 ticket record: 1 task SLA removed, 1 made from their history." in page
    [new] = task_slas(runtime, ticket)
    assert new["sys_id"] != old["sys_id"] and new["name"] == "added later"


@pytest.mark.parametrize("user", ["ann", "boss"])
def test_only_an_administrator_repairs(app, runtime, user):
    ticket, = tickets_with_history(runtime)
    app.sign_in(user)
    page = app.client.get(f"/{TICKET}.do?sys_id={ticket}").get_data(as_text=True)
    assert "Repair SLAs" not in page
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    assert app.client.post(f"/ui/slas/{TICKET}/{ticket}/repair", data={"csrf_token": token}).status_code == 403
    r = app.api(user).post(f"{REPAIR_API}/{TICKET}?sysparm_query=sys_id={ticket}")
    assert r.status_code == 403 and "admin role" in r.json["error"]["detail"]
    with runtime.transaction() as service, pytest.raises(Exception, match="needs the admin role"):
        from caseloom.users import actor_named

        repair(runtime.records(service.conn, actor_named(runtime.storage, service.conn, user)), TICKET)


def test_the_api_repairs_the_records_its_query_matches(app, runtime):
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    first, second = tickets_with_history(runtime, 2)
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        r = app.api("root").post(f"{REPAIR_API}/{TICKET}?sysparm_query=sys_id={first}")
    assert r.status_code == 200, r.json
    body = r.json
    log = body["result"].pop("log")
    assert body == {"result": {"records": 1, "removed": 1, "created": 1},
                      "message": "Repaired the SLAs of 1 ticket record: 1 task SLA removed, 1 made from their history"}
    assert repair_log(app, log)["source"] == "api" and repair_log(app, log)["filter"] == f"sys_id={first}"
    assert app.api("root").post(f"{REPAIR_API}/{TICKET}").json["result"]["records"] == 2  # no query: every record


@pytest.mark.parametrize(("path", "status", "words"), [
    (f"{REPAIR_API}/x_nothing", 404, "table 'x_nothing' does not exist"),
    (f"{REPAIR_API}/sys_user", 400, "'sys_user' has no SLAs: only 'x_ticket' and the tables extending it have them"),
    (f"{REPAIR_API}/{TICKET}?sysparm_query=colour=red", 400, "colour"),
    (f"{REPAIR_API}/{TICKET}?sysparm_query=state=oops", 400, "state"),
])
def test_the_api_refuses_what_it_cannot_repair_saying_why(app, path, status, words):
    r = app.api("root").post(path)
    assert r.status_code == status and words in json.dumps(r.json), r.json


def test_more_records_than_a_request_repairs_go_to_a_background_job(app, runtime, monkeypatch):
    """Above IN_A_REQUEST matching records the API answers 202 with a job, which repairs them a chunk at a
    time, each chunk committed with its progress and where it got to (a re-run goes on from there)."""
    from caseloom.jobs import execute_job, slarepair
    from caseloom.timing import repair as module

    monkeypatch.setattr(slarepair, "IN_A_REQUEST", 1)
    monkeypatch.setattr(module, "CHUNK", 2)
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    made = tickets_with_history(runtime, 3)
    with runtime.transaction() as service:
        service.conn.execute(service.storage.physical("task_sla").delete())
    r = app.api("root").post(f"{REPAIR_API}/{TICKET}?sysparm_query=category=later")
    assert r.status_code == 202, r.json
    assert r.json["message"] == "Repairing the SLAs of 3 ticket records in the background (more than 1, as one request repairs)"
    job = r.json["result"]["job"]
    assert all(task_slas(runtime, t) == [] for t in made)  # nothing yet: the worker's part
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        ended = execute_job(runtime, job)
    assert (ended.state, ended.done, ended.total) == ("done", 3, 3)
    assert ended.message == "Repaired the SLAs of 3 ticket records: 0 task SLAs removed, 3 made from their history"
    log = r.json["result"]["log"]
    assert ended.params == {"table": TICKET, "query": "category=later", "after": max(made),  # the last one done
                            "repaired": {"records": 3, "removed": 0, "created": 3, "log": log}}
    assert all(task_slas(runtime, t)[0]["planned_end_time"] == MONDAY + 90 * MINUTE for t in made)
    seen = app.api("root").get(f"/api/caseloom/jobs/{job}").json["result"]
    assert seen["state"] == "done" and seen["message"] == ended.message
    assert app.api("ann").get(f"/api/caseloom/jobs/{job}").status_code == 403  # on the repair's log: admins'


def test_a_background_repair_run_again_goes_on_after_its_last_committed_chunk(app, runtime, monkeypatch):
    """A worker lost after its first chunk: the job's params say where it got to and what it did, and the
    next run repairs only the rest, adding up to the whole."""
    from caseloom.jobs import execute_job, slarepair
    from caseloom.timing import repair as module

    monkeypatch.setattr(slarepair, "IN_A_REQUEST", 1)
    monkeypatch.setattr(module, "CHUNK", 2)
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    made = sorted(tickets_with_history(runtime, 3))
    with runtime.transaction() as service:
        service.conn.execute(service.storage.physical("task_sla").delete())
    job = app.api("root").post(f"{REPAIR_API}/{TICKET}?sysparm_query=category=later").json["result"]["job"]
    with runtime.transaction() as service:  # as the lost run left it: two repaired (their task SLAs gone since)
        jobs = service.storage.internal("sys_job")
        params = {"table": TICKET, "query": "category=later", "after": made[1],
                  "repaired": {"records": 2, "removed": 0, "created": 2}}
        service.conn.execute(jobs.update().where(jobs.c.id == job).values(params=json.dumps(params), done=2))
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        ended = execute_job(runtime, job)
    assert (ended.state, ended.done, ended.message) == (
        "done", 3, "Repaired the SLAs of 3 ticket records: 0 task SLAs removed, 3 made from their history")
    assert [len(task_slas(runtime, t)) for t in made] == [0, 0, 1]  # only the one after where it got to


def test_caseloom_sla_repair(app, runtime):
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    ticket, = tickets_with_history(runtime)
    env = {"CASELOOM_DATABASE_URL": runtime.config.database_url, "CASELOOM_DEFINITIONS": runtime.config.definitions}
    result = CliRunner().invoke(main, ["sla", "repair", TICKET, "--query", f"sys_id={ticket}"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Repaired the SLAs of 1 ticket record: 1 task SLA removed, 1 made from their history"
    for args, words in [(["sla", "repair", "x_nothing"], "table 'x_nothing' does not exist"),
                        (["sla", "repair", TICKET, "--query", "colour=red"], "colour"),
                        (["sla", "repair", TICKET, "--user", "ann"], "needs the admin role")]:
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1 and words in result.stderr, (args, result.output)


def test_a_list_repairs_the_records_its_filter_matches(app, runtime, monkeypatch):
    from caseloom.jobs import execute_job, slarepair

    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    first, second = tickets_with_history(runtime, 2)
    with runtime.transaction() as service:
        service.conn.execute(service.storage.physical("task_sla").delete())
    app.sign_in("root")
    query = f"sys_id={first}"
    page = app.client.get(f"/{TICKET}_list.do?sysparm_query={query}").get_data(as_text=True)
    assert "Repair SLAs" in page
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    r = app.client.post(f"/ui/slas/{TICKET}/repair", data={"csrf_token": token, "sysparm_query": query})
    assert r.status_code == 302 and r.headers["Location"] == f"/{TICKET}_list.do?sysparm_query=sys_id%3D{first}"
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Repaired the SLAs of 1 ticket record: 0 task SLAs removed, 1 made from their history." in page
    assert len(task_slas(runtime, first)) == 1 and task_slas(runtime, second) == []
    monkeypatch.setattr(slarepair, "IN_A_REQUEST", 1)  # the whole list is more than one request repairs
    r = app.client.post(f"/ui/slas/{TICKET}/repair", data={"csrf_token": token, "sysparm_query": ""})
    job = r.headers["Location"].split("job=")[1]
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert ("Repairing the SLAs of 2 ticket records in the background (more than 1, as one request repairs); its "
            "progress shows below.") in page
    assert f'id="job-{job}"' in page and "Repair SLAs: queued" in page
    assert task_slas(runtime, second) == []
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        execute_job(runtime, job)
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Repair SLAs: done" in page and "2 of 2" in page
    assert len(task_slas(runtime, second)) == 1
    app.sign_in("ann")  # not an administrator: no button, and a post is refused
    page = app.client.get(f"/{TICKET}_list.do").get_data(as_text=True)
    assert "Repair SLAs" not in page
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    assert app.client.post(f"/ui/slas/{TICKET}/repair", data={"csrf_token": token}).status_code == 403


# -- the repair log --------------------------------------------------------------------------------
# ServiceNow's SLA repair log: every repair, from each of the four places, keeps who started it, from
# where, on which records, when, what it did, and each task SLA before and after it; a repair in the
# background updates it after each chunk it commits, and a stopped or failed one says so; whoever started
# it hears when it is done (a notification the application declares on the log: sla_app's `x_repaired`).
# Only administrators read it (no access rule grants it).

PLAIN = "sysparm_exclude_reference_link=true"


def repair_log(app, sys_id: str) -> dict:
    return app.api("root").get(f"{TABLE_API}/sla_repair_log/{sys_id}?{PLAIN}").json["result"]


def last_repair_log(app) -> dict:
    return app.api("root").get(f"{TABLE_API}/sla_repair_log?sysparm_query=ORDERBYDESCnumber&sysparm_limit=1&"
                               f"{PLAIN}").json["result"][0]


def log_entries(app, sys_id: str) -> dict[str, list[dict]]:
    rows = app.api("root").get(f"{TABLE_API}/sla_repair_log_entry?sysparm_query=repair_log={sys_id}&{PLAIN}")
    out: dict[str, list[dict]] = {"before": [], "after": []}
    for row in rows.json["result"]:
        out[row["type"]].append(row)
    return out


def repair_emails(runtime) -> list[tuple[str, str, str]]:
    with runtime.transaction() as service:
        return [(m["subject"], m["recipients"], m["body"]) for m in service.query(
            "sys_email", parse_encoded("subjectSTARTSWITHSLA repair^ORDERBYsys_created_on"))]


def _token(page: str) -> str:
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def _from_form(app, ticket: str) -> None:
    app.sign_in("root")
    token = _token(app.client.get(f"/{TICKET}.do?sys_id={ticket}").get_data(as_text=True))
    r = app.client.post(f"/ui/slas/{TICKET}/{ticket}/repair", data={"csrf_token": token})
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert re.search(r"made from their history\. Logged as SLAR\d{7}\.", page)


def _from_list(app, ticket: str) -> None:
    app.sign_in("root")
    token = _token(app.client.get(f"/{TICKET}_list.do").get_data(as_text=True))
    r = app.client.post(f"/ui/slas/{TICKET}/repair", data={"csrf_token": token, "sysparm_query": f"sys_id={ticket}"})
    page = app.client.get(r.headers["Location"]).get_data(as_text=True)
    assert re.search(r"made from their history\. Logged as SLAR\d{7}\.", page)


def _from_api(app, ticket: str) -> None:
    r = app.api("root").post(f"{REPAIR_API}/{TICKET}?sysparm_query=sys_id={ticket}")
    assert r.status_code == 200 and len(r.json["result"]["log"]) == 32, r.json


def _from_cli(app, ticket: str) -> None:
    runtime = app.runtime
    env = {"CASELOOM_DATABASE_URL": runtime.config.database_url, "CASELOOM_DEFINITIONS": runtime.config.definitions}
    result = CliRunner().invoke(main, ["sla", "repair", TICKET, "--query", f"sys_id={ticket}", "--user", "root"], env=env)
    assert result.exit_code == 0, result.output
    assert re.search(r"Logged as SLAR\d{7} \(sla_repair_log [0-9a-f]{32}\)", result.stderr)


PLACES = {"form": _from_form, "list": _from_list, "api": _from_api, "cli": _from_cli}
STAMP = "%Y-%m-%d %H:%M:%S"


@pytest.mark.parametrize("place", PLACES)
def test_every_repair_is_logged_with_each_task_sla_before_and_after(app, runtime, place):
    sla = app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER).json["result"]
    ticket, = tickets_with_history(runtime)
    [old] = task_slas(runtime, ticket)
    root = app.api("root").get(f"{TABLE_API}/sys_user?sysparm_query=user_name=root").json["result"][0]["sys_id"]
    assert app.api("root").patch(f"{TABLE_API}/sys_user/{root}", json={"email": "root@example.com"}).status_code == 200
    app.api("root").patch(f"{TABLE_API}/contract_sla/{sla['sys_id']}", json={"duration": "4h", "pause_condition": ""})
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        PLACES[place](app, ticket)
    [new] = task_slas(runtime, ticket)
    log = last_repair_log(app)
    assert (log["table_name"], log["filter"], log["source"], log["state"], log["initiated_by"]) == (
        TICKET, f"sys_id={ticket}", place, "complete", root)
    assert (log["records"], log["removed"], log["created"], log["job"]) == ("1", "1", "1", "")
    assert log["message"] == "Repaired the SLAs of 1 ticket record: 1 task SLA removed, 1 made from their history."
    assert log["number"].startswith("SLAR") and log["started"] and log["started"] <= log["ended"]
    entries = log_entries(app, log["sys_id"])
    [before], [after] = entries["before"], entries["after"]
    assert (before["task_sla"], after["task_sla"]) == (old["sys_id"], new["sys_id"])
    assert {before["task"], after["task"], before["sla"], after["sla"]} == {ticket, sla["sys_id"]}
    # what the old one measured (an hour and the half-hour pause: breached) and what the new one measures
    assert (before["planned_end_time"], before["pause_duration"], before["has_breached"]) == (
        (MONDAY + 90 * MINUTE).strftime(STAMP), "1800", "true")
    assert (after["planned_end_time"], after["has_breached"], after["stage"]) == (
        (MONDAY + 4 * 60 * MINUTE).strftime(STAMP), "false", "in_progress")
    [mail] = repair_emails(runtime)
    assert mail == (f"SLA repair {log['number']} complete", "root@example.com", log["message"])


def background_repair(app, runtime, monkeypatch, count: int = 3) -> tuple[list[str], dict]:
    """`count` tickets whose SLAs a background job repairs two at a time; the API's answer."""
    from caseloom.jobs import slarepair
    from caseloom.timing import repair as module

    monkeypatch.setattr(slarepair, "IN_A_REQUEST", 1)
    monkeypatch.setattr(module, "CHUNK", 2)
    monkeypatch.setattr(slarepair, "CHUNK", 2)
    app.api("root").post(f"{TABLE_API}/contract_sla", json=LATER)
    made = sorted(tickets_with_history(runtime, count))
    with runtime.transaction() as service:
        service.conn.execute(service.storage.physical("task_sla").delete())
    r = app.api("root").post(f"{REPAIR_API}/{TICKET}?sysparm_query=category=later")
    assert r.status_code == 202, r.json
    return made, r.json["result"]


def test_a_background_repair_keeps_its_log_after_each_chunk_and_its_form_shows_the_job(app, runtime, monkeypatch):
    from caseloom.jobs import execute_job, slarepair

    made, started = background_repair(app, runtime, monkeypatch)
    log = repair_log(app, started["log"])
    assert (log["state"], log["records"], log["job"], log["source"]) == ("in_progress", "0", started["job"], "api")
    app.sign_in("root")
    page = app.client.get(f"/sla_repair_log.do?sys_id={started['log']}").get_data(as_text=True)
    assert f'id="job-{started["job"]}"' in page and "Repair SLAs: queued" in page
    seen = []
    real = slarepair.repair_records

    def watched(service, table, ids, done):  # the log as each chunk's unit of work begins: the last one committed
        seen.append(service.get("sla_repair_log", started["log"])["records"])
        real(service, table, ids, done)

    monkeypatch.setattr(slarepair, "repair_records", watched)
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        assert execute_job(runtime, started["job"]).state == "done"
    assert seen == [0, 2]
    log = repair_log(app, started["log"])
    assert (log["state"], log["records"], log["removed"], log["created"]) == ("complete", "3", "0", "3")
    assert [e["task"] for e in sorted(log_entries(app, started["log"])["after"], key=lambda e: e["task"])] == made
    assert len(repair_emails(runtime)) == 0  # root has no address here: nobody to tell
    page = app.client.get(f"/sla_repair_log.do?sys_id={started['log']}").get_data(as_text=True)
    assert "Repair SLAs: done" in page and "Repair log entries" in page


def test_a_stopped_repair_s_log_says_who_stopped_it(app, runtime, monkeypatch):
    _, started = background_repair(app, runtime, monkeypatch)
    r = app.api("root").post(f"/api/caseloom/jobs/{started['job']}/cancel")
    assert r.status_code == 200, r.json
    log = repair_log(app, started["log"])
    assert (log["state"], log["records"], log["message"]) == ("stopped", "0", r.json["result"]["message"])
    assert log["message"] == "canceled by root before it started" and log["ended"]


def test_a_failed_repair_s_log_says_why_and_a_run_again_completes_it(app, runtime, monkeypatch):
    from caseloom.jobs import execute_job, slarepair

    made, started = background_repair(app, runtime, monkeypatch)
    real, calls = slarepair.repair_records, []

    def failing(service, table, ids, done):
        calls.append(ids)
        if len(calls) == 2:
            raise RuntimeError("the disk is full")
        real(service, table, ids, done)

    monkeypatch.setattr(slarepair, "repair_records", failing)
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        assert execute_job(runtime, started["job"]).state == "failed"
    log = repair_log(app, started["log"])
    assert (log["state"], log["records"], log["created"], log["message"]) == (
        "failed", "2", "2", "RuntimeError: the disk is full")
    monkeypatch.setattr(slarepair, "repair_records", real)
    with fixed_clock(MONDAY + 2 * 60 * MINUTE):
        assert execute_job(runtime, started["job"]).state == "done"
    log = repair_log(app, started["log"])
    assert (log["state"], log["records"], log["created"]) == ("complete", "3", "3")
    assert len(log_entries(app, started["log"])["after"]) == 3 and all(len(task_slas(runtime, t)) == 1 for t in made)


@pytest.mark.parametrize("user", ["ann", "boss"])
def test_only_administrators_read_repair_logs(app, runtime, user):
    ticket, = tickets_with_history(runtime)
    app.api("root").post(f"{REPAIR_API}/{TICKET}?sysparm_query=sys_id={ticket}")
    log = last_repair_log(app)
    for table in ("sla_repair_log", "sla_repair_log_entry"):
        assert app.api(user).get(f"{TABLE_API}/{table}").status_code == 403
    assert app.api(user).get(f"{TABLE_API}/sla_repair_log/{log['sys_id']}").status_code == 403
    assert app.api(user).patch(f"{TABLE_API}/sla_repair_log/{log['sys_id']}", json={"state": "failed"}).status_code == 403
    # an administrator reads it, but what the repair wrote stays as it wrote it
    r = app.api("root").patch(f"{TABLE_API}/sla_repair_log/{log['sys_id']}", json={"state": "failed"})
    assert r.status_code == 400 and "state" in json.dumps(r.json), r.json


# -- 11. SLA flows: escalations an SLA chooses by name -----------------------------------------------

FLOWS = """sla_flows:
  ticket flow:
    table: x_ticket
    default: true
    escalations:
      - {at: 50, effects: [{journal: {field: work_notes, text: "Half the time has gone"}}]}
      - at: 100
        effects:
          - notify: x_breached
          - journal: {field: work_notes, text: "Breached (ticket flow)"}
  quiet flow:
    table: x_ticket
    escalations:
      - {at: 100, effects: [{set: {priority: 1}}]}
  incident flow:
    table: x_incident
    escalations:
      - {at: 100, effects: [{set: {impact: 1}}]}
"""
FLOW_FILES = {
    **FILES,
    "tables/x_incident.yaml": "table: x_incident\nlabel: Incident\nextends: x_ticket\nfields:\n  impact: {type: integer}\n",
    "slas/flows.yaml": FLOWS,
    "slas/flowing.yaml": ("slas:\n  flowing:\n    table: x_ticket\n    duration: 1h\n    start: category=flow\n"
                          "    stop: state=5\n    flow: quiet flow\n"),
}


@pytest.fixture
def flow_app(config, tmp_path):
    with small_app(config, tmp_path, FLOW_FILES, USERS) as small:
        yield small


def notes(runtime, ticket: str) -> list[str]:
    with runtime.transaction() as service:
        return [e["value"] for e in reversed(service.journal(TICKET, ticket, "work_notes"))]


def test_a_declared_sla_escalates_by_the_flow_it_names(flow_app):
    runtime = flow_app.runtime
    api = flow_app.api("root")
    got = api.get(f"{TABLE_API}/contract_sla?sysparm_query=name=flowing")
    assert "result" in got.json, (got.status_code, got.json)
    record = got.json["result"][0]
    assert record["flow"] == "quiet flow"
    ticket = write(runtime, MONDAY, category="flow")
    assert one(runtime, ticket, "flowing")["next_threshold"] == 100
    report = tick(runtime, at=MONDAY + 60 * MINUTE)
    assert (report.escalated, report.breached) == (1, 1)
    with runtime.transaction() as service:
        assert service.get(TICKET, ticket)["priority"] == 1
    assert notes(runtime, ticket) == []  # the default flow is for new definitions, not for a declared SLA's


def test_an_sla_added_through_the_api_gets_its_tables_default_flow_and_escalates_by_it(flow_app):
    runtime = flow_app.runtime
    api = flow_app.api("root")
    made = api.post(f"{TABLE_API}/contract_sla", json=GOOD_SLA)
    assert made.status_code == 201 and made.json["result"]["flow"] == "ticket flow", made.json
    ticket = write(runtime, MONDAY, category="api", assigned_to=managed_ann(runtime))
    assert one(runtime, ticket, "made here")["next_threshold"] == 50
    assert tick(runtime, at=MONDAY + 30 * MINUTE).by_threshold == {("made here", 50): 1}
    assert notes(runtime, ticket) == ["Half the time has gone"]
    assert tick(runtime, at=MONDAY + 60 * MINUTE).by_threshold == {("made here", 100): 1}
    assert notes(runtime, ticket) == ["Half the time has gone", "Breached (ticket flow)"]
    with runtime.transaction() as service:
        mails = [(m["recipients"], m["subject"]) for m in service.query("sys_email", parse_encoded(f"instance={ticket}"))]
    assert mails == [("ann@example.com,boss@example.com", f"Breached: {number(runtime, ticket)}")]


def test_an_sla_whose_flow_is_cleared_or_changed_escalates_by_what_it_has_now(flow_app):
    runtime = flow_app.runtime
    api = flow_app.api("root")
    sla = api.post(f"{TABLE_API}/contract_sla", json=GOOD_SLA).json["result"]["sys_id"]
    assert api.patch(f"{TABLE_API}/contract_sla/{sla}", json={"flow": ""}).json["result"]["flow"] == ""
    silent = write(runtime, MONDAY, category="api")
    assert one(runtime, silent, "made here")["next_threshold"] == 100  # the breach alone
    report = tick(runtime, at=MONDAY + 60 * MINUTE)
    assert (report.escalated, report.breached) == (1, 1)
    assert notes(runtime, silent) == [] and one(runtime, silent, "made here")["has_breached"] is True
    assert api.patch(f"{TABLE_API}/contract_sla/{sla}", json={"flow": "quiet flow"}).status_code == 200
    quiet = write(runtime, MONDAY + 2 * 60 * MINUTE, category="api")
    tick(runtime, at=MONDAY + 3 * 60 * MINUTE)
    with runtime.transaction() as service:
        assert service.get(TICKET, quiet)["priority"] == 1
    assert notes(runtime, quiet) == []
    incident = api.post(f"{TABLE_API}/contract_sla", json={**GOOD_SLA, "name": "incidents", "collection": "x_incident",
                                                            "flow": "incident flow"})
    assert incident.status_code == 201 and incident.json["result"]["flow"] == "incident flow"


@pytest.mark.parametrize(("changes", "words"), [
    ({"flow": "incident flow"}, "SLA flow 'incident flow' runs its effects on 'x_incident' records; this SLA attaches "
                                "to 'x_ticket' records, which are not 'x_incident' records (choose a flow of "
                                "'x_ticket' or of a table it extends)"),
    ({"flow": "no such flow"}, "'no such flow' is not one of the choices (ticket flow, quiet flow, incident flow)"),
], ids=["another table", "unknown"])
def test_a_flow_an_sla_cannot_use_is_refused_naming_the_field(flow_app, changes, words):
    r = flow_app.api("root").post(f"{TABLE_API}/contract_sla", json={**GOOD_SLA, **changes})
    assert r.status_code == 400, r.json
    assert r.json["error"]["detail"] == {"field": "flow", "reason": words}, r.json


def test_the_sla_form_offers_the_declared_flows(flow_app):
    flow_app.sign_in("root")
    page = flow_app.client.get("/contract_sla.do?sys_id=-1").get_data(as_text=True)
    assert 'name="flow"' in page
    for name in ("ticket flow", "quiet flow", "incident flow"):
        assert f'<option value="{name}"' in page, name


BAD_FLOWS = [  # (file, text, line of the offending key, words)
    ("slas/bad.yaml", "slas:\n  bad:\n    table: x_ticket\n    duration: 1h\n    start: category=x\n    flow: nowhere\n",
     6, "unknown SLA flow 'nowhere' (known: incident flow, quiet flow, ticket flow)"),
    ("slas/bad.yaml", "slas:\n  bad:\n    table: x_ticket\n    duration: 1h\n    start: category=x\n    flow: quiet flow\n"
     "    escalations:\n      - {at: 50, effects: [{set: {priority: 2}}]}\n",
     6, "an SLA has its flow's escalations or its own, not both"),
    ("slas/bad.yaml", "slas:\n  bad:\n    table: x_ticket\n    duration: 1h\n    start: category=x\n    flow: incident flow\n",
     6, "SLA flow 'incident flow' runs its effects on 'x_incident' records; this SLA attaches to 'x_ticket' records"),
    ("slas/bad_flow.yaml", "sla_flows:\n  again:\n    table: x_ticket\n    default: true\n    escalations:\n"
     "      - {at: 50, effects: [{set: {priority: 2}}]}\n",
     4, "'x_ticket' already has a default SLA flow, 'ticket flow': a table has one at most"),
    ("slas/bad_flow.yaml", "sla_flows:\n  users:\n    table: sys_user\n    escalations:\n"
     "      - {at: 50, effects: [{set: {active: false}}]}\n", 3, "SLA flows attach to the table that declares `sla: true`"),
    ("slas/bad_flow.yaml", "sla_flows:\n  twice:\n    table: x_ticket\n    escalations:\n"
     "      - {at: 50, effects: [{set: {priority: 2}}]}\n      - {at: 50, effects: [{set: {priority: 1}}]}\n",
     5, "two escalations at the same percentage"),
    ("slas/bad_flow.yaml", "sla_flows:\n  mute:\n    table: x_ticket\n    escalations:\n"
     "      - {at: 50, effects: [{notify: nobody_hears}]}\n", 5, "nobody_hears"),
    ("slas/bad_flow.yaml", "sla_flows:\n  empty:\n    table: x_ticket\n    escalations: []\n", 4, "should be non-empty"),
    ("slas/bad_flow.yaml", "sla_flows:\n  quiet flow:\n    table: x_ticket\n    escalations:\n"
     "      - {at: 50, effects: [{set: {priority: 2}}]}\n", 3, "SLA flow 'quiet flow' is already declared at"),
]


@pytest.mark.parametrize(("path", "text", "line", "words"), BAD_FLOWS,
                         ids=["unknown", "both", "another table", "two defaults", "not an SLA table", "same percentage",
                              "unknown notification", "no escalations", "twice"])
def test_bad_flows_and_sla_flow_names_are_refused_at_their_place(path, text, line, words):
    files = {k: v for k, v in FLOW_FILES.items() if k != "slas/flowing.yaml"}
    with pytest.raises(DefinitionErrors) as info:
        load_sources([*files.items(), (path, text)])
    assert [str(e).split(": ", 1)[0].rsplit(":", 1)[0] for e in info.value.errors] == [f"definitions/{path}:{line}"]
    assert words in str(info.value)


def test_an_sla_naming_a_broken_flow_is_not_reported_again():
    broken = FLOWS.replace("{at: 100, effects: [{set: {priority: 1}}]}", "{at: 100, effects: [{set: {nosuch: 1}}]}")
    with pytest.raises(DefinitionErrors) as info:
        load_sources([*{**FLOW_FILES, "slas/flows.yaml": broken}.items()])
    assert len(info.value.errors) == 1 and "nosuch" in str(info.value), info.value.errors


def test_csm_slas_name_their_flow_and_a_case_sla_added_later_gets_it(definitions):
    flow = definitions.sla_flows["Case SLA flow"]
    assert [e.at for e in flow.escalations] == [50, 75, 100] and flow.default
    assert {s.flow for s in definitions.slas.values()} == {"Case SLA flow"}
    assert definitions.default_flow("sn_customerservice_case") is flow
    assert definitions.default_flow("task") is None  # the flow's effects are for cases
