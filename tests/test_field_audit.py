"""A field declared `audit: false` (ServiceNow's `no_audit` attribute): a change of it leaves no sys_audit
row, on the record service's row path and on its set-based path, while the record's other fields are
audited as before and a deleted record's snapshot still holds it. A second application's table, not CSM's."""

from __future__ import annotations

import json

import pytest

from caseloom.definitions import DefinitionErrors, load_sources
from caseloom.query import Term, parse_encoded
from caseloom.setwrite import update_where
from small_app import small_app

FILES = {
    "roles.yaml": "roles:\n  x_reader: {description: Reads meters}\n",
    "tables/x_meter.yaml": """table: x_meter
label: Meter
display: name
fields:
  name: {type: string}
  reading: {type: integer, audit: false}
  read_at: {type: datetime, audit: false}
  work_notes: {type: journal}
  log: {type: journal, audit: false}
""",
}
METERS = "/api/now/table/x_meter"


@pytest.fixture
def meters(config, tmp_path):
    with small_app(config, tmp_path, FILES, {"admin": ["admin"]}) as made:
        yield made


def history(made, sys_id: str) -> list[tuple[str, str, str]]:
    with made.runtime.transaction() as service:
        rows = service.query("sys_audit", parse_encoded(f"documentkey={sys_id}^ORDERBYrecord_checkpoint"))
    return [(r["fieldname"], r["oldvalue"], r["newvalue"]) for r in rows]


def test_a_change_of_an_unaudited_field_leaves_no_history_and_the_others_do(meters):
    api = meters.api("admin")
    made = api.post(METERS, json={"name": "Hall", "reading": "10"})
    assert made.status_code == 201, made.json
    sys_id = made.json["result"]["sys_id"]
    assert api.patch(f"{METERS}/{sys_id}", json={"reading": "11", "read_at": "2031-01-02 03:04:05"}).status_code == 200
    assert history(meters, sys_id) == []
    assert api.patch(f"{METERS}/{sys_id}", json={"name": "Main hall", "reading": "12", "log": "Read by the robot",
                                                 "work_notes": "Checked by hand"}).status_code == 200
    assert history(meters, sys_id) == [("name", "Hall", "Main hall"), ("work_notes", None, "Checked by hand")]
    record = api.get(f"{METERS}/{sys_id}").json["result"]
    assert (record["reading"], record["sys_mod_count"]) == ("12", "2")  # written all the same
    notes = api.get("/api/now/table/sys_journal_field", query_string={"sysparm_query": f"element_id={sys_id}^element=log"})
    assert [e["value"] for e in notes.json["result"]] == ["Read by the robot"]  # the entry kept, not audited


def test_a_set_based_write_audits_only_the_audited_fields(meters):
    api = meters.api("admin")
    ids = [api.post(METERS, json={"name": f"Meter {i}", "reading": str(i)}).json["result"]["sys_id"] for i in range(3)]
    with meters.runtime.transaction() as service:
        tdef = service.defs.tables["x_meter"]
        parsed, _ = service._parse(tdef, {"reading": "99"})
        assert update_where(service, tdef, Term("name", "startswith", "Meter"), parsed) == 3
        parsed, _ = service._parse(tdef, {"name": "Renamed"})
        assert update_where(service, tdef, Term("sys_id", "eq", ids[0]), parsed) == 1
        update_where(service, tdef, Term("sys_id", "eq", ids[1]), {}, {"log": "Read by the robot"})
        update_where(service, tdef, Term("sys_id", "eq", ids[2]), {}, {"work_notes": "Checked by hand"})
    assert history(meters, ids[0]) == [("name", "Meter 0", "Renamed")]
    assert history(meters, ids[1]) == []  # the unaudited journal's entry is kept, not audited
    assert history(meters, ids[2]) == [("work_notes", None, "Checked by hand")]
    assert [e["value"] for e in api.get("/api/now/table/sys_journal_field", query_string={
        "sysparm_query": f"element_id={ids[1]}"}).json["result"]] == ["Read by the robot"]
    assert {api.get(f"{METERS}/{i}").json["result"]["reading"] for i in ids} == {"99"}


def test_a_deleted_records_snapshot_keeps_its_unaudited_fields(meters):
    api = meters.api("admin")
    sys_id = api.post(METERS, json={"name": "Gone", "reading": "7"}).json["result"]["sys_id"]
    assert api.delete(f"{METERS}/{sys_id}").status_code == 204
    (field, old, _), = history(meters, sys_id)
    assert field == "DELETED" and json.loads(old)["reading"] == "7"


def test_audit_takes_true_or_false_and_says_where_otherwise():
    table = FILES["tables/x_meter.yaml"].replace("audit: false}", "audit: sometimes}", 1)
    with pytest.raises(DefinitionErrors) as caught:
        load_sources([("roles.yaml", FILES["roles.yaml"]), ("tables/x_meter.yaml", table)])
    said = str(caught.value)
    assert "tables/x_meter.yaml:6" in said and "reading" in said and "audit" in said, said
