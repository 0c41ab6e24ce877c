"""Lists exported to CSV and XLSX (`/{table}_list.do?CSV`, `?XLSX`): the rows and display values the
list shows, the same filter, sort and search, every matching record (not a page), the user's row and
field rules, formula-looking text neutralised, and every bad parameter answered by name."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest

import test_acl_generic
from caseloom import serving
from caseloom.web.ui import export
from conftest import basic, ui_sign_in

TABLE = "sn_customerservice_case"
LIST = f"/{TABLE}_list.do"
CASES = f"/api/now/table/{TABLE}"


def as_csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def as_xlsx(response) -> list[list[list]]:
    """Each sheet's rows of cell values."""
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.headers["Content-Type"] == export.CONTENT_TYPES["xlsx"]
    book = openpyxl.load_workbook(io.BytesIO(response.data))
    return [[[cell.value for cell in row] for row in sheet.iter_rows()] for sheet in book.worksheets]


def listed(client, user: str, query: str, fields: str) -> list[list[str]]:
    """What the Table API shows the same user: display values, in the same order."""
    r = client.get(f"{CASES}?sysparm_query={query}&sysparm_fields={fields}&sysparm_display_value=true"
                   "&sysparm_limit=10000", headers=basic(user))
    assert r.status_code == 200, r.json
    return [[row[f] for f in fields.split(",")] for row in r.json["result"]]


QUERIES = ["", "active=true^ORDERBYnumber", "priority<=2^ORDERBYDESCpriority^ORDERBYnumber", "account.nameSTARTSWITHA"]


@pytest.mark.parametrize("query", QUERIES)
def test_csv_holds_every_record_the_list_matches_as_display_values(client, query):
    fields = "number,short_description,state,priority,account,assigned_to"
    rows = as_csv(client.get(f"{LIST}?CSV&sysparm_query={query}", headers=basic("agent")))
    assert rows[0] == fields.split(",")  # the list's columns, by name as ServiceNow's CSV
    expected = listed(client, "agent", query, fields)
    if "ORDERBY" in query:
        assert rows[1:] == expected
    else:
        assert sorted(rows[1:]) == sorted(expected)
    assert len(rows) - 1 == int(client.get(f"{CASES}?sysparm_limit=1&sysparm_query={query}",
                                           headers=basic("agent")).headers["X-Total-Count"])


@pytest.mark.parametrize("query", QUERIES[1:3])
def test_xlsx_holds_the_same_rows_with_labels_and_numbers(client, query):
    sheets = as_xlsx(client.get(f"{LIST}?XLSX&sysparm_query={query}&sysparm_fields=number,state,account.name,"
                                "sys_mod_count", headers=basic("agent")))
    assert len(sheets) == 1
    header, *rows = sheets[0]
    assert header == ["Number", "State", "Account > Name", "Updates"]
    expected = listed(client, "agent", query, "number,state,account.name,sys_mod_count")
    assert [[r[0], r[1], r[2] or None, str(r[3])] for r in rows] == [[e[0], e[1], e[2] or None, e[3]] for e in expected]
    assert all(isinstance(r[3], int | float) for r in rows)  # an integer is a number Excel can add up


def test_the_list_s_search_and_sort_carry_into_the_export(client):
    url = f"{LIST}?CSV&sysparm_search=VPN&sysparm_orderby=-number&sysparm_fields=number,short_description"
    rows = as_csv(client.get(url, headers=basic("agent")))[1:]
    assert rows and all("VPN" in text for _, text in rows)
    assert [n for n, _ in rows] == sorted((n for n, _ in rows), reverse=True)


@pytest.mark.parametrize("text, csv_cell", [
    ("=HYPERLINK(\"http://evil\",\"x\")", "'=HYPERLINK(\"http://evil\",\"x\")"),
    ("+1+2", "'+1+2"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tindented", "'\tindented"),
    ("-42", "-42"),  # a plain negative number stays a number
    ("plain = fine", "plain = fine"),
])
def test_formula_looking_values_are_neutralised(client, text, csv_cell):
    r = client.post(CASES, json={"short_description": text}, headers=basic("agent"))
    assert r.status_code == 201, r.json
    number = r.json["result"]["number"]
    query = f"number={number}"
    rows = as_csv(client.get(f"{LIST}?CSV&sysparm_query={query}&sysparm_fields=number,short_description",
                             headers=basic("agent")))
    assert rows[1] == [number, csv_cell]
    response = client.get(f"{LIST}?XLSX&sysparm_query={query}&sysparm_fields=short_description", headers=basic("agent"))
    book = openpyxl.load_workbook(io.BytesIO(response.data))
    cell = book.active.cell(row=2, column=1)
    assert cell.value == text and cell.data_type == "s"  # a string, never a formula


def test_every_field_with_default_export_fields_all_leaves_out_the_hidden(client):
    rows = as_csv(client.get(f"{LIST}?CSV&sysparm_default_export_fields=all&sysparm_query=ORDERBYnumber",
                             headers=basic("admin")))
    assert {"number", "sys_id", "sys_created_on", "description"} <= set(rows[0])
    users = as_csv(client.get("/sys_user_list.do?CSV&sysparm_default_export_fields=all", headers=basic("admin")))
    assert "user_name" in users[0] and "user_password" not in users[0]


def test_many_batches_and_sheets_stream_every_row(client, monkeypatch):
    """Rows are read a batch at a time and a full worksheet goes on to the next (small sizes here)."""
    monkeypatch.setattr(export, "BATCH", 2)
    monkeypatch.setattr(export, "CHUNK", 10)
    monkeypatch.setattr(export, "SHEET_ROWS", 4)  # a header and three rows a sheet
    query = "ORDERBYnumber"
    rows = as_csv(client.get(f"{LIST}?CSV&sysparm_query={query}&sysparm_fields=number", headers=basic("agent")))
    numbers = [r[0] for r in listed(client, "agent", query, "number")]
    assert [r[0] for r in rows[1:]] == numbers
    sheets = as_xlsx(client.get(f"{LIST}?XLSX&sysparm_query={query}&sysparm_fields=number", headers=basic("agent")))
    assert len(sheets) == -(-len(numbers) // 3)
    assert all(sheet[0] == ["Number"] for sheet in sheets)
    assert [row[0] for sheet in sheets for row in sheet[1:]] == numbers


@pytest.mark.parametrize("kind", ["CSV", "XLSX"])
def test_an_export_tells_the_server_it_is_still_working(client, monkeypatch, kind):
    """A sync server process is killed when it stays silent for `--timeout`: a long export says it is
    still working as it goes (every piece of CSV sent; every BEAT_ROWS rows of XLSX written, and every
    piece of the file sent)."""
    beats = []
    monkeypatch.setattr(serving, "_heartbeat", lambda: beats.append(1))
    monkeypatch.setattr(export, "CHUNK", 10)
    monkeypatch.setattr(export, "BEAT_ROWS", 2)
    response = client.get(f"{LIST}?{kind}&sysparm_query=ORDERBYnumber&sysparm_fields=number", headers=basic("agent"))
    assert response.status_code == 200
    rows = len(listed(client, "agent", "ORDERBYnumber", "number"))
    pieces = -(-len(response.data) // 10)
    assert len(beats) >= (rows - 1 if kind == "CSV" else rows // 2 + pieces - 1)


def test_nothing_matched_is_the_header_alone(client):
    none = "number=NOSUCH"
    assert as_csv(client.get(f"{LIST}?CSV&sysparm_query={none}&sysparm_fields=number", headers=basic("agent"))) == [
        ["number"]]
    assert as_xlsx(client.get(f"{LIST}?XLSX&sysparm_query={none}&sysparm_fields=number",
                              headers=basic("agent"))) == [[["Number"]]]


def test_the_limit_property_refuses_an_export_that_is_too_big(client):
    admin = basic("admin")
    prop = client.get("/api/now/table/sys_properties?sysparm_query=name=caseloom.export.max_rows",
                      headers=admin).json["result"][0]
    assert client.patch(f"/api/now/table/sys_properties/{prop['sys_id']}", json={"value": "3"},
                        headers=admin).status_code == 200
    r = client.get(f"{LIST}?CSV", headers=basic("agent") | {"Accept": "application/json"})
    assert r.status_code == 400
    assert "at most 3 may be exported" in r.json["error"]["detail"]
    assert "caseloom.export.max_rows" in r.json["error"]["detail"]
    assert as_csv(client.get(f"{LIST}?CSV&sysparm_query=ORDERBYnumber^number<=CS0001003&sysparm_fields=number",
                             headers=basic("agent")))[1:] == [["CS0001001"], ["CS0001002"], ["CS0001003"]]


JSON = {"Accept": "application/json"}


@pytest.mark.parametrize("url, user, status, named", [
    (f"{LIST}?CSV&sysparm_fields=number,nope", "agent", 400, "nope"),
    (f"{LIST}?XLSX&sysparm_fields=account.nope", "agent", 400, "account.nope"),
    (f"{LIST}?CSV&sysparm_query=nope=1", "agent", 400, "nope"),
    (f"{LIST}?CSV&sysparm_query=priorityBETWEENx", "agent", 400, "priority"),
    (f"{LIST}?CSV&sysparm_orderby=nope", "agent", 400, "nope"),
    ("/no_such_table_list.do?CSV", "agent", 404, ""),
    ("/sys_user_has_role_list.do?CSV", "agent", 403, ""),
])
def test_bad_parameters_are_named(client, url, user, status, named):
    r = client.get(url, headers=basic(user) | JSON)
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    if named:
        assert named in r.json["error"]["detail"]


def test_who_may_export(client):
    assert client.get(f"{LIST}?CSV", headers=basic("agent", "wrong") | JSON).status_code == 401
    r = client.get(f"{LIST}?CSV")  # no one signed in: the sign-in page, then back here
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    ui_sign_in(client, "agent")
    assert as_csv(client.get(f"{LIST}?CSV&sysparm_fields=number"))[0] == ["number"]


@pytest.mark.parametrize("customer", ["customer", "customer_admin"])
def test_a_customer_exports_nothing_from_the_staff_pages(client, customer):
    assert client.get(f"{LIST}?CSV", headers=basic(customer) | JSON).status_code == 403
    ui_sign_in(client, customer)
    r = client.get(f"{LIST}?CSV")
    assert r.status_code == 302 and "/csm" in r.headers["Location"]


def test_the_list_page_offers_both_exports_of_what_it_shows(client):
    ui_sign_in(client, "agent")
    page = client.get(f"{LIST}?sysparm_query=active%3Dtrue&sysparm_search=VPN").get_data(as_text=True)
    assert f'href="{LIST}?sysparm_query=active%3Dtrue&amp;sysparm_search=VPN&amp;CSV"' in page
    assert f'href="{LIST}?sysparm_query=active%3Dtrue&amp;sysparm_search=VPN&amp;XLSX"' in page


# -- on an application of the test's own: row rules and field rules with conditions ----------------

small = test_acl_generic.small  # the fixture: its tickets, teams, groups and users

@pytest.mark.parametrize("user, expected", [
    # the worker: their group's active tickets; the budget only where its rule's condition holds, the group
    # not on "blue two", the team's name not where its row rule hides the team; notes not at all, so no column
    ("worker", [["blue one", "Open", "Blue", "8"], ["blue two", "", "", ""]]),
    ("lead", [["blue one", "Open", "Blue", "8", "note on blue one"], ["blue two", "", "Blue", "",
                                                                         "note on blue two"],
              ["red one", "Open", "Red", "", "note on red one"]]),
    ("admin", [["blue old", "Open", "Blue", "8", "note on blue old"], ["blue one", "Open", "Blue", "8",
                                                                        "note on blue one"],
               ["blue two", "Hidden", "Blue", "8", "note on blue two"], ["red one", "Open", "Red", "7",
                                                                          "note on red one"]]),
])
def test_rows_and_fields_follow_each_user_s_rules(small, user, expected):
    r = small.api(user).get("/x_ticket_list.do?CSV&sysparm_fields=title,team,group,budget,notes&sysparm_query="
                            "ORDERBYtitle")
    rows = as_csv(r)
    assert rows[0] == ["title", "team", "group", "budget", "notes"][:len(expected[0])]
    assert rows[1:] == expected
