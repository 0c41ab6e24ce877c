"""Member lists are a generic feature: a second application (pools of devices and sites, and rosters
of users) declares its own member lists and lists in YAML, with no CSM name anywhere. Covers the
`declared_list:` kind, script results keyed by the type's own `result_key`, the API routes and the
OpenAPI document under the member list's name, the errors `caseloom validate` locates, `caseloom
init --scale`, demo data errors that name the generator, the row and the field, and the demo value
`{after: FIELD, within_hours: H}`."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caseloom.cli import main
from caseloom.config import Config
from caseloom.definitions import DefinitionErrors, load_folder
from caseloom.definitions.model import DemoGenerator
from caseloom.demo import generated_rows
from conftest import BACKENDS, ROOT, basic, pg_database

TABLES = {
    "tables/u_site.yaml": """\
table: u_site
label: Site
display: name
fields:
  name: {type: string, max_length: 40, mandatory: true}
  code: {type: string, max_length: 8}
""",
    "tables/u_device.yaml": """\
table: u_device
label: Device
display: name
fields:
  name: {type: string, max_length: 40, mandatory: true}
  serial: {type: string, max_length: 12}
  kind: {type: choice, choices: {laptop: Laptop, phone: Phone, printer: Printer}}
  rank: {type: integer}
  active: {type: boolean, default: true}
  site: {type: reference, to: u_site}
  owner: {type: reference, to: sys_user}
""",
    "tables/u_device_pool.yaml": """\
table: u_device_pool
label: Device pool
display: name
fields:
  name: {type: string, max_length: 80, mandatory: true}
  pool_type: {type: choice, mandatory: true, choices: {devices: Devices, sites: Sites}}
  query: {type: text}
  scripted: {type: boolean, default: false}
  code: {type: text}
  description: {type: text}
""",
    "tables/u_pool_device.yaml": """\
table: u_pool_device
label: Pooled device
fields:
  pool: {type: reference, to: u_device_pool, mandatory: true}
  device: {type: reference, to: u_device, mandatory: true}
  auto: {type: boolean, default: false}
""",
    "tables/u_pool_site.yaml": """\
table: u_pool_site
label: Pooled site
fields:
  pool: {type: reference, to: u_device_pool, mandatory: true}
  site: {type: reference, to: u_site, mandatory: true}
  auto: {type: boolean, default: false}
""",
    "tables/u_roster.yaml": """\
table: u_roster
label: Roster
display: name
fields:
  name: {type: string, max_length: 80, mandatory: true}
  kind: {type: choice, choices: {people: People}}
""",
    "tables/u_roster_user.yaml": """\
table: u_roster_user
label: Roster member
fields:
  roster: {type: reference, to: u_roster}
  user: {type: reference, to: sys_user}
""",
}

MEMBER_LISTS = {
    "member_lists/pools.yaml": """\
member_list: pools
table: u_device_pool
type_field: pool_type
conditions_field: query
script_flag_field: scripted
script_field: code
dynamic_field: auto
types:
  devices:
    table: u_device
    members: u_pool_device
    list_field: pool
    member_field: device
    match: [sys_id, serial]
    result_key: machines
  sites:
    table: u_site
    members: u_pool_site
    list_field: pool
    member_field: site
    match: [sys_id, code]
""",
    "member_lists/rosters.yaml": """\
member_list: rosters
table: u_roster
type_field: kind
types:
  people: {table: sys_user, members: u_roster_user, list_field: roster, member_field: user, match: [sys_id, user_name]}
""",
    "actions/pools.yaml": """\
actions:
  - name: refresh
    table: u_device_pool
    label: Refresh
    roles: [admin]
    effects:
      - refresh_members: {}
""",
}

DEMO = """\
demo:
  users:
    - {user_name: admin, password: admin, roles: [admin], values: {name: Ada Admin}}
  generate:
    - name: sites
      table: u_site
      count: 2
      values: {name: {cycle: [North, South]}, code: "S{i}"}
    - name: devices
      table: u_device
      per_scale: 2
      values:
        name: "Device {i}"
        serial: "SN-{i}"
        kind: {cycle: [laptop, phone, printer]}
        rank: {cycle: [1, 2]}
        active: {cycle: [true, true, false]}
        site: {ref: sites}
"""

LISTS = {
    # a file with both `declared_list` and `member_list` keys is a declared list
    "lists/laptops.yaml": """\
declared_list: Active laptops
member_list: pools
type: devices
description: Every active laptop.
conditions: "kind=laptop^active=true^ORDERBYname"
""",
    "lists/printers.yaml": "declared_list: Printers\nmember_list: pools\ntype: devices\nscript: scripts/pools/printers.py\n",
    "lists/phones.yaml": "declared_list: Phones\nmember_list: pools\ntype: devices\nscript: phones.py\n",
    "lists/phones.py": 'result = [d for d in records.query("u_device", kind="phone")]\n',
    "lists/imported.yaml": "declared_list: Imported\nmember_list: pools\ntype: devices\nimport: imported.csv\n",
    "lists/imported.csv": "serial\nSN-2\nSN-5\nSN-99\n",
    "lists/oncall.yaml": "declared_list: On call\nmember_list: rosters\ntype: people\nimport: oncall.csv\n",
    "lists/oncall.csv": "user_name\nadmin\n",
}

SCRIPTS = {"pools/printers.py": 'result = {"machines": [d["sys_id"] for d in records.query("u_device", kind="printer")]}\n'}


def write(folder: Path, files: dict[str, str | None]) -> Path:
    for rel, text in files.items():
        path = folder / rel
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


@pytest.fixture
def app_dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(definitions, scripts) of the pools application, in a folder of the test's own."""
    definitions = write(tmp_path / "definitions", {**TABLES, **MEMBER_LISTS, "demo/demo.yaml": DEMO, **LISTS})
    scripts = write(tmp_path / "scripts", SCRIPTS)
    monkeypatch.setenv("CASELOOM_SCRIPTS", str(scripts))
    return definitions, scripts


@pytest.fixture(params=BACKENDS)
def database(request, tmp_path):
    """An empty database of the test's own (caseloom init fills it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pools.db'}"
        return
    with pg_database() as url:
        yield url


@pytest.fixture
def init(app_dirs, database, tmp_path):
    """init(*args): `caseloom init ARGS` on the pools application and the test's database."""
    definitions, scripts = app_dirs
    env = {"CASELOOM_DATABASE_URL": database, "CASELOOM_DEFINITIONS": str(definitions),
           "CASELOOM_SCRIPTS": str(scripts), "CASELOOM_INSTANCE": str(tmp_path / "instance"),
           "CASELOOM_QUEUE": f"sqlite:///{tmp_path / 'queue.db'}"}
    return lambda *args: CliRunner().invoke(main, ["init", *args], env=env)


@pytest.fixture
def api(app_dirs, database, init, tmp_path):
    """The pools application initialised with `--scale 3` (6 devices, 2 sites), served to the admin."""
    from caseloom.web import create_app, db

    ran = init("--scale", "3")
    assert ran.exit_code == 0, ran.output
    definitions, scripts = app_dirs
    config = Config(database_url=database, definitions=str(definitions), scripts=str(scripts),
                    instance=str(tmp_path / "instance"), ui=str(ROOT / "ui"), secret_key="test-secret",
                    queue=f"sqlite:///{tmp_path / 'queue.db'}")
    app = create_app(config, load_folder(definitions), testing=True)
    yield Admin(app.test_client())
    with app.app_context():
        db.engine.dispose()


class Admin:
    def __init__(self, client):
        self.client, self.headers = client, basic("admin", "admin")

    def get(self, path: str):
        return self.client.get(path, headers=self.headers)

    def post(self, path: str, json=None, **kw):
        return self.client.post(path, json=json, headers=self.headers, **kw)

    def rows(self, table: str, query: str = "") -> list[dict]:
        r = self.get(f"/api/now/table/{table}?sysparm_query={query}&sysparm_display_value=true"
                     "&sysparm_exclude_reference_link=true&sysparm_limit=100")
        assert r.status_code == 200, r.json
        return r.json["result"]

    def pool(self, name: str) -> str:
        return self.rows("u_device_pool", f"name={name}")[0]["sys_id"]

    def members(self, pool_id: str) -> list[str]:
        return sorted(m["device"] for m in self.rows("u_pool_device", f"pool={pool_id}"))

    def new_pool(self, **values) -> str:
        r = self.post("/api/now/table/u_device_pool", json={"name": "Scratch", "pool_type": "devices", **values})
        assert r.status_code == 201, r.json
        return r.json["result"]["sys_id"]


# -- declared lists, built at init ------------------------------------------------------------------

def test_init_builds_every_declared_list_of_each_member_list(init, api):
    assert api.members(api.pool("Active laptops")) == ["Device 1", "Device 4"]
    assert api.members(api.pool("Printers")) == ["Device 3", "Device 6"]  # script file in the scripts folder
    assert api.members(api.pool("Phones")) == ["Device 2", "Device 5"]  # script file next to the YAML
    assert api.members(api.pool("Imported")) == ["Device 2", "Device 5"]  # import by serial
    roster = api.rows("u_roster", "name=On call")[0]["sys_id"]
    assert [m["user"] for m in api.rows("u_roster_user", f"roster={roster}")] == ["Ada Admin"]
    laptops = api.rows("u_device_pool", "name=Active laptops")[0]
    assert laptops["query"] == "kind=laptop^active=true^ORDERBYname" and laptops["description"] == "Every active laptop."
    printers = api.rows("u_device_pool", "name=Printers")[0]
    assert printers["scripted"] == "true" and printers["code"] == "scripts/pools/printers.py"  # read at each build
    assert api.rows("u_device_pool", "name=Phones")[0]["code"] == LISTS["lists/phones.py"]  # the list holds the text
    again = init("--scale", "3")  # a second init updates the lists and adds nothing twice
    assert again.exit_code == 0, again.output
    assert "  Imported: 3 identified, 0 added, 0 removed, 3 rejected" in again.output
    assert api.members(api.pool("Imported")) == ["Device 2", "Device 5"]


def test_init_reports_each_declared_list(init):
    ran = init("--scale", "3")
    assert ran.exit_code == 0, ran.output
    lines = ran.output.splitlines()
    start = lines.index("declared lists:")
    assert lines[start + 1:start + 6] == [
        "  Imported: 3 identified, 2 added, 0 removed, 1 rejected",
        "  Active laptops: 2 identified, 2 added, 0 removed, 0 rejected",
        "  On call: 1 identified, 1 added, 0 removed, 0 rejected",
        "  Phones: 2 identified, 2 added, 0 removed, 0 rejected",
        "  Printers: 2 identified, 2 added, 0 removed, 0 rejected",
    ]


@pytest.mark.parametrize("script, message", [
    ("result = 1 / 0\n", "/scripts/pools/printers.py:1: ZeroDivisionError: division by zero"),
    ('result = {"accounts": []}\n', 'got a dict with keys accounts'),
])
def test_init_fails_naming_a_declared_list_it_cannot_build(init, app_dirs, script, message):
    write(app_dirs[1], {"pools/printers.py": script})
    ran = init("--scale", "3")
    assert ran.exit_code == 1
    assert ran.stderr.startswith("caseloom init: declared list 'Printers' of member list 'pools' cannot be built: ")
    assert message in ran.stderr


# -- scripts answer with their type's own result_key ------------------------------------------------

@pytest.mark.parametrize("pool_type, script, count", [
    ("devices", 'result = {"machines": [d["sys_id"] for d in records.query("u_device", active=True)]}', 4),
    ("devices", 'result = [d["sys_id"] for d in records.query("u_device", kind="laptop")]', 2),
    ("devices", 'result = records.query("u_device", kind="phone")', 2),
    ("sites", 'result = records.query("u_site")', 2),
])
def test_a_script_may_answer_a_list_or_its_types_result_key(api, pool_type, script, count):
    pool = api.new_pool(pool_type=pool_type, scripted="true", code=script)
    preview = api.get(f"/api/caseloom/pools/{pool}/preview")
    assert preview.status_code == 200, preview.json
    assert preview.json["result"]["source"] == "script" and preview.json["result"]["count"] == count
    refreshed = api.post(f"/api/caseloom/actions/u_device_pool/{pool}/refresh", json={})
    assert refreshed.status_code == 200, refreshed.json
    assert refreshed.json["details"]["added"] == count


@pytest.mark.parametrize("pool_type, script, message", [
    ("devices", 'result = {"accounts": []}',
     '`result` must be a list of sys_ids or a list of records with a sys_id, or {"machines": [sys_id, ...]} '
     "(the list type's result_key); got a dict with keys accounts"),
    ("devices", 'result = {"machines": [], "sites": []}', "got a dict with keys machines, sites"),
    ("devices", 'result = {"machines": "abc"}', 'result["machines"] must be a list of sys_ids, not str'),
    ("sites", 'result = {"machines": []}', "the list's type declares no result_key, so no keyed shape"),
])
def test_a_result_under_another_key_is_refused_naming_the_expected_one(api, pool_type, script, message):
    pool = api.new_pool(pool_type=pool_type, scripted="true", code=script)
    preview = api.get(f"/api/caseloom/pools/{pool}/preview")
    assert preview.status_code == 422 and message in preview.json["error"]["message"], preview.json
    refreshed = api.post(f"/api/caseloom/actions/u_device_pool/{pool}/refresh", json={})
    assert refreshed.status_code == 422 and message in refreshed.json["error"]["message"]
    assert api.members(pool) == []


# -- the API routes and their OpenAPI description, under the member list's name ---------------------

def test_import_preview_and_template_answer_under_the_member_lists_name(api):
    pool = api.new_pool(query="kind=printer")
    assert api.get(f"/api/caseloom/pools/{pool}/template").data == b"sys_id,serial\n"
    preview = api.get(f"/api/caseloom/pools/{pool}/preview").json["result"]
    assert preview["source"] == "condition" and preview["count"] == 2 and preview["members"] == 0
    assert sorted(row["name"] for row in preview["sample"]) == ["Device 3", "Device 6"]
    imported = api.post(f"/api/caseloom/pools/{pool}/import", data="serial\nSN-1\nSN-1\nnope\n",
                        content_type="text/csv")
    assert imported.status_code == 200, imported.json
    assert imported.json["result"]["added"] == 1 and imported.json["result"]["rejected"] == [  # the header is line 1
        {"row": 3, "reason": "already a member of this list"},
        {"row": 4, "reason": "no u_device record with serial 'nope'"}]
    sites = api.new_pool(pool_type="sites")
    assert api.get(f"/api/caseloom/pools/{sites}/template").data == b"sys_id,code\n"
    assert api.post(f"/api/caseloom/pools/{sites}/import", data="code\nS2\n",
                    content_type="text/csv").json["result"]["added"] == 1
    roster = api.post("/api/now/table/u_roster", json={"name": "Weekend", "kind": "people"}).json["result"]["sys_id"]
    assert api.post(f"/api/caseloom/rosters/{roster}/import", data="user_name\nadmin\n",
                    content_type="text/csv").json["result"]["added"] == 1


@pytest.mark.parametrize("path, status, message", [
    ("/api/caseloom/shelves/{pool}/preview", 404, "no member lists named 'shelves'"),
    ("/api/caseloom/pools/{missing}/preview", 404, "no u_device_pool record with sys_id"),
    ("/api/caseloom/rosters/{pool}/template", 404, "no u_roster record with sys_id"),
])
def test_the_routes_answer_404_for_an_unknown_member_list_or_list(api, path, status, message):
    pool = api.new_pool()
    r = api.get(path.format(pool=pool, missing="0" * 32))
    assert r.status_code == status and message in r.json["error"]["detail"], r.json


def test_the_openapi_document_describes_each_member_lists_routes(app_dirs):
    from caseloom.web.openapi import document

    doc = document(load_folder(app_dirs[0]), "http://localhost/")
    pools, rosters = "/api/caseloom/pools/{sys_id}", "/api/caseloom/rosters/{sys_id}"
    imported = doc["paths"][f"{pools}/import"]["post"]
    assert imported["summary"] == "Add members to a Device pool from a CSV" and imported["tags"] == ["Device pool"]
    assert "devices (u_device): sys_id, serial; sites (u_site): sys_id, code" in imported["requestBody"]["description"]
    assert imported["parameters"][0]["description"] == "The sys_id of a u_device_pool record (a Device pool)"
    assert doc["paths"][f"{rosters}/template"]["get"]["summary"] == (
        "The CSV header an import into this Roster accepts (its type's columns: people (sys_user): sys_id, user_name)")
    assert {op["operationId"] for p in (pools, rosters) for suffix in ("import", "preview", "template")
            for op in doc["paths"][f"{p}/{suffix}"].values()} == {
        f"{name}.{suffix}" for name in ("pools", "rosters") for suffix in ("import", "preview", "template")}
    assert not any("recipients" in path for path in doc["paths"])


# -- caseloom validate: each problem located ----------------------------------------------------------

def errors_of(folder: Path) -> list[str]:
    with pytest.raises(DefinitionErrors) as caught:
        load_folder(folder)
    return [str(e).removeprefix(f"{folder}/") for e in caught.value.errors]


LIST = "declared_list: Broken\nmember_list: pools\ntype: devices\n"

BAD = {
    "unknown member list": (
        {"lists/x.yaml": "declared_list: Broken\nmember_list: shelves\ntype: devices\nconditions: kind=laptop\n"},
        "lists/x.yaml:2:14", "unknown member list 'shelves'; known: pools, rosters"),
    "no member list named where there are two": (
        {"lists/x.yaml": "declared_list: Broken\ntype: devices\nconditions: kind=laptop\n"},
        "lists/x.yaml:1:16", "say which member list it belongs to (`member_list:` one of pools, rosters)"),
    "unknown type": (
        {"lists/x.yaml": "declared_list: Broken\nmember_list: pools\ntype: shelves\nconditions: kind=laptop\n"},
        "lists/x.yaml:3:7", "'shelves' is not a type of member list 'pools' (one of devices, sites)"),
    "unknown field in the conditions": (
        {"lists/x.yaml": LIST + "conditions: kind=laptop^colour=red\n"},
        "lists/x.yaml:4:13", "'colour' is not a field of 'u_device'"),
    "unknown dot-walked field in the conditions": (
        {"lists/x.yaml": LIST + "conditions: site.region=north\n"},
        "lists/x.yaml:4:13", "'site.region' is not a field of 'u_device'"),
    "unknown ORDERBY field": (
        {"lists/x.yaml": LIST + "conditions: kind=laptop^ORDERBYDESCweight\n"},
        "lists/x.yaml:4:13", "'weight' is not a field of 'u_device'"),
    "conditions that do not parse": (
        {"lists/x.yaml": LIST + "conditions: kind~~laptop\n"},
        "lists/x.yaml:4:13", "kind~~laptop"),
    "conditions on a member list without a conditions field": (
        {"lists/x.yaml": "declared_list: Broken\nmember_list: rosters\ntype: people\nconditions: active=true\n"},
        "lists/x.yaml:4:13", "member list 'rosters' has no conditions_field, so its lists cannot be built by conditions"),
    "script file missing": (
        {"lists/x.yaml": LIST + "script: scripts/pools/missing.py\n"},
        "lists/x.yaml:4:9", "script file 'scripts/pools/missing.py' not found: not in the scripts folder "),
    "script on a member list that never runs scripts": (
        {"member_lists/pools.yaml": MEMBER_LISTS["member_lists/pools.yaml"].replace("script_flag_field: scripted\n", ""),
         "lists/x.yaml": LIST + "script: result = []\n"},
        "lists/x.yaml:4:9", "member list 'pools' has no script_flag_field, so a list's script never runs"),
    "script written in the YAML that does not compile": (
        {"lists/x.yaml": LIST + "script: |\n  rows = records.query('u_device')\n  result = [\n"},
        "lists/x.yaml:4:9", "the script's line 2: SyntaxError: '[' was never closed"),
    "script written in the YAML that imports": (
        {"lists/x.yaml": LIST + "script: |\n  result = []\n  import os\n"},
        "lists/x.yaml:4:9", "the script's line 2: import is not allowed"),
    "script next to the YAML that does not compile": (
        {"lists/x.yaml": LIST + "script: broken.py\n", "lists/broken.py": "rows = []\nresult = {'machines': rows\n"},
        "lists/x.yaml:4:9", "lists/broken.py:2: SyntaxError: '{' was never closed"),
    "script path leaving the scripts folder": (
        {"lists/x.yaml": LIST + "script: ../../etc/passwd.py\n"},
        "lists/x.yaml:4:9", "script path '../../etc/passwd.py' leaves the scripts folder"),
    "import file missing": (
        {"lists/x.yaml": LIST + "import: missing.csv\n"},
        "lists/x.yaml:4:9", "file 'missing.csv' not found next to"),
    "import header without a match column": (
        {"lists/x.yaml": LIST + "import: x.csv\n", "lists/x.csv": "name\nDevice 1\n"},
        "lists/x.yaml:4:9", "x.csv: the header needs one of the columns sys_id, serial (type 'devices' matches by them)"),
    "the same list declared twice": (
        {"lists/x.yaml": "declared_list: Active laptops\nmember_list: pools\ntype: devices\nconditions: kind=laptop\n"},
        "lists/x.yaml:1:16", "list 'Active laptops' of member list 'pools' is already declared at "),
    "both conditions and script": (
        {"lists/x.yaml": LIST + "conditions: kind=laptop\nscript: phones.py\n"},
        "lists/x.yaml:1:1", "does not match any of the allowed shapes"),
    "recipients_list naming an unknown member list": (
        {"lists/x.yaml": "recipients_list: Broken\nmember_list: shelves\ntype: devices\nconditions: kind=laptop\n"},
        "lists/x.yaml:2:14", "unknown member list 'shelves'"),
    "member list named like an API route": (
        {"member_lists/jobs.yaml": MEMBER_LISTS["member_lists/rosters.yaml"].replace("rosters", "jobs")},
        "member_lists/jobs.yaml:1:14", "'jobs' is an API route (/api/caseloom/jobs); give the member list another name"),
    "demo constant that does not parse": (
        {"demo/demo.yaml": DEMO.replace("rank: {cycle: [1, 2]}", "rank: high")},
        "demo/demo.yaml:16:15", "'high' is not a value of integer field 'rank': expected a whole number, got 'high'"),
    "demo cycle item that does not parse": (
        {"demo/demo.yaml": DEMO.replace("rank: {cycle: [1, 2]}", "rank: {cycle: [1, two]}")},
        "demo/demo.yaml:16:27", "'two' is not a value of integer field 'rank'"),
    "demo constant that is not a choice": (
        {"demo/demo.yaml": DEMO.replace("kind: {cycle: [laptop, phone, printer]}", "kind: tablet")},
        "demo/demo.yaml:15:15", "'tablet' is not one of the choices of 'kind' (laptop, phone, printer)"),
    "demo ref to a generator of another table": (
        {"demo/demo.yaml": DEMO.replace("site: {ref: sites}", "site: {ref: devices}")},
        "demo/demo.yaml:18:15", "generator 'devices' makes 'u_device' records; field 'site' is a reference to 'u_site'"),
    "demo per_scale and per_account": (
        {"demo/demo.yaml": DEMO.replace("per_scale: 2", "per_scale: 2\n      per_account: 2")},
        "demo/demo.yaml:12:20", "per_account is the same as per_scale: give one"),
}


@pytest.mark.parametrize("files, where, message", BAD.values(), ids=BAD.keys())
def test_a_bad_definition_is_located_and_named(app_dirs, files, where, message):
    errors = errors_of(write(app_dirs[0], files))
    located = [e for e in errors if e.startswith(where + ": ")]
    assert located, f"no error at {where}: {errors}"
    assert message in located[0], errors


@pytest.mark.parametrize("lists", [
    {},  # the declared lists name their member list
    {"member_lists/rosters.yaml": None, "lists/oncall.yaml": None, "lists/laptops.yaml": LISTS["lists/laptops.yaml"]
     .replace("member_list: pools\n", "")},  # the only member list, named by none
])
def test_a_broken_member_list_is_reported_once_not_at_each_of_its_lists(app_dirs, lists):
    pools = MEMBER_LISTS["member_lists/pools.yaml"].replace("    result_key: machines", "    reslt_key: machines")
    errors = errors_of(write(app_dirs[0], {"member_lists/pools.yaml": pools, **lists}))
    assert errors == ["member_lists/pools.yaml:15:5: types.devices: unknown key ('reslt_key' was unexpected)"]


@pytest.mark.parametrize("source, message", [
    ("rows = records.query('u_device')\nresult = {'machines': [r['sys_id'] for r in rows]\n",
     "pools/printers.py:2: SyntaxError: '{' was never closed"),
    ("import subprocess\nresult = {'machines': []}\n", "pools/printers.py:1: import is not allowed"),
    ("result = {'machines': [].__class__.__subclasses__()}\n", "pools/printers.py:1: "),
])
def test_a_script_file_the_sandbox_would_refuse_is_an_error_at_its_list(app_dirs, source, message):
    """The file in the scripts folder is compiled under the sandbox's policy, as a build would
    compile it before running it: `caseloom init` never meets a script that cannot run."""
    definitions, scripts = app_dirs
    (scripts / "pools" / "printers.py").write_text(source)
    errors = errors_of(definitions)
    assert len(errors) == 1 and errors[0].startswith("lists/printers.yaml:4:9: "), errors
    assert f"{scripts}/{message}" in errors[0], errors


def test_caseloom_validate_lists_the_errors_and_exits_1(app_dirs):
    definitions = write(app_dirs[0], {"lists/x.yaml": LIST + "script: scripts/pools/missing.py\n"})
    ran = CliRunner().invoke(main, ["validate", str(definitions)])
    assert ran.exit_code == 1
    assert re.match(rf"{definitions}/lists/x.yaml:4:9: script file 'scripts/pools/missing.py' not found", ran.stderr)


def test_the_valid_application_loads_with_its_lists(app_dirs):
    defs = load_folder(app_dirs[0])
    assert sorted(defs.member_lists) == ["pools", "rosters"]
    assert defs.member_lists["pools"].types["devices"].result_key == "machines"
    assert sorted((d.name, d.member_list, d.type) for d in defs.declared_lists) == [
        ("Active laptops", "pools", "devices"), ("Imported", "pools", "devices"), ("On call", "rosters", "people"),
        ("Phones", "pools", "devices"), ("Printers", "pools", "devices")]
    assert {f.path: f.kind for f in defs.files}["lists/laptops.yaml"] == "declared_list"


# -- caseloom init --scale ---------------------------------------------------------------------------

def demo_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("demo data:"))


@pytest.mark.parametrize("args, devices", [
    (["--scale", "3"], 6),
    (["--accounts", "3"], 6),  # the CSM application's name for the same
    (["--scale", "5", "--accounts", "5"], 10),
    (["--demo"], 400),  # the default scale, 200
    (["--scale", "0"], 0),
])
def test_init_scales_the_demo_generators(init, args, devices):
    ran = init(*args)
    assert ran.exit_code == 0, ran.output
    assert demo_line(ran.output) == f"demo data: 2 sites, {devices} devices"


def test_per_account_is_the_same_as_per_scale(init, app_dirs):
    write(app_dirs[0], {"demo/demo.yaml": DEMO.replace("per_scale: 2", "per_account: 2")})
    ran = init("--scale", "4")
    assert ran.exit_code == 0, ran.output
    assert demo_line(ran.output) == "demo data: 2 sites, 8 devices"


def test_scale_and_accounts_that_differ_are_refused(init):
    ran = init("--scale", "3", "--accounts", "4")
    assert ran.exit_code == 1
    assert ran.stderr == "caseloom init: --accounts is the same as --scale: give one (got 4 and 3)\n"


def test_the_help_is_generic():
    text = CliRunner().invoke(main, ["init", "--help"]).output
    assert "--scale N" in text and "--accounts N" in text and "The same as --scale." in text
    assert "account" not in text.replace("--accounts", "").lower()


# -- demo data errors: generator, row and field ------------------------------------------------------

DEMO_ERRORS = {
    "a template that grows past the field's length": (
        ('serial: "SN-{i}"', 'serial: "SERIAL-NUM-{i}"'), ["--scale", "5"],
        "demo/demo.yaml:14:17: demo: generator 'devices' row 10: serial: is 13 characters long; the maximum is 12"),
    "a template that does not parse for the field's type": (
        ("rank: {cycle: [1, 2]}", 'rank: "{i}x"'), ["--scale", "1"],
        "demo/demo.yaml:16:15: demo: generator 'devices' row 1: rank: expected a whole number, got '1x'"),
    "a cycle's template item, located at the item the row used": (
        ("rank: {cycle: [1, 2]}", 'rank: {cycle: [1, "{i}x"]}'), ["--scale", "1"],
        "demo/demo.yaml:16:27: demo: generator 'devices' row 2: rank: expected a whole number, got '2x'"),
    "a reference to a record that is not there": (
        ("site: {ref: sites}", "owner: " + "f" * 32), ["--scale", "1"],
        f"demo/demo.yaml:18:16: demo: generator 'devices' row 1: owner: no sys_user record has sys_id {'f' * 32}"),
}


@pytest.mark.parametrize("change, args, message", DEMO_ERRORS.values(), ids=DEMO_ERRORS.keys())
def test_a_demo_value_that_cannot_be_written_names_generator_row_and_field(init, app_dirs, change, args, message):
    write(app_dirs[0], {"demo/demo.yaml": DEMO.replace(*change)})
    ran = init(*args)
    assert ran.exit_code == 1, ran.output
    assert ran.stderr == f"{app_dirs[0]}/{message}\n"
    assert "demo data:" not in ran.stdout


BAD_VALUES = {  # each a value `caseloom validate` refuses at its place, before any row is written
    "days_ago of a field that is not a moment": (
        ('serial: "SN-{i}"', "serial: {days_ago: 30}"), "demo/demo.yaml:14:17",
        "{days_ago: ...} makes a date-time; field 'serial' is string, not date or datetime"),
    "an unknown generator in a cycle": (
        ("site: {ref: sites}", "site: {cycle: [{ref: sites}, {ref: sitez}]}"), "demo/demo.yaml:18:44",
        "unknown generator 'sitez'"),
    "a generator of another table in a cycle": (
        ("site: {ref: sites}", "site: {cycle: [{ref: sites}, {ref: devices}]}"), "demo/demo.yaml:18:38",
        "generator 'devices' makes 'u_device' records; field 'site' is a reference to 'u_site'"),
    "an unknown user in a cycle": (
        ("site: {ref: sites}", "owner: {cycle: [{user: admin}, {user: nobody}]}"), "demo/demo.yaml:18:47",
        "unknown demo user 'nobody'"),
    "a user of a field that is no reference to users": (
        ("site: {ref: sites}", "site: {user: admin}"), "demo/demo.yaml:18:15",
        "{user: ...} is a sys_user record; field 'site' is a reference to 'u_site'"),
    "a mapping of no known form": (
        ("site: {ref: sites}", "site: {reff: sites}"), "demo/demo.yaml:18:15",
        "a mapping here is one of {cycle: ...}, {ref: ...}, {user: ...}, {days_ago: ...}, {after: ...} "
        "(keys given: reff)"),
    "a key the form does not take": (
        ("site: {ref: sites}", "site: {ref: sites, evry: 2}"), "demo/demo.yaml:18:15",
        "unknown key 'evry' in {ref: ...}, which takes ref, every"),
    "a form's value out of range": (
        ("rank: {cycle: [1, 2]}", "rank: {days_ago: 0}"), "demo/demo.yaml:16:15",
        "days_ago: 0 is less than the minimum of 1"),
    "a literal a cycle's field does not take": (
        ("rank: {cycle: [1, 2]}", "rank: {cycle: [1, many]}"), "demo/demo.yaml:16:27",
        "'many' is not a value of integer field 'rank'"),
}


@pytest.mark.parametrize("change, where, message", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_demo_value_is_located_and_named_by_validate(app_dirs, change, where, message):
    """Each value of a generator, a cycle's items too, is checked against its field when the definitions
    are read: a `days_ago` of a text field, a `ref` or `user` that names nothing or the wrong table."""
    errors = errors_of(write(app_dirs[0], {"demo/demo.yaml": DEMO.replace(*change)}))
    located = [e for e in errors if e.startswith(where + ": ")]
    assert located, f"no error at {where}: {errors}"
    assert message in located[0], errors


# -- {after: FIELD, within_hours: H}: a moment after another of the same row -------------------------

DATED_DEVICE = TABLES["tables/u_device.yaml"] + ("  bought: {type: datetime}\n  retired: {type: datetime}\n"
                                                 "  warranty: {type: date}\n")
RETIRED = "        retired: {cycle: [null, {after: bought, within_hours: 48}]}\n"
DATED_DEMO = DEMO + "        bought: {days_ago: 30}\n" + RETIRED  # lines 19 and 20


def dated(demo: str = DATED_DEMO) -> dict[str, str]:
    return {"tables/u_device.yaml": DATED_DEVICE, "demo/demo.yaml": demo}


AFTER_SPEC = "{after: bought, within_hours: 48}"
BAD_AFTER = {
    "an unknown field": (
        (AFTER_SPEC, "{after: nope, within_hours: 48}"),
        "demo/demo.yaml:20:41", "after 'nope': table 'u_device' has no field 'nope'"),
    "a field that is not a moment": (
        (AFTER_SPEC, "{after: rank, within_hours: 48}"),
        "demo/demo.yaml:20:41", "after 'rank': field 'rank' is integer, not date or datetime"),
    "a field given below it": (
        ("        bought: {days_ago: 30}\n" + RETIRED, RETIRED + "        bought: {days_ago: 30}\n"),
        "demo/demo.yaml:19:41", "after 'bought': 'bought' is given below 'retired', so no row has it yet when "
                                "'retired' is made: give 'bought' a value above 'retired'"),
    "a field the generator gives no value": (
        (AFTER_SPEC, "{after: warranty, within_hours: 48}"),
        "demo/demo.yaml:20:41", "after 'warranty': 'warranty' has no value in this generator"),
    "the field itself": (
        (AFTER_SPEC, "{after: retired, within_hours: 48}"),
        "demo/demo.yaml:20:41", "after 'retired': a field cannot come after itself"),
    "a negative size": (
        (AFTER_SPEC, "{after: bought, within_hours: -1}"),
        "demo/demo.yaml:20:63", "within_hours: -1 is not a whole number of hours, 1 or more"),
    "a size that is not a number": (
        (AFTER_SPEC, "{after: bought, within_hours: soon}"),
        "demo/demo.yaml:20:63", "within_hours: 'soon' is not a whole number of hours, 1 or more"),
    "a size of no whole hours": (
        (AFTER_SPEC, "{after: bought, within_hours: 1.5}"),
        "demo/demo.yaml:20:63", "within_hours: 1.5 is not a whole number of hours, 1 or more"),
    "no size": (
        (AFTER_SPEC, "{after: bought}"),
        "demo/demo.yaml:20:33", "after 'bought' needs within_hours: H, the most hours after it"),
    "another key, outside a cycle": (
        (RETIRED, "        retired: {after: bought, within_hours: 2, hours: 3}\n"),
        "demo/demo.yaml:20:58", "unknown key 'hours': an `after` value takes after and within_hours"),
    "a zero size, outside a cycle": (
        (RETIRED, "        retired: {after: bought, within_hours: 0}\n"),
        "demo/demo.yaml:20:48", "within_hours: 0 is not a whole number of hours, 1 or more"),
    "a field that cannot hold a moment": (
        ('        serial: "SN-{i}"\n', "        serial: {after: bought, within_hours: 2}\n"),
        "demo/demo.yaml:14:17", "{after: ...} makes a date-time; field 'serial' is string, not date or datetime"),
}


@pytest.mark.parametrize("change, where, message", BAD_AFTER.values(), ids=BAD_AFTER.keys())
def test_a_bad_after_value_is_located_and_named(app_dirs, change, where, message):
    errors = errors_of(write(app_dirs[0], dated(DATED_DEMO.replace(*change))))
    located = [e for e in errors if e.startswith(where + ": ")]
    assert located, f"no error at {where}: {errors}"
    assert message in located[0], errors


def test_caseloom_validate_refuses_a_bad_after_value(app_dirs):
    definitions = write(app_dirs[0], dated(DATED_DEMO.replace(AFTER_SPEC, "{after: nope, within_hours: 48}")))
    ran = CliRunner().invoke(main, ["validate", str(definitions)])
    assert ran.exit_code == 1
    assert ran.stderr.splitlines() == [f"{definitions}/demo/demo.yaml:20:41: after 'nope': table 'u_device' has no "
                                       f"field 'nope'", f"1 error(s) in {definitions}"]


STAMP = dt.datetime(2026, 12, 5, 12, 0, 0)


def rows_of(values: dict, count: int = 6) -> list[dict]:
    gen = DemoGenerator("devices", "u_device", values, count)
    return list(generated_rows(gen, {"devices": count}, {}, STAMP))


@pytest.mark.parametrize("values, field, expected", [
    # row i: (i × 37 mod H) hours and 1 + i mod 59 minutes after the field's value
    ({"bought": "2026-01-01 08:00:00", "retired": {"after": "bought", "within_hours": 48}}, "retired",
     ["2026-01-01 08:01:00", "2026-01-02 21:02:00", "2026-01-02 10:03:00", "2026-01-01 23:04:00",
      "2026-01-01 12:05:00", "2026-01-03 01:06:00"]),
    ({"warranty": "2026-01-01", "retired": {"after": "warranty", "within_hours": 1}}, "retired",  # a date: midnight
     ["2026-01-01 00:01:00", "2026-01-01 00:02:00", "2026-01-01 00:03:00", "2026-01-01 00:04:00",
      "2026-01-01 00:05:00", "2026-01-01 00:06:00"]),
    ({"bought": "2026-01-01 08:00:00",  # in a cycle: the other rows stay empty
      "retired": {"cycle": [None, None, {"after": "bought", "within_hours": 48}]}}, "retired",
     [None, None, "2026-01-02 10:03:00", None, None, "2026-01-03 01:06:00"]),
    ({"bought": {"cycle": [None, "2026-01-01 08:00:00"]},  # no value to follow: none
      "retired": {"after": "bought", "within_hours": 48}}, "retired",
     [None, "2026-01-02 21:02:00", None, "2026-01-01 23:04:00", None, "2026-01-03 01:06:00"]),
    ({"bought": "2026-01-01 08:00:00", "retired": {"after": "bought", "within_hours": 48},  # after an `after`
      "checked": {"after": "retired", "within_hours": 1}}, "checked",
     ["2026-01-01 08:02:00", "2026-01-02 21:04:00", "2026-01-02 10:06:00", "2026-01-01 23:08:00",
      "2026-01-01 12:10:00", "2026-01-03 01:12:00"]),
    ({"bought": "2026-12-05 11:00:00", "retired": {"after": "bought", "within_hours": 48}}, "retired",
     ["2026-12-05 11:01:00"] + ["2026-12-05 12:00:00"] * 5),  # never past the load's moment
    ({"bought": "2026-12-24 08:00:00", "retired": {"after": "bought", "within_hours": 48}}, "retired",
     ["2026-12-24 08:00:00"] * 6),  # a later start than the load: never before it
])
def test_an_after_value_is_within_its_hours_of_the_row_s_own_moment(values, field, expected):
    made = [row[field] for row in rows_of(values)]
    assert [None if v is None else f"{v:%Y-%m-%d %H:%M:%S}" for v in made] == expected
    assert [row[field] for row in rows_of(values)] == made  # the same on every run


def test_after_days_ago_is_later_within_its_hours_and_never_in_the_future():
    values = {"bought": {"days_ago": 30}, "retired": {"after": "bought", "within_hours": 72}}
    rows = rows_of(values, 200)
    assert all(r["bought"] < r["retired"] <= min(r["bought"] + dt.timedelta(hours=72), STAMP)
               for r in rows if r["bought"] < STAMP)
    at_load = [r for r in rows if r["bought"] == STAMP]  # rows 1 and 121: bought at the load's moment
    assert len(at_load) == 2 and all(r["retired"] == STAMP for r in at_load)
    assert len({r["retired"] - r["bought"] for r in rows}) > 50  # spread, not one offset


def test_init_writes_after_values_each_after_its_row_s_moment(init, app_dirs, database):
    write(app_dirs[0], dated())
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    ran = init("--scale", "5")
    assert ran.exit_code == 0, ran.output
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT name, bought, retired FROM u_device ORDER BY name")).all()
    finally:
        engine.dispose()
    moments = {name: (_moment(bought), _moment(retired)) for name, bought, retired in rows}
    assert len(moments) == 10
    retired = {name: (b, r) for name, (b, r) in moments.items() if r is not None}
    assert sorted(retired) == sorted(f"Device {n}" for n in (2, 4, 6, 8, 10))  # the cycle's second item
    assert all(b < r <= dt.datetime.now(dt.UTC).replace(tzinfo=None) and r <= b + dt.timedelta(hours=48)
               for b, r in retired.values()), retired
    assert all(b >= started - dt.timedelta(days=30) for b, _ in moments.values())


def _moment(value) -> dt.datetime | None:
    """A date-time column as read back (SQLite gives text)."""
    return dt.datetime.fromisoformat(str(value)) if value is not None else None
