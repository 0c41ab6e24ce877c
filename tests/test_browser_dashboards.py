"""Dashboards in a real browser (Chromium, driven by Playwright): the support manager and the major issue
manager land on their dashboard, every report card loads, a bar of a chart opens the list of exactly the
records it counts (by mouse and by keyboard), the date range reloads the dashboard with every card, a
closed case leaves the backlog and counts in the time to resolve, and a chart's labels can be read."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
from playwright.sync_api import expect

import test_browser
from caseloom.actions import run_action
from caseloom.query import parse_encoded

# The browser, the live server (of the `app` fixture) and the sign-in of the agent UI's browser tests.
browser, server, login = test_browser.browser, test_browser.server, test_browser.login
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

CASE = "sn_customerservice_case"
CARDS = "section.report-card"
BACKLOG = "#report-backlog_by_state_and_priority"
CHART_LINK = "svg.chart a"


def all_cards_loaded(page) -> None:
    """Wait until htmx has swapped every card's report in: no "Loading…" left, a heading in each."""
    cards = page.locator(CARDS)
    expect(cards.first).to_be_visible()
    expect(page.locator(f"{CARDS} .loading")).to_have_count(0, timeout=test_browser.TIMEOUT_MS)
    expect(page.locator(f"{CARDS} > h2")).to_have_count(cards.count())
    expect(page.locator(f"{CARDS} [role=alert]")).to_have_count(0)  # "This report cannot be shown: ..."


def value_of(label: str) -> int:
    """The count a mark's label ends with: "Open, 1 - Critical: 12" is 12."""
    return int(re.fullmatch(r".*: ([\d,]+)", label)[1].replace(",", ""))


def list_total(page) -> int:
    page.wait_for_url(re.compile(rf"/{CASE}_list\.do\?sysparm_query="))
    return int(page.locator(".pager .total").inner_text())


def test_the_manager_lands_on_the_dashboard_and_a_bar_opens_its_records(login, server):
    page = login("manager")
    expect(page.get_by_role("heading", level=1)).to_have_text("Customer service")
    all_cards_loaded(page)
    assert page.locator(CARDS).count() == 6
    backlog = page.locator(BACKLOG)
    expect(backlog.get_by_role("heading", level=2)).to_have_text("Backlog by state and priority")
    bars = backlog.locator(CHART_LINK)
    assert bars.count() > 1 and backlog.locator(f"{CHART_LINK} rect").count() == bars.count()
    bar = bars.last
    expected = value_of(bar.get_attribute("aria-label"))
    assert expected > 0
    bar.click()
    assert list_total(page) == expected


def test_the_major_issue_manager_lands_on_major_issues(login, server):
    page = login("mim")
    expect(page.get_by_role("heading", level=1)).to_have_text("Major issues")
    all_cards_loaded(page)
    titles = page.locator(f"{CARDS} > h2").all_inner_texts()
    assert titles == ["Open major cases and candidates", "Children of each major case by state",
                      "Customers told through a child case", "Notifications sent, waiting and failed",
                      "Time from acceptance to every customer notified", "Customers not yet notified"]


def test_a_chart_is_reached_and_opened_by_keyboard(login, server):
    page = login("manager")
    all_cards_loaded(page)
    backlog = page.locator(BACKLOG)
    backlog.get_by_role("heading", level=2).get_by_role("link").focus()
    page.keyboard.press("Tab")  # from the card's title, the next stop is the chart's first bar
    first = backlog.locator(CHART_LINK).first
    assert first.evaluate("e => e === document.activeElement")
    expected = value_of(first.get_attribute("aria-label"))
    page.keyboard.press("Enter")
    assert list_total(page) == expected


def test_the_date_range_reloads_every_card(login, server):
    page = login("manager")
    all_cards_loaded(page)
    assert page.get_by_label("Date range").input_value() == "30"
    page.get_by_label("Date range").select_option(label="All time")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"\?range=all$"))
    all_cards_loaded(page)
    assert page.get_by_label("Date range").input_value() == "all"
    for link in page.locator(f"{CARDS} > h2 a").all():
        assert link.get_attribute("href").endswith("?range=all")
    expect(page.locator("#report-average_time_to_resolve")).to_contain_text("all time")
    # all time: from the first case's opening to today (the demo's cases were opened over 60 days); the
    # busiest day's point opens its cases
    points = page.locator(f"#report-new_cases_per_day {CHART_LINK}")
    counts = [value_of(label) for label in points.evaluate_all("marks => marks.map(m => m.getAttribute('aria-label'))")]
    expected = max(counts)
    assert expected > 0
    points.nth(counts.index(expected)).click()
    assert list_total(page) == expected


def test_a_closed_case_leaves_the_backlog_and_counts_in_the_time_to_resolve(login, server, runtime):
    with runtime.transaction() as service, service.by_definitions():
        case = service.query(CASE, parse_encoded("state=10^ORDERBYnumber"), ["sys_id", "number"], 1)[0]
        run_action(service, CASE, case["sys_id"], "close_case", {"close_notes": "Replaced the disk"})
    page = login("manager")
    all_cards_loaded(page)
    resolved = page.locator("#report-average_time_to_resolve .score a").get_attribute("href")
    backlog = page.locator(BACKLOG).get_by_role("link", name="Open the list").get_attribute("href")
    page.goto(f"{server}{backlog}%5Enumber%3D{case['number']}")  # the backlog's own records, this case alone
    in_backlog = list_total(page)
    page.goto(f"{server}{resolved}%5Enumber%3D{case['number']}")  # the records the time to resolve measures
    measured = list_total(page)
    assert in_backlog == 0 and measured == 1, (
        f"{case['number']} closed: still {in_backlog} in the backlog, {measured} in the time to resolve")


def test_the_labels_of_a_chart_do_not_overlap(login, server):
    page = login("manager")
    all_cards_loaded(page)
    for chart in page.locator("svg.chart").all():
        boxes = [t.bounding_box() for t in chart.locator("text.category").all()]
        rows: dict[float, list[dict]] = {}
        for box in boxes:
            rows.setdefault(round(box["y"]), []).append(box)
        for row in rows.values():
            row.sort(key=lambda b: b["x"])
            for left, right in pairwise(row):
                assert left["x"] + left["width"] <= right["x"], (
                    f"{chart.get_attribute('aria-label')}: labels overlap at x={right['x']:.0f}: "
                    f"{chart.locator('text.category').all_text_contents()}")
