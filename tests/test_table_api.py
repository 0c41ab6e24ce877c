"""The Table API in ServiceNow's shapes: list, filter, page, create, update, delete."""

from urllib.parse import quote

import pytest

CASES = "/api/now/table/sn_customerservice_case"


def test_list_returns_strings_and_reference_links(as_user):
    r = as_user("agent").get(CASES + "?sysparm_limit=5&sysparm_query=accountISNOTEMPTY")
    assert r.status_code == 200
    rows = r.json["result"]
    assert len(rows) == 5
    first = rows[0]
    assert isinstance(first["priority"], str) and first["priority"] in {"1", "2", "3", "4"}
    assert first["account"]["value"] and first["account"]["link"].endswith(
        "/api/now/table/customer_account/" + first["account"]["value"])
    assert first["number"].startswith("CS") and len(first["number"]) == 9
    assert "user_password" not in first


def test_total_count_and_link_headers_page_through_everything(as_user):
    api = as_user("agent")
    total = int(api.get(CASES + "?sysparm_limit=1").headers["X-Total-Count"])
    seen, offset = [], 0
    while offset < total:
        r = api.get(f"{CASES}?sysparm_limit=4&sysparm_offset={offset}&sysparm_fields=sys_id")
        seen += [row["sys_id"] for row in r.json["result"]]
        offset += 4
        if offset < total:
            assert 'rel="next"' in r.headers["Link"]
    assert len(seen) == len(set(seen)) == total
    assert 'rel="first"' in r.headers["Link"] and 'rel="last"' in r.headers["Link"]


@pytest.mark.parametrize("query, check", [
    ("state=10", lambda r: r["state"] == "10"),
    ("state!=10", lambda r: r["state"] != "10"),
    ("priority<=2", lambda r: int(r["priority"]) <= 2),
    ("priority>2", lambda r: int(r["priority"]) > 2),
    ("stateIN1,18", lambda r: r["state"] in {"1", "18"}),
    ("stateNOTIN1,18", lambda r: r["state"] not in {"1", "18"}),
    ("short_descriptionLIKEportal", lambda r: "portal" in r["short_description"].lower()),
    ("short_descriptionNOTLIKEportal", lambda r: "portal" not in r["short_description"].lower()),
    ("short_descriptionSTARTSWITHcannot", lambda r: r["short_description"].lower().startswith("cannot")),
    ("short_descriptionENDSWITHslow", lambda r: r["short_description"].lower().endswith("slow")),
    ("consumerISEMPTY", lambda r: r["consumer"] == ""),
    ("consumerISNOTEMPTY", lambda r: r["consumer"] != ""),
    ("state=1^ORstate=10", lambda r: r["state"] in {"1", "10"}),
    ("priority=1^NQpriority=2", lambda r: r["priority"] in {"1", "2"}),
])
def test_encoded_query_operators(as_user, query, check):
    api = as_user("agent")
    r = api.get(f"{CASES}?sysparm_query={query}&sysparm_exclude_reference_link=true")
    assert r.status_code == 200, r.json
    rows = r.json["result"]
    assert rows, f"demo data should match {query}"
    assert all(check(row) for row in rows)
    everything = api.get(f"{CASES}?sysparm_fields=sys_id").json["result"]
    assert len(rows) < len(everything)


def test_dot_walk_and_order(as_user):
    api = as_user("agent")
    r = api.get(f"{CASES}?sysparm_query=account.nameLIKEacme^ORDERBYDESCnumber"
                "&sysparm_fields=number,account.name")
    rows = r.json["result"]
    assert rows and all("acme" in row["account.name"].lower() for row in rows)
    numbers = [row["number"] for row in rows]
    assert numbers == sorted(numbers, reverse=True)


def test_display_values(as_user):
    r = as_user("agent").get(f"{CASES}?sysparm_limit=1&sysparm_query=state=18^accountISNOTEMPTY"
                             "&sysparm_display_value=all&sysparm_fields=state,account")
    row = r.json["result"][0]
    assert row["state"] == {"display_value": "Awaiting Info", "value": "18"}
    assert row["account"]["display_value"] and len(row["account"]["value"]) == 32
    r = as_user("agent").get(f"{CASES}?sysparm_limit=1&sysparm_query=state=18&sysparm_display_value=true"
                             "&sysparm_fields=state")
    assert r.json["result"][0]["state"] == "Awaiting Info"


def test_create_update_delete_round_trip(as_user):
    api = as_user("manager")
    r = api.post(CASES, json={"short_description": "Router reboots", "priority": "2", "comments": "First words"})
    assert r.status_code == 201
    case = r.json["result"]
    assert case["number"].startswith("CS") and case["state"] == "1" and case["sys_mod_count"] == "0"
    url = f"{CASES}/{case['sys_id']}"
    r = api.patch(url, json={"state": "10", "work_notes": "Looking into it"})
    assert r.status_code == 200 and r.json["result"]["state"] == "10" and r.json["result"]["sys_mod_count"] == "1"
    audit = api.get(f"/api/now/table/sys_audit?sysparm_query=documentkey={case['sys_id']}").json["result"]
    assert {(a["fieldname"], a["oldvalue"], a["newvalue"]) for a in audit} == {
        ("state", "1", "10"), ("work_notes", "", "Looking into it")}
    journal = api.get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={case['sys_id']}"
                      "^ORDERBYelement").json["result"]
    assert [(j["element"], j["value"]) for j in journal] == [("comments", "First words"),
                                                              ("work_notes", "Looking into it")]
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404


def test_parent_table_sees_child_rows(as_user):
    api = as_user("admin")
    case = api.post(CASES, json={"short_description": "Inherited"}).json["result"]
    r = api.get(f"/api/now/table/task?sysparm_query=sys_id={case['sys_id']}&sysparm_fields=number,sys_class_name")
    assert r.json["result"] == [{"number": case["number"], "sys_class_name": "sn_customerservice_case"}]


@pytest.mark.parametrize("body, field", [
    ({"short_description": "x", "nonsense": "1"}, "nonsense"),
    ({"short_description": "x", "priority": "9"}, "priority"),
    ({"short_description": "x", "priority": "high"}, "priority"),
    ({"description": "no short description"}, "short_description"),
    ({"short_description": "x", "account": "0" * 32}, "account"),
    ({"short_description": "x", "account": "not-a-sys-id"}, "account"),
    ({"short_description": "x" * 161}, "short_description"),
    ({"short_description": "x", "proactive": "perhaps"}, "proactive"),
])
def test_bad_input_is_400_naming_the_field_and_writes_nothing(as_user, body, field):
    api = as_user("admin")
    before = api.get(CASES + "?sysparm_limit=1").headers["X-Total-Count"]
    r = api.post(CASES, json=body)
    assert r.status_code == 400
    assert r.json["status"] == "failure"
    assert r.json["error"]["detail"]["field"] == field
    assert field in r.json["error"]["message"]
    assert api.get(CASES + "?sysparm_limit=1").headers["X-Total-Count"] == before


def test_errors_401_403_404(client, as_user):
    r = client.get(CASES)
    assert r.status_code == 401 and r.json["status"] == "failure"
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    from conftest import basic

    assert client.get(CASES, headers=basic("agent", "wrong")).status_code == 401
    assert as_user("agent").get("/api/now/table/sys_audit").status_code == 403
    assert as_user("agent").delete(f"{CASES}/{'a' * 32}").status_code == 403
    assert as_user("agent").get(f"{CASES}/{'a' * 32}").status_code == 404
    assert as_user("agent").get("/api/now/table/no_such_table").status_code == 404


def test_bad_query_is_400_naming_the_field(as_user):
    r = as_user("agent").get(CASES + "?sysparm_query=colourLIKEred")
    assert r.status_code == 400 and "colour" in r.json["error"]["message"]
    r = as_user("agent").get(CASES + "?sysparm_fields=number,nope")
    assert r.status_code == 400 and "nope" in r.json["error"]["message"]


@pytest.mark.parametrize(("query", "detail"), [
    ("opened_atSAMEASpriority", "opened_atSAMEASpriority: opened_at is a date and time and priority is a number; "
                                "only fields of one kind compare"),
    ("accountSAMEASassigned_to", "accountSAMEASassigned_to: account is a reference to customer_account and "
                                 "assigned_to is a reference to sys_user; only fields of one kind compare"),
    ("opened_atGT_FIELDno_such", "no_such: table 'sn_customerservice_case' has no field 'no_such'"),
    ("opened_atGT_FIELD2024-01-01", "opened_at: GT_FIELD compares with another field; its value is that field's "
                                    "name (e.g. opened_atGT_FIELDother_field), not '2024-01-01'"),
])
def test_a_comparison_of_two_fields_that_cannot_be_made_is_a_400(as_user, query, detail):
    r = as_user("agent").get(f"{CASES}?sysparm_query={query}")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert detail in r.json["error"]["detail"] or detail in r.json["error"]["message"], r.json


def test_a_body_of_display_values_is_stored_as_values(as_user):
    """`sysparm_input_display_value=true`, as ServiceNow takes it: a choice by its label, a reference by the
    name of the record it points at; without it (or `false`) the same body is refused as values."""
    api = as_user("agent")
    body = {"short_description": "Printer jams", "priority": "2 - High", "assigned_to": "Alex Agent",
            "account": ""}
    r = api.post(f"{CASES}?sysparm_input_display_value=true&sysparm_exclude_reference_link=true", json=body)
    assert r.status_code == 201, r.json
    created = r.json["result"]
    agent = api.get("/api/now/table/sys_user?sysparm_query=user_name=agent&sysparm_fields=sys_id").json["result"][0]
    assert (created["priority"], created["assigned_to"]) == ("2", agent["sys_id"])
    r = api.patch(f"{CASES}/{created['sys_id']}?sysparm_input_display_value=true", json={"state": "open"})
    assert r.status_code == 200 and r.json["result"]["state"] == "10"  # a label in any case; a value is taken too
    assert api.patch(f"{CASES}/{created['sys_id']}?sysparm_input_display_value=true",
                     json={"priority": "1"}).json["result"]["priority"] == "1"
    assert api.post(CASES, json=body).status_code == 400  # values expected: "2 - High" is no priority
    assert api.post(f"{CASES}?sysparm_input_display_value=false", json=body).status_code == 400


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"priority": "Urgent"}, "priority", "'Urgent' is not one of the choices (1 - Critical, 2 - High, 3 - Moderate, "
                                         "4 - Low)"),
    ({"assigned_to": "Nobody Here"}, "assigned_to", "no user named 'Nobody Here'"),
])
def test_a_display_value_nothing_has_is_a_400_naming_the_field(as_user, body, field, message):
    api = as_user("agent")
    r = api.post(f"{CASES}?sysparm_input_display_value=true", json={"short_description": "x", **body})
    assert r.status_code == 400, r.json
    assert r.json["error"]["detail"]["field"] == field and message in r.json["error"]["message"], r.json


def test_sysparm_input_display_value_takes_true_or_false(as_user):
    r = as_user("agent").post(f"{CASES}?sysparm_input_display_value=maybe", json={"short_description": "x"})
    assert r.status_code == 400 and "true or false" in r.json["error"]["detail"], r.json


def test_sysparm_no_count_leaves_the_total_out(as_user):
    """ServiceNow's `sysparm_no_count=true`: no count of the matches (on a million records, the list's cost), so
    no X-Total-Count, and the Link header offers next while a page is full, never last."""
    api = as_user("agent")
    counted = api.get(f"{CASES}?sysparm_limit=2&sysparm_fields=sys_id")
    total = int(counted.headers["X-Total-Count"])
    assert total > 4
    r = api.get(f"{CASES}?sysparm_limit=2&sysparm_fields=sys_id&sysparm_no_count=true")
    assert r.status_code == 200 and r.json["result"] == counted.json["result"]
    assert "X-Total-Count" not in r.headers
    assert 'rel="next"' in r.headers["Link"] and 'rel="last"' not in r.headers["Link"]
    end = api.get(f"{CASES}?sysparm_limit=2&sysparm_offset={total - 1}&sysparm_fields=sys_id&sysparm_no_count=true")
    assert len(end.json["result"]) == 1 and 'rel="next"' not in end.headers["Link"]
    bad = api.get(f"{CASES}?sysparm_no_count=perhaps")
    assert bad.status_code == 400 and "sysparm_no_count: true or false" in bad.json["error"]["detail"]


@pytest.mark.parametrize(("servicenow", "caseloom"), [
    ("stateNOT IN6,3,7", "stateNOTIN6,3,7"),  # as ServiceNow's "Copy query" writes "is not one of"
    ("short_descriptionNOT LIKElog", "short_descriptionNOTLIKElog"),
    ("short_descriptionCONTAINSlog", "short_descriptionLIKElog"),
    ("assigned_toDYNAMIC90d1921e5f510100a9ad2572f2b477fe", "assigned_to=javascript:gs.getUserID()"),  # (dynamic) Me
    ("assignment_groupDYNAMICd6435e965f510100a9ad2572f2b47744^active=true",  # (dynamic) One of My Groups
     "assignment_group=javascript:gs.getUser().getMyGroups()^active=true"),
])
def test_servicenows_other_spellings_read_the_same(as_user, servicenow, caseloom):
    """Queries as ServiceNow writes them, copied from its lists or scripts, find what Caseloom's own spelling finds."""
    api, admin = as_user("agent"), as_user("admin")
    agent = admin.get("/api/now/table/sys_user?sysparm_query=user_name=agent&sysparm_fields=sys_id").json["result"][0]
    group = admin.get(f"{CASES}?sysparm_query=assignment_groupISNOTEMPTY^active=true&sysparm_limit=1"
                      f"&sysparm_fields=assignment_group&sysparm_exclude_reference_link=true").json["result"][0]
    assert admin.post("/api/now/table/sys_user_grmember", json={"user": agent["sys_id"],
                                                                "group": group["assignment_group"]}).status_code == 201
    found = [api.get(f"{CASES}?sysparm_query={query}&sysparm_fields=sys_id&sysparm_limit=1000") for query in
             (servicenow, caseloom)]
    assert [r.status_code for r in found] == [200, 200], [r.json for r in found]
    assert found[0].json["result"] == found[1].json["result"] and found[0].json["result"]


def test_an_unknown_dynamic_filter_is_a_400_naming_the_known_ones(as_user):
    r = as_user("agent").get(f"{CASES}?sysparm_query=assigned_toDYNAMIC0123456789abcdef0123456789abcdef")
    assert r.status_code == 400 and "One of My Groups (d6435e965f510100a9ad2572f2b47744)" in str(r.json["error"])


@pytest.mark.parametrize(("query", "holds"), [
    ("opened_atDATEPARTMonday@javascript:gs.datePart('dayofweek','monday','EE')", lambda t: t.isoweekday() == 1),
    ("opened_atDATEPARTWeekend@javascript:gs.datePart('dayofweek','friday','GT')", lambda t: t.isoweekday() > 5),
    ("opened_atDATEPART12 am@javascript:gs.datePart('hour','12am','GE')", lambda t: t.hour >= 0),  # midnight on
    ("opened_atDATEPARTafter 2000@javascript:gs.datePart('year','2000','GT')", lambda t: t.year > 2000),
    # ISO weeks: 31 December 2026 is in week 53, 30 December 2024 in week 1 (of 2025)
    ("opened_atDATEPARTWeek 53@javascript:gs.datePart('week','53','EE')", lambda t: t.isocalendar()[1] == 53),
    ("opened_atDATEPARTWeek 1@javascript:gs.datePart('week','1','EE')", lambda t: t.isocalendar()[1] == 1),
])
def test_a_date_part_finds_the_records_whose_moment_has_it(as_user, query, holds):
    """ServiceNow's DATEPART ("trend" in its list filter): the cases opened on a Monday, at a weekend, from midnight
    on, after 2000, in an ISO week (tests/test_condition_parity.py tells every part and comparison apart)."""
    import datetime as dt

    api = as_user("agent")
    # cases of their own opened on a Monday, a Saturday and in weeks 53 and 1: the demo's dates follow the day
    # it was loaded
    for opened in ("2026-11-30 09:15:00", "2026-11-28 00:30:00", "2026-12-31 23:30:00", "2024-12-30 08:00:00"):
        made = api.post(CASES, json={"short_description": "Opened on a known day", "opened_at": opened})
        assert made.status_code == 201, made.json
    every = api.get(f"{CASES}?sysparm_query=opened_atISNOTEMPTY&sysparm_fields=sys_id,opened_at&sysparm_limit=10000")
    found = api.get(f"{CASES}?sysparm_query={quote(query)}&sysparm_fields=sys_id&sysparm_limit=10000")
    assert found.status_code == 200, found.json
    expected = {c["sys_id"] for c in every.json["result"] if holds(dt.datetime.fromisoformat(c["opened_at"]))}
    assert expected and {c["sys_id"] for c in found.json["result"]} == expected


@pytest.mark.parametrize(("query", "detail"), [
    ("short_descriptionDATEPARTMonday@javascript:gs.datePart('dayofweek','monday','EE')",
     "short_description: DATEPART reads a date or a date and time; short_description is a string field"),
    ("opened_atDATEPARTW3@javascript:gs.datePart('weekofyear','3','EE')", "DATEPART part 'weekofyear' is not one of"),
    ("opened_atDATEPARTW54@javascript:gs.datePart('week','54','EE')", "'54' is not a week (from 1 to 53)"),
    ("opened_atDATEPARTMonday", "opened_at: DATEPART takes label@javascript:gs.datePart('part','value','comparison')"),
])
def test_a_date_part_that_cannot_be_read_is_a_400(as_user, query, detail):
    r = as_user("agent").get(f"{CASES}?sysparm_query={quote(query)}")
    assert r.status_code == 400 and detail in str(r.json["error"]), r.json
