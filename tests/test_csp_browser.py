"""The browser UI under its Content-Security-Policy, in a real browser (Debian's Chromium, driven by
Playwright) against a real server: as an agent and as an administrator, every kind of page and
every htmx fragment swapped into one (filter rows, sorted and paged list bodies, type-ahead
options, related-list pages, previews, job progress, htmx's history restore) runs with no
violation of the policy, and the pieces that need JavaScript (dialogs, the delete confirmation,
the CodeMirror editor and its live validation) still work.

Violations are caught twice: a `securitypolicyviolation` listener installed before any page
script runs reports each one to the test, and Chromium's console errors for them ("Refused to
...", or "... violates the following Content Security Policy directive ...") are collected too.
Uncaught script errors count as failures as well.

Note for browser tests: Playwright's `page.wait_for_function` evaluates its predicate with eval,
which the policy refuses; wait on a locator instead."""

from __future__ import annotations

import re
import time

import pytest

import test_browser

# The browser and the live server (of the `app` fixture) of the agent UI's browser tests.
browser, server = test_browser.browser, test_browser.server
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

LISTENER = """
window.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.cspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${where} ${e.sample}`);
}, true);
"""
CASES = "sn_customerservice_case"


def is_refusal(text: str) -> bool:
    """Chromium's console error for a violation: "Refused to ..." in older versions, "Applying inline
    style violates the following Content Security Policy directive ..." in newer ones."""
    return text.startswith("Refused to") or "Content Security Policy directive" in text


class Watch:
    """Signed-in pages whose policy violations, refusals and script errors are all recorded."""

    def __init__(self, browser, server: str):
        self.browser, self.server = browser, server
        self.violations: list[str] = []
        self.refusals: list[str] = []
        self.errors: list[str] = []
        self.contexts = []

    def sign_in(self, user: str):
        context = self.browser.new_context(viewport={"width": 1300, "height": 900})
        self.contexts.append(context)
        context.expose_binding("cspViolation", lambda source, text: self.violations.append(f"{source['frame'].url}: {text}"))
        context.add_init_script(LISTENER)
        page = context.new_page()
        page.set_default_timeout(test_browser.TIMEOUT_MS)
        page.on("console", lambda m: m.type == "error" and is_refusal(m.text) and self.refusals.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        page.goto(f"{self.server}/login")
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(user)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{self.server}/")
        return page

    def visit(self, page, path: str) -> None:
        page.goto(self.server + path)  # returns once the page's load event has fired

    def assert_clean(self, page) -> None:
        page.wait_for_timeout(300)  # a violation's event and console message are delivered a task later
        assert self.violations == [], "\n".join(self.violations)
        assert self.refusals == [], "\n".join(self.refusals)
        assert self.errors == [], "\n".join(self.errors)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def watch(browser, server):
    watching = Watch(browser, server)
    yield watching
    watching.close()


@pytest.fixture
def account_with_cases(runtime):
    """An account with 25 cases: more than a list page (20) and a related-list page (10)."""
    with runtime.transaction() as service:
        account = service.insert("customer_account", {"name": "Policy Checks Ltd", "country": "DE"})
        service.insert_many(
            CASES,
            [
                {"short_description": f"Policy case {i}", "state": 10, "priority": 1 + i % 4, "account": account["sys_id"]}
                for i in range(25)
            ],
        )
    return account


def test_the_watch_catches_what_the_policy_blocks(watch):
    """The detector itself: inline style and an inline script are refused and reported."""
    page = watch.sign_in("agent")
    page.evaluate("""document.body.insertAdjacentHTML("beforeend", '<p id="styled" style="color: red">x</p>');
                     const s = document.createElement("script"); s.textContent = "window.ranInline = true";
                     document.body.append(s);""")
    deadline = time.monotonic() + 5
    while len(watch.violations) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert any(v.startswith(f"{watch.server}/: style-src-attr blocked inline") for v in watch.violations), watch.violations
    assert any("script-src-elem blocked inline" in v for v in watch.violations), watch.violations
    assert page.evaluate("window.ranInline") is None  # the script did not run
    assert page.evaluate("getComputedStyle(document.getElementById('styled')).color") != "rgb(255, 0, 0)"
    assert len(watch.refusals) >= 2 and all(r.startswith(f"{watch.server}/: ") for r in watch.refusals), watch.refusals


def test_agent_pages_and_fragments_pass_the_policy(watch, account_with_cases):
    page = watch.sign_in("agent")
    assert page.get_by_role("heading", name="Welcome, Alex Agent").is_visible()

    # a list with a filter; the filter builder's add-row is an htmx swap of the whole filter
    watch.visit(page, f"/{CASES}_list.do?sysparm_query=account={account_with_cases['sys_id']}")
    assert page.locator("#filter").get_attribute("open") is not None  # a filtered list shows its filter
    page.get_by_role("button", name="+ AND").click()
    page.locator("#filter .filter-row").nth(1).wait_for()
    assert page.locator("#filter .filter-row").count() == 2
    # sorting and paging swap the list body and push the URL; going back restores it from htmx's history
    page.locator("table.list thead a", has_text="Priority").click()
    page.wait_for_url(re.compile(r"sysparm_orderby=priority"))
    page.get_by_role("link", name="Next ›").click()
    page.wait_for_url(re.compile(r"sysparm_first_row=21"))
    assert page.locator(".pager .count").inner_text() == "21–25 of 25"
    page.go_back()
    page.wait_for_url(re.compile(r"sysparm_orderby=priority(&|$)"))
    page.locator(".pager .count", has_text="1–20 of 25").wait_for()

    # a form: type-ahead options, an action dialog opened, cancelled, then used
    page.locator("table.list tbody tr").first.locator("a").first.click()
    page.wait_for_url(re.compile(rf"{CASES}\.do\?sys_id=[0-9a-f]{{32}}"))
    picker = page.get_by_role("combobox", name="Assignment group")
    picker.fill("")
    picker.press_sequentially("Netw", delay=30)
    page.get_by_role("option", name="Network Operations").click()
    assert picker.input_value() == "Network Operations"
    page.get_by_role("button", name="Resolve…").click()
    dialog = page.get_by_role("dialog", name="Resolve")
    dialog.get_by_role("button", name="Go back").click()
    assert not dialog.is_visible()
    page.get_by_role("button", name="Resolve…").click()
    dialog.get_by_label("Resolution code").select_option("solved_remotely")
    dialog.get_by_label("Close notes").fill("Restarted the service")
    dialog.get_by_role("button", name="Resolve").click()
    assert re.match(r"Case CS\d{7} is now Resolved\.", page.get_by_role("status").first.inner_text())

    # a new record's form
    watch.visit(page, f"/{CASES}.do?sys_id=-1")
    assert page.get_by_role("button", name="Create").is_visible()

    # a related list pages in place
    watch.visit(page, f"/customer_account.do?sys_id={account_with_cases['sys_id']}")
    cases = page.locator(".related").filter(has_text="Cases")
    assert cases.locator(".pager span").first.inner_text() == "1–10 of 25"
    cases.get_by_role("link", name="Next ›").click()
    page.locator(".related .pager span", has_text="11–20 of 25").wait_for()
    watch.assert_clean(page)


def test_the_definitions_editor_works_under_the_policy(watch):
    page = watch.sign_in("admin")
    page.get_by_role("link", name="Definitions", exact=True).click()
    page.get_by_role("link", name="tables/customer_account.yaml", exact=True).click()
    # (never page.wait_for_function: Playwright evaluates its predicate with eval, which the policy refuses)
    page.locator(".CodeMirror").wait_for()  # built in the same task that sets window.definitionEditor
    assert page.locator(".CodeMirror").is_visible() and not page.locator("#definition-text").is_visible()
    line = page.evaluate("definitionEditor.getValue().split('\\n').findIndex(l => l.includes('primary_contact:'))")
    end = page.evaluate(f"definitionEditor.getLine({line}).length")
    page.locator(".CodeMirror-code > div").nth(line).click()  # a real click and real typing
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    page.keyboard.type("x")
    assert page.evaluate(f"definitionEditor.getLine({line})").endswith("customer_contactx}")
    assert page.evaluate(f"definitionEditor.getLine({line}).length") == end + 1
    problem = page.locator("#problems li").first
    problem.wait_for()
    assert "reference to unknown table 'customer_contactx'" in problem.inner_text()
    marker = page.locator(".CodeMirror-lint-marker-error")
    assert marker.count() == 1
    marker.hover()  # the lint tooltip, positioned by script
    tooltip = page.locator(".CodeMirror-lint-tooltip").last
    tooltip.wait_for()
    assert "customer_contactx" in tooltip.inner_text()
    page.keyboard.press("Backspace")
    page.locator("#problems[data-state=valid]").wait_for()
    assert page.locator("#problems li").count() == 0

    # the review of a change: its diff, then the history
    page.keyboard.press("End")
    page.keyboard.type("  # checked")
    page.get_by_role("button", name="Review changes…").click()
    page.wait_for_url(re.compile(r"/ui/definitions/review$"))
    assert "# checked" in page.locator("pre.diff").inner_text()
    watch.visit(page, "/ui/definitions/history")
    watch.assert_clean(page)


def test_admin_pages_pass_the_policy(watch):
    page = watch.sign_in("admin")
    for path, heading in [
        ("/ui/properties", "System properties"),
        ("/ui/properties/sn_customerservice.parent_child_case_sync/declaration", "Declaration of"),
        ("/ui/definitions", "Definitions"),
        (f"/ui/layout/{CASES}/list", "Columns of the Case list"),
        (f"/ui/layout/{CASES}/form", "Form of Case"),
        (f"/ui/layout/{CASES}/field", "Add a field to Case"),
        ("/ui/reports", "Reports"),
        ("/ui/reports/new", "New report"),
        ("/ui/dashboards/new", "New dashboard"),
    ]:
        watch.visit(page, path)
        assert heading in page.locator("h1").inner_text(), path
    watch.visit(page, f"/ui/layout/{CASES}/list")
    first = page.locator(".layout-items li").first.locator("code").inner_text()
    page.locator(".layout-items li").first.get_by_role("button", name=re.compile("down")).click()
    assert page.locator(".layout-items li").nth(1).locator("code").inner_text() == first
    watch.visit(page, "/ui/properties")
    form = page.locator("form#sn_customerservice\\.parent_child_case_sync")
    form.get_by_role("checkbox").check()
    form.get_by_role("button", name="Save").click()
    assert "applies from the next request" in page.get_by_role("status").first.inner_text()
    watch.assert_clean(page)


def test_recipients_list_preview_import_script_and_job_pass_the_policy(watch, runtime, tmp_path):
    from caseloom.actions import run_action
    from caseloom.jobs.registry import execute_job
    from caseloom.memberlists import lists_for

    with runtime.transaction() as service:
        list_id = service.insert(
            "sn_publications_recipients_list", {"name": "Everyone", "type": "accounts", "conditions": "active=true"}
        )["sys_id"]
        lists_for(service, "sn_publications_recipients_list").refresh(list_id)
        major = service.insert(
            CASES, {"short_description": "Outage", "state": 10, "major_case_state": "proposed", "recipient_list": list_id}
        )
        run_action(service, CASES, major["sys_id"], "accept_major_case", {})  # a direct candidate becomes the major case
    page = watch.sign_in("admin")
    watch.visit(page, f"/sn_publications_recipients_list.do?sys_id={list_id}")
    page.get_by_role("button", name="Preview").click()
    assert "records identified by the condition" in page.locator(".preview").inner_text()
    page.get_by_role("link", name="Build the condition").click()
    page.wait_for_url(re.compile(r"customer_account_list\.do\?.*condition_for="))
    page.locator(".use-condition").wait_for()  # the click only waits for the navigation to start
    assert page.locator(".use-condition").is_visible()
    page.go_back()
    csv_file = tmp_path / "members.csv"
    csv_file.write_text("number\nACCT0000000\n")
    page.get_by_label("Import a CSV").set_input_files(str(csv_file))
    page.get_by_role("button", name="Import", exact=True).click()
    assert "1 rejected" in page.get_by_role("status").inner_text()
    watch.visit(page, f"/ui/script/sn_publications_recipients_list/{list_id}")
    page.get_by_label("Script").fill('log("hello")\nresult = [a["sys_id"] for a in records.query("customer_account")]\n')
    page.get_by_role("button", name="Run preview").click()
    assert "hello" in page.locator("pre.log").inner_text()

    # a background action's progress polls itself as a fragment
    watch.visit(page, f"/{CASES}.do?sys_id={major['sys_id']}")
    page.get_by_role("button", name="Create child cases…").click()
    dialog = page.get_by_role("dialog", name="Create child cases")
    dialog.get_by_label("Message to the affected customers").fill("We are on it")
    dialog.get_by_role("button", name="Create child cases").click()
    page.get_by_role("button", name="Yes, create child cases").click()  # the confirmation with its numbers
    job = page.locator("section.job")
    execute_job(runtime, job.get_attribute("id").removeprefix("job-"))
    page.locator("section.job h2", has_text="done").wait_for()
    watch.assert_clean(page)


def test_delete_asks_first_without_inline_script(watch, runtime):
    with runtime.transaction() as service:
        case = service.insert(CASES, {"short_description": "Delete me", "state": 1})
    page = watch.sign_in("admin")
    watch.visit(page, f"/{CASES}.do?sys_id={case['sys_id']}")
    asked = []

    def answer(dialog, accept: bool):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    page.get_by_role("button", name="Delete").click()
    page.wait_for_timeout(300)
    assert asked == ["Delete this record?"]
    assert page.url.endswith(case["sys_id"])
    with runtime.transaction() as service:
        assert service.get(CASES, case["sys_id"]) is not None  # "no" kept it
    page.once("dialog", lambda d: answer(d, True))
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(rf"{CASES}_list\.do"))
    assert asked == ["Delete this record?"] * 2
    with runtime.transaction() as service:
        assert service.get(CASES, case["sys_id"]) is None
    watch.assert_clean(page)
