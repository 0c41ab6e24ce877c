"""ServiceNow's Aggregate API (`GET /api/now/stats/{table}`): counts, averages, sums, minimums and
maximums, grouped or not, in ServiceNow's shapes with numbers as strings, checked against what the
Table API lists for the same user; one SQL statement a call; a bad parameter named in the error."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import mean

import pytest
import sqlalchemy as sa

from caseloom.query import parse_encoded
from caseloom.query.aggregate import AggregateQuery, Measure, aggregate

TABLE = "sn_customerservice_case"
STATS = f"/api/now/stats/{TABLE}"
CASES = f"/api/now/table/{TABLE}"


def rows(api, query: str = "", fields: str = "state,priority,account") -> list[dict]:
    r = api.get(f"{CASES}?sysparm_query={query}&sysparm_fields={fields}&sysparm_limit=10000"
                "&sysparm_exclude_reference_link=true")
    assert r.status_code == 200, r.json
    return r.json["result"]


@pytest.mark.parametrize("query", ["", "state=10", "priority<=2^active=true", "accountISEMPTY"])
def test_an_ungrouped_count_is_one_object_and_matches_the_table_api(as_user, query):
    api = as_user("agent")
    r = api.get(f"{STATS}?sysparm_count=true&sysparm_query={query}")
    assert r.status_code == 200, r.json
    total = api.get(f"{CASES}?sysparm_limit=1&sysparm_query={query}").headers["X-Total-Count"]
    assert r.json == {"result": {"stats": {"count": total}}}


def test_grouped_by_two_fields_with_every_aggregate(as_user):
    api = as_user("agent")
    r = api.get(f"{STATS}?sysparm_count=true&sysparm_group_by=state,priority&sysparm_avg_fields=priority"
                "&sysparm_min_fields=priority,number&sysparm_max_fields=priority&sysparm_sum_fields=priority")
    assert r.status_code == 200, r.json
    listed = rows(api, fields="state,priority,number")
    expected = defaultdict(list)
    for row in listed:
        expected[(row["state"], row["priority"])].append(row)
    got = {}
    for group in r.json["result"]:
        state, priority = group["groupby_fields"]
        assert state["field"] == "state" and priority["field"] == "priority"
        got[(state["value"], priority["value"])] = group["stats"]
    assert set(got) == set(expected)
    for key, members in expected.items():
        values = [int(m["priority"]) for m in members]
        assert got[key] == {
            "count": str(len(members)),
            "avg": {"priority": _number(mean(values))},
            "min": {"priority": str(min(values)), "number": min(m["number"] for m in members)},
            "max": {"priority": str(max(values))},
            "sum": {"priority": str(sum(values))},
        }
    first = r.json["result"][0]["groupby_fields"][0]
    assert set(first) == {"field", "value", "display_value"}


def _number(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def test_choice_and_reference_groups_carry_display_values(as_user):
    api = as_user("agent")
    by_state = api.get(f"{STATS}?sysparm_count=true&sysparm_group_by=state").json["result"]
    labels = {"1": "New", "10": "Open", "18": "Awaiting Info", "6": "Resolved", "3": "Closed", "7": "Canceled"}
    for group in by_state:
        value = group["groupby_fields"][0]
        assert value["display_value"] == labels[value["value"]]
    assert sum(int(g["stats"]["count"]) for g in by_state) == len(rows(api))
    by_account = api.get(f"{STATS}?sysparm_count=true&sysparm_group_by=account&sysparm_query=accountISNOTEMPTY"
                         "&sysparm_orderby=COUNT^DESC").json["result"]
    names = {r["account"]["value"]: r["account"]["display_value"] for r in api.get(
        f"{CASES}?sysparm_fields=account&sysparm_display_value=all&sysparm_limit=10000"
        "&sysparm_query=accountISNOTEMPTY").json["result"]}
    assert {g["groupby_fields"][0]["value"]: g["groupby_fields"][0]["display_value"] for g in by_account} == names
    counts = [int(g["stats"]["count"]) for g in by_account]
    assert counts == sorted(counts, reverse=True)  # COUNT^DESC
    shown = api.get(f"{STATS}?sysparm_count=true&sysparm_group_by=state&sysparm_display_value=true").json["result"]
    assert all(g["groupby_fields"][0]["value"] == g["groupby_fields"][0]["display_value"] for g in shown)


def test_a_dot_walked_group(as_user):
    api = as_user("agent")
    r = api.get(f"{STATS}?sysparm_count=true&sysparm_group_by=account.name&sysparm_query=accountISNOTEMPTY")
    assert r.status_code == 200, r.json
    expected = Counter(row["account.name"] for row in rows(api, "accountISNOTEMPTY", "account.name"))
    assert {g["groupby_fields"][0]["value"]: int(g["stats"]["count"]) for g in r.json["result"]} == expected


@pytest.mark.parametrize("having, keep", [
    ("count^^>^3", lambda members: len(members) > 3),
    ("count^priority^>=^2", lambda members: len(members) >= 2),
    ("avg^priority^<^2.5", lambda members: mean(int(m["priority"]) for m in members) < 2.5),
    ("max^priority^=^4,count^^>^1", lambda members: max(int(m["priority"]) for m in members) == 4 and len(members) > 1),
])
def test_having_filters_the_groups(as_user, having, keep):
    api = as_user("agent")
    r = api.get(f"{STATS}?sysparm_count=true&sysparm_group_by=state&sysparm_having={having}")
    assert r.status_code == 200, r.json
    by_state = defaultdict(list)
    for row in rows(api):
        by_state[row["state"]].append(row)
    assert {g["groupby_fields"][0]["value"]: int(g["stats"]["count"]) for g in r.json["result"]} == {
        state: len(members) for state, members in by_state.items() if keep(members)}


@pytest.mark.parametrize("orderby, key", [
    ("state", lambda g: int(g["groupby_fields"][0]["value"])),
    ("state^DESC", lambda g: -int(g["groupby_fields"][0]["value"])),
    ("AVG^priority", lambda g: float(g["stats"]["avg"]["priority"])),
    ("COUNT^DESC", lambda g: -int(g["stats"]["count"])),
])
def test_orderby_a_group_or_an_aggregate(as_user, orderby, key):
    r = as_user("agent").get(f"{STATS}?sysparm_count=true&sysparm_avg_fields=priority&sysparm_group_by=state"
                             f"&sysparm_orderby={orderby}")
    assert r.status_code == 200, r.json
    groups = r.json["result"]
    assert [key(g) for g in groups] == sorted(key(g) for g in groups)


@pytest.mark.parametrize("user", ["customer", "customer_admin", "agent"])
def test_a_user_counts_only_what_they_may_read(as_user, user):
    api = as_user(user)
    r = api.get(f"{STATS}?sysparm_count=true&sysparm_group_by=state")
    assert r.status_code == 200, r.json
    assert Counter({g["groupby_fields"][0]["value"]: int(g["stats"]["count"]) for g in r.json["result"]}) == \
        Counter(row["state"] for row in rows(api, fields="state"))
    total = api.get(f"{STATS}?sysparm_count=true").json["result"]["stats"]["count"]
    assert total == api.get(f"{CASES}?sysparm_limit=1").headers["X-Total-Count"]


@pytest.mark.parametrize("params, status, words", [
    ("sysparm_count=maybe", 400, "sysparm_count must be true or false"),
    ("sysparm_avg_fields=short_description", 400, "sysparm_avg_fields: short_description is a string field"),
    ("sysparm_sum_fields=nope", 400, "sysparm_sum_fields: "),
    ("sysparm_min_fields=work_notes", 400, "sysparm_min_fields: "),
    ("sysparm_count=true&sysparm_group_by=nope", 400, "sysparm_group_by: "),
    ("sysparm_count=true&sysparm_group_by=work_notes", 400, "sysparm_group_by: "),
    ("sysparm_count=true&sysparm_group_by=" + ",".join(["state"] * 2 + [f"f{i}" for i in range(10)]), 400,
     "sysparm_group_by: "),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_having=count^priority", 400,
     "sysparm_having: 'count^priority' is not aggregate^field^operator^value"),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_having=median^priority^>^1", 400,
     "sysparm_having: unknown aggregate 'median'"),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_having=count^priority^~^1", 400,
     "sysparm_having: unknown operator '~'"),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_having=count^priority^>^many", 400,
     "sysparm_having: 'many' in 'count^priority^>^many' is not a number"),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_having=avg^short_description^>^1", 400,
     "sysparm_having: short_description is a string field"),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_orderby=AVG", 400, "sysparm_orderby: 'AVG' is not"),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_orderby=COUNT^SIDEWAYS", 400,
     "sysparm_orderby: 'COUNT^SIDEWAYS' is not AGGREGATE^field (COUNT takes none)"),
    ("sysparm_count=true&sysparm_group_by=state&sysparm_orderby=priority", 400,
     "sysparm_orderby: priority is not a grouped field"),
    ("sysparm_count=true&sysparm_display_value=maybe", 400, "sysparm_display_value must be one of"),
    ("sysparm_count=true&sysparm_query=nope=1", 400, "sysparm_query: "),
    ("sysparm_count=true&sysparm_query=" + "a" * 5000, 400, "sysparm_query"),
    ("sysparm_avg_fields=" + "priority," * 60, 400, "sysparm_avg_fields lists more than 50 items"),
])
def test_a_bad_parameter_is_named(as_user, params, status, words):
    r = as_user("agent").get(f"{STATS}?{params}")
    assert r.status_code == status, r.json
    error = r.json["error"]
    assert words in error["message"] or words in str(error.get("detail")), error


def test_a_field_the_user_may_not_read_is_refused_naming_the_parameter(as_user):
    r = as_user("customer").get(f"{STATS}?sysparm_count=true&sysparm_group_by=proposal_reason")
    assert r.status_code == 403, r.json
    assert "sysparm_group_by" in r.json["error"]["detail"] and "proposal_reason" in r.json["error"]["detail"]
    assert as_user("customer").get("/api/now/stats/sys_user?sysparm_count=true").status_code == 403


def test_nothing_asked_answers_no_aggregate_and_an_unknown_table_is_404(as_user):
    api = as_user("agent")
    assert api.get(STATS).json == {"result": {"stats": {}}}
    assert api.get("/api/now/stats/no_such_table?sysparm_count=true").status_code == 404


def test_one_grouped_statement_a_call_and_a_reference_s_display_values_read_once_per_group(runtime):
    """The records are counted in one statement without a join; the grouped accounts' names are read
    afterwards, one statement for up to 500 groups, not joined to every case counted."""
    seen: list[str] = []
    with runtime.engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", lambda *args: seen.append(args[2]))
        query = AggregateQuery(parse_encoded("active=true").where, ("state", "account"),
                               (Measure("count", None, "count"), Measure("avg", "priority", "avg")))
        groups, answers = aggregate(runtime.storage, conn, TABLE, query)
    selects = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]  # (SQLite's BEGIN aside)
    assert len(selects) == 2 and "GROUP BY" in selects[0] and "JOIN" not in selects[0]
    assert "FROM customer_account" in selects[1] and "GROUP BY" not in selects[1]
    assert [g.path for g in groups] == ["state", "account"] and answers
    with runtime.engine.connect() as conn:
        names = {row[0]: row[1] for row in conn.execute(sa.text("SELECT sys_id, name FROM customer_account"))}
    assert all(shown == names[value] for a in answers for value, shown in a.values[1:] if value is not None)
