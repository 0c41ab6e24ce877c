"""References you can follow and pick, in a real browser (Chromium through Playwright): the contact
picker offers the chosen account's contacts, a reference shows a preview card on hover or focus that
Escape dismisses, and child cases are added by ticking them, in the dialog and without JavaScript."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

import test_browser

# The browser, the live server (of the `app` fixture) and the sign-in of the agent UI's browser tests.
browser, server, login = test_browser.browser, test_browser.server, test_browser.login
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

CASE = "sn_customerservice_case"


@pytest.fixture
def accounts(runtime):
    """Two accounts, each with contacts of its own (Jane Doe and Jim Doe at the first, Jane Roe at the second)."""
    with runtime.transaction() as service:
        made = {name: service.insert("customer_account", {"name": name}) for name in ("Acme Rockets", "Zenith Mills")}
        for name, account in [("Jane Doe", "Acme Rockets"), ("Jim Doe", "Acme Rockets"), ("Jane Roe", "Zenith Mills")]:
            service.insert("customer_contact", {"name": name, "account": made[account]["sys_id"]})
    return made


@pytest.fixture
def major(runtime):
    """An accepted major case, as accepting makes it, and the open cases that could become its children."""
    from caseloom.query import parse_encoded

    with runtime.transaction() as service, service.by_definitions():
        major = service.insert(CASE, {"short_description": "Mail outage", "state": 10,
                                      "major_case_state": "accepted", "proactive": True})
        free = service.query(CASE, parse_encoded("stateIN1,10,18^parentISEMPTY^major_case_stateISEMPTY"
                                                 "^ORDERBYDESCnumber"), ["sys_id", "number"], 3)
    return major, free


def test_choose_an_account_then_see_only_its_contacts(login, server, accounts):
    page = login("agent")
    page.goto(f"{server}/{CASE}.do?sys_id=-1")
    account = page.get_by_role("combobox", name="Account")
    account.press_sequentially("Acme Rock", delay=30)
    page.get_by_role("option", name="Acme Rockets").click()
    contact = page.get_by_role("combobox", name="Contact")
    contact.press_sequentially("J", delay=30)
    offered = page.locator("#f_contact__options [role=option]")
    page.get_by_role("option", name="Jim Doe").wait_for()
    assert sorted(offered.all_inner_texts()) == ["Jane Doe", "Jim Doe"]  # not Zenith's Jane Roe
    page.get_by_role("option", name="Jane Doe").click()
    page.get_by_label("Short description").fill("Rocket fuel leak")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(rf"{CASE}\.do\?sys_id=[0-9a-f]{{32}}"))
    assert page.get_by_role("combobox", name="Contact").input_value() == "Jane Doe"


def test_a_match_picked_with_the_keyboard_closes_the_list_and_tab_moves_on(login, server, accounts):
    """ArrowDown, Enter: the box holds the match and its list closes (focus coming back to the box
    does not open it again); Tab out of a box with its list open closes it too."""
    page = login("agent")
    page.goto(f"{server}/{CASE}.do?sys_id=-1")
    account = page.get_by_role("combobox", name="Account")
    account.press_sequentially("Acme Rock", delay=30)
    expect(page.locator("#f_account__options [role=option]")).to_have_text(["Acme Rockets"])  # what was typed matches
    account.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(account).to_have_value("Acme Rockets")
    expect(account).to_be_focused()
    page.wait_for_timeout(400)  # what a focus request would have taken to come back
    expect(page.locator("#f_account__options [role=option]")).to_have_count(0)
    expect(account).to_have_attribute("aria-expanded", "false")
    contact = page.get_by_role("combobox", name="Contact")
    contact.press_sequentially("J", delay=30)
    expect(page.locator("#f_contact__options [role=option]")).to_have_text(["Jane Doe", "Jim Doe"])
    contact.press("Tab")
    expect(page.locator("#f_contact__options [role=option]")).to_have_count(0)
    expect(contact).not_to_be_focused()


def test_a_reference_shows_a_preview_on_hover_and_focus(login, server, runtime, accounts):
    with runtime.transaction() as service:
        closed = service.insert(CASE, {"short_description": "Old rocket", "account": accounts["Acme Rockets"]["sys_id"],
                                       "state": 3, "close_notes": "Done", "resolution_code": "solved_permanently"})
    page = login("agent")
    page.goto(f"{server}/{CASE}.do?sys_id={closed['sys_id']}")
    link = page.locator("#f_account a")
    assert link.inner_text() == "Acme Rockets"
    link.hover()
    tooltip = page.get_by_role("tooltip")
    tooltip.wait_for()
    assert tooltip.inner_text().startswith(f"Account {accounts['Acme Rockets']['number']}")
    assert link.get_attribute("aria-describedby") == tooltip.get_attribute("id")
    page.keyboard.press("Escape")
    tooltip.wait_for(state="hidden")
    page.mouse.move(0, 0)
    link.focus()  # the keyboard reaches it too
    tooltip.wait_for()
    assert "Primary contact" in tooltip.inner_text()
    link.click()  # and it is a link to the record
    page.wait_for_url(f"{server}/customer_account.do?sys_id={accounts['Acme Rockets']['sys_id']}")


def test_add_child_cases_by_ticking_them_in_the_dialog(login, server, major):
    major, free = major
    page = login("agent")
    page.goto(f"{server}/{CASE}.do?sys_id={major['sys_id']}")
    page.get_by_role("button", name="Add child cases…").click()
    dialog = page.get_by_role("dialog", name="Add child cases")
    dialog.get_by_label(free[0]["number"]).check()  # from the first page
    dialog.get_by_label("Search").fill(free[2]["number"])  # a search keeps what was ticked
    expect(dialog.locator("table.pick tbody tr td:nth-child(2)")).to_have_text([free[0]["number"], free[2]["number"]])
    assert dialog.get_by_label(major["number"]).count() == 0  # the major case itself is never offered
    dialog.get_by_label(free[2]["number"]).check()
    dialog.get_by_role("button", name="Add child cases").click()
    status = page.get_by_role("status").first.inner_text()
    assert "2 of 2 selected cases were added" in status
    assert page.locator(".related").filter(has_text="Child cases").locator(".badge").inner_text() == "2"


def test_add_child_cases_without_javascript(browser, server, major):
    major, free = major
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(test_browser.TIMEOUT_MS)
        page.goto(f"{server}/login")
        page.get_by_label("User name").fill("agent")
        page.get_by_label("Password").fill("agent")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server}/")
        page.goto(f"{server}/{CASE}.do?sys_id={major['sys_id']}")
        page.get_by_role("button", name="Add child cases…").click()  # the action's own page
        page.wait_for_url(re.compile(r"/ui/action/.*/add_child_cases\??$"))
        page.get_by_label("Search").fill(free[1]["number"])
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r"cases__q=" + free[1]["number"]))
        assert page.locator("table.pick tbody tr td:nth-child(2)").all_inner_texts() == [free[1]["number"]]
        page.get_by_label(free[1]["number"]).check()
        page.get_by_role("button", name="Add child cases", exact=True).click()
        page.wait_for_url(f"{server}/{CASE}.do?sys_id={major['sys_id']}")
        assert "1 of 1 selected cases were added" in page.get_by_role("status").first.inner_text()
    finally:
        context.close()
