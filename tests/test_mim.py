"""Major Issue Management through the API: propose, accept, reject, add children, sync, close."""

import pytest

CASES = "/api/now/table/sn_customerservice_case"
ACTIONS = "/api/caseloom/actions/sn_customerservice_case"
SYNC = "sn_customerservice.parent_child_case_sync"


def cases(api, query,
          fields="sys_id,number,state,parent,major_case_state,priority,close_notes,resolution_code,resolved_at,resolved_by"):
    r = api.get(f"{CASES}?sysparm_query={query}&sysparm_fields={fields}&sysparm_exclude_reference_link=true")
    assert r.status_code == 200, r.json
    return r.json["result"]


def act(api, sys_id, action, **inputs):
    return api.post(f"{ACTIONS}/{sys_id}/{action}", json=inputs)


def journal(api, sys_id, element):
    r = api.get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={sys_id}^element={element}"
                "^ORDERBYsys_created_on")
    return [j["value"] for j in r.json["result"]]


def set_property(api, name, value):
    prop = api.get(f"/api/now/table/sys_properties?sysparm_query=name={name}").json["result"][0]
    assert api.patch(f"/api/now/table/sys_properties/{prop['sys_id']}", json={"value": value}).status_code == 200


@pytest.fixture
def agent(as_user):
    return as_user("agent")


@pytest.fixture
def mim(as_user):
    return as_user("mim")


@pytest.fixture
def major(agent, mim):
    """An accepted major case, proposed from an open customer case (which becomes its first child)."""
    case = cases(agent, "state=10^accountISNOTEMPTY^parentISEMPTY")[0]
    assert act(agent, case["sys_id"], "propose_major_case", reason="Storage outage in Frankfurt").status_code == 200
    r = act(mim, case["sys_id"], "accept_major_case", notes="Confirmed by NOC")
    assert r.status_code == 200, r.json
    major_id = r.json["details"]["created"][0]["sys_id"]
    return {"sys_id": major_id, "first_child": case["sys_id"]}


def test_propose_sets_candidate_writes_reason_and_notifies_managers(agent, as_user):
    case = cases(agent, "state=18^accountISNOTEMPTY")[0]
    r = act(agent, case["sys_id"], "propose_major_case", reason="Many customers report it")
    assert r.status_code == 200, r.json
    assert r.json["result"]["major_case_state"] == "proposed"
    assert journal(agent, case["sys_id"], "work_notes") == ["Proposed as a major case: Many customers report it"]
    mails = as_user("admin").get(f"/api/now/table/sys_email?sysparm_query=instance={case['sys_id']}").json["result"]
    assert len(mails) == 1 and mails[0]["state"] == "ready"
    assert set(mails[0]["recipients"].split(",")) == {"manager@example.com", "mim@example.com"}
    assert case["number"] in mails[0]["subject"]


@pytest.mark.parametrize("state", ["6", "3", "7"])
def test_resolved_closed_canceled_cases_cannot_be_proposed(agent, state):
    case = cases(agent, f"state={state}")[0]
    r = act(agent, case["sys_id"], "propose_major_case", reason="x")
    assert r.status_code == 409
    assert "Only a New, Open or Awaiting Info case" in r.json["error"]["message"]
    after = cases(agent, f"sys_id={case['sys_id']}")[0]
    assert after == case and journal(agent, case["sys_id"], "work_notes") == []


def test_reason_is_required(agent):
    case = cases(agent, "state=1")[0]
    r = act(agent, case["sys_id"], "propose_major_case")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "reason"


def test_accept_needs_a_major_issue_manager(agent, as_user):
    case = cases(agent, "state=1^accountISNOTEMPTY")[0]
    act(agent, case["sys_id"], "propose_major_case", reason="x")
    assert act(agent, case["sys_id"], "accept_major_case").status_code == 403
    # the manager role contains the major issue manager role
    assert act(as_user("manager"), case["sys_id"], "accept_major_case").status_code == 200


def test_accepting_a_customer_case_creates_a_major_case_with_it_as_child(agent, major):
    parent = cases(agent, f"sys_id={major['sys_id']}", "sys_id,major_case_state,proactive,account,state")[0]
    assert parent == {"sys_id": major["sys_id"], "major_case_state": "accepted", "proactive": "true",
                      "account": "", "state": "10"}
    child = cases(agent, f"sys_id={major['first_child']}")[0]
    assert child["parent"] == major["sys_id"] and child["major_case_state"] == ""


def test_a_candidate_created_directly_becomes_the_major_case(agent, mim):
    r = agent.post(CASES, json={"short_description": "Email outage", "major_case_state": "proposed"})
    candidate = r.json["result"]["sys_id"]
    r = act(mim, candidate, "accept_major_case")
    assert r.status_code == 200
    assert r.json["result"]["major_case_state"] == "accepted" and r.json["result"]["proactive"] == "true"
    assert "created" not in r.json.get("details", {})


def test_reject_writes_reason_and_makes_it_a_regular_case(agent, mim):
    case = cases(agent, "state=10^accountISNOTEMPTY")[0]
    act(agent, case["sys_id"], "propose_major_case", reason="x")
    r = act(mim, case["sys_id"], "reject_major_case", reason="Only one customer affected")
    assert r.status_code == 200 and r.json["result"]["major_case_state"] == "rejected"
    assert journal(agent, case["sys_id"], "work_notes")[-1] == "Major case proposal rejected: Only one customer affected"
    assert act(mim, case["sys_id"], "reject_major_case", reason="again").status_code == 409


def test_add_child_cases_reports_how_many_and_why_not(agent, major):
    open_cases = cases(agent, "state=1^parentISEMPTY^major_case_stateISEMPTY")
    closed = cases(agent, "state=3")[0]
    resolved = cases(agent, "state=6^parentISEMPTY")[0]
    wanted = [c["sys_id"] for c in open_cases[:2]] + [closed["sys_id"], resolved["sys_id"], major["first_child"],
                                                        major["sys_id"]]
    r = act(agent, major["sys_id"], "add_child_cases", cases=wanted)
    assert r.status_code == 200, r.json
    assert r.json["message"] == "2 of 6 selected cases were added"
    reasons = {x["sys_id"]: x["reason"] for x in r.json["details"]["refused"]}
    assert reasons == {closed["sys_id"]: "it is closed", resolved["sys_id"]: "it is resolved",
                       major["first_child"]: "it is already a child of this major case",
                       major["sys_id"]: "it is the major case itself"}
    children = {c["sys_id"] for c in cases(agent, f"parent={major['sys_id']}")}
    assert children == {open_cases[0]["sys_id"], open_cases[1]["sys_id"], major["first_child"]}


@pytest.mark.parametrize("action, inputs, message", [
    ("propose_major_case", {"reason": {"a": 1}}, "reason: expected text, got an object"),
    ("propose_major_case", {"reason": ["Storage", "outage"]}, "reason: expected text, got a list"),
    ("add_child_cases", {"cases": {"a": 1}}, "cases: expected a list of sys_ids, got an object"),
    ("add_child_cases", {"cases": 5}, "cases: expected a list of sys_ids, got int"),
    ("add_child_cases", {"cases": [5, None, {}]}, "cases: 5 is not a sys_id (32 hexadecimal digits)"),
    ("add_child_cases", {"cases": "notalist"}, "cases: 'notalist' is not a sys_id (32 hexadecimal digits)"),
], ids=["text as an object", "text as a list", "records as an object", "records as a number",
        "records of other values", "records as a word"])
def test_an_action_input_of_the_wrong_kind_is_400_naming_it_and_nothing_is_written(agent, major, action, inputs,
                                                                                    message):
    """A free input is text, a choice or true/false, and a records input sys_ids: anything else is
    refused naming the input, never written as Python's text of it, and the record is unchanged."""
    target = major["sys_id"] if action == "add_child_cases" else \
        cases(agent, "state=18^accountISNOTEMPTY^major_case_stateISEMPTY")[0]["sys_id"]
    before = cases(agent, f"sys_id={target}")[0]
    notes = journal(agent, target, "work_notes")
    r = act(agent, target, action, **inputs)
    assert r.status_code == 400, r.json
    assert r.json["error"]["message"] == message
    assert r.json["error"]["detail"]["field"] == message.split(":")[0]
    assert cases(agent, f"sys_id={target}")[0] == before
    assert journal(agent, target, "work_notes") == notes


def _with_children(agent, major):
    free = cases(agent, "stateIN1,10^parentISEMPTY^major_case_stateISEMPTY")[:3]
    act(agent, major["sys_id"], "add_child_cases", cases=[c["sys_id"] for c in free])
    return [c["sys_id"] for c in free] + [major["first_child"]]


def test_sync_copies_fields_and_journal_to_open_children_when_the_property_is_on(agent, as_user, major):
    children = _with_children(agent, major)
    set_property(as_user("admin"), SYNC, "true")
    # one child is resolved: it is left alone
    resolved = children[0]
    assert act(agent, resolved, "resolve_case", resolution_code="solved_remotely", close_notes="Fixed").status_code == 200
    r = agent.patch(f"{CASES}/{major['sys_id']}", json={"priority": "1", "comments": "We found the cause."})
    assert r.status_code == 200
    for child in children[1:]:
        assert cases(agent, f"sys_id={child}")[0]["priority"] == "1"
        assert journal(agent, child, "comments")[-1] == "We found the cause."
    assert cases(agent, f"sys_id={resolved}")[0]["priority"] != "1"
    assert "We found the cause." not in journal(agent, resolved, "comments")
    # each open child's contact hears of the customer-visible comment
    mails = as_user("admin").get("/api/now/table/sys_email?sysparm_query=subjectSTARTSWITHUpdate on").json["result"]
    assert {m["instance"] for m in mails} >= set(children[1:])
    assert resolved not in {m["instance"] for m in mails}  # no word of an update its case did not get
    # each names the customer's own case, as a reply finds it (contract: the record's number in the subject)
    numbers = {c["sys_id"]: c["number"] for c in cases(agent, f"parent={major['sys_id']}")}
    assert all(m["subject"].startswith(f"Update on your case {numbers[m['instance']]}: ") for m in mails), mails


def test_no_sync_when_the_property_is_off(agent, major):
    children = _with_children(agent, major)
    agent.patch(f"{CASES}/{major['sys_id']}", json={"priority": "1", "comments": "Internal progress"})
    for child in children:
        assert "Internal progress" not in journal(agent, child, "comments")


def test_syncing_state_brings_close_notes_and_resolution_code(agent, as_user, major):
    children = _with_children(agent, major)
    set_property(as_user("admin"), SYNC, "true")
    r = act(agent, major["sys_id"], "resolve_case", resolution_code="solved_permanently", close_notes="Disk replaced")
    assert r.status_code == 200, r.json
    resolved = cases(agent, f"sys_id={major['sys_id']}")[0]
    assert resolved["resolved_at"] and resolved["resolved_by"]
    for child in cases(agent, f"sys_idIN{','.join(children)}"):
        assert (child["state"], child["resolution_code"], child["close_notes"]) == ("6", "solved_permanently", "Disk replaced")
        assert (child["resolved_at"], child["resolved_by"]) == (resolved["resolved_at"], resolved["resolved_by"])


def test_closing_the_major_case_closes_open_children_in_one_audited_change(agent, as_user, major):
    children = _with_children(agent, major)
    awaiting = children[1]
    act(agent, awaiting, "open_case")
    resolved = children[0]
    act(agent, resolved, "open_case")
    act(agent, resolved, "resolve_case", resolution_code="solved_remotely", close_notes="Own fix")
    own = cases(agent, f"sys_id={resolved}")[0]["resolved_at"]
    r = act(agent, major["sys_id"], "close_case", close_notes="Storage restored", resolution_code="solved_permanently")
    assert r.status_code == 200, r.json
    closed = cases(agent, f"sys_id={major['sys_id']}")[0]  # closed without being resolved: resolved as it closed
    assert closed["resolved_at"] and closed["resolved_by"]
    for child in cases(agent, f"parent={major['sys_id']}"):
        if child["sys_id"] == resolved:
            assert child["state"] == "6" and child["close_notes"] == "Own fix" and child["resolved_at"] == own
        else:
            assert (child["state"], child["close_notes"], child["resolution_code"]) == (
                "3", "Storage restored", "solved_permanently")
            assert (child["resolved_at"], child["resolved_by"]) == (closed["resolved_at"], closed["resolved_by"])
    audit = as_user("manager").get("/api/now/table/sys_audit?sysparm_query=fieldname=state^newvalue=3"
                                   f"^documentkeyIN{','.join(children)}&sysparm_fields=transaction").json["result"]
    assert len(audit) == len(children) - 1 and len({a["transaction"] for a in audit}) == 1
    # the customers of the children it closed hear of it; the resolved child's were told by their own case
    mails = as_user("admin").get("/api/now/table/sys_email?sysparm_query=notification=major_case_closed"
                                 "&sysparm_fields=instance&sysparm_exclude_reference_link=true").json["result"]
    assert {m["instance"] for m in mails} == set(children) - {resolved}


def test_a_transition_the_state_does_not_allow_is_409_and_changes_nothing(agent):
    case = cases(agent, "state=1")[0]
    r = act(agent, case["sys_id"], "resolve_case", resolution_code="solved_remotely", close_notes="x")
    assert r.status_code == 409 and "New" in r.json["error"]["message"]
    assert cases(agent, f"sys_id={case['sys_id']}")[0] == case
    r = agent.patch(f"{CASES}/{case['sys_id']}", json={"state": "6"})
    assert r.status_code == 409


def test_resolving_needs_resolution_code_and_close_notes(agent):
    case = cases(agent, "state=10")[0]
    r = act(agent, case["sys_id"], "resolve_case", close_notes="Fixed")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "resolution_code"


def test_lifecycle_roles_are_enforced(as_user):
    author = as_user("author")
    case = cases(as_user("agent"), "state=1")[0]
    assert act(author, case["sys_id"], "open_case").status_code == 403


def test_a_closed_major_case_is_not_canceled_afterwards(as_user, runtime):
    """The CSM app declares it: Cancel major case is not offered, and refused, once the case is closed."""
    major = as_user("agent").post(CASES, json={"short_description": "Outage", "major_case_state": "proposed"}).json
    with runtime.transaction() as service, service.by_definitions():
        service.update("sn_customerservice_case", major["result"]["sys_id"], {
            "major_case_state": "accepted", "state": 3, "close_notes": "Fixed", "resolution_code": "solved_permanently"})
    r = act(as_user("mim"), major["result"]["sys_id"], "cancel_major_case", reason="Too late")
    assert r.status_code == 409
    assert r.json["error"]["message"] == ("Only a proposed or accepted major case that is not closed or canceled "
                                          "can be canceled")
