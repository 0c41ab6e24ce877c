"""Every segment of a dot-walked path passes read access: the API's fields, queries, order and
display values, the UI's lists and forms, and scripts' data. The probe's example: an administrator
adds a reference to sys_properties on accounts, and an author (who may read accounts, not
properties) must not read property values through it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from caseloom.web import create_app
from conftest import basic
from test_access import csrf_token, sign_in

ACCOUNTS = "/api/now/table/customer_account"


@pytest.fixture
def setting(config, definitions, definitions_copy):
    """An app whose accounts reference a system property; one account points at one."""
    app = create_app(replace(config, definitions=str(definitions_copy)), definitions, testing=True)
    client = app.test_client()
    admin = basic("admin")
    text = (definitions_copy / "tables/customer_account.yaml").read_text().replace(
        "  notes: {type: text}\n", "  notes: {type: text}\n  u_setting: {type: reference, to: sys_properties}\n").replace(
        "list: [number, name, primary_contact, country, industry, active]",
        "list: [number, name, primary_contact, country, industry, active, u_setting.value]")
    r = client.put("/api/caseloom/definitions/tables/customer_account.yaml", data=text, headers=admin,
                   content_type="application/yaml")
    assert r.status_code == 200, r.json
    prop = client.get("/api/now/table/sys_properties?sysparm_query=name=caseloom.scripts.enabled"
                      "&sysparm_fields=sys_id,value", headers=admin).json["result"][0]
    account = client.get(f"{ACCOUNTS}?sysparm_limit=1&sysparm_fields=sys_id", headers=admin).json["result"][0]
    assert client.patch(f"{ACCOUNTS}/{account['sys_id']}", json={"u_setting": prop["sys_id"]},
                        headers=admin).status_code == 200
    return client, account["sys_id"], prop


@pytest.mark.parametrize("params", [
    "sysparm_fields=name,u_setting.value",
    "sysparm_fields=name,u_setting.name",
    "sysparm_query=u_setting.valueSTARTSWITHt",
    "sysparm_query=u_setting.nameLIKEscripts",
    "sysparm_query=ORDERBYu_setting.value",
    "sysparm_query=ORDERBYDESCu_setting.value",
    "sysparm_query=u_setting=caseloom.scripts.enabled",  # a reference compared by display value
    "sysparm_query=nameSAMEASu_setting.value",  # the other field of a comparison of two fields
    "sysparm_query=u_setting.valueNSAMEASname",
])
def test_a_dot_walk_into_an_unreadable_table_is_refused_in_the_api(setting, params):
    client, _, _ = setting
    r = client.get(f"{ACCOUNTS}?{params}", headers=basic("author"))
    assert r.status_code == 403, r.json
    assert "u_setting" in r.json["error"]["detail"] and "sys_properties" in r.json["error"]["detail"]


@pytest.mark.parametrize("user, readable", [("author", False), ("admin", True)])
def test_display_values_come_only_from_readable_tables(setting, user, readable):
    client, account, prop = setting
    r = client.get(f"{ACCOUNTS}/{account}?sysparm_display_value=all&sysparm_fields=u_setting", headers=basic(user))
    assert r.status_code == 200
    cell = r.json["result"]["u_setting"]
    assert cell["value"] == prop["sys_id"]
    assert cell["display_value"] == ("caseloom.scripts.enabled" if readable else "")


def test_the_ui_list_and_form_leave_unreadable_dot_walks_out(setting):
    client, account, _ = setting
    sign_in(client, "admin", "admin")
    assert "sysparm_orderby=u_setting.value" in client.get("/customer_account_list.do").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/").get_data(as_text=True))})
    sign_in(client, "author", "author")
    page = client.get("/customer_account_list.do")
    assert page.status_code == 200 and "sysparm_orderby=u_setting.value" not in page.get_data(as_text=True)
    page = client.get("/customer_account_list.do?sysparm_orderby=u_setting.value")
    assert page.status_code == 200 and "no read access" in page.get_data(as_text=True)
    form = client.get(f"/customer_account.do?sys_id={account}").get_data(as_text=True)
    assert "caseloom.scripts.enabled" not in form


def test_scripts_cannot_dot_walk_into_unreadable_tables(setting, config, definitions_copy):
    from caseloom.access import Actor
    from caseloom.definitions import load_folder
    from caseloom.runtime import Runtime
    from caseloom.sandbox import DatabaseData, DataError

    runtime = Runtime(replace(config, definitions=str(definitions_copy)), load_folder(definitions_copy))
    author = Actor("author", frozenset({"sn_publications.author"}))
    data = DatabaseData(runtime, author)
    assert data.query("customer_account", {"active": True})
    with pytest.raises(DataError) as caught:
        data.query("customer_account", {"u_setting.value": "true"})
    assert "no read access to 'sys_properties'" in str(caught.value)
    admin = DatabaseData(runtime, Actor("admin", frozenset({"admin"})))
    assert admin.query("customer_account", {"u_setting.value": "true"})
    runtime.engine.dispose()
