"""Access rules with conditions (ServiceNow's ACLs): rows, fields and operations, per user.

The CSM definitions give customers logins (`customer`: a contact's, `customer_admin`: a contact
who sees their account's cases, `consumer`: a consumer's). Their rules' conditions read the user's
own record (`gs.getUser().getRecord().getValue('contact')`) and are compiled into the SQL of every
list, count, dot-walk and record read, so totals and paging are right; field rules hide work notes
and refuse writes. The expected rows are worked out from the administrator's view of the data.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from caseloom.access import Actor, field_allowed, row_rule
from caseloom.demo import demo_sys_id
from caseloom.query import Query, Term
from conftest import basic

CASES = "/api/now/table/sn_customerservice_case"
CUSTOMERS = ("customer", "customer_admin", "consumer")


def _get(client, user, url):
    r = client.get(url, headers=basic(user))
    assert r.status_code == 200, (user, url, r.json)
    return r


def _ids(client, user, query=""):
    r = _get(client, user, f"{CASES}?sysparm_fields=sys_id&sysparm_query={query}")
    return {row["sys_id"] for row in r.json["result"]}, int(r.headers["X-Total-Count"])


def _profile(client, user):
    """The contact, consumer and account of a demo customer login, read by the administrator."""
    row = _get(client, "admin", f"/api/now/table/sys_user?sysparm_query=user_name={user}"
                                "&sysparm_fields=contact,consumer,contact.account&sysparm_exclude_reference_link=true").json["result"][0]
    return row["contact"] or None, row["consumer"] or None, row["contact.account"] or None


@pytest.fixture
def expected(client):
    """Each customer's cases as the administrator finds them by contact, consumer or account."""
    found = {}
    for user in CUSTOMERS:
        contact, consumer, account = _profile(client, user)
        mine = set()
        if contact:
            mine |= _ids(client, "admin", f"contact={contact}")[0]
        if consumer:
            mine |= _ids(client, "admin", f"consumer={consumer}")[0]
        if user == "customer_admin":
            mine |= _ids(client, "admin", f"account={account}")[0]
        found[user] = mine
    return found


@pytest.mark.parametrize("user", CUSTOMERS)
def test_a_customer_lists_only_their_cases_and_the_total_counts_only_those(client, expected, user):
    ids, total = _ids(client, user)
    assert ids == expected[user] and ids
    assert total == len(ids)
    every, all_total = _ids(client, "agent")
    assert all_total > total and ids < every


def test_the_account_admin_sees_the_accounts_cases_beyond_their_own(client, expected):
    contact, _, _ = _profile(client, "customer_admin")
    own = _ids(client, "admin", f"contact={contact}")[0]
    assert own <= expected["customer_admin"]
    assert _ids(client, "customer_admin")[0] == expected["customer_admin"]


@pytest.mark.parametrize("user", CUSTOMERS)
def test_paging_walks_only_the_readable_rows(client, expected, user):
    seen = []
    for offset in range(0, 10):
        r = _get(client, user, f"{CASES}?sysparm_fields=sys_id&sysparm_limit=1&sysparm_offset={offset}")
        seen += [row["sys_id"] for row in r.json["result"]]
    assert set(seen) == expected[user] and len(seen) == len(expected[user])


@pytest.mark.parametrize("user", CUSTOMERS)
def test_someone_elses_case_is_not_found_for_a_customer(client, expected, user):
    others = _ids(client, "agent")[0] - expected[user]
    other = sorted(others)[0]
    for method in ("get", "patch"):
        r = getattr(client, method)(f"{CASES}/{other}", headers=basic(user), json={"comments": "hello"}
                                    if method == "patch" else None)
        assert r.status_code == 404, (method, r.json)
    assert client.delete(f"{CASES}/{other}", headers=basic(user)).status_code == 403  # no delete rule at all
    assert _get(client, "admin", f"{CASES}/{other}?sysparm_fields=comments").json["result"]["comments"] == ""


# users x fields x operations on a case the user may read: True allowed, False refused
FIELDS = [
    ("agent", "work_notes", "read", True), ("agent", "work_notes", "write", True),
    ("agent", "short_description", "write", True), ("agent", "comments", "write", True),
    ("customer", "work_notes", "read", False), ("customer", "work_notes", "write", False),
    ("customer", "comments", "read", True), ("customer", "comments", "write", True),
    ("customer", "short_description", "read", True), ("customer", "short_description", "write", False),
    ("customer", "state", "write", False), ("customer", "priority", "write", False),
    ("customer", "proposal_reason", "read", False), ("customer", "probable_cause", "read", False),
    ("customer_admin", "work_notes", "read", False), ("customer_admin", "comments", "write", True),
    ("consumer", "work_notes", "read", False), ("consumer", "short_description", "write", False),
    ("manager", "work_notes", "read", True), ("manager", "proposal_reason", "read", True),
]


@pytest.mark.parametrize("user, field, operation, allowed", FIELDS)
def test_field_rules_by_user_field_and_operation(client, expected, user, field, operation, allowed):
    case = sorted(expected["customer"] if user in ("agent", "manager") else expected[user])[0]
    if operation == "read":
        r = _get(client, user, f"{CASES}/{case}")
        assert (field in r.json["result"]) is allowed
        if field not in ("work_notes", "comments"):  # journal fields are never filtered on
            for query in (f"{field}ISNOTEMPTY", f"ORDERBY{field}"):
                r = client.get(f"{CASES}?sysparm_query={query}", headers=basic(user))
                assert (r.status_code == 200) is allowed, r.json
                if not allowed:
                    assert r.status_code == 403 and field in r.json["error"]["detail"]
        return
    current = _get(client, "admin", f"{CASES}/{case}?sysparm_fields={field}").json["result"].get(field)
    value = {"priority": "2" if current != "2" else "3", "state": "10" if current != "10" else "18"}.get(
        field, f"set by {user}")
    r = client.patch(f"{CASES}/{case}", json={field: value}, headers=basic(user))
    assert (r.status_code == 200) is allowed, r.json
    if not allowed:
        assert r.status_code == 403 and field in r.json["error"]["detail"]


def test_work_notes_stay_hidden_from_customers_in_the_record_and_its_journal(client, expected):
    case = sorted(expected["customer"])[0]
    assert client.patch(f"{CASES}/{case}", json={"work_notes": "internal: refund abuse suspected",
                                                 "comments": "We are on it"}, headers=basic("agent")).status_code == 200
    r = _get(client, "customer", f"{CASES}/{case}?sysparm_fields=number,comments,work_notes")
    assert "work_notes" not in r.json["result"]
    r = client.get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={case}", headers=basic("customer"))
    assert r.status_code == 403


def test_a_customer_creates_a_case_only_for_themselves(client):
    contact, _, account = _profile(client, "customer")
    other_contact, _, _ = _profile(client, "customer_admin")
    before = _ids(client, "admin")[1]
    r = client.post(CASES, json={"short_description": "Printer on fire", "contact": contact, "account": account},
                    headers=basic("customer"))
    assert r.status_code == 201, r.json
    assert r.json["result"]["short_description"] == "Printer on fire"
    assert "work_notes" not in r.json["result"]
    r = client.post(CASES, json={"short_description": "Not mine", "contact": other_contact}, headers=basic("customer"))
    assert r.status_code == 403, r.json
    r = client.post(CASES, json={"short_description": "Pushy", "contact": contact, "assigned_to": ""},
                    headers=basic("customer"))
    assert r.status_code == 201, r.json
    r = client.post(CASES, json={"short_description": "Pushy", "contact": contact, "priority": "1", "state": "6"},
                    headers=basic("customer"))
    assert r.status_code == 403 and "state" in r.json["error"]["detail"], r.json
    assert _ids(client, "admin")[1] == before + 2  # the refused ones left nothing behind


def test_a_customer_may_not_delete_even_their_own_case(client, expected):
    case = sorted(expected["customer"])[0]
    assert client.delete(f"{CASES}/{case}", headers=basic("customer")).status_code == 403
    assert _get(client, "admin", f"{CASES}/{case}").json["result"]["sys_id"] == case


def test_dot_walks_reach_only_readable_records(client, expected):
    case = sorted(expected["customer"])[0]
    r = _get(client, "customer", f"{CASES}/{case}?sysparm_fields=number,account.name,contact.email,"
                                 "assigned_to&sysparm_display_value=true")
    row = r.json["result"]
    assert row["account.name"] and row["contact.email"]
    # another account's name, walked through a reference the customer may read only for their own
    other = sorted(_ids(client, "agent")[0] - expected["customer_admin"] - expected["customer"])
    parent = other[0]
    assert client.patch(f"{CASES}/{case}", json={"parent": parent}, headers=basic("admin")).status_code == 200
    r = client.get(f"{CASES}/{case}?sysparm_fields=parent.short_description", headers=basic("customer"))
    assert r.status_code == 200 and r.json["result"]["parent.short_description"] == ""
    ids, total = _ids(client, "customer", "parent.short_descriptionISNOTEMPTY")
    assert ids == set() and total == 0


def test_the_customer_tables_show_only_their_own_contact_and_account(client):
    contact, _, account = _profile(client, "customer")
    r = _get(client, "customer", "/api/now/table/customer_contact?sysparm_fields=sys_id")
    assert [row["sys_id"] for row in r.json["result"]] == [contact] and r.headers["X-Total-Count"] == "1"
    r = _get(client, "customer", "/api/now/table/customer_account?sysparm_fields=sys_id")
    assert [row["sys_id"] for row in r.json["result"]] == [account]
    assert client.get("/api/now/table/csm_consumer", headers=basic("customer")).json["result"] == []
    assert client.get("/api/now/table/sys_user", headers=basic("customer")).status_code == 403


def test_a_customers_actions_need_the_write_rule_to_match_the_record(client, expected):
    other = sorted(_ids(client, "agent")[0] - expected["customer"])[0]
    r = client.post(f"/api/caseloom/action/sn_customerservice_case/{other}/propose_major",
                    json={}, headers=basic("customer"))
    assert r.status_code in (403, 404), r.json


def test_attachments_follow_the_row_rule(client, expected):
    mine, other = sorted(expected["customer"])[0], sorted(expected["consumer"])[0]
    for case in (mine, other):
        r = client.post(f"/api/now/attachment/file?table_name=sn_customerservice_case&table_sys_id={case}"
                        "&file_name=log.txt", data=b"hello", headers={**basic("agent"), "Content-Type": "text/plain"})
        assert r.status_code == 201, r.json
    r = _get(client, "customer", "/api/now/attachment")
    assert {a["table_sys_id"] for a in r.json["result"]} == {mine} and r.headers["X-Total-Count"] == "1"


def test_rules_and_verdicts_in_code(runtime):
    defs = runtime.defs
    customer = Actor("c", defs.role_closure(["sn_customerservice.customer"]), "u1")
    agent = Actor("a", defs.role_closure(["sn_customerservice_agent"]), "u2")
    assert row_rule(defs, agent, "sn_customerservice_case", "read") is True
    rule = row_rule(defs, customer, "sn_customerservice_case", "read")
    assert rule not in (True, False)
    assert row_rule(defs, customer, "sn_customerservice_case", "delete") is False
    assert row_rule(defs, customer, "task", "read") is False
    assert not field_allowed(defs, customer, "sn_customerservice_case", "work_notes", "read")
    assert field_allowed(defs, customer, "sn_customerservice_case", "comments", "write")
    # a script's ceiling: an agent's script run by a customer reads no more than the customer
    assert row_rule(defs, agent.within(customer), "sn_customerservice_case", "read") == rule
    assert not field_allowed(defs, agent.within(customer), "sn_customerservice_case", "work_notes", "read")


def test_a_customer_without_a_contact_sees_nothing(runtime, client):
    with runtime.engine.begin() as conn:
        service = runtime.records(conn)
        from caseloom.users import add_user

        add_user(service, "orphan", "orphan-pass-1", ["sn_customerservice.customer"])
    r = client.get(f"{CASES}?sysparm_fields=sys_id", headers=basic("orphan", "orphan-pass-1"))
    assert r.status_code == 200 and r.json["result"] == [] and r.headers["X-Total-Count"] == "0"


def test_demo_customers_point_at_generated_records(runtime):
    users = runtime.storage.physical("sys_user")
    with runtime.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(users.c.user_name, users.c.contact)
                                 .where(users.c.user_name.in_(["customer", "customer_admin"]))).all())
    assert rows == {"customer": demo_sys_id("contacts", 0), "customer_admin": demo_sys_id("contacts", 1)}
    assert Query(Term("x", "eq", 1))  # the query API the rules are written in
