"""The OpenAPI document tells the truth.

(a) Its structure: every /api/ route of the app is in it (and nothing else), every table,
declared action and member list has its operations, create bodies require the mandatory
fields, choices are each class's own, errors have the Error shape, and real responses
validate against it. (b) schemathesis, in-process against the WSGI app, as admin on a
throwaway database: no server error and no response the document does not describe.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import schemathesis
from werkzeug.exceptions import MethodNotAllowed, NotFound

from caseloom.config import Config
from caseloom.definitions import load_folder
from caseloom.web.openapi import document
from conftest import DEFINITIONS, ROOT, basic

DEFS = load_folder(DEFINITIONS)  # for parametrising; tests use the `definitions` fixture (the same set)
TABLES = sorted(DEFS.tables)
ACTIONS = sorted({(table, a.name) for table in TABLES for a in DEFS.actions_for(table)})
METHODS = ("get", "put", "post", "patch", "delete")
OPENAPI = "/api/caseloom/openapi.json"
ADMIN = basic("admin")


@pytest.fixture(scope="module")
def doc() -> dict:
    return document(DEFS, "http://localhost/")


@pytest.fixture(scope="module")
def url_map(tmp_path_factory):
    """The app's routes (an app on an empty database: the routes do not depend on the data)."""
    from caseloom.web import create_app

    base = tmp_path_factory.mktemp("routes")
    config = Config(database_url=f"sqlite:///{base}/empty.db", definitions=str(DEFINITIONS), instance=str(base),
                    ui=str(ROOT / "ui"), secret_key="x", queue=f"sqlite:///{base}/queue.db")
    return create_app(config, DEFS, testing=True).url_map


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(doc: dict, node: dict) -> dict:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = doc["components"][kind][name]
    return node


def body_schema(doc: dict, op: dict) -> dict:
    return resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])


def response_schema(doc: dict, op: dict, status: str) -> dict:
    return resolve(doc, resolve(doc, op["responses"][status])["content"]["application/json"]["schema"])


# -- the document and the app's routes --------------------------------------------------------------

def test_served_document_is_generated_from_the_definitions(as_user, client, definitions):
    response = as_user("admin").get(OPENAPI)
    assert response.status_code == 200
    assert response.get_json() == document(definitions, "http://localhost/")
    assert client.get(OPENAPI).status_code == 401  # like every API route


def test_document_is_valid_openapi_3(doc):
    from schemathesis.specs.openapi.definitions import OPENAPI_30

    assert doc["openapi"].startswith("3.0")
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft4Validator(OPENAPI_30).iter_errors(doc)]
    assert errors == []
    refs = set(re.findall(r'"\$ref": "#/components/(\w+)/([\w.]+)"', json.dumps(doc)))
    assert [r for r in refs if r[1] not in doc["components"][r[0]]] == []


def _rule_pattern(rule: str) -> re.Pattern:
    """A Flask rule as a regex over documented paths: each variable part matches a {placeholder}
    or a literal (tables, actions and member lists are documented one by one)."""
    parts = re.split(r"(<[^>]+>)", rule)
    regex = "".join((r"(\{[^}]+\}|[^/{}]+)" if not p.startswith("<path:") else r"(\{[^}]+\}|.+)")
                    if p.startswith("<") else re.escape(p) for p in parts)
    return re.compile(regex)


def test_every_api_route_is_documented(url_map, doc):
    """A route added later cannot be forgotten: every /api/ rule and method has an operation."""
    missing = []
    for rule in url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        pattern = _rule_pattern(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if not any(pattern.fullmatch(path) and method.lower() in item for path, item in doc["paths"].items()):
                missing.append(f"{method} {rule.rule}")
    assert missing == []


def test_every_documented_operation_is_a_route(url_map, doc):
    adapter = url_map.bind("localhost")
    sample = {"sys_id": "0" * 32, "id": "1", "path": "tables/task.yaml", "table": "task", "name": "new_cases"}
    wrong = []
    for path, method, _ in operations(doc):
        concrete = re.sub(r"\{(\w+)\}", lambda m: sample[m.group(1)], path)
        try:
            adapter.match(concrete, method.upper())
        except (NotFound, MethodNotAllowed) as exc:
            wrong.append(f"{method.upper()} {path}: {type(exc).__name__}")
    assert wrong == []


def test_every_operation_names_its_errors(doc):
    """Errors have the contract's shape; every route answers 401 and 429, and every body 413."""
    for path, method, op in operations(doc):
        codes = set(op["responses"])
        assert {"401", "429"} <= codes, (method, path)
        if "requestBody" in op:
            assert "413" in codes, (method, path)
        for code in codes:
            if code.startswith("4"):
                assert response_schema(doc, op, code) == doc["components"]["schemas"]["Error"], (method, path, code)
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(set(ids)) == len(ids)


def test_links_lead_from_created_records_to_what_takes_their_sys_id(doc):
    ids = {op["operationId"] for _, _, op in operations(doc)}
    links = {name: link for _, _, op in operations(doc) for response in op["responses"].values()
             for name, link in resolve(doc, response).get("links", {}).items()}
    assert {link["operationId"] for link in links.values()} <= ids
    created = doc["paths"]["/api/now/table/sn_customerservice_case"]["post"]["responses"]["201"]["links"]
    assert {f"sn_customerservice_case_{op}" for op in ("get", "patch", "delete", "resolve_case")} <= set(created)
    assert created["sn_customerservice_case_get"]["parameters"] == {"sys_id": "$response.body#/result/sys_id"}


# -- tables -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", TABLES)
def test_table_operations(doc, table):
    collection, record = doc["paths"][f"/api/now/table/{table}"], doc["paths"][f"/api/now/table/{table}/{{sys_id}}"]
    assert set(collection) == {"get", "post"} and set(record) == {"get", "put", "patch", "delete"}
    headers = resolve(doc, collection["get"]["responses"]["200"])["headers"]
    # sent on every list but one that asks for no count (tests/test_table_api.py checks both)
    assert "except with sysparm_no_count=true" in headers["X-Total-Count"]["description"] and "Link" in headers
    assert "Location" in collection["post"]["responses"]["201"]["headers"]
    assert "204" in record["delete"]["responses"] and "404" in record["patch"]["responses"]
    assert {"409", "422"} <= set(collection["post"]["responses"])  # rules and lifecycles run on writes
    listed = response_schema(doc, collection["get"], "200")["properties"]["result"]["items"]
    assert listed == {"$ref": f"#/components/schemas/{table}"}


@pytest.mark.parametrize("table", TABLES)
def test_create_requires_the_mandatory_fields_and_update_nothing(doc, definitions, table):
    tdef = definitions.tables[table]
    create = body_schema(doc, doc["paths"][f"/api/now/table/{table}"]["post"])
    update = body_schema(doc, doc["paths"][f"/api/now/table/{table}/{{sys_id}}"]["patch"])
    mandatory = {n for n, f in tdef.fields.items() if f.mandatory and f.default is None}
    assert set(create.get("required", ())) == mandatory
    assert "required" not in update
    assert create["additionalProperties"] is False and update["additionalProperties"] is False  # unknown fields: 400
    assert set(create["properties"]) == set(tdef.fields)


@pytest.mark.parametrize("table", TABLES)
def test_choices_are_the_class_own_in_requests_and_every_class_in_responses(doc, definitions, table):
    tdef = definitions.tables[table]
    create = body_schema(doc, doc["paths"][f"/api/now/table/{table}"]["post"])
    record = doc["components"]["schemas"][table]
    for name, field in tdef.fields.items():
        if not field.choices:
            continue
        own = {str(v) for v in field.create_values} or {str(v) for v, _ in field.choices}
        sent = create["properties"][name]
        texts = next((s for s in sent.get("anyOf", [sent]) if s.get("type") == "string"), sent)
        assert set(texts["enum"]) - {""} == own, name
        classes = {str(v) for cls in definitions.descendants(table)
                   if (f := definitions.tables[cls].field(name)) is not None for v, _ in f.choices}
        text, display = record["properties"][name]["anyOf"]  # a value or label; {"display_value", "value"}
        assert classes | {""} <= set(text["enum"]) and set(display["properties"]["value"]["enum"]) == classes | {""}


def test_task_responses_allow_the_choices_of_cases(doc):
    """Listing task returns cases too: their states (Open 10, Awaiting Info 18) are not task's own."""
    state = doc["components"]["schemas"]["task"]["properties"]["state"]["anyOf"][1]["properties"]["value"]
    assert {"10", "18"} <= set(state["enum"])
    create = doc["components"]["schemas"]["task.create"]["properties"]["state"]["anyOf"][0]
    assert "10" not in create["enum"]


@pytest.mark.parametrize("table", TABLES)
def test_read_only_and_system_fields_are_read_only(doc, definitions, table):
    schemas = doc["components"]["schemas"]
    for name, field in definitions.tables[table].fields.items():
        if not (field.read_only or field.system):
            continue
        if field.type != "password":
            assert schemas[table]["properties"][name].get("readOnly"), name
        assert schemas[f"{table}.update"]["properties"][name].get("readOnly"), name
        writable = name == "sys_id" or bool(field.create_values)  # a new record may choose these
        assert bool(schemas[f"{table}.create"]["properties"][name].get("readOnly")) != writable, name


def test_a_major_case_candidate_may_be_created_directly(doc):
    """major_case_state is read-only, but a POST may create a candidate as proposed (contract section 7)."""
    schemas = doc["components"]["schemas"]
    created = schemas["sn_customerservice_case.create"]["properties"]["major_case_state"]
    assert created["enum"] == ["proposed", ""] and not created.get("readOnly")
    assert schemas["sn_customerservice_case.update"]["properties"]["major_case_state"]["readOnly"]


def test_passwords_are_write_only(doc):
    assert "user_password" not in doc["components"]["schemas"]["sys_user"]["properties"]
    assert doc["components"]["schemas"]["sys_user.create"]["properties"]["user_password"]["writeOnly"]


def test_display_value_shapes_are_described(doc):
    schemas = doc["components"]["schemas"]
    account = schemas["sn_customerservice_case"]["properties"]["account"]["anyOf"]
    assert {"$ref": "#/components/schemas/Reference"} in account  # {"link", "value"}
    assert {"$ref": "#/components/schemas/ReferenceDisplay"} in account  # {"display_value", "value", "link"?}
    assert schemas["ReferenceDisplay"]["required"] == ["display_value", "value"]
    assert schemas["Reference"]["required"] == ["link", "value"]
    shapes = schemas["sn_customerservice_case"]["properties"]["short_description"]["anyOf"]
    assert shapes[0] == {"type": "string"} and shapes[1]["required"] == ["display_value", "value"]


# -- actions, member lists, batch, jobs, definitions ---------------------------------------------------

@pytest.mark.parametrize(("table", "name"), ACTIONS)
def test_each_declared_action_is_an_operation(doc, definitions, table, name):
    action = definitions.action(table, name)
    op = doc["paths"][f"/api/caseloom/actions/{table}/{{sys_id}}/{name}"]["post"]
    inputs = body_schema(doc, op)
    assert set(inputs["properties"]) == {i.name for i in action.inputs}
    assert set(inputs.get("required", ())) == {i.name for i in action.inputs if i.mandatory}
    assert op["requestBody"]["required"] == any(i.mandatory for i in action.inputs)
    assert ("202" in op["responses"]) == action.background
    assert {"200", "403", "404", "409"} <= set(op["responses"])
    if action.background:
        assert response_schema(doc, op, "202")["properties"]["result"] == {"$ref": "#/components/schemas/JobStarted"}


def test_actions_of_a_parent_table_are_offered_on_its_children(doc, definitions):
    for table in TABLES:
        for parent in definitions.ancestors(table):
            for action in definitions.actions_for(parent):
                assert f"/api/caseloom/actions/{table}/{{sys_id}}/{action.name}" in doc["paths"]


@pytest.mark.parametrize("name", sorted(DEFS.member_lists))
def test_member_list_routes(doc, name):
    base = f"/api/caseloom/{name}/{{sys_id}}"
    assert "text/csv" in doc["paths"][f"{base}/import"]["post"]["requestBody"]["content"]
    assert "text/csv" in doc["paths"][f"{base}/template"]["get"]["responses"]["200"]["content"]
    assert response_schema(doc, doc["paths"][f"{base}/import"]["post"], "200")["properties"]["result"] == {
        "$ref": "#/components/schemas/ImportReport"}
    assert "get" in doc["paths"][f"{base}/preview"]


def test_batch_jobs_and_definitions(doc):
    for path in ("/api/now/batch", "/api/now/v1/batch"):
        assert body_schema(doc, doc["paths"][path]["post"])["required"] == ["rest_requests"]
    job = doc["components"]["schemas"]["Job"]
    assert job["properties"]["state"]["enum"] == ["queued", "running", "done", "failed"]
    put = doc["paths"]["/api/caseloom/definitions/{path}"]["put"]
    assert "application/yaml" in put["requestBody"]["content"] and {"409", "422"} <= set(put["responses"])


# -- real answers against the document ---------------------------------------------------------------

@pytest.fixture(scope="module")
def validate():
    """Check an answer against the document: its status is documented and its body fits (schemathesis's
    own validation of a test-client response)."""
    schema = schemathesis.openapi.from_dict(document(DEFS, "http://localhost/"))

    def check(method: str, path: str, response) -> None:
        operation = schema[path][method.upper()]
        assert str(response.status_code) in operation.definition.raw["responses"], response.status_code
        operation.validate_response(response)
    return check


@pytest.mark.parametrize("display", ["false", "true", "all"])
@pytest.mark.parametrize("links", ["false", "true"])
def test_list_answers_match_the_document(as_user, validate, display, links):
    """task's rows include cases (states 10, 18...), references and display values in every mode."""
    response = as_user("admin").get(f"/api/now/table/task?sysparm_display_value={display}"
                                    f"&sysparm_exclude_reference_link={links}&sysparm_limit=50")
    assert response.status_code == 200 and response.get_json()["result"]
    assert any(row["sys_class_name"] not in ("task", {"display_value": "task", "value": "task"})
               for row in response.get_json()["result"])
    validate("get", "/api/now/table/task", response)
    dotwalk = as_user("admin").get(f"/api/now/table/sn_customerservice_case?sysparm_display_value={display}"
                                   "&sysparm_fields=number,account,account.name,state")
    validate("get", "/api/now/table/sn_customerservice_case", dotwalk)


def test_write_and_error_answers_match_the_document(as_user, validate):
    api = as_user("admin")
    created = api.post("/api/now/table/sn_customerservice_case", {"short_description": "Printer on fire", "priority": 2})
    assert created.status_code == 201
    validate("post", "/api/now/table/sn_customerservice_case", created)
    sys_id = created.get_json()["result"]["sys_id"]
    opened = api.post(f"/api/caseloom/actions/sn_customerservice_case/{sys_id}/open_case", {})
    assert opened.status_code == 200 and opened.get_json()["result"]["state"] == "10"
    validate("post", "/api/caseloom/actions/sn_customerservice_case/{sys_id}/open_case", opened)
    again = api.post(f"/api/caseloom/actions/sn_customerservice_case/{sys_id}/open_case", {})
    assert again.status_code == 409
    validate("post", "/api/caseloom/actions/sn_customerservice_case/{sys_id}/open_case", again)
    bad = api.post("/api/now/table/sn_customerservice_case", {"short_description": "x", "priority": "9"})
    assert bad.status_code == 400
    validate("post", "/api/now/table/sn_customerservice_case", bad)


def test_validation_has_teeth(validate):
    """A state no class has, a value that is not a string, a reference without its link, a status
    the route does not answer: each is caught."""
    from schemathesis.core.failures import Failure
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    for status, row in ((200, {"state": "99"}), (200, {"active": True}), (200, {"account": {"value": "x"}}),
                        (404, {})):
        answer = Response(json.dumps({"result": [row]}), status=status, mimetype="application/json")
        with pytest.raises((Failure, BaseExceptionGroup, AssertionError)):
            validate("get", "/api/now/table/task", Client(answer).get("/api/now/table/task"))


def _deep(levels: int) -> str:
    return '{"short_description": ' + "[" * levels + "]" * levels + "}"


CASE = "/api/now/table/sn_customerservice_case"
TASK, RESTORE = "/api/now/table/task", "/api/caseloom/definitions/history/{id}/restore"
HARD_INPUTS = [  # (method, documented path, path, JSON text): inputs that once answered 500
    pytest.param("get", TASK, f"{TASK}?sysparm_query=stateVALCHANGES", None, id="VALCHANGES"),
    pytest.param("get", TASK, f"{TASK}?sysparm_query=stateCHANGESTO10", None, id="CHANGESTO"),
    pytest.param("get", TASK, f"{TASK}?sysparm_query=stateCHANGESFROM1", None, id="CHANGESFROM"),
    pytest.param("get", TASK, f"{TASK}?sysparm_offset={2**63}", None, id="offset-2^63"),
    pytest.param("get", TASK, f"{TASK}?sysparm_query=" + "^".join(["active=true"] * 3000), None, id="3000-terms"),
    pytest.param("post", CASE, CASE, _deep(1000), id="nested-1000"),
    pytest.param("post", CASE, CASE, '{"short_description": "lone \\ud800 surrogate"}', id="lone-surrogate"),
    pytest.param("post", CASE, CASE, '{"short_description": "nul \\u0000 character"}', id="nul"),
    pytest.param("post", TASK, TASK, '{"opened_at": "0001-01-01T00:00:00+05:00"}', id="datetime-before-1"),
    pytest.param("post", TASK, TASK, '{"opened_at": "9999-12-31T23:00:00-05:00"}', id="datetime-after-9999"),
    pytest.param("post", RESTORE, RESTORE.replace("{id}", str(2**31)), None, id="history-id-2^31"),
    pytest.param("post", RESTORE, RESTORE.replace("{id}", str(2**63)), None, id="history-id-2^63"),
]


@pytest.mark.parametrize(("method", "documented", "path", "body"), HARD_INPUTS)
def test_hard_inputs_get_documented_answers(client, validate, method, documented, path, body):
    response = client.open(path, method=method.upper(), data=body, headers={
        **ADMIN, "Content-Type": "application/json"})
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    validate(method, documented, response)


@pytest.mark.parametrize("shape", ["object", "list"])
@pytest.mark.parametrize(("table", "field", "target"), [
    ("sn_customerservice_case", "recipient_list", "sn_publications_recipients_list"),  # rules read recipient_list.type
    ("sn_publications_recipientslist_account_m2m", "recipients_list", "sn_publications_recipients_list"),
])
def test_references_as_objects_or_lists_where_rules_dot_walk_them(as_user, validate, shape, table, field, target):
    api = as_user("admin")
    target_id = api.get(f"/api/now/table/{target}?sysparm_limit=1&sysparm_fields=sys_id").get_json()["result"][0]["sys_id"]
    case = api.get(f"{CASE}?sysparm_limit=1&sysparm_fields=sys_id").get_json()["result"][0]["sys_id"]
    value = {"value": target_id} if shape == "object" else [target_id]
    body = {field: value, "short_description": "x"} if table == "sn_customerservice_case" else {field: value}
    created = api.post(f"/api/now/table/{table}", body)
    assert created.status_code in (201, 400), created.get_json()
    validate("post", f"/api/now/table/{table}", created)
    if table == "sn_customerservice_case":
        patched = api.patch(f"{CASE}/{case}", {field: value})
        assert patched.status_code in (200, 400), patched.get_json()
        validate("patch", f"{CASE}/{{sys_id}}", patched)


def test_read_only_fields_written_through_patch_are_refused(as_user, validate):
    api = as_user("admin")
    case = api.get(f"{CASE}?sysparm_limit=1&sysparm_fields=sys_id").get_json()["result"][0]["sys_id"]
    for values in ({"number": "CS9999999"}, {"major_case_state": "accepted"}, {"sys_created_by": "mallory"}):
        response = api.patch(f"{CASE}/{case}", values)
        assert response.status_code == 400, response.get_json()
        validate("patch", f"{CASE}/{{sys_id}}", response)


def test_datetimes_before_the_year_1000_keep_four_digits(as_user, validate):
    """ServiceNow's (and the document's) YYYY-MM-DD HH:MM:SS, for every year the field takes."""
    created = as_user("admin").post("/api/now/table/task?sysparm_fields=opened_at", {"opened_at": "0999-12-31 23:00:00"})
    assert created.status_code == 201
    assert created.get_json()["result"]["opened_at"] == "0999-12-31 23:00:00"
    validate("post", "/api/now/table/task", created)


def test_the_system_status_answer_matches_the_document(client, app, validate):
    """With jobs of every kind (running, lost, a slice, ended) and e-mail, and with a part that cannot be read."""
    from test_status import scene

    scene(app.extensions["caseloom"])
    answer = client.get("/api/caseloom/status", headers=basic("admin"))
    assert answer.status_code == 200 and len(answer.get_json()["result"]["jobs"]["active"]) == 4
    validate("get", "/api/caseloom/status", answer)
    refused = client.get("/api/caseloom/status", headers=basic("agent"))
    assert refused.status_code == 403
    validate("get", "/api/caseloom/status", refused)
