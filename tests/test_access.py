"""Who may do what: users from the command line, role containment, table access, browser sessions."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from werkzeug.security import check_password_hash

from caseloom.access import Actor, allowed
from caseloom.cli import main
from caseloom.query import parse_encoded
from caseloom.records import AccessDenied
from caseloom.users import authenticate
from conftest import DEFINITIONS, basic

CASES = "/api/now/table/sn_customerservice_case"
TABLE = "/api/now/table/"
MANAGER_ROLES = {"sn_customerservice_manager", "sn_majorissue_mgt.major_issue_manager", "sn_customerservice_agent"}


@pytest.fixture
def cli(database_url, monkeypatch):
    """`caseloom ...` against the test's database."""
    monkeypatch.setenv("CASELOOM_DATABASE_URL", database_url)
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def stored_user(runtime, user_name: str):
    users = runtime.storage.physical("sys_user")
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(users.c.sys_id, users.c.user_password)
                            .where(users.c.user_name == user_name)).first()


# -- caseloom user add ------------------------------------------------------------------------


def test_user_add_creates_a_user_who_can_use_the_api(cli, client, runtime):
    result = cli("user", "add", "dana", "--password", "Tr0ub4dor&3", "--role", "sn_customerservice_agent")
    assert result.exit_code == 0, result.output
    assert "dana" in result.output

    row = stored_user(runtime, "dana")
    assert row.user_password != "Tr0ub4dor&3" and check_password_hash(row.user_password, "Tr0ub4dor&3")

    r = client.get(CASES + "?sysparm_limit=2", headers=basic("dana", "Tr0ub4dor&3"))
    assert r.status_code == 200 and len(r.json["result"]) == 2
    r = client.post(CASES, json={"short_description": "Filed by dana"}, headers=basic("dana", "Tr0ub4dor&3"))
    assert r.status_code == 201 and r.json["result"]["sys_created_by"] == "dana"
    assert client.get(CASES, headers=basic("dana", "wrong")).status_code == 401


def test_user_add_again_replaces_password_and_roles(cli, client, runtime):
    assert cli("user", "add", "eli", "--password", "first-pass", "--role", "sn_customerservice_agent",
               "--role", "sn_publications.author").exit_code == 0
    assert client.get(CASES, headers=basic("eli", "first-pass")).status_code == 200

    result = cli("user", "add", "eli", "--password", "second-pass", "--role", "sn_publications.author")
    assert result.exit_code == 0, result.output
    assert client.get(CASES, headers=basic("eli", "first-pass")).status_code == 401
    assert client.get(CASES, headers=basic("eli", "second-pass")).status_code == 403  # no longer an agent
    assert client.get(TABLE + "customer_account", headers=basic("eli", "second-pass")).status_code == 200
    with runtime.transaction() as service:
        assert service.count("sys_user", parse_encoded("user_name=eli")) == 1


def test_user_add_refuses_an_unknown_role(cli, runtime):
    result = cli("user", "add", "fay", "--password", "whatever1", "--role", "sn_customerservice_agent",
                 "--role", "sn_customerservice_wizard")
    assert result.exit_code == 1
    assert "unknown role 'sn_customerservice_wizard'" in result.output
    assert "sn_customerservice_agent" in result.output  # the message lists the declared roles
    assert stored_user(runtime, "fay") is None


def test_user_add_needs_a_role_and_a_password(cli, runtime):
    assert cli("user", "add", "gus", "--password", "pw").exit_code != 0
    assert cli("user", "add", "gus", "--role", "admin").exit_code != 0
    assert stored_user(runtime, "gus") is None


# -- roles ------------------------------------------------------------------------------------


def test_manager_role_contains_major_issue_manager_and_agent(definitions, runtime):
    assert definitions.role_closure({"sn_customerservice_manager"}) == MANAGER_ROLES
    assert definitions.role_closure({"sn_majorissue_mgt.major_issue_manager"}) == {
        "sn_majorissue_mgt.major_issue_manager", "sn_customerservice_agent"}
    assert definitions.role_closure({"sn_customerservice_agent"}) == {"sn_customerservice_agent"}
    with runtime.engine.connect() as conn:
        manager = authenticate(runtime.storage, conn, "manager", "manager")
        mim = authenticate(runtime.storage, conn, "mim", "mim")
        assert authenticate(runtime.storage, conn, "manager", "Manager") is None
    assert manager.roles == MANAGER_ROLES
    assert "sn_customerservice_manager" not in mim.roles  # containment goes one way


def test_contained_roles_grant_their_access(as_user):
    """Recipients lists may be written by the major issue manager role only (or author):
    the manager has it through containment, the agent does not."""
    body = {"name": "Affected EU customers", "type": "accounts", "conditions": "country=DE"}
    assert as_user("agent").post(TABLE + "sn_publications_recipients_list", json=body).status_code == 403
    assert as_user("mim").post(TABLE + "sn_publications_recipients_list", json=body).status_code == 201
    assert as_user("manager").post(TABLE + "sn_publications_recipients_list", json=body).status_code == 201


# -- table access per operation ---------------------------------------------------------------------

BODIES = {
    "sn_customerservice_case": {"short_description": "Access check"},
    "customer_account": {"name": "Access Check Inc"},
    "customer_contact": {"name": "Access Checker"},
    "sn_publications_recipients_list": {"name": "Access list", "type": "accounts"},
    "sys_audit": {"tablename": "x", "fieldname": "y"},
    "sys_user": {"user_name": "access_check"},
}

ALLOWED = [
    ("agent", "sn_customerservice_case", {"read", "create", "write"}),
    ("manager", "sn_customerservice_case", {"read", "create", "write", "delete"}),
    ("mim", "sn_customerservice_case", {"read", "create", "write"}),
    ("author", "sn_customerservice_case", set()),
    ("admin", "sn_customerservice_case", {"read", "create", "write", "delete"}),
    ("agent", "customer_account", {"read"}),
    ("author", "customer_account", {"read"}),
    ("manager", "customer_account", {"read", "create", "write"}),
    ("admin", "customer_account", {"read", "create", "write", "delete"}),
    ("agent", "customer_contact", {"read", "create", "write"}),
    ("author", "sn_publications_recipients_list", {"read", "create", "write", "delete"}),
    ("agent", "sn_publications_recipients_list", {"read"}),
    ("agent", "sys_audit", set()),
    ("manager", "sys_audit", {"read"}),
    ("agent", "sys_user", {"read"}),
    ("admin", "sys_user", {"read", "create", "write", "delete"}),
]
OPERATIONS = ("read", "create", "write", "delete")


@pytest.fixture
def target(runtime):
    """An existing record of a table, made by the system, to read, write and delete."""
    def make(table: str) -> str:
        values = {**BODIES[table], **({"user_name": "victim"} if table == "sys_user" else {})}
        with runtime.transaction() as service:
            return service.insert(table, values)["sys_id"]
    return make


def exists(runtime, table: str, sys_id: str) -> bool:
    with runtime.transaction() as service:
        return service.get(table, sys_id) is not None


def count(runtime, table: str) -> int:
    with runtime.transaction() as service:
        return service.count(table, parse_encoded(""))


def attempt(api, runtime, target, table: str, operation: str) -> tuple[int, bool, dict]:
    """Try one operation through the Table API: (status, whether it took effect, response body)."""
    url = TABLE + table
    if operation == "read":
        record = target(table)
        r = api.get(url + "?sysparm_limit=1")
        assert api.get(f"{url}/{record}").status_code == r.status_code
        return r.status_code, r.status_code == 200, r.json
    if operation == "create":
        before = count(runtime, table)
        r = api.post(url, json=BODIES[table])
        return r.status_code, count(runtime, table) == before + 1, r.json
    record = target(table)
    if operation == "write":
        field = "short_description" if table == "sn_customerservice_case" else next(iter(BODIES[table]))
        r = api.patch(f"{url}/{record}", json={field: "changed"})
        with runtime.transaction() as service:
            return r.status_code, service.get(table, record)[field] == "changed", r.json
    r = api.delete(f"{url}/{record}")
    return r.status_code, not exists(runtime, table, record), r.json


@pytest.mark.parametrize("user, table, ops", ALLOWED, ids=[f"{u}-{t}" for u, t, _ in ALLOWED])
def test_table_access_per_operation(as_user, runtime, target, user, table, ops):
    api = as_user(user)
    success = {"read": 200, "create": 201, "write": 200, "delete": 204}
    for operation in OPERATIONS:
        status, took_effect, body = attempt(api, runtime, target, table, operation)
        ok = operation in ops
        assert status == (success[operation] if ok else 403), f"{user} {operation} {table}: {status}"
        assert took_effect is ok, f"{user} {operation} {table}"
        if not ok:
            assert body["status"] == "failure" and body["error"]["message"]


def test_record_service_enforces_access_unless_told_not_to(runtime, definitions):
    agent = Actor("agent", definitions.role_closure({"sn_customerservice_agent"}))
    assert allowed(definitions, agent, "sn_customerservice_case", "write")
    assert not allowed(definitions, agent, "sn_customerservice_case", "delete")
    with runtime.transaction() as service:
        case = service.insert("sn_customerservice_case", {"short_description": "Keep me"})["sys_id"]
    with runtime.transaction(agent) as service, pytest.raises(AccessDenied):
        service.delete("sn_customerservice_case", case)
    with runtime.transaction(agent) as service, pytest.raises(AccessDenied):
        service.insert("customer_account", {"name": "Nope"})
    assert exists(runtime, "sn_customerservice_case", case)
    with runtime.transaction(agent, check_access=False) as service:
        service.delete("sn_customerservice_case", case)
    assert not exists(runtime, "sn_customerservice_case", case)


# -- browser sessions ----------------------------------------------------------------------------


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html)
    assert found, "the page carries a CSRF token"
    return found.group(1)


def sign_in(client, user: str, password: str):
    page = client.get("/login")
    assert page.status_code == 200
    return client.post("/login", data={"user_name": user, "user_password": password,
                                       "csrf_token": csrf_token(page.get_data(as_text=True))})


def test_session_login_then_api_with_the_cookie(client):
    assert client.get(CASES).status_code == 401
    r = sign_in(client, "agent", "agent")
    assert r.status_code == 302 and r.headers["Location"].endswith("/")
    home = client.get("/")
    assert home.status_code == 200 and "agent" in home.get_data(as_text=True)

    r = client.get(CASES + "?sysparm_limit=3")
    assert r.status_code == 200 and len(r.json["result"]) == 3
    assert client.get(TABLE + "sys_audit").status_code == 403  # the session has the agent's roles, no more

    total = client.get(CASES + "?sysparm_limit=1").headers["X-Total-Count"]
    r = client.post(CASES, json={"short_description": "From the browser"})
    assert r.status_code == 403 and r.json["status"] == "failure" and "CSRF" in r.json["error"]["message"]
    assert client.patch(f"{CASES}/{'a' * 32}", json={"state": "10"}).status_code == 403
    assert client.get(CASES + "?sysparm_limit=1").headers["X-Total-Count"] == total

    token = csrf_token(home.get_data(as_text=True))
    r = client.post(CASES, json={"short_description": "From the browser"}, headers={"X-CSRFToken": token})
    assert r.status_code == 201 and r.json["result"]["sys_created_by"] == "agent"
    r = client.post(CASES, json={"short_description": "Forged"}, headers={"X-CSRFToken": token[:-4] + "AAAA"})
    assert r.status_code == 403


def test_logout_ends_the_session(client):
    assert sign_in(client, "manager", "manager").status_code == 302
    assert client.get(CASES + "?sysparm_limit=1").status_code == 200
    token = csrf_token(client.get("/").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get(CASES + "?sysparm_limit=1").status_code == 401


def test_wrong_password_at_login_shows_an_error_and_signs_nobody_in(client):
    r = sign_in(client, "agent", "not-the-password")
    assert r.status_code == 401
    html = r.get_data(as_text=True)
    assert "Wrong user name or password" in html and 'name="user_password"' in html
    assert client.get(CASES).status_code == 401
    assert sign_in(client, "nobody", "agent").status_code == 401


def test_login_form_needs_its_csrf_token(client):
    r = client.post("/login", data={"user_name": "agent", "user_password": "agent"})
    assert r.status_code == 400
    assert client.get(CASES).status_code == 401


@pytest.mark.parametrize("target_url, lands", [
    ("/api/now/table/customer_account", "/api/now/table/customer_account"),
    ("//evil.example.com/", "/"),
    ("https://evil.example.com/", "/"),
    ("/\\evil.example.com/", None),  # browsers read a raw /\ as //
])
def test_login_only_redirects_within_the_site(client, target_url, lands):
    page = client.get("/login", query_string={"next": target_url})
    r = client.post("/login", query_string={"next": target_url},
                    data={"user_name": "agent", "user_password": "agent", "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert r.status_code == 302
    where = urlsplit(urljoin("http://localhost/login", r.headers["Location"].replace("\\", "/")))
    assert where.netloc == "localhost"
    if lands:
        assert where.path == lands
