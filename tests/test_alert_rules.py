"""Alert rules (definitions kind `alert_rules`; CSM's alerts/proactive.yaml): a burst of events on a node
50 accounts use opens one accepted major case with a recipients list of exactly those 50 accounts, whose
job makes 50 child cases and one e-mail each; the Clear event leaves a work note and proposes the
resolution. One affected account gets a proactive case of its own. On both databases."""

from __future__ import annotations

import pytest

from caseloom.jobs.registry import execute_job
from conftest import basic, errors_after_edit

URL = "/api/global/em/jsonv2"
CASES = "/api/now/table/sn_customerservice_case"
THRESHOLD = "sn_customerservice.proactive_major_case_threshold"


def event(node: str, **values) -> dict:
    return {"source": "Zabbix", "node": node, "type": "Storage", "resource": "array-1", "metric_name": "latency",
            "severity": "1", "description": f"Storage latency critical on {node}", **values}


def send(client, records):
    r = client.post(URL, json={"records": records}, headers=basic("monitor"))
    assert r.status_code == 200 and not r.json["result"]["errors"], r.json
    return r.json["result"]


def customers_on(runtime, node: str, count: int) -> list[str]:
    """`count` new accounts, each with a primary contact (an e-mail address) and an install base item on `node`."""
    with runtime.transaction() as service, service.by_definitions():
        accounts = []
        for i in range(count):
            account = service.insert("customer_account", {"name": f"{node} customer {i}"})
            contact = service.insert("customer_contact", {"name": f"Contact {i} of {node}",
                                                          "email": f"c{i}.{node}@example.test",
                                                          "account": account["sys_id"]})
            service.update("customer_account", account["sys_id"], {"primary_contact": contact["sys_id"]})
            service.insert("sn_install_base_item", {"name": f"Storage {i}", "account": account["sys_id"],
                                                    "node": node, "product": "Storage"})
            accounts.append(account["sys_id"])
    return accounts


def get(client, path: str) -> list[dict]:
    return client.get(path, headers=basic("admin")).json["result"]


def the_alert(client, node: str) -> dict:
    [alert] = get(client, f"/api/now/table/em_alert?sysparm_query=node={node}&sysparm_exclude_reference_link=true")
    return alert


def test_a_burst_on_a_shared_node_is_one_major_case_for_exactly_its_customers(client, runtime):
    accounts = customers_on(runtime, "san-fra-09", 50)
    first = send(client, [event("san-fra-09") for _ in range(30)])
    second = send(client, [event("san-fra-09", severity="2") for _ in range(20)])
    assert (first["alerts_opened"], second["alerts_opened"], second["alerts_updated"]) == (1, 0, 1)
    alert = the_alert(client, "san-fra-09")
    assert alert["event_count"] == "50" and alert["task"]
    majors = get(client, f"{CASES}?sysparm_query=proactive=true^short_descriptionLIKEsan-fra-09"
                         "&sysparm_exclude_reference_link=true")
    assert len(majors) == 1  # a storm is one alert, so one major case
    major = majors[0]
    assert major["sys_id"] == alert["task"] and major["alert"] == alert["sys_id"]
    assert (major["major_case_state"], major["state"], major["priority"]) == ("accepted", "10", "1")
    assert major["accepted_on"] and "affects 50 accounts" in major["description"]
    members = get(client, "/api/now/table/sn_publications_recipientslist_account_m2m?sysparm_limit=100"
                          f"&sysparm_query=recipients_list={major['recipient_list']}&sysparm_exclude_reference_link=true")
    assert sorted(m["account"] for m in members) == sorted(accounts)
    # the rule started create_child_cases: its job makes one child per account, each e-mailed
    execute_job(runtime, _job_of(runtime, major["sys_id"]))
    children = get(client, f"{CASES}?sysparm_query=parent={major['sys_id']}&sysparm_limit=100"
                           "&sysparm_exclude_reference_link=true&sysparm_fields=sys_id,account,contact")
    assert sorted(c["account"] for c in children) == sorted(accounts)
    emails = get(client, "/api/now/table/sys_email?sysparm_limit=200&sysparm_query=notification=child_case_created"
                         f"^instanceIN{','.join(c['sys_id'] for c in children)}")
    assert len(emails) == 50 and len({e["recipients"] for e in emails}) == 50
    # the Clear event: a work note on the major case, and its resolution proposed
    assert send(client, [event("san-fra-09", severity="0")])["alerts_updated"] == 1
    assert the_alert(client, "san-fra-09")["state"] == "Closed"
    major = get(client, f"{CASES}/{major['sys_id']}?sysparm_exclude_reference_link=true")
    assert (major["state"], major["resolution_code"]) == ("6", "solved_permanently")
    assert "healthy again" in major["close_notes"]
    notes = get(client, f"/api/now/table/sys_journal_field?sysparm_query=element_id={major['sys_id']}"
                        "^element=work_notes")
    assert any("cleared" in n["value"] for n in notes)
    # a later event on the closed alert (within the reopen interval) reopens it, and makes no second case
    send(client, [event("san-fra-09")])
    assert the_alert(client, "san-fra-09")["state"] == "Reopen"
    assert len(get(client, f"{CASES}?sysparm_query=proactive=true^short_descriptionLIKEsan-fra-09"
                           "^parentISEMPTY")) == 1


def _job_of(runtime, sys_id: str) -> str:
    import sqlalchemy as sa

    table = runtime.storage.internal("sys_job")
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(table.c.id).where(table.c.target_sys_id == sys_id,
                                                        table.c.name == "action:create_child_cases")).scalar_one()


@pytest.mark.parametrize("threshold, customers, major", [
    (2, 1, False),  # one account: a proactive case of its own
    (2, 2, True),  # at the threshold: a major case
    (3, 2, False),  # below it: a case each
    (3, 3, True),
])
def test_the_threshold_at_its_edges(client, runtime, threshold, customers, major):
    import sqlalchemy as sa

    with runtime.transaction() as service:
        props = service.storage.physical("sys_properties")
        service.conn.execute(sa.update(props).where(props.c.name == THRESHOLD).values(value=str(threshold)))
    node = f"edge-{threshold}-{customers}"
    accounts = customers_on(runtime, node, customers)
    send(client, [event(node, severity="3")])
    made = get(client, f"{CASES}?sysparm_query=proactive=true^short_descriptionLIKE{node}"
                       "&sysparm_exclude_reference_link=true")
    alert = the_alert(client, node)
    if major:
        assert len(made) == 1 and made[0]["major_case_state"] == "accepted" and made[0]["priority"] == "3"
    else:
        assert len(made) == customers and {m["account"] for m in made} == set(accounts)
        assert all(m["contact"] and m["major_case_state"] == "" for m in made)
    assert alert["task"] in {m["sys_id"] for m in made}
    assert {m["alert"] for m in made} == {alert["sys_id"]}  # each refers back to the alert that opened it
    # the Clear event resolves every case the alert opened, each with its own work note
    send(client, [event(node, severity="0")])
    made = get(client, f"{CASES}?sysparm_query=proactive=true^short_descriptionLIKE{node}"
                       "&sysparm_exclude_reference_link=true&sysparm_fields=sys_id,state,resolution_code")
    assert [(m["state"], m["resolution_code"]) for m in made] == [("6", "solved_permanently")] * len(made)
    for case in made:
        notes = get(client, f"/api/now/table/sys_journal_field?sysparm_query=element_id={case['sys_id']}"
                            "^element=work_notes")
        assert [n["value"] for n in notes if "cleared" in n["value"]] == [
            f"Alert {alert['number']} cleared: the monitoring tool reports {node} healthy again."]


def test_an_alert_form_lists_every_case_it_opened(client, runtime):
    import sqlalchemy as sa

    from conftest import ui_sign_in

    with runtime.transaction() as service:
        props = service.storage.physical("sys_properties")
        service.conn.execute(sa.update(props).where(props.c.name == THRESHOLD).values(value="5"))
    customers_on(runtime, "web-y", 3)
    send(client, [event("web-y")])
    alert = the_alert(client, "web-y")
    made = get(client, f"{CASES}?sysparm_query=alert={alert['sys_id']}&sysparm_fields=number")
    assert len(made) == 3
    ui_sign_in(client, "admin")
    form = client.get(f"/em_alert.do?sys_id={alert['sys_id']}").get_data(as_text=True)
    assert "Cases it opened" in form and all(m["number"] in form for m in made)


def test_an_alert_nobody_uses_makes_nothing_and_a_warning_below_the_condition_neither(client, runtime):
    send(client, [event("nobody-uses-this")])
    assert the_alert(client, "nobody-uses-this")["task"] == ""
    customers_on(runtime, "ok-node", 2)
    send(client, [event("ok-node", severity="5")])  # OK: outside the rule's condition (severity 1 to 4)
    assert the_alert(client, "ok-node")["task"] == ""


def test_an_alert_is_shown_on_the_case_it_opened(client, runtime):
    customers_on(runtime, "web-x", 1)
    send(client, [event("web-x")])
    alert = the_alert(client, "web-x")
    from conftest import ui_sign_in

    ui_sign_in(client, "agent")
    form = client.get(f"/sn_customerservice_case.do?sys_id={alert['task']}").get_data(as_text=True)
    assert "Alerts" in form and alert["number"] in form


BAD = {
    "link not a reference": ("link: task", "link: node", "alerts/proactive.yaml:14:",
                             "'node' is not a reference field of 'em_alert'"),
    "who not a reference": ("who: account", "who: product", "alerts/proactive.yaml:18:",
                            "'product' is a string field: `who` is a reference"),
    "unknown threshold property": ("threshold_property: sn_customerservice.proactive_major_case_threshold",
                                   "threshold_property: x.nope", "alerts/proactive.yaml:20:",
                                   "unknown system property 'x.nope'"),
    "unknown action": ("action: create_child_cases", "action: nope", "alerts/proactive.yaml:",
                       "table 'sn_customerservice_case' has no action 'nope'"),
    "list on a field that is no list": ("field: recipient_list", "field: account", "alerts/proactive.yaml:",
                                        "'account' is not a reference of 'sn_customerservice_case' to a member list"),
    "cleared journal not a journal": ("journal: {field: work_notes", "journal: {field: short_description",
                                      "alerts/proactive.yaml:", "'short_description' is not a journal field"),
    "unknown value field": ("        proactive: true\n        state: 10\n        business_impact",
                            "        proactive: true\n        state: 10\n        colour: red\n        business_impact",
                            "alerts/proactive.yaml:", "'colour' is not a field of 'sn_customerservice_case'"),
    "unknown template name": ("affects {{ count }} accounts.", "affects {{ user.name }} accounts.",
                              "alerts/proactive.yaml:", "user"),
    "bad condition": ("condition: severityIN1,2,3,4", "condition: colourIN1", "alerts/proactive.yaml:", "colour"),
    "alert_field not a field": ("      alert_field: alert\n    cleared", "      alert_field: nope\n    cleared",
                                "alerts/proactive.yaml:50:", "'nope' is not a reference field of "
                                                             "'sn_customerservice_case' to 'em_alert'"),
    "alert_field to another table": ("      alert_field: alert\n    cleared", "      alert_field: account\n    cleared",
                                     "alerts/proactive.yaml:50:", "'account' is not a reference field of "
                                                                  "'sn_customerservice_case' to 'em_alert'"),
    "alert_field also a value": ("        state: 10\n      alert_field: alert\n    cleared",
                                 "        state: 10\n        alert: x\n      alert_field: alert\n    cleared",
                                 "alerts/proactive.yaml:50:", "'alert' is the `alert_field`: the alert sets it"),
}


@pytest.mark.parametrize("threshold, alert_field, warned", [
    ("threshold: 3", "      alert_field: alert\n", False),
    ("threshold: 3", "", True),  # several single records an alert makes, only the first linked
    ("threshold: 2", "", False),  # below 2: one single record at most
    ("threshold_property: p.threshold", "", True),  # an administrator may raise it
])
def test_validate_warns_of_single_records_that_do_not_refer_back(threshold, alert_field, warned):
    from caseloom.definitions.loader import load_sources

    files = {**SMALL, "properties/p.yaml": "properties:\n  p.threshold: {type: integer, default: 2}\n"}
    files["alerts/x.yaml"] = files["alerts/x.yaml"].replace("threshold: 3", threshold).replace(
        "      alert_field: alert\n", alert_field)
    defs = load_sources(list(files.items()))
    messages = [f"{w.location}: {w.message}" for w in defs.warnings]
    assert messages == (["definitions/alerts/x.yaml:12:7: `single` has no `alert_field`: below the threshold, an alert "
                         "with several affected makes a record for each, but only the first is linked to it and hears "
                         "of its clearing"] if warned else [])


@pytest.mark.parametrize("old, new, where, message", BAD.values(), ids=BAD.keys())
def test_a_mistake_in_an_alert_rule_is_located_and_named(definitions_copy, old, new, where, message):
    errors = errors_after_edit(definitions_copy, "alerts/proactive.yaml", old, new)
    assert any(where in e and message in e for e in errors), errors


# -- an application of the test's own: sites on shared routers get outage tickets ---------------------

SMALL = {
    "tables/x_site.yaml": "table: x_site\ndisplay: name\nfields:\n  name: {type: string}\n  manager: {type: string}\n",
    "tables/x_router.yaml": "table: x_router\nfields:\n  host: {type: string}\n  site: {type: reference, to: x_site}\n",
    "tables/x_outage.yaml": """
table: x_outage
number: {prefix: OUT, digits: 4}
fields:
  number: {type: string, read_only: true}
  title: {type: string}
  site: {type: reference, to: x_site}
  sites_hit: {type: integer}
  urgency: {type: integer}
  alert: {type: reference, to: em_alert}
  notes: {type: journal}
  state: {type: choice, choices: {open: Open, done: Done}, default: open}
""",
    "tables/em_alert.yaml": "table: em_alert\nfields:\n  outage: {type: reference, to: x_outage}\n",
    "roles.yaml": "roles:\n  x_probe: {}\n  x_ops: {}\n",
    "access/x.yaml": """
access:
  - {table: em_event, operations: [create], roles: [x_probe]}
  - {table: x_outage, operations: [read, write], roles: [x_ops]}
""",
    "actions/x.yaml": """
actions:
  - name: finish
    table: x_outage
    label: Finish
    roles: [x_ops]
    condition: {field: state, op: eq, value: open}
    effects:
      - set: {state: done}
""",
    "alerts/x.yaml": """
alert_rules:
  - name: outages
    link: outage
    affected: {table: x_router, node: host, who: site}
    threshold: 3
    priority: {"1": 1, "2": 1, "3": 2, "4": 3}
    major:
      table: x_outage
      values: {title: "{{ alert.node }} down", sites_hit: "{{ count }}", urgency: "{{ priority }}"}
    single:
      table: x_outage
      values: {title: "{{ alert.node }} down at {{ affected.name }}", site: "{{ affected.sys_id }}",
               urgency: "{{ priority }}"}
      alert_field: alert
    cleared:
      journal: {field: notes, text: "{{ alert.number }} cleared"}
      action: finish
""",
}


def test_alert_rules_of_a_second_application(config, tmp_path):
    from small_app import small_app

    with small_app(config, tmp_path, SMALL, {"probe": ["x_probe"], "ops": ["x_ops"]}) as made:
        ops = made.api("ops")
        with made.runtime.transaction() as service:
            sites = [service.insert("x_site", {"name": f"Site {i}"})["sys_id"] for i in range(6)]
            for i, site in enumerate(sites):
                service.insert("x_router", {"host": "core-1" if i < 3 else "edge-9" if i == 3 else "edge-7",
                                            "site": site})
        probe = made.api("probe")
        for host, severity in (("core-1", "2"), ("edge-9", "3"), ("edge-7", "3")):
            r = probe.post("/api/global/em/jsonv2", {"records": [{"source": "Nagios", "node": host,
                                                                   "severity": severity}]})
            assert r.status_code == 200, r.json
        outages = ops.get("/api/now/table/x_outage?sysparm_query=ORDERBYtitle&sysparm_exclude_reference_link=true"
                            ).json["result"]
        assert [(o["title"], o["sites_hit"], o["urgency"], o["site"]) for o in outages] == [
            ("core-1 down", "3", "1", ""), ("edge-7 down at Site 4", "", "2", sites[4]),
            ("edge-7 down at Site 5", "", "2", sites[5]), ("edge-9 down at Site 3", "", "2", sites[3])]
        # below the threshold, two sites on edge-7: an outage each, both referring back, both finished on clearing
        assert outages[1]["alert"] == outages[2]["alert"] != "" and outages[0]["alert"] == ""
        r = probe.post("/api/global/em/jsonv2", {"records": [{"source": "Nagios", "node": "edge-7", "severity": "0"}]})
        assert r.status_code == 200
        assert [ops.get(f"/api/now/table/x_outage/{o['sys_id']}").json["result"]["state"] for o in outages] == [
            "open", "done", "done", "open"]
        r = probe.post("/api/global/em/jsonv2", {"records": [{"source": "Nagios", "node": "core-1", "severity": "0"}]})
        assert r.status_code == 200
        core = ops.get(f"/api/now/table/x_outage/{outages[0]['sys_id']}").json["result"]
        assert core["state"] == "done"
        with made.runtime.transaction() as service:
            entries = service.journal("x_outage", outages[0]["sys_id"], "notes")
        assert [e["value"] for e in entries][-1].endswith("cleared")
