"""The record service: the one write path (defaults, numbering, sys fields, audit, journal, all or nothing)."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from werkzeug.security import check_password_hash

from caseloom.access import Actor
from caseloom.definitions import FieldDef, load_sources
from caseloom.definitions.loader import read_sources
from caseloom.fieldtypes import FIELD_TYPES, FieldValueError
from caseloom.migrate import migrate
from caseloom.query import Query, parse_encoded
from caseloom.records import Conflict, NotFound, RecordError
from caseloom.runtime import Runtime
from conftest import DEFINITIONS

CASE, ACCOUNT, CONTACT = "sn_customerservice_case", "customer_account", "customer_contact"
NUMBER = re.compile(r"^CS\d{7}$")
MISSING = "f" * 32


def actor(definitions, name: str, *roles: str) -> Actor:
    return Actor(name, definitions.role_closure(roles))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def audit_of(service, sys_id: str) -> list[dict]:
    return service.query("sys_audit", parse_encoded(f"documentkey={sys_id}^ORDERBYfieldname"))


def journal_of(service, sys_id: str) -> list[dict]:
    return service.query("sys_journal_field", parse_encoded(f"element_id={sys_id}^ORDERBYelement"))


def numbers(service, marker: str) -> list[str]:
    rows = service.query(CASE, parse_encoded(f"short_description={marker}^ORDERBYnumber"), ["number"])
    return [r["number"] for r in rows]


def seq(number: str) -> int:
    return int(number[2:])


def new_case(runtime, **values) -> dict:
    with runtime.transaction() as service:
        return service.insert(CASE, {"short_description": "A case", **values})


# -- defaults, sys fields, numbering ------------------------------------------------------


def test_insert_applies_defaults_and_sets_sys_fields(runtime, definitions):
    before = utcnow() - dt.timedelta(seconds=1)
    with runtime.transaction(actor(definitions, "agent", "sn_customerservice_agent")) as service:
        case = service.insert(CASE, {"short_description": "Printer on fire"})
    after = utcnow() + dt.timedelta(seconds=1)

    with runtime.transaction() as service:
        stored = service.get(CASE, case["sys_id"])
    assert stored["state"] == 1 and stored["priority"] == 4
    assert stored["active"] is True and stored["proactive"] is False
    assert stored["major_case_state"] is None and stored["account"] is None
    assert re.fullmatch(r"[0-9a-f]{32}", stored["sys_id"])
    assert NUMBER.match(stored["number"])
    assert stored["sys_class_name"] == CASE
    assert stored["sys_created_by"] == stored["sys_updated_by"] == "agent"
    assert before <= stored["sys_created_on"] <= after
    assert stored["sys_updated_on"] == stored["sys_created_on"]
    assert stored["sys_mod_count"] == 0


@pytest.mark.parametrize("values", [{"sys_created_by": "mallory"}, {"sys_mod_count": 42},
                                    {"sys_created_on": "2001-01-01 00:00:00"}, {"sys_class_name": "task"}])
def test_sys_fields_in_the_input_are_refused(runtime, values):
    """The platform sets them: a client's value is refused naming the field (issue 11: read-only fields)."""
    with pytest.raises(RecordError) as caught:
        new_case(runtime, **values)
    assert caught.value.field == next(iter(values)) and "read-only" in caught.value.message


def test_sys_fields_written_by_definitions_are_still_the_platforms(runtime):
    with runtime.transaction() as service, service.by_definitions():
        case = service.insert(CASE, {"short_description": "x", "sys_created_by": "mallory", "sys_mod_count": 42,
                                     "sys_created_on": "2001-01-01 00:00:00"})
    assert case["sys_created_by"] == "system" and case["sys_mod_count"] == 0
    assert case["sys_created_on"].year != 2001


def test_numbers_are_consecutive_and_never_reused(runtime):
    with runtime.transaction() as service:
        highest = service.query(CASE, parse_encoded("ORDERBYDESCnumber"), ["number"], limit=1)[0]["number"]
        first = service.insert(CASE, {"short_description": "one"})["number"]
        second = service.insert(CASE, {"short_description": "two"})
    assert NUMBER.match(first) and NUMBER.match(second["number"])
    assert seq(first) == seq(highest) + 1
    assert seq(second["number"]) == seq(first) + 1

    with runtime.transaction() as service:
        service.delete(CASE, second["sys_id"])
    third = new_case(runtime)["number"]
    assert seq(third) == seq(second["number"]) + 1  # the deleted case's number is not handed out again


def test_numbers_are_unique_across_insert_many_batches(runtime):
    with runtime.transaction() as service:
        existing = {r["number"] for r in service.query(CASE, Query(), ["number"])}
        assert service.insert_many(CASE, [{"short_description": "bulk"} for _ in range(7)], batch=3) == 7
        service.insert_many(CASE, [{"short_description": "bulk"} for _ in range(4)], batch=2)
        got = numbers(service, "bulk")
    assert len(got) == len(set(got)) == 11
    assert all(NUMBER.match(n) for n in got)
    assert not existing & set(got)
    assert [seq(n) for n in got] == list(range(seq(got[0]), seq(got[0]) + 11))


def test_each_table_has_its_own_number_sequence(runtime):
    with runtime.transaction() as service:
        account = service.insert(ACCOUNT, {"name": "Numbered Ltd"})
        task = service.insert("task", {"short_description": "Plain task"})
    assert re.fullmatch(r"ACCT\d{7}", account["number"])
    assert re.fullmatch(r"TASK\d{7}", task["number"])


# -- updates, audit, journal -----------------------------------------------------------------


def test_update_bumps_mod_count_and_audits_each_changed_field(runtime, definitions):
    case = new_case(runtime, short_description="Slow VPN")
    with runtime.transaction(actor(definitions, "agent", "sn_customerservice_agent")) as service:
        after = service.update(CASE, case["sys_id"], {"state": "10", "priority": "2", "short_description": "Slow VPN"})
    assert after["state"] == 10 and after["priority"] == 2 and after["sys_mod_count"] == 1
    assert after["sys_updated_by"] == "agent" and after["sys_created_by"] == "system"

    with runtime.transaction(actor(definitions, "manager", "sn_customerservice_manager")) as service:
        service.update(CASE, case["sys_id"], {"priority": "1"})
        stored = service.get(CASE, case["sys_id"])
        audit = audit_of(service, case["sys_id"])
    assert stored["sys_mod_count"] == 2 and stored["sys_updated_by"] == "manager"
    assert stored["sys_updated_on"] >= stored["sys_created_on"]
    assert sorted((a["fieldname"], a["oldvalue"], a["newvalue"], a["user"], a["record_checkpoint"]) for a in audit) == [
        ("priority", "2", "1", "manager", 2),
        ("priority", "4", "2", "agent", 1),
        ("state", "1", "10", "agent", 1),
    ]  # short_description did not change, so it has no audit row
    assert {a["tablename"] for a in audit} == {CASE}


def test_an_update_that_changes_nothing_is_not_written(runtime, definitions):
    case = new_case(runtime, short_description="Same as before", priority="3")
    with runtime.transaction(actor(definitions, "agent", "sn_customerservice_agent")) as service:
        same = service.update(CASE, case["sys_id"], {"state": "1", "priority": 3, "short_description": "Same as before",
                                                     "account": "", "comments": ""})
    with runtime.transaction() as service:
        stored = service.get(CASE, case["sys_id"])
        assert audit_of(service, case["sys_id"]) == []
        assert journal_of(service, case["sys_id"]) == []
    assert same["sys_mod_count"] == stored["sys_mod_count"] == 0
    assert stored["sys_updated_by"] == "system" and stored["sys_updated_on"] == case["sys_updated_on"]


def test_update_many_counts_only_records_that_changed(runtime):
    a, b = new_case(runtime, priority="2"), new_case(runtime, priority="3")
    with runtime.transaction() as service:
        changed = service.update_many(CASE, [(a["sys_id"], {"priority": "2"}), (b["sys_id"], {"priority": "1"})])
        assert changed == 1
        assert service.get(CASE, a["sys_id"])["sys_mod_count"] == 0
        assert service.get(CASE, b["sys_id"])["sys_mod_count"] == 1
        assert [(x["fieldname"], x["oldvalue"], x["newvalue"]) for x in audit_of(service, b["sys_id"])] == [
            ("priority", "3", "1")]


def test_journal_fields_are_entries_not_columns(runtime, definitions):
    assert "comments" not in runtime.storage.physical(CASE).c
    assert "work_notes" not in runtime.storage.physical(CASE).c
    case = new_case(runtime, comments="Customer says hi")
    with runtime.transaction(actor(definitions, "agent", "sn_customerservice_agent")) as service:
        after = service.update(CASE, case["sys_id"], {"work_notes": "Called the customer"})
    assert after["sys_mod_count"] == 1
    with runtime.transaction() as service:
        entries = journal_of(service, case["sys_id"])
        newest = service.journal(CASE, case["sys_id"], "work_notes")
        stored = service.get(CASE, case["sys_id"])
        audit = audit_of(service, case["sys_id"])
    assert [(e["name"], e["element"], e["value"], e["element_id"], e["sys_created_by"]) for e in entries] == [
        (CASE, "comments", "Customer says hi", case["sys_id"], "system"),
        (CASE, "work_notes", "Called the customer", case["sys_id"], "agent"),
    ]
    assert [e["value"] for e in newest] == ["Called the customer"]
    assert "comments" not in stored and "work_notes" not in stored
    assert [(a["fieldname"], a["oldvalue"], a["newvalue"]) for a in audit] == [("work_notes", None, "Called the customer")]


def test_an_empty_journal_value_adds_no_entry(runtime):
    with runtime.transaction() as service:
        service.insert_many(CASE, [{"short_description": "quiet", "comments": ""},
                                   {"short_description": "quiet", "work_notes": "  "},
                                   {"short_description": "quiet", "comments": "said something"}])
        ids = [r["sys_id"] for r in service.query(CASE, parse_encoded("short_description=quiet^ORDERBYnumber"))]
        assert len(ids) == 3
        assert [journal_of(service, i) for i in ids[:2]] == [[], []]
        assert [e["value"] for e in journal_of(service, ids[2])] == ["said something"]


# -- all or nothing ----------------------------------------------------------------------


@pytest.mark.parametrize("bad, field", [
    ({"short_description": "bad", "priority": "9"}, "priority"),
    ({"description": "no short description"}, "short_description"),
    ({"short_description": "bad", "account": MISSING}, "account"),
    ({"short_description": "bad", "colour": "red"}, "colour"),
    ({"short_description": "bad", "opened_at": "last tuesday"}, "opened_at"),
])
def test_a_bad_row_fails_the_whole_insert_many(runtime, bad, field):
    rows = [{"short_description": "batch", "comments": "first"}, {"short_description": "batch"}, bad]
    with runtime.transaction() as service:
        before = service.count(CASE, Query())
        with pytest.raises(RecordError) as caught:
            service.insert_many(CASE, rows, batch=2)  # rows 1-2 are already written when row 3 fails
        assert caught.value.row == 3 and caught.value.field == field
        assert "row 3" in str(caught.value) and field in str(caught.value)
        service.insert(CASE, {"short_description": "after the failure"})  # the transaction goes on
    with runtime.transaction() as service:
        assert numbers(service, "batch") == []
        assert service.count(CASE, Query()) == before + 1
        assert service.count("sys_journal_field", parse_encoded("value=first")) == 0


def test_a_failed_transaction_leaves_nothing(runtime):
    with pytest.raises(RecordError), runtime.transaction() as service:
        service.insert(CASE, {"short_description": "doomed"})
        service.insert(CASE, {"short_description": "doomed", "priority": "42"})
    with runtime.transaction() as service:
        assert numbers(service, "doomed") == []


@pytest.mark.parametrize("values, field", [
    ({"description": "changed", "work_notes": "half done", "priority": "9"}, "priority"),
    ({"description": "changed", "comments": "no summary", "short_description": ""}, "short_description"),
    ({"priority": "1", "description": "changed", "account": MISSING}, "account"),
])
def test_an_update_with_one_bad_field_leaves_the_record_untouched(runtime, values, field):
    case = new_case(runtime)
    with runtime.transaction() as service:
        with pytest.raises(RecordError) as caught:
            service.update(CASE, case["sys_id"], values)
        assert caught.value.field == field
    with runtime.transaction() as service:
        stored = service.get(CASE, case["sys_id"])
        assert (stored["description"], stored["priority"], stored["account"]) == (None, 4, None)
        assert stored["short_description"] == "A case" and stored["sys_mod_count"] == 0
        assert audit_of(service, case["sys_id"]) == [] and journal_of(service, case["sys_id"]) == []


# -- references and delete ---------------------------------------------------------------------


def test_references_must_point_at_an_existing_record_of_the_right_table(runtime):
    with runtime.transaction() as service:
        contact = service.query(CONTACT, Query(), ["sys_id"], limit=1)[0]["sys_id"]
        task = service.insert("task", {"short_description": "Not a case"})["sys_id"]
        case = service.insert(CASE, {"short_description": "Referencing"})["sys_id"]
    for values, field in [({"account": MISSING}, "account"), ({"account": contact}, "account"),
                          ({"parent": task}, "parent"), ({"assigned_to": MISSING}, "assigned_to")]:
        with runtime.transaction() as service:
            with pytest.raises(RecordError) as caught:
                service.insert(CASE, {"short_description": "dangling", **values})
            assert caught.value.field == field
            with pytest.raises(RecordError) as caught:
                service.update(CASE, case, values)
            assert caught.value.field == field
            assert numbers(service, "dangling") == []


def test_delete_clears_references_and_writes_a_deleted_audit_row(runtime, definitions):
    with runtime.transaction() as service:
        account = service.insert(ACCOUNT, {"name": "Short Lived GmbH", "country": "DE"})
        contact = service.insert(CONTACT, {"name": "Kai", "account": account["sys_id"]})
        parent = service.insert(CASE, {"short_description": "Parent", "account": account["sys_id"]})
        child = service.insert(CASE, {"short_description": "Child", "parent": parent["sys_id"],
                                      "account": account["sys_id"]})
    manager = actor(definitions, "manager", "sn_customerservice_manager")
    with runtime.transaction(manager) as service:
        service.delete(CASE, parent["sys_id"])
    with runtime.transaction() as service:
        service.delete(ACCOUNT, account["sys_id"])

    with runtime.transaction() as service:
        assert service.get(CASE, parent["sys_id"]) is None and service.get(ACCOUNT, account["sys_id"]) is None
        kid = service.get(CASE, child["sys_id"])
        assert kid["parent"] is None and kid["account"] is None and kid["short_description"] == "Child"
        assert service.get(CONTACT, contact["sys_id"])["account"] is None
        deleted_case = audit_of(service, parent["sys_id"])
        deleted_account = audit_of(service, account["sys_id"])
    assert [(a["tablename"], a["fieldname"], a["newvalue"], a["user"]) for a in deleted_case] == [
        (CASE, "DELETED", None, "manager")]
    snapshot = json.loads(deleted_case[0]["oldvalue"])
    assert snapshot["number"] == parent["number"] and snapshot["short_description"] == "Parent"
    assert [(a["tablename"], a["fieldname"]) for a in deleted_account] == [(ACCOUNT, "DELETED")]
    assert json.loads(deleted_account[0]["oldvalue"])["name"] == "Short Lived GmbH"


def test_delete_of_a_missing_record_is_not_found(runtime):
    with runtime.transaction() as service, pytest.raises(NotFound):
        service.delete(CASE, MISSING)


# -- passwords ---------------------------------------------------------------------------------


def test_passwords_are_stored_hashed_and_audited_without_the_secret(runtime):
    with runtime.transaction() as service:
        user = service.insert("sys_user", {"user_name": "pat", "user_password": "Correct horse 1"})
        service.update("sys_user", user["sys_id"], {"user_password": "Battery staple 2"})
    users, audits = runtime.storage.physical("sys_user"), runtime.storage.physical("sys_audit")
    with runtime.engine.connect() as conn:
        stored = conn.execute(sa.select(users.c.user_password).where(users.c.sys_id == user["sys_id"])).scalar_one()
        audit = conn.execute(sa.select(audits.c.oldvalue, audits.c.newvalue)
                             .where(audits.c.documentkey == user["sys_id"])).all()
    assert "Battery" not in stored and check_password_hash(stored, "Battery staple 2")
    assert not check_password_hash(stored, "Correct horse 1")
    assert [tuple(a) for a in audit] == [("*", "*")]


def test_passwords_are_never_returned_by_the_table_api(runtime, as_user):
    with runtime.transaction() as service:
        user = service.insert("sys_user", {"user_name": "quinn", "user_password": "Hunter2 hunter2"})
    api = as_user("admin")
    url = f"/api/now/table/sys_user/{user['sys_id']}"
    for params in ("", "?sysparm_display_value=all", "?sysparm_fields=user_name,user_password"):
        body = api.get(url + params).json["result"]
        assert body["user_name"] in ("quinn", {"display_value": "quinn", "value": "quinn"})
        assert "user_password" not in body
    rows = api.get("/api/now/table/sys_user?sysparm_fields=user_name,user_password").json["result"]
    assert rows and all("user_password" not in row for row in rows)
    created = api.post("/api/now/table/sys_user", json={"user_name": "robin", "user_password": "Open sesame 3"})
    assert created.status_code == 201 and "user_password" not in created.json["result"]
    assert "Open sesame" not in created.get_data(as_text=True)


@pytest.mark.parametrize("table, query", [
    ("sys_user", "user_passwordSTARTSWITHscrypt"),
    ("sys_user", "user_passwordLIKE$"),
    ("sys_user", "user_name=admin^ORDERBYuser_password"),
    ("sn_customerservice_case", "assigned_to.user_passwordISNOTEMPTY"),
])
def test_password_hashes_cannot_be_probed_through_queries(as_user, table, query):
    r = as_user("agent").get(f"/api/now/table/{table}?sysparm_query={query}")
    assert r.status_code == 400
    assert "user_password" in r.json["error"]["message"]


# -- choices and field types -------------------------------------------------------------------


@pytest.mark.parametrize("field, value, stored", [
    ("priority", "2", 2),
    ("priority", 1, 1),
    ("priority", "0", None),
    ("priority", "High", None),
    ("state", "99", None),
    ("major_case_state", "proposed", "proposed"),
    ("major_case_state", "PROPOSED", None),
    ("resolution_code", "duplicate", "duplicate"),
    ("resolution_code", "Duplicate", None),
])
def test_choice_values_are_validated(runtime, field, value, stored):
    with runtime.transaction() as service:
        if stored is None:
            with pytest.raises(RecordError) as caught:
                service.insert(CASE, {"short_description": "choice", field: value})
            assert caught.value.field == field and field in str(caught.value)
        else:
            assert service.insert(CASE, {"short_description": "choice", field: value})[field] == stored


BAD_VALUES = [
    ("email", "not-an-email"),
    ("email", "two@@example.com"),
    ("url", "example.com/no-scheme"),
    ("url", "ftp://example.com/file"),
    ("date", "2024-02-30"),
    ("date", "tomorrow"),
    ("date", "2024-01-01 garbage"),
    ("datetime", "2024-01-01 25:00:00"),
    ("datetime", "soon"),
    ("decimal", "12,5"),
    ("decimal", "ten"),
    ("decimal", True),
    ("decimal", "NaN"),
    ("decimal", "-Infinity"),
    ("boolean", "perhaps"),
    ("boolean", "2"),
    ("integer", "1.5"),
    ("email", "<x@y.example>"),  # a display name's brackets: mail from x@y.example would never match it
    ("email", "x@y.example, z@y.example"),
    ("email", '"x"@y.example'),
    ("integer", "seven"),
    ("integer", True),
    ("duration", "-5"),
    ("duration", "soon"),
    ("duration", "3 fortnights"),
    ("duration", "1970-13-01 00:00:00"),
    ("duration", True),
    ("reference", "not-a-sys-id"),
    ("journal", ["a", "list"]),
    ("string", {"an": "object"}),
    # what Python's own parsers take but no one means: a NUL and what follows, ISO's basic and week
    # forms, other scripts' digits, digit grouping
    ("datetime", "2024-01-01 00:00:00\x00"),
    ("datetime", "2024-01-01 00:00:00\x00garbage"),
    ("datetime", "20240101T000000"),
    ("date", "2024-W01-1"),
    ("date", "20240101"),
    ("integer", "\u0661"),
    ("integer", "1_000"),
    ("decimal", "\u0661.\u0665"),
    ("decimal", "1_0.5"),
]


@pytest.mark.parametrize("type_name, raw", BAD_VALUES)
def test_field_types_refuse_values_that_do_not_fit(type_name, raw):
    field = FieldDef("thing", type_name, "gadget", "Thing", reference="gadget" if type_name == "reference" else None)
    with pytest.raises(FieldValueError):
        FIELD_TYPES[type_name].parse(field, raw)


@pytest.mark.parametrize("type_name, raw, parsed, rendered", [
    ("email", "a.b@example.com", "a.b@example.com", "a.b@example.com"),
    ("url", "https://example.com/x?y=1", "https://example.com/x?y=1", "https://example.com/x?y=1"),
    ("date", "2024-02-29", dt.date(2024, 2, 29), "2024-02-29"),
    ("datetime", "2024-02-29T10:11:12", dt.datetime(2024, 2, 29, 10, 11, 12), "2024-02-29 10:11:12"),
    ("datetime", "2024-02-29 12:11:12+02:00", dt.datetime(2024, 2, 29, 10, 11, 12), "2024-02-29 10:11:12"),
    ("decimal", "12.50", Decimal("12.50"), "12.5"),
    ("decimal", 3, Decimal(3), "3"),
    ("boolean", "TRUE", True, "true"),
    ("boolean", "0", False, "false"),
    ("boolean", "", False, "false"),  # an empty boolean is false, as on ServiceNow
    ("boolean", None, False, "false"),
    ("integer", " 42 ", 42, "42"),
    ("duration", "1h 30m", 5400, "5400"),
    ("duration", "2 days, 4 hours", 187200, "187200"),
    ("duration", "1970-01-02 04:00:00", 100800, "100800"),
    ("duration", 3600, 3600, "3600"),
    ("string", "", None, ""),
])
def test_field_types_parse_and_render(type_name, raw, parsed, rendered):
    field = FieldDef("thing", type_name, "gadget", "Thing")
    ftype = FIELD_TYPES[type_name]
    value = ftype.parse(field, raw)
    assert value == parsed
    assert ftype.render(value) == rendered


GADGET = """\
table: gadget
label: Gadget
display: name
fields:
  name: {type: string, max_length: 20, mandatory: true}
  nickname: {type: string}
  contact_email: {type: email}
  homepage: {type: url}
  released: {type: date}
  last_seen: {type: datetime}
  price: {type: decimal}
  in_stock: {type: boolean, default: true}
  featured: {type: boolean}
  quantity: {type: integer}
  colour: {type: choice, choices: {red: Red, blue: Blue}}
"""


@pytest.fixture
def gadgets(config):
    """The runtime with one more table, `gadget`, migrated into the test database."""
    defs = load_sources([*read_sources(DEFINITIONS), ("tables/gadget.yaml", GADGET)])
    rt = Runtime(config, defs)
    migrate(rt.engine, rt.storage)
    yield rt
    rt.engine.dispose()


def test_parsing_errors_name_the_field(gadgets):
    bad = {"contact_email": "nobody", "homepage": "not a url", "released": "31/12/2024", "last_seen": "noon",
           "price": "cheap", "in_stock": "maybe", "quantity": "2.5", "colour": "green", "name": "x" * 21}
    # values that parse but do not fit the column (PostgreSQL would fail the statement; SQLite would store them)
    too_big = [("nickname", "n" * 256), ("contact_email", "e" * 95 + "@example.com"),
               ("quantity", "3000000000"), ("quantity", -2**31 - 1), ("price", "1e20"), ("price", "NaN"),
               ("price", "Infinity")]
    for field, raw in [*bad.items(), *too_big]:
        with gadgets.transaction() as service:
            with pytest.raises(RecordError) as caught:
                service.insert("gadget", {"name": "Widget", field: raw})
            assert caught.value.field == field and f"{field}: " in str(caught.value)
            assert service.count("gadget", Query()) == 0


def test_typed_values_round_trip(gadgets):
    with gadgets.transaction() as service:
        made = service.insert("gadget", {"name": "Widget", "contact_email": "w@example.com",
                                         "homepage": "https://example.com", "released": "2024-02-29",
                                         "last_seen": "2024-03-01 08:09:10", "price": "19.990",
                                         "quantity": "3", "colour": "blue"})
    with gadgets.transaction() as service:
        got = service.get("gadget", made["sys_id"])
    assert got["released"] == dt.date(2024, 2, 29)
    assert got["last_seen"] == dt.datetime(2024, 3, 1, 8, 9, 10)
    assert Decimal(got["price"]) == Decimal("19.99")
    assert got["in_stock"] is True and got["quantity"] == 3 and got["colour"] == "blue"
    assert got["contact_email"] == "w@example.com" and got["homepage"] == "https://example.com"


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_an_empty_boolean_is_stored_false(gadgets, empty):
    """A boolean is true or false, never empty (ServiceNow's rule): set to nothing, or left out of a new
    record that declares no default, it is false, so each record is in `=true` or `=false`."""
    with gadgets.transaction() as service:
        plain = service.insert("gadget", {"name": "Plain"})["sys_id"]
        emptied = service.insert("gadget", {"name": "Emptied", "in_stock": empty, "featured": empty})["sys_id"]
        updated = service.insert("gadget", {"name": "Updated", "featured": "true"})["sys_id"]
        service.update("gadget", updated, {"in_stock": empty, "featured": empty})
        batch = [service.insert("gadget", {"name": f"Batch {i}", "featured": "true"})["sys_id"] for i in range(30)]
        service.update_many("gadget", [(sys_id, {"featured": empty}) for sys_id in batch])
    with gadgets.transaction() as service:
        rows = service.query("gadget", Query(), ["name", "in_stock", "featured"])
        got = {r["name"]: (r["in_stock"], r["featured"]) for r in rows}
        assert got.pop("Plain") == (True, False)  # in_stock's default, featured's false
        assert (got.pop("Emptied"), got.pop("Updated")) == ((False, False), (False, False))
        assert set(got.values()) == {(True, False)}  # the batch's
        assert service.count("gadget", parse_encoded("featured=false")) == 33
        assert service.count("gadget", parse_encoded("featuredISEMPTY")) == 0
        assert service.count("gadget", parse_encoded("featured=")) == 0  # an empty condition is still "is empty"
        falses = service.query("gadget", parse_encoded("featured=false"), ["sys_id"])
        assert {plain, emptied, updated} <= {r["sys_id"] for r in falses}


AWKWARD = ["tab\there", "line\nbreak", "back\\slash \\N", "quote ' and \"", "ünïcödé ✓", "\\.", "", None]


def test_a_big_batch_stores_what_one_insert_stores(gadgets):
    """insert_many writes a batch at once (on PostgreSQL, from 50 rows, by COPY): every field type,
    empty values and text the COPY format escapes read back as the same record inserted alone."""
    from caseloom import bulk

    rows = [{"name": f"Widget {i}", "nickname": AWKWARD[i % len(AWKWARD)], "contact_email": f"w{i}@example.com",
             "homepage": "https://example.com/a?b=1&c=\\d" if i % 2 else None, "released": "2024-02-29",
             "last_seen": f"2024-03-01 08:09:{i % 60:02d}" if i % 3 else None, "price": f"{i}.125",
             "in_stock": i % 2 == 0, "quantity": i - 30 if i % 4 else None, "colour": ("red", "blue", None)[i % 3]}
            for i in range(bulk.COPY_FROM + 10)]
    with gadgets.transaction() as service:
        assert service.insert_many("gadget", rows) == len(rows)
        alone = [service.insert("gadget", {**row, "name": f"Alone {i}"}) for i, row in enumerate(rows)]
    fields = [f for f in gadgets.defs.tables["gadget"].fields if not f.startswith("sys_") and f != "name"]
    with gadgets.transaction() as service:
        batch = {r["name"]: r for r in service.query("gadget", parse_encoded("nameSTARTSWITHWidget"))}
        for i, made in enumerate(alone):
            one, many = service.get("gadget", made["sys_id"]), batch[f"Widget {i}"]
            assert {f: many[f] for f in fields} == {f: one[f] for f in fields}, i
    assert batch["Widget 2"]["quantity"] == -28 and batch["Widget 1"]["nickname"] == "line\nbreak"


def test_a_big_batch_update_stores_what_one_update_stores(gadgets):
    """update_many writes a batch at once: one executemany, or on PostgreSQL (from 20 rows) one UPDATE
    from an array of each field's values. Every field type, emptied values and awkward text read back
    as the same records updated one at a time, each with one change counted, audited alike."""
    from caseloom import bulk

    count = bulk.ARRAYS_FROM + 10
    before = {"nickname": "initial", "homepage": "https://initial.example", "released": "2020-01-01",
              "last_seen": "2020-01-01 00:00:00", "price": "0.5", "quantity": "1000"}
    with gadgets.transaction() as service:  # in_stock starts as the opposite of what its row is given
        service.insert_many("gadget", [{"name": f"Widget {i:03d}", **before, "in_stock": i % count % 2 == 1}
                                       for i in range(2 * count)])
        ids = [r["sys_id"] for r in service.query("gadget", parse_encoded("ORDERBYname"), ["sys_id"])]
    batch_ids, alone_ids = ids[:count], ids[count:]
    # every row changes every field (so the batch is one set of columns), some of them to empty
    values = [{"nickname": AWKWARD[i % len(AWKWARD)], "homepage": "https://example.com/a?b=1&c=\\d" if i % 2 else None,
               "released": "2024-02-29" if i % 3 else "", "last_seen": f"2024-03-01 08:09:{i % 60:02d}" if i % 3 else None,
               "price": f"{i}.125", "in_stock": i % 2 == 0, "quantity": i - 12 if i % 4 else None,
               "colour": ("red", "blue")[i % 2]} for i in range(count)]
    updates: list[tuple[str, bool]] = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE GADGET"):
            updates.append((statement, executemany))

    sa.event.listen(gadgets.engine, "before_cursor_execute", listen)
    try:
        with gadgets.transaction() as service:
            assert service.update_many("gadget", list(zip(batch_ids, values, strict=True))) == count
            batch_updates = list(updates)
            for sys_id, row in zip(alone_ids, values, strict=True):
                service.update("gadget", sys_id, row)
    finally:
        sa.event.remove(gadgets.engine, "before_cursor_execute", listen)
    [(statement, executemany)] = batch_updates
    if gadgets.engine.dialect.name == "postgresql":
        assert "unnest(" in statement and not executemany
    else:
        assert executemany
    fields = [f for f in gadgets.defs.tables["gadget"].fields if not f.startswith("sys_") and f != "name"]
    with gadgets.transaction() as service:
        for i, (one_id, many_id) in enumerate(zip(alone_ids, batch_ids, strict=True)):
            one, many = service.get("gadget", one_id), service.get("gadget", many_id)
            assert {f: many[f] for f in fields} == {f: one[f] for f in fields}, i
            assert many["sys_mod_count"] == one["sys_mod_count"] == 1 and many["sys_updated_by"] == "system"
            assert [(a["fieldname"], a["oldvalue"], a["newvalue"]) for a in audit_of(service, many_id)] == \
                [(a["fieldname"], a["oldvalue"], a["newvalue"]) for a in audit_of(service, one_id)]
        first = service.get("gadget", batch_ids[1])
    assert (first["nickname"], first["quantity"], first["in_stock"]) == ("line\nbreak", -11, False)


def test_a_batch_update_naming_a_record_twice_applies_both_in_turn(gadgets):
    from caseloom import bulk

    with gadgets.transaction() as service:
        one = service.insert("gadget", {"name": "Twice", "quantity": "1"})["sys_id"]
        others = [service.insert("gadget", {"name": f"Other {i}"})["sys_id"] for i in range(bulk.ARRAYS_FROM)]
        service.update_many("gadget", [(one, {"quantity": "2"}), *((o, {"quantity": "5"}) for o in others),
                                       (one, {"quantity": "3"})])
    with gadgets.transaction() as service:
        assert service.get("gadget", one)["quantity"] == 3
        assert {service.get("gadget", o)["quantity"] for o in others} == {5}


@pytest.mark.parametrize("limit", [10_000, 2])
def test_an_unfiltered_count_of_a_class_sharing_its_table_is_exact(runtime, monkeypatch, limit):
    """Cases share the task table: a case list's count is the table's count minus the other
    classes' rows when those are few (under the cap), else counted directly; both exact."""
    from caseloom.query import Query
    from caseloom.query import compile as query_compile

    monkeypatch.setattr(query_compile, "COUNT_OTHERS_LIMIT", limit)
    with runtime.transaction() as service:
        before_tasks, before_cases = service.count("task", Query()), service.count("sn_customerservice_case", Query())
        service.insert_many("task", ({"short_description": f"task {i}"} for i in range(4)))
        service.insert_many("sn_customerservice_case", ({"short_description": f"case {i}", "state": 1} for i in range(3)))
        assert service.count("task", Query()) == before_tasks + 7
        assert service.count("sn_customerservice_case", Query()) == before_cases + 3


def test_a_change_made_since_the_record_was_read_is_refused_saying_who_and_when(runtime):
    with runtime.transaction() as service:
        case = service.insert(CASE, {"short_description": "read, then changed by another"})
        service.update(CASE, case["sys_id"], {"short_description": "the other's change"})
        with pytest.raises(Conflict) as caught:
            service.update(CASE, case["sys_id"], {"short_description": "mine"},
                           expected_mod_count=case["sys_mod_count"])
    assert re.fullmatch(r"this case was changed by \S+ at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC after you opened it",
                        str(caught.value)), str(caught.value)
