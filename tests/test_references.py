"""References you can follow and pick, over HTTP: a reference links to its record with a preview card
that respects read access; a reference qualifier narrows the type-ahead to what the form holds now (the
contacts of the chosen account); a records input is a picker of the records that could be added."""

from __future__ import annotations

import html
import re
import shutil

import pytest

from caseloom.bootstrap import initialise
from caseloom.config import Config
from caseloom.definitions import load_folder
from caseloom.runtime import Runtime
from conftest import ROOT, basic, form_token, settle_sqlite, ui_sign_in

CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"
HX = {"HX-Request": "true"}


def rows(client, table: str, query: str, fields: str = "", limit: int = 1000) -> list[dict]:
    params = {"sysparm_query": query, "sysparm_limit": str(limit), "sysparm_exclude_reference_link": "true"}
    if fields:
        params["sysparm_fields"] = fields
    r = client.get(f"/api/now/table/{table}", query_string=params, headers=basic("admin"))
    assert r.status_code == 200, r.json
    return r.json["result"]


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def options(response) -> list[str]:
    return re.findall(r'data-display="([^"]*)"', text(response))


def flashes(page: str) -> list[tuple[str, str]]:
    return [(cls, html.unescape(t)) for cls, t in re.findall(r'<p class="flash ([a-z]+)"[^>]*>([^<]*)</p>', page)]


# -- a reference links to its record, with a preview ---------------------------------------------------

def test_a_read_only_reference_links_to_its_record_with_a_preview(client):
    case = rows(client, CASE, "state=3^accountISNOTEMPTY", "sys_id,account", 1)[0]  # closed: account read-only
    account = rows(client, "customer_account", f"sys_id={case['account']}")[0]
    ui_sign_in(client, "agent")
    page = text(client.get(f"/{CASE}.do?sys_id={case['sys_id']}"))
    output = re.search(r'<output id="f_account">(.*?)</output>', page, re.S).group(1)
    link = re.search(r'<a href="([^"]+)" aria-describedby="(ref-preview-\d+)"\s+hx-get="([^"]+)"[^>]*>([^<]*)</a>',
                     output)
    assert link.group(1) == f"/customer_account.do?sys_id={account['sys_id']}" and link.group(4) == account["name"]
    assert link.group(3) == f"/ui/preview/customer_account/{account['sys_id']}"
    assert f'<span class="ref-preview" role="tooltip" id="{link.group(2)}"></span>' in output


def test_the_preview_shows_the_record_in_words(client):
    account = rows(client, "customer_account", "primary_contactISNOTEMPTY^countryISNOTEMPTY")[0]
    contact = rows(client, "customer_contact", f"sys_id={account['primary_contact']}")[0]
    ui_sign_in(client, "agent")
    r = client.get(f"/ui/preview/customer_account/{account['sys_id']}", headers=HX)
    assert r.status_code == 200
    card = text(r)
    assert re.search(rf"<strong[^>]*>Account {re.escape(account['number'])}</strong>", card)
    labels = re.findall(r'<span class="ref-card-label">([^<]*)</span> <span>([^<]*)</span>', card)
    assert labels[:2] == [("Primary contact", contact["name"]), ("Country", account["country"])]
    assert len(labels) == 4 and account["primary_contact"] not in card  # a display value, never a sys_id


@pytest.mark.parametrize("user, path, status", [
    ("author", f"/ui/preview/{CASE}/CASE", 403),  # may read accounts, not cases
    ("agent", "/ui/preview/sys_audit/CASE", 403),
    ("agent", "/ui/preview/customer_account/" + "0" * 32, 404),
    ("agent", "/ui/preview/no_such_table/CASE", 404),
])
def test_no_preview_without_read_access_or_record(client, user, path, status):
    case = rows(client, CASE, "accountISNOTEMPTY", "sys_id,number,short_description", 1)[0]
    ui_sign_in(client, user)
    r = client.get(path.replace("CASE", case["sys_id"]), headers=HX)
    assert r.status_code == status
    assert case["number"] not in r.get_data(as_text=True) and case["short_description"] not in r.get_data(as_text=True)


# -- a reference qualifier ---------------------------------------------------------------------------

@pytest.fixture
def contacts(client):
    """Two accounts with their contacts (two and one) and a contact of no account, by name."""
    accounts = rows(client, "customer_account", "nameISNOTEMPTY^ORDERBYname", "sys_id,name", 2)
    made = {"acme": accounts[0], "other": accounts[1]}
    for name, account in [("Jane Doe", accounts[0]), ("Jim Doe", accounts[0]), ("Jane Roe", accounts[1]),
                          ("Jane Free", None)]:
        values = {"name": name, "account": account["sys_id"] if account else ""}
        made[name] = client.post("/api/now/table/customer_contact", json=values, headers=basic("admin")).json["result"]
    return made


def names_of(client, account: str) -> set[str]:
    return {c["name"] for c in rows(client, "customer_contact", f"account={account}" if account else "accountISEMPTY",
                                    "name")}


def test_the_contact_type_ahead_offers_the_contacts_of_the_account_on_the_form(client, contacts):
    acme = contacts["acme"]["sys_id"]
    ui_sign_in(client, "agent")
    url = f"/ui/reference/{CASE}/contact"
    chosen = options(client.get(url, query_string={"contact__display": "", "account": acme}, headers=HX))
    assert set(chosen) == names_of(client, acme) and {"Jane Doe", "Jim Doe"} <= set(chosen)
    # typing narrows within the account: the other account's Jane is not offered
    typed = options(client.get(url, query_string={"contact__display": "Jane", "account": acme}, headers=HX))
    assert typed == ["Jane Doe"]
    # no account chosen: as ServiceNow's `account=`, only the contacts without an account
    none = options(client.get(url, query_string={"contact__display": "Jane", "account": ""}, headers=HX))
    assert none == ["Jane Free"]


def test_the_type_ahead_reads_the_stored_record_when_the_form_does_not_send_the_field(client, contacts):
    acme = contacts["acme"]["sys_id"]
    case = rows(client, CASE, f"account={acme}", "sys_id", 1)[0]
    ui_sign_in(client, "agent")
    form = text(client.get(f"/{CASE}.do?sys_id={case['sys_id']}"))
    assert f'hx-get="/ui/reference/{CASE}/contact?sys_id={case["sys_id"]}"' in form
    assert 'hx-include="closest form"' in form
    r = client.get(f"/ui/reference/{CASE}/contact", query_string={"sys_id": case["sys_id"], "q": "Jane"}, headers=HX)
    assert options(r) == ["Jane Doe"]


def test_a_contact_typed_by_name_outside_the_account_is_refused_in_words(client, contacts):
    acme = contacts["acme"]
    case = rows(client, CASE, f"account={acme['sys_id']}", "sys_id", 1)[0]
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    r = client.post(url, data={"contact": "", "contact__display": "Jane Roe", "csrf_token": form_token(client, url)})
    assert r.status_code == 422
    assert f"Contact: no contact named 'Jane Roe' where Account is {acme['name']}" in text(r)
    r = client.post(url, data={"contact": "", "contact__display": "Jane Doe", "csrf_token": form_token(client, url)})
    assert r.status_code == 302
    saved = rows(client, CASE, f"sys_id={case['sys_id']}", "contact")[0]
    assert saved["contact"] == contacts["Jane Doe"]["sys_id"]


def test_a_reference_typed_by_a_name_no_record_has_is_shown_with_every_other_mistake(client, contacts):
    """Each field's mistake at its field, all at once: the unknown name does not hide the others."""
    acme = contacts["acme"]
    case = rows(client, CASE, f"account={acme['sys_id']}", "sys_id", 1)[0]
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    r = client.post(url, data={"contact": "", "contact__display": "Jane Roe", "priority": "urgent",
                               "short_description": "", "csrf_token": form_token(client, url)})
    assert r.status_code == 422
    errors = dict(re.findall(r'<p class="field-error" id="f_(\w+)__error" role="alert">([^<]*)</p>',
                             r.get_data(as_text=True).replace("&#39;", "'")))
    assert errors == {"contact": f"Contact: no contact named 'Jane Roe' where Account is {acme['name']}",
                      "priority": "Priority: expected a whole number, got 'urgent'",
                      "short_description": "Short description is mandatory"}
    # what was typed stays in its box to be put right: the name, not an empty box
    assert 'name="contact__display" value="Jane Roe"' in r.get_data(as_text=True)


def test_without_javascript_an_account_and_its_contact_typed_together_are_resolved(client, contacts):
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id=-1"
    r = client.post(url, data={"short_description": "Printer on fire", "account": "",
                               "account__display": contacts["other"]["name"], "contact": "",
                               "contact__display": "Jane Roe", "csrf_token": form_token(client, url)})
    assert r.status_code == 302, text(r)
    made = rows(client, CASE, "short_description=Printer on fire", "account,contact")[0]
    assert made == {"account": contacts["other"]["sys_id"], "contact": contacts["Jane Roe"]["sys_id"]}


# -- picking records for an action -------------------------------------------------------------------

@pytest.fixture
def major(client):
    for i in range(12):  # enough open cases for a second page of the picker
        client.post(CASES, json={"short_description": f"Printer jam {i}", "state": 1}, headers=basic("agent"))
    r = client.post(CASES, json={"short_description": "Mail outage", "state": 10, "major_case_state": "proposed"},
                    headers=basic("agent"))
    major = r.json["result"]
    r = client.post(f"/api/caseloom/actions/{CASE}/{major['sys_id']}/accept_major_case", json={},
                    headers=basic("mim"))
    assert r.status_code == 200, r.json
    return major


def picked(page: str) -> list[str]:
    """The records a picker offers, by number: the labels of its checkboxes."""
    return re.findall(r'<td><label for="[^"]+">(CS\d+)</label></td>', page)


def addable(client, major) -> list[str]:
    query = f"sys_id!={major['sys_id']}^parentISEMPTY^major_case_stateNOTINproposed,accepted^stateNOTIN6,3,7"
    return [c["number"] for c in rows(client, CASE, query + "^ORDERBYDESCnumber", "number")]


def test_the_picker_offers_only_the_cases_that_could_be_added(client, major):
    child = rows(client, CASE, "parentISEMPTY^state=10^major_case_stateISEMPTY", "sys_id,number", 1)[0]
    client.patch(f"{CASES}/{child['sys_id']}", json={"parent": major["sys_id"]}, headers=basic("agent"))
    closed = rows(client, CASE, "state=3^parentISEMPTY", "number", 1)[0]["number"]
    resolved = rows(client, CASE, "state=6^parentISEMPTY", "number", 1)[0]["number"]
    ui_sign_in(client, "agent")
    page = text(client.get(f"/ui/action/{CASE}/{major['sys_id']}/add_child_cases"))
    shown = picked(page)
    expected = addable(client, major)
    assert shown == expected[:10] and len(expected) > 10
    assert f"{len(expected)} case records can be added, 1–10 shown" in page
    assert not {major["number"], child["number"], closed, resolved} & set(shown)
    assert re.search(r'<th scope="col">Number</th><th scope="col">Short description</th><th scope="col">State</th>',
                     page)
    assert "<td>Open</td>" in page or "<td>New</td>" in page  # states in words


def test_a_search_narrows_the_picker_and_pages_it(client, major):
    expected = addable(client, major)
    target = expected[3]
    ui_sign_in(client, "agent")
    url = f"/ui/action/{CASE}/{major['sys_id']}/add_child_cases"
    page = text(client.get(url, query_string={"cases__q": target}))
    assert picked(page) == [target] and 'value="' + target + '"' in page  # the search box keeps what was typed
    second = text(client.get(url, query_string={"cases__first": "11"}))
    assert picked(second) == expected[10:20]
    assert "No case that can be added matches “nothing like this”." in text(
        client.get(url, query_string={"cases__q": "nothing like this"}))


def test_the_picker_fragment_keeps_the_ticked_cases(client, major):
    expected = addable(client, major)
    ui_sign_in(client, "agent")
    fragment = f"/ui/pick/{CASE}/{major['sys_id']}/add_child_cases/cases"
    sys_id = rows(client, CASE, f"number={expected[5]}", "sys_id")[0]["sys_id"]
    r = client.get(fragment, query_string={"prefix": "dlg-add_child_cases", "cases__q": expected[0],
                                           "cases": [sys_id]}, headers=HX)
    page = text(r)
    assert r.status_code == 200 and "<html" not in page  # the rows alone
    assert picked(page) == [expected[5], expected[0]]  # the ticked one first, then what the search found
    assert f'id="dlg-add_child_cases-cases-{sys_id}" name="cases" value="{sys_id}" checked' in page
    assert client.get(fragment.replace("/cases", "/reason"), headers=HX).status_code == 404
    assert client.get(fragment.replace("add_child_cases", "propose_major_case"), headers=HX).status_code == 404


def test_posting_ticked_cases_adds_them_and_names_them(client, major):
    chosen = addable(client, major)[:3]
    ids = [rows(client, CASE, f"number={n}", "sys_id")[0]["sys_id"] for n in chosen]
    ui_sign_in(client, "agent")
    url = f"/ui/action/{CASE}/{major['sys_id']}/add_child_cases"
    token = re.search(r'name="csrf_token" value="([^"]+)"', text(client.get(url))).group(1)
    r = client.post(url, data={"cases": ids, "csrf_token": token})
    assert r.status_code == 302
    message = flashes(client.get(r.headers["Location"]).get_data(as_text=True))
    assert message == [("message", f"Add child cases: done on case {major['number']}. 3 of 3 selected cases were "
                                   f"added.")]
    assert sorted(c["number"] for c in rows(client, CASE, f"parent={major['sys_id']}", "number")) == sorted(chosen)


@pytest.mark.parametrize("separator", ["\n", ", "])
def test_numbers_typed_the_old_way_are_still_accepted(client, major, separator):
    chosen = addable(client, major)[:2]
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={major['sys_id']}"
    r = client.post(f"/ui/action/{CASE}/{major['sys_id']}/add_child_cases",
                    data={"cases": separator.join([*chosen, major["number"]]), "csrf_token": form_token(client, url)})
    assert r.status_code == 302
    message = flashes(client.get(url).get_data(as_text=True))[0][1]
    assert "2 of 3 selected cases were added" in message and "it is the major case itself" in message


def test_a_typed_number_no_case_has_is_refused_naming_it_and_nothing_is_added(client, major):
    chosen = addable(client, major)[:1]
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={major['sys_id']}"
    r = client.post(f"/ui/action/{CASE}/{major['sys_id']}/add_child_cases",
                    data={"cases": f"{chosen[0]}, CS9999999", "csrf_token": form_token(client, url)})
    assert r.status_code == 302
    assert flashes(client.get(url).get_data(as_text=True)) == [
        ("error", "Add child cases: not done. cases: no case numbered 'CS9999999'")]
    assert chosen[0] not in [c["number"] for c in rows(client, CASE, f"parent={major['sys_id']}", "number")]


def test_the_form_dialog_loads_its_picker_when_opened(client, major):
    ui_sign_in(client, "agent")
    form = text(client.get(f"/{CASE}.do?sys_id={major['sys_id']}"))
    dialog = form[form.index('<dialog id="dlg-add_child_cases"'):]
    dialog = dialog[:dialog.index("</dialog>")]
    assert (f'hx-get="/ui/pick/{CASE}/{major["sys_id"]}/add_child_cases/cases?prefix=dlg-add_child_cases" '
            f'hx-trigger="intersect once"') in dialog
    assert "<textarea" not in dialog and "<legend>Cases" in dialog


# -- the same, generically, in the second application ---------------------------------------------------

LOANS = ROOT / "tests" / "apps" / "loans"


@pytest.fixture(scope="module")
def loans_database(tmp_path_factory):
    """The loans app initialised with its demo data, once for this module (SQLite)."""
    base = tmp_path_factory.mktemp("loans_refs")
    definitions = load_folder(LOANS)
    config = Config(database_url=f"sqlite:///{base}/loans.db", definitions=str(LOANS),
                    scripts=str(LOANS / "scripts"), instance=str(base / "instance"))
    runtime = Runtime(config, definitions)
    initialise(config, definitions, demo=True, runtime=runtime)
    runtime.engine.dispose()
    settle_sqlite(base / "loans.db")
    return base / "loans.db", definitions


@pytest.fixture
def loans_client(loans_database, tmp_path):
    from caseloom.web import create_app, db

    source, definitions = loans_database
    shutil.copyfile(source, tmp_path / "loans.db")
    config = Config(database_url=f"sqlite:///{tmp_path / 'loans.db'}", definitions=str(LOANS),
                    scripts=str(LOANS / "scripts"), instance=str(tmp_path / "instance"), ui=str(ROOT / "ui"),
                    secret_key="test-secret", queue=f"sqlite:///{tmp_path / 'queue.db'}")
    app = create_app(config, definitions, testing=True)
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def test_a_loan_requests_asset_picker_offers_the_assets_at_its_pick_up_location(loans_client):
    client = loans_client
    answer = client.get("/api/now/table/loan_asset", headers=basic("admin", "admin"),
                        query_string={"sysparm_fields": "name,location", "sysparm_exclude_reference_link": "true"})
    assert answer.status_code == 200, answer.json
    assets = answer.json["result"]
    by_location: dict[str, set[str]] = {}
    for a in assets:
        by_location.setdefault(a["location"], set()).add(a["name"])
    ui_sign_in(client, "theo", "theo")
    for location, names in by_location.items():
        r = client.get("/ui/reference/loan_request/asset", query_string={"asset__display": "", "location": location},
                       headers=HX)
        assert set(options(r)) == names
    # a task's asset has no qualifier: every asset
    r = client.get("/ui/reference/loan_task/asset", query_string={"asset__display": "", "location": location},
                   headers=HX)
    assert len(options(r)) == min(10, len(assets))
