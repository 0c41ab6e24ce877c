"""Bad input gets a 4xx that names what was wrong, never a 5xx, and changes nothing; requests are
bounded (size, batch, import rows, text length)."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import pytest

from caseloom.fieldtypes import FIELD_TYPES, TEXT_LENGTH
from caseloom.web import create_app
from conftest import DEFINITIONS, basic
from small_app import small_app
from test_access import sign_in

CASES = "/api/now/table/sn_customerservice_case"
LISTS = "/api/now/table/sn_publications_recipients_list"
JSON = {"Content-Type": "application/json"}

# Every kind of malformed value a client might send; each field type gets every one of them.
MALFORMED = [
    {"nested": {"object": True}}, ["a", "list"], [], {}, {"value": ["x"]}, {"link": 1}, 1e308, -1e308, 2**70,
    -(2**70), True, "a\ud800b", "\udfff", "nul\x00byte", "x" * (TEXT_LENGTH + 1), "9999-12-31T23:59:59-23:00",
    "0001-01-01T00:00:00+14:00", "2024-02-30", "2024-13-01 10:00:00", "25:61:61", "NaN", "Infinity", "-0",
    "1e999", "0x1F", "١٢٣", " ", "\t\n", "true ", "'; DROP TABLE task; --", "%", "_", "\\", "../../etc/passwd",
    "<script>alert(1)</script>", "{{ 7 * 7 }}", "f" * 32, "F" * 32, "g" * 32, "0" * 31, "mailto:a@b", "http://",
    "https://exa mple.com", "@", "a@", "@b.c",
]


EXTRA = {"choice": ", choices: {1: One, 2: Two}", "reference": ", to: sys_user_group"}
KINDS = "table: u_kinds\nlabel: Kinds\nfields:\n" + "".join(
    f"  u_{name}: {{type: {name}{EXTRA.get(name, '')}}}\n" for name in FIELD_TYPES)


@pytest.fixture
def kinds(config, tmp_path):
    """A client of the shipped application with a table holding one field of every type."""
    with small_app(config, tmp_path, {"tables/u_kinds.yaml": KINDS}, {"admin": ["admin"]}, base=DEFINITIONS) as made:
        client = made.client
        client.environ_base["HTTP_AUTHORIZATION"] = basic("admin")["Authorization"]
        assert client.post("/api/now/table/u_kinds", json={}).status_code == 201
        yield client


@pytest.mark.parametrize("value", MALFORMED, ids=[repr(v)[:30] for v in MALFORMED])
def test_every_field_type_takes_every_malformed_value_without_a_server_error(kinds, value):
    path = "/api/now/table/u_kinds"
    row = kinds.get(f"{path}?sysparm_limit=1").json["result"][0]
    for ftype in FIELD_TYPES:
        field = f"u_{ftype}"
        r = kinds.post(path, json={field: value})
        assert r.status_code in (201, 400), (ftype, r.status_code, r.get_data(as_text=True)[:300])
        if r.status_code == 400:
            assert r.json["status"] == "failure" and r.json["error"]["detail"]["field"] == field, r.json
        r = kinds.patch(f"{path}/{row['sys_id']}", json={field: value})
        assert r.status_code in (200, 400), (ftype, "patch", r.status_code, r.get_data(as_text=True)[:300])
        if isinstance(value, str) and value.isprintable() and "\ud800" not in value and "\udfff" not in value:
            r = kinds.get(path, query_string={"sysparm_query": f"{field}={value}"})
            assert r.status_code in (200, 400), (ftype, "query", r.status_code, r.get_data(as_text=True)[:300])
    assert kinds.get(f"{path}/{row['sys_id']}").status_code == 200


@pytest.mark.parametrize("query", [
    "stateVALCHANGES", "stateCHANGESTO3", "stateCHANGESFROM1",
    "^".join(f"number!=CS{i:07d}" for i in range(2000)),
    "^OR".join(f"number=CS{i:07d}" for i in range(2000)),
    "numberIN" + ",".join(f"CS{i:07d}" for i in range(20000)),
    "ORDERBYnope", "account.nope=1", "short_description.name=1", "=1", "state=1^ORDERBY",
    "priority>=", "priority<", "sys_created_on>", "state=1^ORpriority<=",  # a comparison with nothing
    "opened_at>javascript:gs.daysAgo(999999)", "opened_atRELATIVEGT@year@ago@999999",  # before the year 1
    "opened_atBETWEEN2026-01-01", "opened_atRELATIVEGT@fortnight@ago@1",  # ServiceNow's ranges, misshapen
])
def test_a_query_the_database_cannot_answer_is_a_400_naming_it(as_user, query):
    r = as_user("agent").get(f"{CASES}?sysparm_query={query}")
    assert r.status_code == 400, r.get_data(as_text=True)[:300]
    assert r.json["error"]["message"].startswith("invalid query")


@pytest.mark.parametrize("param, value", [
    ("sysparm_offset", str(2**63)), ("sysparm_offset", str(2**63 - 1)), ("sysparm_offset", "-1"),
    ("sysparm_offset", "1e3"), ("sysparm_limit", "0"), ("sysparm_limit", "x"), ("sysparm_offset", "9" * 5000),
    ("sysparm_display_value", "maybe"), ("sysparm_fields", "nope"), ("sysparm_fields", ",,,"),
    ("sysparm_exclude_reference_link", "maybe"), ("sysparm_exclude_reference_link", "2"),
])
def test_paging_and_shape_parameters_out_of_range_are_a_400_naming_them(as_user, param, value):
    r = as_user("agent").get(f"{CASES}?{param}={value}")
    assert r.status_code == 400, r.get_data(as_text=True)[:300]
    assert param.replace("sysparm_", "") in r.get_data(as_text=True)


def test_a_huge_limit_is_the_maximum_page(as_user):
    assert as_user("agent").get(f"{CASES}?sysparm_limit={2**64}").status_code == 200


@pytest.mark.parametrize("body", [
    '{"short_description": ' + "[" * 1000 + "]" * 1000 + "}",
    '{"short_description": ' + "[" * 40 + "]" * 40 + "}",
    '{"short_description": "x"', "[1, 2]", '"text"', "", "{'single': 'quotes'}", '{"a": "\\ud800"}',
])
def test_a_malformed_json_body_is_a_400(as_user, body):
    r = as_user("agent").client.post(CASES, data=body, headers={**basic("agent"), **JSON})
    assert r.status_code == 400, r.get_data(as_text=True)[:300]


@pytest.mark.parametrize("charset, body, short_description", [
    ("latin-1", '{"short_description": "Café ½"}'.encode("latin-1"), "Café ½"),
    ("UTF-16", '{"short_description": "Grüße"}'.encode("utf-16"), "Grüße"),
    ("utf-8", '{"short_description": "Grüße"}'.encode(), "Grüße"),
])
def test_a_json_body_is_read_in_the_charset_it_declares(as_user, charset, body, short_description):
    r = as_user("agent").client.post(CASES, data=body,
                                     headers={**basic("agent"), "Content-Type": f"application/json; charset={charset}"})
    assert r.status_code == 201, r.get_data(as_text=True)[:300]
    assert r.json["result"]["short_description"] == short_description


@pytest.mark.parametrize("charset, body, status, words", [
    ("klingon", b'{"short_description": "x"}', 415, "charset 'klingon' is not a known character set"),
    ("utf-8", b'{"short_description": "caf\xe9"}', 400, "The body is not utf-8: byte 0xe9 at offset 26"),
])
def test_a_json_body_not_in_its_charset_is_refused_naming_it(as_user, charset, body, status, words):
    agent = as_user("agent")
    before = agent.get(CASES + "?sysparm_limit=1").headers["X-Total-Count"]
    r = agent.client.post(CASES, data=body,
                          headers={**basic("agent"), "Content-Type": f"application/json; charset={charset}"})
    assert (r.status_code, r.json["error"]["message"]) == (status, words)
    assert agent.get(CASES + "?sysparm_limit=1").headers["X-Total-Count"] == before


def test_a_reference_given_as_an_object_is_refused_before_any_rule_reads_it(as_user):
    """The case's before-rule dot-walks recipient_list.type: it must see a parsed value, never the object."""
    for value in ({"type": "accounts"}, ["a"], {"value": {"x": 1}}, 42):
        r = as_user("manager").post(CASES, json={"short_description": "x", "recipient_list": value})
        assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "recipient_list", r.json


def test_a_lone_surrogate_is_refused_naming_the_field(as_user):
    r = as_user("agent").client.post(CASES, data='{"short_description": "bad \\udc80 text"}',
                                     headers={**basic("agent"), **JSON})
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "short_description"
    assert "surrogate" in r.json["error"]["message"]


# -- limits --------------------------------------------------------------------------------------

@pytest.fixture
def small(config, definitions):
    app = create_app(replace(config, max_request_bytes=64 * 1024, max_batch_requests=3, max_import_rows=50),
                     definitions, testing=True)
    return app.test_client()


def test_a_request_larger_than_the_limit_is_413(small):
    r = small.post(CASES, json={"short_description": "x", "description": "y" * 100_000}, headers=basic("agent"))
    assert r.status_code == 413 and r.json["status"] == "failure"


def test_text_and_journal_values_have_a_maximum_length(as_user):
    agent = as_user("agent")
    r = agent.post(CASES, json={"short_description": "x", "description": "y" * (TEXT_LENGTH + 1)})
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "description"
    r = agent.post(CASES, json={"short_description": "x", "comments": "y" * (TEXT_LENGTH + 1)})
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "comments"
    assert agent.post(CASES, json={"short_description": "x", "description": "y" * TEXT_LENGTH}).status_code == 201


def test_a_batch_has_at_most_the_configured_number_of_requests(small):
    item = {"id": "1", "url": "/api/now/table/sys_user?sysparm_limit=1", "method": "GET"}
    ok = small.post("/api/now/batch", json={"rest_requests": [item] * 3}, headers=basic("admin"))
    assert ok.status_code == 200 and len(ok.json["serviced_requests"]) == 3
    r = small.post("/api/now/batch", json={"rest_requests": [item] * 4}, headers=basic("admin"))
    assert r.status_code == 400 and "at most 3" in r.json["error"]["message"]


@pytest.mark.parametrize("item", [1, "x", None, {"id": [1]}, {"id": True}, {"url": "/api/now/table/x"}])
def test_a_batch_item_without_an_id_is_unserviced_not_a_500(as_user, item):
    r = as_user("admin").post("/api/now/batch", json={"rest_requests": [item]})
    assert r.status_code == 200 and r.json["serviced_requests"] == []
    assert r.json["unserviced_requests"] == [None]


@pytest.mark.parametrize("item, message", [
    ({"id": 1}, "url is missing: a Table API path such as /api/now/table/incident"),
    ({"id": 1, "url": 5}, "url is missing: a Table API path such as /api/now/table/incident"),
    ({"id": 1, "url": "https://example.com/api/now/table/x"},
     "url 'https://example.com/api/now/table/x': only Table API requests (/api/now/table/...) run in a batch"),
    ({"id": 1, "url": "/api/now/v1/table/x"},
     "url '/api/now/v1/table/x': only Table API requests (/api/now/table/...) run in a batch"),
    ({"id": 1, "url": "/api/now/batch"}, "url '/api/now/batch': only Table API requests (/api/now/table/...) run in a batch"),
    ({"id": 1, "url": "/api/now/table/x", "method": "TRACE"}, "method 'TRACE' is not one of GET, POST, PUT, PATCH, DELETE"),
    ({"id": 1, "url": "/api/now/table/x", "method": 7}, "method 7 is not one of GET, POST, PUT, PATCH, DELETE"),
    ({"id": 1, "url": "/api/now/table/x", "body": "%%%"}, "body is not base64"),
    ({"id": 1, "url": "/api/now/table/x", "headers": "h"}, 'headers must be a list of {"name": ..., "value": ...} objects'),
    ({"id": 1, "url": "/api/now/table/x", "headers": [{"name": "X", "value": "a\nb"}]},
     'headers must be a list of {"name": ..., "value": ...} objects'),
], ids=["no url", "url not text", "another site", "a versioned path", "a batch in a batch", "an unknown method",
        "a method not text", "a body not base64", "headers not a list", "a header with a line break"])
def test_a_malformed_batch_item_is_answered_as_a_400_saying_what_is_wrong(as_user, item, message):
    """ServiceNow answers each request of a batch; a malformed one is its own 400 (never a 500, never
    silently left out), and the good ones beside it are run."""
    good = {"id": "2", "url": "/api/now/table/sys_user?sysparm_limit=1", "method": "GET"}
    r = as_user("admin").post("/api/now/batch", json={"rest_requests": [item, good]})
    assert r.status_code == 200 and r.json["unserviced_requests"] == []
    bad, ok = r.json["serviced_requests"]
    assert (bad["id"], bad["status_code"], bad["status_text"], ok["id"], ok["status_code"]) == ("1", 400, "Bad Request",
                                                                                                "2", 200)
    answer = json.loads(base64.b64decode(bad["body"]))
    assert answer["status"] == "failure" and answer["error"]["detail"] == "rest_requests item 1"
    assert answer["error"]["message"].startswith(message)


def test_an_import_has_at_most_the_configured_number_of_rows(small):
    author = basic("author")
    list_id = small.post(LISTS, json={"name": "Big", "type": "accounts"}, headers=author).json["result"]["sys_id"]
    text = "number\n" + "".join(f"ACCT{i:07d}\n" for i in range(51))
    r = small.post(f"/api/caseloom/recipients/{list_id}/import", data=text, headers={**author, "Content-Type": "text/csv"})
    assert r.status_code == 400 and "more than 50 rows" in r.json["error"]["message"]
    members = small.get(f"/api/now/table/sn_publications_recipientslist_account_m2m?sysparm_query=recipients_list={list_id}",
                        headers=author).json["result"]
    assert members == []  # nothing half-written


@pytest.mark.parametrize("data", [b"number\n\xff\xfeACCT\n", "number\nÄ\n".encode("latin-1"), b""])
def test_a_csv_that_is_not_utf8_is_refused_in_the_api_and_the_browser(client, as_user, data):
    author = as_user("author")
    list_id = author.post(LISTS, json={"name": "Latin", "type": "accounts"}).json["result"]["sys_id"]
    r = client.post(f"/api/caseloom/recipients/{list_id}/import", data=data,
                    headers={**basic("author"), "Content-Type": "text/csv"})
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "file", r.json
    sign_in(client, "author", "author")
    page = client.get(f"/sn_publications_recipients_list.do?sys_id={list_id}").get_data(as_text=True)
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    r = client.post(f"/ui/members/sn_publications_recipients_list/{list_id}/import",
                    data={"file": (io.BytesIO(data), "customers.csv"), "csrf_token": token},
                    content_type="multipart/form-data", follow_redirects=True)
    assert r.status_code == 200 and "Import refused" in r.get_data(as_text=True)


def test_an_import_is_read_in_slices_and_reports_every_rejected_row_count(as_user):
    author = as_user("author")
    list_id = author.post(LISTS, json={"name": "Slices", "type": "accounts"}).json["result"]["sys_id"]
    accounts = author.get("/api/now/table/customer_account?sysparm_fields=number&sysparm_limit=3").json["result"]
    lines = [a["number"] for a in accounts] + [f"ACCT9{i:06d}" for i in range(12_000)] + [accounts[0]["number"]]
    r = author.client.post(f"/api/caseloom/recipients/{list_id}/import", data="number\n" + "\n".join(lines) + "\n",
                           headers={**basic("author"), "Content-Type": "text/csv"})
    assert r.status_code == 200, r.json
    result = r.json["result"]
    assert result["added"] == 3 and result["identified"] == len(lines)
    assert result["rejected_total"] == 12_001 and len(result["rejected"]) == 1000
    assert result["rejected"][0] == {"row": 5, "reason": "no customer_account record with number 'ACCT9000000'"}
