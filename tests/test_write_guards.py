"""The write path holds for every caller: read-only fields, direct lifecycle changes, sys_ids that
name one record in the whole database, and history and journals that belong to one record."""

from __future__ import annotations

import pytest

from caseloom.records import RecordError

CASES = "/api/now/table/sn_customerservice_case"
TASKS = "/api/now/table/task"
LISTS = "/api/now/table/sn_publications_recipients_list"


def first(api, path, query, fields="sys_id,number,state,major_case_state,close_notes"):
    rows = api.get(f"{path}?sysparm_query={query}&sysparm_limit=1&sysparm_fields={fields}").json["result"]
    return rows[0]


def refused(response, field: str) -> bool:
    return response.status_code == 400 and response.json["error"]["detail"]["field"] == field


# -- 1. read-only fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["patch", "put"])
@pytest.mark.parametrize(("path", "values", "field"), [
    (CASES, {"major_case_state": "accepted"}, "major_case_state"),  # declared read_only on the case
    (TASKS, {"major_case_state": "accepted"}, "major_case_state"),  # through the parent table
    (CASES, {"number": "CS0000001"}, "number"),  # read_only on task, inherited
    (TASKS, {"number": "CS0000001"}, "number"),
    (CASES, {"sys_created_by": "someone"}, "sys_created_by"),  # sys fields are the platform's
    (CASES, {"sys_mod_count": "99"}, "sys_mod_count"),
    (CASES, {"sys_id": "0" * 32}, "sys_id"),
])
def test_a_read_only_field_is_refused_through_the_api_and_nothing_changes(as_user, method, path, values, field):
    agent = as_user("agent")
    case = first(agent, CASES, "state=1^major_case_stateISEMPTY")
    r = getattr(agent, method)(f"{path}/{case['sys_id']}", json={**values, "short_description": "changed too"})
    assert refused(r, field), r.json
    assert "read-only" in r.json["error"]["message"]
    after = agent.get(f"{CASES}/{case['sys_id']}?sysparm_fields=sys_id,number,state,major_case_state,close_notes,"
                      "short_description").json["result"]
    assert {k: after[k] for k in case} == case and after["short_description"] != "changed too"


def test_a_read_only_value_sent_back_unchanged_is_accepted(as_user):
    """A client that reads a record and writes it back whole (PUT) is not refused for the values it did
    not change."""
    agent = as_user("agent")
    case = first(agent, CASES, "state=1")
    full = agent.get(f"{CASES}/{case['sys_id']}?sysparm_exclude_reference_link=true").json["result"]
    full["short_description"] = "Edited by a PUT of the whole record"
    r = agent.put(f"{CASES}/{case['sys_id']}", json=full)
    assert r.status_code == 200, r.json
    assert r.json["result"]["short_description"] == "Edited by a PUT of the whole record"


def test_an_agent_cannot_make_a_case_major_and_adopt_other_customers_cases(as_user):
    agent = as_user("agent")
    case = first(agent, CASES, "state=1^major_case_stateISEMPTY^parentISEMPTY")
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"major_case_state": "accepted"})
    assert refused(r, "major_case_state")
    r = agent.post("/api/caseloom/actions/sn_customerservice_case/" + case["sys_id"] + "/add_child_cases",
                   json={"cases": [first(agent, CASES, "state=10")["sys_id"]]})
    assert r.status_code == 409


@pytest.mark.parametrize(("values", "allowed"), [
    ({"major_case_state": "proposed"}, True),  # the contract's candidate created directly
    ({"major_case_state": "accepted"}, False),
    ({"number": "CS0000042"}, False),
    ({"sys_created_by": "someone"}, False),
])
def test_creating_with_a_read_only_field(as_user, values, allowed):
    r = as_user("agent").post(CASES, json={"short_description": "New", **values})
    field = next(iter(values))
    if allowed:
        assert r.status_code == 201 and r.json["result"][field] == values[field]
    else:
        assert refused(r, field), r.json


def test_a_locked_list_cannot_be_unlocked_edited_and_relocked(as_user, runtime):
    author = as_user("author")
    lst = author.post(LISTS, json={"name": "Locked", "type": "accounts", "conditions": "active=true"}).json["result"]
    with runtime.transaction() as service, service.by_definitions():
        service.update("sn_publications_recipients_list", lst["sys_id"], {"locked": True})
    r = author.patch(f"{LISTS}/{lst['sys_id']}", json={"locked": "false"})
    assert refused(r, "locked")
    r = author.patch(f"{LISTS}/{lst['sys_id']}", json={"conditions": "active=false"})
    assert r.status_code == 400 and "read-only" in r.json["error"]["message"]
    assert author.get(f"{LISTS}/{lst['sys_id']}").json["result"]["conditions"] == "active=true"


def test_rules_and_effects_declared_in_definitions_still_set_read_only_fields(as_user):
    agent, mim = as_user("agent"), as_user("mim")
    case = first(agent, CASES, "state=1^major_case_stateISEMPTY^parentISEMPTY")
    r = agent.post(f"/api/caseloom/actions/sn_customerservice_case/{case['sys_id']}/propose_major_case",
                   json={"reason": "Many customers"})
    assert r.status_code == 200 and r.json["result"]["major_case_state"] == "proposed"
    r = mim.post(f"/api/caseloom/actions/sn_customerservice_case/{case['sys_id']}/accept_major_case", json={})
    assert r.status_code == 200, r.json


def test_the_record_service_refuses_read_only_fields_to_every_caller(runtime):
    with runtime.transaction() as service:
        case = service.query("sn_customerservice_case", __import__("caseloom.query", fromlist=["Query"]).Query(),
                             ["sys_id"], 1)[0]
        with pytest.raises(RecordError) as caught:
            service.update("sn_customerservice_case", case["sys_id"], {"number": "X1"})
        assert caught.value.field == "number"
        with pytest.raises(RecordError):
            service.update_many("sn_customerservice_case", [(case["sys_id"], {"major_case_state": "accepted"})])
        with service.by_definitions():
            service.update("sn_customerservice_case", case["sys_id"], {"major_case_state": "proposed"})


def test_per_state_read_only_fields_are_refused(as_user):
    agent = as_user("agent")
    closed = first(agent, CASES, "state=3^priority!=1")
    r = agent.patch(f"{CASES}/{closed['sys_id']}", json={"priority": "1"})
    assert refused(r, "priority") and "Closed" in r.json["error"]["message"]
    r = agent.patch(f"{TASKS}/{closed['sys_id']}", json={"short_description": "rewritten"})
    assert refused(r, "short_description")


# -- 2. a direct change of the lifecycle field --------------------------------------------------------

def test_a_direct_close_needs_the_close_transitions_inputs(as_user):
    agent = as_user("agent")
    case = first(agent, CASES, "state=10^close_notesISEMPTY^major_case_stateISEMPTY")
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"state": "3"})
    assert refused(r, "close_notes"), r.json
    assert "close_notes" in r.json["error"]["message"] and "Close" in r.json["error"]["message"]
    assert first(agent, CASES, f"sys_id={case['sys_id']}")["state"] == "10"
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"state": "3", "close_notes": "Fixed on the phone"})
    assert r.status_code == 200 and r.json["result"]["state"] == "3"


def test_a_direct_change_needs_a_journal_input_in_the_same_write(as_user):
    agent = as_user("agent")
    case = first(agent, CASES, "state=10^major_case_stateISEMPTY")
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"state": "18"})  # request_info asks the customer a question
    assert refused(r, "comments")
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"state": "18", "comments": "Which version do you run?"})
    assert r.status_code == 200


def test_a_direct_change_needs_the_transitions_roles(as_user, runtime):
    from caseloom.users import add_user

    with runtime.transaction() as service:
        add_user(service, "reader", "reader-pass-1", [])
    case = first(as_user("agent"), CASES, "state=1")
    from conftest import basic

    r = as_user("agent").client.patch(f"{CASES}/{case['sys_id']}", json={"state": "10"},
                                      headers=basic("reader", "reader-pass-1"))
    assert r.status_code == 403


def test_a_direct_change_the_state_does_not_allow_is_409(as_user):
    agent = as_user("agent")
    case = first(agent, CASES, "state=1")
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"state": "6", "resolution_code": "duplicate", "close_notes": "x"})
    assert r.status_code == 409


# -- 9. one sys_id, one record ----------------------------------------------------------------------

def test_a_client_chosen_sys_id_taken_anywhere_in_the_database_is_refused(as_user):
    admin = as_user("admin")
    user = admin.get("/api/now/table/sys_user?sysparm_query=user_name=agent&sysparm_fields=sys_id").json["result"][0]
    r = as_user("agent").post(CASES, json={"sys_id": user["sys_id"], "short_description": "Shadow"})
    assert refused(r, "sys_id") and "already" in r.json["error"]["message"]
    fresh = "ab" * 16
    r = as_user("agent").post(CASES, json={"sys_id": fresh, "short_description": "Mine"})
    assert r.status_code == 201 and r.json["result"]["sys_id"] == fresh


def test_history_and_journal_reads_match_the_table(runtime):
    """Rows written for another table under the same key (by an older version, or by hand) are not shown."""
    from caseloom.query import Query

    with runtime.transaction() as service:
        case = service.query("sn_customerservice_case", Query(), ["sys_id"], 1)[0]["sys_id"]
        service._system_insert("sys_journal_field", [{"name": "sys_user", "element_id": case, "element": "comments",
                                                      "value": "not this case's"}])
        service.update("sn_customerservice_case", case, {"comments": "this case's"})
        texts = [e["value"] for e in service.journal("sn_customerservice_case", case)]
        assert "this case's" in texts and "not this case's" not in texts
        texts = [e["value"] for e in service.journal("task", case)]
        assert "this case's" in texts  # read through the parent table: the same record


def test_journal_written_through_the_parent_table_is_the_records(as_user):
    agent = as_user("agent")
    case = first(agent, CASES, "state=10")
    assert agent.patch(f"{TASKS}/{case['sys_id']}", json={"work_notes": "via task"}).status_code == 200
    rows = as_user("admin").get("/api/now/table/sys_journal_field?sysparm_query=element_id=" + case["sys_id"]
                                + "^value=via task&sysparm_fields=name").json["result"]
    assert rows == [{"name": "sn_customerservice_case"}]


def test_the_forms_history_shows_only_the_records_own_changes(client, runtime, as_user):
    from test_access import sign_in

    agent = as_user("agent")
    case = first(agent, CASES, "state=10")
    assert agent.patch(f"{CASES}/{case['sys_id']}", json={"short_description": "Ours to see"}).status_code == 200
    with runtime.transaction() as service:
        service._system_insert("sys_audit", [{"tablename": "sys_user", "documentkey": case["sys_id"],
                                              "fieldname": "short_description", "newvalue": "Someone else's"}])
    sign_in(client, "agent", "agent")
    page = client.get(f"/sn_customerservice_case.do?sys_id={case['sys_id']}").get_data(as_text=True)
    assert "Ours to see" in page and "Someone else&#39;s" not in page and "Someone else's" not in page


def test_a_record_cannot_refer_to_itself(as_user):
    agent = as_user("agent")
    case = first(agent, CASES, "state=10^parentISEMPTY")
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"parent": {"value": case["sys_id"]}})
    assert refused(r, "parent") and "itself" in r.json["error"]["message"]
