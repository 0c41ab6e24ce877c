"""Attachments in a real browser (Chromium, driven by Playwright): an agent attaches a file to a case
with the form's file picker, sees it listed, downloads it, and deletes it after confirming; axe
finds nothing to fix in the section."""

from __future__ import annotations

import re

import pytest

import test_axe
import test_browser

browser, server = test_browser.browser, test_browser.server
pytestmark = pytest.mark.skipif(test_browser.CHROMIUM is None,
                                reason="no Chromium (set CASELOOM_CHROMIUM or install chromium)")

CASE = "sn_customerservice_case"


def test_attach_download_and_delete_a_file_on_a_case(browser, server, tmp_path):
    page = test_axe.sign_in(browser, server, "agent")
    page.goto(f"{server}/{CASE}.do?sys_id=-1")
    page.get_by_label("Short description").fill("Export fails with error 42")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(rf"/{CASE}\.do\?sys_id=[0-9a-f]{{32}}"))
    section = page.locator("section#attachments")
    assert "No files attached." in section.inner_text()

    trace = tmp_path / "trace.log"
    trace.write_text("error 42 at line 7\n")
    section.get_by_label("Attach a file").set_input_files(str(trace))
    section.get_by_role("button", name="Attach", exact=True).click()
    page.wait_for_url(re.compile(r"#attachments$"))
    assert "Attached trace.log." in page.locator(".flash").inner_text()
    link = page.locator("section#attachments").get_by_role("link", name="trace.log")
    assert "19 bytes · text/plain · agent" in page.locator("section#attachments li").inner_text()
    with page.expect_download() as downloading:
        link.click()
    download = downloading.value
    assert download.suggested_filename == "trace.log"
    assert open(download.path(), "rb").read() == b"error 42 at line 7\n"
    found = test_axe.violations(page)
    assert not found, test_axe.explain(found)

    page.once("dialog", lambda dialog: dialog.accept())  # "Delete trace.log?"
    page.locator("section#attachments").get_by_role("button", name="Delete trace.log").click()
    page.wait_for_load_state()
    page.wait_for_function("document.querySelector('.flash') && "
                           "document.querySelector('.flash').innerText.includes('Deleted trace.log.')")
    assert "No files attached." in page.locator("section#attachments").inner_text()
