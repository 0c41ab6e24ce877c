"""The agent and administrator UI in a real browser (Debian's Chromium, driven by Playwright)
against a real server: sign in, filter and page, edit, inline errors, type-ahead, action
dialogs, related lists, concurrent edits, bulk edit, system properties."""

from __future__ import annotations

import os
import re
import threading

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from conftest import database_held

CHROMIUM = os.environ.get("CASELOOM_CHROMIUM") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

# How long a page may take to answer or an element to appear. Generous: CI runs the browser tests beside
# the PostgreSQL half and the benchmarks on two cores, where a page has stalled past 10 s, and on a
# slower machine twice past 30 s (a page that answers in 0.4 s when the machine is idle).
TIMEOUT_MS = 90_000
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # the assertions that wait, as patient as the pages
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def server(app):
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture
def login(browser, server):
    contexts = []

    def sign_in(user: str):
        context = browser.new_context(viewport={"width": 1300, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{server}/login")
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(user)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server}/")
        return page

    yield sign_in
    for context in contexts:
        context.close()


SWAPPING = ".htmx-request, .htmx-swapping, .htmx-added, .htmx-settling"


def settled(page, selector: str) -> None:
    """Wait until `selector` finds something and htmx has finished every request and swap: new content's
    triggers are live only then (a change made before would be lost, as no person is that quick)."""
    page.locator(selector).wait_for()
    for _ in range(200):
        if not page.locator(SWAPPING).count():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"htmx still busy after 10 s: {page.locator(SWAPPING).count()} elements")


def open_first_case(page, server, query):
    page.goto(f"{server}/sn_customerservice_case_list.do?sysparm_query={query}")
    page.locator("table.list tbody tr").first.locator("a").first.click()
    page.wait_for_url(re.compile(r"sn_customerservice_case\.do\?sys_id=[0-9a-f]{32}"))
    return page.url


def test_sign_in_shows_the_menu_for_the_role(login, server):
    page = login("agent")
    nav = page.get_by_role("navigation", name="Applications")
    assert nav.get_by_role("link", name="Open cases").is_visible()
    assert nav.get_by_role("link", name="Major cases").is_visible()
    assert nav.get_by_role("link", name="Properties").count() == 0  # System is for administrators
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{server}/sn_customerservice_case_list.do")
    assert "/login" in page.url


def test_wrong_password_is_refused(browser, server):
    page = browser.new_page()
    page.goto(f"{server}/login")
    page.get_by_label("User name").fill("agent")
    page.get_by_label("Password").fill("nope")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong user name or password."
    page.close()


def test_filter_a_list_keeps_the_query_in_the_url_and_pages(login, server, runtime):
    with runtime.transaction() as service:  # enough rows for three pages
        service.insert_many("sn_customerservice_case", [{"short_description": f"Paging {i}", "priority": 1 + i % 3}
                                                          for i in range(45)])
    page = login("agent")
    page.get_by_role("navigation", name="Applications").get_by_role("link", name="All cases").click()
    total_all = int(page.locator(".pager .total").inner_text())
    page.locator("#filter summary").click()
    page.get_by_label("Field").first.select_option("priority")
    settled(page, "#filter-row-0[data-field=priority]")  # the row is drawn again for a choice field
    page.get_by_label("Operator").first.select_option("le")
    page.get_by_label("Value").first.select_option(label="3 - Moderate")
    page.get_by_role("button", name="Run filter").click()
    page.wait_for_url(re.compile(r"sysparm_query=priority%3C%3D3"))
    total = int(page.locator(".pager .total").inner_text())
    assert 0 < total < total_all
    priorities = page.locator("table.list tbody tr td:nth-child(5)").all_inner_texts()
    assert priorities and all(p[0] in "123" for p in priorities)
    # the URL is the filter: opening it again shows the same list
    shared = page.url
    page.goto(shared)
    assert int(page.locator(".pager .total").inner_text()) == total
    assert total > 40
    first_page = page.locator("table.list tbody tr td:nth-child(2)").all_inner_texts()
    page.get_by_role("link", name="Next ›").click()
    page.wait_for_url(re.compile(r"sysparm_first_row=21"))
    assert page.locator("table.list tbody tr td:nth-child(2)").all_inner_texts() != first_page
    assert page.locator(".pager .count").inner_text().startswith("21–40 of")
    assert "priority%3C%3D3" in page.url  # the filter stays in the URL while paging
    page.get_by_role("link", name="‹ Previous").click()
    page.wait_for_url(re.compile(r"sysparm_first_row=1(&|$)"))
    assert page.locator("table.list tbody tr td:nth-child(2)").all_inner_texts() == first_page


def test_open_and_edit_a_case(login, server):
    page = login("agent")
    open_first_case(page, server, "state=10^accountISNOTEMPTY")
    page.get_by_label("Short description").fill("Printer on fire in building B")
    page.get_by_label("Priority").select_option("2")
    page.get_by_label("Work notes").fill("Called the customer back")
    page.get_by_role("button", name="Save").click()
    assert "saved" in page.get_by_role("status").first.inner_text()
    assert page.get_by_label("Short description").input_value() == "Printer on fire in building B"
    assert page.get_by_label("Priority").input_value() == "2"
    assert "Called the customer back" in page.locator(".activity").inner_text()
    page.locator(".history summary").click()
    assert "Printer on fire in building B" in page.locator(".history").inner_text()


def test_a_validation_error_is_shown_at_the_field_and_keeps_what_was_typed(login, server):
    page = login("agent")
    open_first_case(page, server, "state=10")
    page.get_by_label("Short description").fill("")
    page.get_by_label("Description", exact=True).fill("Typed text that must survive")
    page.get_by_role("button", name="Save").click()
    error = page.locator(".field.has-error .field-error")
    assert error.inner_text() == "Short description is mandatory"
    assert page.get_by_label("Description", exact=True).input_value() == "Typed text that must survive"
    assert page.locator("#f_short_description").get_attribute("aria-invalid") == "true"


def test_type_ahead_reference_pick(login, server):
    page = login("agent")
    open_first_case(page, server, "state=1")
    picker = page.get_by_role("combobox", name="Assignment group")
    picker.fill("")
    picker.press_sequentially("Netw", delay=30)
    option = page.get_by_role("option", name="Network Operations")
    option.wait_for()
    option.click()
    assert picker.input_value() == "Network Operations"
    page.get_by_role("button", name="Save").click()
    assert page.get_by_role("combobox", name="Assignment group").input_value() == "Network Operations"


def test_an_action_with_a_dialog(login, server):
    page = login("agent")
    open_first_case(page, server, "state=10")
    page.get_by_role("button", name="Resolve…").click()
    dialog = page.get_by_role("dialog", name="Resolve")
    dialog.get_by_label("Resolution code").select_option("solved_remotely")
    dialog.get_by_label("Close notes").fill("Restarted the service")
    dialog.get_by_role("button", name="Resolve").click()
    assert re.match(r"Case CS\d{7} is now Resolved\.", page.get_by_role("status").first.inner_text())
    assert page.locator("#f_state").inner_text() == "Resolved"
    # a Resolved case offers the customer's answers, not Resolve again
    assert page.get_by_role("button", name="Reject solution…").is_visible()
    assert page.get_by_role("button", name="Resolve…").count() == 0


def test_propose_and_accept_shows_the_major_case_with_its_child_cases(login, server):
    agent = login("agent")
    case_url = open_first_case(agent, server, "state=18^accountISNOTEMPTY")
    agent.get_by_role("button", name="Propose major case…").click()
    agent.get_by_role("dialog", name="Propose major case").get_by_label("Why is this a major issue?").fill("Outage")
    agent.get_by_role("dialog", name="Propose major case").get_by_role("button", name="Propose major case").click()
    assert agent.locator("#f_major_case_state").inner_text() == "Proposed"
    manager = login("mim")
    manager.goto(case_url)
    manager.get_by_role("button", name="Accept major case…").click()
    manager.get_by_role("dialog", name="Accept major case").get_by_role("button", name="Accept major case").click()
    # the manager lands on the new major case; the customer's case is its first child
    assert manager.locator("#f_major_case_state").inner_text() == "Accepted"
    assert manager.url != case_url and re.search(r"sys_id=[0-9a-f]{32}$", manager.url)
    assert "Created case CS" in manager.get_by_role("status").first.inner_text()
    related = manager.locator(".related").filter(has_text="Child cases")
    assert related.locator(".badge").inner_text() == "1"
    assert "Awaiting Info: 1" in related.locator(".counts").inner_text()


def test_a_related_list_pages(login, server):
    page = login("agent")
    page.goto(f"{server}/customer_account_list.do")
    page.locator("table.list tbody tr").first.locator("a").first.click()
    cases = page.locator(".related").filter(has_text="Cases")
    assert int(cases.locator(".badge").inner_text()) >= 2
    assert cases.locator("tbody tr").count() >= 2


def test_a_conflicting_concurrent_edit_is_refused_with_the_other_change(login, server):
    first = login("agent")
    url = open_first_case(first, server, "state=10")
    second = login("manager")
    second.goto(url)
    first.get_by_label("Short description").fill("First writer wins")
    first.get_by_role("button", name="Save").click()
    second.get_by_label("Short description").fill("Second writer")
    second.get_by_role("button", name="Save").click()
    conflict = second.locator(".conflict")
    assert "someone else changed this record" in conflict.inner_text()
    assert "First writer wins" in conflict.inner_text()
    assert second.get_by_label("Short description").input_value() == "Second writer"  # nothing typed is lost
    conflict.get_by_role("link", name="Reload the record").click()
    assert second.get_by_label("Short description").input_value() == "First writer wins"


def test_bulk_edit_from_a_list(login, server):
    page = login("agent")
    page.goto(f"{server}/sn_customerservice_case_list.do?sysparm_query=state=1^ORDERBYnumber")
    page.get_by_label("Select row 1").check()
    page.get_by_label("Select row 2").check()
    numbers = page.locator("table.list tbody tr td:nth-child(2)").all_inner_texts()[:2]
    page.locator(".bulk summary").click()
    page.get_by_label("Field", exact=True).last.select_option("priority")
    page.locator("select#bulk_value").select_option(label="1 - Critical")  # the field's own input: its labels
    page.get_by_role("button", name="Apply").click()
    assert "2 of 2 records changed" in page.get_by_role("status").first.inner_text()
    page.goto(f"{server}/sn_customerservice_case_list.do?sysparm_query=priority=1^numberIN{','.join(numbers)}")
    assert int(page.locator(".pager .total").inner_text()) == 2


def test_an_administrator_changes_a_property_effective_on_the_next_request(login, server):
    page = login("admin")
    page.get_by_role("navigation", name="Applications").get_by_role("link", name="Properties").click()
    form = page.locator("form#sn_customerservice\\.parent_child_case_sync")
    box = form.get_by_role("checkbox")
    assert not box.is_checked()
    box.check()
    form.get_by_role("button", name="Save").click()
    assert "applies from the next request" in page.get_by_role("status").first.inner_text()
    assert page.locator("form#sn_customerservice\\.parent_child_case_sync").get_by_role("checkbox").is_checked()
    integer_like = page.locator("form#sn_customerservice\\.case_fields_to_sync textarea")
    assert "priority" in integer_like.input_value()


def test_major_case_in_the_browser_add_children_then_close_with_cascade(login, server, runtime):
    from caseloom.query import parse_encoded

    with runtime.transaction() as service, service.by_definitions():  # an accepted major case, as accepting makes it
        major = service.insert("sn_customerservice_case", {"short_description": "Mail outage", "state": 10,
                                                            "major_case_state": "accepted", "proactive": True})
        free = service.query("sn_customerservice_case",
                             parse_encoded("stateIN1,10^parentISEMPTY^major_case_stateISEMPTY^ORDERBYnumber"),
                             ["number"], 3)
    page = login("agent")
    page.goto(f"{server}/sn_customerservice_case.do?sys_id={major['sys_id']}")
    page.get_by_role("button", name="Add child cases…").click()
    dialog = page.get_by_role("dialog", name="Add child cases")
    for r in free:  # picked from the cases that could be added, never typed
        dialog.get_by_label(r["number"]).check()
    dialog.get_by_role("button", name="Add child cases").click()
    status = page.get_by_role("status").first.inner_text()
    assert "3 of 3 selected cases were added" in status
    related = page.locator(".related").filter(has_text="Child cases")
    assert related.locator(".badge").inner_text() == "3"
    page.get_by_role("button", name="Close…").click()
    close = page.get_by_role("dialog", name="Close")
    close.get_by_label("Close notes").fill("Mail flows again")
    close.get_by_label("Resolution code").select_option("solved_permanently")
    close.get_by_role("button", name="Close").click()
    assert page.locator("#f_state").inner_text() == "Closed"
    assert page.locator(".related").filter(has_text="Child cases").locator(".counts").inner_text() == "Closed: 3"


def test_recipients_list_preview_import_and_script_in_the_browser(login, server, runtime, tmp_path):
    with runtime.transaction() as service:
        list_id = service.insert("sn_publications_recipients_list",
                                 {"name": "German customers", "type": "accounts", "conditions": "country=DE"})["sys_id"]
        numbers = [r["number"] for r in service.query("customer_account", __import__("caseloom").query.parse_encoded(
            "countryINUS,GB"), ["number"], 2)]
    page = login("author")
    page.goto(f"{server}/sn_publications_recipients_list.do?sys_id={list_id}")
    page.get_by_role("button", name="Preview").click()
    assert "records identified by the condition" in page.locator(".preview").inner_text()
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text("number\n" + "\n".join(numbers) + "\nACCT0000000\n")
    page.get_by_label("Import a CSV").set_input_files(str(csv_file))
    page.get_by_role("button", name="Import", exact=True).click()
    report = page.get_by_role("status").inner_text()
    assert "2 added, 1 rejected, of 3 rows" in report
    assert "no customer_account record with number 'ACCT0000000'" in page.locator("table").inner_text()
    page.get_by_role("link", name="Back to the list").click()
    page.get_by_role("link", name="Edit script").click()
    editor = page.get_by_label("Script")
    editor.fill('found = records.query("customer_account", country="FR")\nlog("found", len(found))\n'
                'result = [a["sys_id"] for a in found]\n')
    page.get_by_role("button", name="Run preview").click()
    status = page.get_by_role("status").inner_text()
    assert "identified" in status and "rejected" in status and "found" in page.locator("pre.log").inner_text()
    editor = page.get_by_label("Script")
    editor.fill("x = 1\nimport os\n")
    page.get_by_role("button", name="Run preview").click()
    assert "script:2:" in page.get_by_role("alert").inner_text()


def test_create_child_cases_shows_its_progress(login, server, runtime):
    from caseloom.jobs.registry import execute_job
    from caseloom.memberlists import lists_for

    with runtime.transaction() as service, service.by_definitions():  # an accepted major case, as accepting makes it
        list_id = service.insert("sn_publications_recipients_list",
                                 {"name": "Everyone", "type": "accounts", "conditions": "active=true"})["sys_id"]
        lists_for(service, "sn_publications_recipients_list").refresh(list_id)
        major = service.insert("sn_customerservice_case", {"short_description": "Outage", "state": 10,
                                                            "major_case_state": "accepted", "recipient_list": list_id})
    page = login("mim")
    page.goto(f"{server}/sn_customerservice_case.do?sys_id={major['sys_id']}")
    page.get_by_role("button", name="Create child cases…").click()
    dialog = page.get_by_role("dialog", name="Create child cases")
    dialog.get_by_label("Message to the affected customers").fill("We are on it")
    dialog.get_by_role("button", name="Create child cases").click()
    # first what it will do, in numbers; nothing starts before "Yes"
    assert re.match(r"This creates \d+ cases", page.locator(".confirm-count").inner_text())
    page.get_by_role("button", name="Yes, create child cases").click()
    assert "started" in page.get_by_role("status").first.inner_text()
    job = page.locator("section.job")
    assert "queued" in job.inner_text()
    job_id = job.get_attribute("id").removeprefix("job-")
    execute_job(runtime, job_id)  # the worker's part
    page.locator("section.job h2", has_text="done").wait_for(timeout=TIMEOUT_MS)  # not wait_for_function: the CSP refuses eval
    assert page.locator("section.job progress").get_attribute("value") == page.locator(
        "section.job progress").get_attribute("max")
    page.reload()
    related = page.locator(".related").filter(has_text="Child cases")
    assert int(related.locator(".badge").inner_text()) > 0


def test_a_list_condition_built_with_the_filter_builder(login, server, runtime):
    with runtime.transaction() as service:
        list_id = service.insert("sn_publications_recipients_list", {"name": "Built", "type": "accounts"})["sys_id"]
    page = login("author")
    page.goto(f"{server}/sn_publications_recipients_list.do?sys_id={list_id}")
    page.get_by_role("link", name="Build the condition").click()
    page.locator("#filter summary").click()
    page.get_by_label("Field").first.select_option("country")
    settled(page, "#filter-row-0[data-field=country]")
    page.get_by_label("Operator").first.select_option("eq")
    page.get_by_label("Value").first.fill("DE")
    page.get_by_role("button", name="Run filter").click()
    total = page.locator(".use-condition strong").inner_text()
    page.get_by_role("button", name="Use this filter as the condition").click()
    assert "Condition saved" in page.get_by_role("status").first.inner_text()
    assert page.get_by_label("Conditions").input_value() == "country=DE"
    page.get_by_role("button", name="Preview").click()
    assert f"{total} records identified by the condition" in page.locator(".preview").inner_text()


def test_a_comment_refused_by_a_busy_database_is_sent_again_with_one_click(browser, server, app, runtime,
                                                                          database_url, monkeypatch):
    """A customer's comment in the portal, sent while another connection holds the database (SQLite's
    write lock, or the case's row on PostgreSQL): the page says nothing was changed and shows the
    comment; once the database is free, *Send again* adds it, once."""
    with runtime.transaction() as service:
        user = service.conn.execute(sa.text("SELECT contact FROM sys_user WHERE user_name = 'customer'")).scalar()
        case = service.conn.execute(sa.text("SELECT sys_id FROM task WHERE contact = :u AND active = :a ORDER BY number"),
                                    {"u": user, "a": True}).scalar()
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server}/login")
    page.get_by_label("User name").fill("customer")
    page.get_by_label("Password").fill("customer")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/csm"))
    page.goto(f"{server}/csm/record/{case}")
    text = "Still down here since 9:00 <b>and</b> getting worse"
    page.get_by_label("Add a comment").fill(text)
    with database_held(app, database_url, monkeypatch, "task", case):
        page.get_by_role("button", name="Send", exact=True).click()
        page.get_by_role("heading", name="Busy: nothing was changed").wait_for()
    assert page.locator("dl.resent pre").inner_text() == text
    page.get_by_role("button", name="Send again").click()
    page.wait_for_url(re.compile(rf"/csm/record/{case}$"))
    assert page.get_by_text("Your comment was added.").is_visible()
    with runtime.transaction() as service:
        added = service.conn.execute(sa.text("SELECT count(*) FROM sys_journal_field WHERE element_id = :c AND value = :v"),
                                     {"c": case, "v": text}).scalar()
    assert added == 1
    context.close()
