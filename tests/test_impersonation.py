"""Impersonate user: an administrator's browser session views as another user, sees and does what
that user would (pages, lists, actions, the Table API through the same cookie), with a banner on
every page; start and stop are audited on the user's record; HTTP Basic never impersonates."""

from __future__ import annotations

import html
import re

import pytest

from conftest import basic, form_token, ui_sign_in

CASES = "/api/now/table/sn_customerservice_case"
BANNER = "Viewing as Alex Agent (impersonated by System Administrator) · Stop impersonating"


def text_of(page: str) -> str:
    """A page's text as a person reads it: tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def banner(client) -> str | None:
    page = client.get("/").get_data(as_text=True)
    found = re.search(r'<div class="impersonating">(.*?)</div>', page, re.S)
    return text_of(found.group(1)) if found else None


def flashes(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<p class="flash [a-z]+"[^>]*>([^<]*)</p>', page)]


def user_id(client, user_name: str) -> str:
    found = client.get(f"/api/now/table/sys_user?sysparm_query=user_name={user_name}&sysparm_fields=sys_id",
                       headers=basic("admin")).json["result"]
    return found[0]["sys_id"]


def impersonate(client, user_name: str, token: str | None = None):
    data = {"user": user_id(client, user_name)}
    data["csrf_token"] = token if token is not None else form_token(client, "/")
    return client.post("/ui/impersonate", data=data)


def stop(client):
    return client.post("/ui/impersonate/stop", data={"csrf_token": form_token(client, "/")})


def audit(client, user_name: str, reader: str = "admin") -> list[tuple[str, str]]:
    """The impersonation audit rows of a user's record (who, what), oldest first."""
    rows = client.get(f"/api/now/table/sys_audit?sysparm_query=fieldname=impersonation^documentkey="
                      f"{user_id(client, user_name)}^ORDERBYsys_created_on&sysparm_fields=user,newvalue,tablename",
                      headers=basic(reader, reader)).json["result"]
    assert {r["tablename"] for r in rows} <= {"sys_user"}
    return [(r["user"], r["newvalue"]) for r in rows]


@pytest.fixture
def admin(client):
    ui_sign_in(client, "admin")
    return client


def test_the_page_lists_active_users_and_is_linked_from_the_top_bar_for_admins_only(admin, app):
    assert '<a href="/ui/impersonate">Impersonate user</a>' in admin.get("/").get_data(as_text=True)
    page = text_of(admin.get("/ui/impersonate").get_data(as_text=True))
    assert "Alex Agent agent agent@example.com Impersonate Alex Agent" in page
    assert "System Administrator admin admin@example.com You" in page  # nobody impersonates themselves
    found = text_of(admin.get("/ui/impersonate?q=morg").get_data(as_text=True))
    assert "Impersonate Morgan Manager" in found and "Alex Agent" not in found
    agent = app.test_client()
    ui_sign_in(agent, "agent")
    assert "Impersonate user" not in agent.get("/").get_data(as_text=True)
    assert agent.get("/ui/impersonate").status_code == 403
    assert impersonate(agent, "manager").status_code == 403


def test_start_shows_the_banner_and_the_users_pages_and_stop_returns_to_the_admin(admin):
    started = impersonate(admin, "agent")
    assert started.status_code == 302 and started.headers["Location"] == "/"
    home = admin.get("/").get_data(as_text=True)
    assert "Welcome, Alex Agent" in home
    assert flashes(home) == ["You are now viewing as Alex Agent: you see and do what they would."]
    assert banner(admin) == BANNER
    assert "Impersonate user" not in home and ">Definitions<" not in home and ">Properties<" not in home
    assert BANNER in text_of(admin.get("/sn_customerservice_case_list.do").get_data(as_text=True))  # on every page

    stopped = stop(admin)  # the agent has no admin right: stopping needs none
    assert stopped.status_code == 302 and stopped.headers["Location"] == "/ui/impersonate"
    assert flashes(admin.get("/ui/impersonate").get_data(as_text=True)) == ["You are System Administrator again."]
    assert banner(admin) is None
    assert "Welcome, System Administrator" in admin.get("/").get_data(as_text=True)
    assert audit(admin, "agent") == [("admin", "admin started viewing as this user"),
                                     ("admin", "admin stopped viewing as this user")]


def test_the_audit_shows_on_the_users_record(admin):
    impersonate(admin, "agent")
    stop(admin)
    page = text_of(admin.get(f"/sys_user.do?sys_id={user_id(admin, 'agent')}").get_data(as_text=True))
    assert "admin started viewing as this user" in page and "admin stopped viewing as this user" in page


@pytest.mark.parametrize("path", ["/ui/properties", "/ui/definitions", "/ui/impersonate", "/ui/layout/customer_account/list",
                                  "/sys_audit_list.do"])
def test_while_impersonating_an_agent_admin_pages_are_forbidden(admin, path):
    assert admin.get(path).status_code == 200
    impersonate(admin, "agent")
    assert admin.get(path).status_code == 403


@pytest.mark.parametrize(("user", "path", "status"), [
    ("agent", "/sn_customerservice_case_list.do", 200),
    ("author", "/sn_customerservice_case_list.do", 403),  # an author does not read cases
    ("author", "/sn_publications_recipients_list_list.do", 200),
    ("agent", "/sys_audit_list.do", 403),
    ("manager", "/sys_audit_list.do", 200),
])
def test_lists_answer_as_they_would_for_the_user(admin, user, path, status):
    impersonate(admin, user)
    assert admin.get(path).status_code == status


def test_the_table_api_through_the_cookie_acts_as_the_user_and_basic_never_impersonates(admin):
    impersonate(admin, "agent")
    token = form_token(admin, "/")
    assert admin.get("/api/now/table/sys_audit?sysparm_limit=1").status_code == 403
    assert admin.get("/api/caseloom/definitions/tables/customer_account.yaml").status_code == 403
    made = admin.post(CASES, json={"short_description": "Made while impersonating"}, headers={"X-CSRFToken": token})
    assert made.status_code == 201, made.get_data(as_text=True)
    case = admin.get(f"{CASES}/{made.json['result']['sys_id']}?sysparm_fields=sys_created_by,sys_updated_by")
    # a write while impersonating is the impersonated user's
    assert case.json["result"] == {"sys_created_by": "agent", "sys_updated_by": "agent"}, case.get_data(as_text=True)
    # HTTP Basic is its own sign-in: the same client with the admin's password is the admin
    assert admin.get("/api/now/table/sys_audit?sysparm_limit=1", headers=basic("admin")).status_code == 200
    assert admin.post(CASES, json={"short_description": "x"}).status_code == 403  # no CSRF token: refused


def test_an_action_from_the_form_is_done_as_the_user(admin):
    impersonate(admin, "agent")
    made = admin.post(CASES, json={"short_description": "Printer down", "state": "10"},
                      headers={"X-CSRFToken": form_token(admin, "/")}).json["result"]
    url = f"/sn_customerservice_case.do?sys_id={made['sys_id']}"
    done = admin.post(f"/ui/action/sn_customerservice_case/{made['sys_id']}/propose_major_case",
                      data={"reason": "Many customers", "csrf_token": form_token(admin, url)})
    assert done.status_code == 302
    notes = admin.get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={made['sys_id']}"
                      "&sysparm_fields=sys_created_by,value", headers=basic("admin")).json["result"]
    assert {"sys_created_by": "agent", "value": "Proposed as a major case: Many customers"} in notes


def test_starting_and_stopping_need_the_csrf_token_and_a_get_changes_nothing(admin):
    assert impersonate(admin, "agent", token="").status_code == 400
    assert admin.get(f"/ui/impersonate?user={user_id(admin, 'agent')}").status_code == 200
    assert banner(admin) is None
    impersonate(admin, "agent")
    assert admin.post("/ui/impersonate/stop", data={}).status_code == 400
    assert admin.get("/ui/impersonate/stop").status_code == 405
    assert banner(admin) == BANNER


def deactivate(runtime, user_name: str) -> None:
    from caseloom.query import Query, Term

    with runtime.transaction() as service:
        user = service.query("sys_user", Query(Term("user_name", "eq", user_name)), ["sys_id"])[0]
        service.update("sys_user", user["sys_id"], {"active": False})


def lock_out(app, user_name: str) -> None:
    other = app.test_client()
    for _ in range(5):  # CASELOOM_LOGIN_FAILURES_PER_USER
        other.post("/login", data={"user_name": user_name, "user_password": "wrong",
                                   "csrf_token": form_token(other, "/login")})


@pytest.mark.parametrize(("user", "prepare", "status", "message"), [
    ("author", "deactivate", 409, "Ari Author is inactive: an inactive user cannot be impersonated."),
    ("agent", "lock_out", 409,
     "Alex Agent is locked out after failed sign-ins (for 5 minutes more): they cannot be impersonated."),
    ("admin", None, 409, "You are signed in as System Administrator: there is nobody to impersonate."),
    ("", None, 400, "Choose a user to impersonate (the form's `user` field is empty)."),
    ("0" * 32, None, 404, f"No user has the sys_id '{'0' * 32}'."),
])
def test_who_cannot_be_impersonated_is_refused_with_the_reason(admin, app, runtime, user, prepare, status, message):
    if prepare == "deactivate":
        deactivate(runtime, user)
    elif prepare == "lock_out":
        lock_out(app, user)
    sys_id = user_id(admin, user) if user in ("author", "agent", "admin") else user
    answer = admin.post("/ui/impersonate", data={"user": sys_id, "csrf_token": form_token(admin, "/")})
    assert answer.status_code == status
    assert re.findall(r'<p class="flash error" role="alert">([^<]*)</p>', html.unescape(answer.get_data(as_text=True))) \
        == [message]
    assert banner(admin) is None


def test_the_page_marks_locked_out_users_and_leaves_out_inactive_ones(admin, app, runtime):
    deactivate(runtime, "author")
    lock_out(app, "agent")
    page = text_of(admin.get("/ui/impersonate").get_data(as_text=True))
    assert "Alex Agent agent agent@example.com Locked out for 5 minutes" in page
    assert "Ari Author" not in page
    assert ">Impersonate Alex Agent</button>" not in admin.get("/ui/impersonate").get_data(as_text=True)


def test_signing_out_ends_the_impersonation_and_the_session(admin):
    impersonate(admin, "agent")
    cookie = admin.get_cookie("session").value
    out = admin.post("/logout", data={"csrf_token": form_token(admin, "/")})
    assert out.status_code == 302
    assert admin.get("/").status_code == 302  # signed out
    admin.set_cookie("session", cookie)  # a copy of the old cookie signs nobody in, as nobody
    assert admin.get("/").status_code == 302
    assert admin.get("/api/now/table/sys_user?sysparm_limit=1").status_code == 401
    assert audit(admin, "agent")[-1] == ("admin", "admin signed out while viewing as this user")
    ui_sign_in(admin, "admin")
    assert banner(admin) is None and "Welcome, System Administrator" in admin.get("/").get_data(as_text=True)


def test_the_impersonation_ends_when_the_user_is_deactivated(admin, runtime):
    impersonate(admin, "author")
    deactivate(runtime, "author")
    assert "Welcome, System Administrator" in admin.get("/").get_data(as_text=True)
    assert banner(admin) is None
    assert audit(admin, "author") == [
        ("admin", "admin started viewing as this user"),
        ("admin", "admin stopped viewing as this user (their sessions ended: deactivated or new password)")]


def test_the_impersonation_ends_when_the_admin_loses_the_admin_role(admin, runtime):
    from caseloom.users import add_user

    with runtime.transaction() as service:  # a second administrator, so the first may lose the role
        add_user(service, "admin2", "admin2", ["admin"])
    impersonate(admin, "agent")
    with runtime.transaction() as service:
        add_user(service, "admin", None, ["sn_customerservice_agent"])
    assert "Welcome, System Administrator" in admin.get("/").get_data(as_text=True)
    assert banner(admin) is None
    assert audit(admin, "agent", reader="admin2")[-1] == ("admin", "admin stopped viewing as this user (no longer allowed)")


def test_an_administrator_viewed_as_may_hand_over_to_another_user(admin, runtime):
    from caseloom.users import add_user

    with runtime.transaction() as service:
        add_user(service, "admin2", "admin2", ["admin"], {"name": "Second Admin"})
    impersonate(admin, "admin2")
    assert banner(admin) == "Viewing as Second Admin (impersonated by System Administrator) · Stop impersonating"
    impersonate(admin, "agent")
    assert banner(admin) == BANNER  # still impersonated by the one who signed in
    assert audit(admin, "admin2") == [("admin", "admin started viewing as this user"),
                                      ("admin", "admin stopped viewing as this user")]
