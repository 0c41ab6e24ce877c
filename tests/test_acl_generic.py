"""Access rules on an application of the test's own: deny-unless before allow-if, conditions on the
user's groups, a dot-walked join that passes the walked table's rule, UI lists and forms."""

from __future__ import annotations

import re

import pytest

from small_app import small_app

FILES = {
    "tables/x_team.yaml": "table: x_team\ndisplay: name\nfields:\n  name: {type: string}\n  secret: {type: string}\n",
    "tables/x_ticket.yaml": """
table: x_ticket
display: title
fields:
  title: {type: string}
  team: {type: reference, to: x_team}
  group: {type: reference, to: sys_user_group}
  active: {type: boolean, default: true}
  notes: {type: string}
  watcher: {type: email}
  budget: {type: integer}
list: [title, team, group, active, notes, budget]
form: [title, team, group, active, notes, budget]
""",
    "roles.yaml": "roles:\n  x_worker: {}\n  x_lead: {contains: [x_worker]}\n",
    "access/x.yaml": """
access:
  # a worker reads and writes the tickets of their groups; a lead every ticket
  - {table: x_ticket, operations: [read, write], roles: [x_worker], condition: "group=javascript:getMyGroups()"}
  - {table: x_ticket, operations: [read, write, create], roles: [x_lead]}
  # and nobody but admin sees an inactive ticket, whatever else allows it
  - {table: x_ticket, operations: [read], decision: deny_unless, condition: "active=true"}
  - {table: x_ticket.notes, operations: [read, write], roles: [x_lead]}
  - {table: x_team, operations: [read], roles: [x_worker], condition: "name!=Hidden"}
  - {table: x_team.secret, operations: [read], roles: [x_lead], decision: deny_unless}
  - {table: x_team.secret, operations: [read], roles: [x_lead]}
  - {table: sys_user_group, operations: [read], roles: [x_worker]}
  # field rules with conditions on the record: the budget is read and written on some tickets only
  - {table: x_ticket.budget, operations: [read], roles: [x_worker], condition: "title=blue one^ORtitle=new"}
  - {table: x_ticket.budget, operations: [write], roles: [x_worker], condition: "title=blue one"}
  - {table: x_ticket.budget, operations: [create], roles: [x_lead], condition: "budget<100"}
  - {table: x_ticket.group, operations: [read], roles: [x_worker], condition: "title!=blue two"}
  - {table: x_ticket.group, operations: [read, write, create], roles: [x_lead]}
""",
    # an e-mail that reads limited fields, to the workers (a lead is one) and to a plain address
    "notifications/x.yaml": """
notifications:
  ticket_changed:
    table: x_ticket
    on: [update]
    recipients: {roles: [x_worker], fields: [watcher]}
    subject: "{{ record.title }} changed"
    body: "notes: {{ record.notes }}; team code: {{ record.team.secret }}"
""",
}
USERS = {"worker": ["x_worker"], "lead": ["x_lead"], "admin": ["admin"]}
TICKETS = "/api/now/table/x_ticket"


@pytest.fixture
def small(config, tmp_path):
    with small_app(config, tmp_path, FILES, USERS) as made:
        admin = made.api("admin")
        groups = [admin.post("/api/now/table/sys_user_group", {"name": n}).json["result"]["sys_id"]
                  for n in ("Blue", "Red")]
        worker = admin.get("/api/now/table/sys_user?sysparm_query=user_name=worker").json["result"][0]["sys_id"]
        assert admin.post("/api/now/table/sys_user_grmember", {"group": groups[0], "user": worker}).status_code == 201
        teams = [admin.post("/api/now/table/x_team", {"name": n, "secret": f"{n} code"}).json["result"]["sys_id"]
                 for n in ("Open", "Hidden")]
        made.ids = {}
        for title, group, team, active in [("blue one", 0, 0, True), ("blue two", 0, 1, True),
                                           ("blue old", 0, 0, False), ("red one", 1, 0, True)]:
            r = admin.post(TICKETS, {"title": title, "group": groups[group], "team": teams[team],
                                     "active": active, "notes": f"note on {title}", "budget": len(title)})
            made.ids[title] = r.json["result"]["sys_id"]
        yield made


def _titles(small, user, query=""):
    r = small.api(user).get(f"{TICKETS}?sysparm_fields=title&sysparm_query={query}ORDERBYtitle")
    assert r.status_code == 200, r.json
    return [row["title"] for row in r.json["result"]], int(r.headers["X-Total-Count"])


@pytest.mark.parametrize("user, seen", [
    ("worker", ["blue one", "blue two"]),  # their group's, active only
    ("lead", ["blue one", "blue two", "red one"]),  # every active one: the deny-unless rule holds for leads too
    ("admin", ["blue old", "blue one", "blue two", "red one"]),
])
def test_deny_unless_then_allow_if_by_user(small, user, seen):
    assert _titles(small, user) == (seen, len(seen))


def test_a_dot_walk_through_an_unreadable_row_is_empty(small):
    r = small.api("worker").get(f"{TICKETS}?sysparm_fields=title,team.name&sysparm_query=ORDERBYtitle")
    assert [(row["title"], row["team.name"]) for row in r.json["result"]] == [("blue one", "Open"), ("blue two", "")]
    assert _titles(small, "worker", "team.name=Hidden^") == ([], 0)
    assert _titles(small, "lead", "team.name=Hidden^") == ([], 0)  # a lead is a worker: the same team rule


def test_field_rules_with_deny_unless_and_their_query_checks(small):
    worker, lead = small.api("worker"), small.api("lead")
    r = worker.get("/api/now/table/x_team?sysparm_fields=name,secret")
    assert r.json["result"] == [{"name": "Open"}]
    assert worker.get("/api/now/table/x_team?sysparm_query=secretLIKEcode").status_code == 403
    one = small.ids["blue one"]
    assert "notes" not in worker.get(f"{TICKETS}/{one}").json["result"]
    assert lead.get(f"{TICKETS}/{one}").json["result"]["notes"] == "note on blue one"
    r = worker.patch(f"{TICKETS}/{one}", {"notes": "mine now"})
    assert r.status_code == 403 and "notes" in r.json["error"]["detail"]
    assert worker.patch(f"{TICKETS}/{one}", {"title": "blue first"}).status_code == 200
    assert worker.patch(f"{TICKETS}/{small.ids['red one']}", {"title": "x"}).status_code == 404
    assert worker.post(TICKETS, {"title": "new"}).status_code == 403


def test_the_ui_list_and_form_follow_the_rules(small):
    small.sign_in("worker")
    page = small.client.get("/x_ticket_list.do").get_data(as_text=True)
    assert "blue one" in page and "blue two" in page and "red one" not in page and "blue old" not in page
    assert "note on" not in page  # the notes column is not shown
    # nor offered by the filter builder, the grouping or the bulk edit; a lead is offered it everywhere
    assert not re.search(r'<option value="notes"', page)
    small.sign_in("lead")
    assert len(re.findall(r'<option value="notes"', small.client.get("/x_ticket_list.do").get_data(as_text=True))) == 3
    small.sign_in("worker")
    form = small.client.get(f"/x_ticket.do?sys_id={small.ids['blue one']}")
    assert form.status_code == 200
    text = form.get_data(as_text=True)
    assert "note on blue one" not in text and 'name="notes"' not in text
    assert small.client.get(f"/x_ticket.do?sys_id={small.ids['red one']}").status_code == 404


def test_an_e_mail_leaves_out_what_each_recipient_may_not_read(small):
    """Field rules hide a field in e-mails too: the recipients are matched to their users, and each
    audience gets its own e-mail (an address no user has reads as a user with no roles)."""
    admin = small.api("admin")
    for name in ("worker", "lead"):
        user = admin.get(f"/api/now/table/sys_user?sysparm_query=user_name={name}").json["result"][0]["sys_id"]
        assert admin.patch(f"/api/now/table/sys_user/{user}", {"email": f"{name}@example.com"}).status_code == 200
    one = small.ids["blue one"]
    assert admin.patch(f"{TICKETS}/{one}", {"title": "blue first", "watcher": "someone@example.net"}).status_code == 200
    rows = admin.get("/api/now/table/sys_email?sysparm_fields=recipients,subject,body"
                     f"&sysparm_query=instance={one}^ORDERBYrecipients").json["result"]
    assert rows == [
        {"recipients": "lead@example.com", "subject": "blue first changed",
         "body": "notes: note on blue one; team code: Open code"},
        {"recipients": "someone@example.net,worker@example.com", "subject": "blue first changed",
         "body": "notes: ; team code: "},
    ]


def _budgets(small, user, query="ORDERBYtitle"):
    r = small.api(user).get(f"{TICKETS}?sysparm_fields=title,budget&sysparm_query={query}")
    assert r.status_code == 200, r.json
    return [(row["title"], row["budget"]) for row in r.json["result"]]


@pytest.mark.parametrize("user, seen", [
    ("worker", [("blue one", "8"), ("blue two", "")]),  # read where the condition matches, empty elsewhere
    ("lead", [("blue one", "8"), ("blue two", ""), ("red one", "")]),  # a lead is a worker: the same rule
    ("admin", [("blue old", "8"), ("blue one", "8"), ("blue two", "8"), ("red one", "7")]),
])
def test_a_field_rule_with_a_condition_reads_the_field_on_matching_records_only(small, user, seen):
    assert _budgets(small, user) == seen
    # filtering and sorting see the same: the field is empty where it may not be read
    assert _budgets(small, user, "budget=8^ORDERBYtitle") == [row for row in seen if row[1] == "8"]
    by_budget = _budgets(small, user, "ORDERBYDESCbudget^ORDERBYtitle")  # (where empty ones go is the database's)
    assert sorted(by_budget) == sorted(seen)
    assert [row for row in by_budget if row[1]] == sorted((row for row in seen if row[1]), key=lambda r: -int(r[1]))


def test_a_dot_walk_through_a_conditionally_readable_reference_is_empty_where_it_may_not_be_read(small):
    """A reference read under a condition: walking it from a record that does not match walks to nothing
    (and a filter on the walk matches nothing there); a single record reads the same as a list."""
    worker = small.api("worker")
    r = worker.get(f"{TICKETS}?sysparm_fields=title,group,group.name&sysparm_query=ORDERBYtitle")
    assert [(row["title"], row["group"] != "", row["group.name"]) for row in r.json["result"]] == [
        ("blue one", True, "Blue"), ("blue two", False, "")]
    assert _titles(small, "worker", "group.name=Blue^") == (["blue one"], 1)
    assert _titles(small, "lead", "group.name=Blue^") == (["blue one", "blue two"], 2)  # their own rule: every ticket
    one = worker.get(f"{TICKETS}/{small.ids['blue two']}?sysparm_fields=budget,group.name")
    assert one.json["result"] == {"budget": "", "group.name": ""}


def test_a_field_rule_with_a_condition_on_the_form_and_in_the_history(small):
    admin = small.api("admin")
    assert admin.patch(f"{TICKETS}/{small.ids['blue two']}", {"budget": 4242}).status_code == 200
    small.sign_in("worker")
    one = small.client.get(f"/x_ticket.do?sys_id={small.ids['blue one']}").get_data(as_text=True)
    assert 'name="budget"' in one
    two = small.client.get(f"/x_ticket.do?sys_id={small.ids['blue two']}").get_data(as_text=True)
    assert 'name="budget"' not in two and "4242" not in two  # neither the field nor its history


def test_a_field_rule_with_a_condition_on_writes_and_creates(small):
    worker, lead = small.api("worker"), small.api("lead")
    assert worker.patch(f"{TICKETS}/{small.ids['blue one']}", {"budget": 9}).status_code == 200
    r = worker.patch(f"{TICKETS}/{small.ids['blue two']}", {"budget": 9})
    assert r.status_code == 403, r.json
    assert "budget" in r.json["error"]["detail"] and "on this record" in r.json["error"]["detail"]
    assert worker.patch(f"{TICKETS}/{small.ids['blue two']}", {"title": "blue second"}).status_code == 200
    # a create is tested on the new record as written: refused, it leaves nothing behind
    r = lead.post(TICKETS, {"title": "new", "budget": 50})
    assert r.status_code == 201 and r.json["result"]["budget"] == "50"
    r = lead.post(TICKETS, {"title": "new", "budget": 500})
    assert r.status_code == 403 and "budget" in r.json["error"]["detail"]
    assert [t for t, _ in _budgets(small, "admin", "title=new")] == ["new"]


@pytest.mark.parametrize("user, count, budget_sum, groups", [
    # their group's active tickets; blue two's budget and group they may not read: empty there
    ("worker", "2", "8", {"Blue": "1", "": "1"}),
    ("lead", "3", "8", {"Blue": "2", "Red": "1"}),
    ("admin", "4", "31", {"Blue": "3", "Red": "1"}),
])
def test_aggregates_count_only_what_each_user_may_read(small, user, count, budget_sum, groups):
    """The Aggregate API on an application of the test's own: the row rules and a field read under a
    condition apply to counts and sums as they do to lists."""
    api = small.api(user)
    r = api.get("/api/now/stats/x_ticket?sysparm_count=true&sysparm_sum_fields=budget")
    assert r.status_code == 200, r.json
    assert r.json["result"]["stats"] == {"count": count, "sum": {"budget": budget_sum}}
    r = api.get("/api/now/stats/x_ticket?sysparm_count=true&sysparm_group_by=group.name")
    assert {g["groupby_fields"][0]["value"]: g["stats"]["count"] for g in r.json["result"]} == groups


COMPARED = {
    "tables/x_unit.yaml": "table: x_unit\ndisplay: name\nfields:\n  name: {type: string}\n"
                          "  head: {type: reference, to: sys_user}\n",
    "tables/x_job.yaml": "table: x_job\ndisplay: title\nfields:\n  title: {type: string}\n"
                         "  unit: {type: reference, to: x_unit}\n",
    "roles.yaml": "roles:\n  x_worker: {}\n",
    "access/x.yaml": """
access:
  - {table: x_job, operations: [read], roles: [x_worker]}
  # a unit is read where its name is its head's user name (a comparison of two fields, one dot-walked)
  - {table: x_unit, operations: [read], roles: [x_worker], condition: "nameSAMEAShead.user_name"}
""",
}


def test_a_rule_comparing_a_field_with_a_dot_walked_one_guards_a_dot_walk(config, tmp_path):
    """A table's read rule that compares two fields, one through a reference, limits a list of another table
    dot-walked into it: the walk reaches only the units the rule lets the user read."""
    with small_app(config, tmp_path, COMPARED, {"worker": ["x_worker"], "admin": ["admin"]}) as made:
        admin, worker = made.api("admin"), made.api("worker")
        me = admin.get("/api/now/table/sys_user?sysparm_query=user_name=worker").json["result"][0]["sys_id"]
        units = {name: admin.post("/api/now/table/x_unit", {"name": name, "head": me}).json["result"]["sys_id"]
                 for name in ("worker", "other")}
        for name, unit in units.items():
            assert admin.post("/api/now/table/x_job", {"title": f"job of {name}", "unit": unit}).status_code == 201
        r = worker.get("/api/now/table/x_job?sysparm_fields=title,unit.name&sysparm_query=ORDERBYtitle")
        assert r.status_code == 200, r.json
        assert [(j["title"], j["unit.name"]) for j in r.json["result"]] == [("job of other", ""),
                                                                          ("job of worker", "worker")]
        r = worker.get("/api/now/table/x_job?sysparm_query=unit.nameSTARTSWITHw&sysparm_fields=title")
        assert [j["title"] for j in r.json["result"]] == ["job of worker"]
