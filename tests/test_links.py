"""Absolute links come from CASELOOM_BASE_URL, never from the request's Host header; redirects
after a bulk edit go only to paths of this site."""

from __future__ import annotations

import re
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


def _menu_links(client, path: str = "/sn_customerservice_case_list.do", root: str = "") -> dict[str, str]:
    page = client.get(path, base_url=f"http://localhost{root}").get_data(as_text=True)
    nav = page[page.index("<nav"):page.index("</nav>")]
    return {label: href.replace("&amp;", "&") for href, label in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)}


def test_each_user_s_menu_links_to_their_own_lists_under_the_site_s_path(app):
    """A menu's links are built once per process (every page draws the whole menu), yet each stays
    the user's own ("My cases" names whoever is signed in) and follows the path the site is served under."""
    from conftest import ui_sign_in

    links = {}
    for user in ("agent", "manager"):
        client = app.test_client()
        ui_sign_in(client, user)
        links[user] = _menu_links(client)
        links[f"{user} under /support"] = _menu_links(client, root="/support")
    ids = {}
    for user in ("agent", "manager"):
        mine = links[user]["My cases"]
        assert mine.startswith("/sn_customerservice_case_list.do?sysparm_query=assigned_to%3D")
        ids[user] = mine.split("assigned_to%3D", 1)[1].split("%5E", 1)[0]
        assert links[f"{user} under /support"]["My cases"] == "/support" + mine
        assert all(href.startswith("/support/") for href in links[f"{user} under /support"].values())
    assert ids["agent"] != ids["manager"] and all(len(i) == 32 for i in ids.values())
