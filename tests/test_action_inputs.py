"""An action's free inputs are taken as their declared type: a choice among its choices, a boolean."""

from __future__ import annotations

import pytest

from small_app import small_app
from test_background_actions import FILES, USERS, act, new_ticket

ESCALATE = """
actions:
  - name: escalate
    table: x_ticket
    roles: [x_resolver]
    inputs:
      - {name: urgency, type: choice, mandatory: true, choices: {high: High, low: Low}}
      - {name: page_someone, type: boolean}
    effects:
      - journal: {field: notes, text: "Escalated ({{ inputs.urgency }}, paging: {{ inputs.page_someone }})"}
"""


@pytest.fixture
def small(config, tmp_path):
    with small_app(config, tmp_path, {**FILES, "actions/x.yaml": ESCALATE}, USERS) as made:
        yield made


@pytest.mark.parametrize("inputs, entry", [
    ({"urgency": "high", "page_someone": "yes"}, "Escalated (high, paging: True)"),
    ({"urgency": "Low", "page_someone": False}, "Escalated (low, paging: False)"),  # the label names the choice
    ({"urgency": "high"}, "Escalated (high, paging: )"),  # an input not given shows as nothing
])
def test_a_free_input_is_taken_as_its_type(small, inputs, entry):
    ticket = new_ticket(small)
    r = act(small, "resolver", ticket, "escalate", **inputs)
    assert r.status_code == 200, r.json
    notes = small.api("resolver").get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={ticket}").json
    assert [n["value"] for n in notes["result"]] == [entry]


@pytest.mark.parametrize("inputs, field, message", [
    ({"urgency": "panic"}, "urgency", "'panic' is not one of the choices (high: High, low: Low)"),
    ({"urgency": "high", "page_someone": "perhaps"}, "page_someone", "expected true or false"),
    ({"urgency": ["high"]}, "urgency", "expected one of the choices (high: High, low: Low), got a list"),
    ({"urgency": "high", "page_someone": {"yes": True}}, "page_someone", "expected true or false, got an object"),
])
def test_a_free_input_of_the_wrong_type_is_a_400_naming_it(small, inputs, field, message):
    ticket = new_ticket(small)
    r = act(small, "resolver", ticket, "escalate", **inputs)
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == field
    assert message in r.json["error"]["message"]
