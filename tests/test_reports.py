"""Reports and dashboards (definitions kinds `reports` and `dashboard`): every number is what the user may
read, and its drill-down query lists exactly the records it counts; trends show every period of the
range, a score its change against the period before; dashboards are the home page of their roles;
mistakes in the YAML are named where they are written. On CSM and on an application of the test's own."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
import statistics
from urllib.parse import quote

import openpyxl
import pytest
import sqlalchemy as sa

from caseloom.definitions import DefinitionErrors, load_folder
from caseloom.fieldtypes import duration_words
from caseloom.jobs import email as delivery
from caseloom.jobs.registry import execute_job
from caseloom.query.aggregate import number_text
from caseloom.runtime import Runtime
from conftest import basic, ui_sign_in
from small_app import small_app, write_folder

CSM_REPORTS = ["new_cases_per_day", "new_cases", "backlog_by_state_and_priority", "average_time_to_resolve",
               "cases_per_agent", "sla_compliance", "sla_compliance_by_definition", "slas_breaching_soon",
               "open_major_cases", "children_by_state", "affected_customers",
               "notifications_by_state", "time_to_notify_customers", "customers_not_yet_notified"]


CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"
ACTIONS = f"/api/caseloom/actions/{CASE}"


def report_json(api, name: str, days: str = "all") -> dict:
    r = api.get(f"/api/caseloom/report/{name}?range={days}")
    assert r.status_code == 200, r.json
    return r.json["result"]


def total(api, table: str, query: str) -> int:
    r = api.get(f"/api/now/table/{table}?sysparm_limit=1&sysparm_query={quote(query)}")
    assert r.status_code == 200, (query, r.json)
    return int(r.headers["X-Total-Count"])


def cells(result: dict) -> list[dict]:
    """Every number of a chart (stacked ones per series)."""
    return [s for g in result.get("groups", ()) for s in g.get("series", [g])]


# -- CSM ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CSM_REPORTS)
def test_every_csm_report_opens_for_the_manager_as_a_page_and_through_the_api(client, as_user, name):
    report_json(as_user("manager"), name)
    ui_sign_in(client, "manager")
    page = client.get(f"/report/{name}?range=all")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "This report cannot be shown" not in text
    assert client.get(f"/report/{name}", headers={"HX-Request": "true"}).status_code == 200


def test_the_time_to_notify_every_customer_of_a_major_case(client, as_user, config, definitions, mailbox):
    """Accepted, children created (one e-mail each, waiting): every customer counts as not yet told.
    Sent over SMTP: each child knows when its customer was told, and the major case's bar is the
    time from its acceptance to the last of them."""
    manager = as_user("mim")
    major = manager.post(CASES, json={"short_description": "Storage outage", "major_case_state": "proposed",
                                      "priority": "1"}).json["result"]["sys_id"]
    for action in ("accept_major_case", "open_case"):
        assert manager.post(f"{ACTIONS}/{major}/{action}", json={}).status_code == 200
    accepted = manager.get(f"{CASES}/{major}?sysparm_fields=accepted_on").json["result"]["accepted_on"]
    assert accepted
    lists = manager.get("/api/now/table/sn_publications_recipients_list?sysparm_query=type=accounts"
                        "&sysparm_limit=1").json["result"]
    assert manager.patch(f"{CASES}/{major}", json={"recipient_list": lists[0]["sys_id"]}).status_code == 200
    runtime = Runtime(dataclasses.replace(config, smtp_host="127.0.0.1", smtp_port=mailbox.port,
                                          smtp_from="caseloom@example.test"), definitions)
    try:
        r = manager.post(f"{ACTIONS}/{major}/create_child_cases", json={"comments": "We are on it."})
        assert r.status_code == 202, r.json
        execute_job(runtime, r.json["result"]["job"])
        children = manager.get(f"{CASES}?sysparm_query=parent={major}^contactISNOTEMPTY"
                               "&sysparm_fields=sys_id,customer_notified_on").json["result"]
        assert children and all(c["customer_notified_on"] == "" for c in children)
        waiting = {g["group"]["value"]: g for g in report_json(manager, "customers_not_yet_notified")["groups"]}
        assert int(waiting[major]["value"]) == len(children)
        assert total(manager, CASE, waiting[major]["query"]) == len(children)
        assert major not in {g["group"]["value"] for g in report_json(manager, "time_to_notify_customers")["groups"]}

        delivery.deliver_pending(runtime)
    finally:
        runtime.engine.dispose()
    told = manager.get(f"{CASES}?sysparm_query=parent={major}^contactISNOTEMPTY"
                       "&sysparm_fields=sys_id,customer_notified_on").json["result"]
    assert len(mailbox.messages) >= len(children) and all(c["customer_notified_on"] for c in told)
    assert major not in {g["group"]["value"] for g in report_json(manager, "customers_not_yet_notified")["groups"]}
    bars = {g["group"]["value"]: g for g in report_json(manager, "time_to_notify_customers")["groups"]}
    last = max(dt.datetime.fromisoformat(c["customer_notified_on"]) for c in told)
    # (the Table API shows whole seconds; the database keeps fractions)
    assert abs(float(bars[major]["value"]) - (last - dt.datetime.fromisoformat(accepted)).total_seconds()) < 1
    assert total(manager, CASE, bars[major]["query"]) == len(told)


@pytest.mark.parametrize("name", ["backlog_by_state_and_priority", "cases_per_agent", "sla_compliance",
                                  "new_cases_per_day", "new_cases"])
def test_each_number_lists_exactly_the_records_it_counts(as_user, name):
    api = as_user("manager")
    result = report_json(api, name, "30")
    numbers = cells(result) or [result["score"]]
    assert sum(int(c["value"]) for c in numbers) > 0, result
    for cell in numbers:
        assert total(api, result["table"], cell["query"]) == int(cell["value"]), cell


def test_sla_compliance_by_definition_is_each_sla_s_share_met(as_user):
    """A bar per SLA definition (by its name), the share of its task SLAs not breached; each opens those."""
    api = as_user("manager")
    result = report_json(api, "sla_compliance_by_definition", "all")
    assert result["measure"] == "Percent met" and result["groups"], result
    breached = 0
    for group in result["groups"]:
        assert group["group"]["display_value"].startswith("Case ")  # "Case resolution P3", not a sys_id
        everything = total(api, "task_sla", f"{result['query']}^sla={group['group']['value']}")
        met = total(api, "task_sla", group["query"])
        assert met == round(float(group["value"]) * everything / 100) and group["query"].endswith("has_breached=false")
        breached += everything - met
    donut = {g["group"]["value"]: int(g["value"]) for g in report_json(api, "sla_compliance", "all")["groups"]}
    assert breached == donut.get("true", 0)


def test_sla_compliance_is_counted_from_an_index_in_its_grouped_order(runtime, definitions):
    """The SLA compliance report's statement reads task_sla's (has_breached, stage, start_time) index,
    not its rows, and groups in the index's order, sorting nothing."""
    from caseloom.insight import run_report

    statements = []
    with runtime.engine.begin() as conn:
        sa.event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2:4]))
        result = run_report(runtime.records(conn), definitions.reports["sla_compliance"], "30")
        assert sum(cell.value for cell in result.cells.values()) > 0
        [(sql, parameters)] = [s for s in statements if "task_sla" in s[0]]
        if conn.dialect.name == "sqlite":
            plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters))
            assert "USING COVERING INDEX ix_task_sla_has_breached_stage_start_time" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a handful of rows: scanning them wins
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + sql, parameters).scalars())
            assert "Index Only Scan using ix_task_sla_has_breached_stage_start_time" in plan, plan
            assert "Sort" not in plan, plan


def test_the_backlog_counts_what_the_table_api_lists(as_user):
    api = as_user("manager")
    result = report_json(api, "backlog_by_state_and_priority")
    r = api.get("/api/now/table/sn_customerservice_case?sysparm_query=active=true&sysparm_fields=state,priority"
                "&sysparm_limit=1000")
    expected: dict[tuple[str, str], int] = {}
    for row in r.json["result"]:
        expected[(row["state"], row["priority"])] = expected.get((row["state"], row["priority"]), 0) + 1
    got = {(g["group"]["value"], s["group"]["value"]): int(s["value"]) for g in result["groups"] for s in g["series"]}
    assert got == expected
    states = [g["group"]["display_value"] for g in result["groups"]]
    declared = ["New", "Open", "Awaiting Info", "Resolved", "Closed", "Canceled"]
    assert states == [s for s in declared if s in states]  # choices in their declared order


@pytest.mark.parametrize("days", [7, 30])
def test_a_trend_shows_every_period_of_the_range_an_empty_one_as_zero(as_user, days):
    """New cases per day, by opened_at: the demo's cases were opened over their last 60 days (row i, i days
    and hours ago), so the test's dozen fall on the last dozen days and the older days of a month are 0."""
    api = as_user("manager")
    result = report_json(api, "new_cases_per_day", str(days))
    today = dt.datetime.now(dt.UTC).date()
    starts = [(today - dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]  # today and the days before
    assert [g["query"].split("^")[0] for g in result["groups"]] == [f"opened_at>={d} 00:00:00" for d in starts]
    values = [int(g["value"]) for g in result["groups"]]
    assert values == [total(api, CASE, g["query"]) for g in result["groups"]]
    assert sum(1 for v in values if v) > 3  # opened on many days, not all on the day of `caseloom init`
    if days == 30:
        assert values[0] == 0  # 29 days ago: none opened, shown as 0


def test_the_demo_s_resolved_cases_give_the_time_to_resolve(as_user):
    """The demo's resolved and closed cases were resolved after they were opened, never in the future, and closed
    cases closed after that; the time to resolve is their average from opened_at to resolved_at (a canceled case
    was never resolved), the median beside it, and opens exactly them."""
    api = as_user("manager")
    result = report_json(api, "average_time_to_resolve", "30")
    fields = "&sysparm_fields=number,state,opened_at,resolved_at,resolved_by,closed_at&sysparm_limit=1000"
    resolved = api.get(f"{CASES}?sysparm_query={quote(result['score']['query'])}{fields}").json["result"]
    assert resolved and {c["state"] for c in resolved} == {"3", "6"}
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    spans = []
    for case in resolved:
        opened, ended = (dt.datetime.fromisoformat(case[f]) for f in ("opened_at", "resolved_at"))
        assert opened < ended <= now and case["resolved_by"], case
        if case["state"] == "3":
            assert ended <= dt.datetime.fromisoformat(case["closed_at"]) <= now, case
        spans.append((ended - opened).total_seconds())
    assert float(result["score"]["value"]) == pytest.approx(sum(spans) / len(spans)) and float(result["score"]["value"]) > 0
    assert result["score"]["display_value"] not in ("", "0")  # in words: "1 Day 3 Hours"
    assert float(result["also"]["value"]) == pytest.approx(statistics.median(spans))
    every = api.get(f"{CASES}?sysparm_query=stateIN3,7{fields}").json["result"]
    assert every and all(c["closed_at"] for c in every)  # every closed and canceled demo case has its closing
    canceled = api.get(f"{CASES}?sysparm_query=state=7{fields}").json["result"]
    assert canceled and not any(c["resolved_at"] for c in canceled)  # canceled: never resolved
    open_ = api.get(f"{CASES}?sysparm_query=state=6{fields}").json["result"]
    assert open_ and not any(c["closed_at"] for c in open_)  # resolved: still active, not closed


def test_resolving_stamps_the_case_and_opening_it_again_clears_it(as_user):
    """Resolving a case stamps when and by whom; closing one never resolved resolves it as it closes; opening it
    again clears both, and the time to resolve counts it only once it is resolved again."""
    agent, manager = as_user("agent"), as_user("manager")
    me = agent.get("/api/now/table/sys_user?sysparm_query=user_name=agent&sysparm_fields=sys_id").json["result"][0]
    case = agent.post(CASES, json={"short_description": "Printer jams"}).json["result"]
    url = f"{CASES}/{case['sys_id']}"
    assert agent.patch(url, json={"state": "10"}).status_code == 200
    resolved = agent.patch(url, json={"state": "6", "resolution_code": "solved_permanently",
                                      "close_notes": "Cleaned the rollers."}).json["result"]
    assert resolved["resolved_at"] and resolved["resolved_by"]["value"] == me["sys_id"]
    after = report_json(manager, "average_time_to_resolve", "30")
    assert case["number"] in manager.get(f"{CASES}?sysparm_query={quote(after['score']['query'])}"
                                         f"&sysparm_fields=number&sysparm_limit=1000").text
    again = agent.patch(url, json={"state": "10", "comments": "It jams again."}).json["result"]
    assert again["resolved_at"] == "" and again["resolved_by"] == ""
    closed = agent.patch(url, json={"state": "3", "close_notes": "Replaced the roller."}).json["result"]
    assert closed["resolved_at"] and closed["closed_at"] and closed["resolved_at"] <= closed["closed_at"]


def test_a_closed_case_with_no_opened_at_has_no_time_to_resolve(as_user):
    """A case whose opened_at is empty (one made before the field had a default, or imported without it)
    neither moves the average nor is among the records the number opens."""
    manager, agent = as_user("manager"), as_user("agent")
    before = report_json(manager, "average_time_to_resolve", "30")
    case = agent.post(CASES, json={"short_description": "Imported, never opened", "opened_at": ""}).json["result"]
    assert case["opened_at"] == ""
    assert agent.post(f"{ACTIONS}/{case['sys_id']}/close_case", json={"close_notes": "Done."}).status_code == 200
    assert manager.get(f"{CASES}/{case['sys_id']}?sysparm_fields=closed_at").json["result"]["closed_at"]
    after = report_json(manager, "average_time_to_resolve", "30")
    assert after["score"] == before["score"] and after["also"] == before["also"]
    assert total(manager, CASE, after["score"]["query"] + f"^sys_id={case['sys_id']}") == 0


def test_a_reassignment_is_counted_and_a_first_assignment_is_not(as_user):
    """First-contact resolution reads reassignment_count: CSM's rule adds one when a case passes from one
    agent to another."""
    agent = as_user("agent")
    case = agent.post("/api/now/table/sn_customerservice_case", {"short_description": "Printer jams"}).json["result"]
    users = {u["user_name"]: u["sys_id"] for u in as_user("admin").get(
        "/api/now/table/sys_user?sysparm_fields=user_name,sys_id&sysparm_query=user_nameINagent,manager").json["result"]}
    path = f"/api/now/table/sn_customerservice_case/{case['sys_id']}"
    counts = []
    for who in ("agent", "manager", "manager", "agent"):
        counts.append(agent.patch(path, {"assigned_to": users[who]}).json["result"]["reassignment_count"])
    assert counts == ["0", "1", "1", "2"]


def test_first_contact_resolution_is_the_share_resolved_never_reassigned(as_user):
    """A percent score: of the resolved and closed cases, those with reassignment_count 0; the score
    opens exactly those, and the period before is compared in points."""
    api = as_user("manager")
    result = report_json(api, "first_contact_resolution", "30")
    assert result["measure"] == "Percent resolved by the first agent"
    closed = total(api, "sn_customerservice_case", result["query"])
    first = total(api, "sn_customerservice_case", result["score"]["query"])
    assert closed > 0 and result["score"]["query"] == result["query"] + "^reassignment_count=0"
    assert float(result["score"]["value"]) == pytest.approx(100 * first / closed)
    assert result["score"]["display_value"] == f"{round(100 * first / closed, 1):g} %"


def test_a_backlog_ignores_the_date_range(as_user):
    result = report_json(as_user("manager"), "backlog_by_state_and_priority", "7")
    assert result["query"] == "active=true" and result["range"] == "all"
    assert result == report_json(as_user("manager"), "backlog_by_state_and_priority", "all")


def test_a_score_against_the_period_before(as_user):
    result = report_json(as_user("manager"), "new_cases", "30")
    assert result["score"]["query"] == "opened_at>=javascript:gs.daysAgoStart(29)"  # today and 29 days before
    # the test's demo cases were opened in the last dozen days: none in the 30 before
    assert result["previous"] == {"value": "0", "display_value": "0", "query": (
        "opened_at>=javascript:gs.daysAgoStart(59)^opened_at<javascript:gs.daysAgoStart(29)")}


def test_the_manager_reaches_the_service_levels_dashboard_from_their_home(client):
    ui_sign_in(client, "manager")
    home = client.get("/").get_data(as_text=True)
    assert 'Other dashboards: ' in home and '<a href="/dashboard/service_levels">Service levels</a>' in home
    page = client.get("/dashboard/service_levels").get_data(as_text=True)
    assert "<h1>Service levels</h1>" in page
    for name in ("sla_compliance", "sla_compliance_by_definition", "slas_breaching_soon"):
        assert f'hx-get="/report/{name}?range=30"' in page, name
    card = client.get("/report/sla_compliance_by_definition?range=30", headers={"HX-Request": "true"})
    assert card.status_code == 200 and "Percent met" in card.get_data(as_text=True)
    ui_sign_in(client, "agent")
    assert client.get("/dashboard/service_levels").status_code == 404


@pytest.mark.parametrize("user, home", [
    ("manager", "Customer service"), ("mim", "Major issues"), ("agent", None), ("admin", None)])
def test_a_dashboard_is_the_home_page_of_its_roles(client, user, home):
    ui_sign_in(client, user)
    page = client.get("/").get_data(as_text=True)
    if home is None:
        assert "dashboard-grid" not in page and "Welcome" in page
    else:
        assert f"<h1>{home}</h1>" in page and 'hx-get="/report/' in page
        assert '<nav class="menu" aria-label="Applications">' in page  # the menu stays beside it
    if user == "admin":  # every dashboard is a link on the administrator's home
        assert 'href="/dashboard/support_manager"' in page and 'href="/dashboard/major_issues"' in page


def test_the_date_range_is_shared_by_every_report_of_a_dashboard(client):
    ui_sign_in(client, "manager")
    page = client.get("/dashboard/support_manager?range=90").get_data(as_text=True)
    assert page.count("?range=90") >= 6 and "?range=30" not in page
    assert client.get("/dashboard/support_manager?range=12").status_code == 400
    # each choice says what it counts: `365` is 365 days (contract section 11), not calendar months
    assert re.findall(r'<option value="(\w+)"[^>]*>([^<]+)</option>', page) == [
        ("7", "Last 7 days"), ("30", "Last 30 days"), ("90", "Last 90 days"), ("365", "Last 365 days"),
        ("all", "All time")]


@pytest.mark.parametrize("user, path, status", [
    ("agent", "/dashboard/support_manager", 404),  # not their role
    ("agent", "/dashboard/nope", 404),
    ("manager", "/report/nope", 404),
    ("manager", "/report/new_cases?range=x", 400),
])
def test_who_opens_what(client, user, path, status):
    ui_sign_in(client, user)
    assert client.get(path).status_code == status


def test_a_report_exports_its_numbers(client):
    ui_sign_in(client, "manager")
    r = client.get("/report/backlog_by_state_and_priority?range=all&CSV")
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[0][:2] == ["State", "1 - Critical"] or rows[0][0] == "State"
    assert rows[1][0] == "New"
    r = client.get("/report/cases_per_agent?range=all&XLSX")
    sheet = openpyxl.load_workbook(io.BytesIO(r.data)).active
    assert [c.value for c in sheet[1]] == ["Assigned to", "Count"]
    assert isinstance(sheet.cell(row=2, column=2).value, int | float)


# -- an application of the test's own -------------------------------------------------------------

FILES = {
    "tables/x_team.yaml": "table: x_team\ndisplay: name\nfields:\n  name: {type: string}\n",
    "tables/x_job.yaml": """
table: x_job
display: title
fields:
  title: {type: string}
  team: {type: reference, to: x_team}
  kind: {type: choice, choices: {fix: Fix, visit: Visit, call: Call}}
  hours: {type: integer}
  started: {type: datetime}
  finished: {type: datetime}
""",
    "roles.yaml": "roles:\n  x_tech: {}\n  x_boss: {contains: [x_tech]}\n",
    "access/x.yaml": """
access:
  - {table: x_job, operations: [read], roles: [x_tech], condition: "team.name=Red"}
  - {table: x_job, operations: [read, create, write], roles: [x_boss]}
  - {table: x_team, operations: [read], roles: [x_tech]}
""",
    "reports/x.yaml": """
reports:
  jobs_by_kind: {title: Jobs by kind, table: x_job, type: bar, group_by: kind, date_field: started}
  hours_by_team: {title: Hours by team, table: x_job, type: horizontal_bar, group_by: team, date_field: started,
                  aggregate: {function: sum, field: hours}, limit: 2}
  kinds_by_team: {title: Kinds by team, table: x_job, type: stacked_bar, group_by: team, stack_by: kind,
                  date_field: started}
  kind_share: {title: Share, table: x_job, type: pie, group_by: kind, date_field: started}
  jobs_per_week: {title: Jobs per week, table: x_job, type: area, trend: {field: started, per: week}}
  jobs_per_month: {title: Jobs per month, table: x_job, type: line, trend: {field: started, per: month}}
  time_to_finish: {title: Time to finish, table: x_job, type: score, date_field: started,
                   aggregate: {function: avg, from: started, to: finished},
                   also: {function: median, from: started, to: finished}}
  finished_share: {title: Finished, table: x_job, type: score, date_field: started,
                   aggregate: {function: percent, where: finishedISNOTEMPTY, label: finished},
                   also: {function: avg, from: started, to: finished}}
  finished_by_kind: {title: Finished by kind, table: x_job, type: bar, group_by: kind, date_field: started,
                     aggregate: {function: percent, where: finishedISNOTEMPTY, label: finished}}
  finished_by_team: {title: Finished by team, table: x_job, type: horizontal_bar, group_by: team, date_field: started,
                     aggregate: {function: percent, where: finishedISNOTEMPTY, label: finished}, limit: 2}
  finished_per_week: {title: Finished per week, table: x_job, type: line, trend: {field: started, per: week},
                      aggregate: {function: percent, where: finishedISNOTEMPTY, label: finished}}
  median_hours_by_team: {title: Median hours by team, table: x_job, type: bar, group_by: team, date_field: started,
                         aggregate: {function: median, field: hours}}
  median_finish_per_week: {title: Median finish per week, table: x_job, type: area, trend: {field: started, per: week},
                           aggregate: {function: median, from: started, to: finished}}
  median_finish: {title: Median finish, table: x_job, type: score, date_field: started,
                  aggregate: {function: median, from: started, to: finished}}
  median_hours: {title: Median hours, table: x_job, type: score, date_field: started,
                 aggregate: {function: median, field: hours}}
  longest: {title: Longest, table: x_job, type: score, date_field: started, aggregate: {function: max, field: hours}}
  recent: {title: Recent jobs, table: x_job, type: list, columns: [title, team, hours], order_by: -hours, limit: 3,
           date_field: started}
  boss_only: {title: Boss only, table: x_job, type: score, roles: [x_boss]}
""",
    "dashboards/boss.yaml": """
dashboard: {name: boss, title: Boss board, roles: [x_boss], home: true, range: 90,
            reports: [jobs_by_kind, hours_by_team, kinds_by_team, kind_share, jobs_per_week, time_to_finish, boss_only]}
""",
    "dashboards/tech.yaml": """
dashboard: {name: tech, title: Tech board, roles: [x_tech], home: true, reports: [jobs_by_kind, recent, boss_only]}
""",
}
USERS = {"tech": ["x_tech"], "boss": ["x_boss"], "admin": ["admin"]}
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def ago(days: float) -> str:
    return (NOW - dt.timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")


# (title, team, kind, hours, started days ago, hours to finish)
JOBS = [("a", "Red", "fix", 4, 1, 2), ("b", "Red", "fix", 6, 2, 4), ("c", "Red", "visit", 1, 3, None),
        ("d", "Blue", "call", 2, 5, 1), ("e", "Blue", "fix", 8, 40, 10), ("f", "Green", "visit", 3, 50, None),
        ("g", None, "call", 5, 200, None)]


@pytest.fixture
def jobs(config, tmp_path):
    with small_app(config, tmp_path, FILES, USERS) as made:
        boss = made.api("boss")
        teams = {n: boss.client.post("/api/now/table/x_team", json={"name": n}, headers=basic("admin", "admin")
                                     ).json["result"]["sys_id"] for n in ("Red", "Blue", "Green")}
        for title, team, kind, hours, days, finish in JOBS:
            r = boss.post("/api/now/table/x_job", {
                "title": title, "team": teams.get(team, ""), "kind": kind, "hours": hours, "started": ago(days),
                "finished": ago(days - finish / 24) if finish else ""})
            assert r.status_code == 201, r.json
        yield made


def _by_label(result: dict) -> dict[str, int | float]:
    return {g["group"]["display_value"]: float(g["value"]) for g in result["groups"]}


@pytest.mark.parametrize("user, days, expected", [
    ("boss", "30", {"Fix": 2, "Visit": 1, "Call": 1}),
    ("boss", "all", {"Fix": 3, "Visit": 2, "Call": 2}),
    ("tech", "all", {"Fix": 2, "Visit": 1}),  # the tech reads the Red team's jobs only
])
def test_a_bar_chart_counts_what_each_user_may_read_in_the_range(jobs, user, days, expected):
    result = report_json(jobs.api(user), "jobs_by_kind", days)
    assert _by_label(result) == expected
    for cell in cells(result):
        assert total(jobs.api(user), "x_job", cell["query"]) == int(cell["value"])


def test_a_sum_keeps_the_biggest_groups_and_sums_the_rest_as_other(jobs):
    result = report_json(jobs.api("boss"), "hours_by_team", "all")
    assert _by_label(result) == {"Red": 11, "Blue": 10, "Other": 8}  # Green 3 and no team 5
    other = result["groups"][-1]
    assert other["group"]["value"] == "(other)"
    r = jobs.api("boss").get(f"/api/now/table/x_job?sysparm_query={quote(other['query'])}&sysparm_fields=title")
    assert sorted(row["title"] for row in r.json["result"]) == ["f", "g"]


def test_a_stacked_bar_and_a_pie(jobs):
    stacked = report_json(jobs.api("boss"), "kinds_by_team", "all")
    got = {(g["group"]["display_value"], s["group"]["display_value"]): int(s["value"])
           for g in stacked["groups"] for s in g["series"]}
    assert got == {("Red", "Fix"): 2, ("Red", "Visit"): 1, ("Blue", "Call"): 1, ("Blue", "Fix"): 1,
                   ("Green", "Visit"): 1, ("(empty)", "Call"): 1}
    pie = report_json(jobs.api("boss"), "kind_share", "90")
    assert _by_label(pie) == {"Fix": 3, "Visit": 2, "Call": 1}


@pytest.mark.parametrize("name, days, periods", [("jobs_per_week", "90", None), ("jobs_per_month", "365", None)])
def test_trends_by_week_and_month_cover_the_range(jobs, name, days, periods):
    result = report_json(jobs.api("boss"), name, days)
    starts = [dt.date.fromisoformat(g["query"].split("^")[0].split(">=")[1][:10]) for g in result["groups"]]
    if name == "jobs_per_week":
        assert all(d.weekday() == 0 for d in starts)  # weeks start on Monday
        assert all((b - a).days == 7 for a, b in zip(starts, starts[1:], strict=False))
    else:
        assert all(d.day == 1 for d in starts)
    in_range = [j for j in JOBS if j[4] <= int(days)]
    assert sum(int(g["value"]) for g in result["groups"]) >= len(in_range)
    for g in result["groups"]:
        assert total(jobs.api("boss"), "x_job", g["query"]) == int(g["value"])


def test_a_duration_score_reads_in_words_with_its_change(jobs):
    result = report_json(jobs.api("boss"), "time_to_finish", "30")
    assert result["score"]["value"] == "8400"  # (2 + 4 + 1) hours / 3 finished jobs, in seconds
    assert result["score"]["display_value"] == "2 Hours 20 Minutes"
    assert result["previous"]["display_value"] == "10 Hours"  # job e, 30 to 60 days ago
    assert result["also"] == {"measure": "Median time from Started to Finished", "value": "7200",
                              "display_value": "2 Hours", "query": result["score"]["query"]}
    longest = report_json(jobs.api("boss"), "longest", "all")
    assert longest["score"]["value"] == "8"


def exported(client, name: str, days: str, kind: str) -> list[list]:
    """A report's export as rows of cells: the CSV's text, the XLSX's values."""
    r = client.get(f"/report/{name}?range={days}&{kind}")
    assert r.status_code == 200, r.get_data(as_text=True)
    if kind == "CSV":
        return list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    return [[c.value if c.value is not None else "" for c in row] for row in openpyxl.load_workbook(io.BytesIO(r.data)).active]


@pytest.mark.parametrize("kind", ["CSV", "XLSX"])
def test_a_score_exports_its_second_number_as_its_page_shows_it(jobs, kind):
    """The page shows a median beside the average ("Median time from Started to Finished: 2 Hours"); the
    export has it too, under the same words, in the row of the period it is of."""
    jobs.sign_in("boss")
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", jobs.client.get("/report/time_to_finish?range=30").get_data(
        as_text=True)))
    assert "Median time from Started to Finished: 2 Hours" in page
    assert exported(jobs.client, "time_to_finish", "30", kind) == [
        ["Period", "Average time from Started to Finished", "Median time from Started to Finished"],
        ["Last 30 days", "2 Hours 20 Minutes", "2 Hours"],
        ["The period before", "10 Hours", ""],
    ]


@pytest.mark.parametrize("user, name, days, value, words", [
    ("boss", "median_finish", "30", "7200", "2 Hours"),  # 1, 2 and 4 hours: the middle one
    ("boss", "median_finish", "all", "10800", "3 Hours"),  # 1, 2, 4 and 10: the mean of the middle two
    ("tech", "median_finish", "all", "10800", "3 Hours"),  # the Red team's finished ones: 2 and 4 hours
    ("boss", "median_hours", "all", "4", "4"),  # 1, 2, 3, 4, 5, 6, 8
])
def test_a_median_score(jobs, user, name, days, value, words):
    result = report_json(jobs.api(user), name, days)
    assert (result["score"]["value"], result["score"]["display_value"]) == (value, words)


@pytest.mark.parametrize("user, days, value, words, previous", [
    ("boss", "30", 75, "75 %", "50 %"),  # a, b and d of a-d finished; e of e and f the 30 days before
    ("tech", "30", 200 / 3, "66.7 %", None),  # the Red team's a and b of a-c; none of theirs before
    ("boss", "all", 400 / 7, "57.1 %", None),  # 4 of 7
])
def test_a_percent_score_is_the_share_meeting_its_condition(jobs, user, days, value, words, previous):
    result = report_json(jobs.api(user), "finished_share", days)
    assert result["measure"] == "Percent finished"
    assert float(result["score"]["value"]) == pytest.approx(value) and result["score"]["display_value"] == words
    assert result["score"]["query"].endswith("finishedISNOTEMPTY")  # opens the finished ones
    assert total(jobs.api(user), "x_job", result["score"]["query"]) == \
        round(float(result["score"]["value"]) * total(jobs.api(user), "x_job", result["query"]) / 100)
    if days != "all":
        assert (result["previous"] or {}).get("display_value", "–") == (previous or "–")
        assert result["also"]["measure"] == "Average time from Started to Finished"


@pytest.mark.parametrize("user, days, expected", [
    ("boss", "all", {"Fix": 100, "Visit": 0, "Call": 50}),  # a, b, e finished; c, f not; d finished, g not
    ("boss", "30", {"Fix": 100, "Visit": 0, "Call": 100}),
    ("tech", "all", {"Fix": 100, "Visit": 0}),  # the Red team's a, b and c
])
def test_a_percent_chart_is_each_group_s_share_and_opens_that_share(jobs, user, days, expected):
    """SLA compliance by definition, in the second application's words: each bar the share of its group's
    records that meet `where`, through the reader's access; each opens the records counted as its share."""
    api = jobs.api(user)
    result = report_json(api, "finished_by_kind", days)
    assert result["measure"] == "Percent finished"
    assert _by_label(result) == expected
    for group in result["groups"]:
        assert group["query"].endswith("finishedISNOTEMPTY")
        kind = group["group"]["value"]
        everything = total(api, "x_job", f"{result['query']}^kind={kind}" if result["query"] else f"kind={kind}")
        assert total(api, "x_job", group["query"]) == round(float(group["value"]) * everything / 100)
        assert group["display_value"] == f"{number_text(float(group['value']))} %"


def test_a_percent_chart_keeps_its_biggest_groups_without_an_other_and_its_axis_ends_at_100(jobs):
    result = report_json(jobs.api("boss"), "finished_by_team", "all")
    assert _by_label(result) == {"Red": pytest.approx(200 / 3), "Blue": 100}  # a share of shares would mean nothing
    jobs.sign_in("boss")
    for name in ("finished_by_kind", "finished_by_team", "finished_per_week"):
        page = jobs.client.get(f"/report/{name}?range=all").get_data(as_text=True)
        ticks = re.findall(r'class="tick" aria-hidden="true">([^<]*)</text>', page)
        if name != "finished_by_team":  # horizontal bars have no value axis
            assert ticks == ["0 %", "25 %", "50 %", "75 %", "100 %"], (name, ticks)
        assert "Percent finished" in page


def test_a_percent_trend_gives_each_period_s_share_and_a_dash_where_none(jobs):
    result = report_json(jobs.api("boss"), "finished_per_week", "90")
    shares = {g["group"]["value"]: g["display_value"] for g in result["groups"]}
    started = {}
    for *_, days, finish in JOBS:
        if days <= 90:
            monday = (NOW - dt.timedelta(days=days)).date()
            monday -= dt.timedelta(days=monday.weekday())
            started.setdefault(monday.isoformat(), []).append(finish is not None)
    for week, words in shares.items():
        if week in started:
            assert words == f"{number_text(round(100 * sum(started[week]) / len(started[week]), 1))} %", week
        else:
            assert words == "–", week


@pytest.mark.parametrize("user, expected", [
    ("boss", {"Red": 4, "Blue": 5, "Green": 3, "(empty)": 5}),  # 1, 4, 6; 2, 8 (the mean of the two); 3; 5
    ("tech", {"Red": 4}),
])
def test_a_median_chart_is_each_group_s_middle_value_and_opens_the_group(jobs, user, expected):
    api = jobs.api(user)
    result = report_json(api, "median_hours_by_team", "all")
    assert result["measure"] == "Median of Hours"
    assert _by_label(result) == expected
    for group in result["groups"]:
        hours = sorted(float(r["hours"]) for r in api.get(
            f"/api/now/table/x_job?sysparm_query={quote(group['query'])}&sysparm_fields=hours").json["result"])
        assert statistics.median(hours) == float(group["value"]), group


def test_a_median_trend_gives_each_period_s_middle_duration_and_a_dash_where_none(jobs):
    result = report_json(jobs.api("boss"), "median_finish_per_week", "90")
    shown = {g["group"]["value"]: g["display_value"] for g in result["groups"]}
    spans: dict[str, list[float]] = {}
    for *_, days, finish in JOBS:
        if days <= 90 and finish is not None:
            monday = (NOW - dt.timedelta(days=days)).date()
            spans.setdefault((monday - dt.timedelta(days=monday.weekday())).isoformat(), []).append(finish * 3600)
    assert spans and set(spans) <= set(shown)
    for week, words in shown.items():
        if week in spans:
            middle = statistics.median(spans[week])
            assert words == duration_words(int(middle)), week
        else:
            assert words == "–", week


def test_a_percent_score_changes_by_points(jobs):
    jobs.sign_in("boss")
    page = jobs.client.get("/report/finished_share?range=30").get_data(as_text=True)
    assert "up 25 points" in page and "75 %" in page


def test_a_list_report_shows_the_top_rows_it_may_read(jobs):
    jobs.sign_in("tech")
    page = jobs.client.get("/report/recent?range=all").get_data(as_text=True)
    assert page.index(">b<") < page.index(">a<") < page.index(">c<")  # by hours, most first
    assert "3 of 3" in page


def test_roles_and_dashboards_of_the_second_application(jobs):
    assert jobs.api("tech").get("/api/caseloom/report/boss_only").status_code == 404
    assert report_json(jobs.api("boss"), "boss_only")["score"]["value"] == str(len(JOBS))
    jobs.sign_in("tech")
    page = jobs.client.get("/").get_data(as_text=True)
    assert "<h1>Tech board</h1>" in page and "report-boss_only" not in page  # a report not theirs is left out
    assert jobs.client.get("/dashboard/boss").status_code == 404
    jobs.sign_in("boss")
    page = jobs.client.get("/").get_data(as_text=True)
    assert "<h1>Boss board</h1>" in page and 'hx-get="/report/jobs_by_kind?range=90"' in page


def test_every_chart_draws_links_to_its_records(jobs):
    jobs.sign_in("boss")
    for name in ("jobs_by_kind", "hours_by_team", "kinds_by_team", "kind_share", "jobs_per_week"):
        page = jobs.client.get(f"/report/{name}?range=all").get_data(as_text=True)
        assert '<svg class="chart"' in page and '<a href="/x_job_list.do?sysparm_query=' in page, name
        assert "<summary>Data table</summary>" in page


# -- mistakes in the YAML ---------------------------------------------------------------------------

BASE = {"tables/x_job.yaml": FILES["tables/x_job.yaml"], "tables/x_team.yaml": FILES["tables/x_team.yaml"],
        "roles.yaml": FILES["roles.yaml"]}
BAD = {
    "unknown table": ("reports:\n  r: {title: R, table: nope, type: bar, group_by: kind}\n", "r.yaml:2:",
                      "unknown table 'nope'"),
    "unknown field": ("reports:\n  r: {title: R, table: x_job, type: bar, group_by: kid}\n", "r.yaml:2:",
                      "'kid' is not a field of 'x_job'"),
    "bar without group_by": ("reports:\n  r: {title: R, table: x_job, type: bar}\n", "r.yaml:2:",
                             "a bar report needs `group_by`"),
    "stack on a pie": ("reports:\n  r: {title: R, table: x_job, type: pie, group_by: kind, stack_by: team}\n",
                       "r.yaml:2:", "a pie report takes no `stack_by`"),
    "trend on a text field": ("reports:\n  r: {title: R, table: x_job, type: line, trend: {field: title}}\n",
                              "r.yaml:2:", "'title' is a string field, not a date or date-time"),
    "average of text": ("reports:\n  r: {title: R, table: x_job, type: score, aggregate: {function: avg, field: title}}\n",
                        "r.yaml:2:", "avg takes numbers or durations"),
    "duration of integers": ("reports:\n  r: {title: R, table: x_job, type: score,\n"
                             "      aggregate: {function: avg, from: hours, to: finished}}\n",
                             "r.yaml:3:", "'hours' is a integer field, not a date-time"),
    "bad condition": ("reports:\n  r: {title: R, table: x_job, type: score, condition: nope=1}\n", "r.yaml:2:",
                      "condition:"),
    "unknown type": ("reports:\n  r: {title: R, table: x_job, type: gauge}\n", "r.yaml:2:", "'gauge' is not one of"),
    "unknown role": ("reports:\n  r: {title: R, table: x_job, type: score, roles: [ghost]}\n", "r.yaml:2:",
                     "unknown role 'ghost'"),
    "a trend outside the date range": ("reports:\n  r: {title: R, table: x_job, type: line, trend: {field: started},\n"
                                       "      date_range: false}\n", "r.yaml:3:", "has no `trend` or `date_field`"),
    "also on a chart": ("reports:\n  r: {title: R, table: x_job, type: bar, group_by: kind,\n"
                        "      also: {function: max, field: hours}}\n", "r.yaml:3:", "a bar report takes no `also`"),
    "a percent on a pie": ("reports:\n  r: {title: R, table: x_job, type: pie, group_by: kind,\n"
                           "      aggregate: {function: percent, where: hours>2}}\n", "r.yaml:3:",
                           "a percent is one number of each group's records, and a pie's parts add up to a whole"),
    "a percent on a stacked bar": ("reports:\n  r: {title: R, table: x_job, type: stacked_bar, group_by: kind,\n"
                                   "      stack_by: team, aggregate: {function: percent, where: hours>2}}\n",
                                   "r.yaml:3:", "a stacked_bar report takes count, sum, avg, min or max"),
    "a median on a donut": ("reports:\n  r: {title: R, table: x_job, type: donut, group_by: kind,\n"
                            "      aggregate: {function: median, field: hours}}\n", "r.yaml:3:",
                            "a donut report takes count, sum, avg, min or max (a median goes in a score, bar, "
                            "horizontal_bar, line, area)"),
    "a percent without where": ("reports:\n  r: {title: R, table: x_job, type: score,\n"
                                "      aggregate: {function: percent}}\n", "r.yaml:3:", "percent needs `where`"),
    "a percent of a field": ("reports:\n  r: {title: R, table: x_job, type: score,\n"
                             "      aggregate: {function: percent, field: hours, where: hours>2}}\n", "r.yaml:3:",
                             "it takes no `field`"),
    "a percent where naming no field": ("reports:\n  r: {title: R, table: x_job, type: score,\n"
                                        "      aggregate: {function: percent, where: nope=1}}\n", "r.yaml:3:",
                                        "nope"),
    "where on an average": ("reports:\n  r: {title: R, table: x_job, type: score,\n"
                            "      aggregate: {function: avg, field: hours, where: hours>2}}\n", "r.yaml:3:",
                            "`where` belongs to percent, not avg"),
    "list without columns": ("reports:\n  r: {title: R, table: x_job, type: list}\n", "r.yaml:2:",
                             "a list report needs `columns`"),
}


@pytest.mark.parametrize("text, where, message", BAD.values(), ids=BAD.keys())
def test_a_mistake_in_a_report_is_located_and_named(tmp_path, text, where, message):
    folder = write_folder(tmp_path, {**BASE, "r.yaml": text})
    with pytest.raises(DefinitionErrors) as info:
        load_folder(folder)
    errors = [str(e).replace(f"{folder}/", "", 1) for e in info.value.errors]
    assert any(e.startswith(where) and message in e for e in errors), errors


def test_a_dashboard_naming_an_unknown_report_or_role(tmp_path):
    folder = write_folder(tmp_path, {**BASE, "d.yaml": "dashboard:\n  name: d\n  title: D\n  roles: [ghost]\n"
                                                       "  reports: [nope]\n"})
    with pytest.raises(DefinitionErrors) as info:
        load_folder(folder)
    errors = [str(e).replace(f"{folder}/", "", 1) for e in info.value.errors]
    assert any(e.startswith("d.yaml:4:") and "unknown role 'ghost'" in e for e in errors), errors
    assert any(e.startswith("d.yaml:5:") and "unknown report 'nope'" in e for e in errors), errors


# -- edited in the Definitions area, like every other kind --------------------------------------------

@pytest.fixture
def admin_client(config, definitions, definitions_copy):
    from dataclasses import replace

    from caseloom.web import create_app

    app = create_app(replace(config, definitions=str(definitions_copy)), definitions, testing=True)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = basic("admin")["Authorization"]
    return client


def test_a_report_added_through_the_definitions_api_runs_at_once(admin_client):
    text = ("reports:\n  cases_by_account:\n    title: Cases by account\n    table: sn_customerservice_case\n"
            "    type: horizontal_bar\n    group_by: account\n")
    r = admin_client.put("/api/caseloom/definitions/reports/extra.yaml", data=text, content_type="application/yaml")
    assert r.status_code == 200, r.json
    result = admin_client.get("/api/caseloom/report/cases_by_account?range=all").json["result"]
    assert result["type"] == "horizontal_bar" and sum(int(g["value"]) for g in result["groups"]) > 0
    bad = text.replace("group_by: account", "group_by: acount")
    r = admin_client.put("/api/caseloom/definitions/reports/extra.yaml", data=bad, content_type="application/yaml")
    assert r.status_code == 422
    assert "'acount' is not a field of 'sn_customerservice_case'" in str(r.json["error"]["detail"])
    ui_sign_in(admin_client, "admin")
    page = admin_client.get("/ui/definitions").get_data(as_text=True)
    assert "Reports and dashboards" in page and "reports/csm.yaml" in page


@pytest.mark.parametrize("user, name, days, words", [
    ("boss", "finished_share", "30", "up 25 points against the period before (50 %)"),
    ("tech", "finished_share", "30", "new: none in the period before"),  # none of the Red team's before
    ("boss", "time_to_finish", "7", "new: none in the period before"),  # a, b and d this week, none the week before
])
def test_a_score_without_records_on_one_side_says_so(jobs, user, name, days, words):
    jobs.sign_in(user)
    page = jobs.client.get(f"/report/{name}?range={days}").get_data(as_text=True)
    assert words in re.sub(r"<[^>]+>", "", re.sub(r"\s+", " ", page))


# -- the last N days: today and the N-1 days before, against the N days before them ----------------

DAYS_FILES = {**{k: FILES[k] for k in ("tables/x_team.yaml", "tables/x_job.yaml", "roles.yaml", "access/x.yaml")},
              "reports/x.yaml": """
reports:
  jobs_per_day: {title: Jobs per day, table: x_job, type: line, trend: {field: started, per: day}}
  jobs_started: {title: Jobs started, table: x_job, type: score, date_field: started}
"""}


@pytest.mark.parametrize("days", ["7", "30", "90"])
def test_the_last_n_days_are_n_daily_buckets_compared_with_the_n_days_before(config, tmp_path, days):
    n = int(days)
    today = dt.datetime.now(dt.UTC).date()

    def day(ago: int, clock: str) -> str:
        return f"{today - dt.timedelta(days=ago)} {clock}"

    started = {"first day": day(n - 1, "00:00:00"), "today": day(0, "00:00:01"),  # the range
               "just before": day(n, "23:59:59"), "first day before": day(2 * n - 1, "00:00:00"),  # the period before
               "longer ago": day(2 * n, "23:59:59")}  # neither
    with small_app(config, tmp_path, DAYS_FILES, {"boss": ["x_boss"]}) as made:
        boss = made.api("boss")
        for title, at in started.items():
            assert boss.post("/api/now/table/x_job", {"title": title, "started": at}).status_code == 201
        trend = report_json(boss, "jobs_per_day", days)
        buckets = [g["group"]["value"] for g in trend["groups"]]
        assert buckets == [str(today - dt.timedelta(days=n - 1 - i)) for i in range(n)]
        assert [int(g["value"]) for g in trend["groups"]] == [1] + [0] * (n - 2) + [1]
        score = report_json(boss, "jobs_started", days)
        assert (score["score"]["value"], score["previous"]["value"]) == ("2", "2")
        titles = {}
        for key in ("score", "previous"):
            r = boss.get(f"/api/now/table/x_job?sysparm_fields=title&sysparm_query={quote(score[key]['query'])}")
            titles[key] = sorted(row["title"] for row in r.json["result"])
        assert titles == {"score": ["first day", "today"], "previous": ["first day before", "just before"]}
        made.sign_in("boss")
        page = made.client.get(f"/report/jobs_started?range={days}").get_data(as_text=True)
        words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page))
        assert f"Count, last {days} days: no change against the period before (2)" in words


@pytest.mark.parametrize("seconds, words", [
    (90061.4, "1 Day 1 Hour 1 Minute"),  # from an hour on, to the minute
    (3629, "1 Hour"), (3631, "1 Hour 1 Minute"),
    (3599, "59 Minutes 59 Seconds"), (42, "42 Seconds"), (0.2, "0 seconds"),
])
def test_a_duration_reads_to_the_minute_from_an_hour_on(seconds, words):
    """The time to resolve read "1 Day 1 Hour 12 Minutes 26 Seconds" over three lines of the dashboard."""
    from caseloom.insight import ReportResult, _cell
    from caseloom.query import All

    result = ReportResult(report=None, measure="", range="30", query="", duration=True)
    assert _cell(result, seconds, All(()), function="avg").text == words


@pytest.mark.parametrize("now, before, text", [
    (1000.0, 1004.0, "down less than 1 %"), (1004.0, 1000.0, "up less than 1 %"),
    (1000.0, 1000.0, "no change"), (900.0, 1000.0, "down 10 %"),
])
def test_a_change_under_a_percent_is_not_zero(now, before, text):
    """A score 0.4 % below the period before said "down 0 %"."""
    from types import SimpleNamespace

    from caseloom.insight import Cell, ReportResult
    from caseloom.web.ui.reports import _change

    result = ReportResult(report=SimpleNamespace(function="avg"), measure="", range="30", query="",
                          score=Cell(now, "x", ""), previous=Cell(before, "y", ""))
    assert _change(result)["text"] == text
