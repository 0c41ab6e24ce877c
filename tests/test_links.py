"""Absolute links come from CASELOOM_BASE_URL, never from the request's Host header; redirects
after a bulk edit go only to paths of this site."""

from __future__ import annotations

from dataclasses import replace

import pytest

from caseloom.web import create_app
from conftest import basic
from test_access import csrf_token, sign_in

CASES = "/api/now/table/sn_customerservice_case"


@pytest.fixture
def based(config, definitions):
    app = create_app(replace(config, base_url="https://cases.example.com/"), definitions, testing=True)
    return app.test_client()


def test_links_are_built_from_the_base_url_not_the_host_header(based):
    headers = {**basic("agent"), "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    r = based.get(f"{CASES}?sysparm_limit=1&sysparm_fields=account,number&sysparm_query=accountISNOTEMPTY",
                  headers=headers)
    assert r.status_code == 200
    assert r.json["result"][0]["account"]["link"].startswith("https://cases.example.com/api/now/table/customer_account/")
    assert all(part.startswith("<https://cases.example.com/api/now/table/sn_customerservice_case?")
               for part in r.headers["Link"].split(","))
    created = based.post(CASES, json={"short_description": "Linked"}, headers=headers)
    assert created.headers["Location"].startswith("https://cases.example.com/api/now/table/sn_customerservice_case/")
    assert "evil.example" not in r.get_data(as_text=True) + r.headers["Link"] + created.headers["Location"]


def test_without_a_base_url_links_follow_the_request(as_user):
    r = as_user("agent").get(f"{CASES}?sysparm_limit=1&sysparm_fields=number")
    assert r.headers["Link"].startswith("<http://localhost/api/now/table/")


@pytest.mark.parametrize("back, lands", [
    ("/sn_customerservice_case_list.do?sysparm_query=state%3D1", "/sn_customerservice_case_list.do?sysparm_query=state%3D1"),
    ("https://evil.example/", "/sn_customerservice_case_list.do"),
    ("//evil.example/", "/sn_customerservice_case_list.do"),
    ("/\t/evil.example", "/sn_customerservice_case_list.do"),
    ("/\\evil.example", "/sn_customerservice_case_list.do"),
])
def test_a_bulk_edit_redirects_only_within_the_site(client, as_user, back, lands):
    case = as_user("agent").get(f"{CASES}?sysparm_limit=1&sysparm_fields=sys_id&sysparm_query=state=1").json["result"][0]
    sign_in(client, "agent", "agent")
    token = csrf_token(client.get("/sn_customerservice_case_list.do").get_data(as_text=True))
    r = client.post("/ui/bulk/sn_customerservice_case", data={
        "bulk_field": "priority", "bulk_value": "2", "sys_id": case["sys_id"], "back": back, "csrf_token": token})
    assert r.status_code == 302
    assert r.headers["Location"] == lands
