"""The customer portal and inbound e-mail in a real browser (Chromium, Playwright, a real server): a
customer's e-mail opens a case, the customer finds it on the portal, comments and opens another,
on a phone-sized screen; the agent sees the e-mail and the comment in the case's activity."""

from __future__ import annotations

import re

import pytest

import test_browser
from conftest import basic
from test_email_inbound import mail

browser, server = test_browser.browser, test_browser.server
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None, reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")


def sign_in(browser, server: str, user: str, phone: bool = False):
    viewport = {"width": 390, "height": 844} if phone else {"width": 1300, "height": 900}
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(test_browser.TIMEOUT_MS)
    page.goto(f"{server}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(user)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_an_emailed_case_on_the_portal_and_in_the_agents_activity(browser, server, client):
    r = client.post("/api/caseloom/email/inbound", data=mail(subject="Invoice total is wrong", body="Off by 10 EUR."),
                    headers={**basic("admin"), "Content-Type": "message/rfc822"})
    assert r.json["result"]["action"] == "created"
    case = r.json["result"]["sys_id"]

    page = sign_in(browser, server, "customer", phone=True)
    try:
        page.wait_for_url(f"{server}/csm")
        page.get_by_role("link", name=re.compile("Invoice total is wrong")).click()
        page.wait_for_url(re.compile(rf"/csm/record/{case}$"))
        page.get_by_role("heading", name=re.compile("^Case CS")).wait_for()
        assert page.get_by_text("Off by 10 EUR.").count() >= 1
        page.get_by_label("Add a comment").fill("Here is the invoice number: 4711")
        page.get_by_role("button", name="Send").click()
        page.get_by_text("Your comment was added.").wait_for()
        assert page.get_by_text("Here is the invoice number: 4711").count() == 1
        # nothing wider than the phone's screen
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_role("link", name="All my cases").click()
        page.get_by_role("link", name="New case").click()
        page.get_by_label("Short description").fill("Second problem")
        page.get_by_label("Description", exact=True).fill("The PDF does not open")
        page.get_by_role("button", name="Create").click()
        page.get_by_text(re.compile("Case CS\\d+ was created")).wait_for()
    finally:
        page.context.close()

    agent = sign_in(browser, server, "agent")
    try:
        agent.wait_for_url(f"{server}/")
        agent.goto(f"{server}/sn_customerservice_case.do?sys_id={case}")
        activity = agent.locator(".entry")
        activity.first.wait_for()
        text = " ".join(activity.all_inner_texts())
        assert "E-mail received" in text and "from contact1@example.com" in text
        assert "Here is the invoice number: 4711" in text
    finally:
        agent.context.close()
