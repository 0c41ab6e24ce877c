"""Stopping a running creation of child cases from its panel, then undoing it, in a real browser
(Debian's Chromium, driven by Playwright): with JavaScript (the panel polls itself) and without
(every step a page and a form post). The worker's part runs in the test, paused after its first
unit of work, so the Stop always lands midway."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import threading

import pytest

from caseloom.effects import lists as list_effects
from caseloom.jobs import CANCELED, execute_job, liveness, workers
from test_browser import CHROMIUM, TIMEOUT_MS, browser, server  # noqa: F401  (fixtures)
from test_job_undo import children, major_with_customers

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")
CASE = "sn_customerservice_case"


@pytest.fixture
def config(config):
    return dataclasses.replace(config, job_commit_seconds=0)  # every batch of two members commits at once


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setattr(list_effects, "SET_BATCH", 2)


def signed_in(chromium, base: str, user: str, javascript: bool):
    context = chromium.new_context(viewport={"width": 1300, "height": 900}, java_script_enabled=javascript)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(user)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    return context, page


def start_creating(page, base: str, major: str) -> str:
    """Create child cases from the record's form: its dialog (or, without JavaScript, its page), then
    the confirmation with the numbers; returns the job shown in the panel."""
    page.goto(f"{base}/{CASE}.do?sys_id={major}")
    page.get_by_role("button", name="Create child cases…").click()
    form = page.get_by_role("dialog", name="Create child cases") if page.get_by_role("dialog").count() else page
    form.get_by_label("Message to the affected customers").fill("We are on it")
    form.get_by_role("button", name="Create child cases").click()
    page.wait_for_load_state()
    yes = page.get_by_role("button", name="Yes, create child cases")
    if yes.count():
        yes.click()
    page.wait_for_url(re.compile(rf"{CASE}\.do\?sys_id={major}"))
    return page.locator("section.job").get_attribute("id").removeprefix("job-")


def paused_after_first_unit(runtime, job_id: str):
    """Run the job in a thread that waits after its first committed unit; returns (paused, resume, future)."""
    paused, resume = threading.Event(), threading.Event()

    def hold_on(service) -> None:
        if not paused.is_set():
            paused.set()
            resume.wait(30)

    runtime.commit_hooks.append(hold_on)
    return paused, resume, concurrent.futures.ThreadPoolExecutor(1).submit(execute_job, runtime, job_id)


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_stop_a_running_creation_then_undo_it(browser, server, app, javascript):  # noqa: F811
    runtime = app.extensions["caseloom"]
    major = major_with_customers(runtime)
    context, page = signed_in(browser, server, "manager", javascript)
    try:
        job_id = start_creating(page, server, major)
        panel = page.locator(f"#job-{job_id}")
        assert "Create child cases: queued" in panel.inner_text()
        paused, resume, run = paused_after_first_unit(runtime, job_id)
        try:
            assert paused.wait(30)
            page.reload()
            assert "Create child cases: running" in panel.inner_text() and "2 of 6" in panel.inner_text()
            panel.get_by_role("button", name="Stop").click()
            page.wait_for_url(re.compile(rf"{CASE}\.do\?sys_id={major}"))
        finally:
            resume.set()
        assert run.result(30).state == CANCELED
        assert "Create child cases stopped by Morgan Manager after 2 of 6." in page.get_by_role("status").first.inner_text()
        assert len(children(runtime, major)) == 2

        page.reload()
        assert "Create child cases: canceled" in panel.inner_text()
        panel.get_by_role("link", name="Undo: remove the 2 cases it created…").click()
        assert "Removes 2 of the 2 cases it created; 2 unsent e-mails to cancel." in page.locator("main").inner_text()
        page.get_by_role("button", name="Remove 2 cases").click()
        page.wait_for_url(re.compile(rf"{CASE}\.do\?sys_id={major}"))
        assert (page.get_by_role("status").first.inner_text()
                == "Undo create child cases: Removed 2 of 2 cases; 2 unsent e-mails canceled.")
        assert children(runtime, major) == [] and page.locator("section.job").count() == 0
    finally:
        context.close()


def test_system_status_follows_a_creation_to_its_end(browser, server, app):  # noqa: F811
    """An administrator watching System status sees the creation running on its case, its progress and its
    worker; when it ends, the page (which draws itself again every few seconds) lists it as done."""
    runtime = app.extensions["caseloom"]
    major = major_with_customers(runtime)
    workers.stamp(runtime.engine, runtime.storage, "elsewhere/1:42:feed", 2)  # a worker on another machine
    context, page = signed_in(browser, server, "manager", True)
    watching, status = signed_in(browser, server, "admin", True)
    try:
        job_id = start_creating(page, server, major)
        paused, resume, run = paused_after_first_unit(runtime, job_id)
        try:
            assert paused.wait(30)
            status.goto(f"{server}/ui/status")
            assert "Up: the database, the queue and 1 job worker answer." in status.get_by_role("status").inner_text()
            row = status.locator("#status-jobs + table tbody tr", has_text="Create child cases")
            assert re.search(r"Create child cases\s+Case \w+\s+Running\s+2 of 6", row.inner_text())
            bar = row.get_by_role("progressbar", name="Progress of Create child cases")
            assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("2", "6")
            assert row.get_by_role("link").get_attribute("href") == f"/{CASE}.do?sys_id={major}"
            assert f"{liveness.node().split('/')[0]}:" in row.inner_text()  # this process runs it
        finally:
            resume.set()
        assert run.result(30).state == "done"
        ended = status.locator("h3:has-text('Last ended') + table tbody tr", has_text="Create child cases")
        ended.wait_for(timeout=15_000)  # the next refresh, without a reload
        assert re.search(r"Create child cases\s+Case \w+\s+Done\s+6 of 6", ended.inner_text())
        assert "No job is queued or running." in status.locator("#system-status").inner_text()
    finally:
        watching.close()
        context.close()
