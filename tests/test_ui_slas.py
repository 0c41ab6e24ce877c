"""SLAs on a record's form (web.ui.slas): a bar per task SLA, live as of now,
coloured as ServiceNow colours them and said in words; its timeline with the change of the record that
caused each step; the task SLA list filtered on "breaching within the hour"; an SLA definition added
through the generic form, watched until it breaches. The clock is fixed (caseloom.query.dynamic)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re

import pytest

from caseloom.query.dynamic import fixed_clock
from caseloom.timing.tick import tick
from caseloom.web.ui.slas import band, short_words, time_words, width_class
from conftest import basic, form_token, ui_sign_in

CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"
T0 = dt.datetime(2026, 6, 1, 10, 0, 0)  # a Monday, UTC; the test SLAs have no schedule: every second counts
MINUTE = dt.timedelta(minutes=1)


def section(page: str) -> str:
    """The SLA section's text as a person reads it (tags and their attributes dropped)."""
    at = page.index('<section class="slas card"')
    return words_of(page[at:page.index("</section>", at)])


def words_of(part: str) -> str:
    """HTML as a person reads it: the text alone, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", part)))


def bar_of(page: str, name: str) -> str:
    """The HTML of one SLA's bar (its <li>), found by the definition's name."""
    at = page.index(f">{name}</a>")
    start = page.rindex('<li class="sla ', 0, at)
    ends = [i for i in (page.find('<li class="sla ', at), page.find("</ul>", at)) if i >= 0]
    return page[start:min(ends)]


def add_sla(client, name: str, duration: str = "1h", **conditions) -> str:
    """An SLA definition on cases, through the generic form as an administrator types it."""
    ui_sign_in(client, "admin")
    values = {"name": name, "collection": CASE, "duration": duration, "active": "true",
              "start_condition": "active=true", **conditions}
    values["csrf_token"] = form_token(client, "/contract_sla.do?sys_id=-1")
    answer = client.post("/contract_sla.do?sys_id=-1", data=values)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return answer.headers["Location"].rsplit("sys_id=", 1)[1]


def new_case(client, user: str = "admin", **values) -> dict:
    answer = client.post(CASES, json={"short_description": "Printer on fire", "priority": "3", **values},
                         headers=basic(user))
    assert answer.status_code == 201, answer.json
    return answer.json["result"]


def form_at(client, case: dict, at: dt.datetime, user: str = "admin") -> str:
    ui_sign_in(client, user)
    with fixed_clock(at):
        answer = client.get(f"/{CASE}.do?sys_id={case['sys_id']}")
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


# -- the colours and the words, without a database ------------------------------------------------------

@pytest.mark.parametrize(("percentage", "css", "words"), [
    (0, "sla-ok", "On track"),
    (49.9, "sla-ok", "On track"),
    (50, "sla-half", "Over half elapsed"),
    (74.9, "sla-half", "Over half elapsed"),
    (75, "sla-near", "Nearly breached"),
    (99.9, "sla-near", "Nearly breached"),
    (100, "sla-breached", "Breached"),
    (140, "sla-breached", "Breached"),
])
def test_the_colour_of_a_percentage_is_servicenows_and_said_in_words(percentage, css, words):
    assert (band(percentage).css, band(percentage).words) == (css, words)


def test_a_breach_is_red_whatever_the_percentage():
    assert band(12, breached=True).css == "sla-breached"  # a breach stays one after a change of its definition


@pytest.mark.parametrize(("percentage", "width"), [
    (0, "sla-w-0"), (4.9, "sla-w-0"), (5, "sla-w-5"), (49.9, "sla-w-45"), (99.9, "sla-w-95"), (100, "sla-w-100"),
    (140, "sla-w-100"), (-3, "sla-w-0"),
])
def test_the_bar_is_as_wide_as_the_percentage_in_steps_of_five(percentage, width):
    assert width_class(percentage) == width


NOW = dt.datetime(2026, 6, 1, 12, 0, 0)


@pytest.mark.parametrize(("stage", "breached", "left", "breach_at", "words"), [
    ("in_progress", False, 2 * 3600 + 15 * 60 + 30, None, "2 Hours 15 Minutes left"),
    ("in_progress", False, 45, None, "45 Seconds left"),
    ("in_progress", False, 0, None, "0 Seconds left"),
    ("paused", False, 3 * 86400 + 60, None, "3 Days 1 Minute left (paused)"),
    ("in_progress", True, 0, NOW - dt.timedelta(hours=1), "Breached 1 Hour ago"),
    ("in_progress", True, 0, NOW - dt.timedelta(minutes=90, seconds=20), "Breached 1 Hour 30 Minutes ago"),
    ("paused", True, 0, NOW - dt.timedelta(days=2), "Breached 2 Days ago"),
    ("completed", False, 600, None, "Stopped with 10 Minutes left"),
    ("completed", True, 0, NOW - dt.timedelta(hours=5), "Breached"),
    ("cancelled", False, 3600, None, "Stopped with 1 Hour left"),
])
def test_time_left_or_since_the_breach_in_words(stage, breached, left, breach_at, words):
    assert time_words(stage, breached, left, breach_at, NOW) == words


@pytest.mark.parametrize(("seconds", "words"), [(0, "0 Seconds"), (59, "59 Seconds"), (61, "1 Minute"),
                                                 (3600 * 25 + 59, "1 Day 1 Hour")])
def test_spans_are_read_to_the_minute(seconds, words):
    assert short_words(seconds) == words


# -- the form ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("after", "css", "words"), [
    (dt.timedelta(minutes=20), "sla-ok", "33 % elapsed · 40 Minutes left"),
    (dt.timedelta(minutes=36), "sla-half", "60 % elapsed · 24 Minutes left"),
    (dt.timedelta(minutes=50), "sla-near", "83 % elapsed · 10 Minutes left"),
    (dt.timedelta(minutes=90), "sla-breached", "150 % elapsed · Breached 30 Minutes ago"),
])
def test_the_bar_is_live_as_of_now_not_the_stored_snapshot(client, after, css, words):
    add_sla(client, "Quick test")
    with fixed_clock(T0):
        case = new_case(client)
    page = form_at(client, case, T0 + after)
    bar = bar_of(page, "Quick test")
    assert f'class="sla {css}"' in bar
    shown = words_of(bar)
    assert words in shown and f"Quick test In progress {band(int(words.split()[0])).words}" in shown
    breach = "Breached at" if css == "sla-breached" else "Breaches at"
    assert f"{breach} {(T0 + dt.timedelta(hours=1)):%Y-%m-%d %H:%M:%S}" in shown


def change(client, case: dict, at: dt.datetime, user: str = "agent", **values) -> None:
    with fixed_clock(at):
        answer = client.patch(f"{CASES}/{case['sys_id']}", json=values, headers=basic(user))
    assert answer.status_code == 200, answer.json


def timeline_of(bar: str) -> list[str]:
    """One SLA's timeline entries in words, the moment left out (the audit's own clock stamps it)."""
    items = re.findall(r"<li><time[^>]*>[^<]*</time> · (.*?)</li>", bar)
    return [re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", item))) for item in items]


def test_the_timeline_says_which_change_of_the_case_did_each_step(client):
    add_sla(client, "Quick test", pause_condition="state=18", stop_condition="stateIN6,3")
    with fixed_clock(T0):
        case = new_case(client, "agent")
    change(client, case, T0 + 5 * MINUTE, state="10")
    change(client, case, T0 + 10 * MINUTE, state="18", comments="Which printer?")
    change(client, case, T0 + 20 * MINUTE, state="10")
    change(client, case, T0 + 30 * MINUTE, "manager", state="6", resolution_code="solved_remotely",
           close_notes="Toner replaced")
    page = form_at(client, case, T0 + 40 * MINUTE, "agent")
    bar = bar_of(page, "Quick test")
    *steps, completed = timeline_of(bar)
    assert steps == [
        "Attached · by agent · Case created",
        "Paused · by agent · State changed from Open to Awaiting Info",
        "Resumed · by agent · State changed from Awaiting Info to Open",
    ]
    # the same change stamped when and by whom the case was resolved (CSM's rule case_resolved, on the server's clock)
    assert re.fullmatch(r"Completed · by manager · State changed from Open to Resolved; Resolution code set to Solved "
                        r"Remotely; Close notes set to Toner replaced; Resolved set to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; "
                        r"Resolved by set to Morgan Manager", completed), completed
    shown = words_of(bar)
    # 30 minutes less the 10 paused: 20 of 60 (the figures frozen when it completed, greyed as ended)
    assert ("Quick test Completed Met 33 % elapsed · Stopped with 40 Minutes left · Was due at 2026-06-01 11:10:00"
            in shown)
    assert 'class="sla sla-ok sla-ended"' in bar


def test_the_section_reads_in_words_never_a_sys_id_newest_first(client):
    add_sla(client, "Quick test")
    with fixed_clock(T0):
        case = new_case(client, "agent", priority="1")
    change(client, case, T0 + MINUTE, priority="2")  # cancels the P1 SLAs, attaches the P2 ones
    page = form_at(client, case, T0 + 2 * MINUTE, "agent")
    text = section(page)
    assert not re.search(r"[0-9a-f]{32}", text)
    names = re.findall(r'class="sla-name" href="/task_sla\.do\?sys_id=[0-9a-f]{32}">([^<]+)</a>', page)
    assert sorted(names[:2]) == ["Case resolution P2", "Case response P2"]  # attached last: shown first
    assert sorted(names[2:]) == ["Case resolution P1", "Case response P1", "Quick test"]
    cancelled = words_of(bar_of(page, "Case response P1"))
    assert "Case response P1 Cancelled" in cancelled and "Priority changed from 1 - Critical to 2 - High" in cancelled


@pytest.mark.parametrize(("user", "shown"), [("admin", True), ("agent", False)])
def test_a_task_sla_s_form_offers_its_case_s_repair_to_administrators(client, user, shown):
    with fixed_clock(T0):
        case = new_case(client, "agent", priority="2")
    page = form_at(client, case, T0 + MINUTE, "agent")
    task_sla = re.findall(r'class="sla-name" href="/task_sla\.do\?sys_id=([0-9a-f]{32})">', page)[0]
    ui_sign_in(client, user)
    answer = client.get(f"/task_sla.do?sys_id={task_sla}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200 and case["number"] in page
    assert (f'action="/ui/slas/{CASE}/{case["sys_id"]}/repair"' in page) is shown
    assert (f"Repair SLAs of {case['number']}" in page) is shown


def test_csm_tells_the_administrator_who_repaired_slas_when_it_is_complete(client):
    """CSM's `sla_repair_complete` (definitions/notifications/slas.yaml) on the platform's repair log: an
    e-mail to whoever started the repair, naming the log's number, saying what was done."""
    with fixed_clock(T0):
        case = new_case(client, "agent", priority="2")
    answer = client.post(f"/api/caseloom/slas/repair/{CASE}?sysparm_query=sys_id={case['sys_id']}", headers=basic("admin"))
    assert answer.status_code == 200, answer.json
    log = client.get(f"/api/now/table/sla_repair_log/{answer.json['result']['log']}", headers=basic("admin")).json["result"]
    assert (log["state"], log["records"], log["source"]) == ("complete", "1", "api")
    mails = client.get("/api/now/table/sys_email?sysparm_query=subjectSTARTSWITHSLA repair",
                       headers=basic("admin")).json["result"]
    assert [(m["subject"], m["recipients"]) for m in mails] == [(f"SLA repair {log['number']} complete", "admin@example.com")]
    assert answer.json["message"] in mails[0]["body"]
    assert client.get("/api/now/table/sla_repair_log", headers=basic("manager")).status_code == 403


def test_no_sla_section_where_records_cannot_have_slas(client):
    ui_sign_in(client, "admin")
    account = client.get("/api/now/table/customer_account?sysparm_limit=1", headers=basic("admin")).json["result"][0]
    page = client.get(f"/customer_account.do?sys_id={account['sys_id']}").get_data(as_text=True)
    assert 'class="slas card"' not in page and "<h1>" in page
    assert 'class="slas card"' not in client.get(f"/{CASE}.do?sys_id=-1").get_data(as_text=True)  # a new case
    assert client.get(f"/ui/slas/customer_account/{account['sys_id']}").status_code == 404


def test_the_section_refreshes_alone(client):
    add_sla(client, "Quick test")
    with fixed_clock(T0):
        case = new_case(client)
    with fixed_clock(T0 + 30 * MINUTE):
        part = client.get(f"/ui/slas/{CASE}/{case['sys_id']}").get_data(as_text=True)
    assert part.startswith('{# ') is False and part.lstrip().startswith('<section class="slas card"')
    assert "<html" not in part and "50 % elapsed · 30 Minutes left" in section(part)


@pytest.fixture
def app_without_sla_reading(config, definitions):
    """The shipped definitions less the rule that lets agents read task SLAs."""
    from caseloom.web import create_app, db

    defs = dataclasses.replace(definitions, access=tuple(r for r in definitions.access if r.table != "task_sla"))
    app = create_app(config, defs, testing=True)
    yield app
    with app.app_context():
        db.engine.dispose()


def test_who_may_not_read_task_slas_sees_no_sla_section(client, app_without_sla_reading):
    with fixed_clock(T0):
        case = new_case(client, "agent")
    assert section(form_at(client, case, T0, "agent")).startswith(" SLAs ")  # the shipped rules: agents read them
    other = app_without_sla_reading.test_client()
    page = form_at(other, case, T0, "agent")
    assert case["number"] in page and 'class="slas card"' not in page
    assert other.get(f"/ui/slas/{CASE}/{case['sys_id']}").status_code == 404
    assert 'class="slas card"' in form_at(other, case, T0, "admin")


# -- lists --------------------------------------------------------------------------------------------------

BREACHING = "stage=in_progress^planned_end_time<=javascript:gs.hoursAgo(-1)"


def test_slas_breaching_within_the_hour_list_in_words(client):
    add_sla(client, "Quick test")
    with fixed_clock(T0):
        case = new_case(client, "agent")
    ui_sign_in(client, "agent")
    with fixed_clock(T0 + 10 * MINUTE):
        page = client.get(f"/task_sla_list.do?sysparm_query={BREACHING}").get_data(as_text=True)
        menu = re.search(r'href="(/task_sla_list\.do\?[^"]+)">SLAs breaching within the hour</a>',
                         client.get("/").get_data(as_text=True)).group(1)
        from_menu = client.get(html.unescape(menu)).get_data(as_text=True)
    rows = re.findall(r"<tr>\s*(.*?)</tr>", page[page.index("<tbody>"):], re.S)
    cells = [[re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", c))).strip()
              for c in re.findall(r"<td>(.*?)</td>", row, re.S)] for row in rows]
    assert [case["number"], "Quick test", "In progress", "false", "0", "2026-06-01 11:00:00"] in cells
    assert all("Case response" not in row[1] for row in cells)  # 8 business hours: not within the hour
    assert re.search(rf'<a href="/task_sla\.do\?sys_id=[0-9a-f]{{32}}">{case["number"]}</a>', page)
    assert f">{case['number']}</a>" in from_menu and "Quick test" in from_menu


def test_task_sla_lists_sort_by_breach_time(client):
    add_sla(client, "Quick test", duration="30m")
    add_sla(client, "Slow test", duration="2h")
    with fixed_clock(T0):
        new_case(client, "agent")
    ui_sign_in(client, "agent")
    for order, names in (("planned_end_time", ["Quick test", "Slow test"]),
                         ("-planned_end_time", ["Slow test", "Quick test"])):
        page = client.get(f"/task_sla_list.do?sysparm_query=sla.nameLIKEtest&sysparm_orderby={order}")
        shown = re.findall(r">(Quick test|Slow test)<", page.get_data(as_text=True))
        assert shown == names


# -- an SLA definition added in the browser's form, watched until it breaches ------------------------------

def test_an_sla_added_in_the_form_attaches_then_breaches_after_the_tick(client, runtime):
    add_sla(client, "Quick test", duration="2s")
    listed = client.get("/contract_sla_list.do?sysparm_query=name=Quick test").get_data(as_text=True)
    assert ">2 Seconds<" in listed  # a duration reads in words
    with fixed_clock(T0):
        token = form_token(client, f"/{CASE}.do?sys_id=-1")
        answer = client.post(f"/{CASE}.do?sys_id=-1", data={"short_description": "Printer on fire", "priority": "3",
                                                             "csrf_token": token})
        assert answer.status_code == 302, answer.get_data(as_text=True)
    case = {"sys_id": answer.headers["Location"].rsplit("sys_id=", 1)[1]}
    bar = bar_of(form_at(client, case, T0 + dt.timedelta(seconds=1)), "Quick test")
    assert 'class="sla sla-half"' in bar and "50 % elapsed · 1 Second left" in words_of(bar)
    report = tick(runtime, at=T0 + dt.timedelta(seconds=3))
    assert report.by_threshold.get(("Quick test", 100)) == 1
    bar = bar_of(form_at(client, case, T0 + dt.timedelta(seconds=3)), "Quick test")
    assert 'class="sla sla-breached"' in bar
    assert "Quick test In progress Breached 150 % elapsed · Breached 1 Second ago · Breached at 2026-06-01 10:00:02" \
        in words_of(bar)
    # the breach is a moment on the SLA's (fixed) clock, the attaching one on the audit's: both listed
    assert sorted(timeline_of(bar)) == ["Attached · by admin · Case created", "Breached"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("duration", "soon", "Duration: expected a duration such as 3600"),
    ("duration", "-5", "cannot be negative"),
    ("start_condition", "colour=red", "Start condition"),
    ("collection", "nowhere", "nowhere"),
])
def test_a_bad_sla_definition_is_refused_in_the_form_naming_the_field(client, field, value, message):
    ui_sign_in(client, "admin")
    values = {"name": "Bad", "collection": CASE, "duration": "1h", "start_condition": "active=true", field: value,
              "csrf_token": form_token(client, "/contract_sla.do?sys_id=-1")}
    answer = client.post("/contract_sla.do?sys_id=-1", data=values)
    assert answer.status_code == 422
    assert message in html.unescape(answer.get_data(as_text=True))
