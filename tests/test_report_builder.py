"""Reports built in the browser (web.ui.report_builder): the list of the reports a user may open; an
administrator's new report chosen by table, type and fields by label, previewed on the records, saved
through the Definitions area's review into reports/NAME.yaml and opened at once; an existing report
changed in its own file, the keys the builder does not show kept; mistakes said at their inputs."""

from __future__ import annotations

import html
import re
from dataclasses import replace

import pytest
import yaml

from test_definitions_ui import Session, apply_reviewed

NEW = "/ui/reports/new"


@pytest.fixture
def config(config, definitions_copy):
    return replace(config, definitions=str(definitions_copy))


@pytest.fixture
def admin(client):
    return Session(client, "admin")


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def options(page: str, name: str) -> list[str]:
    """The labels a select offers."""
    select = re.search(rf'<select id="[^"]+" name="{name}"[^>]*>(.*?)</select>', page, re.S)
    assert select, f"no select {name}"
    return [html.unescape(o) for o in re.findall(r"<option[^>]*>([^<]*)</option>", select.group(1))]


def field_error(page: str, key: str) -> str:
    found = re.search(rf'<p class="field-error" id="e-{key}" role="alert">([^<]*)</p>', page)
    return html.unescape(found.group(1)) if found else ""


BAR = {"name": "cases_by_priority", "title": "Cases by priority", "table": "sn_customerservice_case", "type": "bar",
       "group_by": "priority", "condition": "active=true", "date_range": "on", "function": "count", "range": "all"}


def test_an_administrator_builds_a_report_previews_it_and_saves_it(admin, definitions_copy):
    page = admin.get(NEW).get_data(as_text=True)
    assert "Case" in options(page, "table") and 'name="group_by"' not in page  # no table chosen yet
    # choosing the table and the type shows their choices, by label
    page = admin.post(NEW, {**BAR, "group_by": "", "action": "refresh"}).get_data(as_text=True)
    assert {"Priority", "State", "Account"} <= set(options(page, "group_by"))
    assert "Count of records" in options(page, "function")
    preview = admin.post(NEW, {**BAR, "action": "preview"})
    assert preview.status_code == 200, text_of(preview.get_data(as_text=True))[:2000]
    shown = text_of(preview.get_data(as_text=True))
    assert "Preview" in shown and "Records: Active is true." in shown and "<svg" in preview.get_data(as_text=True)
    assert "1 - Critical" in shown  # a bar per priority, by its label
    assert not (definitions_copy / "reports/cases_by_priority.yaml").exists()  # a preview saves nothing
    review = admin.post(NEW, {**BAR, "action": "save"})
    assert review.status_code == 200
    assert "reports/cases_by_priority.yaml" in review.get_data(as_text=True)
    applied = apply_reviewed(admin, review.get_data(as_text=True))
    assert applied.status_code == 302 and applied.headers["Location"].endswith("/report/cases_by_priority")
    saved = yaml.safe_load((definitions_copy / "reports/cases_by_priority.yaml").read_text())
    assert saved == {"reports": {"cases_by_priority": {"title": "Cases by priority", "table": "sn_customerservice_case",
                                                       "type": "bar", "condition": "active=true",
                                                       "group_by": "priority"}}}
    report = admin.get("/report/cases_by_priority?range=all")
    assert report.status_code == 200 and "Cases by priority" in report.get_data(as_text=True)
    listed = admin.get("/ui/reports").get_data(as_text=True)
    assert 'href="/report/cases_by_priority"' in listed and 'href="/ui/reports/cases_by_priority/edit"' in listed
    assert f'href="{NEW}"' in admin.get("/ui/definitions").get_data(as_text=True)  # from the Definitions area too


@pytest.mark.parametrize(("change", "key", "message"), [
    ({"name": "Cases!"}, "name", "A name of lower-case letters, digits and _"),
    ({"name": "new_cases_per_day"}, "name", "A report named 'new_cases_per_day' already exists"),
    ({"title": " "}, "title", "A title"),
    ({"group_by": ""}, "group_by", "a bar report needs `group_by`"),
    ({"group_by": "comments"}, "group_by", "'comments' is a journal field: a report cannot group by it"),
    ({"condition": "colour=red"}, "condition", "colour"),
    ({"limit": "500"}, "limit", "A whole number from 1 to 100."),
    ({"title": "x" * 201}, "title", "At most 200 characters (201 given)."),
    ({"table": "x_nothing"}, "table", "Choose the table whose records the report counts."),
    ({"type": "radar"}, "type", "radar"),
    ({"type": "list", "columns": "colour"}, "columns", "colour"),
    ({"roles": "nobody_has_this"}, "roles", "nobody_has_this"),
    ({"condition": "active=true^" * 400}, "condition", "At most 4,000 characters (4,800 given)."),
    ({"function": "sum", "measure": "short_description"}, "measure", "'short_description' is a string field: sum takes"),
    ({"function": "avg"}, "function", "avg needs either `field` or a duration `from` and `to`"),
    ({"function": "avg", "from": "opened_at"}, "function", "a duration needs both `from` and `to`"),
    ({"type": "pie", "function": "median", "measure": "priority"}, "function", "a pie report takes count, sum"),
    ({"type": "line", "group_by": ""}, "trend_field", "a line report needs `trend`"),
    ({"type": "score", "function": "percent"}, "where", "percent needs `where`"),
    ({"type": "list"}, "columns", "columns"),
    ({"date_field": "short_description"}, "date_field", "is a string field, not a date or date-time"),
])
def test_a_mistake_is_said_at_its_input_and_nothing_is_saved(admin, definitions_copy, change, key, message):
    page = admin.post(NEW, {**BAR, **change, "action": "save"})
    shown = page.get_data(as_text=True)
    assert page.status_code == 422, text_of(shown)[:2000]
    assert message in field_error(shown, key), (field_error(shown, key), text_of(shown)[:3000])
    assert not list((definitions_copy / "reports").glob("cases*"))


def test_an_existing_report_is_changed_in_its_own_file_keeping_what_the_builder_does_not_show(admin, definitions_copy):
    before = (definitions_copy / "reports/csm.yaml").read_text()
    page = admin.get("/ui/reports/average_time_to_resolve/edit").get_data(as_text=True)
    assert 'name="name"' not in page  # a report's name is kept
    assert re.search(r'<option value="avg" selected>Average</option>', page)
    assert re.search(r'<option value="opened_at" selected>Opened at</option>', page)
    form = {"title": "Time to resolve a case", "table": "sn_customerservice_case", "type": "score",
            "condition": "resolved_atISNOTEMPTY^opened_atISNOTEMPTY", "date_range": "on", "date_field": "resolved_at",
            "function": "avg", "from": "opened_at", "to": "resolved_at"}
    review = admin.post("/ui/reports/average_time_to_resolve/edit", {**form, "action": "save"})
    assert review.status_code == 200, text_of(review.get_data(as_text=True))[:2000]
    assert apply_reviewed(admin, review.get_data(as_text=True)).status_code == 302
    after = (definitions_copy / "reports/csm.yaml").read_text()
    reports = yaml.safe_load(after)["reports"]
    assert reports["average_time_to_resolve"]["title"] == "Time to resolve a case"
    assert reports["average_time_to_resolve"]["also"] == {"function": "median", "from": "opened_at", "to": "resolved_at"}
    assert reports["new_cases_per_day"] == yaml.safe_load(before)["reports"]["new_cases_per_day"]  # the others kept
    assert before.splitlines()[0] == after.splitlines()[0]  # the file's comments and layout elsewhere stay


@pytest.mark.parametrize("user", ["agent", "manager"])
def test_others_open_the_reports_they_may_and_build_none(client, user):
    session = Session(client, user)
    listed = session.get("/ui/reports")
    assert listed.status_code == 200
    page = listed.get_data(as_text=True)
    assert "New report" not in page and "/edit" not in page
    assert session.get(NEW).status_code == 403
    assert session.get("/ui/reports/new_cases_per_day/edit").status_code == 403
    menu = session.get("/").get_data(as_text=True)
    assert 'href="/ui/reports"' in menu


def test_the_condition_is_built_with_the_filter_s_rows(admin, definitions_copy):
    rows = {"rows_for": "sn_customerservice_case", "f_join": ["and", "or"], "f_field": ["priority", "priority"],
            "f_op": ["eq", "eq"], "f_value": ["1", "2"]}
    form = {**BAR, "condition": "", **rows}
    # + AND adds a row: htmx gets the rows alone, a browser without script the whole page
    added = admin.post(NEW, {**form, "add_row": "and"}, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert added.count('class="filter-row"') == 3 and "<html" not in added
    removed = admin.post(f"{NEW}?remove_row=1", form, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert removed.count('class="filter-row"') == 1
    # a row's field changed: that row alone, its operators and value input for the new field
    redrawn = admin.post(f"{NEW}?row_for=0", {**form, "f_field": ["account", "priority"]},
                         headers={"HX-Request": "true"}).get_data(as_text=True)
    assert redrawn.count('class="filter-row"') == 1 and 'data-field="account"' in redrawn
    preview = admin.post(NEW, {**form, "action": "preview"}).get_data(as_text=True)
    assert "Records: Priority is 1 - Critical or Priority is 2 - High." in text_of(preview)
    review = admin.post(NEW, {**form, "action": "save"})
    assert apply_reviewed(admin, review.get_data(as_text=True)).status_code == 302
    saved = yaml.safe_load((definitions_copy / "reports/cases_by_priority.yaml").read_text())
    assert saved["reports"]["cases_by_priority"]["condition"] == "priority=1^ORpriority=2"
    # opened again, the condition is its rows; another table starts them again
    page = admin.get("/ui/reports/cases_by_priority/edit").get_data(as_text=True)
    assert page.count('class="filter-row"') == 2
    other = admin.post("/ui/reports/cases_by_priority/edit", {**form, "table": "customer_account", "action": "refresh"})
    assert other.get_data(as_text=True).count('class="filter-row"') == 1 and 'data-field=""' in other.get_data(as_text=True)


def test_a_condition_no_rows_can_say_is_kept_as_its_encoded_query(admin):
    monday = "opened_atDATEPARTMonday@javascript:gs.datePart('dayofweek','monday','EE')"
    page = admin.post(NEW, {**BAR, "condition": monday, "action": "preview"})
    shown = page.get_data(as_text=True)
    assert page.status_code == 200 and 'class="filter-row"' not in shown
    assert 'name="condition"' in shown and "Records: Opened at on Monday." in text_of(shown)


def test_a_report_is_put_on_dashboards_and_taken_off_them(admin, definitions_copy):
    board = definitions_copy / "dashboards/service_levels.yaml"
    review = admin.post(NEW, {**BAR, "dashboards": "service_levels", "action": "save"}).get_data(as_text=True)
    assert "dashboards/service_levels.yaml" in review and "reports/cases_by_priority.yaml" in review
    assert apply_reviewed(admin, review).status_code == 302
    on = yaml.safe_load(board.read_text())["dashboard"]["reports"]
    assert on == ["sla_compliance", "sla_compliance_by_definition", "slas_breaching_soon", "cases_by_priority"]
    assert board.read_text().startswith("# The support manager's service levels")  # its comments kept
    page = admin.get("/ui/reports/cases_by_priority/edit").get_data(as_text=True)
    assert re.search(r'name="dashboards" value="service_levels" checked', page)
    listed = text_of(admin.get("/ui/reports").get_data(as_text=True))
    assert "Cases by priority Case Bar Service levels" in listed
    review = admin.post("/ui/reports/cases_by_priority/edit", {**BAR, "action": "save"}).get_data(as_text=True)
    assert apply_reviewed(admin, review).status_code == 302
    assert yaml.safe_load(board.read_text())["dashboard"]["reports"] == on[:3]


# -- dashboards ------------------------------------------------------------------------------------------

BOARD = {"name": "customer_health", "title": "Customer health", "roles": "sn_customerservice_manager", "range": "90",
         "reports": ["sla_compliance", "new_cases_per_day"], "position_new_cases_per_day": "1",
         "position_sla_compliance": "2"}


def test_an_administrator_makes_a_dashboard_of_reports_in_order(admin, definitions_copy):
    index = admin.get("/ui/reports").get_data(as_text=True)
    assert 'href="/ui/dashboards/new"' in index and 'href="/ui/dashboards/service_levels/edit"' in index
    page = admin.get("/ui/dashboards/new").get_data(as_text=True)
    assert "Time to resolve" in page and 'name="position_sla_compliance"' in page
    review = admin.post("/ui/dashboards/new", BOARD)
    assert review.status_code == 200, text_of(review.get_data(as_text=True))[:2000]
    applied = apply_reviewed(admin, review.get_data(as_text=True))
    assert applied.status_code == 302 and applied.headers["Location"].endswith("/dashboard/customer_health")
    saved = yaml.safe_load((definitions_copy / "dashboards/customer_health.yaml").read_text())
    assert saved == {"dashboard": {"name": "customer_health", "title": "Customer health",
                                   "roles": ["sn_customerservice_manager"], "range": 90,
                                   "reports": ["new_cases_per_day", "sla_compliance"]}}
    shown = admin.get("/dashboard/customer_health").get_data(as_text=True)
    assert "Customer health" in shown and shown.index("report-new_cases_per_day") < shown.index("report-sla_compliance")
    # changed: a report more, its home for the role, the comment above the block kept
    board = definitions_copy / "dashboards/service_levels.yaml"
    page = admin.get("/ui/dashboards/service_levels/edit").get_data(as_text=True)
    assert re.search(r'name="reports" value="slas_breaching_soon" checked', page)
    form = {"title": "Service levels", "roles": "sn_customerservice_manager", "range": "30",
            "reports": ["sla_compliance", "sla_compliance_by_definition", "slas_breaching_soon", "cases_per_agent"]}
    review = admin.post("/ui/dashboards/service_levels/edit", form)
    assert apply_reviewed(admin, review.get_data(as_text=True)).status_code == 302
    assert board.read_text().startswith("# The support manager's service levels")
    assert yaml.safe_load(board.read_text())["dashboard"]["reports"][-1] == "cases_per_agent"


@pytest.mark.parametrize(("change", "key", "message"), [
    ({"name": "Bad name"}, "name", "A name of lower-case letters"),
    ({"name": "service_levels"}, "name", "A dashboard named 'service_levels' already exists"),
    ({"title": ""}, "title", "A title"),
    ({"roles": []}, "roles", "At least one role"),
    ({"roles": "nobody_has_this"}, "roles", "nobody_has_this"),
    ({"reports": []}, "reports", "At least one report."),
    ({"reports": "no_such_report"}, "reports", "unknown report 'no_such_report'"),
    ({"position_sla_compliance": "first"}, "reports", "A position is a whole number"),
    ({"range": "14"}, "range", "One of Last 7 days"),
])
def test_a_dashboard_mistake_is_said_at_its_input(admin, definitions_copy, change, key, message):
    page = admin.post("/ui/dashboards/new", {**BOARD, **change})
    shown = page.get_data(as_text=True)
    assert page.status_code == 422, text_of(shown)[:2000]
    assert message in field_error(shown, key), (field_error(shown, key), text_of(shown)[:3000])
    assert not (definitions_copy / "dashboards/customer_health.yaml").exists()


def test_only_administrators_make_dashboards(client):
    session = Session(client, "manager")
    assert session.get("/ui/dashboards/new").status_code == 403
    assert session.get("/ui/dashboards/support_manager/edit").status_code == 403
    index = session.get("/ui/reports").get_data(as_text=True)
    assert 'href="/dashboard/support_manager"' in index and "/ui/dashboards/" not in index
