"""Actions that reach many customers say what they will do, in numbers, before they run: a declared
`confirm: true` action (create_child_cases) always, and any action or save that would e-mail more
people than `caseloom.ui.confirm_emails_above`. Nothing is written until the user confirms."""

from __future__ import annotations

import html
import re

import pytest

from conftest import basic, form_token, ui_sign_in

CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"
ACTIONS = f"/api/caseloom/actions/{CASE}"


def count(client, query: str, table: str = CASE) -> int:
    return int(client.get(f"/api/now/table/{table}?sysparm_query={query}&sysparm_limit=1",
                          headers=basic("admin")).headers["X-Total-Count"])


def set_property(client, name: str, value: str) -> None:
    prop = client.get(f"/api/now/table/sys_properties?sysparm_query=name={name}", headers=basic("admin")).json
    assert client.patch(f"/api/now/table/sys_properties/{prop['result'][0]['sys_id']}", json={"value": value},
                        headers=basic("admin")).status_code == 200


@pytest.fixture
def major(client):
    """A candidate created directly and accepted, open, with a recipients list of accounts."""
    major = client.post(CASES, json={"short_description": "Storage outage", "major_case_state": "proposed"},
                        headers=basic("manager")).json["result"]
    for action in ("accept_major_case", "open_case"):
        assert client.post(f"{ACTIONS}/{major['sys_id']}/{action}", json={},
                           headers=basic("manager")).status_code == 200
    lists = client.get("/api/now/table/sn_publications_recipients_list?sysparm_query=type=accounts&sysparm_limit=1",
                       headers=basic("admin")).json["result"]
    assert client.patch(f"{CASES}/{major['sys_id']}", json={"recipient_list": lists[0]["sys_id"]},
                        headers=basic("manager")).status_code == 200
    members = count(client, f"recipients_list={lists[0]['sys_id']}", "sn_publications_recipientslist_account_m2m")
    return {**major, "members": members}


def test_create_child_cases_states_its_numbers_and_waits_for_yes(client, major):
    ui_sign_in(client, "manager")
    url = f"/{CASE}.do?sys_id={major['sys_id']}"
    token = form_token(client, url)
    emails_before = count(client, "state=ready", "sys_email")
    r = client.post(f"/ui/action/{CASE}/{major['sys_id']}/create_child_cases",
                    data={"comments": "We are on it", "csrf_token": token})
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 200
    n = major["members"]
    sentence = re.search(r'<p class="confirm-count"[^>]*>([^<]*)</p>', page).group(1)
    assert sentence.startswith(f"This creates {n} cases and sends ")
    emails, recipients = map(int, re.search(r"sends (\d+) e-mails to (\d+) recipients\.$", sentence).groups())
    assert emails >= n and 0 < recipients <= emails
    # nothing was written: no child, no e-mail, no job
    assert count(client, f"parent={major['sys_id']}") == 0
    assert count(client, "state=ready", "sys_email") == emails_before
    assert 'class="job card"' not in client.get(url).get_data(as_text=True)
    # the same inputs come back with `confirmed`; "No, go back" is a link, not a second button of the same label
    assert re.search(r'<input type="hidden" name="comments" value="We are on it">', page)
    dialog = page[page.index('<section class="card confirm"'):]
    assert dialog.count("<button") == 1 and "Yes, create child cases" in dialog and "No, go back" in dialog
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post(f"/ui/action/{CASE}/{major['sys_id']}/create_child_cases",
                    data={"comments": "We are on it", "confirmed": "1", "csrf_token": token})
    assert r.status_code == 302
    assert 'class="job card"' in client.get(url).get_data(as_text=True)  # started, its progress shown


def test_a_save_that_would_email_more_people_than_allowed_asks_first(client, major):
    kids = client.get(f"{CASES}?sysparm_query=contactISNOTEMPTY^parentISEMPTY^major_case_stateISEMPTY^stateIN1,10"
                      "&sysparm_limit=2&sysparm_fields=sys_id", headers=basic("admin")).json["result"]
    r = client.post(f"{ACTIONS}/{major['sys_id']}/add_child_cases", json={"cases": [k["sys_id"] for k in kids]},
                    headers=basic("agent"))
    assert r.status_code == 200, r.json
    set_property(client, "caseloom.ui.confirm_emails_above", "1")
    ui_sign_in(client, "manager")
    url = f"/{CASE}.do?sys_id={major['sys_id']}"
    page = client.get(url).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    mod = re.search(r'name="sys_mod_count" value="(\d+)"', page).group(1)
    emails_before = count(client, "state=ready", "sys_email")
    r = client.post(url, data={"csrf_token": token, "sys_mod_count": mod, "comments": "A fix is on its way"})
    body = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 200, body
    assert re.search(r"This sends \d+ e-mails? to 2 recipients\.", body), re.findall(r"This [^<]*", body)  # the two contacts
    assert count(client, "state=ready", "sys_email") == emails_before  # nothing was written
    assert count(client, f"element_id={major['sys_id']}^element=comments", "sys_journal_field") == 0
    token = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
    carried = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', body))
    assert carried["comments"] == "A fix is on its way" and carried["confirmed"] == "1"
    r = client.post(url, data={**carried, "csrf_token": token})
    assert r.status_code == 302
    assert count(client, f"element_id={major['sys_id']}^element=comments", "sys_journal_field") == 1
    assert count(client, "state=ready", "sys_email") > emails_before


def test_an_action_under_the_threshold_runs_at_once(client):
    case = client.get(f"{CASES}?sysparm_query=state=10^parentISEMPTY^major_case_stateISEMPTY&sysparm_limit=1",
                      headers=basic("admin")).json["result"][0]
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    r = client.post(f"/ui/action/{CASE}/{case['sys_id']}/propose_major_case",
                    data={"reason": "Many", "csrf_token": form_token(client, url)})
    assert r.status_code == 302  # it e-mails two managers: under the default of 10


def test_the_same_action_over_the_threshold_asks_and_writes_nothing(client):
    set_property(client, "caseloom.ui.confirm_emails_above", "1")
    case = client.get(f"{CASES}?sysparm_query=state=10^parentISEMPTY^major_case_stateISEMPTY&sysparm_limit=1",
                      headers=basic("admin")).json["result"][0]
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    r = client.post(f"/ui/action/{CASE}/{case['sys_id']}/propose_major_case",
                    data={"reason": "Many", "csrf_token": form_token(client, url)})
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 200 and "This sends 1 e-mail to 2 recipients." in page
    state = client.get(f"{CASES}/{case['sys_id']}?sysparm_fields=major_case_state", headers=basic("admin")).json
    assert state["result"]["major_case_state"] == ""
