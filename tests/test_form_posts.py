"""A form's post holds what the form sends, nothing else. A field the form leaves out or shows
read-only (a lifecycle state's, the state itself), or a name no field has, was dropped silently and the
rest saved; a browser never sends one, so the post is hand-made or from a form since changed. It is
now answered with the form and the error, naming the field by its label, and nothing is saved. What
a browser sends (the CSRF token, the version, a confirmation, a reference box's typed name) still saves."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from werkzeug.datastructures import MultiDict

from conftest import basic, form_token, ui_sign_in

CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"
FIELDS = "short_description,priority,active,state,account,number"


def a_case(client, query: str) -> dict:
    return client.get(f"{CASES}?sysparm_query={query}&sysparm_limit=1&sysparm_fields=sys_id,{FIELDS}",
                      headers=basic("admin")).json["result"][0]


def stored(client, sys_id: str) -> dict:
    return client.get(f"{CASES}/{sys_id}?sysparm_fields={FIELDS}", headers=basic("admin")).json["result"]


def field_errors(page: str) -> dict[str, str]:
    """The errors shown at their fields, by field name."""
    return dict(re.findall(r'<p class="field-error" id="f_(\w+)__error" role="alert">([^<]*)</p>', page))


def form_errors(page: str) -> list[str]:
    """The errors shown at the top of the form."""
    return re.findall(r'<p class="error" role="alert">([^<]*)</p>', page)


# (which case, what is posted besides the CSRF token, the field the error is at or None for the top, the error)
STRAY = [
    ("state=10", {"short_description": "Changed", "active": "false"}, None, "Active is not on this form"),
    ("state=10", {"short_description": "Changed", "colour": "red"}, None, "'colour' is not a field of Case"),
    ("state=10", {"short_description": "Changed", "state": "6"}, "state",
     "State is changed by the record's actions, not by saving the form"),
    ("state=3", {"priority": "1"}, "priority", "Priority is read-only while State is Closed"),
    ("state=3", {"account": "", "account__display": "Acme"}, "account", "Account is read-only while State is Closed"),
    ("new", {"short_description": "Made by hand", "number": "CS9999999"}, "number", "Number is read-only"),
]


@pytest.mark.parametrize("which, posted, at, error", STRAY)
def test_a_post_with_a_field_the_form_does_not_send_is_the_form_with_its_error(client, which, posted, at, error):
    case = None if which == "new" else a_case(client, which)
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id'] if case else -1}"

    answer = client.post(url, data={**posted, "csrf_token": form_token(client, url)})

    page = html.unescape(answer.get_data(as_text=True))
    assert answer.status_code == 422, page
    if at is None:
        assert error in form_errors(page), form_errors(page)
    else:
        assert field_errors(page).get(at) == error, field_errors(page)
    if case is not None:
        assert stored(client, case["sys_id"]) == {k: case[k] for k in FIELDS.split(",")}  # nothing saved
    else:
        assert client.get(f"{CASES}?sysparm_query=short_description=Made by hand",
                          headers=basic("admin")).json["result"] == []


class FormInputs(HTMLParser):
    """What a browser sends from the record form of a page: each input's name and value (a checkbox
    when ticked, a select's chosen option, a textarea's text)."""

    def __init__(self):
        super().__init__()
        self.sent: list[tuple[str, str]] = []
        self.inside = False
        self.select: str | None = None
        self.textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = "record" in (attrs.get("class") or "")
        elif not self.inside or "name" not in attrs:
            if tag == "option" and self.select is not None and "selected" in attrs:
                self.sent.append((self.select, attrs.get("value", "")))
        elif tag == "input" and (attrs.get("type") != "checkbox" or "checked" in attrs):
            self.sent.append((attrs["name"], attrs.get("value") or ""))
        elif tag == "select":
            self.select = attrs["name"]
        elif tag == "textarea":
            self.textarea = attrs["name"]
            self.sent.append((self.textarea, ""))

    def handle_data(self, data):
        if self.textarea is not None:
            self.sent[-1] = (self.textarea, self.sent[-1][1] + data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None


@pytest.mark.parametrize("which", ["state=10", "state=3", "new"])
def test_what_a_browser_sends_from_the_form_still_saves(client, which):
    case = None if which == "new" else a_case(client, which)
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id'] if case else -1}"
    inputs = FormInputs()
    inputs.feed(client.get(url).get_data(as_text=True))
    sent = [(k, "Typed in a browser" if k == "short_description" else v) for k, v in inputs.sent]
    assert {"csrf_token", "assigned_to", "assigned_to__display"} <= {k for k, _ in sent}, sent
    assert ("sys_mod_count" in {k for k, _ in sent}) == (case is not None), sent

    answer = client.post(url, data=MultiDict([*sent, ("confirmed", "1")]))

    assert answer.status_code == 302, html.unescape(answer.get_data(as_text=True))


def test_a_form_read_before_the_record_changed_is_the_conflict_page_not_its_new_locks(client, runtime):
    """A form read while the case was open, saved after someone closed it: the browser sends the fields
    the closed state now locks. That is a stale form, answered as one (409, what changed since), not
    with the locks of a state the person never saw."""
    from caseloom.access import SYSTEM

    case = a_case(client, "state=10")
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    inputs = FormInputs()
    inputs.feed(client.get(url).get_data(as_text=True))
    assert "priority" in {k for k, _ in inputs.sent}
    with runtime.transaction(SYSTEM) as service:
        service.update(CASE, case["sys_id"], {"state": 3, "resolution_code": "solved_permanently",
                                              "close_notes": "Closed meanwhile"})

    answer = client.post(url, data=MultiDict([*inputs.sent, ("confirmed", "1")]))

    page = html.unescape(answer.get_data(as_text=True))
    assert answer.status_code == 409, page
    assert "read-only while State is Closed" not in page
    assert stored(client, case["sys_id"])["state"] == "3"
