"""Field types carry capability flags (hidden, queryable, sortable, listable, journal), and every surface
asks the flag. A table with one field of every registered type: a hidden field's value (a password, and
its hash) shows on no surface; a non-queryable or non-sortable field is refused with a 400 naming it."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import sqlalchemy as sa

from caseloom.definitions import DefinitionErrors, load_sources
from caseloom.definitions.loader import read_sources
from caseloom.fieldtypes import FIELD_TYPES, FieldType, register
from small_app import small_app

VAULT = "/api/now/table/x_vault"
SECRET, NEW_SECRET = "Zq9-open-sesame", "Zq9-new-sesame"
USER = "{user}"  # a reference sample: the sys_id of the user `keeper`, known once the app exists

# type -> (its YAML declaration, the value written, the value the Table API reads back, its display value)
SAMPLES = {
    "string": ("{type: string}", "Str-7f3a", "Str-7f3a", "Str-7f3a"),
    "text": ("{type: text}", "Text-7f3a", "Text-7f3a", "Text-7f3a"),
    "integer": ("{type: integer}", 73519, "73519", "73519"),
    "duration": ("{type: duration}", "2h 30m", "9000", "2 Hours 30 Minutes"),
    "decimal": ("{type: decimal}", "8642.5", "8642.5", "8642.5"),
    "boolean": ("{type: boolean}", True, "true", "true"),
    "date": ("{type: date}", "2031-04-05", "2031-04-05", "2031-04-05"),
    "datetime": ("{type: datetime}", "2031-04-05 06:07:08", "2031-04-05 06:07:08", "2031-04-05 06:07:08"),
    "choice": ("{type: choice, choices: {alpha: Alpha, beta: Beta}}", "beta", "beta", "Beta"),
    "reference": ("{type: reference, to: sys_user}", USER, USER, "Keeper Smith"),
    "journal": ("{type: journal}", "Journal-7f3a", "", ""),
    "email": ("{type: email}", "e7f3a@example.com", "e7f3a@example.com", "e7f3a@example.com"),
    "url": ("{type: url}", "https://example.com/u7f3a", "https://example.com/u7f3a", "https://example.com/u7f3a"),
    "password": ("{type: password}", SECRET, None, None),
}


def field_of(type_name: str) -> str:
    return f"f_{type_name}"


TABLE = "table: x_vault\nlabel: Vault\ndisplay: name\nfields:\n  name: {type: string}\n" + "".join(
    f"  {field_of(t)}: {decl}\n" for t, (decl, *_) in SAMPLES.items()) + (
    "list: [name, f_string, f_password]\n")  # a declared list that names the password
FILES = {
    "tables/x_vault.yaml": TABLE,
    "roles.yaml": "roles:\n  x_keeper: {}\n",
    "access/x.yaml": "access:\n  - {table: x_vault, operations: [read, create, write, delete], roles: [x_keeper]}\n"
                     "  - {table: sys_user, operations: [read], roles: [x_keeper]}\n"
                     "  - {table: sys_audit, operations: [read], roles: [x_keeper]}\n"
                     "  - {table: sys_journal_field, operations: [read], roles: [x_keeper]}\n",
}


def test_every_registered_field_type_has_a_sample():
    assert set(SAMPLES) == set(FIELD_TYPES), "add the new type to SAMPLES: this test must cover it"


@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
def test_every_registered_type_has_consistent_flags(name):
    ftype = FIELD_TYPES[name]
    assert ftype.problems() == []
    assert not ftype.hidden or ftype.render("anything") == ""  # nothing to read even where a type renders
    assert ftype.journal == (ftype.column is None)  # the one kind of field that is no column


@pytest.mark.parametrize("flags, message", [
    ({"hidden": True}, "field type 'x_secret': a hidden type cannot be queryable; a hidden type cannot be sortable; "
                       "a hidden type cannot be listable"),
    ({"hidden": True, "queryable": False, "sortable": False, "listable": False, "searchable": True},
     "field type 'x_secret': a hidden type cannot be searchable"),
    ({"column": None}, "field type 'x_secret': a type with no column cannot be queryable; a type with no column "
                       "cannot be sortable; a type with no column cannot be listable"),
])
def test_a_field_type_with_contradicting_flags_is_refused(flags, message):
    ftype = replace(FIELD_TYPES["string"], name="x_secret", **flags)
    with pytest.raises(ValueError, match=re.escape(message)):
        register(ftype)
    assert "x_secret" not in FIELD_TYPES


# -- a record with every type ---------------------------------------------------------------------

class Vault:
    """The app, a record with every sample (its password and name then changed, so audit rows hold old
    and new values), and the stored hashes that must never show."""

    def __init__(self, small):
        self.small, self.api = small, small.api("keeper")
        self.user = self.api.get("/api/now/table/sys_user?sysparm_query=user_name=keeper").json["result"][0]["sys_id"]
        with small.runtime.transaction() as service:
            service.update("sys_user", self.user, {"name": "Keeper Smith"})
        values = {field_of(t): (self.user if value == USER else value) for t, (_, value, *_) in SAMPLES.items()}
        created = self.api.post(VAULT, json={"name": "Strongroom", **values})
        assert created.status_code == 201, created.json
        self.sys_id = created.json["result"]["sys_id"]
        changed = self.api.patch(f"{VAULT}/{self.sys_id}", json={"f_password": NEW_SECRET, "name": "Vault 7f3b"})
        assert changed.status_code == 200, changed.json
        self.hashes = self._hashes()

    def _hashes(self) -> list[str]:
        """The vault's password hash and the keeper's (a dot-walk through f_reference reaches it)."""
        storage, engine = self.small.runtime.storage, self.small.runtime.engine
        vault, users = storage.physical("x_vault"), storage.physical("sys_user")
        with engine.connect() as conn:
            mine = conn.execute(sa.select(vault.c.f_password).where(vault.c.sys_id == self.sys_id)).scalar_one()
            keeper = conn.execute(sa.select(users.c.user_password).where(users.c.sys_id == self.user)).scalar_one()
        assert mine and keeper and NEW_SECRET not in mine
        return [mine, keeper]

    def text(self, path: str) -> str:
        response = self.api.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)

    def page(self, path: str) -> str:
        response = self.small.client.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)

    def leaks(self, text: str) -> list[str]:
        """Whatever of the secrets and hashes `text` shows (the hashes also without their `method$salt$` head)."""
        probes = [SECRET, NEW_SECRET, *self.hashes, *(h.rsplit("$", 1)[-1] for h in self.hashes)]
        return [p for p in probes if p in text]


@pytest.fixture
def vault(config, tmp_path):
    with small_app(config, tmp_path, FILES, {"keeper": ["x_keeper"]}) as small:
        made = Vault(small)
        small.sign_in("keeper")
        yield made


# Each surface, and a value that must show on it (so the surface is shown to read the record at all).
SURFACES = {
    "Table API list, display values false": (lambda v: v.text(f"{VAULT}?sysparm_display_value=false"), "Str-7f3a"),
    "Table API list, display values true": (lambda v: v.text(f"{VAULT}?sysparm_display_value=true"), "Beta"),
    "Table API list, display values all": (lambda v: v.text(f"{VAULT}?sysparm_display_value=all"), "Beta"),
    "Table API record, sysparm_fields naming it": (
        lambda v: v.text(f"{VAULT}/{v.sys_id}?sysparm_fields=name,f_password&sysparm_display_value=all"),
        "Vault 7f3b"),
    "Table API, a dot-walk to a user's password": (
        lambda v: v.text(f"{VAULT}/{v.sys_id}?sysparm_fields=f_reference.user_password,f_reference.user_name"),
        "keeper"),
    "list page": (lambda v: v.page("/x_vault_list.do"), "Str-7f3a"),
    "form page (with its history)": (lambda v: v.page(f"/x_vault.do?sys_id={v.sys_id}"), "Strongroom"),
    "sys_audit rows": (lambda v: v.text(f"/api/now/table/sys_audit?sysparm_query=documentkey={v.sys_id}"),
                       "Strongroom"),
    "journal entries": (lambda v: v.text(f"/api/now/table/sys_journal_field?sysparm_query=element_id={v.sys_id}"),
                        "Journal-7f3a"),
    "OpenAPI document": (lambda v: v.text("/api/caseloom/openapi.json"), "f_string"),
}


@pytest.mark.parametrize("surface", SURFACES)
def test_no_surface_shows_a_hidden_value(vault, surface):
    read, shown = SURFACES[surface]
    text = read(vault)
    assert shown in text
    assert vault.leaks(text) == []


def test_an_audited_change_of_a_hidden_value_says_only_that_it_changed(vault):
    rows = vault.api.get(f"/api/now/table/sys_audit?sysparm_query=documentkey={vault.sys_id}^fieldname=f_password"
                         "&sysparm_fields=oldvalue,newvalue").json["result"]
    assert rows == [{"oldvalue": "*", "newvalue": "*"}]
    assert vault.api.delete(f"{VAULT}/{vault.sys_id}").status_code == 204
    deleted = vault.text(f"/api/now/table/sys_audit?sysparm_query=documentkey={vault.sys_id}^fieldname=DELETED")
    assert "Vault 7f3b" in deleted and vault.leaks(deleted) == []


@pytest.mark.parametrize("mode", ["false", "true", "all"])
def test_every_type_reads_back_unless_it_is_hidden(vault, mode):
    record = vault.api.get(f"{VAULT}/{vault.sys_id}?sysparm_display_value={mode}"
                           "&sysparm_exclude_reference_link=true").json["result"]
    for type_name, (_, _, value, display) in SAMPLES.items():
        name = field_of(type_name)
        if FIELD_TYPES[type_name].hidden:
            assert name not in record, f"{type_name} is hidden"
            continue
        value = vault.user if value == USER else value
        expected = {"false": value, "true": display, "all": {"display_value": display, "value": value}}[mode]
        assert record[name] == expected, type_name


def test_a_form_shows_no_hidden_value_and_no_filled_input_for_it(vault):
    page = vault.page(f"/x_vault.do?sys_id={vault.sys_id}")
    inputs = re.findall(r'<input[^>]*name="f_password"[^>]*>', page)
    assert all('value=""' in i or "value=" not in i for i in inputs)
    assert 'value="Str-7f3a"' in page


def test_the_list_page_shows_no_column_for_a_hidden_field_it_declares(vault):
    page = vault.page("/x_vault_list.do")
    headers = re.findall(r'<th scope="col"[^>]*>\s*<a [^>]*>([^<]*)</a>', page)
    assert [h.strip() for h in headers] == ["Name", "F string"]
    assert "F password" not in re.search(r'<select[^>]*name="f_field".*?</select>', page, re.S).group(0)


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_filtering_and_sorting_follow_the_flags(vault, type_name):
    name, ftype = field_of(type_name), FIELD_TYPES[type_name]
    # (a field with no column, a journal, cannot be found as a column to sort on either: "queried")
    for flag, query, verb in (("queryable", f"{name}ISNOTEMPTY", "queried"),
                              ("sortable", f"ORDERBY{name}", "sorted on" if ftype.column else "queried")):
        r = vault.api.get(f"{VAULT}?sysparm_query={query}")
        if getattr(ftype, flag):
            assert r.status_code == 200, r.json
            continue
        assert r.status_code == 400
        assert r.json["error"]["message"] == f"invalid query: {name}: {type_name} fields cannot be {verb}"


def test_the_list_page_says_why_it_cannot_sort_on_a_password(vault):
    page = vault.page("/x_vault_list.do?sysparm_orderby=f_password")
    assert "F password: password fields cannot be sorted on" in page  # the field by its label


def test_the_openapi_document_reads_no_hidden_field_and_takes_it_write_only(vault):
    schemas = vault.api.get("/api/caseloom/openapi.json").json["components"]["schemas"]
    hidden = [field_of(t) for t, ftype in FIELD_TYPES.items() if ftype.hidden]
    assert hidden and not set(hidden) & set(schemas["x_vault"]["properties"])
    for name in hidden:
        assert schemas["x_vault.create"]["properties"][name]["writeOnly"] is True


@pytest.mark.parametrize("where, text", [
    ("notifications/x.yaml", "notifications:\n  leak:\n    table: x_vault\n    subject: s\n"
                             "    body: \"{{ record.f_password }}\"\n"),
    ("rules/x.yaml", "rules:\n  - {name: leak, table: x_vault, when: before, on: [update],\n"
                     "     effects: [{set: {name: \"{{ record.f_password }}\"}}]}\n"),
])
def test_a_template_that_reads_a_hidden_field_is_a_definition_error(tmp_path, where, text):
    from small_app import write_folder

    sources = read_sources(write_folder(tmp_path, FILES)) + [(where, text)]
    with pytest.raises(DefinitionErrors, match="f_password"):
        load_sources(sources)


def test_a_field_type_declares_each_flag():
    assert {f for f in FieldType.__dataclass_fields__} >= {"hidden", "queryable", "sortable", "listable", "journal"}
