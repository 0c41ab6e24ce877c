"""Accessibility: axe-core (from npm, ui/node_modules/axe-core) reports no WCAG 2.0/2.1 A or AA
violation on any kind of page, in a real browser (Debian's Chromium, driven by Playwright)
against a real server with the demo data.

axe is added to each page as an init script (Playwright injects it through the DevTools protocol,
which the Content-Security-Policy does not govern), so every page is checked as users get it,
under its real policy, with nothing loosened. Each page is a case of its own: a failure names the
page, and for each violated rule its id, impact, help text and the selectors of the elements."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import test_browser
import test_browser_dashboards
from conftest import ROOT

browser, server = test_browser.browser, test_browser.server
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

AXE = ROOT / "ui" / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
SHOWN = 5  # elements listed per violated rule
CASES = "sn_customerservice_case"
LISTS = "sn_publications_recipients_list"
RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target.join(" "), summary: n.failureSummary}))}));
}"""


def sign_in(browser, server: str, user: str | None):
    """A page with axe loaded in every document, signed in as `user` (None: nobody), on no page yet.
    The sign-in is the form's own two requests, made with the page's cookies: the form is drawn and
    sent in a browser by the tests of the sign-in page, and here it cost half of each check's time."""
    assert AXE.is_file(), f"{AXE} is missing: install the UI packages (`make ui`, or `npm install` in ui/)"
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.add_init_script(path=str(AXE))  # from the next document on: the blank one has nothing to check
    page.set_default_timeout(test_browser.TIMEOUT_MS)
    if user is not None:
        form = context.request.get(f"{server}/login").text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        answer = context.request.post(f"{server}/login", max_redirects=0,
                                      form={"user_name": user, "user_password": user, "csrf_token": token})
        assert answer.status == 302, answer.text()
    return page


def violations(page) -> list[dict]:
    return page.evaluate(RUN_AXE, TAGS)


def explain(found: list[dict]) -> str:
    """One paragraph per violated rule: what, how bad, how to fix, and where."""
    lines = []
    for v in found:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} <{v['url']}>")
        for node in v["nodes"][:SHOWN]:
            summary = " / ".join(s.strip() for s in (node["summary"] or "").splitlines()[1:] if s.strip())
            lines.append(f"    {node['target']}: {summary}")
        if len(v["nodes"]) > SHOWN:
            lines.append(f"    ... and {len(v['nodes']) - SHOWN} more")
    return "\n".join(lines)


# -- the records the pages show --------------------------------------------------------------------

def recipients_list(service) -> str:
    from caseloom.memberlists import lists_for

    list_id = service.insert(LISTS, {"name": "Everyone", "type": "accounts", "conditions": "active=true"})["sys_id"]
    lists_for(service, LISTS).refresh(list_id)
    return list_id


def major_case(runtime) -> dict:
    """An accepted major case with a recipients list, work notes and a history of changes."""
    with runtime.transaction() as service, service.by_definitions():
        list_id = recipients_list(service)
        major = service.insert(CASES, {"short_description": "Outage in Frankfurt", "state": 10,
                                       "major_case_state": "accepted", "recipient_list": list_id})
        service.update(CASES, major["sys_id"], {"priority": 1, "work_notes": "Storage cluster down"})
    return {"major": major["sys_id"], "list": list_id}


def with_job(runtime) -> dict:
    """The major case with a running create_child_cases job; `finish` ends it (3 children made)."""
    from caseloom.jobs.progress import claim_job, create_job, finish_job, report_progress

    data = major_case(runtime)
    with runtime.engine.begin() as conn:
        job = create_job(conn, runtime.storage, "action:create_child_cases", created_by="admin",
                         target_table=CASES, target_sys_id=data["major"])
        claim_job(conn, runtime.storage, job, "axe-worker")
        report_progress(conn, runtime.storage, job, done=1, total=3)

    def finish():
        with runtime.engine.begin() as conn:
            finish_job(conn, runtime.storage, job, "3 child records created", done=3, total=3)

    return data | {"finish": finish}


def a_case(runtime) -> dict:
    from caseloom.query import parse_encoded

    with runtime.transaction() as service:
        rows = service.query(CASES, parse_encoded("state=10^accountISNOTEMPTY^parentISEMPTY^major_case_stateISEMPTY"),
                             ["sys_id", "account"], 1)
    return {"case": rows[0]["sys_id"], "account": rows[0]["account"]}


# -- the pages -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    """A kind of page: who looks at it, the records it needs, and how to get there (and open it up)."""

    name: str
    user: str | None
    visit: Callable  # (page, server, data) -> the status of the page's answer
    data: Callable = lambda runtime: {}  # (runtime) -> dict
    status: int = 200  # the status of the answer to the page's first request


def go(path: str, then: Callable | None = None):
    def visit(page, server, data):
        status = page.goto(server + path.format(**data)).status
        if then is not None:
            then(page, server, data)
        return status
    return visit


def open_filter(page, server, data):
    page.locator("#filter summary").click()
    page.locator("#filter .filter-row").first.wait_for()


def open_history(page, server, data):
    page.locator(".history summary").click()


def editor_ready(page, server, data):
    page.locator(".CodeMirror").wait_for()


def review_a_change(page, server, data):
    page.locator(".CodeMirror").wait_for()
    page.evaluate("definitionEditor.setValue(definitionEditor.getValue() + '# reviewed\\n')")
    page.get_by_role("button", name="Review changes…").click()
    page.wait_for_url(re.compile(r"/ui/definitions/review$"))


def run_script_preview(page, server, data):
    page.get_by_label("Script").fill('result = [a["sys_id"] for a in records.query("customer_account")]\n')
    page.get_by_role("button", name="Run preview").click()
    page.get_by_role("status").first.wait_for()


def build_a_report(page, server, data):
    """The report builder with a table chosen (redrawn by htmx), a field to group by and its preview."""
    page.get_by_label("Table").select_option(label="Case")
    page.get_by_label("Group by").select_option(label="Priority")
    page.get_by_label("Name").fill("cases_by_priority")
    page.get_by_label("Title").fill("Cases by priority")
    page.get_by_role("button", name="Preview").click()
    page.locator(".report-preview svg.chart").wait_for()


def import_members(page, server, data):
    page.get_by_label("Import a CSV").set_input_files(files=[{"name": "members.csv", "mimeType": "text/csv",
                                                              "buffer": b"number\nACCT0000000\n"}])
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_url(re.compile(r"/ui/members/.*/import$"))


def job_running(page, server, data):
    page.locator("section.job h2", has_text="running").wait_for()


def job_finished(page, server, data):
    """The panel polls itself: the page shows the job done once it ends."""
    job_running(page, server, data)
    data["finish"]()
    page.locator("section.job h2", has_text="done").wait_for()


def first_history_entry(page, server, data):
    page.locator("main a[href*='/ui/definitions/history/']").first.click()
    page.wait_for_url(re.compile(r"/ui/definitions/history/\d+$"))


def with_errors(page, server, data):
    """The form sent back with its errors at the fields."""
    page.get_by_label("Short description").fill("")
    page.get_by_role("button", name="Create").click()
    page.locator(".field-error").first.wait_for()


def open_dialog(page, server, data):
    page.get_by_role("button", name="Propose major case…").click()
    page.get_by_role("dialog", name="Propose major case").wait_for()


def open_bulk_edit(page, server, data):
    page.locator("table.list tbody input[type=checkbox]").first.check()
    page.locator("#bulk summary").click()
    page.get_by_label("Field").last.select_option(label="Priority")
    page.locator("#bulk-value").wait_for()


def impersonate_agent(page, server, data):
    """From the impersonation page to the agent's home page, with the banner."""
    page.get_by_role("button", name="Impersonate Alex Agent").click()
    page.wait_for_url(f"{server}/")
    page.get_by_role("button", name="Stop impersonating").wait_for()


def create_children_confirmation(page, server, data):
    page.get_by_role("button", name="Create child cases…").click()
    dialog = page.get_by_role("dialog", name="Create child cases")
    dialog.get_by_label("Message to the affected customers").fill("We are on it")
    dialog.get_by_role("button", name="Create child cases").click()
    page.locator(".confirm-count").wait_for()


def open_picker(page, server, data):
    page.get_by_role("button", name="Add child cases…").click()
    page.get_by_role("dialog", name="Add child cases").locator(".pick-rows input[type=checkbox]").first.wait_for()


def hover_reference(page, server, data):
    page.locator("table.list tbody .ref-link a").first.hover()
    page.locator(".ref-preview:not(:empty)").first.wait_for()


def reports_loaded(page, server, data):
    """Every report card of the dashboard swapped in by htmx."""
    test_browser_dashboards.all_cards_loaded(page)


def open_data_table(page, server, data):
    page.locator(".data-table summary").click()
    page.locator(".data-table table").wait_for()


def with_children(runtime) -> dict:
    """The major case with three child cases (one needing attention) and a finished creation job."""
    from caseloom.query import parse_encoded

    data = major_case(runtime)
    with runtime.transaction() as service, service.by_definitions():
        kids = service.query(CASES, parse_encoded("stateIN1,10^parentISEMPTY^major_case_stateISEMPTY"), ["sys_id"], 3)
        for kid in kids:
            service.update(CASES, kid["sys_id"], {"parent": data["major"]})
        service.update(CASES, kids[0]["sys_id"], {"needs_attention": True})
    return data


def customer_case(runtime) -> dict:
    """The portal user `customer`'s first case, resolved (a solution to accept or reject), with a
    comment, a file, an e-mail and a major issue's public update on it."""
    from caseloom.demo import demo_sys_id
    from caseloom.query import parse_encoded

    with runtime.transaction() as service, service.by_definitions():
        case = service.query(CASES, parse_encoded(f"contact={demo_sys_id('contacts', 0)}"), ["sys_id"], 1)[0]["sys_id"]
        major = service.insert(CASES, {"short_description": "Storage outage", "major_case_state": "accepted"})
        service.update(CASES, major["sys_id"], {"comments": "Engineers are restoring the array"})
        service.update(CASES, case, {"parent": major["sys_id"], "comments": "We restarted the service",
                                     "state": 6, "resolution_code": "solved_remotely", "close_notes": "Restarted"})
        service.insert("sys_email", {"recipients": "contact1@example.com", "subject": "Your case was updated",
                                     "body": "Hello", "state": "sent", "type": "sent", "target_table": CASES,
                                     "instance": case})
    return {"case": case}


def status_scene(runtime) -> dict:
    from test_status import scene

    scene(runtime)
    return {}


PAGES = [
    Page("login", None, go("/login")),
    Page("home", "agent", go("/")),
    Page("list with the filter open", "agent", go(f"/{CASES}_list.do", open_filter)),
    Page("list with a filter applied", "agent", go(f"/{CASES}_list.do?sysparm_query=state=10^priority<=2")),
    Page("list with the bulk edit open", "agent", go(f"/{CASES}_list.do?sysparm_query=state=10", open_bulk_edit)),
    Page("new record", "agent", go(f"/{CASES}.do?sys_id=-1")),
    Page("new record with errors", "agent", go(f"/{CASES}.do?sys_id=-1", with_errors)),
    Page("record with an action's dialog open", "agent", go(f"/{CASES}.do?sys_id={{case}}", open_dialog), a_case),
    Page("record with activity, history and related lists", "agent",
         go(f"/{CASES}.do?sys_id={{major}}", open_history), major_case),
    Page("account with related lists", "agent", go("/customer_account.do?sys_id={account}"), a_case),
    Page("recipients list with its members panel", "admin", go(f"/{LISTS}.do?sys_id={{list}}"), major_case),
    Page("record with a running job", "admin", go(f"/{CASES}.do?sys_id={{major}}", job_running), with_job),
    Page("record with a finished job", "admin", go(f"/{CASES}.do?sys_id={{major}}", job_finished), with_job),
    Page("an action's own page", "agent", go(f"/ui/action/{CASES}/{{case}}/propose_major_case"), a_case),
    Page("properties", "admin", go("/ui/properties")),
    Page("a property's declaration", "admin", go("/ui/properties/sn_customerservice.parent_child_case_sync/declaration")),
    Page("definitions", "admin", go("/ui/definitions")),
    Page("definition editor", "admin", go("/ui/definitions/file/tables/customer_account.yaml", editor_ready)),
    Page("definition review", "admin", go("/ui/definitions/file/tables/customer_account.yaml", review_a_change)),
    Page("definition history", "admin", go("/ui/definitions/history")),
    Page("definition history entry", "admin", go("/ui/definitions/history", first_history_entry)),
    Page("list layout", "admin", go(f"/ui/layout/{CASES}/list")),
    Page("form layout", "admin", go(f"/ui/layout/{CASES}/form")),
    Page("new field", "admin", go(f"/ui/layout/{CASES}/field")),
    Page("script editor", "admin", go(f"/ui/script/{LISTS}/{{list}}", run_script_preview), major_case),
    Page("import report", "admin", go(f"/{LISTS}.do?sys_id={{list}}", import_members), major_case),
    Page("reports", "manager", go("/ui/reports")),
    Page("report builder with a preview", "admin", go("/ui/reports/new", build_a_report)),
    Page("dashboard builder", "admin", go("/ui/dashboards/support_manager/edit")),
    Page("impersonation", "admin", go("/ui/impersonate")),
    Page("impersonation search", "admin", go("/ui/impersonate?q=ma")),
    Page("a page while impersonating", "admin", go("/ui/impersonate", impersonate_agent)),
    Page("major case workspace with children", "manager", go(f"/{CASES}.do?sys_id={{major}}"), with_children),
    Page("confirmation with counts", "manager", go(f"/{CASES}.do?sys_id={{major}}", create_children_confirmation),
         major_case),
    Page("picker of cases to add", "agent", go(f"/{CASES}.do?sys_id={{major}}", open_picker), major_case),
    Page("picker on the action's own page", "agent", go(f"/ui/action/{CASES}/{{major}}/add_child_cases"), major_case),
    Page("list grouped by state", "agent", go(f"/{CASES}_list.do?sysparm_query=active=true&sysparm_group_by=state")),
    Page("major cases list view", "manager",
         go(f"/{CASES}_list.do?sysparm_query=major_case_state=accepted&sysparm_view=major_case"), with_children),
    Page("list with a reference preview", "agent", go(f"/{CASES}_list.do?sysparm_query=accountISNOTEMPTY",
                                                      hover_reference)),
    Page("outbox", "admin", go("/sys_email_list.do?sysparm_query=state=ready")),
    Page("system status with jobs, a lost one among them", "admin", go("/ui/status"), status_scene),
    Page("portal: my cases", "customer", go("/csm"), customer_case),
    Page("portal: a case with its activity and a solution to accept", "customer", go("/csm/record/{case}"),
         customer_case),
    Page("portal: a new case", "customer", go("/csm/new")),
    Page("portal: an account admin's cases", "customer_admin", go("/csm")),
    Page("support manager's dashboard", "manager", go("/", reports_loaded)),
    Page("major issue manager's dashboard", "mim", go("/", reports_loaded), with_children),
    Page("a report's own page with its data table", "manager",
         go("/report/backlog_by_state_and_priority?range=all", open_data_table)),
    Page("not found", "agent", go("/no_such_table_list.do"), status=404),
    Page("forbidden", "agent", go("/ui/properties"), status=403),
]


@pytest.mark.parametrize("kind", PAGES, ids=[p.name for p in PAGES])
def test_axe_finds_no_violation(kind: Page, browser, server, runtime):
    data = kind.data(runtime)
    page = sign_in(browser, server, kind.user)
    try:
        assert kind.visit(page, server, data) == kind.status
        found = violations(page)
        assert found == [], f"axe on {kind.name} ({page.url}):\n{explain(found)}"
    finally:
        page.context.close()


def test_axe_reports_what_it_finds(browser, server):
    """The check itself: an unlabelled field and low-contrast text are reported, with where they are."""
    page = sign_in(browser, server, "agent")
    try:
        page.goto(f"{server}/")
        page.evaluate("""() => {
            const main = document.querySelector("main");
            const input = document.createElement("input"); input.id = "unlabelled"; main.append(input);
            const pale = document.createElement("p"); pale.id = "pale"; pale.textContent = "Hard to read";
            pale.classList.add("axe-pale"); main.append(pale);
            document.styleSheets[0].insertRule(".axe-pale { color: #ccc; }");
        }""")
        found = {v["id"]: v for v in violations(page)}
        assert set(found) == {"label", "color-contrast"}, explain(list(found.values()))
        assert [n["target"] for n in found["label"]["nodes"]] == ["#unlabelled"]
        assert [n["target"] for n in found["color-contrast"]["nodes"]] == ["#pale"]
        assert "#unlabelled: " in explain([found["label"]])
    finally:
        page.context.close()


def test_the_definition_editor_is_named_and_reachable_by_keyboard(browser, server):
    page = sign_in(browser, server, "admin")
    try:
        page.goto(f"{server}/ui/definitions/file/tables/{CASES}.yaml")  # longer than the editor is high
        page.locator(".CodeMirror").wait_for()
        page.get_by_text("YAML", exact=True).click()  # the label focuses the editor
        typing = page.get_by_role("textbox", name="YAML")
        assert typing.evaluate("e => e === document.activeElement")
        page.keyboard.press("Tab")  # Tab indents
        assert page.evaluate("definitionEditor.getLine(0)").startswith("  ")
        page.keyboard.press("Escape")
        page.keyboard.press("Tab")  # Esc then Tab leaves the editor, for its scrolling view, a named region
        region = page.get_by_role("region", name="YAML, scrolling view")
        assert region.evaluate("e => e === document.activeElement")
        page.keyboard.press("PageDown")
        for _ in range(50):  # the keyboard scrolls it (smoothly: the position moves over a few frames)
            if region.evaluate("e => e.scrollTop") > 0:
                break
            page.wait_for_timeout(100)
        assert region.evaluate("e => e.scrollTop") > 0
    finally:
        page.context.close()
