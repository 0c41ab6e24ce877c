"""The Definitions area in a real browser (Debian's Chromium, driven by Playwright) against a
real server, with no restart anywhere: add a field to a table and see it on the form and in the
Table API; a broken edit shows its error at its line and applies nothing; a change that loses
data is confirmed; an earlier version is restored; and a second server process on the same
database serves the new field on its next request. Every test works on a copy of the
definitions folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import pytest

import test_browser
from conftest import ROOT, basic, free_port

# The browser, the live server (of the `app` fixture, so of this module's `config`) and the sign-in
# of the agent UI's browser tests.
browser, server, login = test_browser.browser, test_browser.server, test_browser.login
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

ACCOUNT = "tables/customer_account.yaml"
TIER_LINE = "  u_tier: {type: choice, label: Tier, choices: {gold: Gold, silver: Silver}}"


@pytest.fixture
def config(config, definitions_copy):
    return replace(config, definitions=str(definitions_copy))


def api_get(base: str, path: str, user: str = "admin"):
    request = urllib.request.Request(base + path, headers=basic(user))
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def add_tier_in_the_browser(page, server: str) -> None:
    """From a new account's form: Add a field, review, apply."""
    page.goto(f"{server}/customer_account.do?sys_id=-1")
    page.get_by_role("link", name="Add a field").click()
    page.get_by_label("Name").fill("u_tier")
    page.get_by_label("Label").fill("Tier")
    page.get_by_label("Type").select_option("choice")
    page.get_by_label("Choices (choice fields)").fill("gold = Gold\nsilver = Silver")
    assert page.get_by_label("On the form").input_value() == "0"  # the form's last section: Account
    # the review dry-runs the migration and applying migrates: on a loaded CI machine (PostgreSQL, two workers)
    # either may take longer than the default 10 s
    page.get_by_role("button", name="Review and apply…").click(timeout=60000)
    assert "add field customer_account.u_tier" in page.locator(".schema-changes").inner_text()
    assert TIER_LINE in page.locator("pre.diff ins").all_inner_texts()[0]
    page.get_by_role("button", name="Apply", exact=True).click(timeout=60000)
    page.wait_for_url(re.compile(r"/customer_account\.do\?sys_id=-1$"), timeout=60000)
    assert "add field customer_account.u_tier" in page.get_by_role("status").first.inner_text()


def test_add_a_field_in_the_browser_and_use_it_on_the_form_and_in_the_table_api(login, server, definitions_copy):
    page = login("admin")
    add_tier_in_the_browser(page, server)
    page.locator("#f_name").fill("Tiered Industries")
    page.get_by_label("Tier").select_option(label="Silver")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"customer_account\.do\?sys_id=[0-9a-f]{32}"))
    assert page.get_by_label("Tier").input_value() == "silver"
    found = api_get(server, "/api/now/table/customer_account?sysparm_query=name=Tiered%20Industries"
                            "&sysparm_fields=name,u_tier")["result"]
    assert found == [{"name": "Tiered Industries", "u_tier": "silver"}]
    assert TIER_LINE in (definitions_copy / ACCOUNT).read_text()  # written back to the definitions folder


def open_in_editor(page, server: str, path: str) -> None:
    page.goto(f"{server}/")
    page.get_by_role("link", name="Definitions", exact=True).click()
    page.get_by_role("link", name=path, exact=True).click()
    editor_ready(page)


def editor_ready(page) -> None:
    """Wait until the page's code editor is built (its script runs after the page is shown)."""
    # built in the same task that sets window.definitionEditor; never wait_for_function, whose eval the CSP refuses
    page.locator(".CodeMirror").wait_for()


def editor_line(page, text: str) -> int:
    """The 0-based line of the editor that contains `text`."""
    return page.evaluate("t => definitionEditor.getValue().split('\\n').findIndex(l => l.includes(t))", text)


def test_a_broken_edit_shows_its_error_at_its_line_and_nothing_is_applied(login, server, definitions_copy):
    page = login("admin")
    open_in_editor(page, server, ACCOUNT)
    line = editor_line(page, "primary_contact:")
    end = page.evaluate(f"definitionEditor.getLine({line}).length")
    page.evaluate(f"definitionEditor.focus(); definitionEditor.setCursor({{line: {line}, ch: {end - 1}}})")
    page.keyboard.type("x")  # customer_contact -> customer_contactx
    problem = page.locator("#problems li").first
    problem.wait_for()
    assert problem.inner_text() == f"Line {line + 1}, column 42: reference to unknown table 'customer_contactx'"
    marker = page.locator(f".CodeMirror-code > div:nth-child({line + 1}) .CodeMirror-lint-marker-error")
    assert marker.count() == 1  # the gutter marks the line
    assert page.locator(".CodeMirror-lint-marker-error").count() == 1

    page.get_by_role("button", name="Review changes…").click()
    assert "Not valid: nothing was applied" in page.get_by_role("alert").first.inner_text()
    assert page.locator("#problems li").first.inner_text().startswith(f"Line {line + 1}, column 42:")
    editor_ready(page)
    assert "customer_contactx" in page.evaluate("definitionEditor.getValue()")  # what was typed is kept
    assert "customer_contactx" not in (definitions_copy / ACCOUNT).read_text()
    stored = page.request.get(f"{server}/api/caseloom/definitions/{ACCOUNT}").text()
    assert "customer_contactx" not in stored and "to: customer_contact}" in stored


def test_a_data_losing_change_is_confirmed_then_an_earlier_version_is_restored(login, server, app):
    client = app.test_client()
    text = client.get(f"/api/caseloom/definitions/{ACCOUNT}", headers=basic("admin")).get_data(as_text=True)
    with_tier = text.replace("  notes: {type: text}\n", "  notes: {type: text}\n" + TIER_LINE + "\n")
    assert client.put(f"/api/caseloom/definitions/{ACCOUNT}", data=with_tier, headers=basic("admin")).status_code == 200
    account = client.get("/api/now/table/customer_account?sysparm_limit=1", headers=basic("admin")).json["result"][0]
    client.patch(f"/api/now/table/customer_account/{account['sys_id']}", json={"u_tier": "gold"}, headers=basic("admin"))

    page = login("admin")
    open_in_editor(page, server, ACCOUNT)
    line = editor_line(page, "u_tier:")
    page.evaluate(f"definitionEditor.focus(); definitionEditor.setCursor({{line: {line}, ch: 0}})")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Backspace")
    page.locator("#problems[data-state=valid]").wait_for()
    page.keyboard.press("Control+Enter")  # review
    page.wait_for_url(re.compile(r"/ui/definitions/review$"))
    assert "drop field customer_account.u_tier" in page.locator(".schema-changes").inner_text()
    confirm = page.get_by_label("I accept losing field customer_account.u_tier and its 1 values")
    apply = page.get_by_role("button", name="Apply and lose this data")
    apply.click()  # not confirmed: the browser keeps the form until the loss is ticked
    assert page.url.endswith("/ui/definitions/review")
    assert "u_tier" in api_get(server, "/api/now/table/customer_account?sysparm_limit=1")["result"][0]
    confirm.check()
    apply.click(timeout=60000)  # the change migrates the schema: a loaded machine takes its time
    page.wait_for_url(re.compile(rf"/ui/definitions/file/{ACCOUNT}$"), timeout=60000)
    assert "drop field customer_account.u_tier" in page.get_by_role("status").first.inner_text()
    assert "u_tier" not in api_get(server, "/api/now/table/customer_account?sysparm_limit=1")["result"][0]

    page.get_by_role("link", name="History of this file").click()
    rows = page.locator("table.list tbody tr")
    assert rows.first.locator("td").nth(1).inner_text() == "admin"
    rows.nth(1).locator("a").click()  # the version with the Tier field
    assert TIER_LINE in page.locator("pre.diff").inner_text()
    page.get_by_role("button", name="Restore this version…").click()
    assert "add field customer_account.u_tier" in page.locator(".schema-changes").inner_text()
    page.get_by_role("button", name="Apply", exact=True).click(timeout=60000)
    page.wait_for_url(re.compile(rf"/ui/definitions/file/{ACCOUNT}$"), timeout=60000)
    restored = api_get(server, f"/api/now/table/customer_account/{account['sys_id']}")["result"]
    assert restored["u_tier"] == ""  # the field is back; its values were lost, as confirmed
    editor_ready(page)
    assert page.evaluate("definitionEditor.getValue()").count("u_tier") == 1
    history = api_get(server, "/api/caseloom/definitions/history")["result"]
    assert [h["action"] for h in history[:3]] == ["restore", "update", "update"]


@pytest.fixture
def second_server(database_url, definitions_copy, tmp_path):
    """`caseloom serve` in its own process on the same database."""
    port = free_port()
    env = {**os.environ, "CASELOOM_DATABASE_URL": database_url, "CASELOOM_DEFINITIONS": str(definitions_copy),
           "CASELOOM_SCRIPTS": str(ROOT / "scripts"), "CASELOOM_UI": str(ROOT / "ui"),
           "CASELOOM_INSTANCE": str(tmp_path / "instance2"), "CASELOOM_QUEUE": f"sqlite:///{tmp_path / 'queue2.db'}",
           "CASELOOM_SECRET_KEY": "second-process"}
    log = open(tmp_path / "second.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen([sys.executable, "-c", "from caseloom.cli import main; main()", "serve", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/login", timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                pytest.fail("the second server did not start:\n" + (tmp_path / "second.log").read_text())
            time.sleep(0.2)
    yield base
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def test_a_second_server_process_serves_the_new_field_on_its_next_request(login, server, second_server):
    assert second_server != server
    before = api_get(second_server, "/api/now/table/customer_account?sysparm_limit=1")["result"][0]
    assert "u_tier" not in before
    page = login("admin")
    add_tier_in_the_browser(page, server)
    after = api_get(second_server, "/api/now/table/customer_account?sysparm_limit=1")["result"][0]
    assert after["sys_id"] == before["sys_id"] and after["u_tier"] == ""
    request = urllib.request.Request(f"{second_server}/api/now/table/customer_account/{before['sys_id']}",
                                     data=json.dumps({"u_tier": "gold"}).encode(), method="PATCH",
                                     headers={**basic("admin"), "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["result"]["u_tier"] == "gold"
    other = page.context.browser.new_context().new_page()
    other.goto(f"{second_server}/login")
    other.get_by_label("User name").fill("admin")
    other.get_by_label("Password").fill("admin")
    other.get_by_role("button", name="Sign in").click()
    other.goto(f"{second_server}/customer_account.do?sys_id={before['sys_id']}")
    assert other.get_by_label("Tier").input_value() == "gold"
    other.context.close()


def test_build_a_report_in_the_browser_preview_it_and_save_it(login, server, definitions_copy):
    """Reports > New report: the table's fields appear when it is chosen (htmx), the preview draws the chart,
    and saving goes through the review to the report's own page."""
    page = login("admin")
    page.goto(f"{server}/ui/reports")
    page.get_by_role("link", name="New report").click()
    page.get_by_label("Table").select_option(label="Case")
    group_by = page.get_by_label("Group by")
    group_by.wait_for()  # the form redrawn for the table and its type (a bar by default)
    group_by.select_option(label="Priority")
    # the condition with the filter's rows: the row redrawn for its field (htmx) offers the priorities
    row = page.locator(".report-filter .filter-row").first
    row.get_by_label("Field").select_option(label="Active")
    expect_value = page.locator('.report-filter .filter-row[data-field="active"]')
    expect_value.wait_for()
    expect_value.get_by_label("Value").select_option("true")
    page.get_by_label("Name").fill("cases_by_priority")
    page.get_by_label("Title").fill("Cases by priority")
    page.get_by_label("Preview over").select_option(label="All time")
    page.get_by_role("button", name="Preview").click()
    preview = page.locator(".report-preview")
    preview.locator("svg.chart").wait_for()
    assert preview.locator("svg.chart a").count() > 1  # a bar per priority
    assert "Records: Active is true." in preview.inner_text()
    page.get_by_role("button", name="Review and save…").click(timeout=60000)
    assert "condition: active=true" in page.locator("pre.diff").inner_text()
    page.get_by_role("button", name="Apply", exact=True).click(timeout=60000)
    page.wait_for_url(re.compile(r"/report/cases_by_priority$"), timeout=60000)
    assert page.get_by_role("heading", level=1).inner_text() == "Cases by priority"
    assert (definitions_copy / "reports/cases_by_priority.yaml").exists()
