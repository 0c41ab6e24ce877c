"""Sessions and sign-in: server-side sessions, secure cookies, POST-only sign-out, throttled
password sign-ins (form and HTTP Basic), equal work for unknown users, no open redirect."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
import sqlalchemy as sa

from caseloom import records as records_module
from caseloom import sessions, signin, users
from caseloom.users import add_user
from caseloom.web.auth import SESSION_TOKEN, safe_path
from conftest import basic

CASES = "/api/now/table/sn_customerservice_case?sysparm_limit=1"
USERS = "/api/now/table/sys_user"
AGENT_ROLE = "sn_customerservice_agent"


# -- helpers -----------------------------------------------------------------------------------


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page carries a CSRF token"
    return found.group(1)


def sign_in(client, user: str, password: str | None = None, url: str = "/login", **kw):
    """The sign-in form, as a browser fills it (the page first, for its CSRF token)."""
    page = client.get(url, **kw)
    assert page.status_code in (200, 401, 429)
    return client.post(url, data={"user_name": user, "user_password": password or user,
                                  "csrf_token": csrf_token(page.get_data(as_text=True))}, **kw)


def sign_out(client):
    home = client.get("/")
    return client.post("/logout", data={"csrf_token": csrf_token(home.get_data(as_text=True))})


def attempt(client, channel: str, user: str, password: str, **kw) -> tuple[int, object]:
    """One password sign-in by the login form or by HTTP Basic on the API: (status, response)."""
    if channel == "form":
        r = sign_in(client, user, password, **kw)
    else:
        kw["headers"] = {**kw.get("headers", {}), **basic(user, password)}
        r = client.get(CASES, **kw)
    return r.status_code, r


def user_sys_id(client, user_name: str) -> str:
    r = client.get(f"{USERS}?sysparm_query=user_name={user_name}", headers=basic("admin"))
    return r.json["result"][0]["sys_id"]


def session_cookie(response) -> str:
    found = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert found, "the response sets the session cookie"
    return found[-1]


class Clock:
    """Moves the time sessions and sign-in throttling see."""

    def __init__(self, monkeypatch):
        self.offset = dt.timedelta()
        for module in (sessions, signin):
            monkeypatch.setattr(module, "now", lambda: records_module.now() + self.offset)

    def advance(self, **delta) -> None:
        self.offset += dt.timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


# -- server-side sessions ---------------------------------------------------------------------


def test_a_copied_session_cookie_stops_working_after_sign_out(app, client):
    assert sign_in(client, "agent").status_code == 302
    copy = app.test_client()
    copy.set_cookie("session", client.get_cookie("session").value)
    assert copy.get(CASES).status_code == 200

    r = sign_out(client)
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert client.get(CASES).status_code == 401
    assert copy.get(CASES).status_code == 401
    assert copy.get("/").status_code == 302  # the UI sends the copy to the sign-in page


def test_the_cookie_carries_a_token_and_the_server_keeps_only_its_hash(app, client):
    assert sign_in(client, "agent").status_code == 302
    data = app.session_interface.get_signing_serializer(app).loads(client.get_cookie("session").value)
    token = data[SESSION_TOKEN]
    assert "user" not in data and len(token) >= 40
    rt = app.extensions["caseloom"]
    with rt.engine.connect() as conn:
        table = rt.storage.internal(sessions.TABLE)
        stored = conn.execute(sa.select(table.c.token_hash, table.c.user_sys_id)).all()
    assert [h for h, _ in stored] == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in {h for h, _ in stored}


def test_sign_out_is_post_only(client):
    assert sign_in(client, "agent").status_code == 302
    assert client.get("/logout").status_code == 405
    assert client.get(CASES).status_code == 200  # a link or an image cannot sign anybody out
    assert client.post("/logout").status_code == 400  # nor can another site: the form's CSRF token is required
    assert client.get(CASES).status_code == 200


@pytest.mark.parametrize("change", ["password", "deactivated", "deleted"])
def test_new_credentials_end_every_session_of_that_user_only(app, client, change):
    agent_here, agent_there, manager = client, app.test_client(), app.test_client()
    for browser, user in ((agent_here, "agent"), (agent_there, "agent"), (manager, "manager")):
        assert sign_in(browser, user).status_code == 302
        assert browser.get(CASES).status_code == 200
    agent = user_sys_id(client, "agent")

    if change == "deleted":
        r = client.delete(f"{USERS}/{agent}", headers=basic("admin"))
    else:
        values = {"user_password": "a-new-secret"} if change == "password" else {"active": "false"}
        r = client.patch(f"{USERS}/{agent}", json=values, headers=basic("admin"))
    assert r.status_code in (200, 204), r.get_data(as_text=True)

    assert agent_here.get(CASES).status_code == 401
    assert agent_there.get(CASES).status_code == 401
    assert manager.get(CASES).status_code == 200
    if change == "password":
        assert sign_in(agent_here, "agent", "a-new-secret").status_code == 302
        assert agent_here.get(CASES).status_code == 200


def test_a_change_that_is_not_a_new_credential_keeps_sessions(app, client):
    assert sign_in(client, "agent").status_code == 302
    r = client.patch(f"{USERS}/{user_sys_id(client, 'agent')}", json={"email": "agent@example.com"},
                     headers=basic("admin"))
    assert r.status_code == 200
    assert client.get(CASES).status_code == 200


def test_sessions_end_in_the_same_transaction_as_the_users_write(runtime):
    with runtime.transaction() as service:
        agent = add_user(service, "ida", "ida-password", [AGENT_ROLE])["sys_id"]
        token = sessions.start(runtime.storage, service.conn, agent)
    with pytest.raises(RuntimeError), runtime.transaction() as service:
        service.update("sys_user", agent, {"user_password": "another"})
        assert sessions.count(runtime.storage, service.conn, agent) == 0
        raise RuntimeError("the write fails after the change")
    with runtime.engine.connect() as conn:  # rolled back together: the session lives on
        assert users.signed_in(runtime.storage, conn, token, sessions.SessionPolicy())[0] == sessions.Session(agent, stale=False)


def test_sessions_expire_when_idle_and_after_their_lifetime(client, clock):
    policy = sessions.SessionPolicy()
    assert sign_in(client, "agent").status_code == 302
    clock.advance(seconds=policy.idle.total_seconds() * 0.75)
    assert client.get(CASES).status_code == 200  # a request keeps it alive for another idle period
    clock.advance(seconds=policy.idle.total_seconds() * 0.75)
    assert client.get(CASES).status_code == 200
    clock.advance(seconds=policy.idle.total_seconds() + 1)
    assert client.get(CASES).status_code == 401  # idle too long

    assert sign_in(client, "agent").status_code == 302
    step = policy.idle / 2
    for _ in range(int(policy.lifetime / step) - 1):
        clock.advance(seconds=step.total_seconds())
        assert client.get(CASES).status_code == 200
    clock.advance(seconds=step.total_seconds() + 1)
    assert client.get(CASES).status_code == 401  # busy, but past its lifetime


# -- cookies over HTTPS -------------------------------------------------------------------------


@pytest.mark.parametrize("proxies, base_url, served_at, headers, secure", [
    (0, None, "http://localhost", {}, False),
    (0, None, "https://localhost", {}, True),
    (1, None, "http://localhost", {"X-Forwarded-Proto": "https"}, True),
    (1, None, "http://localhost", {"X-Forwarded-Proto": "http"}, False),
    (0, None, "http://localhost", {"X-Forwarded-Proto": "https"}, False),  # an untrusted header is ignored
    (0, "https://cases.example.com/", "http://localhost", {}, True),
])
def test_the_session_cookie_is_secure_over_https(make_app, proxies, base_url, served_at, headers, secure):
    client = make_app(proxies=proxies, base_url=base_url).test_client()
    cookie = session_cookie(client.get("/login", base_url=served_at, headers=headers))
    attributes = {part.strip().split("=")[0] for part in cookie.split(";")}
    assert ("Secure" in attributes) is secure
    assert "HttpOnly" in attributes and "SameSite=Lax" in cookie


def test_sign_in_behind_a_proxy_over_https(make_app):
    client = make_app(proxies=1).test_client()
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "cases.example.com",
             "Referer": "https://cases.example.com/login"}
    r = sign_in(client, "agent", headers=proxy)
    assert r.status_code == 302 and "Secure" in session_cookie(r)
    assert client.get(CASES, headers=proxy).status_code == 200


# -- throttling ---------------------------------------------------------------------------------


CHANNELS = [("form",) * 3, ("basic",) * 3, ("form", "basic", "form")]


@pytest.mark.parametrize("channels", CHANNELS, ids=["form", "basic", "both"])
def test_failed_sign_ins_of_a_user_name_lock_it_out(make_app, clock, channels):
    client = make_app(login_failures_per_user=3, login_failures_per_address=100, login_lockout_seconds=60).test_client()
    for channel in channels:
        assert attempt(client, channel, "agent", "wrong")[0] == 401

    status, r = attempt(client, "basic", "agent", "agent")  # the right password, refused while locked
    assert status == 429 and r.headers["Retry-After"] == "60"
    assert r.json["status"] == "failure" and r.json["error"]["message"] == "Too many failed sign-ins"
    assert "try again in 1 minute" in r.json["error"]["detail"]
    clock.advance(seconds=20)
    status, r = attempt(client, "form", "agent", "agent")
    assert status == 429 and r.headers["Retry-After"] == "40"
    assert "Too many failed sign-ins. Try again in 40 seconds." in r.get_data(as_text=True)
    assert client.get(CASES).status_code == 401  # nobody signed in
    assert attempt(client, "basic", "manager", "manager")[0] == 200  # other names are not locked

    clock.advance(seconds=41)
    assert attempt(client, "form", "agent", "agent")[0] == 302


def test_a_success_clears_the_user_names_failures(make_app):
    client = make_app(login_failures_per_user=3, login_failures_per_address=100).test_client()
    for channel in ("form", "basic"):
        assert attempt(client, channel, "agent", "wrong")[0] == 401
    assert attempt(client, "basic", "agent", "agent")[0] == 200
    for channel in ("basic", "form"):
        assert attempt(client, channel, "agent", "wrong")[0] == 401
    assert attempt(client, "form", "agent", "agent")[0] == 302  # 4 failures in all, but never 3 in a row


def test_unknown_user_names_are_throttled_like_known_ones(make_app):
    client = make_app(login_failures_per_user=2, login_failures_per_address=100).test_client()
    for _ in range(2):
        assert attempt(client, "basic", "nobody", "guess")[0] == 401
    assert attempt(client, "basic", "nobody", "guess")[0] == 429
    assert attempt(client, "basic", "NoBody", "guess")[0] == 429  # names count without regard to case


@pytest.mark.parametrize("channel", ["form", "basic"])
def test_failed_sign_ins_from_an_address_lock_it_out(make_app, channel):
    client = make_app(login_failures_per_user=100, login_failures_per_address=3).test_client()
    here, there = {"REMOTE_ADDR": "198.51.100.7"}, {"REMOTE_ADDR": "198.51.100.8"}
    for user in ("agent", "manager", "admin"):
        assert attempt(client, channel, user, "wrong", environ_base=here)[0] == 401
    status, r = attempt(client, channel, "mim", "mim", environ_base=here)
    assert status == 429 and 0 < int(r.headers["Retry-After"]) <= 300
    assert attempt(client, "basic", "mim", "mim", environ_base=there)[0] == 200
    assert attempt(client, "basic", "agent", "agent", environ_base=here)[0] == 429  # a success elsewhere does not help


@pytest.mark.parametrize("proxies, locked", [(1, False), (0, True)])
def test_the_client_address_comes_from_trusted_proxies_only(make_app, proxies, locked):
    client = make_app(proxies=proxies, login_failures_per_user=100, login_failures_per_address=2).test_client()
    for _ in range(2):
        assert attempt(client, "basic", "agent", "wrong", headers={"X-Forwarded-For": "203.0.113.5"})[0] == 401
    status, _ = attempt(client, "basic", "agent", "agent", headers={"X-Forwarded-For": "203.0.113.6"})
    assert status == (429 if locked else 200)


@pytest.mark.parametrize("address, key", [
    ("198.51.100.7", "198.51.100.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # an IPv6 host usually holds its whole /64
    ("::ffff:198.51.100.7", "198.51.100.7"),
])
def test_addresses_are_counted_by_the_network_one_client_holds(address, key):
    assert signin.Attempt("agent", address).keys() == [("user", "agent"), ("address", key)]


# -- the same work for every name ------------------------------------------------------------------


@pytest.mark.parametrize("user_name, password", [
    ("nobody", "agent"),          # unknown
    ("agent", "wrong"),           # known, wrong password
    ("ida", "ida-password"),      # inactive, right password
    ("jo", "anything"),           # no password set
])
def test_every_refused_sign_in_does_one_hash_of_the_same_kind(runtime, monkeypatch, user_name, password):
    with runtime.transaction() as service:
        add_user(service, "ida", "ida-password", [AGENT_ROLE], {"active": False})
        add_user(service, "jo", None, [AGENT_ROLE])
        users_table = runtime.storage.physical("sys_user")
        stored = service.conn.execute(sa.select(users_table.c.user_password)
                                      .where(users_table.c.user_name == "agent")).scalar()
    hashed_with = []
    real = users.check_password_hash

    def counting(pwhash: str, given: str) -> bool:
        hashed_with.append(pwhash.split("$")[0])
        return real(pwhash, given)

    monkeypatch.setattr(users, "check_password_hash", counting)
    with runtime.engine.connect() as conn:
        assert users.authenticate(runtime.storage, conn, user_name, password) is None
    assert hashed_with == [stored.split("$")[0]]


# -- no open redirect ------------------------------------------------------------------------------


GOOD_PATHS = ["/", "/sn_customerservice_case_list.do?sysparm_query=a%3Db",
              "/sn_customerservice_case.do?sys_id=-1#notes", "/caf%C3%A9_list.do"]


@pytest.mark.parametrize("target, expected", [(p, p) for p in GOOD_PATHS] + [
    ("/%09/evil.example", None),   # an encoded tab: still a tab once decoded
    ("/\t/evil.example", None),    # browsers drop the tab: //evil.example
    ("/\t/evil", None),
    ("//evil.example", None),
    ("///evil.example", None),
    ("/\\evil.example", None),     # browsers read /\ as //
    ("/%5Cevil.example", None),
    ("/%2F%2Fevil.example", None),
    ("https://evil.example", None),
    ("http:/evil.example", None),
    ("javascript:alert(1)", None),
    (" /x", None),
    ("/x\r\nSet-Cookie: a=b", None),
    ("/\u200b/evil.example", None),  # an invisible character
    ("/\u3000/evil.example", None),  # an ideographic space
    ("evil.example", None),
    ("", None),
    (None, None),
])
def test_safe_path_accepts_only_paths_of_this_site(target, expected):
    assert safe_path(target) == expected


@pytest.mark.parametrize("query, lands", [
    ("next=/%09/evil.example", "/"),
    ("next=//evil.example", "/"),
    ("next=/%5Cevil.example", "/"),
    ("next=https://evil.example", "/"),
    ("next=/sn_customerservice_case_list.do%3Fsysparm_query%3Da%253Db",
     "/sn_customerservice_case_list.do?sysparm_query=a%3Db"),
])
def test_sign_in_redirects_only_within_the_site(client, query, lands):
    url = f"/login?{query}"
    page = client.get(url)
    if lands == "/":
        assert 'action="/login"' in page.get_data(as_text=True)  # the form does not carry it on
    r = sign_in(client, "agent", url=url)
    assert r.status_code == 302 and r.headers["Location"] == lands
