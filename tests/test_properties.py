"""System properties: declared in YAML, seeded into sys_properties, changed at run time without a restart."""

from __future__ import annotations

import pytest
import yaml

from caseloom.properties import Properties, seed_properties
from caseloom.query import parse_encoded
from conftest import DEFINITIONS

PROPS = "/api/now/table/sys_properties"
SYNC = "sn_customerservice.parent_child_case_sync"
FIELDS = "sn_customerservice.case_fields_to_sync"


def declared() -> dict[str, dict]:
    """Every property declared in definitions/properties/*.yaml, read straight from the files."""
    found = {}
    for path in sorted((DEFINITIONS / "properties").glob("*.yaml")):
        found.update(yaml.safe_load(path.read_text())["properties"])
    return found


def as_text(spec: dict) -> str:
    default = spec.get("default")
    if spec["type"] == "list":
        return ",".join(default or [])
    if spec["type"] == "boolean":
        return "true" if default else "false"
    return "" if default is None else str(default)


def fresh(runtime) -> Properties:
    """Properties as a new request would see them."""
    conn = runtime.engine.connect()
    return Properties(runtime.defs, runtime.storage, conn)


def property_row(runtime, name: str) -> dict:
    with runtime.transaction() as service:
        return service.query("sys_properties", parse_encoded(f"name={name}"))[0]


def test_declared_properties_are_seeded_with_their_defaults(runtime):
    specs = declared()
    assert {SYNC, FIELDS} <= set(specs)
    with runtime.transaction() as service:
        rows = {r["name"]: r for r in service.query("sys_properties", parse_encoded("ORDERBYname"))}
    for name, spec in specs.items():
        assert rows[name]["type"] == spec["type"]
        assert rows[name]["value"] == as_text(spec)
        assert rows[name]["description"] == spec.get("description", "")
    assert rows[SYNC]["value"] == "false"
    assert rows[FIELDS]["value"] == "priority,state,comments,work_notes,assigned_to,close_notes,resolution_code"


def test_values_are_typed(runtime):
    props = fresh(runtime)
    try:
        assert props.get(SYNC) is False
        assert props.get(FIELDS) == declared()[FIELDS]["default"]
        assert props.items()[SYNC] is False
        with pytest.raises(KeyError):
            props.get("sn_customerservice.no_such_property")
    finally:
        props.conn.close()


def test_a_change_applies_to_the_next_properties_object_and_survives_seeding(runtime):
    before = fresh(runtime)
    assert before.get(SYNC) is False
    with runtime.transaction() as service:
        service.update("sys_properties", property_row(runtime, SYNC)["sys_id"], {"value": "true"})
        service.update("sys_properties", property_row(runtime, FIELDS)["sys_id"], {"value": " priority , state,,"})
        assert seed_properties(service) == 0  # seeding again keeps the values that were changed
    after = fresh(runtime)
    try:
        assert after.get(SYNC) is True and after.get(FIELDS) == ["priority", "state"]
        assert before.get(SYNC) is False  # one object is one unit of work: it does not change under it
    finally:
        before.conn.close()
        after.conn.close()


def test_seeding_sets_a_stored_value_outside_a_new_range_back_to_the_default(runtime):
    """A declaration given a range after a value was set: `caseloom init` puts a value outside it
    back to the default, and keeps one inside it."""
    with runtime.transaction(check_access=False) as service:
        table = service.storage.physical("sys_properties")
        for name, value in (("caseloom.email.rate_per_minute", "-3"), ("caseloom.export.max_rows", "500")):
            service.conn.execute(table.update().where(table.c.name == name).values(value=value))  # set before the range
        seed_properties(service)
    props = fresh(runtime)
    try:
        assert props.get("caseloom.email.rate_per_minute") == 0  # the default: -3 is below its min of 0
        assert props.get("caseloom.export.max_rows") == 500
    finally:
        props.conn.close()


def test_admin_changes_a_property_through_the_table_api_without_restart(app, as_user, runtime):
    from caseloom.web.auth import properties

    api = as_user("admin")
    row = api.get(f"{PROPS}?sysparm_query=name={SYNC}").json["result"][0]
    assert (row["value"], row["type"]) == ("false", "boolean")
    with app.test_request_context("/"):
        assert properties().get(SYNC) is False

    r = api.patch(f"{PROPS}/{row['sys_id']}", json={"value": "true"})
    assert r.status_code == 200 and r.json["result"]["value"] == "true"

    assert api.get(f"{PROPS}/{row['sys_id']}").json["result"]["value"] == "true"
    with app.test_request_context("/"):  # the very next request of the same app
        assert properties().get(SYNC) is True
    props = fresh(runtime)  # and any other process sharing the database
    try:
        assert props.get(SYNC) is True
    finally:
        props.conn.close()

    assert api.patch(f"{PROPS}/{row['sys_id']}", json={"value": False}).json["result"]["value"] == "false"
    with app.test_request_context("/"):
        assert properties().get(SYNC) is False


@pytest.mark.parametrize("name, body, field", [
    (SYNC, {"value": "maybe"}, "value"),
    (SYNC, {"value": ""}, "value"),
    (SYNC, {"type": "string", "value": "maybe"}, "type"),
    (FIELDS, {"type": "boolean"}, "type"),
])
def test_a_value_of_the_wrong_type_is_refused_and_nothing_changes(as_user, runtime, name, body, field):
    api = as_user("admin")
    row = api.get(f"{PROPS}?sysparm_query=name={name}").json["result"][0]
    r = api.patch(f"{PROPS}/{row['sys_id']}", json=body)
    assert r.status_code == 400 and r.json["status"] == "failure"
    assert r.json["error"]["detail"]["field"] == field and field in r.json["error"]["message"]
    assert api.get(f"{PROPS}/{row['sys_id']}").json["result"] == row
    props = fresh(runtime)
    try:
        assert props.get(name) == declared()[name]["default"]
    finally:
        props.conn.close()


MAX_BYTES, THRESHOLD = "caseloom.attachment.max_bytes", "sn_customerservice.similar_case_threshold"


@pytest.mark.parametrize("name, value, message", [
    (MAX_BYTES, "-5", "value: must be at least 1 for caseloom.attachment.max_bytes"),
    (MAX_BYTES, "0", "value: must be at least 1 for caseloom.attachment.max_bytes"),
    (MAX_BYTES, "", "value: not a valid integer for caseloom.attachment.max_bytes: expected a whole number, got nothing"),
    (MAX_BYTES, "١٠", "value: not a valid integer for caseloom.attachment.max_bytes: expected a whole number, got '١٠'"),
    (MAX_BYTES, "1_000", "value: not a valid integer for caseloom.attachment.max_bytes: expected a whole number, "
                         "got '1_000'"),
    ("caseloom.sla.tick_seconds", "61", "value: must be from 1 to 60 for caseloom.sla.tick_seconds"),
    # no declared maximum: what an integer holds (a 23-digit reopen time made every event post a 500)
    ("caseloom.em.reopen_seconds", "99999999999999999999999", "value: not a valid integer for caseloom.em.reopen_seconds: "
     "99999999999999999999999 is out of range: a whole number from -2,147,483,648 to 2,147,483,647"),
    (THRESHOLD, "1.5", f"value: must be from 0 to 1 for {THRESHOLD}"),
    (THRESHOLD, "-0.1", f"value: must be from 0 to 1 for {THRESHOLD}"),
])
def test_a_value_outside_the_declared_range_is_refused_naming_it(as_user, runtime, name, value, message):
    """An integer or decimal property's `min` and `max`: a negative attachment size would refuse every
    upload (`larger than -5 bytes`), so it is refused where it is set."""
    api = as_user("admin")
    row = api.get(f"{PROPS}?sysparm_query=name={name}").json["result"][0]
    r = api.patch(f"{PROPS}/{row['sys_id']}", json={"value": value})
    assert r.status_code == 400 and r.json["error"]["message"] == message
    assert api.get(f"{PROPS}/{row['sys_id']}").json["result"] == row


@pytest.mark.parametrize("name, value, stored", [
    (SYNC, "yes", "true"), (SYNC, "0", "false"), (MAX_BYTES, "+2048", "2048"), (MAX_BYTES, " 1 ", "1"),
    ("caseloom.sla.tick_seconds", "60", "60"), (THRESHOLD, "1", "1.0"), (THRESHOLD, "0.50", "0.5"),
])
def test_a_value_is_stored_as_its_type_writes_it(as_user, name, value, stored):
    api = as_user("admin")
    row = api.get(f"{PROPS}?sysparm_query=name={name}").json["result"][0]
    r = api.patch(f"{PROPS}/{row['sys_id']}", json={"value": value})
    assert r.status_code == 200 and r.json["result"]["value"] == stored


def test_a_new_property_of_the_wrong_type_is_refused(as_user):
    api = as_user("admin")
    r = api.post(PROPS, json={"name": "x_custom.retries", "type": "integer", "value": "three"})
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "value"
    assert api.get(f"{PROPS}?sysparm_query=name=x_custom.retries").json["result"] == []
    r = api.post(PROPS, json={"name": "x_custom.retries", "type": "integer", "value": "3"})
    assert r.status_code == 201 and r.json["result"]["value"] == "3"


@pytest.mark.parametrize("user", ["agent", "manager", "author"])
def test_only_admin_may_change_properties(as_user, runtime, user):
    row = property_row(runtime, SYNC)
    r = as_user(user).patch(f"{PROPS}/{row['sys_id']}", json={"value": "true"})
    assert r.status_code == 403 and r.json["status"] == "failure"
    assert as_user(user).post(PROPS, json={"name": "x_custom.flag", "type": "boolean", "value": "true"}).status_code == 403
    after = property_row(runtime, SYNC)
    assert after["value"] == "false" and after["sys_mod_count"] == row["sys_mod_count"]


@pytest.mark.parametrize("value, message", [
    ("priority,stat", "value: 'stat' is not a field of 'sn_customerservice_case'; "
                      "sn_customerservice.case_fields_to_sync names the fields its copies take"),
    ("prority, stat,state", "value: 'prority', 'stat' are not fields of 'sn_customerservice_case'; "
                            "sn_customerservice.case_fields_to_sync names the fields its copies take"),
])
def test_a_field_list_property_naming_no_field_is_refused(as_user, value, message):
    """A list property that copies read as field names (`fields_property`): a misspelt field would be left
    out of every sync without a word, so it is refused where it is set, as `caseloom validate` refuses it
    in the declared default."""
    api = as_user("admin")
    row = api.get(f"{PROPS}?sysparm_query=name={FIELDS}").json["result"][0]
    r = api.patch(f"{PROPS}/{row['sys_id']}", json={"value": value})
    assert r.status_code == 400 and r.json["error"]["message"] == message, r.json
    assert api.get(f"{PROPS}/{row['sys_id']}").json["result"] == row
    r = api.patch(f"{PROPS}/{row['sys_id']}", json={"value": "priority, state"})
    assert r.status_code == 200 and r.json["result"]["value"] == "priority,state"
