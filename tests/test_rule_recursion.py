"""Rules cannot recurse forever: a rule does not re-fire for the record its own effects write, other
rules and other records still fire, and a chain deeper than MAX_DEPTH rule runs is refused, named
and rolled back. The tests run a small application of their own (tests/small_app.py)."""

from __future__ import annotations

import pytest

from caseloom.automation import MAX_DEPTH
from conftest import basic
from small_app import small_app

ADMIN = basic("admin")
API = "/api/now/table"

FILES = {
    # a rule that re-triggers itself (its `set` updates the record it runs for), and one that fires on its write
    "tables/tally.yaml": """table: tally
label: Tally
display: name
fields:
  name: {type: string, max_length: 40}
  counter: {type: integer, default: 0}
  work_notes: {type: journal}
""",
    "rules/tally.yaml": """rules:
  - name: count_saves
    table: tally
    when: after
    on: [update]
    effects:
      - set: {counter: "{{ record.counter + 1 }}"}
    order: 10
  - name: note_count
    table: tally
    when: after
    on: [update]
    condition: {field: counter, op: changes}
    effects:
      - journal: {field: work_notes, text: "count is {{ record.counter }}"}
    order: 20
""",
    # a parent chain: a node's new status rolls up to its parent, and on up
    "tables/node.yaml": """table: node
label: Node
number: {prefix: N, digits: 4}
display: number
fields:
  number: {type: string, max_length: 40, read_only: true}
  parent: {type: reference, to: node}
  partner: {type: reference, to: node}
  status: {type: string, max_length: 40}
  bumps: {type: integer, default: 0}
""",
    "rules/node.yaml": """rules:
  - name: roll_up
    table: node
    when: after
    on: [update]
    condition: {field: status, op: changes}
    effects:
      - update_reference: {field: parent, set: {status: "{{ record.status }}"}}
  - name: bump_partner
    table: node
    when: after
    on: [update]
    condition: {all: [{field: partner, op: notempty}, {field: bumps, op: changes}]}
    effects:
      - update_reference: {field: partner, set: {bumps: "{{ record.bumps + 1 }}"}}
""",
    # two tables whose new records create each other's: a loop that reaches a new record every time
    "tables/ping.yaml": """table: ping
label: Ping
number: {prefix: PI, digits: 4}
display: number
fields:
  number: {type: string, max_length: 40, read_only: true}
  pong: {type: reference, to: pong}
""",
    "tables/pong.yaml": """table: pong
label: Pong
number: {prefix: PO, digits: 4}
display: number
fields:
  number: {type: string, max_length: 40, read_only: true}
  ping: {type: reference, to: ping}
""",
    "rules/ping.yaml": """rules:
  - name: ping_makes_pong
    table: ping
    when: after
    on: [insert]
    effects:
      - create: {table: pong, values: {ping: "{{ record.sys_id }}"}}
  - name: pong_makes_ping
    table: pong
    when: after
    on: [insert]
    effects:
      - create: {table: ping, values: {pong: "{{ record.sys_id }}"}}
""",
}


@pytest.fixture
def client(config, tmp_path):
    with small_app(config, tmp_path, FILES, {"admin": ["admin"]}) as small:
        yield small.client


def create(client, table: str, values: dict) -> dict:
    r = client.post(f"{API}/{table}", json=values, headers=ADMIN)
    assert r.status_code == 201, r.json
    return r.json["result"]


def read(client, table: str, sys_id: str) -> dict:
    return client.get(f"{API}/{table}/{sys_id}", headers=ADMIN).json["result"]


def audited(client, sys_id: str, field: str) -> list[tuple[str, str]]:
    """The (old, new) values of a field's audit rows, oldest first."""
    rows = client.get(f"{API}/sys_audit?sysparm_query=documentkey={sys_id}^fieldname={field}"
                      "^ORDERBYrecord_checkpoint", headers=ADMIN).json["result"]
    return [(r["oldvalue"], r["newvalue"]) for r in rows]


# -- a rule and the record its own effects write -----------------------------------------------------

def test_a_rule_that_updates_its_own_record_fires_once(client):
    tally = create(client, "tally", {"name": "first"})
    r = client.patch(f"{API}/tally/{tally['sys_id']}", json={"name": "renamed"}, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert read(client, "tally", tally["sys_id"])["counter"] == "1"
    assert audited(client, tally["sys_id"], "counter") == [("0", "1")]  # written once


def test_other_rules_fire_on_the_write_a_rule_makes(client):
    """note_count fires on count_saves's write; neither re-fires on the journal entry note_count adds."""
    tally = create(client, "tally", {"name": "first"})
    client.patch(f"{API}/tally/{tally['sys_id']}", json={"name": "renamed"}, headers=ADMIN)
    notes = client.get(f"{API}/sys_journal_field?sysparm_query=element_id={tally['sys_id']}",
                       headers=ADMIN).json["result"]
    assert [n["value"] for n in notes] == ["count is 1"]
    assert read(client, "tally", tally["sys_id"])["counter"] == "1"


# -- other records -------------------------------------------------------------------------------------

def chain(client, length: int) -> list[dict]:
    """`length` nodes, each the parent of the next: [top, ..., bottom]."""
    nodes = [create(client, "node", {"status": "new"})]
    for _ in range(length - 1):
        nodes.append(create(client, "node", {"status": "new", "parent": nodes[-1]["sys_id"]}))
    return nodes


@pytest.mark.parametrize("length", [5, MAX_DEPTH])
def test_a_rule_fires_on_the_other_records_its_effects_write_up_a_parent_chain(client, length):
    nodes = chain(client, length)
    r = client.patch(f"{API}/node/{nodes[-1]['sys_id']}", json={"status": "done"}, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert [read(client, "node", n["sys_id"])["status"] for n in nodes] == ["done"] * length
    assert all(audited(client, n["sys_id"], "status") == [("new", "done")] for n in nodes)


def test_a_chain_one_deeper_than_the_limit_is_refused_and_changes_nothing(client):
    nodes = chain(client, MAX_DEPTH + 1)
    r = client.patch(f"{API}/node/{nodes[-1]['sys_id']}", json={"status": "done"}, headers=ADMIN)
    assert r.status_code == 400
    numbers = [n["number"] for n in reversed(nodes)]
    steps = " -> ".join(f"rule 'roll_up' on {number}" for number in numbers)
    assert r.json["error"]["message"] == (
        f"rules triggered each other more than {MAX_DEPTH} deep, so nothing was changed: {steps}; "
        "change a rule's condition so that the chain ends")
    assert [read(client, "node", n["sys_id"])["status"] for n in nodes] == ["new"] * len(nodes)


def test_two_records_that_update_each_other_stop_when_the_rule_comes_back(client):
    """bump_partner on A writes B, bump_partner on B writes A; it does not fire again on A, which its
    own effects are writing: each record is written once by the rule."""
    a = create(client, "node", {"status": "new"})
    b = create(client, "node", {"status": "new", "partner": a["sys_id"]})
    client.patch(f"{API}/node/{a['sys_id']}", json={"partner": b["sys_id"]}, headers=ADMIN)
    r = client.patch(f"{API}/node/{a['sys_id']}", json={"bumps": 10}, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert read(client, "node", b["sys_id"])["bumps"] == "11"
    assert read(client, "node", a["sys_id"])["bumps"] == "12"
    assert audited(client, a["sys_id"], "bumps") == [("0", "10"), ("10", "12")]
    assert audited(client, b["sys_id"], "bumps") == [("0", "11")]


def test_a_loop_that_keeps_reaching_new_records_is_refused_naming_the_chain(client):
    r = client.post(f"{API}/ping", json={}, headers=ADMIN)
    assert r.status_code == 400
    message = r.json["error"]["message"]
    steps = message.split("nothing was changed: ")[1].split("; change a rule's")[0].split(" -> ")
    assert len(steps) == MAX_DEPTH + 1
    assert steps[:4] == ["rule 'ping_makes_pong' on PI1001", "rule 'pong_makes_ping' on PO1001",
                         "rule 'ping_makes_pong' on PI1002", "rule 'pong_makes_ping' on PO1002"]
    assert r.json["error"]["detail"]["field"] is None
    for table in ("ping", "pong"):  # rolled back: no record of either table
        assert client.get(f"{API}/{table}", headers=ADMIN).json["result"] == []
