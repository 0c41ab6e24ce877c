"""Lists people live in: a filter row per field type (operators and inputs), choices by label and
references by name without JavaScript, bulk edit with the same inputs, group-by with counts, saved
filters (own, shared, nobody else's) and the administrator's outbox banner."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import Counter
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import basic, form_token, ui_sign_in

CASE = "sn_customerservice_case"
LIST = f"/{CASE}_list.do"
CASES = f"/api/now/table/{CASE}"


def api(client, path: str, user: str = "admin") -> list[dict]:
    return client.get(path, headers=basic(user)).json["result"]


def page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def applied_query(response) -> str:
    """The encoded query a filter post moved the list to."""
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    return parse_qs(urlsplit(response.headers["Location"]).query)["sysparm_query"][0]


def row_post(client, token: str, field: str, op: str = "eq", value: str = "", **extra) -> dict:
    return {"f_join": "and", "f_field": field, "f_op": op, "f_value": value, "csrf_token": token, **extra}


def drawn_row(client, token: str, field: str, op: str = "eq", was: str = "") -> str:
    """The filter row htmx draws again when its field changes (from `was` to `field`)."""
    r = client.post(LIST, headers={"HX-Request": "true"},
                    data=row_post(client, token, field, op, f_for_0=was, row_for="0"))
    assert r.status_code == 200
    return page_text(r)


def options(fragment: str, name: str) -> list[tuple[str, str]]:
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', fragment, re.S).group(1)
    return re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select)


@pytest.fixture
def agent(client):
    ui_sign_in(client, "agent")
    return form_token(client, LIST)


# -- operators and inputs per field type ---------------------------------------------------------------

# integer choices are ordered too ("Priority at most 2 - High"), as ServiceNow offers them
# and every kind compares with another field of the record (ServiceNow's "is same as", "greater than field")
SAME = ["is the same as", "is different from"]
ORDERED_FIELD = ["greater than the field", "at least the field", "less than the field", "at most the field"]
INTEGER_CHOICE = ["is", "is not", "is one of", "is not one of", "less than", "at most", "greater than", "at least",
                  "is empty", "is not empty", *SAME, *ORDERED_FIELD]

@pytest.mark.parametrize(("field", "operators", "value_input"), [
    ("state", INTEGER_CHOICE, '<select name="f_value"'),
    ("priority", INTEGER_CHOICE, '<select name="f_value"'),
    ("major_case_state", ["is", "is not", "is one of", "is not one of", "is empty", "is not empty", *SAME],
     '<select name="f_value"'),
    ("assigned_to", ["is", "is not", "is one of", "is not one of", "is empty", "is not empty", *SAME],
     f'hx-get="/ui/reference/{CASE}/assigned_to"'),
    ("short_description", ["contains", "does not contain", "starts with", "ends with", "is", "is not", "is empty",
                           "is not empty", *SAME], 'type="text"'),
    ("opened_at", ["is", "is not", "less than", "at most", "greater than", "at least", "is empty", "is not empty",
                   *SAME, *ORDERED_FIELD], 'type="datetime-local"'),
    ("active", ["is", "is not", *SAME], '<option value="true"'),
])
def test_a_row_offers_the_operators_and_the_input_of_its_fields_type(client, agent, field, operators, value_input):
    row = drawn_row(client, agent, field)
    assert [label for _, label in options(row, "f_op")] == operators
    value = row[row.index('aria-label="Operator"'):]
    value = value[value.index("</select>"):]
    assert value_input in value
    assert 'aria-label="Value"' in value


def test_a_field_comparison_row_offers_the_other_fields_of_its_kind(client, agent):
    """"Is the same as" draws a choice of the other fields a value could equal: a user reference offers the
    other user references, a date-time the other date-times; the value typed for "is" does not carry over."""
    row = drawn_row(client, agent, "assigned_to", "sameas", was="assigned_to")
    others = options(row, "f_value")
    assert ("proposed_by", "Proposed by") in others and ("assigned_to", "Assigned to") not in others
    assert all(name not in dict(others) for name in ("account", "short_description", "opened_at"))
    later = drawn_row(client, agent, "opened_at", "gt_field", was="opened_at")
    assert "closed_at" in dict(options(later, "f_value")) and "priority" not in dict(options(later, "f_value"))
    assert 'aria-label="Other field"' in later and 'data-shape="field"' in later


def test_a_field_comparison_filters_and_reads_as_a_sentence(client, agent):
    query = applied_query(client.post(LIST, data=row_post(client, agent, "closed_at", "gt_field", "opened_at")))
    assert query == "closed_atGT_FIELDopened_at"
    page = page_text(client.get(f"{LIST}?sysparm_query=closed_atGT_FIELDopened_at^assigned_toNSAMEASproposed_by"))
    assert "Closed at greater than the field Opened at and Assigned to is different from Proposed by" in page
    listed = api(client, f"{CASES}?sysparm_query=closed_atGT_FIELDopened_at&sysparm_fields=opened_at,closed_at"
                         f"&sysparm_limit=1000")
    assert listed and all(c["closed_at"] > c["opened_at"] for c in listed)
    everything = api(client, f"{CASES}?sysparm_query=closed_atISNOTEMPTY^opened_atISNOTEMPTY&sysparm_fields=sys_id"
                             f"&sysparm_limit=1000")
    not_later = api(client, f"{CASES}?sysparm_query=closed_atLT_OR_EQUALS_FIELDopened_at&sysparm_fields=sys_id"
                            f"&sysparm_limit=1000")
    assert len(listed) + len(not_later) == len(everything)  # an empty side is neither greater nor at most


def test_a_choice_row_offers_labels_and_one_of_offers_several(client, agent):
    row = drawn_row(client, agent, "state")
    assert options(row, "f_value")[:3] == [("", "-- None --"), ("1", "New"), ("10", "Open")]
    several = drawn_row(client, agent, "state", "in", was="state")
    assert re.search(r'<select name="f_values_0" aria-label="Value" multiple', several)


def test_changing_the_field_resets_an_operator_it_does_not_offer_and_the_old_value(client, agent):
    r = client.post(LIST, headers={"HX-Request": "true"}, data=row_post(
        client, agent, "state", "like", "pump", f_for_0="short_description", row_for="0"))
    row = page_text(r)
    assert 'data-op="eq"' in row and "pump" not in row


def test_a_row_drawn_again_keeps_the_page_parameters(client):
    lists = api(client, "/api/now/table/sn_publications_recipients_list?sysparm_query=type=accounts&sysparm_limit=1")
    target = f"sn_publications_recipients_list:{lists[0]['sys_id']}"
    ui_sign_in(client, "admin")
    url = f"/customer_account_list.do?condition_for={target}"
    token = form_token(client, url)
    r = client.post(url, headers={"HX-Request": "true"}, data=row_post(client, token, "country", row_for="0"))
    assert page_text(r).count(f'hx-post="{url}&row_for=0"') == 2  # field and operator


# -- a filter by labels and names, without JavaScript --------------------------------------------------

@pytest.mark.parametrize(("field", "op", "typed", "encoded"), [
    ("state", "eq", "Open", "state=10"),
    ("state", "eq", "awaiting info", "state=18"),
    ("priority", "le", "2 - High", "priority<=2"),
    ("state", "in", "New, Open", "stateIN1,10"),
    ("state", "eq", "10", "state=10"),
])
def test_a_choice_typed_by_its_label_filters_by_its_value(client, agent, field, op, typed, encoded):
    assert applied_query(client.post(LIST, data=row_post(client, agent, field, op, typed))) == encoded


def test_the_ticked_choices_of_is_one_of_filter_and_read_back_as_labels(client, agent):
    r = client.post(LIST, data=row_post(client, agent, "state", "in", "", f_values_0=["1", "18"]))
    encoded = applied_query(r)
    assert encoded == "stateIN1,18"
    page = page_text(client.get(LIST, query_string={"sysparm_query": encoded}))
    assert re.search(r'<span class="filter-sentence">State is one of New, Awaiting Info</span>', page)
    selected = re.findall(r'<option value="(\d+)" selected>', page[page.index('name="f_values_0"'):])
    assert selected[:2] == ["1", "18"]


@pytest.mark.parametrize("posted", ["display", "value"])
def test_a_reference_typed_by_name_filters_by_its_sys_id(client, agent, posted):
    account = api(client, "/api/now/table/customer_account?sysparm_query=nameISNOTEMPTY&sysparm_limit=1")[0]
    data = row_post(client, agent, "account", "eq", account["name"] if posted == "value" else "")
    if posted == "display":
        data["f_display_0"] = account["name"]
    encoded = applied_query(client.post(LIST, data=data))
    assert encoded == f"account={account['sys_id']}"
    page = page_text(client.get(LIST, query_string={"sysparm_query": encoded}))
    assert f'name="f_display_0" value="{account["name"]}"' in page  # the row shows the name, not the sys_id


def test_a_reference_no_record_has_is_named_in_words_and_the_row_is_kept(client, agent):
    r = client.post(LIST, data=row_post(client, agent, "account", "eq", "", f_display_0="Acme 999"))
    page = page_text(r)
    assert r.status_code == 422
    assert "Filter not applied: Account: no account named 'Acme 999'" in page
    assert 'name="f_display_0" value="Acme 999"' in page and "32 hex" not in page


def test_an_unknown_label_is_named_with_its_field(client, agent):
    r = client.post(LIST, data=row_post(client, agent, "state", "eq", "Opne"))
    assert r.status_code == 422
    assert "Filter not applied: State: 'Opne' is not one of the choices (New, Open, Awaiting Info" in page_text(r)


def test_adding_a_row_without_javascript_draws_every_row_for_its_field(client, agent):
    r = client.post(LIST, data=row_post(client, agent, "state", "eq", "Open", add_row="or"))
    page = page_text(r)
    assert r.status_code == 200 and "<html" in page  # a whole page, not a fragment
    first = page[page.index('id="filter-row-0"'):page.index('id="filter-row-1"')]
    assert '<option value="10" selected>Open</option>' in first
    assert 'id="filter-row-1"' in page


def test_running_the_filter_keeps_the_sort_and_the_grouping(client, agent):
    url = f"{LIST}?sysparm_group_by=state"
    r = client.post(url, data=row_post(client, agent, "priority", "eq", "1 - Critical", f_order="ORDERBYDESCnumber"))
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["Location"]).query) == {
        "sysparm_query": ["priority=1^ORDERBYDESCnumber"], "sysparm_group_by": ["state"]}


# -- bulk edit with the same inputs ----------------------------------------------------------------------

def bulk(client, token, field, value, ids, **extra):
    return client.post(f"/ui/bulk/{CASE}", data={"bulk_field": field, "bulk_value": value, "sys_id": ids,
                                                 "back": LIST, "csrf_token": token, **extra})


def flashes(client) -> list[tuple[str, str]]:
    page = client.get(LIST).get_data(as_text=True)
    return [(cls, html.unescape(text)) for cls, text in re.findall(r'<p class="flash ([a-z]+)"[^>]*>([^<]*)</p>', page)]


def test_bulk_edit_by_label_and_by_name(client, agent):
    ids = [client.post(CASES, json={"short_description": f"Bulk {i}", "priority": "4"},
                       headers=basic("agent")).json["result"]["sys_id"] for i in range(2)]
    bulk(client, agent, "priority", "1 - Critical", ids)
    assert flashes(client) == [("message", "Bulk edit of Priority: 2 of 2 records changed")]
    bulk(client, agent, "assigned_to", "", ids, assigned_to__display="Alex Agent")
    assert flashes(client) == [("message", "Bulk edit of Assigned to: 2 of 2 records changed")]
    after = api(client, f"{CASES}?sysparm_query=sys_idIN{','.join(ids)}&sysparm_display_value=true")
    assert {(c["priority"], c["assigned_to"]) for c in after} == {("1 - Critical", "Alex Agent")}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("priority", "Urgent", "Bulk edit not done: Priority: 'Urgent' is not one of the choices (1 - Critical"),
    ("assigned_to", "Nobody Here", "Bulk edit not done: Assigned to: no user named 'Nobody Here'"),
])
def test_bulk_edit_names_a_value_nothing_has(client, agent, field, value, message):
    case = api(client, f"{CASES}?sysparm_query=state=1&sysparm_limit=1")[0]
    bulk(client, agent, field, value, [case["sys_id"]])
    (category, text), = flashes(client)
    assert category == "error" and text.startswith(message)


def test_the_bulk_value_input_is_the_chosen_fields(client, agent):
    def value_input(field):
        return page_text(client.get(LIST, query_string={"bulk_field": field},
                                    headers={"HX-Request": "true", "HX-Target": "bulk-value"}))
    assert '<option value="1">1 - Critical</option>' in value_input("priority")
    assert f'hx-get="/ui/reference/{CASE}/assigned_to"' in value_input("assigned_to")
    assert 'name="assigned_to__display"' in value_input("assigned_to")


def test_the_list_offers_select_all_on_the_page_and_all_matching(client, agent, runtime):
    with runtime.transaction() as service:  # more than a page
        service.insert_many(CASE, [{"short_description": f"Select {i}"} for i in range(25)])
    page = page_text(client.get(f"{LIST}?sysparm_query=short_descriptionSTARTSWITHSelect"))
    total = int(re.search(r'<strong class="total">(\d+)</strong>', page).group(1))
    assert total == 25
    assert 'aria-label="Select all on this page"' in page
    assert f"Select all {total} matching the filter" in page
    assert f"All {total} matching" in page  # the bulk edit's own choice, without script


# -- group by with counts ------------------------------------------------------------------------------------

def groups(page: str) -> dict[str, tuple[int, str]]:
    table = page[page.index('<table class="list groups">'):]
    table = table[:table.index("</table>")]
    return {label: (int(count), href) for href, label, count in re.findall(
        r'<td><a href="([^"]+)">([^<]+)</a></td>\s*<td class="count">(\d+)</td>', table)}


def test_group_by_counts_each_group_and_links_to_it(client, agent):
    query = "stateIN1,10,18,6"
    cases = api(client, f"{CASES}?sysparm_query={query}&sysparm_fields=state&sysparm_display_value=true", "agent")
    expected = Counter(c["state"] for c in cases)
    shown = groups(page_text(client.get(LIST, query_string={"sysparm_query": query, "sysparm_group_by": "state"})))
    assert {label: count for label, (count, _) in shown.items()} == dict(expected)
    count, href = shown["Open"]
    linked = parse_qs(urlsplit(href).query)
    assert linked == {"sysparm_query": [f"{query}^state=10"]}
    assert int(re.search(r'<strong class="total">(\d+)</strong>', page_text(client.get(href))).group(1)) == count


def test_group_by_a_date_time_counts_each_day_and_links_to_that_day(client, agent):
    """A date-time groups by its day (UTC), not by the second; a group's link is the list of that day."""
    cases = api(client, f"{CASES}?sysparm_fields=opened_at&sysparm_limit=1000", "agent")
    expected = Counter((c["opened_at"] or "")[:10] or "(empty)" for c in cases)
    assert len(expected) > 1 and max(expected.values()) > 1
    shown = groups(page_text(client.get(LIST, query_string={"sysparm_group_by": "opened_at"})))
    assert {label: count for label, (count, _) in shown.items()} == dict(expected)
    day = next(d for d in expected if d != "(empty)")
    count, href = shown[day]
    nxt = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    assert parse_qs(urlsplit(href).query) == {"sysparm_query": [f"opened_at>={day} 00:00:00^opened_at<{nxt} 00:00:00"]}
    assert int(re.search(r'<strong class="total">(\d+)</strong>', page_text(client.get(href))).group(1)) == count


def test_group_by_a_reference_reads_display_values_and_counts_the_empty_ones(client, agent):
    cases = api(client, f"{CASES}?sysparm_fields=assigned_to&sysparm_display_value=true&sysparm_limit=1000", "agent")
    expected = Counter(c["assigned_to"] or "(empty)" for c in cases)
    shown = groups(page_text(client.get(LIST, query_string={"sysparm_group_by": "assigned_to"})))
    assert {label: count for label, (count, _) in shown.items()} == dict(expected)
    assert parse_qs(urlsplit(shown["(empty)"][1]).query)["sysparm_query"] == ["assigned_toISEMPTY"]


def test_a_grouping_with_more_groups_than_shown_shows_the_largest_and_says_so(client, agent, monkeypatch):
    from caseloom.web.ui import lists

    monkeypatch.setattr(lists, "GROUPS_SHOWN", 2)
    cases = api(client, f"{CASES}?sysparm_fields=state&sysparm_display_value=true&sysparm_limit=1000", "agent")
    expected = Counter(c["state"] for c in cases)
    assert len(expected) > 2
    text = page_text(client.get(LIST, query_string={"sysparm_group_by": "state"}))
    shown = groups(text)
    largest = sorted(expected.values(), reverse=True)[:2]
    assert sorted((count for count, _ in shown.values()), reverse=True) == largest
    assert f"The 2 largest groups are shown; {len(expected) - 2} more have fewer records." in text


def test_group_counts_follow_the_users_access(client):
    ui_sign_in(client, "author")  # may read accounts, not cases
    assert client.get(LIST, query_string={"sysparm_group_by": "state"}).status_code == 403
    accounts = api(client, "/api/now/table/customer_account?sysparm_fields=country&sysparm_limit=1000", "author")
    shown = groups(page_text(client.get("/customer_account_list.do", query_string={"sysparm_group_by": "country"})))
    assert {label: count for label, (count, _) in shown.items()} == dict(
        Counter(a["country"] or "(empty)" for a in accounts))


# -- saved filters -------------------------------------------------------------------------------------------

def saved(client, url: str = LIST) -> dict[str, str]:
    page = page_text(client.get(url))
    menu = page[page.index('<details class="saved-filters">'):]
    menu = menu[:menu.index("</details>")]
    return {title: href for href, title in re.findall(r'<li>\s*<a href="([^"]+)">([^<]+)</a>', menu)}


def save(client, title: str, query: str, **extra):
    token = form_token(client, LIST)
    return client.post(f"/ui/filters/{CASE}", data={"title": title, "sysparm_query": query, "csrf_token": token,
                                                      **extra})


def test_a_saved_filter_is_its_owners_and_a_shared_one_everyones(client):
    ui_sign_in(client, "agent")
    assert save(client, "My open ones", "stateIN1,10", sysparm_group_by="priority").status_code == 302
    mine = saved(client)
    assert list(mine) == ["My open ones"]
    assert parse_qs(urlsplit(mine["My open ones"]).query) == {"sysparm_query": ["stateIN1,10"],
                                                               "sysparm_group_by": ["priority"]}
    assert save(client, "Everyone's", "priority=1", share="true").status_code == 403  # agents may not share
    ui_sign_in(client, "admin")
    save(client, "Critical for all", "priority=1", share="true")
    assert list(saved(client)) == ["Critical for all"]  # not the agent's private one
    ui_sign_in(client, "manager")
    assert list(saved(client)) == ["Critical for all"]
    ui_sign_in(client, "agent")
    assert list(saved(client)) == ["My open ones", "Critical for all"]
    assert "shared" in page_text(client.get(LIST)).split("Critical for all")[1][:80]
    assert saved(client, "/customer_account_list.do") == {}  # another table's list


def test_nobody_reads_or_changes_anothers_saved_filter(client):
    ui_sign_in(client, "agent")
    save(client, "Agent's own", "state=1")
    own = api(client, "/api/now/table/sys_filter?sysparm_query=title=Agent's own")[0]
    assert own["user"]["value"] and own["filter"] == "state=1"
    for user in ("agent", "manager"):  # the Table API serves saved filters to administrators only
        assert client.get("/api/now/table/sys_filter", headers=basic(user)).status_code == 403
        assert client.get(f"/api/now/table/sys_filter/{own['sys_id']}", headers=basic(user)).status_code == 403
        assert client.patch(f"/api/now/table/sys_filter/{own['sys_id']}", json={"user": ""},
                            headers=basic(user)).status_code == 403
    ui_sign_in(client, "manager")
    token = form_token(client, LIST)
    r = client.post(f"/ui/filters/{CASE}/{own['sys_id']}/delete", data={"csrf_token": token})
    assert r.status_code == 404
    ui_sign_in(client, "agent")
    token = form_token(client, LIST)
    assert client.post(f"/ui/filters/{CASE}/{own['sys_id']}/delete", data={"csrf_token": token}).status_code == 302
    assert saved(client) == {}


@pytest.mark.parametrize("title, query, message", [
    ("  ", "state=1", "title: give the filter a title"),
    ("Probe", "nosuch=1", "nosuch: table 'sn_customerservice_case' has no field 'nosuch'"),
    ("Probe", "state~~1", "state~~1"),
    ("Probe", "work_notesLIKEx", "work_notes"),  # a field no one may filter on (a journal)
])
def test_a_filter_that_does_not_read_is_not_saved(client, title, query, message):
    ui_sign_in(client, "agent")
    save(client, title, query)
    [(kind, text)] = flashes(client)
    assert kind == "error" and text.startswith("Filter not saved: ") and message in text, text
    assert saved(client) == {}


# -- the admin's outbox ---------------------------------------------------------------------------------------

BANNER = "E-mail is queued but not sent:"


def test_the_email_list_says_when_smtp_is_not_configured(client):
    ui_sign_in(client, "admin")
    page = page_text(client.get("/sys_email_list.do?sysparm_query=state=ready"))
    assert BANNER in page and "CASELOOM_SMTP_HOST" in page
    assert BANNER not in page_text(client.get(LIST))  # only the e-mail list


def test_the_email_list_has_no_banner_when_smtp_is_configured(config, definitions):
    from caseloom.web import create_app, db

    app = create_app(replace(config, smtp_host="127.0.0.1"), definitions, testing=True)
    client = app.test_client()
    ui_sign_in(client, "admin")
    page = page_text(client.get("/sys_email_list.do"))
    assert "<h1>Emails</h1>" in page and BANNER not in page
    with app.app_context():
        db.engine.dispose()


def test_the_outbox_module_and_my_cases_newest_first(client):
    ui_sign_in(client, "admin")
    home = page_text(client.get("/"))
    outbox = re.search(r'<a href="([^"]+)">Outbox</a>', home).group(1)
    assert parse_qs(urlsplit(outbox).query)["sysparm_query"] == ["state=ready^ORDERBYDESCsys_created_on"]
    ui_sign_in(client, "agent")
    mine = re.search(r'<a href="([^"]+)">My cases</a>', page_text(client.get("/"))).group(1)
    page = page_text(client.get(mine))
    assert re.search(r'<th scope="col" aria-sort="descending">\s*<a [^>]*>Number ▼</a>', page)


def test_a_date_part_reads_as_words_and_keeps_its_query(client, agent):
    """A DATEPART filter (no row of the builder takes one) reads as a sentence, its encoded query kept as written."""
    query = "opened_atDATEPARTMonday@javascript:gs.datePart('dayofweek','monday','EE')^active=true"
    page = page_text(client.get(f"{LIST}?sysparm_query={query}"))
    assert "Opened at on Monday and Active is true" in page, page[page.find("filter-sentence"):][:300]
    assert f'value="{query}"' in page.replace("&#39;", "'")


def signed_in_on_sqlite(client, app, user: str):
    """The app's engine, with `user` signed in on `client`; the test is skipped on PostgreSQL, whose plans of
    a small table say nothing of a large one's (they are the performance log's)."""
    from caseloom.web import db

    ui_sign_in(client, user)
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's plans; PostgreSQL's are the performance log's")
    return engine


def page_plans(client, engine, table: str, url: str) -> list[tuple[str, str]]:
    """The plans of the statements reading a page of `table` (those with an ORDER BY) that GET `url` runs."""
    from conftest import sqlite_plans

    pages = [(s, p) for s, p in sqlite_plans(engine, table, lambda: client.get(url)) if "ORDER BY" in s]
    assert pages, "the list read no page"
    return pages


@pytest.mark.parametrize("query", ["ORDERBYDESCnumber", "stateIN1,10,18^ORDERBYDESCnumber", "ORDERBYnumber"])
def test_a_list_sorted_by_the_display_field_reads_its_page_along_its_index(client, app, query):
    """CSM's case modules are sorted by number, the cases' display field: with the statistics SQLite's ANALYZE
    keeps, the page is read along that field's index (which holds every row), not by sorting every case.
    (PostgreSQL reads a few hundred matches from themselves, by design: its plan is the performance log's.)"""
    engine = signed_in_on_sqlite(client, app, "agent")
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE task")
    for statement, plan in page_plans(client, engine, "task", f"/sn_customerservice_case_list.do?sysparm_query={query}"):
        assert "USING INDEX ix_task_number" in plan and "TEMP B-TREE FOR ORDER BY" not in plan, (statement, plan)


# What ANALYZE keeps for `caseloom init --demo --scale 50000` (112,500 cases, 82,143 task SLAs, 100,000 install
# base items; none of the cases has a suggestion): the lists' plans as a deployment of that size gets them
AT_SCALE = [
    ("sn_install_base_item", "ix_sn_install_base_item_name", "100000 1"),
    ("sn_install_base_item", "ix_sn_install_base_item_node", "100000 14286"),
    ("sn_install_base_item", "ixn_sn_install_base_item_account", "100000 2"),
    ("sn_install_base_item", "ixn_sn_install_base_item_number", "100000 1"),
    ("sn_install_base_item", "sqlite_autoindex_sn_install_base_item_1", "100000 1"),
    ("task", "ix_task_number", "112500 1"),
    ("task", "ix_task_sys_class_name_active_state_priority_assigned_to", "112500 112500 56250 18750 4688 3750"),
    ("task", "ix_task_sys_class_name_opened_at", "112500 112500 625"),
    ("task", "ixn_task_account", "100000 2"),
    ("task", "ixn_task_assigned_to_number", "100000 100000 1"),
    ("task", "ixn_task_assignment_group", "100000 33334"),
    ("task", "ixn_task_closed_at", "28571 2"),
    ("task", "ixn_task_consumer", "12500 1"),
    ("task", "ixn_task_contact", "100000 2"),
    ("task", "ixn_task_priority", "112500 28125"),
    ("task", "ixn_task_resolution_code", "28572 14286"),
    ("task", "ixn_task_resolved_at", "28572 5"),
    ("task", "ixn_task_resolved_by", "28572 28572"),
    ("task", "ixn_task_state_sys_class_name_sys_updated_on", "112500 18750 18750 351"),
    ("task", "sqlite_autoindex_task_1", "112500 1"),
    ("task_sla", "ix_task_sla_has_breached_stage_planned_end_time", "82143 82143 41072 484"),
    ("task_sla", "ix_task_sla_has_breached_stage_start_time", "82143 82143 41072 1867"),
    ("task_sla", "ixn_task_sla_sla_next_threshold_threshold_due", "82143 13691 13691 893"),
    ("task_sla", "ixn_task_sla_task_stage", "82143 2 2"),
    ("task_sla", "sqlite_autoindex_task_sla_1", "82143 1"),
]


@pytest.mark.parametrize(("module", "table", "index", "in_its_order"), [
    ("Resolved cases", "task", "ixn_task_state_sys_class_name_sys_updated_on", True),
    ("My cases", "task", "ixn_task_assigned_to_number", True),
    ("Major case suggestions", "task", "ixn_task_similar_suggestion", False),
    ("Install base", "sn_install_base_item", "ix_sn_install_base_item_node", True),
    ("SLAs breaching within the hour", "task_sla", "ix_task_sla_has_breached_stage_planned_end_time", True),
])
def test_a_list_of_the_menu_reads_its_page_along_an_index(client, app, module, table, index, in_its_order):
    """Each list the menu opens has the index its filter and its order need (CSM declares them; a mandatory
    field's index, as a display field's, holds every row): its page is found by that index, in the index's
    order where the list's order is one, instead of reading every row (`caseloom bench`'s menu_lists)."""
    engine = signed_in_on_sqlite(client, app, "admin")
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE sqlite_schema")  # makes sqlite_stat1
        conn.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE tbl IN ('task', 'task_sla', 'sn_install_base_item')")
        conn.exec_driver_sql(f"INSERT INTO sqlite_stat1 VALUES {', '.join(['(?, ?, ?)'] * len(AT_SCALE))}",
                             tuple(v for row in AT_SCALE for v in row))
    engine.dispose()  # every connection reads the statistics again
    url = html.unescape(re.search(rf'<a href="([^"]+)">{module}</a>', page_text(client.get("/"))).group(1))
    for statement, plan in page_plans(client, engine, table, url):
        assert f"USING INDEX {index} " in plan, (statement, plan)
        assert ("TEMP B-TREE FOR ORDER BY" not in plan) is in_its_order, (statement, plan)
