"""An SLA added in a real browser (Chromium, driven by Playwright) and watched until it breaches, as the
README walks a new user through it: an administrator adds "Quick test" on cases through the generic
SLA definition form, creates a case, sees its bar in progress; the clock runs past the duration, the
tick (caseloom.timing.tick, as the worker runs it) marks it breached, and the reloaded form shows it
red and "Breached", the "Breached SLAs" list has it, and axe finds nothing to fix on the form."""

from __future__ import annotations

import re
import time

import pytest

import test_axe
import test_browser
from caseloom.timing.tick import tick

browser, server = test_browser.browser, test_browser.server
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None,
                                reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

CASE = "sn_customerservice_case"
DURATION = 4  # seconds: long enough to see the bar before it breaches on a loaded machine, short to wait for


def test_add_an_sla_in_the_browser_and_watch_it_breach(browser, server, runtime):
    page = test_axe.sign_in(browser, server, "admin")
    page.goto(f"{server}/")
    page.get_by_role("navigation", name="Applications").get_by_role("link", name="SLA definitions").click()
    page.wait_for_url(re.compile(r"/contract_sla_list\.do"))
    page.goto(f"{server}/contract_sla.do?sys_id=-1")
    page.get_by_label("Name").fill("Quick test")
    page.get_by_label("Table").select_option(label="Case")
    page.get_by_label("Duration").fill(f"{DURATION}s")
    page.get_by_label("Start condition").fill("active=true")
    page.get_by_label("Stop condition").fill("stateIN6,3")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/contract_sla\.do\?sys_id=[0-9a-f]{32}"))
    assert "SLA definition Quick test saved." in page.locator(".flash").inner_text()
    assert page.get_by_label("Duration").input_value() == f"{DURATION} Seconds"  # "4s" kept, read in words
    assert page.get_by_label("Flow").input_value() == "Case SLA flow"  # left empty: cases' default flow

    page.goto(f"{server}/{CASE}.do?sys_id=-1")
    page.get_by_label("Short description").fill("Printer on fire")
    clicked = time.monotonic()  # the case, and its SLA, start after this
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(rf"/{CASE}\.do\?sys_id=[0-9a-f]{{32}}"))
    created = time.monotonic()  # ... and before this
    number = page.locator("h1").inner_text().split()[-1]
    bar = page.locator(".slas li.sla", has=page.get_by_role("link", name="Quick test"))
    assert bar.locator(".sla-stage").inner_text() == "In progress"
    if time.monotonic() - clicked < DURATION - 1:  # seen before its time is up (a loaded machine may be late)
        assert bar.locator(".sla-time").inner_text().endswith("left")
    assert "Attached" in bar.locator(".sla-timeline").inner_text()

    time.sleep(max(DURATION + 1 - (time.monotonic() - created), 0))
    report = tick(runtime)  # what the worker does every few seconds
    assert report.by_threshold.get(("Quick test", 100)) == 1
    page.reload()
    bar = page.locator(".slas li.sla", has=page.get_by_role("link", name="Quick test"))
    assert "sla-breached" in bar.get_attribute("class")
    assert bar.locator(".sla-band").inner_text() == "Breached"
    assert re.fullmatch(r"Breached \d+ Seconds? ago", bar.locator(".sla-time").inner_text())
    assert "Breached" in bar.locator(".sla-timeline").inner_text()
    assert page.get_by_text("An SLA on this case has breached").first.is_visible()  # its flow's work note
    found = test_axe.violations(page)
    assert not found, test_axe.explain(found)

    page.get_by_role("navigation", name="Applications").get_by_role("link", name="Breached SLAs").click()
    page.wait_for_url(re.compile(r"/task_sla_list\.do"))
    row = page.locator("table.list tbody tr", has_text="Quick test")
    assert row.get_by_role("link", name=number, exact=True).count() == 1  # the case by its number, a link
    assert "In progress" in row.inner_text()


def test_repair_a_case_s_slas_from_its_form(browser, server, runtime):
    """An SLA definition added after a case was opened: the case has no bar for it until an administrator
    repairs its SLAs from the form; then it has one, attached when the case was created, and the page
    says what was done."""
    from caseloom.query import parse_encoded

    with runtime.transaction() as service:
        service.insert("contract_sla", {"name": "Added later", "collection": CASE, "duration": 7 * 24 * 3600,
                                        "start_condition": "active=true", "stop_condition": "stateIN6,3"})
        case = service.query(CASE, parse_encoded("active=true^ORDERBYnumber"), ["sys_id", "number", "sys_created_on"], 1)[0]
    page = test_axe.sign_in(browser, server, "admin")
    page.goto(f"{server}/{CASE}.do?sys_id={case['sys_id']}")
    assert page.locator(".slas li.sla", has=page.get_by_role("link", name="Added later")).count() == 0
    page.get_by_role("button", name="Repair SLAs").click()
    page.wait_for_url(re.compile(rf"/{CASE}\.do\?sys_id={case['sys_id']}#slas$"))
    flash = page.locator(".flash").inner_text()
    assert re.search(r"Repaired the SLAs of 1 case record: \d+ task SLAs? removed, \d+ made from their history\. "
                     r"Logged as SLAR\d{7}\.", flash)
    bar = page.locator(".slas li.sla", has=page.get_by_role("link", name="Added later"))
    assert bar.locator(".sla-stage").inner_text() == "In progress"
    assert f"{case['sys_created_on']:%Y-%m-%d %H:%M}" in bar.locator(".sla-timeline").inner_text()  # attached then
    found = test_axe.violations(page)
    assert not found, test_axe.explain(found)
    # the repair's log, from the System menu's All SLA repairs: what it did, and each task SLA after it
    logged = re.search(r"Logged as (SLAR\d{7})\.", flash).group(1)
    page.get_by_role("navigation", name="Applications").get_by_role("link", name="All SLA repairs").click()
    page.get_by_role("link", name=logged, exact=True).click()
    page.wait_for_url(re.compile(r"/sla_repair_log\.do\?sys_id="))
    text = page.locator("main").inner_text()
    assert "Complete" in text and "A form" in text and "Repair log entries" in text and "After repair" in text
    found = test_axe.violations(page)
    assert not found, test_axe.explain(found)
