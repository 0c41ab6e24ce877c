"""Recipient scripts run with the read access of their author, never more than the user running
them (no confused deputy); a preview needs write access to the list; scripts' CPU time counts
against a per-user budget (429 with Retry-After once it is spent)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from caseloom.web import create_app
from conftest import basic

LISTS = "/api/now/table/sn_publications_recipients_list"
MEMBERS = "/api/now/table/sn_publications_recipientslist_account_m2m"
# reads cases, which an author may not read (agents and managers may)
CASE_READER = """accounts = [c["account"] for c in records.query("sn_customerservice_case") if c["account"]]
result = {"accounts": sorted(set(accounts))}
"""
BURNER = "total = 0\nfor i in range(2000000):\n    total += i\nresult = []\n"  # well over the 0.05 s budget below, on any machine


def refresh(api, list_id):
    return api.post(f"/api/caseloom/actions/sn_publications_recipients_list/{list_id}/refresh", json={})


def scripted_list(api, script: str) -> str:
    r = api.post(LISTS, json={"name": "Scripted", "type": "accounts", "enable_script": "true", "script": script})
    assert r.status_code == 201, r.json
    return r.json["result"]["sys_id"]


def member_count(api, list_id) -> int:
    return int(api.get(f"{MEMBERS}?sysparm_query=recipients_list={list_id}&sysparm_limit=1").headers["X-Total-Count"])


def test_an_authors_script_does_not_borrow_the_rights_of_the_manager_who_refreshes_it(as_user):
    list_id = scripted_list(as_user("author"), CASE_READER)
    r = refresh(as_user("manager"), list_id)
    assert r.status_code == 422, r.json
    assert "sn_customerservice_case" in r.json["error"]["message"]
    assert member_count(as_user("manager"), list_id) == 0


def test_a_managers_script_runs_with_no_more_than_the_refreshing_authors_rights(as_user):
    list_id = scripted_list(as_user("manager"), CASE_READER)
    assert refresh(as_user("author"), list_id).status_code == 422
    r = refresh(as_user("manager"), list_id)  # author and runner may both read cases
    assert r.status_code == 200, r.json
    assert member_count(as_user("manager"), list_id) > 0


def test_the_author_is_who_last_changed_the_script_text(as_user):
    list_id = scripted_list(as_user("author"), "result = []\n")
    manager = as_user("manager")
    assert manager.patch(f"{LISTS}/{list_id}", json={"script": CASE_READER}).status_code == 200
    assert refresh(manager, list_id).status_code == 200  # the manager wrote it now
    assert as_user("author").patch(f"{LISTS}/{list_id}", json={"description": "unrelated"}).status_code == 200
    assert refresh(manager, list_id).status_code == 200  # a change of another field does not make a new author


@pytest.mark.parametrize("user, status", [("agent", 403), ("author", 200), ("mim", 200), ("admin", 200)])
def test_a_preview_needs_write_access_to_the_list(as_user, user, status):
    list_id = scripted_list(as_user("author"), "result = []\n")
    r = as_user(user).get(f"/api/caseloom/recipients/{list_id}/preview")
    assert r.status_code == status, r.json


@pytest.fixture
def tight_budget(config, definitions):
    app = create_app(replace(config, script_cpu_budget_seconds=0.05), definitions, testing=True)
    return app.test_client()


def test_script_cpu_counts_against_a_per_user_budget(tight_budget):
    client = tight_budget
    author = basic("author")
    r = client.post(LISTS, json={"name": "Burner", "type": "accounts", "enable_script": "true", "script": BURNER},
                    headers=author)
    list_id = r.json["result"]["sys_id"]
    first = client.get(f"/api/caseloom/recipients/{list_id}/preview", headers=author)
    assert first.status_code == 200, first.json  # the budget was not spent before it ran
    second = client.get(f"/api/caseloom/recipients/{list_id}/preview", headers=author)
    assert second.status_code == 429, second.json
    assert 0 < int(second.headers["Retry-After"]) <= 3601
    assert "CPU budget" in second.json["error"]["message"]
    # a refresh runs the same script: refused too; another user's budget is their own
    assert refresh_as(client, author, list_id).status_code == 429
    assert client.get(f"/api/caseloom/recipients/{list_id}/preview", headers=basic("mim")).status_code == 200


def refresh_as(client, headers, list_id):
    return client.post(f"/api/caseloom/actions/sn_publications_recipients_list/{list_id}/refresh", json={},
                       headers=headers)


def test_a_failing_script_still_pays_for_its_cpu(tight_budget):
    client = tight_budget
    author = basic("author")
    failing = BURNER + "raise ValueError('after the work')\n"
    r = client.post(LISTS, json={"name": "Fails", "type": "accounts", "enable_script": "true", "script": failing},
                    headers=author)
    list_id = r.json["result"]["sys_id"]
    assert refresh_as(client, author, list_id).status_code == 422
    assert refresh_as(client, author, list_id).status_code == 429
