"""Notification recipients through dot-walks: a recipient path may walk any number of references and
end on an e-mail field or on a reference to a table with one, for one record, a batch and a
set-based insert alike; `recipient_path_problem` says what is wrong with any other path."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from caseloom.automation import recipient_path_problem
from caseloom.definitions import load_folder
from caseloom.query import Query, parse_encoded
from small_app import small_app

FILES = {
    "tables/contact.yaml": """table: contact
label: Contact
display: name
fields:
  name: {type: string, max_length: 80}
  email: {type: email}
""",
    "tables/team.yaml": "table: team\nlabel: Team\nfields:\n  name: {type: string, max_length: 80}\n",
    "tables/vendor.yaml": "table: vendor\nlabel: Vendor\nfields:\n  email: {type: string, max_length: 80}\n",
    "tables/account.yaml": """table: account
label: Account
display: name
fields:
  name: {type: string, max_length: 80}
  primary_contact: {type: reference, to: contact}
""",
    "tables/building.yaml": """table: building
label: Building
display: name
fields:
  name: {type: string, max_length: 80}
  manager: {type: reference, to: sys_user}
  team: {type: reference, to: team}
""",
    "tables/request.yaml": """table: request
label: Request
number: {prefix: RQ, digits: 4}
display: number
fields:
  number: {type: string, max_length: 40, read_only: true}
  title: {type: string, max_length: 80}
  status: {type: string, max_length: 20}
  building: {type: reference, to: building}
  account: {type: reference, to: account}
  parent: {type: reference, to: request}
  reply_to: {type: email}
  vendor: {type: reference, to: vendor}
""",
    "notifications/request.yaml": """notifications:
  to_manager:
    table: request
    on: [insert]
    recipients: {fields: [building.manager]}
    subject: "manager: {{ record.number }}"
    body: "{{ record.title }}"
  to_primary_email:
    table: request
    on: [insert]
    recipients: {fields: [account.primary_contact.email]}
    subject: "primary email: {{ record.number }}"
    body: "{{ record.title }}"
  to_primary:
    table: request
    on: [insert]
    recipients: {fields: [account.primary_contact]}
    subject: "primary: {{ record.number }}"
    body: "{{ record.title }}"
  children_closed:
    table: request
    on: [update]
    condition: {field: status, op: changesto, value: closed}
    recipients: {children: {reference: parent, field: account.primary_contact}}
    subject: "closed: {{ record.number }}"
    body: "The request behind yours is closed."
""",
}

@pytest.fixture
def runtime(config, tmp_path):
    with small_app(config, tmp_path, FILES, {"mia": [], "max": [], "ned": []}) as small:
        yield small.runtime


def setup_places(service) -> dict[str, str]:
    """Buildings managed by mia, max and ned (who has no address), and an account whose primary
    contact is carla: name -> sys_id."""
    users = {u["user_name"]: u["sys_id"] for u in service.query("sys_user", Query())}
    for name in ("mia", "max"):
        service.update("sys_user", users[name], {"email": f"{name}@example.com", "name": name.title()})
    carla = service.insert("contact", {"name": "Carla", "email": "carla@example.com"})
    ids = {"account": service.insert("account", {"name": "Acme", "primary_contact": carla["sys_id"]})["sys_id"]}
    for name, manager in (("north", "mia"), ("south", "max"), ("east", "ned")):
        ids[name] = service.insert("building", {"name": name, "manager": users[manager]})["sys_id"]
    return ids


def insert_requests(service, route: str, places: dict[str, str]) -> list[dict]:
    """Requests in the buildings north, south and east, all for the account, by one of the three routes."""
    buildings = ["north", "south", "east"]
    rows = [{"title": f"in {b}", "building": places[b], "account": places["account"]} for b in buildings]
    if route == "one by one":
        return [service.insert("request", row) for row in rows]
    if route == "batch":
        service.insert_many("request", rows)
    else:  # set-based: one INSERT ... SELECT, the building differing per row
        table = service.storage.physical("building")
        select = sa.select(table.c.sys_id).where(table.c.sys_id.in_([places[b] for b in buildings]))
        added = service.insert_select("request", {"title": "set-based", "account": places["account"]}, select,
                                      ["building"], source=table, order_by=table.c.name)
        assert added == 3  # not the row-by-row fallback
    return service.query("request", Query())


def emails(service) -> dict[tuple[str, str], tuple[str, str]]:
    """(notification, instance) -> (recipients, subject) of every sys_email about a request."""
    found = {}
    for mail in service.query("sys_email", parse_encoded("target_table=request")):
        kind = mail["subject"].split(":")[0]
        assert (kind, mail["instance"]) not in found
        found[(kind, mail["instance"])] = (mail["recipients"], mail["subject"])
    return found


@pytest.mark.parametrize("route", ["one by one", "batch", "set-based"])
def test_recipient_paths_walk_to_the_address_on_every_insert_route(runtime, route):
    with runtime.transaction() as service:
        places = setup_places(service)
        requests = insert_requests(service, route, places)
        mails = emails(service)
    managers = {places["north"]: "mia@example.com", places["south"]: "max@example.com"}  # ned has no address
    expected = {}
    for r in requests:
        to = {"primary email": "carla@example.com", "primary": "carla@example.com"}
        if r["building"] in managers:
            to["manager"] = managers[r["building"]]
        expected |= {(kind, r["sys_id"]): (address, f"{kind}: {r['number']}") for kind, address in to.items()}
    assert mails == expected


def test_children_e_mails_walk_their_path_and_are_filed_under_each_child(runtime):
    with runtime.transaction() as service:
        places = setup_places(service)
        parent = service.insert("request", {"title": "outage"})
        kids = [service.insert("request", {"title": f"kid {i}", "parent": parent["sys_id"],
                                           **({"account": places["account"]} if i else {})}) for i in range(2)]
        service.update("request", parent["sys_id"], {"status": "closed"})
        closed = [m for m in service.query("sys_email", parse_encoded("target_table=request"))
                  if m["subject"].startswith("closed")]
    assert [(m["target_table"], m["instance"], m["recipients"], m["subject"]) for m in closed] == [
        ("request", kids[1]["sys_id"], "carla@example.com", f"closed: {parent['number']}")]  # kid 0: no account


WALKING_TEXTS = {**FILES, "notifications/request.yaml": """notifications:
  to_manager:
    table: request
    on: [insert]
    recipients: {fields: [building.manager]}
    subject: "{{ record.number }} in {{ record.building.name }}"
    body: "Dear {{ record.building.manager.name }}, {{ user.user_name }} filed {{ record.title }}."
"""}


@pytest.mark.parametrize("route", ["one by one", "batch", "set-based"])
def test_texts_read_dot_walks_and_the_user_on_every_insert_route(config, tmp_path, route):
    """Texts that dot-walk cannot be rendered in SQL: the set-based insert falls back to rows."""
    with small_app(config, tmp_path, WALKING_TEXTS, {"mia": [], "max": [], "ned": []}) as small:
        with small.runtime.transaction() as service:
            places = setup_places(service)
            if route == "set-based":
                table = service.storage.physical("building")
                assert service.insert_select("request", {"title": "x"}, sa.select(table.c.sys_id), ["building"],
                                             source=table) is None
                route = "batch"
            requests = {r["sys_id"]: r for r in insert_requests(service, route, places)}
            mails = service.query("sys_email", parse_encoded("target_table=request"))
    expected = {("mia@example.com", "in north", "Dear Mia, system filed in north."),
                ("max@example.com", "in south", "Dear Max, system filed in south.")}
    assert {(m["recipients"], m["subject"].split(" ", 1)[1], m["body"]) for m in mails} == expected
    assert all(m["subject"].startswith(requests[m["instance"]]["number"] + " ") for m in mails)


# -- recipient_path_problem: the check `caseloom validate` makes ---------------------------------------

@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paths")
    for rel, text in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return load_folder(folder).tables


@pytest.mark.parametrize("path, problem", [
    ("reply_to", None),
    ("building.manager", None),
    ("account.primary_contact", None),
    ("account.primary_contact.email", None),
    ("parent.building.manager.email", None),
    ("title", "'title' ends on 'title', a string field of 'request': a recipient path ends on an e-mail field "
              "or on a reference to a table with an 'email' field (such as sys_user)"),
    ("building.name", "'building.name' ends on 'name', a string field of 'building'"),
    ("building", "'building' refers to 'building', which has no 'email' field: end the path on an e-mail field "
                 "of 'building' or of a table it refers to"),
    ("building.team", "'building.team' refers to 'team', which has no 'email' field"),
    ("vendor", "'vendor' refers to 'vendor', whose 'email' field is a string field, not an e-mail field"),
    ("building.boss", "'building.boss': table 'building' has no field 'boss'"),
    ("title.email", "'title.email': 'title' is a string field of 'request', not a reference, so it cannot be "
                    "dot-walked"),
])
def test_recipient_path_problem_names_what_is_wrong(tables, path, problem):
    found = recipient_path_problem(tables, tables["request"], path)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
    assert recipient_path_problem(tables, "request", path) == found  # the table by name, too
