"""The customer portal at /csm (definitions/portal/csm.yaml): a customer's cases through their access
rules, a case page with only what customers may see, comments, files, new cases, accepting and
rejecting a solution, and the major issue's public updates on a child case."""

from __future__ import annotations

import re

import pytest

from conftest import basic, ui_sign_in

CASES = "/api/now/table/sn_customerservice_case"


def _form_token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _mine(client, user: str) -> list[dict]:
    r = client.get(f"{CASES}?sysparm_fields=sys_id,number,state,short_description", headers=basic(user))
    return r.json["result"]


@pytest.fixture
def customer(client):
    ui_sign_in(client, "customer")
    return client


def test_a_customer_signing_in_lands_on_the_portal_and_never_on_staff_pages(client):
    ui_sign_in(client, "customer")
    assert client.get("/").headers["Location"].endswith("/csm")
    r = client.get("/sn_customerservice_case_list.do")
    assert r.status_code == 302 and r.headers["Location"].endswith("/csm")


def test_staff_still_get_their_pages(client):
    ui_sign_in(client, "agent")
    assert client.get("/").status_code == 200
    assert client.get("/csm").status_code == 403  # not a portal user


def test_the_home_page_lists_only_the_customers_cases_action_needed_first(customer, client):
    mine = _mine(client, "customer")
    page = customer.get("/csm").get_data(as_text=True)
    for case in mine:
        assert case["number"] in page
    others = [c["number"] for c in _mine(client, "agent") if c["sys_id"] not in {m["sys_id"] for m in mine}]
    assert not any(number in page for number in others)
    headings = re.findall(r'<h2 id="s\d">([^<]+)', page)
    assert [h.strip() for h in headings] == ["Action needed", "Open", "Closed"]


def test_a_case_page_shows_comments_never_work_notes(customer, client):
    case = _mine(client, "customer")[0]
    assert client.patch(f"{CASES}/{case['sys_id']}", json={"work_notes": "INTERNAL suspect fraud",
                                                           "comments": "We are looking into it"},
                        headers=basic("agent")).status_code == 200
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    assert "We are looking into it" in page and "INTERNAL" not in page
    assert case["number"] in page


def test_someone_elses_case_is_not_found(customer, client):
    mine = {c["sys_id"] for c in _mine(client, "customer")}
    other = next(c for c in _mine(client, "agent") if c["sys_id"] not in mine)
    assert customer.get(f"/csm/record/{other['sys_id']}").status_code == 404


def test_a_customer_adds_a_comment(customer, client):
    case = _mine(client, "customer")[0]
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    r = customer.post(f"/csm/record/{case['sys_id']}/comment", data={"text": "Any news?",
                                                                     "csrf_token": _form_token(page)})
    assert r.status_code == 302
    entries = client.get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={case['sys_id']}"
                         "^element=comments", headers=basic("admin")).json["result"]
    assert "Any news?" in [e["value"] for e in entries]
    assert "Any news?" in customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)


def test_a_customer_opens_a_case_for_themselves(customer, client):
    page = customer.get("/csm/new").get_data(as_text=True)
    r = customer.post("/csm/new", data={"short_description": "Cannot print", "description": "Since Monday",
                                        "csrf_token": _form_token(page)})
    assert r.status_code == 302, r.get_data(as_text=True)
    made = next(c for c in _mine(client, "customer") if c["short_description"] == "Cannot print")
    contact = client.get("/api/now/table/sys_user?sysparm_query=user_name=customer&sysparm_fields=contact"
                         "&sysparm_exclude_reference_link=true", headers=basic("admin")).json["result"][0]["contact"]
    full = client.get(f"{CASES}/{made['sys_id']}?sysparm_fields=contact,account&sysparm_exclude_reference_link=true",
                      headers=basic("admin")).json["result"]
    assert full["contact"] == contact and full["account"]
    r = customer.post("/csm/new", data={"short_description": "", "csrf_token": _form_token(page)})
    assert r.status_code == 400 and "mandatory" in r.get_data(as_text=True)


@pytest.mark.parametrize("action, state", [("accept_solution", "3"), ("reject_solution", "10")])
def test_a_customer_accepts_or_rejects_a_proposed_solution(customer, client, runtime, action, state):
    case = _mine(client, "customer")[0]
    with runtime.transaction() as service, service.by_definitions():
        service.update("sn_customerservice_case", case["sys_id"], {"state": 6, "resolution_code": "solved_remotely",
                                                                    "close_notes": "Restarted it"})
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    assert "Accept solution" in page and "Reject solution" in page
    data = {"csrf_token": _form_token(page)}
    if action == "reject_solution":
        r = customer.post(f"/csm/record/{case['sys_id']}/action/{action}", data=data)
        assert r.status_code == 400  # the reason is required
        data["comments"] = "Still broken after the restart"
    r = customer.post(f"/csm/record/{case['sys_id']}/action/{action}", data=data)
    assert r.status_code == 302, r.get_data(as_text=True)
    after = client.get(f"{CASES}/{case['sys_id']}?sysparm_fields=state", headers=basic("admin")).json["result"]
    assert after["state"] == state


def test_a_child_of_a_major_case_shows_the_major_issues_public_updates(customer, client, runtime):
    case = _mine(client, "customer")[0]
    with runtime.transaction() as service, service.by_definitions():
        major = service.insert("sn_customerservice_case", {"short_description": "Storage outage EU",
                                                            "major_case_state": "accepted"})
        service.update("sn_customerservice_case", major["sys_id"], {"comments": "Engineers are restoring the array",
                                                                     "work_notes": "SECRET root cause"})
        service.update("sn_customerservice_case", case["sys_id"], {"parent": major["sys_id"]})
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    assert "Engineers are restoring the array" in page and "SECRET" not in page
    assert customer.get(f"/csm/record/{major['sys_id']}").status_code == 404  # the major case itself stays hidden


def test_a_customer_attaches_a_file_and_sees_it(customer, client):
    case = _mine(client, "customer")[0]
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    from io import BytesIO

    r = customer.post(f"/csm/record/{case['sys_id']}/attach", data={
        "csrf_token": _form_token(page), "file": (BytesIO(b"error 42"), "log.txt", "text/plain")},
        content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)
    assert "log.txt" in customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)


def test_an_unknown_portal_is_not_found_and_signing_in_is_required(client):
    assert client.get("/csm").status_code == 302  # to the sign-in page
    ui_sign_in(client, "customer")
    assert client.get("/nowhere").status_code == 404


def test_a_closed_case_takes_no_more_comments_and_says_how_to_get_help(customer, client, runtime):
    """A comment on a closed case was taken without a word and the case stayed closed: the page now says
    it is closed and offers a new case, and a post is refused with the same words, adding nothing."""
    case = _mine(client, "customer")[0]
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    token = _form_token(page)
    with runtime.transaction() as service, service.by_definitions():
        service.update("sn_customerservice_case", case["sys_id"], {"state": 3})
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    assert "This case is closed" in page and 'href="/csm/new"' in page and 'name="text"' not in page
    r = customer.post(f"/csm/record/{case['sys_id']}/comment", data={"text": "Still broken for us", "csrf_token": token})
    assert r.status_code == 409
    assert "This case is closed, so it takes no more comments. If you still need help, open a new one." in \
        r.get_data(as_text=True)
    entries = client.get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={case['sys_id']}"
                         "^element=comments", headers=basic("admin")).json["result"]
    assert "Still broken for us" not in [e["value"] for e in entries]


def test_the_emails_to_the_customers_contact_address_show_in_the_activity(customer, client, runtime):
    """A customer's login and their contact may have different addresses: e-mails to either are theirs."""
    case = _mine(client, "customer")[0]
    user = client.get("/api/now/table/sys_user?sysparm_query=user_name=customer&sysparm_fields=sys_id,contact.email",
                      headers=basic("admin")).json["result"][0]
    r = client.patch(f"/api/now/table/sys_user/{user['sys_id']}", json={"email": "customer.login@example.com"},
                     headers=basic("admin"))
    assert r.status_code == 200 and user["contact.email"] not in ("", "customer.login@example.com")
    with runtime.transaction() as service:
        service.insert("sys_email", {"recipients": user["contact.email"], "subject": "We are working on it",
                                     "body": "x", "state": "ready", "type": "send-ready",
                                     "target_table": "sn_customerservice_case", "instance": case["sys_id"]})
        service.insert("sys_email", {"recipients": "someone.else@example.com", "subject": "Not for the customer",
                                     "body": "x", "state": "sent", "type": "sent",
                                     "target_table": "sn_customerservice_case", "instance": case["sys_id"]})
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    assert "We are working on it" in page and "E-mail to you (sending)" in page
    assert "Not for the customer" not in page


def test_a_major_issue_update_copied_to_the_child_shows_once(customer, client, runtime):
    """With sync on, the major case's comment is copied to its children: the child's page shows it once,
    as the child's own entry, not again as the parent's."""
    case = _mine(client, "customer")[0]
    with runtime.transaction() as service, service.by_definitions():
        major = service.insert("sn_customerservice_case", {"short_description": "Storage outage EU",
                                                            "major_case_state": "accepted"})
        service.update("sn_customerservice_case", case["sys_id"], {"parent": major["sys_id"]})
        service.update("sn_customerservice_case", major["sys_id"], {"comments": "Only on the major case"})
        service.update("sn_customerservice_case", major["sys_id"], {"comments": "Copied to every child"})
        service.update("sn_customerservice_case", case["sys_id"], {"comments": "Copied to every child"})
    page = customer.get(f"/csm/record/{case['sys_id']}").get_data(as_text=True)
    assert page.count("Copied to every child") == 1 and page.count("Only on the major case") == 1


@pytest.mark.parametrize("path", ["/csm/record/" + "2c7d740d6b024e0cb09ec420dade5bd1", "/csm/record/nope/comment"])
def test_a_customers_error_page_is_the_portals_own(customer, path):
    """Another account's case is a 404 in the portal's own layout: no staff menu (Major cases, Accounts)."""
    r = customer.get(path) if not path.endswith("comment") else customer.post(path, data={"text": "x"})
    page = r.get_data(as_text=True)
    assert r.status_code in (400, 404) and 'href="/csm"' in page
    assert "Major cases" not in page and "Accounts" not in page and "portal.css" in page
