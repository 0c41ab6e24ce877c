"""Events in (ServiceNow's Event Management, contract section 11): `POST /api/global/em/jsonv2` keeps
each good event, lists each bad one by its index and reason, and folds events into alerts by message
key: a repeat updates the alert, a Clear event closes it, an event soon after reopens it, a storm
of one key is one alert. On both databases."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa

from conftest import basic

URL = "/api/global/em/jsonv2"
ALERTS = "/api/now/table/em_alert"
EVENTS = "/api/now/table/em_event"


def event(**values) -> dict:
    return {"source": "Zabbix", "node": "db-fra-01", "type": "Disk", "resource": "/data", "metric_name": "usage",
            "severity": "2", "description": "Disk almost full", "time_of_event": "2026-11-30 10:00:00", **values}


def send(client, records, user: str = "monitor"):
    return client.post(URL, json={"records": records}, headers=basic(user))


def alerts(client, query: str = "") -> list[dict]:
    r = client.get(f"{ALERTS}?sysparm_query={query}ORDERBYnumber", headers=basic("admin"))
    return r.json["result"]


def test_events_fold_into_one_alert_by_message_key(client):
    r = send(client, [event(), event(severity="1", description="Disk full", time_of_event="2026-11-30 10:05:00"),
                      event(node="db-fra-02")])
    assert r.status_code == 200, r.json
    assert r.json["result"] == {"Default Bulk Endpoint": "3 events were inserted", "inserted": 3,
                                "alerts_opened": 2, "alerts_updated": 0, "ignored": 0, "errors": []}
    first, second = alerts(client)
    assert first["number"].startswith("Alert") and first["message_key"] == "Zabbix_db-fra-01_Disk_/data_usage"
    assert (first["severity"], first["state"], first["event_count"], first["description"]) == \
        ("1", "Open", "2", "Disk full")
    assert (first["initial_event_time"], first["last_event_time"]) == ("2026-11-30 10:00:00", "2026-11-30 10:05:00")
    assert (second["node"], second["event_count"]) == ("db-fra-02", "1")
    events = client.get(f"{EVENTS}?sysparm_query=ORDERBYtime_of_event&sysparm_exclude_reference_link=true",
                        headers=basic("admin")).json["result"]
    assert len(events) == 3 and {e["state"] for e in events} == {"processed"}
    assert {e["alert"] for e in events} == {first["sys_id"], second["sys_id"]}


def test_a_clear_event_closes_and_a_later_one_reopens_within_the_interval(client):
    send(client, [event(message_key="k1")])
    r = send(client, [event(message_key="k1", severity="0", time_of_event="2026-11-30 10:10:00")])
    assert r.json["result"]["alerts_updated"] == 1
    [alert] = alerts(client)
    assert (alert["state"], alert["severity"], alert["closed_at"]) == ("Closed", "0", "2026-11-30 10:10:00")
    send(client, [event(message_key="k1", severity="3", time_of_event="2026-11-30 10:40:00")])  # 30 min: reopened
    [alert] = alerts(client)
    assert (alert["state"], alert["severity"], alert["reopen_count"], alert["closed_at"], alert["event_count"]) == \
        ("Reopen", "3", "1", "", "3")
    send(client, [event(message_key="k1", severity="0", time_of_event="2026-11-30 11:00:00"),
                  event(message_key="k1", severity="2", time_of_event="2026-11-30 12:00:01")])  # 1 h 1 s: a new one
    old, new = alerts(client)
    assert (old["state"], old["event_count"]) == ("Closed", "4")
    assert (new["state"], new["event_count"], new["initial_event_time"]) == ("Open", "1", "2026-11-30 12:00:01")


def test_a_clear_event_with_nothing_to_clear_is_kept_as_ignored(client):
    r = send(client, [event(message_key="nothing", severity="0")])
    assert r.status_code == 200 and r.json["result"]["ignored"] == 1 and r.json["result"]["inserted"] == 1
    [kept] = client.get(f"{EVENTS}?sysparm_query=message_key=nothing", headers=basic("admin")).json["result"]
    assert kept["state"] == "ignored" and kept["alert"] == ""
    assert alerts(client) == []


def test_a_storm_of_one_key_is_one_alert(client):
    r = send(client, [event(message_key="storm", severity=str(1 + i % 4)) for i in range(2000)])
    assert r.json["result"]["inserted"] == 2000 and r.json["result"]["alerts_opened"] == 1
    threads = [threading.Thread(target=lambda: send(client.application.test_client(),
                                                    [event(message_key="storm")] * 50)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [alert] = alerts(client, "message_key=storm^")
    assert alert["event_count"] == "2200"


def test_two_batches_at_once_open_one_alert_for_a_new_key(app):
    results = []

    def post():
        results.append(send(app.test_client(), [event(message_key=f"k{i}") for i in range(20)]).status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    found = alerts(app.test_client(), "message_keySTARTSWITHk^")
    assert len(found) == 20 and {a["event_count"] for a in found} == {"4"}


def test_a_batch_holds_every_key_lock_to_its_end_taken_in_one_statement(runtime):
    """On PostgreSQL a batch locks each of its message keys (advisory locks, in key order) with one
    statement, and holds them until it commits: another transaction cannot take any of them."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite's batch holds the write lock throughout")
    from caseloom.events import _key_lock, _lock

    keys = sorted(f"key-{i}" for i in range(300))
    statements = []
    with runtime.engine.connect() as holder, runtime.engine.connect() as other:
        listen = lambda *args: statements.append(args[2])  # noqa: E731
        sa.event.listen(holder, "before_cursor_execute", listen)
        with holder.begin():
            _lock(holder, keys)
            taken = [other.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_key_lock(k)))).scalar()
                     for k in keys]
            other.rollback()
        assert len(statements) == 1 and not any(taken)
        assert other.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_key_lock(keys[0])))).scalar()
        other.rollback()


BAD = {
    "not an object": ("an event", "an event is a JSON object, not str"),
    "no node": ({"source": "x", "severity": "1"}, "node is required"),
    "no severity": ({"source": "x", "node": "n"}, "severity is required"),
    "unknown severity": ({"source": "x", "node": "n", "severity": "9"}, "severity '9' is not one of 0 (Clear)"),
    "severity true": ({"source": "x", "node": "n", "severity": True}, "severity True is not one of"),
    "unknown field": ({"source": "x", "node": "n", "severity": "1", "colour": "red"},
                      "unknown field 'colour': extra values go in additional_info"),
    "bad time": ({"source": "x", "node": "n", "severity": "1", "time_of_event": "yesterday"},
                 "time_of_event 'yesterday' is not a date and time"),
    "a time with a NUL": ({"source": "x", "node": "n", "severity": "1", "time_of_event": "2026-01-01 10:00:00\x00x"},
                          "time_of_event '2026-01-01 10:00:00\\x00x' is not a date and time"),
    "additional_info not JSON": ({"source": "x", "node": "n", "severity": "1", "additional_info": "{bad"},
                                 "additional_info is not JSON (Expecting property name enclosed in double quotes: "
                                 "line 1 column 2 (char 1)): give a JSON object, or a string holding one"),
    "node too long": ({"source": "x", "node": "n" * 256, "severity": "1"}, "node is longer than 255 characters"),
    "node a list": ({"source": "x", "node": ["a"], "severity": "1"}, "node must be text, not list"),
    "a NUL in a key": ({"source": "x", "node": "n", "severity": "1", "message_key": "a\x00b"},
                       "message_key contains a NUL character"),
    "a NUL in additional_info": ({"source": "x", "node": "n", "severity": "1", "additional_info": "{\"a\": \"\x00\"}"},
                                 "additional_info contains a NUL character"),
}


@pytest.mark.parametrize("bad, reason", BAD.values(), ids=BAD.keys())
def test_a_bad_event_is_named_by_index_and_the_good_ones_kept(client, bad, reason):
    r = send(client, [event(), bad, event(node="other")])
    assert r.status_code == 200, r.json
    assert r.json["result"]["inserted"] == 2
    [error] = r.json["result"]["errors"]
    assert error["index"] == 1 and error["reason"].startswith(reason), error
    assert len(alerts(client)) == 2


@pytest.mark.parametrize("body, content_type, status, words", [
    (b'{"records": [', "application/json", 400, "The body is not JSON"),
    (b'{"events": []}', "application/json", 400, '"records" list'),
    (b'{"records": {"a": 1}}', "application/json", 400, '"records" must be a list'),
    (b'{"records": [{"source": "x"}]}', "application/json", 400, "No event of the batch could be kept"),
    (b'{"records": []}', "text/plain", 415, "is not JSON"),
    (json.dumps({"records": [{}] * 10001}).encode(), "application/json", 413, "at most 10,000"),
    (b'{"records": ["' + b"x" * (4 * 1024 * 1024) + b'"]}', "application/json", 413, "larger than 4,194,304 bytes"),
])
def test_a_bad_body_is_refused_clearly_and_nothing_kept(client, body, content_type, status, words):
    r = client.post(URL, data=body, content_type=content_type, headers=basic("monitor"))
    assert r.status_code == status, r.json
    assert words in str(r.json)
    assert client.get(f"{EVENTS}?sysparm_limit=1", headers=basic("admin")).headers["X-Total-Count"] == "0"
    assert send(client, [event()]).status_code == 200  # and the server goes on serving


@pytest.mark.parametrize("user, status", [("monitor", 200), ("admin", 200), ("agent", 403), ("customer", 403)])
def test_who_may_send_events(client, user, status):
    assert send(client, [event()], user).status_code == status


def test_sending_without_credentials_is_refused(client):
    assert client.post(URL, json={"records": [event()]}).status_code == 401


def test_agents_read_alerts_in_the_browser(client):
    send(client, [event()])
    [alert] = alerts(client)
    from conftest import ui_sign_in

    ui_sign_in(client, "agent")
    page = client.get("/em_alert_list.do?sysparm_query=stateINOpen,Reopen").get_data(as_text=True)
    assert alert["number"] in page and "Disk almost full" in page
    form = client.get(f"/em_alert.do?sys_id={alert['sys_id']}").get_data(as_text=True)
    assert "Zabbix_db-fra-01_Disk_/data_usage" in form and "Major" in form


def test_an_alert_shows_the_install_base_on_its_node(client):
    """The demo's install base items put accounts on shared nodes; an alert's form lists those on its node
    (a related list matched on a value: `on: node`), and only those."""
    items = client.get("/api/now/table/sn_install_base_item?sysparm_query=node=db-fra-01"
                       "&sysparm_fields=number,account.name", headers=basic("admin")).json["result"]
    others = client.get("/api/now/table/sn_install_base_item?sysparm_query=node!=db-fra-01&sysparm_limit=1"
                        "&sysparm_fields=number", headers=basic("admin")).json["result"]
    assert len(items) >= 2 and others
    send(client, [event()])
    [alert] = alerts(client)
    from conftest import ui_sign_in

    ui_sign_in(client, "agent")
    form = client.get(f"/em_alert.do?sys_id={alert['sys_id']}").get_data(as_text=True)
    section = form[form.index("Affected install base"):]
    assert all(item["number"] in section for item in items)
    assert others[0]["number"] not in section
    assert "sysparm_query=node%3Ddb-fra-01" in section  # "Open as a list": the same records


def test_a_related_list_matched_on_a_value_is_checked(tmp_path):
    from caseloom.definitions import DefinitionErrors, load_folder

    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.yaml").write_text(
        "table: a\nfields:\n  node: {type: string}\n  n: {type: integer}\n"
        "form:\n  - related_list: {table: b, field: host, on: n}\n  - related_list: {table: b, field: host, on: nope}\n")
    (tmp_path / "tables" / "b.yaml").write_text("table: b\nfields:\n  host: {type: string}\n")
    with pytest.raises(DefinitionErrors) as caught:
        load_folder(tmp_path)
    text = str(caught.value)
    assert "b.host (string) cannot match a.n (integer)" in text and "'nope' is not a stored field of 'a'" in text
