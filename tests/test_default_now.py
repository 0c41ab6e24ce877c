"""`default: now`: a date or date-and-time field that a new record, given no value, takes at the moment
it is created, whichever way it is created (CSM: a case's `opened_at`, as ServiceNow's task). Any other
field type declaring it is a located error of `caseloom validate`."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from click.testing import CliRunner

from caseloom import setinsert
from caseloom.cli import main
from conftest import basic, form_token, ui_sign_in
from small_app import small_app, write_folder
from test_setinsert import make_children

CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"


def clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def shown(client, sys_ids: list[str]) -> list[dict]:
    """The cases' opened_at and sys_created_on as the Table API shows them to an administrator."""
    answer = client.get(f"{CASES}?sysparm_query=sys_idIN{','.join(sys_ids)}&sysparm_fields=opened_at,sys_created_on"
                        f"&sysparm_limit={len(sys_ids)}", headers=basic("admin"))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.json["result"]


def by_api(client, runtime, monkeypatch) -> list[str]:
    answer = client.post(CASES, json={"short_description": "Printer on fire"}, headers=basic("admin"))
    assert answer.status_code == 201, answer.json
    return [answer.json["result"]["sys_id"]]


def by_form(client, runtime, monkeypatch) -> list[str]:
    ui_sign_in(client, "admin")  # the case form has no opened_at: it is not posted at all
    token = form_token(client, f"/{CASE}.do?sys_id=-1")
    answer = client.post(f"/{CASE}.do?sys_id=-1", data={"short_description": "Printer on fire", "csrf_token": token})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return [answer.headers["Location"].rsplit("sys_id=", 1)[1]]


def children(set_based: bool):
    """Child cases of a major case for every account of a recipients list (30), in one INSERT ... SELECT
    or row by row."""
    def make(client, runtime, monkeypatch) -> list[str]:
        inserted = {}  # table -> what its last insert_select answered (None: it went row by row)
        real = setinsert.insert_select

        def spy(service, table, *args, **kwargs):
            inserted[table] = real(service, table, *args, **kwargs)
            return inserted[table]

        monkeypatch.setattr(setinsert, "insert_select", spy)
        runtime.set_based = set_based
        made = [c["sys_id"] for c in make_children(runtime, "a")[1]]
        assert (inserted.get(CASE) is not None) == set_based  # the children were (or were not) written set-based
        return made

    return make


@pytest.mark.parametrize("create", [by_api, by_form, children(set_based=True), children(set_based=False)],
                         ids=["api", "form", "children set-based", "children row by row"])
def test_a_new_case_is_opened_the_moment_it_is_created(client, runtime, monkeypatch, create):
    before = clock()
    sys_ids = create(client, runtime, monkeypatch)
    after = clock()
    cases = shown(client, sys_ids)
    assert len(cases) == len(sys_ids)
    for case in cases:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", case["opened_at"]), case
        assert f"{before:%Y-%m-%d %H:%M:%S}" <= case["opened_at"] <= f"{after:%Y-%m-%d %H:%M:%S}"
        assert case["opened_at"] == case["sys_created_on"]


def test_an_opened_at_given_is_kept(client):
    answer = client.post(CASES, json={"short_description": "Reported by phone yesterday",
                                      "opened_at": "2026-03-02 09:00:00"}, headers=basic("admin"))
    assert answer.status_code == 201, answer.json
    assert answer.json["result"]["opened_at"] == "2026-03-02 09:00:00"


VISITS = {
    "tables/x_visit.yaml": "table: x_visit\nfields:\n  note: {type: string}\n  visited_on: {type: date, default: now}\n"
                           "  arrived_at: {type: datetime, default: now}\nform: [note, visited_on, arrived_at]\n",
    "roles.yaml": "roles:\n  x_user: {}\n",
    "access/x.yaml": "access:\n  - {table: x_visit, operations: [read, create, write], roles: [x_user]}\n",
}


def test_a_date_and_a_datetime_field_of_any_application_default_to_now(config, tmp_path):
    with small_app(config, tmp_path, VISITS, {"visitor": ["x_user"]}) as made:
        before = clock()
        visit = made.api("visitor").post("/api/now/table/x_visit", {"note": "first"})
        after = clock()
        assert visit.status_code == 201, visit.get_data(as_text=True)
        result = visit.json["result"]
        assert result["visited_on"] in {f"{before:%Y-%m-%d}", f"{after:%Y-%m-%d}"}  # today, UTC
        assert f"{before:%Y-%m-%d %H:%M:%S}" <= result["arrived_at"] <= f"{after:%Y-%m-%d %H:%M:%S}"
        made.sign_in("visitor")  # a new record's form shows the moment it was opened, as ServiceNow's does
        page = made.client.get("/x_visit.do?sys_id=-1").get_data(as_text=True)
        assert re.search(rf'name="visited_on"[^>]*value="{after:%Y-%m-%d}"', page), page


@pytest.mark.parametrize("field", [
    "{type: string}", "{type: integer}", "{type: boolean}", "{type: duration}",
    "{type: choice, choices: {now: Now, later: Later}}", "{type: reference, to: x_visit}",
])
def test_validate_refuses_default_now_on_other_field_types(tmp_path, field):
    folder = write_folder(tmp_path / "definitions", {
        "tables/x_visit.yaml": f"table: x_visit\nfields:\n  note: {{type: string}}\n  when: {field[:-1]}, default: now}}\n"})
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1, result.output
    ftype = re.search(r"type: (\w+)", field).group(1)
    column = len("  when: ") + len(field) - 1 + len(", default: ") + 1
    assert result.stderr.splitlines() == [
        f"{folder}/tables/x_visit.yaml:4:{column}: default: now (the moment a record is created) applies only to "
        f"fields of type date or datetime; field 'when' is of type {ftype}: give it a value of its type, or no default",
        f"1 error(s) in {folder}"]


TICKETS = {
    "tables/x_ticket.yaml": "table: x_ticket\nfields:\n  note: {type: string}\n  urgency: {type: integer, default: 3}\n"
                            "  opened: {type: datetime, default: now}\n  seen: {type: string}\nform: [note, urgency]\n",
    "rules/x.yaml": "rules:\n  - name: mark_defaulted\n    table: x_ticket\n    when: before\n    on: [insert]\n"
                    "    condition:\n      all:\n        - {field: urgency, op: eq, value: 3}\n"
                    "        - {field: opened, op: notempty}\n"
                    "    effects:\n      - set: {seen: defaults}\n",
    "roles.yaml": "roles:\n  x_user: {}\n",
    "access/x.yaml": "access:\n  - {table: x_ticket, operations: [read, create, write], roles: [x_user]}\n",
}


@pytest.mark.parametrize("given, seen", [({}, "defaults"), ({"urgency": "3"}, "defaults"), ({"urgency": "1"}, "")])
def test_a_before_insert_rule_sees_the_declared_defaults_of_fields_not_given(config, tmp_path, given, seen):
    """As ServiceNow's new record has its defaults before its business rules run (and as the set-based
    insert's rules see them), a before-insert rule's condition reads a field's default when the
    record is given none."""
    with small_app(config, tmp_path, TICKETS, {"tess": ["x_user"]}) as made:
        ticket = made.api("tess").post("/api/now/table/x_ticket", {"note": "first", **given})
        assert ticket.status_code == 201, ticket.get_data(as_text=True)
        assert ticket.json["result"]["seen"] == seen
