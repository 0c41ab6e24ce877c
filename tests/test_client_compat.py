"""ServiceNow's own Python client (pysnc) works unchanged against a real Caseloom server.

pysnc only talks HTTPS (it refuses an http:// instance), as ServiceNow instances do, so the app
is served over TLS with a throwaway self-signed certificate that the client is told to trust.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import threading
from urllib.parse import parse_qs

import pytest
from werkzeug.serving import make_server

from caseloom.query import parse_encoded

pysnc = pytest.importorskip("pysnc")
from pysnc import ServiceNowClient  # noqa: E402
from pysnc.exceptions import InstanceException, RequestException, RoleException  # noqa: E402

CASE = "sn_customerservice_case"

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate for the HTTPS server pysnc requires")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


class Recorder:
    """WSGI middleware remembering (method, path, query parameters) of every request."""

    def __init__(self, app):
        self.app, self.calls = app, []

    def __call__(self, environ, start_response):
        self.calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"],
                           parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)))
        return self.app(environ, start_response)


@pytest.fixture
def server(app, certificate):
    """The app served over HTTPS on a free port of 127.0.0.1, in a background thread."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    recorder = Recorder(app)
    httpd = make_server("127.0.0.1", 0, recorder, threaded=True, ssl_context=context)
    thread = threading.Thread(target=httpd.serve_forever, name="caseloom-https", daemon=True)
    thread.start()
    httpd.instance, httpd.calls = f"https://127.0.0.1:{httpd.server_port}", recorder.calls
    yield httpd
    httpd.shutdown()
    thread.join(10)
    httpd.server_close()


@pytest.fixture
def trust(certificate, monkeypatch):
    """The CA file to verify the server with. requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a
    session's own `verify` (pysnc merges the environment into every request), so they are unset here."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return str(certificate[0])


@pytest.fixture
def snc(server, trust):
    return ServiceNowClient(server.instance, ("admin", "admin"), verify=trust, auto_retry=False)


def expected(runtime, query: str) -> list[dict]:
    with runtime.transaction() as service:
        return service.query(CASE, parse_encoded(query), ["sys_id", "number", "state"])


def test_pysnc_needs_an_https_instance():
    with pytest.raises(InstanceException):
        ServiceNowClient("http://127.0.0.1:5000", ("admin", "admin"))


def test_query_with_an_encoded_query(snc, runtime):
    want = expected(runtime, "state=1^ORstate=10^ORDERBYnumber")
    assert want
    gr = snc.GlideRecord(CASE)
    gr.add_encoded_query("state=1^ORstate=10")
    gr.order_by("number")
    gr.query()
    assert len(gr) == gr.get_row_count() == len(want)
    got = [(r.get_value("number"), r.get_value("state"), r.get_display_value("state")) for r in gr]
    assert got == [(w["number"], str(w["state"]), {1: "New", 10: "Open"}[w["state"]]) for w in want]


def test_a_date_range_as_servicenow_s_list_filter_writes_it(snc, runtime):
    """ServiceNow's filters write "on today" and "between" as ON and BETWEEN with dynamic ends: the same
    records as the two comparisons they mean. A case is opened now, so that today has one whatever the hour
    (the demo's cases are opened at hours before the run, none of them today just after midnight)."""
    with runtime.transaction() as service:
        service.insert(CASE, {"short_description": "Opened today"})
    today = "javascript:gs.beginningOfToday()@javascript:gs.endOfToday()"
    want = {w["number"] for w in expected(runtime, "opened_at>=javascript:gs.beginningOfToday()"
                                                   "^opened_at<=javascript:gs.endOfToday()")}
    assert want  # at least the case opened above
    for query in (f"opened_atONToday@{today}", f"opened_atBETWEEN{today}"):
        gr = snc.GlideRecord(CASE)
        gr.add_encoded_query(query)
        gr.query()
        assert {r.get_value("number") for r in gr} == want, query
    gr = snc.GlideRecord(CASE)
    gr.add_encoded_query(f"opened_atNOTONToday@{today}")
    gr.query()
    assert not want & {r.get_value("number") for r in gr} and len(gr) == len(expected(runtime, "")) - len(want)


def test_query_pages_through_everything_in_batches(snc, server, runtime):
    want = {w["sys_id"] for w in expected(runtime, "")}
    assert len(want) > 7
    gr = snc.GlideRecord(CASE, batch_size=3)
    gr.fields = ["sys_id", "number"]
    gr.query()
    seen = [r.get_value("sys_id") for r in gr]
    assert len(seen) == len(set(seen)) and set(seen) == want
    offsets = [int(q["sysparm_offset"][0]) for m, p, q in server.calls if m == "GET" and p.endswith("/" + CASE)]
    assert offsets == list(range(0, len(want), 3))


def test_get_by_field(snc, runtime):
    case = expected(runtime, "ORDERBYnumber")[0]
    gr = snc.GlideRecord(CASE)
    assert gr.get("number", case["number"])
    assert gr.sys_id == case["sys_id"]


def test_suppressing_the_pagination_header_keeps_the_total(server, snc, runtime):
    """Exactly the list request pysnc makes. ServiceNow drops only the Link header for
    sysparm_suppress_pagination_header=true; pysnc then reads X-Total-Count to know when to stop paging."""
    total = len(expected(runtime, "state=1"))
    response = snc.session.get(f"{server.instance}/api/now/table/{CASE}", params={
        "sysparm_query": "state=1^ORDERBYsys_id", "sysparm_display_value": "all",
        "sysparm_exclude_reference_link": "true", "sysparm_limit": 2, "sysparm_offset": 0,
        "sysparm_suppress_pagination_header": "true"})
    assert response.status_code == 200 and len(response.json()["result"]) == 2
    assert response.json()["result"][0]["state"] == {"display_value": "New", "value": "1"}
    assert "Link" not in response.headers
    assert response.headers["X-Total-Count"] == str(total)


def test_get_one_record_with_display_values(snc, runtime):
    with runtime.transaction() as service:
        case = service.query(CASE, parse_encoded("accountISNOTEMPTY^state=10^ORDERBYnumber"), limit=1)[0]
        account = service.get("customer_account", case["account"])
    gr = snc.GlideRecord(CASE)
    assert gr.get(case["sys_id"])
    assert gr.get_value("number") == case["number"]
    assert gr.get_value("state") == "10" and gr.get_display_value("state") == "Open"
    assert gr.get_value("account") == case["account"]
    assert gr.get_display_value("account") == account["name"]
    assert gr.get_value("sys_mod_count") == str(case["sys_mod_count"])
    assert not snc.GlideRecord(CASE).get("0" * 32)


def test_insert_update_delete(snc, runtime):
    gr = snc.GlideRecord(CASE)
    gr.initialize()
    gr.short_description = "Raised through pysnc"
    gr.priority = "2"
    gr.comments = "Opened from a script"
    sys_id = gr.insert()
    assert re.fullmatch(r"[0-9a-f]{32}", str(sys_id))
    assert re.fullmatch(r"CS\d{7}", gr.get_value("number"))
    assert gr.get_value("state") == "1" and gr.get_display_value("priority") == "2 - High"
    assert gr.get_value("sys_created_by") == "admin"

    gr.state = "10"
    gr.work_notes = "Working on it"
    assert gr.update() == sys_id
    assert gr.get_value("state") == "10" and gr.get_value("sys_mod_count") == "1"
    assert gr.get_value("priority") == "2"  # untouched fields are not sent, so they stay

    with runtime.transaction() as service:
        stored = service.get(CASE, str(sys_id))
        notes = [(j["element"], j["value"]) for j in service.journal(CASE, str(sys_id))]
    assert (stored["state"], stored["priority"], stored["sys_updated_by"]) == (10, 2, "admin")
    assert sorted(notes) == [("comments", "Opened from a script"), ("work_notes", "Working on it")]

    again = snc.GlideRecord(CASE)
    assert again.get(str(sys_id)) and again.get_value("short_description") == "Raised through pysnc"
    assert again.delete()
    assert not snc.GlideRecord(CASE).get(str(sys_id))
    with runtime.transaction() as service:
        assert service.get(CASE, str(sys_id)) is None


def test_errors_come_back_as_pysnc_exceptions(snc, server, trust):
    gr = snc.GlideRecord(CASE)
    gr.initialize()
    gr.short_description = "Bad priority"
    gr.priority = "9"
    with pytest.raises(RequestException) as caught:
        gr.insert()
    assert "priority" in str(caught.value)

    agent = ServiceNowClient(server.instance, ("agent", "agent"), verify=trust, auto_retry=False)
    case = agent.GlideRecord(CASE)
    case.initialize()
    case.short_description = "Agents may create"
    sys_id = case.insert()
    assert sys_id
    with pytest.raises(RoleException):
        case.delete()  # but not delete
    assert agent.GlideRecord(CASE).get(str(sys_id))


def test_update_multiple(snc, runtime):
    with runtime.transaction() as service:
        service.insert_many(CASE, [{"short_description": "Bulk edit", "priority": "4"} for _ in range(3)])
    gr = snc.GlideRecord(CASE)
    gr.add_query("short_description", "Bulk edit")
    gr.query()
    for record in gr:
        record.priority = "1"
    assert gr.update_multiple()
    with runtime.transaction() as service:
        assert {r["priority"] for r in service.query(CASE, parse_encoded("short_description=Bulk edit"))} == {1}
