"""The Definitions area and the layout editors through the Flask test client: browse, check as
you type, review (diff, schema changes, losses) before anything is applied, apply, history and
restore, files edited on disk, lists and forms laid out without YAML, property declarations.
Every test works on a copy of the definitions folder."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import replace

import pytest

from caseloom.definitions.store import version_of
from caseloom.definitions.yamledit import YamlEditError, set_entry, set_top_level
from conftest import DEFINITIONS, basic

ACCOUNT = "tables/customer_account.yaml"
NOTES_LINE = "  notes: {type: text}\n"
TIER_LINE = "  u_tier: {type: choice, label: Tier, choices: {gold: Gold, silver: Silver}}\n"
ACCOUNTS_API = "/api/now/table/customer_account"


@pytest.fixture
def config(config, definitions_copy):
    return replace(config, definitions=str(definitions_copy))


def csrf_token(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


class Session:
    """The browser UI as one signed-in user, through the test client (forms carry the CSRF token)."""

    def __init__(self, client, user: str):
        self.client = client
        page = client.get("/login")
        token = csrf_token(page.get_data(as_text=True))
        client.post("/login", data={"user_name": user, "user_password": user, "csrf_token": token})
        self.token = csrf_token(client.get("/").get_data(as_text=True))

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, data=None, **kw):
        return self.client.post(url, data={**(data or {}), "csrf_token": self.token}, **kw)

    def check(self, path: str, text: str):
        return self.client.post(f"/ui/definitions/check/{path}", data=text, headers={"X-CSRFToken": self.token})

    def change(self, step: str, path: str, text: str | None, base: str, **extra):
        """Review or apply a change of one file as the editor and the review page post it."""
        data = {"path": path, "base": base, "text": text or "", **extra}
        if text is None:
            data["delete"] = path
        return self.post(f"/ui/definitions/{step}", data)


@pytest.fixture
def admin(client):
    return Session(client, "admin")


def stored(admin, path: str) -> str:
    return admin.client.get(f"/api/caseloom/definitions/{path}", headers=basic("admin")).get_data(as_text=True)


def with_tier(text: str) -> str:
    return text.replace(NOTES_LINE, NOTES_LINE + TIER_LINE)


def account_fields(admin) -> set[str]:
    rows = admin.client.get(ACCOUNTS_API + "?sysparm_limit=1", headers=basic("admin")).json["result"]
    return set(rows[0])


def history(admin) -> list[dict]:
    return admin.client.get("/api/caseloom/definitions/history", headers=basic("admin")).json["result"]


def add_tier(admin) -> str:
    """Apply the Tier field to accounts; returns the new text."""
    old = stored(admin, ACCOUNT)
    r = admin.change("apply", ACCOUNT, with_tier(old), version_of(old))
    assert r.status_code == 302, r.get_data(as_text=True)
    return with_tier(old)


def test_the_definitions_area_shows_the_files_by_kind_to_administrators_only(admin, client):
    page = admin.get("/ui/definitions")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for heading in ("Tables", "Properties", "Lifecycles", "Rules", "Member lists", "Notifications",
                    "Time: schedules, SLAs and timers", "Roles and access", "Menus"):
        assert f"<h2>{heading} <span" in html
    assert 'href="/ui/definitions/file/tables/task.yaml"' in html
    time = html[html.index("<h2>Time: schedules, SLAs and timers"):]
    time = time[:time.index("<h2>", 4)]
    for path in ("time/business_hours.yaml", "time/case.yaml", "time/sla_flows.yaml", "time/reminders.yaml"):
        assert f'href="/ui/definitions/file/{path}"' in time, path
    assert ">Definitions</a>" in html  # the top bar links to it
    editor = admin.get(f"/ui/definitions/file/{ACCOUNT}").get_data(as_text=True)
    assert "table: customer_account" in editor and "codemirror/mode/yaml/yaml.js" in editor

    other = Session(client.application.test_client(), "manager")
    assert other.get("/ui/definitions").status_code == 403
    assert other.get(f"/ui/definitions/file/{ACCOUNT}").status_code == 403
    assert ">Definitions</a>" not in other.get("/").get_data(as_text=True)
    assert client.application.test_client().get("/ui/definitions").status_code == 302  # to the sign-in page


def test_check_as_you_type_locates_each_error_in_this_file_and_elsewhere(admin):
    text = stored(admin, ACCOUNT)
    assert admin.check(ACCOUNT, text).json == {"valid": True, "errors": [], "elsewhere": []}
    broken = text.replace("primary_contact: {type: reference, to: customer_contact}",
                          "primary_contact: {type: reference, to: customer_contakt}")
    answer = admin.check(ACCOUNT, broken).json
    assert answer["errors"] == [{"path": ACCOUNT, "line": 8, "column": 42,
                                 "message": "reference to unknown table 'customer_contakt'"}]
    # removing a field that other files use: the errors are theirs, located in their files
    without_name = text.replace("  name: {type: string, max_length: 100, mandatory: true, index: true}\n", "")
    answer = admin.check(ACCOUNT, without_name).json
    assert answer["valid"] is False and answer["elsewhere"]
    assert all(e["path"] != ACCOUNT and e["line"] > 0 for e in answer["elsewhere"])
    assert admin.check(ACCOUNT, "table: [unclosed").json["errors"][0]["message"].startswith("YAML syntax error")


def test_review_shows_the_diff_and_the_schema_changes_and_applies_nothing(admin, definitions_copy, database_url):
    old = stored(admin, ACCOUNT)
    page = admin.change("review", ACCOUNT, with_tier(old), version_of(old))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f"<ins>+{TIER_LINE.rstrip()}</ins>" in html
    assert "<li>add field customer_account.u_tier</li>" in html
    assert "<li>create index ixn_customer_account_u_tier on customer_account</li>" in html
    built_later = "A new index of a table that holds rows is built once the change is applied,\n  without stopping"
    assert (built_later in html) == database_url.startswith("postgresql")  # SQLite builds it in the change
    assert "This change loses data" not in html
    assert "u_tier" not in account_fields(admin)
    assert (definitions_copy / ACCOUNT).read_text() == old and stored(admin, ACCOUNT) == old


def test_apply_migrates_writes_the_folder_records_history_and_serves_the_field(admin, definitions_copy):
    before = len(history(admin))
    new = add_tier(admin)
    assert "u_tier" in account_fields(admin)
    assert (definitions_copy / ACCOUNT).read_text() == new
    entry = history(admin)[0]
    assert len(history(admin)) == before + 1 and entry["path"] == ACCOUNT and entry["user"] == "admin"
    assert entry["action"] == "update"
    flash = admin.get(f"/ui/definitions/file/{ACCOUNT}").get_data(as_text=True)
    assert "Applied tables/customer_account.yaml (updated): add field customer_account.u_tier;" in flash
    form = admin.get("/customer_account.do?sys_id=-1").get_data(as_text=True)
    assert 'id="f_u_tier"' not in form  # on the table, not yet on the form


def test_an_invalid_change_returns_to_the_editor_with_its_errors_and_changes_nothing(admin, definitions_copy):
    old = stored(admin, ACCOUNT)
    broken = old.replace(NOTES_LINE, NOTES_LINE + "  owner: {type: reference, to: nowhere}\n")
    for step in ("review", "apply"):
        page = admin.change(step, ACCOUNT, broken, version_of(old))
        html = page.get_data(as_text=True)
        assert page.status_code == 422
        assert "Line 16, column 32</a>: reference to unknown table &#39;nowhere&#39;" in html
        assert "owner: {type: reference, to: nowhere}" in html  # what was typed is kept
    assert (definitions_copy / ACCOUNT).read_text() == old and stored(admin, ACCOUNT) == old
    assert "owner" not in account_fields(admin)


def test_a_change_that_loses_data_says_what_and_needs_each_loss_confirmed(admin, as_user, runtime):
    new = add_tier(admin)
    account = as_user("admin").get(ACCOUNTS_API + "?sysparm_limit=1").json["result"][0]["sys_id"]
    assert as_user("admin").patch(f"{ACCOUNTS_API}/{account}", json={"u_tier": "gold"}).status_code == 200
    smaller = new.replace(TIER_LINE, "")
    page = admin.change("review", ACCOUNT, smaller, version_of(new))
    html = page.get_data(as_text=True)
    loss = "field customer_account.u_tier and its 1 values"
    assert "This change loses data" in html and f'name="accept" value="{loss}" required' in html
    assert "<li>drop field customer_account.u_tier</li>" in html

    refused = admin.change("apply", ACCOUNT, smaller, version_of(new))
    assert refused.status_code == 409 and "Nothing was changed" in refused.get_data(as_text=True)
    assert "u_tier" in account_fields(admin)
    # a loss that grew after it was confirmed is a new loss
    other = as_user("admin").get(ACCOUNTS_API + "?sysparm_limit=2").json["result"][1]["sys_id"]
    as_user("admin").patch(f"{ACCOUNTS_API}/{other}", json={"u_tier": "silver"})
    assert admin.change("apply", ACCOUNT, smaller, version_of(new), accept=loss).status_code == 409
    assert "u_tier" in account_fields(admin)

    grown = "field customer_account.u_tier and its 2 values"
    assert admin.change("apply", ACCOUNT, smaller, version_of(new), accept=grown).status_code == 302
    assert "u_tier" not in account_fields(admin)


def test_a_change_made_from_a_version_someone_replaced_is_refused(admin):
    old = stored(admin, ACCOUNT)
    add_tier(admin)
    page = admin.change("apply", ACCOUNT, old.replace("label: Account", "label: Customer"), version_of(old))
    html = page.get_data(as_text=True)
    assert page.status_code == 409 and "was changed by someone else after you opened it" in html
    assert "label: Account" in stored(admin, ACCOUNT) and "u_tier" in stored(admin, ACCOUNT)
    # the review now diffs against the current version: the Tier line would go
    assert f"<del>-{TIER_LINE.rstrip()}</del>" in html


def test_an_earlier_version_is_restored_through_the_same_review(admin, definitions_copy):
    original = stored(admin, ACCOUNT)
    add_tier(admin)
    entry = history(admin)[0]
    shown = admin.get(f"/ui/definitions/history/{entry['id']}").get_data(as_text=True)
    assert f"<ins>+{TIER_LINE.rstrip()}</ins>" in shown and "Restore this version" in shown
    assert "tables/customer_account.yaml" in admin.get("/ui/definitions/history").get_data(as_text=True)

    earlier = next(e for e in history(admin)[1:] if e["path"] == ACCOUNT)  # the version init stored
    review = admin.post(f"/ui/definitions/history/{earlier['id']}/restore")
    html = review.get_data(as_text=True)
    assert review.status_code == 200 and f"<del>-{TIER_LINE.rstrip()}</del>" in html
    assert "<li>drop field customer_account.u_tier</li>" in html and 'name="action" value="restore"' in html
    assert "u_tier" in account_fields(admin)  # a review changes nothing

    r = admin.change("apply", ACCOUNT, original, version_of(with_tier(original)), action="restore")
    assert r.status_code == 302
    assert stored(admin, ACCOUNT) == original == (definitions_copy / ACCOUNT).read_text()
    assert history(admin)[0]["action"] == "restore"
    assert "u_tier" not in account_fields(admin)


def test_a_file_edited_on_disk_is_shown_and_applied_the_same_way(admin, definitions_copy):
    (definitions_copy / ACCOUNT).write_text(with_tier((definitions_copy / ACCOUNT).read_text()))
    (definitions_copy / "tables/u_gadget.yaml").write_text("table: u_gadget\nfields:\n  name: {type: string}\n")
    index = admin.get("/ui/definitions").get_data(as_text=True)
    assert "<code>tables/customer_account.yaml</code>: changed on disk" in index
    assert "<code>tables/u_gadget.yaml</code>: new on disk" in index
    assert "u_tier" not in account_fields(admin)

    review = admin.get("/ui/definitions/disk").get_data(as_text=True)
    assert "<li>add field customer_account.u_tier</li>" in review and "<li>create table u_gadget</li>" in review
    files = re.findall(r'name="path" value="([^"]+)"', review)
    texts = [(definitions_copy / p).read_text() for p in files]
    bases = re.findall(r'name="base" value="([^"]*)"', review)
    r = admin.post("/ui/definitions/apply", {"path": files, "base": bases, "text": texts})
    assert r.status_code == 302
    assert "u_tier" in account_fields(admin)
    assert admin.client.get("/api/now/table/u_gadget", headers=basic("admin")).status_code == 200
    assert "Edited on disk" not in admin.get("/ui/definitions").get_data(as_text=True)


def layout(admin, url: str, data: dict) -> str:
    page = admin.post(url, data)
    assert page.status_code == 200, page.get_data(as_text=True)
    return page.get_data(as_text=True)


def apply_reviewed(admin, html: str):
    """Post the review page's Apply form as it is."""
    fields = {"path": re.findall(r'name="path" value="([^"]+)"', html),
              "base": re.findall(r'name="base" value="([^"]*)"', html),
              "text": [html_lib.unescape(t) for t in re.findall(r'<textarea name="text" hidden>\n(.*?)</textarea>', html, re.S)]}
    next_url = re.search(r'name="next" value="([^"]+)"', html)
    if next_url:
        fields["next"] = next_url.group(1)
    return admin.post("/ui/definitions/apply", fields)


def test_the_list_layout_editor_reorders_adds_and_removes_columns(admin, definitions_copy):
    url = "/ui/layout/customer_account/list"
    page = admin.get(url).get_data(as_text=True)
    columns = re.findall(r'name="col" value="([^"]+)"', page)
    assert columns == ["number", "name", "primary_contact", "country", "industry", "active"]
    page = layout(admin, url, {"col": columns, "op": "up:1"})
    columns = re.findall(r'name="col" value="([^"]+)"', page)
    page = layout(admin, url, {"col": columns, "op": "remove:5"})
    columns = re.findall(r'name="col" value="([^"]+)"', page)
    page = layout(admin, url, {"col": columns, "op": "add", "add_col": "city"})
    columns = re.findall(r'name="col" value="([^"]+)"', page)
    assert columns == ["name", "number", "primary_contact", "country", "industry", "city"]
    review = layout(admin, url, {"col": columns, "op": "review"})
    assert "<del>-list: [number, name, primary_contact, country, industry, active]</del>" in review
    assert "<ins>+list: [name, number, primary_contact, country, industry, city]</ins>" in review
    assert review.count("<ins>") == 1 and review.count("<del>") == 1  # every other line kept as it was
    r = apply_reviewed(admin, review)
    assert r.status_code == 302 and r.headers["Location"].endswith("/customer_account_list.do")
    headings = re.findall(r'<th scope="col" [^>]*>\s*<a [^>]*>([^<]+)</a>',
                          admin.get("/customer_account_list.do").get_data(as_text=True))
    assert [h.strip() for h in headings] == ["Name", "Number", "Primary contact", "Country", "Industry", "City"]
    assert "list: [name, number, primary_contact, country, industry, city]" in (definitions_copy / ACCOUNT).read_text()


def test_the_form_layout_editor_moves_fields_into_a_new_section(admin):
    url = "/ui/layout/customer_account/form"
    page = admin.get(url).get_data(as_text=True)
    entries = re.findall(r'name="entry" value="([^"]+)"', page)
    assert entries[:3] == ["section:Account", "field:number", "field:name"]
    entries = re.findall(r'name="entry" value="([^"]+)"', layout(admin, url, {"entry": entries, "op": "remove:10"}))
    assert "field:notes" not in entries
    page = layout(admin, url, {"entry": entries, "op": "add_section", "section_title": "Location"})
    entries = re.findall(r'name="entry" value="([^"]+)"', page)
    while (index := entries.index("section:Location")) > entries.index("field:city"):  # the heading moves above city
        entries = re.findall(r'name="entry" value="([^"]+)"', layout(admin, url, {"entry": entries, "op": f"up:{index}"}))
    assert entries[4:7] == ["field:phone", "section:Location", "field:city"]
    review = layout(admin, url, {"entry": entries, "op": "review"})
    assert "<li>" not in review.split("Schema changes")[1].split("</section>")[0]  # no schema change
    assert apply_reviewed(admin, review).status_code == 302
    form = admin.get("/customer_account.do?sys_id=-1").get_data(as_text=True)
    legends = re.findall(r"<legend>([^<]+)</legend>", form)
    assert legends[:2] == ["Account", "Location"]
    location = form.split("<legend>Location</legend>")[1].split("</fieldset>")[0]
    assert 'id="f_city"' in location and 'id="f_country"' in location and 'id="f_notes"' not in form


def test_add_a_field_from_a_form_and_see_it_there_and_in_the_api(admin, definitions_copy):
    form = admin.get("/customer_account.do?sys_id=-1").get_data(as_text=True)
    assert "/ui/layout/customer_account/field?back=" in form and "Configure the form" in form
    page = admin.get("/ui/layout/customer_account/field?back=/customer_account.do?sys_id%3D-1").get_data(as_text=True)
    assert '<option value="0" selected>Account</option>' in page
    data = {"name": "u_tier", "label": "Tier", "type": "choice", "choices": "gold = Gold\nSilver", "section": "0",
            "list": "on", "back": "/customer_account.do?sys_id=-1"}
    review = layout(admin, "/ui/layout/customer_account/field", data)
    assert f"<ins>+{TIER_LINE.rstrip()}</ins>" in review
    assert "<li>add field customer_account.u_tier</li>" in review
    r = apply_reviewed(admin, review)
    assert r.status_code == 302 and r.headers["Location"].endswith("/customer_account.do?sys_id=-1")
    form = admin.get("/customer_account.do?sys_id=-1").get_data(as_text=True)
    assert '<label for="f_u_tier">Tier</label>' in form and '<option value="silver" >Silver</option>' in form
    assert "u_tier" in account_fields(admin)
    text = (definitions_copy / ACCOUNT).read_text()
    assert TIER_LINE in text and "list: [number, name, primary_contact, country, industry, active, u_tier]" in text


def test_a_new_field_takes_its_description_default_length_flags_and_audit_from_the_form(admin, definitions_copy):
    page = admin.get("/ui/layout/customer_account/field").get_data(as_text=True)
    assert re.search(r'<input id="nf-audit" type="checkbox" name="audit" value="on" [^>]*checked>', page)  # ticked
    data = {"name": "u_code", "label": "Code", "type": "string", "description": "The account's code in billing",
            "default": " ab-1 ", "max_length": "12", "index": "on", "audit": "off", "section": "0",
            "back": "/customer_account.do?sys_id=-1"}
    review = layout(admin, "/ui/layout/customer_account/field", data)  # the box cleared: its hidden "off" alone
    line = ("  u_code: {type: string, label: Code, description: The account's code in billing, max_length: 12, "
            "default: ab-1, index: true, audit: false}")
    assert f"<ins>+{html_lib.escape(line, quote=False)}</ins>" in review.replace("&#39;", "'")
    assert "<li>create index ixn_customer_account_u_code on customer_account</li>" in review
    assert apply_reviewed(admin, review).status_code == 302
    assert line + "\n" in (definitions_copy / ACCOUNT).read_text()
    form = admin.get("/customer_account.do?sys_id=-1").get_data(as_text=True)
    code = re.search(r'<input [^>]*id="f_u_code"[^>]*>', form).group(0)
    assert 'value="ab-1"' in code and 'maxlength="12"' in code and 'aria-describedby="f_u_code__hint"' in code
    assert '<p class="hint" id="f_u_code__hint">The account&#39;s code in billing</p>' in form
    refused = admin.post("/customer_account.do?sys_id=-1", {"name": "Too long", "u_code": "x" * 13})
    code = re.search(r'<input [^>]*id="f_u_code"[^>]*>', refused.get_data(as_text=True)).group(0)
    assert refused.status_code == 422 and 'aria-describedby="f_u_code__hint f_u_code__error"' in code

    api = admin.client
    created = api.post(ACCOUNTS_API, json={"name": "Coded"}, headers=basic("admin")).json["result"]
    assert created["u_code"] == "ab-1"
    api.patch(f"{ACCOUNTS_API}/{created['sys_id']}", json={"u_code": "zz-9", "city": "Lyon"}, headers=basic("admin"))
    audits = api.get(f"/api/now/table/sys_audit?sysparm_query=documentkey={created['sys_id']}^fieldnameINu_code,city"
                     "&sysparm_fields=fieldname,newvalue", headers=basic("admin")).json["result"]
    assert audits == [{"fieldname": "city", "newvalue": "Lyon"}]  # the change of u_code left no audit row


def test_a_new_reference_takes_what_a_delete_does_and_a_new_date_defaults_to_now(admin, definitions_copy):
    data = {"name": "u_owner", "type": "reference", "to": "sys_user", "on_delete": "restrict", "read_only": "on",
            "audit": ["off", "on"], "section": ""}
    review = layout(admin, "/ui/layout/customer_account/field", data)
    assert "<ins>+  u_owner: {type: reference, to: sys_user, read_only: true, on_delete: restrict}</ins>" in review
    data = {"name": "u_since", "type": "date", "default": "now", "mandatory": "on", "section": ""}
    review = layout(admin, "/ui/layout/customer_account/field", data)
    assert "<ins>+  u_since: {type: date, default: now, mandatory: true}</ins>" in review
    assert (definitions_copy / ACCOUNT).read_text() == (DEFINITIONS / ACCOUNT).read_text()  # reviewed, not applied


@pytest.mark.parametrize("data, field, message", [
    ({"name": "Tier", "type": "string"}, "name", "Use lower-case letters"),
    ({"name": "sys_tier", "type": "string"}, "name", "not with sys_"),
    ({"name": "city", "type": "string"}, "name", "Account already has a field named city"),
    ({"name": "u_tier", "type": "colour"}, "type", "Choose a type"),
    ({"name": "u_tier", "type": "choice", "choices": " \n"}, "choices", "A choice field needs choices"),
    ({"name": "u_owner", "type": "reference", "to": "nowhere"}, "to", "Choose the table the field refers to"),
    ({"name": "u_seats", "type": "integer", "default": "many"}, "default", "Default of integer field 'u_seats': "),
    ({"name": "u_tier", "type": "choice", "choices": "gold = Gold", "default": "tin"}, "default",
     "Default 'tin' is not among the choices (gold)"),
    ({"name": "u_code", "type": "string", "default": "now"}, "default",
     "Default: now (the moment a record is created) applies only to fields of type"),
    ({"name": "u_code", "type": "string", "max_length": "0"}, "max_length", "Give a whole number of characters"),
    ({"name": "u_code", "type": "string", "max_length": "twelve"}, "max_length", "Give a whole number of characters"),
    ({"name": "u_code", "type": "string", "max_length": "99999999"}, "max_length", "from 1 to 10,000,000"),
    ({"name": "u_seats", "type": "integer", "max_length": "4"}, "max_length", "A field of type integer has no length"),
    ({"name": "u_code", "type": "string", "on_delete": "restrict"}, "on_delete", "applies to reference fields only"),
    ({"name": "u_owner", "type": "reference", "to": "sys_user", "on_delete": "explode"}, "on_delete",
     "Choose what a delete of the referenced record does"),
])
def test_a_bad_new_field_is_refused_at_its_input(admin, definitions_copy, data, field, message):
    page = admin.post("/ui/layout/customer_account/field", data)
    html = page.get_data(as_text=True)
    assert page.status_code == 422
    assert re.search(rf'<p class="field-error" id="e-{field}" role="alert">[^<]*{re.escape(message)}', html.replace("&#39;", "'"))
    assert (definitions_copy / ACCOUNT).read_text() == (DEFINITIONS / ACCOUNT).read_text()


def test_layout_editors_are_for_application_tables_and_administrators(admin, client):
    assert admin.get("/ui/layout/sys_user/list").status_code == 404  # the platform's own table
    assert "Configure the list" not in admin.get("/sys_user_list.do").get_data(as_text=True)
    agent = Session(client.application.test_client(), "agent")
    assert agent.get("/ui/layout/customer_account/list").status_code == 403
    assert agent.post("/ui/layout/customer_account/field", {"name": "u_x", "type": "string"}).status_code == 403
    assert "Configure the form" not in agent.get("/sn_customerservice_case.do?sys_id=-1").get_data(as_text=True)


def test_a_property_declaration_is_edited_through_the_review(admin, definitions_copy):
    name = "sn_customerservice.parent_child_case_sync"
    properties = admin.get("/ui/properties").get_data(as_text=True)
    assert f'href="/ui/properties/{name}/declaration"' in properties
    assert 'href="/ui/definitions/file/properties/major_issue.yaml?line=' in properties
    page = admin.get(f"/ui/properties/{name}/declaration").get_data(as_text=True)
    assert "<option selected>boolean</option>" in page
    bad = admin.post(f"/ui/properties/{name}/declaration", {"type": "integer", "default": "many"})
    assert bad.status_code == 422 and "Not an integer" in bad.get_data(as_text=True)
    review = layout(admin, f"/ui/properties/{name}/declaration",
                    {"type": "string", "default": "off", "choices": "off\nchildren\nall", "description": "How far to sync."})
    assert "<li>" not in review.split("Schema changes")[1].split("</section>")[0]
    assert apply_reviewed(admin, review).status_code == 302
    text = (definitions_copy / "properties/major_issue.yaml").read_text()
    declared = "    type: string\n    default: 'off'\n    description: How far to sync.\n    choices: ['off', children, all]\n"
    assert f"  {name}:\n{declared}" in text
    assert "description: Fields of a major case copied" in text  # the other property is untouched
    properties = admin.get("/ui/properties").get_data(as_text=True)
    assert "How far to sync." in properties and "<option selected>off</option>" in properties
    saved = admin.post("/ui/properties", {"name": name, "value": "children"})
    assert saved.status_code == 302, saved.get_data(as_text=True)
    assert "<option selected>children</option>" in admin.get("/ui/properties").get_data(as_text=True)


def test_a_property_range_is_shown_kept_and_edited_through_the_declaration(admin, definitions_copy):
    name = "sn_customerservice.similar_case_threshold"
    assert "<span class=\"type\">decimal, 0 to 1</span>" in admin.get("/ui/properties").get_data(as_text=True)
    page = admin.get(f"/ui/properties/{name}/declaration").get_data(as_text=True)
    assert 'name="min" inputmode="decimal" value="0"' in page and 'name="max" inputmode="decimal" value="1"' in page
    for form, key, message in [
        ({"min": "0.8"}, "default", "The default is outside the range (minimum 0.8)."),
        ({"max": "lots"}, "max", "Not a decimal: expected a number such as 0.75, got &#39;lots&#39;."),
        ({"min": "0.9", "max": "0.1"}, "max", "The maximum is below the minimum (0.9)."),
    ]:
        bad = admin.post(f"/ui/properties/{name}/declaration", {"type": "decimal", "default": "0.7", **form})
        assert bad.status_code == 422
        assert re.search(rf'<p class="field-error" id="e-{key}" role="alert">{re.escape(message)}</p>',
                         bad.get_data(as_text=True)), bad.get_data(as_text=True)
    review = layout(admin, f"/ui/properties/{name}/declaration",
                    {"type": "decimal", "default": "0.6", "min": "0.5", "max": "0.95", "description": "How alike."})
    assert apply_reviewed(admin, review).status_code == 302
    text = (definitions_copy / "properties/major_issue.yaml").read_text()
    assert f"  {name}:\n    type: decimal\n    default: 0.6\n    description: How alike.\n    min: 0.5\n    max: 0.95\n" in text
    assert admin.post("/ui/properties", {"name": name, "value": "0.97"}).status_code == 422
    assert "<span class=\"type\">decimal, 0.5 to 0.95</span>" in admin.get("/ui/properties").get_data(as_text=True)


# -- rewriting YAML as text ------------------------------------------------------------------------

COMMENTED = """\
# Widgets: a comment that must survive.
table: u_widget
fields:
  name: {type: string}   # the display
  # size is optional
  size: {type: string}
list: [name]   # columns

# the form
form: [name]
"""


def test_rewrites_keep_comments_and_every_other_line():
    text = set_top_level(COMMENTED, "list", ["name", "size"])
    assert text == COMMENTED.replace("list: [name]   # columns", "list: [name, size]")
    text = set_entry(text, "fields", "colour", {"type": "choice", "choices": {1: "Red", 2: "Blue"}})
    assert "  size: {type: string}\n  colour: {type: choice, choices: {1: Red, 2: Blue}}\nlist:" in text
    assert "# Widgets: a comment that must survive.\n" in text and "  # size is optional\n" in text
    text = set_top_level(text, "form", [{"section": "Main", "fields": ["name"]}, "size"])
    assert text.endswith("# the form\nform:\n  - section: Main\n    fields: [name]\n  - size\n")
    assert set_top_level("table: x\n", "list", ["a"]) == "table: x\nlist: [a]\n"


def test_a_file_that_cannot_be_rewritten_in_place_is_refused():
    with pytest.raises(YamlEditError, match="fields.colour could not be rewritten in place"):
        set_entry("table: x\nfields: {name: {type: string}}\n", "fields", "colour", {"type": "string"})
    with pytest.raises(YamlEditError, match="does not parse"):
        set_top_level("table: [x\n", "list", ["a"])


WIDGET = "table: u_widget\nlabel: Widget\ndisplay: name\nfields:\n  name: {type: string, max_length: 40}\n"


def test_an_index_the_change_could_not_build_is_named_on_the_page(admin, table_held, monkeypatch):
    """PostgreSQL: a new index of a table with rows is built after the change commits; when the table's
    writers keep it from being built, the page says so, and the change is made all the same."""
    from caseloom import indexbuild

    api = {"headers": basic("admin"), "content_type": "application/yaml"}
    assert admin.client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=WIDGET, **api).status_code == 200
    assert admin.client.post("/api/now/table/u_widget", json={"name": "Sprocket"},
                             headers=basic("admin")).status_code == 201
    indexed = WIDGET + "indexes:\n  - [sys_created_on, name]\n"
    monkeypatch.setattr(indexbuild, "BUILD_LOCK_WAIT_MS", 200)
    table_held.write("u_widget")
    try:
        applied = admin.change("apply", "tables/u_widget.yaml", indexed, version_of(WIDGET))
    finally:
        table_held.release()
    assert applied.status_code == 302
    page = html_lib.unescape(admin.get(applied.headers["Location"]).get_data(as_text=True))
    assert ("Applied tables/u_widget.yaml (updated): create index ix_u_widget_sys_created_on_name on u_widget. "
            "Every server process uses it from its next request. Not built yet: the index "
            "ix_u_widget_sys_created_on_name of u_widget was not built (canceling statement due to lock timeout); "
            "the change itself is made") in page
    assert stored(admin, "tables/u_widget.yaml") == indexed
