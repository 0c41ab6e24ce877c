"""Similar cases in Chromium: an agent sees the suggestion "10 similar cases from 3 accounts since
yesterday" on a new case's form and proposes the major case from it, its reason filled in; a major issue
manager opens the accepted major case and adds a suggested child case in one click."""

from __future__ import annotations

import re

import pytest

import test_browser
from conftest import basic

browser, server, login, settled = test_browser.browser, test_browser.server, test_browser.login, test_browser.settled
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

CASE = "sn_customerservice_case"
TEXT = "Zorblax quuxite flarnwick wibblet snorkan"


def test_a_suggestion_on_a_case_form_and_a_suggested_child_added_in_one_click(client, login, server):
    owners = [a["sys_id"] for a in client.get("/api/now/table/customer_account?sysparm_fields=sys_id&sysparm_limit=3",
                                              headers=basic("admin")).json["result"]]
    for i in range(10):  # ten similar cases from three customers, since yesterday
        r = client.post(f"/api/now/table/{CASE}", json={"short_description": TEXT, "account": owners[i % 3]},
                        headers=basic("agent"))
        assert r.status_code == 201
    agent = login("agent")
    agent.goto(f"{server}/{CASE}.do?sys_id=-1")
    agent.get_by_label("Short description").fill(TEXT)
    agent.get_by_role("button", name="Create").click()
    agent.wait_for_url(re.compile(rf"{CASE}\.do\?sys_id=[0-9a-f]{{32}}"))
    banner = agent.locator("p.suggestion")
    assert banner.inner_text().startswith("10 similar cases from 3 accounts since yesterday — propose a major case?")
    similar = agent.locator("#similar-similar_cases")
    assert similar.get_by_role("heading").inner_text().startswith("Similar open cases")
    assert similar.locator("tbody tr").count() == 5 and "1.00" in similar.locator("tbody tr").first.inner_text()
    banner.get_by_role("link", name="Propose major case…").click()
    reason = agent.get_by_label("Why is this a major issue?")
    assert reason.input_value().startswith("10 similar cases from 3 accounts")
    agent.get_by_role("button", name="Propose major case").click()
    agent.wait_for_load_state()
    assert "Proposed" in agent.locator("main").inner_text()
    candidate = agent.url.split("sys_id=")[1]

    manager = login("mim")
    manager.goto(f"{server}/{CASE}.do?sys_id={candidate}")
    manager.get_by_role("button", name="Accept major case…").click()
    manager.locator("dialog[open]").get_by_role("button", name="Accept major case").click()
    manager.wait_for_load_state()
    # accepting a customer's candidate opens a new major case (the candidate its child): its form
    suggested = manager.locator("#similar-suggested_child_cases")
    settled(manager, "#similar-suggested_child_cases")
    rows = suggested.locator("tbody tr")
    before = rows.count()
    assert before >= 5
    number = rows.first.locator("a").first.inner_text()
    rows.first.get_by_role("button", name=re.compile("^Add")).click()
    manager.wait_for_load_state()
    assert "added" in manager.locator("p.flash").first.inner_text().lower()
    children = manager.locator("section.related", has_text="Child cases")
    assert children.get_by_role("link", name=number).is_visible()
    assert manager.locator("#similar-suggested_child_cases").get_by_role("link", name=number).count() == 0
