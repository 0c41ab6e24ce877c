"""The effect registry: a failing effect rolls the whole action back; every effect is documented
and exercised; rules and notifications fire around writes."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from caseloom.definitions import load_folder, load_sources
from caseloom.definitions.loader import read_sources
from caseloom.effects import REGISTRY as EFFECTS
from caseloom.web import create_app
from conftest import DEFINITIONS, basic

ROOT = Path(__file__).resolve().parent.parent
CASES = "/api/now/table/sn_customerservice_case"

BROKEN = """actions:
  - name: stamp_then_fail
    table: sn_customerservice_case
    label: Stamp then fail
    roles: [sn_customerservice_agent]
    inputs: [{name: note, type: text}]
    effects:
      - set: {business_impact: "stamped"}
      - journal: {field: work_notes, text: "this entry must not survive"}
      - create: {table: customer_account, values: {name: ""}}
"""


@pytest.fixture
def broken_client(config):
    sources = read_sources(DEFINITIONS) + [("actions/broken.yaml", BROKEN)]
    defs = load_sources(sources)
    app = create_app(replace(config), defs, testing=True)
    return app.test_client()


def test_a_failing_effect_rolls_back_the_whole_action(broken_client):
    headers = basic("manager")
    case = broken_client.get(f"{CASES}?sysparm_query=state=10&sysparm_limit=1", headers=headers).json["result"][0]
    before = broken_client.get(f"{CASES}/{case['sys_id']}", headers=headers).json["result"]
    r = broken_client.post(f"/api/caseloom/actions/sn_customerservice_case/{case['sys_id']}/stamp_then_fail",
                           json={}, headers=headers)
    assert r.status_code == 400  # the third effect's record is refused: its mandatory name is empty
    assert r.json["error"]["detail"]["field"] == "name"
    after = broken_client.get(f"{CASES}/{case['sys_id']}", headers=headers).json["result"]
    assert after == before  # the first effect's change is gone too
    notes = broken_client.get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={case['sys_id']}",
                              headers=headers).json["result"]
    assert "this entry must not survive" not in [n["value"] for n in notes]


def test_an_effect_with_a_bad_template_names_it_and_changes_nothing(config):
    bad = BROKEN.replace('{business_impact: "stamped"}', '{business_impact: "{{ inputs.nope.deeper }}"}')
    defs = load_sources(read_sources(DEFINITIONS) + [("actions/broken.yaml", bad)])
    client = create_app(config, defs, testing=True).test_client()
    case = client.get(f"{CASES}?sysparm_query=state=10&sysparm_limit=1", headers=basic("agent")).json["result"][0]
    r = client.post(f"/api/caseloom/actions/sn_customerservice_case/{case['sys_id']}/stamp_then_fail", json={},
                    headers=basic("agent"))
    assert r.status_code == 422 and "nothing was changed" in r.json["error"]["message"]
    assert "inputs.nope.deeper" in r.json["error"]["message"]


def test_unknown_effect_and_bad_arguments_are_definition_errors():
    from caseloom.definitions import DefinitionErrors

    bad = BROKEN.replace("      - set:", "      - teleport: {to: mars}\n      - set:").replace(
        "{field: work_notes,", "{field: short_description,")
    with pytest.raises(DefinitionErrors) as info:
        load_sources(read_sources(DEFINITIONS) + [("actions/broken.yaml", bad)])
    messages = [e.message for e in info.value.errors]
    assert any("unknown effect 'teleport'" in m for m in messages)
    assert any("'short_description' is not a journal field" in m for m in messages)


def test_a_child_case_created_under_a_major_case_tells_its_contact(as_user):
    agent = as_user("agent")
    parent = agent.post(CASES, json={"short_description": "Outage", "major_case_state": "proposed"}).json["result"]
    contact = agent.get("/api/now/table/customer_contact?sysparm_limit=1").json["result"][0]
    child = agent.post(CASES, json={"short_description": "Outage for you", "parent": parent["sys_id"],
                                    "contact": contact["sys_id"]}).json["result"]
    mails = as_user("admin").get(f"/api/now/table/sys_email?sysparm_query=instance={child['sys_id']}").json["result"]
    assert [m["recipients"] for m in mails] == [contact["email"]]
    assert child["number"] in mails[0]["subject"]


def test_every_effect_is_documented_and_exercised_by_the_shipped_definitions():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", readme, re.M))
    used = set()

    def collect(effects):
        for e in effects:
            used.add(e.kind)
            if e.kind == "branch":
                collect(e.args.then + e.args.otherwise)

    for folder in (DEFINITIONS, ROOT / "tests" / "apps" / "loans"):  # CSM and the second application
        defs = load_folder(folder)
        for owner in (*defs.actions, *defs.rules):
            collect(owner.effects)
    assert set(EFFECTS) <= documented, f"effects missing from the README's table: {set(EFFECTS) - documented}"
    assert set(EFFECTS) <= used, f"effects neither application uses (so no end-to-end test exercises): {set(EFFECTS) - used}"


@pytest.mark.parametrize("text, record", [
    ("We have opened case {{ record.number }} for you: {{ record.short_description }}.\n",
     {"number": "CS0000001", "short_description": "Outage"}),
    ("{{ record.comments }}", {"comments": "Line one\nline two"}),
    ("n={{ record.n }} ok={{ record.ok }} none={{ record.x }}", {"n": 3, "ok": True, "x": None}),
    ("{{ record.items }}", {"items": "shadowed by dict.items in Jinja"}),
    ("{{ record.missing }}", {}),
    ("{{ record.number | upper }}", {"number": "cs1"}),
])
def test_plain_substitution_templates_render_exactly_as_jinja_does(text, record):
    """Notifications render once per child: the fast path for `{{ record.x }}` texts must give
    Jinja's output (or Jinja's error) in every case."""
    from jinja2 import TemplateError

    from caseloom import templates

    try:
        expected = templates.compile_template(text)._jinja.render(record=record)
    except TemplateError:
        with pytest.raises(templates.TemplateProblem):
            templates.render(text, {"record": record})
        return
    assert templates.render(text, {"record": record}) == expected
