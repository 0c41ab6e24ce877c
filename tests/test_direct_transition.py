"""A client changing a lifecycle field directly (PATCH) passes the checks of the transition it amounts
to: 403 when only roles stand in the way, even if a transition the user may make is refused by its
condition; 409 when no transition's state or condition allows it."""

from __future__ import annotations

import pytest

from small_app import small_app

API = "/api/now/table/ticket"
USERS = {"clerk": ["desk.clerk"], "lead": ["desk.lead"], "viewer": ["desk.viewer"], "admin": ["admin"]}  # passwords: their names

FILES = {
    "roles.yaml": """roles:
  desk.viewer: {description: May edit tickets but make no transition.}
  desk.clerk: {description: Escalates urgent tickets.}
  desk.lead: {description: Escalates described tickets.}
""",
    "access/desk.yaml": """access:
  - {table: ticket, operations: [read, create, write], roles: [desk.viewer, desk.clerk, desk.lead]}
""",
    "tables/ticket.yaml": """table: ticket
label: Ticket
number: {prefix: TK, digits: 4}
display: number
fields:
  number: {type: string, max_length: 40, read_only: true}
  description: {type: string, max_length: 80}
  priority: {type: choice, default: 3, choices: {1: Urgent, 3: Normal}}
  state: {type: choice, default: 1, choices: {1: New, 2: Escalated, 3: Closed}}
""",
    # two transitions to Escalated: the lead's for described tickets, the clerk's for urgent ones
    "lifecycles/ticket.yaml": """lifecycle: ticket
table: ticket
field: state
states:
  1: {}
  2: {}
  3: {}
transitions:
  - name: escalate
    label: Escalate
    from: [1]
    to: 2
    roles: [desk.lead]
    condition: {field: description, op: notempty}
    refusal: Describe the ticket before escalating it
  - name: escalate_urgent
    label: Escalate urgent
    from: [1]
    to: 2
    roles: [desk.clerk]
    condition: {field: priority, op: eq, value: 1}
    refusal: Only urgent tickets can be escalated by a clerk
  - name: close
    label: Close
    from: [1, 2]
    to: 3
    roles: [desk.lead]
""",
}


@pytest.fixture
def small(config, tmp_path):
    with small_app(config, tmp_path, FILES, USERS) as small:
        yield small


def ticket(small, **values) -> str:
    """A ticket with `values` (any state), written as the definitions would; its sys_id."""
    with small.runtime.transaction() as service:
        with service.by_definitions():
            return service.insert("ticket", values)["sys_id"]


@pytest.mark.parametrize("user, values, status, says", [
    # only the lead's transition applies (described, not urgent): the clerk lacks its role
    ("clerk", {"description": "printer on fire", "priority": 3}, 403,
     "user 'clerk' may not escalate this ticket (needs one of the roles desk.lead)"),
    ("lead", {"description": "printer on fire", "priority": 3}, 200, None),
    # the clerk's own transition applies
    ("clerk", {"description": "", "priority": 1}, 200, None),
    # neither condition holds: the transition the clerk may make says why (409)
    ("clerk", {"description": "", "priority": 3}, 409, "Only urgent tickets can be escalated by a clerk"),
    ("lead", {"description": "", "priority": 3}, 409, "Describe the ticket before escalating it"),
    # no transition the viewer may make: 403 whatever the conditions
    ("viewer", {"description": "", "priority": 3}, 403,
     "user 'viewer' may not escalate this ticket (needs one of the roles desk.clerk, desk.lead)"),
    # no transition leaves Closed for Escalated: 409 for anyone
    ("lead", {"description": "printer on fire", "priority": 1, "state": 3}, 409,
     "a ticket in state Closed cannot move to Escalated"),
])
def test_a_direct_escalation_is_refused_by_roles_before_conditions(small, user, values, status, says):
    sys_id = ticket(small, **values)
    r = small.api(user).patch(f"{API}/{sys_id}", json={"state": "2"})
    assert r.status_code == status, r.json
    after = small.api("admin").get(f"{API}/{sys_id}").json["result"]["state"]
    if status == 200:
        assert after == "2"
        return
    assert after == str(values.get("state", 1))
    error = r.json["error"]
    assert says in (error["message"] if status == 409 else error["detail"])
    if status == 409:  # the field whose value the lifecycle refuses is named, as a 400 names its field
        assert error["detail"] == {"field": "state", "reason": error["message"]}
