"""The whole Major Issue Management story in Chromium, as a customer-service team does it, reading and
choosing only labels and display values (nobody types a code or a sys_id): propose, accept (landing on
the new major case), build a recipients list with a two-row condition, attach it by its name, add child
cases by ticking them, create a child case per customer after a confirmation with counts, watch the
workspace count them live, undo it and create them again, sync a comment, close; then the same actions
with JavaScript off. (Stopping a running creation midway: test_browser_jobs.py, with and without it.)"""

from __future__ import annotations

import re

import pytest

import test_browser
from caseloom.jobs.registry import execute_job

browser, server, settled = test_browser.browser, test_browser.server, test_browser.settled
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

CASE = "sn_customerservice_case"
CASE_FORM = re.compile(rf"/{CASE}\.do\?sys_id=[0-9a-f]{{32}}$")


@pytest.fixture
def people(browser, server):
    """A browser page per person, signed in; `script=False` for one with JavaScript off."""
    contexts = []

    def sign_in(user: str, script: bool = True):
        context = browser.new_context(viewport={"width": 1300, "height": 900}, java_script_enabled=script)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(test_browser.TIMEOUT_MS)
        page.goto(f"{server}/login")
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(user)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server}/")
        return page

    yield sign_in
    for context in contexts:
        context.close()


def module(page, label: str) -> None:
    page.get_by_role("navigation", name="Applications").get_by_role("link", name=label, exact=True).click()
    page.wait_for_load_state()


def message(page) -> str:
    return page.locator("p.flash").first.inner_text()


def open_row(page, text: str) -> None:
    """Open the record of the list row that shows `text` (its first link, the number)."""
    page.locator("table.list tbody tr", has_text=text).first.locator("a").first.click()
    page.wait_for_url(CASE_FORM)


def run_dialog(page, action: str, fill: dict | None = None, select: dict | None = None, tick: list | None = None):
    page.get_by_role("button", name=f"{action}…").click()
    dialog = page.get_by_role("dialog", name=action)
    for label, value in (fill or {}).items():
        dialog.get_by_label(label).fill(value)
    for label, option in (select or {}).items():
        dialog.get_by_label(label).select_option(label=option)
    for label in tick or []:
        dialog.get_by_label(label, exact=True).check()
    dialog.get_by_role("button", name=action, exact=True).click()
    page.wait_for_load_state()


def workspace_total(page) -> int:
    return int(page.locator("#ws-children-total").inner_text())


def test_the_major_issue_story_in_words_with_javascript(people, runtime, server):
    # an agent proposes a customer's open case
    agent = people("agent")
    module(agent, "Open cases")
    case_row = agent.locator("table.list tbody tr").filter(has=agent.locator("td")).first
    number = case_row.locator("a").first.inner_text()
    open_row(agent, number)
    run_dialog(agent, "Propose major case", fill={"Why is this a major issue?": "Storage in Frankfurt is read-only"})
    assert message(agent) == f"Propose major case: done on case {number}."

    # the major issue manager finds it among the candidates, with who proposed it and why, and accepts it
    mim = people("mim")
    module(mim, "Candidates")
    row = mim.locator("table.list tbody tr", has_text=number)
    assert "Storage in Frankfurt is read-only" in row.inner_text() and "Alex Agent" in row.inner_text()
    open_row(mim, number)
    candidate_url = mim.url
    run_dialog(mim, "Accept major case", fill={"Notes": "Confirmed by the storage team"})
    assert mim.url != candidate_url and CASE_FORM.search(mim.url)  # landed on the new major case
    major_number = re.search(r"Created case (CS\d+)", message(mim)).group(1)
    assert mim.locator("h1").inner_text().endswith(major_number)
    assert "Major case at a glance" in mim.locator("#workspace").inner_text()
    major_url = mim.url

    # a list author builds the affected customers: Industry is one of Technology, Finance OR Country is DE
    author = people("author")
    module(author, "Recipients lists")
    author.get_by_role("link", name="New").click()
    author.get_by_label("Name").fill("Frankfurt storage customers")
    author.get_by_label("Type").select_option(label="Accounts")
    author.get_by_role("button", name="Create").click()
    author.get_by_role("link", name="Build the condition").click()
    if not author.locator("#filter").evaluate("e => e.open"):
        author.locator("#filter summary").click()
    author.get_by_label("Field").first.select_option(label="Industry")
    settled(author, "#filter-row-0[data-field=industry]")
    author.get_by_label("Operator").first.select_option(label="is one of")
    settled(author, "#filter-row-0[data-op=in]")
    author.get_by_label("Value").first.select_option(label=["Technology", "Finance"])
    author.get_by_role("button", name="+ OR").click()
    row = author.locator("#filter-row-1")
    settled(author, "#filter-row-1")
    row.get_by_label("Field").select_option(label="Country")
    settled(author, "#filter-row-1[data-field=country]")
    row.get_by_label("Value").fill("DE")
    author.get_by_role("button", name="Run filter").click()
    assert author.locator(".filter-sentence").inner_text() == "Industry is one of Technology, Finance or Country is DE"
    identified = int(author.locator(".use-condition strong").inner_text())
    author.get_by_role("button", name="Use this filter as the condition").click()
    assert "Condition saved" in message(author)
    author.get_by_role("button", name="Refresh", exact=True).click()  # the members, from the condition
    assert "Refresh: done" in message(author), message(author)
    assert f"Members {identified}" in re.sub(r"\s+", " ", author.locator("#members-title").inner_text())

    # the manager attaches the list by its name, ticks child cases, and creates a child per customer
    mim.goto(major_url)
    picker = mim.get_by_role("combobox", name="Recipients list")
    picker.fill("Frankfurt storage")
    mim.get_by_role("option", name="Frankfurt storage customers").click()
    mim.get_by_role("button", name="Save").click()
    assert "saved" in message(mim)
    ws = mim.locator("#workspace")
    assert "Frankfurt storage customers" in ws.locator(".ws-members").inner_text()
    mim.get_by_role("button", name="Add child cases…").click()
    dialog = mim.get_by_role("dialog", name="Add child cases")
    ticks = dialog.locator(".pick-rows input[type=checkbox]")
    ticks.first.wait_for()
    labels = [ticks.nth(i).get_attribute("aria-label") or "" for i in range(2)]
    for i in range(2):
        ticks.nth(i).check()
    dialog.get_by_role("button", name="Add child cases", exact=True).click()
    assert "2 of 2 selected cases were added" in message(mim), labels
    before = workspace_total(mim)
    assert before == 3  # the case it was accepted from, and the two ticked

    run_dialog(mim, "Create child cases", fill={"Message to the affected customers": "We are restoring write access."})
    sentence = mim.locator(".confirm-count").inner_text()
    found = re.match(r"This creates (\d+) cases?", sentence)
    assert found, sentence
    made = int(found.group(1))
    assert 0 < made <= identified
    mim.get_by_role("button", name="Yes, create child cases").click()
    assert "started" in message(mim)
    job = mim.locator("section.job")
    execute_job(runtime, job.get_attribute("id").removeprefix("job-"))  # the worker's part
    mim.locator("section.job h2", has_text="done").wait_for()
    mim.locator("#ws-children-total", has_text=str(before + made)).wait_for()  # the workspace counted them live
    assert "Create child cases done" in mim.locator(".ws-timeline").inner_text()
    # its communications, drawn after the page, were kept through the workspace's refreshes and counted
    # again when the job ended: the e-mails to the new children's customers are among them
    sends = re.search(r"sends (\d+) e-mails?", sentence)
    assert sends, sentence
    mim.wait_for_function(
        "n => { const c = document.querySelector('.ws-communications');"
        " const m = c && c.innerText.match(/(\\d+) e-mails?:/); return m && Number(m[1]) >= n; }",
        arg=int(sends.group(1)))
    assert mim.locator(".ws-communications").count() == 1 and mim.locator(".ws-communications-later").count() == 0

    # the manager undoes the mass creation (nobody has touched those children yet), and it is created again
    manager = people("manager")
    manager.goto(major_url)
    noun = "case" if made == 1 else "cases"
    manager.get_by_role("link", name=f"Undo: remove the {made} {noun} it created…").click()
    assert f"Removes {made} of the {made} {noun} it created" in manager.locator("main").inner_text()
    manager.get_by_role("button", name=f"Remove {made} {noun}").click()
    assert message(manager).startswith(f"Undo create child cases: Removed {made} of {made} {noun}")
    assert workspace_total(manager) == before
    mim.reload()
    run_dialog(mim, "Create child cases", fill={"Message to the affected customers": "We are restoring write access."})
    mim.get_by_role("button", name="Yes, create child cases").click()
    execute_job(runtime, mim.locator("section.job").get_attribute("id").removeprefix("job-"))
    mim.locator("#ws-children-total", has_text=str(before + made)).wait_for()

    # a comment on the major case reaches the children's contacts: more than 10 people asks first
    mim.get_by_label("Additional comments").fill("A fix is being deployed.")
    mim.get_by_role("button", name="Save").click()
    if mim.locator(".confirm-count").count():
        assert re.search(r"sends \d+ e-mails? to \d+ recipients?", mim.locator(".confirm-count").inner_text())
        mim.get_by_role("button", name="Yes, save").click()
    assert "saved" in message(mim)
    assert re.search(r"[1-9]\d* additional comments", mim.locator(".ws-communications").inner_text())

    # closing the major case closes its open children, counted by state in the workspace
    run_dialog(mim, "Close", fill={"Close notes": "Write access restored"},
               select={"Resolution code": "Solved (Permanently)"})
    assert message(mim).startswith(f"Case {major_number} is now Closed.")
    counts = {label: int(n) for n, label in re.findall(r"(\d+) ([A-Za-z ]+)", mim.locator(".ws-counts").inner_text())}
    assert sum(counts.values()) == before + made and counts["Closed"] >= made
    assert not {"New", "Open", "Awaiting Info"} & set(counts), counts  # every open child closed with it


def test_the_major_issue_actions_work_without_javascript(people, runtime):
    agent = people("agent", script=False)
    module(agent, "Open cases")
    number = agent.locator("table.list tbody tr").first.locator("a").first.inner_text()
    open_row(agent, number)
    agent.get_by_role("button", name="Propose major case…").click()  # the action's own page
    agent.get_by_label("Why is this a major issue?").fill("Mail is down")
    agent.get_by_role("button", name="Propose major case", exact=True).click()
    assert message(agent) == f"Propose major case: done on case {number}."

    mim = people("mim", script=False)
    module(mim, "Candidates")
    open_row(mim, number)
    mim.get_by_role("button", name="Accept major case…").click()
    mim.get_by_role("button", name="Accept major case", exact=True).click()
    major_number = re.search(r"Created case (CS\d+)", message(mim)).group(1)
    assert "Major case at a glance" in mim.locator("#workspace").inner_text()

    # the recipients list by its name, typed (no type-ahead without JavaScript)
    mim.get_by_role("combobox", name="Recipients list").fill("Key accounts")
    mim.get_by_role("button", name="Save").click()
    assert "saved" in message(mim), mim.locator("main").inner_text()[:500]

    # add child cases: the action's page lists the cases that could be added, with boxes to tick
    mim.get_by_role("button", name="Add child cases…").click()
    ticks = mim.locator(".pick-rows input[type=checkbox]")
    ticks.first.check()
    mim.get_by_role("button", name="Add child cases", exact=True).click()
    assert "1 of 1 selected cases were added" in message(mim)

    # create child cases: its page, then the confirmation with its numbers, then yes
    mim.get_by_role("button", name="Create child cases…").click()
    mim.get_by_label("Message to the affected customers").fill("We are on it")
    mim.get_by_role("button", name="Create child cases", exact=True).click()
    assert re.match(r"This creates \d+ cases", mim.locator(".confirm-count").inner_text())
    mim.get_by_role("button", name="Yes, create child cases").click()
    assert "started" in message(mim)
    job = mim.locator("section.job")
    execute_job(runtime, job.get_attribute("id").removeprefix("job-"))
    mim.reload()
    assert "done" in mim.locator("section.job h2").inner_text()
    assert workspace_total(mim) > 1

    # close it, from the transition's own page
    mim.get_by_role("button", name="Close…").click()
    mim.get_by_label("Close notes").fill("Mail flows again")
    mim.get_by_label("Resolution code").select_option(label="Solved (Permanently)")
    mim.get_by_role("button", name="Close", exact=True).click()
    assert message(mim).startswith(f"Case {major_number} is now Closed.")
