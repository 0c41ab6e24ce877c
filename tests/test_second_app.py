"""The second application, IT asset loans (tests/apps/loans, YAML only), end to end.

Every primitive the platform offers is proven here against an application that is not CSM:
a base table with two child classes that relabel its states, a lifecycle, plain and
background actions, before- and after-rules, every effect, notifications (with dot-walked
recipients), member lists (condition, script, import) and the generic pages. Each test runs
on a fresh copy of an initialised demo database, on SQLite and (when configured) PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from caseloom.bootstrap import initialise
from caseloom.cli import main
from caseloom.config import Config
from caseloom.definitions import load_folder
from caseloom.jobs.registry import execute_job
from caseloom.runtime import Runtime
from conftest import BACKENDS, ROOT, basic, build_templates, database_copy, drop_templates

LOANS = ROOT / "tests" / "apps" / "loans"
SCRIPTS = LOANS / "scripts"
TABLE = "/api/now/table"
ACTIONS = "/api/caseloom/actions"
NOW = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # `{{ now }}`: UTC, YYYY-MM-DD HH:MM:SS


# -- fixtures: an initialised loans database per backend, copied for each test -------------------

@pytest.fixture(scope="module", autouse=True)
def scripts_folder():
    """Pool scripts live in the app's own scripts folder (CASELOOM_SCRIPTS), for this module only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASELOOM_SCRIPTS", str(SCRIPTS))
        yield SCRIPTS


@pytest.fixture(scope="module")
def loans_definitions(scripts_folder):
    return load_folder(LOANS)


def loans_config(url: str, tmp: Path) -> Config:
    return Config(database_url=url, definitions=str(LOANS), scripts=str(SCRIPTS), instance=str(tmp / "instance"),
                  ui=str(ROOT / "ui"), secret_key="test-secret", queue=f"sqlite:///{tmp / 'queue.db'}")


@pytest.fixture(scope="module")
def loans_templates(tmp_path_factory, loans_definitions):
    """`caseloom init --demo` once per backend: schema, properties, demo data, declared pools."""
    base = tmp_path_factory.mktemp("loans")

    def initialise_at(url: str) -> None:
        config = loans_config(url, base)
        runtime = Runtime(config, loans_definitions)
        report = initialise(config, loans_definitions, demo=True, runtime=runtime)
        runtime.engine.dispose()
        assert not any("not built" in line for line in report.lists), report.lists

    yield build_templates(base, "loans", initialise_at)
    drop_templates("loans")


@pytest.fixture(params=BACKENDS)
def loans_url(request, loans_templates, tmp_path):
    yield from database_copy(loans_templates, request.param, tmp_path, "loans")


@pytest.fixture
def config(loans_url, tmp_path):
    return loans_config(loans_url, tmp_path)


@pytest.fixture(scope="module")
def definitions(loans_definitions):
    """conftest's `runtime`, `app` and `client` run the loans app here."""
    return loans_definitions


class User:
    """The API as one demo user of the loans app (each user's password is its name)."""

    def __init__(self, client, name: str):
        self.client, self.name, self.headers = client, name, basic(name, name)

    def get(self, path, **kw):
        return self.client.get(path, headers=self.headers, **kw)

    def post(self, path, json=None, **kw):
        return self.client.post(path, json=json, headers=self.headers, **kw)

    def patch(self, path, json=None, **kw):
        return self.client.patch(path, json=json, headers=self.headers, **kw)

    def delete(self, path, **kw):
        return self.client.delete(path, headers=self.headers, **kw)

    # -- the Table API, values as sys_ids -------------------------------------------------------

    def rows(self, table: str, query: str = "", fields: str = "", display: str = "false") -> list[dict]:
        params = {"sysparm_query": query, "sysparm_exclude_reference_link": "true", "sysparm_display_value": display}
        if fields:
            params["sysparm_fields"] = fields
        r = self.get(f"{TABLE}/{table}", query_string=params)
        assert r.status_code == 200, r.json
        return r.json["result"]

    def one(self, table: str, query: str, fields: str = "") -> dict:
        found = self.rows(table, query, fields)
        assert len(found) == 1, (table, query, found)
        return found[0]

    def record(self, table: str, sys_id: str) -> dict:
        r = self.get(f"{TABLE}/{table}/{sys_id}", query_string={"sysparm_exclude_reference_link": "true"})
        assert r.status_code == 200, r.json
        return r.json["result"]

    def act(self, table: str, sys_id: str, action: str, **inputs):
        return self.post(f"{ACTIONS}/{table}/{sys_id}/{action}", json=inputs)


@pytest.fixture
def users(client):
    return {name: User(client, name) for name in ("admin", "rita", "theo", "mona", "sami", "lou")}


@pytest.fixture
def ids(users):
    """sys_ids of the demo users, locations and assets the tests use, by name."""
    admin = users["admin"]
    found = {u["user_name"]: u["sys_id"] for u in admin.rows("sys_user", fields="sys_id,user_name")}
    found.update({loc["name"]: loc["sys_id"] for loc in admin.rows("loan_location", fields="sys_id,name")})
    found.update({a["name"]: a["sys_id"] for a in admin.rows("loan_asset", fields="sys_id,name")})
    return found


def new_request(user: User, ids: dict, asset: str = "MacBook Air #2", location: str = "Berlin HQ", **values) -> dict:
    """A request by `user` for Rita, picked up at `location`."""
    body = {"short_description": f"Need {asset}", "requested_for": ids["rita"], "location": ids[location],
            "asset": ids[asset], **values}
    r = user.post(f"{TABLE}/loan_request", json=body)
    assert r.status_code == 201, r.json
    return user.record("loan_request", r.json["result"]["sys_id"])


def new_task(user: User, request_id: str, task_type: str, state: int = 1) -> str:
    r = user.post(f"{TABLE}/loan_task", json={"short_description": f"{task_type} it", "request": request_id,
                                               "task_type": task_type, "state": state})
    assert r.status_code == 201, r.json
    return r.json["result"]["sys_id"]


def journal(user: User, sys_id: str, element: str = "work_notes") -> list[str]:
    entries = user.rows("sys_journal_field", f"element_id={sys_id}^element={element}^ORDERBYsys_created_on^ORDERBYsys_id",
                        "value")
    return [e["value"] for e in entries]


def emails(admin: User, sys_id: str, subject_starts: str = "") -> list[dict]:
    found = admin.rows("sys_email", f"instance={sys_id}^ORDERBYsys_created_on", "recipients,subject,body,state")
    return [e for e in found if e["subject"].startswith(subject_starts)]


def addresses(email: dict) -> set[str]:
    return set(email["recipients"].split(","))


def set_property(admin: User, name: str, value: str) -> None:
    prop = admin.one("sys_properties", f"name={name}", "sys_id")
    assert admin.patch(f"{TABLE}/sys_properties/{prop['sys_id']}", json={"value": value}).status_code == 200


@pytest.fixture
def approved(users, ids):
    """Rita's request for the Lisbon MacBook, picked up in Berlin, approved by Mona."""
    request = new_request(users["rita"], ids)
    r = users["mona"].act("loan_request", request["sys_id"], "approve_loan", asset=ids["MacBook Air #2"],
                          note="Charger included")
    assert r.status_code == 200, r.json
    return users["mona"].record("loan_request", request["sys_id"])


@pytest.fixture
def on_loan(users, approved):
    r = users["theo"].act("loan_request", approved["sys_id"], "hand_over", due_date="2027-02-26",
                          comments="Bring it back with the charger")
    assert r.status_code == 200, r.json
    return users["theo"].record("loan_request", approved["sys_id"])


# -- the commands -------------------------------------------------------------------------------

def test_validate_accepts_the_loans_app():
    result = CliRunner().invoke(main, ["validate", str(LOANS)], env={"CASELOOM_SCRIPTS": str(SCRIPTS)})
    assert result.exit_code == 0, result.output + result.stderr
    assert "valid" in result.output


def test_init_demo_creates_the_schema_the_demo_users_and_builds_the_declared_pools(tmp_path):
    env = {"CASELOOM_DATABASE_URL": f"sqlite:///{tmp_path / 'loans.db'}", "CASELOOM_DEFINITIONS": str(LOANS),
           "CASELOOM_SCRIPTS": str(SCRIPTS), "CASELOOM_INSTANCE": str(tmp_path / "instance"),
           "CASELOOM_QUEUE": f"sqlite:///{tmp_path / 'queue.db'}"}
    result = CliRunner().invoke(main, ["init", "--demo"], env=env)
    assert result.exit_code == 0, result.output + result.stderr
    out = result.output
    for user, roles in (("rita / rita", "loans.requester"), ("theo / theo", "loans.agent"),
                        ("mona / mona", "loans.manager"), ("sami / sami", "loans.site_manager")):
        assert f"{user}: {roles}" in out
    assert "Spare laptops: 6 identified, 6 added" in out
    assert "Ready to lend: 8 identified, 8 added" in out
    assert "Locations with a loan desk: 2 identified, 2 added" in out
    again = CliRunner().invoke(main, ["init", "--demo"], env=env)  # a second run changes nothing
    assert again.exit_code == 0 and "demo data: already loaded" in again.output


# -- tables: the base and its two child classes ---------------------------------------------------

def test_the_base_list_shows_each_child_class_its_own_state_labels(users):
    """Requests and tasks share loan_work's state values; each class has its own labels."""
    theo = users["theo"]
    shown = {r["number"]: r["state"] for r in theo.rows("loan_work", "stateIN3,7", "number,state", display="true")}
    stored = {r["number"]: (r["sys_class_name"], r["state"])
              for r in theo.rows("loan_work", "stateIN3,7", "number,sys_class_name,state")}
    assert sorted((*stored[number], label) for number, label in shown.items()) == [
        ("loan_request", "3", "Returned"), ("loan_request", "7", "Rejected"),
        ("loan_task", "3", "Closed"), ("loan_task", "7", "Skipped")]
    base_only = theo.post(f"{TABLE}/loan_work", json={"short_description": "Count the headsets"}).json["result"]
    theo.patch(f"{TABLE}/loan_work/{base_only['sys_id']}", json={"state": "3"})
    [row] = theo.rows("loan_work", f"sys_id={base_only['sys_id']}", "state", display="true")
    assert row["state"] == "Closed"  # the base's own label


@pytest.mark.parametrize(("query", "classes"), [
    ("sys_class_nameINSTANCEOFloan_work", {"loan_work", "loan_request", "loan_task"}),  # the table and its children
    ("sys_class_nameINSTANCEOFloan_request", {"loan_request"}),
    ("sys_class_nameINSTANCEOFloan_task^ORsys_class_nameINSTANCEOFloan_request", {"loan_request", "loan_task"}),
    ("sys_class_nameINSTANCEOFloan_asset", set()),  # another hierarchy: no record is one
])
def test_instanceof_finds_the_records_of_a_table_and_the_tables_extending_it(users, ids, query, classes):
    """ServiceNow's INSTANCEOF, in a list of the base table, the API and a rule's condition alike."""
    theo = users["theo"]
    new_task(theo, new_request(users["rita"], ids)["sys_id"], "deliver")
    theo.post(f"{TABLE}/loan_work", json={"short_description": "Count the headsets"})
    every = theo.rows("loan_work", "", "sys_id,sys_class_name")
    found = theo.rows("loan_work", query, "sys_id,sys_class_name")
    assert {r["sys_class_name"] for r in found} == classes
    assert {r["sys_id"] for r in found} == {r["sys_id"] for r in every if r["sys_class_name"] in classes}
    from caseloom.query import parse_encoded
    from caseloom.query.evaluate import evaluate

    defs = theo.client.application.extensions["caseloom"].defs
    node = parse_encoded(query).where
    assert {r["sys_id"] for r in every if evaluate(node, r, table=defs.tables["loan_work"],
                                                       tables=defs.tables)} == {r["sys_id"] for r in found}


@pytest.mark.parametrize(("query", "detail"), [
    ("sys_class_nameINSTANCEOFloan_nothing", "sys_class_name: INSTANCEOF takes a table's name; there is no table "
                                             "'loan_nothing'"),
    ("short_descriptionINSTANCEOFloan_task", "short_descriptionINSTANCEOFloan_task: INSTANCEOF reads a record's "
                                             "class; write it on sys_class_name (sys_class_nameINSTANCEOFloan_task)"),
])
def test_instanceof_of_no_table_or_on_another_field_is_a_400(users, query, detail):
    r = users["theo"].get(f"{TABLE}/loan_work", query_string={"sysparm_query": query})
    assert r.status_code == 400 and detail in str(r.json["error"]), r.json


def test_crud_on_the_base_and_child_tables(users, ids):
    theo, mona = users["theo"], users["mona"]
    request = new_request(users["rita"], ids)
    assert request["number"].startswith("LREQ") and request["state"] == "1"
    assert NOW.fullmatch(request["opened_at"])  # stamped by the before-insert rule on loan_work
    task_id = new_task(theo, request["sys_id"], "deliver")
    task = theo.record("loan_task", task_id)
    assert task["number"].startswith("LTASK") and NOW.fullmatch(task["opened_at"])
    r = theo.post(f"{TABLE}/loan_work", json={"short_description": "Count the headsets", "location": ids["Berlin HQ"]})
    assert r.status_code == 201 and r.json["result"]["number"].startswith("LW")
    found = theo.rows("loan_work", f"sys_idIN{request['sys_id']},{task_id}", "sys_id,sys_class_name")
    assert {(f["sys_id"], f["sys_class_name"]) for f in found} == {(request["sys_id"], "loan_request"),
                                                                    (task_id, "loan_task")}
    assert theo.patch(f"{TABLE}/loan_task/{task_id}", json={"state": "2"}).json["result"]["state"] == "2"
    assert theo.patch(f"{TABLE}/loan_work/{task_id}", json={"short_description": "Deliver by bike"}).status_code == 200
    assert theo.record("loan_task", task_id)["short_description"] == "Deliver by bike"
    assert theo.delete(f"{TABLE}/loan_task/{task_id}").status_code == 403  # delete is the manager's
    assert mona.delete(f"{TABLE}/loan_task/{task_id}").status_code == 204
    assert theo.get(f"{TABLE}/loan_task/{task_id}").status_code == 404


@pytest.mark.parametrize(("user", "method", "table", "status"), [
    ("rita", "post", "loan_task", 403),       # tasks take loan_work's create rule: agents
    ("rita", "post", "loan_asset", 403),
    ("rita", "get", "loan_pool", 403),        # pools are read by agents and up
    ("theo", "post", "loan_location", 403),   # locations are the managers'
    ("theo", "get", "loan_pool", 200),
    ("sami", "get", "loan_request", 200),     # the site manager's role contains the requester's
])
def test_access_follows_the_roles_and_the_base_tables_rules(users, user, method, table, status):
    api = users[user]
    r = api.get(f"{TABLE}/{table}") if method == "get" else api.post(f"{TABLE}/{table}", json={"short_description": "x",
                                                                                                  "name": "x"})
    assert r.status_code == status, r.json


# -- rules ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("asset", ["Epson projector #11", "Jabra headset #12"])  # damaged, lost
def test_the_refusing_before_rule_names_the_asset_and_nothing_is_written(users, ids, asset):
    rita = users["rita"]
    before = len(rita.rows("loan_request", fields="sys_id"))
    r = rita.post(f"{TABLE}/loan_request", json={"short_description": "Projector", "requested_for": ids["rita"],
                                                   "location": ids["Lisbon Office"], "asset": ids[asset]})
    assert r.status_code == 400
    assert r.json["error"]["detail"]["field"] == "asset"
    assert "damaged or lost: choose another asset" in r.json["error"]["message"]
    assert len(rita.rows("loan_request", fields="sys_id")) == before
    request = new_request(rita, ids)  # and on update
    r = rita.patch(f"{TABLE}/loan_request/{request['sys_id']}", json={"asset": ids[asset]})
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "asset"
    assert rita.record("loan_request", request["sys_id"])["asset"] == ids["MacBook Air #2"]


def test_an_after_rule_copies_the_request_fields_to_its_open_tasks(users, ids):
    """copy_to_children across tables: the request's due date and assignee reach its open
    loan_task records (their `request` points at it), not its closed ones."""
    theo, admin = users["theo"], users["admin"]
    request = new_request(users["rita"], ids)
    open_task, closed_task = new_task(theo, request["sys_id"], "deliver"), new_task(theo, request["sys_id"], "collect", 3)
    other = new_task(theo, new_request(users["rita"], ids)["sys_id"], "deliver")
    r = theo.patch(f"{TABLE}/loan_request/{request['sys_id']}", json={"due_date": "2027-03-31",
                                                                       "assigned_to": ids["theo"]})
    assert r.status_code == 200, r.json
    assert (theo.record("loan_task", open_task)["due_date"], theo.record("loan_task", open_task)["assigned_to"]) == (
        "2027-03-31", ids["theo"])
    assert theo.record("loan_task", closed_task)["due_date"] == ""
    assert theo.record("loan_task", other)["due_date"] == ""
    set_property(admin, "loans.sync_tasks", "false")  # the rule's condition reads the property
    theo.patch(f"{TABLE}/loan_request/{request['sys_id']}", json={"due_date": "2027-04-30"})
    assert theo.record("loan_task", open_task)["due_date"] == "2027-03-31"


def test_a_bulk_loan_passes_its_due_date_to_its_loans_and_its_rejection_cascades(users, ids):
    """copy_to_children and cascade within one table (`parent` points at the bulk loan)."""
    rita, mona = users["rita"], users["mona"]
    bulk = new_request(rita, ids, "ThinkPad T14 #1")
    loans = [new_request(rita, ids, asset)["sys_id"] for asset in ("ThinkPad T14 #5", "ThinkPad T14 #9")]
    assert mona.act("loan_request", bulk["sys_id"], "add_loans", requests=loans).status_code == 200
    mona.patch(f"{TABLE}/loan_request/{bulk['sys_id']}", json={"due_date": "2027-05-14"})
    assert {mona.record("loan_request", i)["due_date"] for i in loans} == {"2027-05-14"}
    r = mona.act("loan_request", bulk["sys_id"], "reject_loan", work_notes="Budget frozen")
    assert r.status_code == 200 and r.json["result"]["state"] == "7"
    for loan in loans:
        assert mona.record("loan_request", loan)["state"] == "7"
        assert journal(mona, loan) == [f"Rejected with bulk loan {bulk['number']}"]


# -- the lifecycle ------------------------------------------------------------------------------

def test_approve_needs_a_manager_and_the_asset_then_opens_a_preparation_task(users, ids):
    request = new_request(users["rita"], ids)
    r = users["theo"].act("loan_request", request["sys_id"], "approve_loan", asset=ids["MacBook Air #2"])
    assert r.status_code == 403
    r = users["mona"].act("loan_request", request["sys_id"], "approve_loan", note="x")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "asset"
    r = users["mona"].act("loan_request", request["sys_id"], "approve_loan", asset=ids["MacBook Air #2"],
                          note="Charger included")
    assert r.status_code == 200, r.json
    assert r.json["result"]["state"] == "2"
    [created] = r.json["details"]["created"]
    task = users["mona"].record("loan_task", created["sys_id"])
    assert task["short_description"] == "Prepare MacBook Air #2 for Rita Requester"  # dot-walks in a create value
    assert (task["task_type"], task["request"], task["asset"], task["location"]) == (
        "prepare", request["sys_id"], ids["MacBook Air #2"], ids["Berlin HQ"])
    after = users["mona"].record("loan_request", request["sys_id"])
    assert after["current_task"] == created["sys_id"]  # create's `link`
    assert sorted(journal(users["mona"], request["sys_id"])) == ["Approved by Mona Manager: Charger included",
                                                                 f"Preparation task {task['number']} opened"]


def test_without_required_approval_a_request_is_handed_over_directly(users, ids):
    request = new_request(users["rita"], ids)
    r = users["theo"].act("loan_request", request["sys_id"], "hand_over", due_date="2027-01-15")
    assert r.status_code == 409 and "must be approved" in r.json["error"]["message"]
    set_property(users["admin"], "loans.require_approval", "false")
    r = users["mona"].act("loan_request", request["sys_id"], "approve_loan", asset=ids["MacBook Air #2"])
    assert r.status_code == 409 and "need no approval" in r.json["error"]["message"]
    r = users["theo"].act("loan_request", request["sys_id"], "hand_over", due_date="2027-01-15")
    assert r.status_code == 200 and r.json["result"]["state"] == "5"


def test_hand_over_lends_the_asset_closes_the_preparation_and_tells_the_borrower(users, ids, approved):
    theo, admin = users["theo"], users["admin"]
    deliver = new_task(theo, approved["sys_id"], "deliver")
    r = theo.act("loan_request", approved["sys_id"], "hand_over", due_date="2027-02-26",
                 comments="Bring it back with the charger")
    assert r.status_code == 200, r.json
    request = theo.record("loan_request", approved["sys_id"])
    assert (request["state"], request["due_date"], request["assigned_to"]) == ("5", "2027-02-26", ids["theo"])
    assert NOW.fullmatch(request["handed_over_at"])  # `{{ now }}` into a datetime field
    asset = theo.record("loan_asset", ids["MacBook Air #2"])
    assert asset["on_loan"] == "true"  # update_reference
    assert journal(theo, asset["sys_id"]) == [f"Lent to Rita Requester with {request['number']} until 2027-02-26"]
    # the cascade across tables closed the preparation task only
    assert theo.record("loan_task", request["current_task"])["state"] == "3"
    assert journal(theo, request["current_task"]) == ["Handed over by Theo Technician"]
    assert theo.record("loan_task", deliver)["state"] == "1"
    assert "A reminder goes to Rita Requester before 2027-02-26" in journal(theo, request["sys_id"])
    [mail] = emails(admin, request["sys_id"], "MacBook Air #2 is yours")
    assert addresses(mail) == {"rita@loans.example"} and mail["state"] == "ready"
    assert mail["subject"] == "MacBook Air #2 is yours until 2027-02-26"
    assert "at Berlin HQ" in mail["body"]
    assert "Questions? Ask Lou Lisbon." in mail["body"]  # record.asset.location.manager.name


def test_the_reminder_note_follows_the_integer_property(users, ids, approved):
    set_property(users["admin"], "loans.reminder_days", "0")
    users["theo"].act("loan_request", approved["sys_id"], "hand_over", due_date="2027-02-26")
    assert not any(n.startswith("A reminder") for n in journal(users["theo"], approved["sys_id"]))


@pytest.mark.parametrize(("condition", "return_check", "inspection"), [
    ("good", "visual", False),
    ("worn", "visual", False),
    ("good", "full", True),
    ("damaged", "visual", True),
])
def test_return_updates_the_asset_skips_the_open_tasks_and_may_open_an_inspection(
        users, ids, on_loan, condition, return_check, inspection):
    theo, admin = users["theo"], users["admin"]
    set_property(admin, "loans.return_check", return_check)
    tasks = {kind: new_task(theo, on_loan["sys_id"], kind, state)
             for kind, state in (("deliver", 2), ("collect", 1), ("inspect", 1))}
    done = new_task(theo, on_loan["sys_id"], "deliver", 3)
    unrelated = new_task(theo, new_request(users["rita"], ids, "ThinkPad T14 #1")["sys_id"], "collect")
    checked_before = theo.record("loan_asset", ids["MacBook Air #2"])["last_checked"]
    r = theo.act("loan_request", on_loan["sys_id"], "return_loan", return_condition=condition, remark="All there")
    assert r.status_code == 200, r.json
    assert r.json["result"]["state"] == "3"
    asset = theo.record("loan_asset", ids["MacBook Air #2"])
    assert (asset["condition"], asset["on_loan"]) == (condition, "false")
    assert NOW.fullmatch(asset["last_checked"]) and asset["last_checked"] >= checked_before
    expected_note = (f"Returned damaged by Theo Technician ({on_loan['number']})" if condition == "damaged"
                     else "Returned by Theo Technician")
    assert journal(theo, asset["sys_id"]) == [f"Lent to Rita Requester with {on_loan['number']} until 2027-02-26",
                                              expected_note]  # the loan's note, then the return's
    # cascade across tables: the open tasks of this request, but not its inspection, are skipped
    states = {kind: theo.record("loan_task", sys_id)["state"] for kind, sys_id in tasks.items()}
    assert states == {"deliver": "7", "collect": "7", "inspect": "1"}
    assert journal(theo, tasks["deliver"]) == [f"Skipped: {on_loan['number']} was returned"]
    assert journal(theo, tasks["inspect"]) == []
    assert theo.record("loan_task", done)["state"] == "3"
    assert theo.record("loan_task", unrelated)["state"] == "1"
    new_inspections = theo.rows("loan_task", f"request={on_loan['sys_id']}^task_type=inspect^sys_id!={tasks['inspect']}",
                                "short_description,location,state")
    if inspection:
        assert new_inspections == [{"short_description": f"Inspect MacBook Air #2 (returned {condition})",
                                    "location": ids["Lisbon Office"], "state": "1"}]  # record.asset.location
    else:
        assert new_inspections == []
    assert "Returned: All there" in journal(theo, on_loan["sys_id"])
    [mail] = emails(admin, on_loan["sys_id"], "Returned:")  # sent by the notify effect
    assert addresses(mail) == {"rita@loans.example", "sami@loans.example"}  # requested_for, location.manager
    assert mail["subject"] == f"Returned: MacBook Air #2 ({on_loan['number']})"
    assert mail["body"] == "Thank you, Rita Requester: MacBook Air #2 is back at Berlin HQ."


def test_return_needs_its_condition_and_a_loan_in_progress(users, ids, on_loan):
    theo = users["theo"]
    r = theo.act("loan_request", on_loan["sys_id"], "return_loan")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "return_condition"
    r = theo.act("loan_request", on_loan["sys_id"], "return_loan", return_condition="brand new")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "return_condition"
    requested = new_request(users["rita"], ids, "ThinkPad T14 #1")
    r = theo.act("loan_request", requested["sys_id"], "return_loan", return_condition="good")
    assert r.status_code == 409 and "Requested" in r.json["error"]["message"]
    assert theo.record("loan_request", on_loan["sys_id"])["state"] == "5"


def test_reject_needs_a_reason_in_the_work_notes(users, ids):
    request = new_request(users["rita"], ids)
    r = users["mona"].act("loan_request", request["sys_id"], "reject_loan")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "work_notes"
    r = users["mona"].act("loan_request", request["sys_id"], "reject_loan", work_notes="Not in stock")
    assert r.status_code == 200 and r.json["result"]["state"] == "7"
    assert journal(users["mona"], request["sys_id"]) == ["Not in stock"]


def test_a_direct_state_change_is_held_to_its_transition(users, ids):
    request = new_request(users["rita"], ids)
    r = users["rita"].patch(f"{TABLE}/loan_request/{request['sys_id']}", json={"state": "2"})
    assert r.status_code == 403  # approving is the manager's
    r = users["mona"].patch(f"{TABLE}/loan_request/{request['sys_id']}", json={"state": "3"})
    assert r.status_code == 409  # Requested cannot become Returned


# -- plain actions ------------------------------------------------------------------------------

def test_assign_to_me_and_give_back_compare_with_the_current_user(users, ids):
    """Actions on the base table, run on a child's records; conditions with javascript:gs.getUserID()."""
    theo, mona = users["theo"], users["mona"]
    request = new_request(users["rita"], ids)
    task = new_task(theo, request["sys_id"], "deliver")
    r = theo.act("loan_task", task, "assign_to_me")
    assert r.status_code == 200, r.json
    assert r.json["result"]["assigned_to"]["value"] == ids["theo"]  # `{{ user.sys_id }}`
    assert journal(theo, task) == ["Taken by theo"]  # `{{ user.user_name }}`
    r = theo.act("loan_task", task, "assign_to_me")
    assert r.status_code == 409 and "already assigned to you" in r.json["error"]["message"]
    r = mona.act("loan_task", task, "give_back")
    assert r.status_code == 409 and "Only the person it is assigned to" in r.json["error"]["message"]
    r = theo.act("loan_task", task, "give_back")
    assert r.status_code == 200 and r.json["result"]["assigned_to"] == ""
    notes = journal(theo, task)
    assert len(notes) == 2 and any(re.fullmatch(rf"Given back by Theo Technician at {NOW.pattern} UTC", n) for n in notes), notes
    r = mona.act("loan_request", request["sys_id"], "assign_to_me")  # inherited by requests too
    assert r.status_code == 200 and r.json["result"]["assigned_to"]["value"] == ids["mona"]
    assert users["rita"].act("loan_request", request["sys_id"], "assign_to_me").status_code == 403


def test_extend_loan_sets_the_due_date_and_tells_the_borrower(users, ids, on_loan):
    theo = users["theo"]
    requested = new_request(users["rita"], ids, "ThinkPad T14 #1")
    r = theo.act("loan_request", requested["sys_id"], "extend_loan", until="2027-03-01")
    assert r.status_code == 409 and "Only an asset on loan" in r.json["error"]["message"]
    r = theo.act("loan_request", on_loan["sys_id"], "extend_loan", until="2027-03-12")
    assert r.status_code == 200 and r.json["result"]["due_date"] == "2027-03-12"
    assert "Your loan of MacBook Air #2 now ends on 2027-03-12" in journal(theo, on_loan["sys_id"], "comments")
    r = theo.act("loan_request", on_loan["sys_id"], "extend_loan", until="next spring")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "due_date"


def test_add_loans_reparents_and_says_why_some_were_refused(users, ids):
    rita, mona = users["rita"], users["mona"]
    bulk = new_request(rita, ids, "ThinkPad T14 #1")
    fine = [new_request(rita, ids, asset)["sys_id"] for asset in ("ThinkPad T14 #5", "MacBook Air #6")]
    closed = new_request(rita, ids, "ThinkPad T14 #9")
    assert mona.act("loan_request", closed["sys_id"], "reject_loan", work_notes="No").status_code == 200
    r = mona.act("loan_request", bulk["sys_id"], "add_loans", requests=[*fine, bulk["sys_id"], closed["sys_id"]])
    assert r.status_code == 200, r.json
    assert r.json["message"] == "2 of 4 selected requests were added"
    assert sorted(x["reason"] for x in r.json["details"]["refused"]) == ["it is closed", "it is this bulk loan itself"]
    assert {row["sys_id"] for row in rita.rows("loan_request", f"parent={bulk['sys_id']}", "sys_id")} == set(fine)
    again = mona.act("loan_request", bulk["sys_id"], "add_loans", requests=fine[:1]).json
    assert again["details"]["refused"][0]["reason"] == "it is already part of this bulk loan"


def test_mark_damaged_on_an_asset(users, ids):
    theo = users["theo"]
    r = theo.act("loan_asset", ids["ThinkPad T14 #1"], "mark_damaged", work_notes="Cracked screen")
    assert r.status_code == 200 and r.json["result"]["condition"] == "damaged"
    assert NOW.fullmatch(r.json["result"]["last_checked"])
    assert journal(theo, ids["ThinkPad T14 #1"]) == ["Cracked screen"]
    assert theo.act("loan_asset", ids["ThinkPad T14 #1"], "mark_damaged", work_notes="again").status_code == 409


# -- member lists: asset pools ------------------------------------------------------------------

def pool(user: User, name: str) -> dict:
    return user.one("loan_pool", f"name={name}")


def members(user: User, pool_id: str, table: str = "loan_pool_asset_m2m", member: str = "asset") -> dict[str, str]:
    return {row[member]: row["auto_added"] for row in user.rows(table, f"pool={pool_id}", f"{member},auto_added")}


def test_the_declared_pools_are_built_by_condition_script_and_import(users, ids):
    theo = users["theo"]
    spare = pool(theo, "Spare laptops")
    assert (spare["kind"], spare["filter"], spare["scripted"]) == ("assets", "category=laptop^condition=good^on_loan=false",
                                                                   "false")
    assert members(theo, spare["sys_id"]) == {ids[n]: "true" for n in (
        "ThinkPad T14 #1", "MacBook Air #2", "ThinkPad T14 #5", "MacBook Air #6", "ThinkPad T14 #9", "MacBook Air #10")}
    ready = pool(theo, "Ready to lend")
    assert (ready["scripted"], ready["script"]) == ("true", "scripts/pools/ready_to_lend.py")
    assert set(members(theo, ready["sys_id"])) == {ids[n] for n in (
        "ThinkPad T14 #1", "MacBook Air #2", "Jabra headset #4", "ThinkPad T14 #5", "MacBook Air #6",
        "Jabra headset #8", "ThinkPad T14 #9", "MacBook Air #10")}  # good or worn, not on loan
    desks = pool(theo, "Locations with a loan desk")
    assert desks["kind"] == "locations"
    assert members(theo, desks["sys_id"], "loan_pool_location_m2m", "location") == {
        ids["Berlin HQ"]: "false", ids["Lisbon Office"]: "false"}


@pytest.mark.parametrize("name", ["Spare laptops", "Ready to lend"])
def test_refresh_follows_the_condition_or_the_script_and_keeps_imported_members(users, ids, name):
    theo, mona = users["theo"], users["mona"]
    listed = pool(mona, name)
    imported = mona.post(f"/api/caseloom/pools/{listed['sys_id']}/import", data="serial_number\nSN-12\n",
                         content_type="text/csv")
    assert imported.status_code == 200 and imported.json["result"]["added"] == 1  # the lost headset, by hand
    assert theo.act("loan_asset", ids["ThinkPad T14 #1"], "mark_damaged", work_notes="Broken hinge").status_code == 200
    preview = mona.get(f"/api/caseloom/pools/{listed['sys_id']}/preview").json["result"]
    assert preview["source"] == ("condition" if name == "Spare laptops" else "script")
    assert preview["count"] == (5 if name == "Spare laptops" else 7)
    r = mona.act("loan_pool", listed["sys_id"], "refresh_pool")
    assert r.status_code == 200, r.json
    assert r.json["details"]["removed"] == 1 and r.json["details"]["added"] == 0
    now = members(mona, listed["sys_id"])
    assert ids["ThinkPad T14 #1"] not in now and now[ids["Jabra headset #12"]] == "false"
    assert theo.act("loan_pool", listed["sys_id"], "refresh_pool").status_code == 403  # managers keep pools


def test_import_a_csv_into_a_new_pool_row_by_row_with_reasons(users, ids):
    mona = users["mona"]
    r = mona.post(f"{TABLE}/loan_pool", json={"name": "Training kit", "kind": "assets"})
    assert r.status_code == 201, r.json
    pool_id = r.json["result"]["sys_id"]
    template = mona.get(f"/api/caseloom/pools/{pool_id}/template")
    assert template.get_data(as_text=True) == "sys_id,number,serial_number\n"
    number = mona.record("loan_asset", ids["Epson projector #7"])["number"]
    csv_text = f"serial_number,number\nSN-3,\n,{number}\nSN-99,\n,\nSN-3,\n"
    r = mona.post(f"/api/caseloom/pools/{pool_id}/import", data=csv_text, content_type="text/csv")
    assert r.status_code == 200, r.json
    assert r.json["result"]["added"] == 2
    assert r.json["result"]["rejected"] == [
        {"row": 4, "reason": "no loan_asset record with serial_number 'SN-99'"},
        {"row": 5, "reason": "no value in any of the columns sys_id, number, serial_number"},
        {"row": 6, "reason": "already a member of this list"},
    ]
    assert members(mona, pool_id) == {ids["Epson projector #3"]: "false", ids["Epson projector #7"]: "false"}
    r = mona.post(f"/api/caseloom/pools/{pool_id}/import", data="email\nx@y\n", content_type="text/csv")
    assert r.status_code == 400 and "sys_id, number, serial_number" in r.json["error"]["message"]
    assert users["rita"].get(f"/api/caseloom/pools/{pool_id}/preview").status_code == 403


def test_lend_pool_runs_in_the_background_one_loan_per_asset_once(users, ids, runtime):
    rita, mona, admin = users["rita"], users["mona"], users["admin"]
    spare = pool(mona, "Spare laptops")
    expected = members(mona, spare["sys_id"])
    bulk = new_request(mona, ids, "ThinkPad T14 #1", pool=spare["sys_id"], due_date="2027-06-30",
                       short_description="Laptops for the summer school")
    assert rita.act("loan_request", bulk["sys_id"], "lend_pool", instructions="x").status_code == 403
    r = mona.act("loan_request", bulk["sys_id"], "lend_pool")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "instructions"
    r = mona.act("loan_request", bulk["sys_id"], "lend_pool", instructions="Pick it up on Monday at the loan desk")
    assert r.status_code == 202, r.json
    job = r.json["result"]["job"]
    assert mona.get(f"/api/caseloom/jobs/{job}").json["result"]["state"] == "queued"
    execute_job(runtime, job)
    assert mona.get(f"/api/caseloom/jobs/{job}").json["result"] == {
        "state": "done", "done": len(expected), "total": len(expected),
        "message": f"{len(expected)} child records created"}
    loans = mona.rows("loan_request", f"parent={bulk['sys_id']}",
                      "sys_id,asset,location,requested_for,due_date,short_description,state")
    assert sorted(loan["asset"] for loan in loans) == sorted(expected)
    for loan in loans:
        asset = mona.record("loan_asset", loan["asset"])
        assert loan["location"] == asset["location"]  # lookups: asset.location
        assert (loan["requested_for"], loan["due_date"], loan["short_description"], loan["state"]) == (
            ids["rita"], "2027-06-30", "Laptops for the summer school", "1")
        assert journal(mona, loan["sys_id"], "comments") == ["Pick it up on Monday at the loan desk"]
        assert emails(admin, loan["sys_id"]) == []  # loan_requested is for requests without a bulk loan
    # run again: nobody gets a second loan; the pool is now locked
    again = mona.act("loan_request", bulk["sys_id"], "lend_pool", instructions="again")
    execute_job(runtime, again.json["result"]["job"])
    assert len(mona.rows("loan_request", f"parent={bulk['sys_id']}", "sys_id")) == len(expected)
    assert mona.record("loan_pool", spare["sys_id"])["locked"] == "true"
    assert mona.act("loan_pool", spare["sys_id"], "refresh_pool").status_code == 409
    member = mona.rows("loan_pool_asset_m2m", f"pool={spare['sys_id']}", "sys_id")[0]
    r = mona.delete(f"{TABLE}/loan_pool_asset_m2m/{member['sys_id']}")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "pool"


def test_a_bulk_loan_is_a_workspace_with_its_loans_by_state_and_its_pool(client, users, ids, runtime):
    """The loans app declares its own workspace (workspaces/bulk_loan.yaml): nothing of CSM in it."""
    mona = users["mona"]
    spare = pool(mona, "Spare laptops")
    expected = members(mona, spare["sys_id"])
    bulk = new_request(mona, ids, "ThinkPad T14 #1", pool=spare["sys_id"], short_description="Summer school")
    r = mona.act("loan_request", bulk["sys_id"], "lend_pool", instructions="Monday at the desk")
    execute_job(runtime, r.json["result"]["job"])
    sign_in(client, "mona")
    page = html.unescape(client.get("/loan_request.do", query_string={"sys_id": bulk["sys_id"]}).get_data(as_text=True))
    ws = re.sub(r"\s+", " ", page[page.index('<section class="workspace card"'):page.index('<section class="ws-timeline"')])
    assert "Bulk loan at a glance" in ws and f'id="ws-children-total">{len(expected)}</span>' in ws
    assert f'<span class="ws-count">{len(expected)}</span> Requested</a>' in ws
    assert "<h3 id=\"ws-members-title\">Assets in the pool</h3>" in ws and "Spare laptops</a>: " in ws
    assert f"<strong>{len(expected)}</strong> members" in ws
    assert "Lend the whole pool started" in page and "Lend the whole pool done" in page
    plain = new_request(mona, ids, "MacBook Air #2")  # no pool: not a bulk loan, no workspace
    other = client.get("/loan_request.do", query_string={"sys_id": plain["sys_id"]}).get_data(as_text=True)
    assert 'class="workspace card"' not in other
    listing = html.unescape(client.get("/loan_request_list.do", query_string={
        "sysparm_query": "poolISNOTEMPTY", "sysparm_view": "bulk_loan"}).get_data(as_text=True))
    row = listing[listing.index(f"sys_id={bulk['sys_id']}"):]
    assert f"<td>{len(expected)}</td>" in row[:row.index("</tr>")]


def test_a_pool_of_locations_cannot_lend(users, ids, runtime):
    mona = users["mona"]
    desks = pool(mona, "Locations with a loan desk")
    bulk = new_request(mona, ids, pool=desks["sys_id"])
    r = mona.act("loan_request", bulk["sys_id"], "lend_pool", instructions="x")
    assert r.status_code == 202
    job = execute_job(runtime, r.json["result"]["job"])
    assert job.state == "failed" and "locations" in job.message
    assert mona.rows("loan_request", f"parent={bulk['sys_id']}", "sys_id") == []


# -- notifications ------------------------------------------------------------------------------

@pytest.mark.parametrize(("location", "manager"), [("Berlin HQ", "sami"), ("Lisbon Office", "lou")])
def test_a_new_request_tells_the_managers_and_the_site_manager_of_its_location(users, ids, location, manager):
    request = new_request(users["rita"], ids, location=location)
    [mail] = emails(users["admin"], request["sys_id"])
    assert addresses(mail) == {"mona@loans.example", f"{manager}@loans.example"}  # roles + location.manager
    assert mail["subject"] == f"New loan request {request['number']}: Need MacBook Air #2"
    assert mail["body"] == f"Rita Requester asks to borrow equipment at {location}."


# -- the browser UI -----------------------------------------------------------------------------

def sign_in(client, user: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post("/login", data={"user_name": user, "user_password": user, "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)


@pytest.mark.parametrize(("table", "shown"), [
    ("loan_work", ["Loan work", "Short description"]),
    ("loan_request", ["Loan request", "Requested for", "Due date"]),
    ("loan_task", ["Loan task", "Task type"]),
    ("loan_asset", ["Asset", "On loan", "ThinkPad T14 #1"]),
    ("loan_location", ["Location", "Site code", "Berlin HQ", "Sami Site"]),
    ("loan_pool", ["Asset pool", "Spare laptops"]),
    ("loan_pool_asset_m2m", ["Pool asset", "Added by filter or script"]),
])
def test_every_list_page_answers_with_its_labels(client, table, shown):
    sign_in(client, "mona")
    r = client.get(f"/{table}_list.do")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    for text in shown:
        assert text in page, text


def test_the_base_list_page_shows_each_class_its_labels(client):
    sign_in(client, "theo")
    page = client.get("/loan_work_list.do", query_string={"sysparm_query": "state=3"}).get_data(as_text=True)
    assert "Returned" in page and "Closed" in page


def test_forms_of_a_request_new_and_existing_show_labels_sections_and_actions(client, users, ids):
    request = new_request(users["rita"], ids)
    sign_in(client, "mona")
    page = client.get("/loan_request.do", query_string={"sys_id": request["sys_id"]}).get_data(as_text=True)
    for text in (request["number"], "Pick-up location", "Berlin HQ", "Rita Requester", "MacBook Air #2",
                 "Hand-over and return", "Approve", "Reject", "Assign to me", "Requested"):
        assert text in page, text
    r = client.get("/loan_request.do", query_string={"sys_id": "-1"})
    assert r.status_code == 200
    new = r.get_data(as_text=True)
    assert "Pick-up location" in new and "Requested for" in new and 'name="short_description"' in new
    r = client.get("/loan_asset.do", query_string={"sys_id": ids["ThinkPad T14 #1"]})
    assert r.status_code == 200 and "Mark damaged" in r.get_data(as_text=True)


def test_the_menu_shows_the_loans_applications_by_role(client):
    sign_in(client, "rita")
    page = client.get("/").get_data(as_text=True)
    assert "IT Loans" in page and "My work" in page and "Requested today" in page
    assert "Asset pools" not in page  # agents and up


def module_list(client, label: str) -> tuple[int, str]:
    """Follow a menu module's link as the signed-in user: (the list's total, the page)."""
    home = client.get("/").get_data(as_text=True)
    href = html.unescape(re.search(rf'<a href="([^"]+)">{re.escape(label)}</a>', home).group(1))
    page = client.get(href).get_data(as_text=True)
    return int(re.search(r'<strong class="total">(\d+)</strong>', page).group(1)), page


@pytest.mark.parametrize(("user", "mine"), [("theo", 8), ("mona", 0)])
def test_my_work_lists_what_is_assigned_to_the_signed_in_user(client, user, mine):
    """The module's query compares with javascript:gs.getUserID(): the demo's six open requests and
    two open tasks are Theo's."""
    sign_in(client, user)
    assert module_list(client, "My work")[0] == mine


def test_requested_today_lists_a_request_made_now(client, users, ids):
    request = new_request(users["rita"], ids, "ThinkPad T14 #9")
    sign_in(client, "theo")
    total, page = module_list(client, "Requested today")
    assert request["number"] in page and total >= 1


# -- time: desk hours in Paris, an approval SLA and an overdue-return timer (tests/apps/loans/time) --

def test_a_request_waits_for_approval_in_paris_desk_hours_and_its_sla_breaches(users, ids, runtime):
    from caseloom.timing.tick import tick

    request = new_request(users["rita"], ids)
    [sla] = users["rita"].rows("task_sla", f"task={request['sys_id']}", "sla,stage,planned_end_time,has_breached",
                               display="true")
    assert (sla["sla"], sla["stage"], sla["has_breached"]) == ("Loan approval", "In progress", "false")
    report = tick(runtime, dt.datetime(2099, 1, 5, 12, 0))  # long after its four desk hours
    assert report.by_threshold.get(("Loan approval", 100), 0) >= 1  # this request's, and the demo's waiting ones
    assert tick(runtime, dt.datetime(2099, 1, 5, 12, 0)).escalated == 0
    [sla] = users["rita"].rows("task_sla", f"task={request['sys_id']}", "has_breached")
    assert sla["has_breached"] == "true"
    assert "Approval is overdue: the request has waited 4 desk hours" in journal(users["theo"], request["sys_id"])


def test_approving_completes_the_approval_sla(users, ids, approved):
    [sla] = users["rita"].rows("task_sla", f"task={approved['sys_id']}", "stage,end_time", display="true")
    assert sla["stage"] == "Completed" and NOW.fullmatch(sla["end_time"])


def test_a_loan_kept_a_day_past_its_due_date_is_chased_once(users, ids, on_loan, runtime):
    from caseloom.timing.tick import tick

    admin = users["admin"]
    [timer] = admin.rows("sys_timer", f"document={on_loan['sys_id']}", "timer,due,state")
    assert timer == {"timer": "loan_overdue", "due": "2027-02-27 00:00:00", "state": "waiting"}
    def state() -> str:
        return admin.one("sys_timer", f"document={on_loan['sys_id']}", "state")["state"]

    tick(runtime, dt.datetime(2027, 2, 26, 23, 59))  # the demo's loans due earlier may fire: not this one
    assert state() == "waiting" and not emails(admin, on_loan["sys_id"], "Please return")
    tick(runtime, dt.datetime(2027, 2, 27, 0, 0))
    assert state() == "fired"
    assert tick(runtime, dt.datetime(2027, 3, 27, 0, 0)).timers == 0
    [mail] = emails(admin, on_loan["sys_id"], "Please return")
    assert addresses(mail) == {"rita@loans.example"} and "due back on 2027-02-26" in mail["body"]
    assert journal(admin, on_loan["sys_id"]).count("Not returned by its due date") == 1


# -- attachments: access follows each table's rules ---------------------------------------------

def test_attachments_follow_the_loans_access_rules(users, ids):
    rita, theo, mona = users["rita"], users["theo"], users["mona"]
    request = new_request(rita, ids)
    pool = mona.rows("loan_pool", fields="sys_id")[0]["sys_id"]

    def attach(user: User, table: str, sys_id: str, name: str):
        return user.client.post(f"/api/now/attachment/file?table_name={table}&table_sys_id={sys_id}&file_name={name}",
                                data=b"%PDF-1.4", headers={**user.headers, "Content-Type": "application/pdf"})

    receipt = attach(rita, "loan_request", request["sys_id"], "receipt.pdf")  # her request: she writes it
    assert receipt.status_code == 201, receipt.json
    assert theo.get(f"/api/now/attachment/{receipt.json['result']['sys_id']}/file").data == b"%PDF-1.4"
    assert attach(rita, "loan_asset", ids["MacBook Air #2"], "photo.pdf").status_code == 403  # assets: agents write
    photo = attach(theo, "loan_asset", ids["MacBook Air #2"], "photo.pdf")
    assert photo.status_code == 201
    assert rita.get(f"/api/now/attachment/{photo.json['result']['sys_id']}").status_code == 200  # she reads assets
    plan = attach(mona, "loan_pool", pool, "plan.pdf")  # pools: the managers write, agents read
    assert plan.status_code == 201
    assert rita.get(f"/api/now/attachment/{plan.json['result']['sys_id']}").status_code == 404
    seen = {row["file_name"] for row in rita.get("/api/now/attachment?sysparm_query=file_nameENDSWITH.pdf").json["result"]}
    assert seen == {"receipt.pdf", "photo.pdf"}
    assert theo.delete(f"/api/now/attachment/{plan.json['result']['sys_id']}").status_code == 403
    assert mona.delete(f"/api/now/attachment/{plan.json['result']['sys_id']}").status_code == 204


def test_email_opens_a_loan_request_for_a_known_user_and_a_reply_comments_it(users, ids):
    """The loans application's own inbound e-mail actions (tests/apps/loans/email/inbound.yaml)."""
    from test_email_inbound import mail

    admin = users["admin"]

    def post(raw: bytes) -> dict:
        r = admin.client.post("/api/caseloom/email/inbound", data=raw,
                              headers={**admin.headers, "Content-Type": "message/rfc822"})
        assert r.status_code == 200, r.json
        return r.json["result"]

    out = post(mail(sender="Rita <rita@loans.example>", subject="Loan of a projector", body="For Friday."))
    assert out["action"] == "created" and out["table"] == "loan_request"
    made = admin.record("loan_request", out["sys_id"])
    assert made["requested_for"] == ids["rita"] and made["short_description"] == "Loan of a projector"
    assert post(mail(sender="rita@loans.example", subject="Lunch?"))["action"] == "ignored"  # no action's condition
    reply = post(mail(sender="rita@loans.example", subject=f"Re: {made['number']}", body="Make it Monday."))
    assert (reply["action"], reply["sys_id"]) == ("commented", out["sys_id"])
    assert journal(admin, out["sys_id"], "comments") == ["reply from: rita@loans.example\n\nMake it Monday."]


# -- reports and a dashboard of the loans app's own (tests/apps/loans/reports, dashboards) ----------

LOAN_REPORTS = ["requests_by_state", "requests_by_location", "assets_by_category", "requests_per_week",
                "time_to_hand_over", "on_loan_now"]


@pytest.mark.parametrize("name", LOAN_REPORTS)
def test_each_loans_report_counts_exactly_what_its_numbers_open(users, name):
    mona = users["mona"]
    r = mona.get(f"/api/caseloom/report/{name}?range=all")
    assert r.status_code == 200, r.json
    result = r.json["result"]
    cells = [s for g in result.get("groups", ()) for s in g.get("series", [g])]
    for cell in cells:  # a bar, a slice, a period
        listed = mona.get(f"{TABLE}/{result['table']}", query_string={"sysparm_query": cell["query"], "sysparm_limit": 1})
        assert int(listed.headers["X-Total-Count"]) == int(cell["value"]), cell
    if name == "requests_by_state":
        assert sum(int(c["value"]) for c in cells) == len(mona.rows("loan_request"))
        labels = [g["group"]["display_value"] for g in result["groups"]]
        order = ["Requested", "Approved", "On loan", "Returned", "Rejected"]
        assert labels == [s for s in order if s in labels]  # the class's own labels, in their order


def test_the_loans_manager_lands_on_the_loans_dashboard_and_a_requester_cannot_open_it(client):
    sign_in(client, "mona")
    page = client.get("/").get_data(as_text=True)
    assert "<h1>Loans</h1>" in page and 'hx-get="/report/requests_by_state?range=90"' in page
    card = client.get("/report/requests_by_location?range=90", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert '<svg class="chart"' in card and '<a href="/loan_request_list.do?sysparm_query=' in card
    sign_in(client, "rita")
    assert client.get("/dashboard/loans").status_code == 404
    assert "<h1>Loans</h1>" not in client.get("/").get_data(as_text=True)


# -- the table cleaner on a base table with two child classes ----------------------------------------

def test_the_table_cleaner_deletes_old_work_of_every_class_and_what_belongs_to_it(users, ids, runtime):
    """A rule on loan_work reaches requests and tasks alike; a deleted request's tasks go with it
    (`request: {on_delete: delete}`); work that does not match stays."""
    from caseloom.cleanup import clean
    from caseloom.records import now

    admin = users["admin"]
    old = new_request(admin, ids, short_description="Old loan")["sys_id"]
    its_task = new_task(admin, old, "prepare")
    kept = new_request(admin, ids, asset="ThinkPad T14 #1")["sys_id"]
    old_task = new_task(admin, kept, "inspect")
    assert admin.patch(f"{TABLE}/loan_task/{old_task}", json={"short_description": "Old inspection"}).status_code == 200
    rule = admin.post(f"{TABLE}/sys_auto_flush", json={"tablename": "loan_work", "age": "86400",
                                                       "conditions": "short_descriptionSTARTSWITHOld"})
    assert rule.status_code == 201, rule.json
    done, = clean(runtime, at=now() + dt.timedelta(days=2))
    assert (done.table, done.matched, done.deleted, done.kept) == ("loan_work", 2, 2, 0)
    gone = {sys_id: admin.get(f"{TABLE}/loan_work/{sys_id}").status_code for sys_id in (old, its_task, kept, old_task)}
    assert gone == {old: 404, its_task: 404, kept: 200, old_task: 404}
