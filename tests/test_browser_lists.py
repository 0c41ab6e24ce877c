"""Lists in a real browser (Chromium, driven by Playwright): a two-row filter built from labels only,
grouped by a field with counts, saved and applied again; select all on the page, then all matching."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import test_browser

browser, server, login = test_browser.browser, test_browser.server, test_browser.login
settled = test_browser.settled
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

CASE = "sn_customerservice_case"


def query_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sysparm_query"][0]


def test_a_filter_built_from_labels_grouped_saved_and_applied_again(login, server):
    page = login("agent")
    page.goto(f"{server}/{CASE}_list.do")
    page.locator("#filter summary").click()
    # State is one of New, Open
    page.get_by_label("Field").first.select_option(label="State")
    settled(page, "#filter-row-0[data-field=state]")
    page.get_by_label("Operator").first.select_option(label="is one of")
    settled(page, "#filter-row-0[data-op=in]")  # drawn again: several values now
    page.get_by_label("Value").first.select_option(label=["New", "Open"])
    # OR Priority is 1 - Critical
    page.get_by_role("button", name="+ OR").click()
    settled(page, "#filter-row-1")
    row = page.locator("#filter-row-1")
    row.get_by_label("Field").select_option(label="Priority")
    settled(page, "#filter-row-1[data-field=priority]")
    row.get_by_label("Value").select_option(label="1 - Critical")
    page.get_by_role("button", name="Run filter").click()
    page.wait_for_url(re.compile(r"sysparm_query="))
    assert query_of(page.url) == "stateIN1,10^ORpriority=1"
    assert page.locator(".filter-sentence").inner_text() == "State is one of New, Open or Priority is 1 - Critical"
    total = int(page.locator(".pager .total").inner_text())

    # group by state: each group's label and count, adding up to the list's total
    page.get_by_label("Group by").select_option(label="State")
    page.get_by_role("button", name="Group").click()
    page.wait_for_url(re.compile(r"sysparm_group_by=state"))
    groups = page.locator("table.groups tbody tr")
    counts = {groups.nth(i).locator("a").inner_text(): int(groups.nth(i).locator(".count").inner_text())
              for i in range(groups.count())}
    assert sum(counts.values()) == total and set(counts) <= {"New", "Open", "Awaiting Info", "Resolved", "Closed",
                                                             "Canceled"}
    first_label, first_count = next(iter(counts.items()))
    page.locator("table.groups").get_by_role("link", name=first_label, exact=True).click()
    page.wait_for_url(re.compile(r"sysparm_query="))
    assert int(page.locator(".pager .total").inner_text()) == first_count
    page.go_back()
    page.wait_for_url(re.compile(r"sysparm_group_by=state"))

    # save the filter (with its grouping), clear it, apply it again from the menu
    page.locator(".saved-filters summary").click()
    page.get_by_label("Save this filter as").fill("New, open or critical")
    page.get_by_role("button", name="Save this filter").click()
    assert "Saved filter 'New, open or critical'." in page.get_by_role("status").first.inner_text()
    page.goto(f"{server}/{CASE}_list.do")
    page.locator(".saved-filters summary").click()
    page.get_by_role("link", name="New, open or critical").click()
    page.wait_for_url(re.compile(r"sysparm_group_by=state"))
    assert unquote(query_of(page.url)) == "stateIN1,10^ORpriority=1"
    assert page.locator("table.groups tbody tr").count() == len(counts)


def test_select_all_on_the_page_then_all_matching(login, server, runtime):
    with runtime.transaction() as service:
        service.insert_many(CASE, [{"short_description": f"Everything {i}", "priority": 4} for i in range(25)])
    page = login("agent")
    page.goto(f"{server}/{CASE}_list.do?sysparm_query=short_descriptionSTARTSWITHEverything")
    offer = page.locator(".select-matching")
    assert not offer.is_visible()
    page.get_by_label("Select all on this page").check()
    assert page.get_by_label("Select row 20").is_checked()
    assert "All 20 on this page are selected." in offer.inner_text()
    offer.get_by_role("button", name="Select all 25 matching the filter").click()
    assert offer.inner_text().strip() == "All 25 records matching the filter are selected."
    page.get_by_label("Field", exact=True).last.select_option(label="Priority")
    page.locator("select#bulk_value").select_option(label="2 - High")
    page.get_by_role("button", name="Apply").click()
    assert "25 of 25 records changed" in page.get_by_role("status").first.inner_text()
    page.goto(f"{server}/{CASE}_list.do?sysparm_query=short_descriptionSTARTSWITHEverything^priority=2")
    assert page.locator(".pager .total").inner_text() == "25"


def test_a_reference_row_picks_by_name(login, server):
    page = login("agent")
    page.goto(f"{server}/{CASE}_list.do")
    page.locator("#filter summary").click()
    page.get_by_label("Field").first.select_option(label="Assigned to")
    settled(page, "#filter-row-0[data-field=assigned_to]")
    picker = page.get_by_role("combobox", name="Value")
    picker.press_sequentially("Alex", delay=30)
    page.get_by_role("option", name="Alex Agent").click()
    page.get_by_role("button", name="Run filter").click()
    page.wait_for_url(re.compile(r"sysparm_query=assigned_to"))
    assert re.fullmatch(r"assigned_to=[0-9a-f]{32}", query_of(page.url))
    assert page.locator(".filter-sentence").inner_text() == "Assigned to is Alex Agent"


def test_a_field_compared_with_another_field(login, server):
    """"Greater than the field" draws a choice of the other date-times in place of the date input."""
    page = login("agent")
    page.goto(f"{server}/{CASE}_list.do")
    page.locator("#filter summary").click()
    page.get_by_label("Field").first.select_option(label="Closed at")
    settled(page, "#filter-row-0[data-field=closed_at]")
    page.get_by_label("Operator").first.select_option(label="greater than the field")
    settled(page, "#filter-row-0[data-op=gt_field]")  # drawn again: another field, not a date
    page.get_by_label("Other field").select_option(label="Opened at")
    page.get_by_role("button", name="Run filter").click()
    page.wait_for_url(re.compile(r"sysparm_query="))
    assert query_of(page.url) == "closed_atGT_FIELDopened_at"
    assert page.locator(".filter-sentence").inner_text() == "Closed at greater than the field Opened at"
    assert page.locator("#filter-row-0 [aria-label='Other field']").input_value() == "opened_at"
