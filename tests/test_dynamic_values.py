"""Dynamic values in conditions: ServiceNow's `javascript:gs.getUserID()` and its kin, as data.

Recognised when a condition is parsed (an unknown one is an error naming it, at load for a
definition), replaced when the condition runs by the user bound with `acting_as` and the clock
(UTC), with the same meaning in SQL (lists, API) and in Python (rules). Nothing is executed.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from caseloom.automation.conditions import resolver
from caseloom.definitions import DefinitionErrors, load_folder
from caseloom.query import Query, QueryError, Term, from_data, parse_encoded, to_encoded
from caseloom.query.dynamic import Dynamic, acting, acting_as, fixed_clock, now, resolve_dynamic
from caseloom.query.evaluate import evaluate
from caseloom.query.meaning import bind_fields
from caseloom.runtime import Runtime
from conftest import BACKENDS
from test_condition_parity import own_runtime, write

TASK = "dv_task"
ALICE, BOB = f"{1:032x}", f"{2:032x}"
NOW = dt.datetime(2024, 3, 10, 15, 30, 45)

FILES = {
    "tables/dv_task.yaml": f"""table: {TASK}
label: Task
display: title
fields:
  title: {{type: string}}
  owner: {{type: reference, to: sys_user}}
  owner_name: {{type: string}}
  opened: {{type: datetime}}
  due: {{type: date}}
""",
}

RECORDS = [
    {"title": "alice-now", "owner": ALICE, "owner_name": "alice", "opened": "2024-03-10 15:30:45", "due": "2024-03-10"},
    {"title": "alice-yesterday", "owner": ALICE, "opened": "2024-03-09 23:59:59", "due": "2024-03-09"},
    {"title": "alice-midnight", "owner": ALICE, "opened": "2024-03-10 00:00:00"},
    {"title": "bob-hour-ago", "owner": BOB, "owner_name": "bob", "opened": "2024-03-10 14:30:45", "due": "2024-03-11"},
    {"title": "bob-week-ago", "owner": BOB, "opened": "2024-03-03 08:00:00", "due": "2024-03-03"},
    {"title": "nobody-tomorrow", "opened": "2024-03-11 00:00:00"},
]
EVERYONE = {r["title"] for r in RECORDS}
ALICES = {"alice-now", "alice-yesterday", "alice-midnight"}
BOBS = {"bob-hour-ago", "bob-week-ago"}


def fill(service) -> None:
    service.insert("sys_user", {"sys_id": ALICE, "user_name": "alice", "name": "Alice"})
    service.insert("sys_user", {"sys_id": BOB, "user_name": "bob", "name": "Bob"})
    for record in RECORDS:
        service.insert(TASK, record)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"dynamic-{request.param}")
    with own_runtime(request.param, base, FILES, fill) as runtime:
        with runtime.transaction() as service:
            records = service.query(TASK, Query())
        yield runtime, records


def in_sql(runtime: Runtime, node) -> set[str]:
    with runtime.transaction() as service:
        return {row["title"] for row in service.query(TASK, Query(node), ["title"])}


def in_python(runtime: Runtime, records: list[dict], node) -> set[str]:
    tdef = runtime.defs.tables[TASK]
    bound = bind_fields(node, runtime.defs.tables, tdef)
    with runtime.transaction() as service:
        return {r["title"] for r in records if evaluate(bound, r, resolve=resolver(service, tdef, r))}


AS_ALICE = [
    ("owner=javascript:gs.getUserID()", ALICES),
    ("owner!=javascript:gs.getUserID()", BOBS | {"nobody-tomorrow"}),
    (f"ownerINjavascript:gs.getUserID(),{BOB}", ALICES | BOBS),
    ("owner_name=javascript:gs.getUserName()", {"alice-now"}),
    ("owner.user_name=javascript:gs.getUserName()", ALICES),
    ("opened>=javascript:gs.beginningOfToday()", {"alice-now", "alice-midnight", "bob-hour-ago", "nobody-tomorrow"}),
    ("opened<=javascript:gs.endOfToday()", EVERYONE - {"nobody-tomorrow"}),
    ("opened>javascript:gs.nowDateTime()", {"nobody-tomorrow"}),
    ("opened<=javascript:gs.hoursAgo(1)", {"bob-hour-ago", "bob-week-ago", "alice-yesterday", "alice-midnight"}),
    ("opened>=javascript:gs.minutesAgo(60)", {"alice-now", "bob-hour-ago", "nobody-tomorrow"}),
    ("opened>=javascript:gs.daysAgoStart(1)", EVERYONE - {"bob-week-ago"}),
    ("opened<javascript:gs.daysAgo(7)", {"bob-week-ago"}),
    ("due=javascript:gs.beginningOfToday()", {"alice-now"}),  # a date field: today's date
    ("due<javascript:gs.daysAgo(-1)", {"alice-now", "alice-yesterday", "bob-week-ago"}),
    # ServiceNow's ranges (the list filter's "on", "between"): the two comparisons they make
    ("openedBETWEENjavascript:gs.daysAgoStart(1)@javascript:gs.daysAgoEnd(1)", {"alice-yesterday"}),
    ("openedONToday@javascript:gs.beginningOfToday()@javascript:gs.endOfToday()",
     {"alice-now", "alice-midnight", "bob-hour-ago"}),
    ("openedNOTONToday@javascript:gs.beginningOfToday()@javascript:gs.endOfToday()",
     {"alice-yesterday", "bob-week-ago", "nobody-tomorrow"}),
    ("openedONThis week@javascript:gs.beginningOfThisWeek()@javascript:gs.endOfThisWeek()",  # from Monday the 4th
     {"alice-now", "alice-yesterday", "alice-midnight", "bob-hour-ago"}),
    ("openedONLast week@javascript:gs.beginningOfLastWeek()@javascript:gs.endOfLastWeek()", {"bob-week-ago"}),
    ("openedONTomorrow@javascript:gs.beginningOfTomorrow()@javascript:gs.endOfTomorrow()", {"nobody-tomorrow"}),
    ("openedONThis month@javascript:gs.beginningOfThisMonth()@javascript:gs.endOfThisMonth()", EVERYONE),
    ("openedONLast month@javascript:gs.beginningOfLastMonth()@javascript:gs.endOfLastMonth()", set()),
    ("title=nobody-tomorrow^ORopenedBETWEEN2024-03-03 00:00:00@2024-03-03 23:59:59",
     {"nobody-tomorrow", "bob-week-ago"}),
    ("dueBETWEEN2024-03-09@2024-03-10", {"alice-now", "alice-yesterday"}),
    ({"field": "opened", "op": "between",
      "value": ["javascript:gs.beginningOfYesterday()", "javascript:gs.endOfYesterday()"]}, {"alice-yesterday"}),
    ("openedRELATIVEGT@hour@ago@2", {"alice-now", "bob-hour-ago", "nobody-tomorrow"}),  # after 13:30:45
    ("openedRELATIVELT@day@ago@1", {"bob-week-ago"}),  # before yesterday 15:30:45 (not its 23:59:59)
    ("openedRELATIVEGE@day@ahead@1", set()),  # from tomorrow 15:30:45 on
    ("openedRELATIVELE@week@ago@1", {"bob-week-ago"}),
    ("openedRELATIVEGT@month@ago@1", EVERYONE),
    ({"field": "owner", "op": "eq", "value": "javascript:gs.getUserID()"}, ALICES),
    ({"field": "owner", "op": "in", "value": ["javascript:gs.getUserID()"]}, ALICES),
    ({"any": [{"field": "owner", "op": "eq", "value": "javascript:gs.getUserID()"},
              {"field": "opened", "op": "gt", "value": "javascript:gs.nowDateTime()"}]}, ALICES | {"nobody-tomorrow"}),
]

NO_USER = [
    ("owner=javascript:gs.getUserID()", set()),
    ("owner!=javascript:gs.getUserID()", set()),  # no user: the term matches nothing, whatever its operator
    (f"ownerINjavascript:gs.getUserID(),{BOB}", BOBS),  # that one item matches nothing
    ("owner_name=javascript:gs.getUserName()", set()),
    ("ownerISEMPTY^ORowner=javascript:gs.getUserID()", {"nobody-tomorrow"}),
    ("opened>=javascript:gs.beginningOfToday()", {"alice-now", "alice-midnight", "bob-hour-ago", "nobody-tomorrow"}),
]


def node_of(condition):
    return parse_encoded(condition).where if isinstance(condition, str) else from_data(condition)


@pytest.mark.parametrize(("condition", "expected"), AS_ALICE)
def test_lists_and_rules_see_the_acting_user_and_the_time(world, condition, expected):
    runtime, records = world
    node = node_of(condition)
    with acting_as(ALICE, "alice"), fixed_clock(NOW):
        assert in_sql(runtime, node) == expected
        assert in_python(runtime, records, node) == expected


@pytest.mark.parametrize(("condition", "expected"), NO_USER)
def test_with_no_user_bound_the_user_matches_nothing(world, condition, expected):
    runtime, records = world
    node = node_of(condition)
    with fixed_clock(NOW):
        assert acting() is None
        assert in_sql(runtime, node) == expected
        assert in_python(runtime, records, node) == expected


def test_a_value_still_as_text_is_recognised_when_it_runs(world):
    """A Term built in code or from the list filter's rows carries the text, not a parsed value."""
    runtime, records = world
    node = Term("owner", "eq", "javascript:gs.getUserID()")
    with acting_as(BOB, "bob"):
        assert in_sql(runtime, node) == BOBS
        assert in_python(runtime, records, node) == BOBS
    with pytest.raises(QueryError, match=r"'javascript:gs\.getUserId\(\)' is not a dynamic value"):
        in_sql(runtime, Term("owner", "eq", "javascript:gs.getUserId()"))


@pytest.mark.parametrize(("token", "value"), [
    ("gs.nowDateTime()", NOW),
    ("gs.beginningOfToday()", dt.datetime(2024, 3, 10)),
    ("gs.endOfToday()", dt.datetime(2024, 3, 10, 23, 59, 59)),
    ("gs.daysAgo(2)", dt.datetime(2024, 3, 8, 15, 30, 45)),
    ("gs.daysAgo(-1)", dt.datetime(2024, 3, 11, 15, 30, 45)),
    ("gs.daysAgoStart(2)", dt.datetime(2024, 3, 8)),
    ("gs.daysAgoStart(0)", dt.datetime(2024, 3, 10)),
    ("gs.hoursAgo(16)", dt.datetime(2024, 3, 9, 23, 30, 45)),
    ("gs.minutesAgo(31)", dt.datetime(2024, 3, 10, 14, 59, 45)),
    ("gs.daysAgoEnd(2)", dt.datetime(2024, 3, 8, 23, 59, 59)),
    ("gs.monthsAgo(1)", dt.datetime(2024, 2, 10, 15, 30, 45)),
    ("gs.monthsAgo(-10)", dt.datetime(2025, 1, 10, 15, 30, 45)),
    ("gs.yearsAgo(1)", dt.datetime(2023, 3, 10, 15, 30, 45)),
    ("gs.beginningOfYesterday()", dt.datetime(2024, 3, 9)),
    ("gs.endOfTomorrow()", dt.datetime(2024, 3, 11, 23, 59, 59)),
    ("gs.beginningOfThisWeek()", dt.datetime(2024, 3, 4)),  # Sunday the 10th is in the week from Monday the 4th
    ("gs.endOfThisWeek()", dt.datetime(2024, 3, 10, 23, 59, 59)),
    ("gs.beginningOfNextWeek()", dt.datetime(2024, 3, 11)),
    ("gs.endOfLastWeek()", dt.datetime(2024, 3, 3, 23, 59, 59)),
    ("gs.beginningOfLastMonth()", dt.datetime(2024, 2, 1)),
    ("gs.endOfLastMonth()", dt.datetime(2024, 2, 29, 23, 59, 59)),  # a leap year
    ("gs.endOfNextMonth()", dt.datetime(2024, 4, 30, 23, 59, 59)),
    ("gs.beginningOfThisYear()", dt.datetime(2024, 1, 1)),
    ("gs.endOfLastYear()", dt.datetime(2023, 12, 31, 23, 59, 59)),
    ("gs.beginningOfNextYear()", dt.datetime(2025, 1, 1)),
    ("gs.getUserID()", ALICE),
    ("gs.getUserName()", "alice"),
])
def test_each_token_means_what_servicenow_means(token, value):
    term = parse_encoded(f"x=javascript:{token}").where
    assert isinstance(term.value, Dynamic)
    with acting_as(ALICE, "alice"), fixed_clock(NOW):
        assert resolve_dynamic(term).value == value


@pytest.mark.parametrize(("token", "moment", "value"), [
    ("gs.monthsAgo(1)", dt.datetime(2024, 3, 31, 9, 0), dt.datetime(2024, 2, 29, 9, 0)),  # no 31 February: its last day
    ("gs.monthsAgo(1)", dt.datetime(2023, 3, 31, 9, 0), dt.datetime(2023, 2, 28, 9, 0)),
    ("gs.yearsAgo(1)", dt.datetime(2024, 2, 29, 9, 0), dt.datetime(2023, 2, 28, 9, 0)),
    ("gs.endOfThisMonth()", dt.datetime(2024, 12, 31, 23, 59, 59), dt.datetime(2024, 12, 31, 23, 59, 59)),
    ("gs.beginningOfNextMonth()", dt.datetime(2024, 12, 15), dt.datetime(2025, 1, 1)),
])
def test_calendar_months_and_years_end_where_the_calendar_does(token, moment, value):
    with fixed_clock(moment):
        assert resolve_dynamic(parse_encoded(f"x=javascript:{token}").where).value == value


@pytest.mark.parametrize("relative, encoded", [
    ("openedRELATIVEGT@hour@ago@3", "opened>javascript:gs.hoursAgo(3)"),
    ("openedRELATIVELE@quarter@ago@1", "opened<=javascript:gs.monthsAgo(3)"),
    ("openedRELATIVELT@week@ahead@2", "opened<javascript:gs.daysAgo(-14)"),
    ("openedRELATIVEGE@minute@ago@30", "opened>=javascript:gs.minutesAgo(30)"),
])
def test_a_relative_date_is_the_comparison_with_a_dynamic_value_it_means(relative, encoded):
    assert to_encoded(parse_encoded(relative)) == encoded


@pytest.mark.parametrize("text", [
    "owner=javascript:gs.getUserID()",
    "opened>=javascript:gs.daysAgoStart(7)^ORopenedISEMPTY",
    "ownerINjavascript:gs.getUserID(),abc",
    "title=x^ORopenedBETWEEN2024-03-03 00:00:00@javascript:gs.endOfLastWeek()",  # a range in an OR group
])
def test_encoded_queries_keep_their_dynamic_values(text):
    assert to_encoded(parse_encoded(text)) == text


@pytest.mark.parametrize(("written", "named"), [
    ("owner=javascript:gs.getCurrentUser()", "'javascript:gs.getCurrentUser()' is not a dynamic value"),
    ("owner=javascript:alert(document.cookie)", "'javascript:alert(document.cookie)' is not a dynamic value"),
    ("opened>javascript:gs.daysAgo()", "gs.daysAgo() takes a whole number"),
    ("opened>javascript:gs.daysAgo(one)", "gs.daysAgo() takes a whole number"),
    ("opened>javascript:gs.daysAgo(10000000)", "gs.daysAgo() takes a whole number"),
    ("owner=javascript:gs.getUserID(1)", "gs.getUserID() takes no argument"),
    ("ownerINabc,javascript:gs.nope()", "'javascript:gs.nope()' is not a dynamic value"),
    ("openedBETWEENjavascript:gs.beginningOfToday()", "BETWEEN takes start@end"),
    ("openedBETWEEN2024-01-01@2024-01-02@2024-01-03", "BETWEEN takes start@end"),
    ("openedONjavascript:gs.beginningOfToday()@javascript:gs.endOfToday()", "ON takes label@start@end"),
    ("openedNOTONToday@@javascript:gs.endOfToday()", "NOTON takes label@start@end"),
    ("openedBETWEENjavascript:gs.beginningOfWeek()@javascript:gs.endOfToday()",
     "'javascript:gs.beginningOfWeek()' is not a dynamic value"),
])
def test_an_unknown_dynamic_value_is_refused_naming_it(written, named):
    with pytest.raises(QueryError) as found:
        parse_encoded(written)
    assert named in str(found.value) and written in str(found.value)
    field, _, value = written.partition("=") if "=" in written else (None, None, None)
    if field == "owner":
        with pytest.raises(QueryError, match=r"condition\.value: "):
            from_data({"field": "owner", "op": "eq", "value": value})


def test_a_bad_dynamic_value_in_a_definition_is_reported_at_load(tmp_path):
    files = {**FILES, "rules/dv.yaml": f"""rules:
  - name: mine
    table: {TASK}
    when: before
    on: [update]
    condition: {{field: owner, op: eq, value: "javascript:gs.getUserId()"}}
    effects:
      - set: {{title: mine}}
"""}
    with pytest.raises(DefinitionErrors) as found:
        load_folder(write(tmp_path / "definitions", files))
    text = str(found.value)
    assert "rules/dv.yaml:6:" in text and "'javascript:gs.getUserId()' is not a dynamic value" in text


def test_a_condition_without_dynamic_values_is_used_as_it_is():
    """No copy per evaluation for the conditions that have nothing to replace."""
    node = parse_encoded("owner=abc^opened>2024-01-01^ORtitleLIKEx").where
    assert resolve_dynamic(node) is node


def test_the_acting_user_is_per_context():
    seen = []
    with acting_as(ALICE, "alice"):
        with acting_as(BOB, "bob"):
            seen.append(acting().user_name)
        seen.append(acting().user_name)
        thread = threading.Thread(target=lambda: seen.append(acting()))
        thread.start()
        thread.join()
    seen.append(acting())
    assert seen == ["bob", "alice", None, None]


def test_the_clock_is_utc_in_whole_seconds():
    moment = now()
    utc = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert moment.microsecond == 0 and abs((utc - moment).total_seconds()) < 5
