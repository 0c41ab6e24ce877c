"""Users and roles stay consistent: deleting a record deletes, clears or is refused by what refers
to it (a reference's `on_delete`); the last active administrator cannot be deleted, deactivated or
stripped of the admin role."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caseloom.cli import main
from caseloom.definitions import load_sources
from caseloom.definitions.loader import read_sources
from caseloom.migrate import migrate
from caseloom.records import Conflict
from caseloom.runtime import Runtime
from caseloom.users import add_user
from conftest import DEFINITIONS, basic

USERS = "/api/now/table/sys_user"
ROLES = "/api/now/table/sys_user_has_role"


def user_id(api, name: str) -> str:
    return api.get(f"{USERS}?sysparm_query=user_name={name}&sysparm_fields=sys_id").json["result"][0]["sys_id"]


def orphans(runtime) -> int:
    has_role = runtime.storage.physical("sys_user_has_role")
    members = runtime.storage.physical("sys_user_grmember")
    with runtime.engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(has_role).where(has_role.c.user.is_(None))).scalar()
                + conn.execute(sa.select(sa.func.count()).select_from(members).where(
                    sa.or_(members.c.user.is_(None), members.c.group.is_(None)))).scalar())


def test_deleting_a_user_deletes_its_roles_and_group_memberships(as_user, runtime):
    admin = as_user("admin")
    group = admin.post("/api/now/table/sys_user_group", json={"name": "Tier 2"}).json["result"]["sys_id"]
    agent = user_id(admin, "agent")
    assert admin.post("/api/now/table/sys_user_grmember", json={"group": group, "user": agent}).status_code == 201
    assert admin.delete(f"{USERS}/{agent}").status_code == 204
    assert admin.get(f"{ROLES}?sysparm_query=user={agent}").json["result"] == []
    assert admin.get(f"/api/now/table/sys_user_grmember?sysparm_query=group={group}").json["result"] == []
    assert orphans(runtime) == 0
    # each deletion is audited, the cascaded ones too
    audit = admin.get("/api/now/table/sys_audit?sysparm_query=fieldname=DELETED^tablename=sys_user_has_role"
                      "&sysparm_fields=documentkey").json["result"]
    assert audit


def test_deleting_a_group_deletes_its_memberships_and_clears_references(as_user, runtime):
    admin = as_user("admin")
    group = admin.post("/api/now/table/sys_user_group", json={"name": "Tier 3"}).json["result"]["sys_id"]
    agent = user_id(admin, "agent")
    admin.post("/api/now/table/sys_user_grmember", json={"group": group, "user": agent})
    case = admin.get("/api/now/table/sn_customerservice_case?sysparm_limit=1&sysparm_fields=sys_id").json["result"][0]
    assert admin.patch(f"/api/now/table/sn_customerservice_case/{case['sys_id']}",
                       json={"assignment_group": group}).status_code == 200
    assert admin.delete(f"/api/now/table/sys_user_group/{group}").status_code == 204
    assert orphans(runtime) == 0
    after = admin.get(f"/api/now/table/sn_customerservice_case/{case['sys_id']}?sysparm_fields=assignment_group")
    assert after.json["result"]["assignment_group"] == ""  # an optional reference is cleared


GADGETS = """table: u_part
label: Part
display: name
fields:
  name: {type: string}
  u_holder: {type: reference, to: u_holder, on_delete: ON_DELETE}
"""
HOLDER = """table: u_holder
label: Holder
display: name
fields:
  name: {type: string}
"""


@pytest.mark.parametrize("on_delete, outcome", [("clear", "cleared"), ("delete", "deleted"), ("restrict", "refused")])
def test_on_delete_of_a_reference(config, on_delete, outcome):
    defs = load_sources([*read_sources(DEFINITIONS), ("tables/u_holder.yaml", HOLDER),
                         ("tables/u_part.yaml", GADGETS.replace("ON_DELETE", on_delete))])
    runtime = Runtime(config, defs)
    migrate(runtime.engine, runtime.storage)
    with runtime.transaction() as service:
        holder = service.insert("u_holder", {"name": "Rack"})["sys_id"]
        part = service.insert("u_part", {"name": "Bolt", "u_holder": holder})["sys_id"]
    if outcome == "refused":
        with pytest.raises(Conflict) as caught, runtime.transaction() as service:
            service.delete("u_holder", holder)
        assert "1 Part record(s) refer to it through U holder" in str(caught.value)
    else:
        with runtime.transaction() as service:
            service.delete("u_holder", holder)
    with runtime.transaction() as service:
        left = service.get("u_part", part)
        still = service.get("u_holder", holder)
    assert {"cleared": left is not None and left["u_holder"] is None and still is None,
            "deleted": left is None and still is None,
            "refused": left is not None and still is not None}[outcome]
    runtime.engine.dispose()


# -- the last administrator ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["delete", "deactivate", "strip role", "change role", "cli"])
def test_the_last_active_admin_stays(as_user, database_url, monkeypatch, how):
    admin = as_user("admin")
    me = user_id(admin, "admin")
    role_row = admin.get(f"{ROLES}?sysparm_query=user={me}^role=admin&sysparm_fields=sys_id").json["result"][0]["sys_id"]
    if how == "cli":
        monkeypatch.setenv("CASELOOM_DATABASE_URL", database_url)
        monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
        result = CliRunner().invoke(main, ["user", "add", "admin", "--password", "admin", "--role",
                                           "sn_customerservice_agent"])
        assert result.exit_code == 1 and "last active administrator" in result.output
    else:
        r = {"delete": lambda: admin.delete(f"{USERS}/{me}"),
             "deactivate": lambda: admin.patch(f"{USERS}/{me}", json={"active": "false"}),
             "strip role": lambda: admin.delete(f"{ROLES}/{role_row}"),
             "change role": lambda: admin.patch(f"{ROLES}/{role_row}", json={"role": "sn_customerservice_agent"})}[how]()
        assert r.status_code == 409, r.json
        assert "last active administrator" in r.json["error"]["message"]
    assert admin.get(f"{USERS}/{me}?sysparm_fields=active").json["result"]["active"] == "true"


def test_an_admin_may_go_once_another_active_admin_exists(as_user, runtime, client):
    with runtime.transaction() as service:
        add_user(service, "root2", "root2-password", ["admin"])
    admin = as_user("admin")
    me = user_id(admin, "admin")
    assert admin.patch(f"{USERS}/{me}", json={"active": "false"}).status_code == 200
    other = basic("root2", "root2-password")
    r = client.delete(f"{USERS}/{user_id(as_user('agent'), 'root2')}", headers=other)
    assert r.status_code == 409  # now root2 is the last active one
