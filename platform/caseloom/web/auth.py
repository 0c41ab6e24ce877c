"""Who is asking: HTTP Basic for API clients, a session cookie for the browser.

The cookie (Flask's signed session) carries a random token of a server-side session
(caseloom.sessions): signing out ends it for every copy of the cookie. Password sign-ins, by
the form or HTTP Basic, are throttled (caseloom.signin). An administrator's browser session may
view as another user (impersonation, web.ui.impersonate): every request of that session then
works for that user; HTTP Basic never does."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from flask import Flask, current_app, flash, g, has_request_context, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError

from .. import sessions
from ..access import Actor
from ..database import WRITE_LOCK
from ..definitions.store import GENERATION, generation_column, generation_of
from ..properties import Properties
from ..query import bind_acting, unbind_acting
from ..records import RecordService
from ..runtime import Runtime
from ..signin import Attempt, ThrottlePolicy, TooManyFailures, sign_in
from ..users import USERS, Alongside, Carried, signed_in, user_lookup
from . import csrf, db
from .budget import script_meter
from .errors import ApiError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SESSION_TOKEN = "session_token"  # the cookie's key for the server-side session's token
# The cookie's note of whom the session views as: not trusted for anything (the server's session
# says), only to audit an impersonation the server ended on its own (the user deactivated).
VIEWING_AS = "viewing_as"
T = TypeVar("T")


# g: this request has not read the definitions' generation yet (set by live_definitions before each
# request). A sign-in's statement carries it (HTTP Basic, or the browser session's:
# `_checking_definitions`); else `runtime()`, when first asked, reads it on its own.
DEFINITIONS_UNCHECKED = "definitions_unchecked"
# app.extensions: live_definitions.follow, which checks the generation (read alongside, or now)
FOLLOW_DEFINITIONS = "caseloom_follow_definitions"


def runtime() -> Runtime:
    """The runtime of this request: the definition set the database holds as the request starts
    (another process may have changed it since the last request), the same to its end."""
    if "runtime" not in g:
        if g.get(DEFINITIONS_UNCHECKED):
            return current_app.extensions[FOLLOW_DEFINITIONS](None)
        g.runtime = current_app.extensions["caseloom"]
    return g.runtime


# app.extensions: the endpoints that only read, answered on PostgreSQL without a transaction (see
# `connection`)
READ_ONLY = "caseloom_read_only_endpoints"
AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


def read_only(app: Flask, *endpoints: str) -> None:
    """These endpoints never write: on PostgreSQL their statements run without BEGIN and ROLLBACK
    (see `connection`). Sign-in bookkeeping still commits in a transaction of its own (`apart`)."""
    if app.extensions["caseloom"].engine.dialect.name == "postgresql":
        app.extensions.setdefault(READ_ONLY, set()).update(endpoints)


def connection():
    """This request's connection. A request that may write (POST, PUT, PATCH, DELETE) holds the
    SQLite write lock from its first statement, so reading then writing never meets another
    writer's commit in between ("database is locked"); PostgreSQL ignores the option. A read-only
    endpoint (`read_only`) on PostgreSQL runs in autocommit: under READ COMMITTED every statement
    takes its own snapshot inside a transaction too, so it reads the same, without the BEGIN and
    ROLLBACK round trips (two of a one-record API read's seven)."""
    if db.session().in_transaction():
        return db.session.connection()
    if request.method not in SAFE_METHODS and not g.get(READ_ONLY_NOW):
        return db.session.connection(execution_options={WRITE_LOCK: True})
    if request.endpoint in current_app.extensions.get(READ_ONLY, ()):
        return db.session.connection(execution_options=AUTOCOMMIT)
    return db.session.connection()


READ_ONLY_NOW = "caseloom_read_only_now"  # g: the request gave up writing (`only_read_from_now`)


def only_read_from_now() -> None:
    """The request's write was refused as busy: roll it back, and read what is left to show (the form
    again) without waiting for the write lock a second time."""
    rollback()
    g.setdefault(READ_ONLY_NOW, True)


def records() -> RecordService:
    """The record service of this request, for the signed-in actor."""
    if "records" not in g:
        g.records = runtime().records(connection(), g.actor)
        g.records.script_meter = script_meter()
    return g.records


def rollback() -> None:
    """Undo this request's writes and start a fresh unit of work (a new connection and service)."""
    db.session.rollback()
    g.pop("records", None)
    g.pop("properties", None)


def properties() -> Properties:
    if "properties" not in g:
        rt = runtime()
        g.properties = Properties(rt.defs, rt.storage, connection())
    return g.properties


def apart(write: Callable[[sa.Connection], T]) -> T:
    """Run `write` in a transaction of its own, committed at once: sign-in bookkeeping (failure
    counters, sessions) must stand whatever the request then does, as an error answer rolls the
    request back. It runs before the request writes anything; it takes the SQLite write lock
    from its start (a read transaction upgraded to a writer fails if another one committed)."""
    service = g.get("records")
    if service is not None and service.written:
        raise RuntimeError("sign-in bookkeeping runs before the request writes anything")
    rollback()
    result = write(db.session.connection(execution_options={WRITE_LOCK: True}))
    db.session.commit()
    g.pop("records", None)
    g.pop("properties", None)
    return result


def act_as(actor: Actor) -> Actor:
    """The request works for `actor`: views read it as g.actor, and conditions' dynamic values
    (`javascript:gs.getUserID()`) stand for it until the request ends."""
    g.actor = actor
    if "acting" not in g:
        lookup = user_lookup(runtime().storage, lambda: nullcontext(connection()), actor.sys_id) if actor.sys_id else None
        g.acting = bind_acting(actor.sys_id, actor.user_name, lookup)
    return actor


def _stop_acting(_exc) -> None:
    token = g.pop("acting", None)
    if token is not None:
        unbind_acting(token)


def session_policy() -> sessions.SessionPolicy:
    """How long sessions last: 2 hours idle, 12 hours at most (create_app gives the cookie the same lifetime)."""
    return sessions.SessionPolicy()


@dataclass(frozen=True)
class Impersonation:
    """A session viewing as another user: the administrator really signed in, the user viewed as,
    and both their names as people read them (the banner on every page)."""

    admin: Actor
    user: Actor
    admin_name: str
    user_name: str


def session_actor() -> Actor | None:
    """The actor of the browser session, or None (no session, or it ended or expired): the user an
    administrator views as while impersonating. Checked against the server's sessions once per request."""
    if "session_actor" not in g:
        g.session_actor = _session_actor()
    return g.session_actor


def impersonation() -> Impersonation | None:
    """Whom this request's browser session views as, and who really signed in; None when it does not."""
    session_actor()
    return g.get("impersonation")


def _session_actor() -> Actor | None:
    token = session.get(SESSION_TOKEN)
    if not isinstance(token, str):
        return None
    rt, also = _checking_definitions()
    policy = session_policy()
    found, users = signed_in(rt.storage, connection(), token, policy, also)
    rt = runtime()  # the set the check found
    actor = users.get(found.user_sys_id) if found else None
    if actor is None:
        session.pop(SESSION_TOKEN, None)
        if found is not None:  # the user is gone or inactive
            apart(lambda conn: sessions.end(rt.storage, conn, token))
        return None
    if found.stale and not g.get(READ_ONLY_NOW):  # a request that gave up writing touches it next time
        apart(lambda conn: sessions.touch(rt.storage, conn, token))
    if found.impersonating is not None:
        g.impersonation = _viewing_as(actor, found.impersonating, token, users.get(found.impersonating))
        if g.impersonation is not None:
            return g.impersonation.user
    elif isinstance(session.get(VIEWING_AS), str):
        _ended_elsewhere(actor, session.pop(VIEWING_AS))
    return actor


def _ended_elsewhere(admin: Actor, user_sys_id: str) -> None:
    """Audit the end of an impersonation whose linked session ended with the user's sessions."""
    storage = runtime().storage
    apart(lambda conn: sessions.audit_impersonation(
        storage, conn, admin.user_name, user_sys_id,
        f"{admin.user_name} stopped viewing as this user (their sessions ended: deactivated or new password)"))


def _viewing_as(admin: Actor, user_sys_id: str, token: str, viewed: Actor | None) -> Impersonation | None:
    """The impersonation of a session, while its user is an administrator and the user viewed as is
    active (`viewed`: that user's Actor, None when not an active user); otherwise it ends here
    (audited) and the session is its own user's again."""
    rt = runtime()
    user = viewed if admin.is_admin else None
    if user is None:
        session.pop(VIEWING_AS, None)

        def end(conn: sa.Connection) -> None:
            sessions.stop_impersonating(rt.storage, conn, token)
            sessions.audit_impersonation(rt.storage, conn, admin.user_name, user_sys_id,
                                         f"{admin.user_name} stopped viewing as this user (no longer allowed)")
        apart(end)
        return None
    users = rt.storage.physical(USERS)
    names = dict(connection().execute(sa.select(users.c.sys_id, users.c.name)
                                      .where(users.c.sys_id.in_((admin.sys_id, user.sys_id)))).all())
    return Impersonation(admin, user, names.get(admin.sys_id) or admin.user_name, names.get(user.sys_id) or user.user_name)


def _checking_definitions() -> tuple[Runtime, Carried | None]:
    """The runtime a sign-in reads with, and, while the request has not checked the definitions'
    generation (`DEFINITIONS_UNCHECKED`), the column that checks it in the sign-in's own statement:
    the check runs before anyone is judged, so roles are expanded by the set it finds."""
    rt = g.get("runtime")
    if rt is not None or not g.get(DEFINITIONS_UNCHECKED):
        return rt or runtime(), None
    rt, follow = current_app.extensions["caseloom"], current_app.extensions[FOLLOW_DEFINITIONS]
    return rt, Carried(Alongside(GENERATION, (generation_column(rt.storage),), {}),
                       lambda row: follow(generation_of(row.definitions_generation)).storage)


def password_sign_in(user_name: str, password: str) -> Actor | None:
    """The actor for a user name and password (form or HTTP Basic), or None; raises
    TooManyFailures while the name or the client's address is locked out. One statement, which
    also checks the definitions' generation (`_checking_definitions`)."""
    rt, also = _checking_definitions()
    return sign_in(rt.storage, ThrottlePolicy.from_config(rt.config), connection(),
                   Attempt(user_name, request.remote_addr), password, apart, also)


def api_actor() -> Actor:
    """The actor of an API request: HTTP Basic first, then the browser session (whose unsafe
    requests must carry the CSRF token, e.g. htmx's X-CSRFToken header). Raises 401, or 429
    while sign-ins of the name or address are locked out."""
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        try:
            actor = password_sign_in(auth.username or "", auth.password or "")
        except TooManyFailures as exc:
            raise ApiError(429, "Too many failed sign-ins", str(exc), {"Retry-After": str(exc.retry_after)}) from None
        if actor is None:
            raise ApiError(401, "User Not Authenticated", "wrong user name or password",
                           {"WWW-Authenticate": 'Basic realm="Caseloom"'})
        return actor
    actor = session_actor()
    if actor is None:
        raise ApiError(401, "User Not Authenticated", "Required to provide Auth information",
                       {"WWW-Authenticate": 'Basic realm="Caseloom"'})
    if request.method not in SAFE_METHODS:
        try:
            csrf.protect()
        except CSRFError as exc:
            raise ApiError(403, "CSRF token missing or invalid", exc.description) from None
    return actor


def safe_path(target: str | None) -> str | None:
    """`target` when it is a path on this site (for a redirect after sign-in or a save), else None.
    Refused: a scheme or host, a start other than one `/`, and anywhere a backslash (browsers
    read `/\\` as `//`), a control, space or invisible character (browsers drop a tab or newline,
    so `/<tab>/evil` is `//evil`), also when percent-encoded in the path."""
    if not target or not target.startswith("/"):
        return None
    path = urlsplit(target).path
    for text in (target, unquote(path)):
        if any(unicodedata.category(ch)[0] in "CZ" or ch == "\\" for ch in text):
            return None
        if text.startswith("//") or not text.startswith("/"):
            return None
        parts = urlsplit(text)
        if parts.scheme or parts.netloc:
            return None
    return target


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed session cookie (HttpOnly, SameSite=Lax), marked Secure whenever the request
    came over HTTPS: directly, or through the proxies CASELOOM_PROXIES trusts (ProxyFix). With an
    https CASELOOM_BASE_URL, SESSION_COOKIE_SECURE makes it Secure always."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def _login_page(error: str | None, status: int, target: str | None, headers: dict | None = None):
    return render_template("login.html", error=error, next_path=target), status, headers or {}


def register(app: Flask) -> None:
    @app.route("/login", methods=["GET", "POST"])
    def login():
        target = safe_path(request.args.get("next"))
        if request.method != "POST":
            return _login_page(None, 200, target)
        try:
            actor = password_sign_in(request.form.get("user_name", "").strip(), request.form.get("user_password", ""))
        except TooManyFailures as exc:
            return _login_page(f"Too many failed sign-ins. Try again in {exc.wait}.", 429, target,
                               {"Retry-After": str(exc.retry_after)})
        if actor is None:
            return _login_page("Wrong user name or password.", 401, target)
        storage, policy = runtime().storage, session_policy()
        token = apart(lambda conn: sessions.start(storage, conn, actor.sys_id, request.remote_addr, policy))
        session.clear()  # a new session: nothing of the anonymous one (e.g. its CSRF token) carries over
        session[SESSION_TOKEN] = token
        session.permanent = True
        return redirect(target or url_for("home"))

    @app.post("/logout")
    def logout():
        token = session.get(SESSION_TOKEN)
        if isinstance(token, str):
            storage, viewing = runtime().storage, impersonation()

            def end(conn: sa.Connection) -> None:
                sessions.end(storage, conn, token)
                if viewing is not None:  # signing out ends the impersonation too
                    sessions.audit_impersonation(storage, conn, viewing.admin.user_name, viewing.user.sys_id,
                                                 f"{viewing.admin.user_name} signed out while viewing as this user")
            apart(end)
        session.clear()
        flash("You are signed out.")
        return redirect(url_for("login"))

    app.teardown_request(_stop_acting)

    @app.route("/")
    def home():
        actor = session_actor()
        if actor is None:
            return redirect(url_for("login", next=request.path))
        act_as(actor)
        portal = runtime().defs.portal_of(actor.roles)
        if portal is not None:  # a portal's user (a customer) starts there
            return redirect(url_for("portal.home", name=portal.name))
        from .ui.reports import home_dashboard, render_dashboard

        board = home_dashboard()
        if board is not None:  # a role with a dashboard declared as its home page
            return render_dashboard(board)
        return render_template("home.html", actor=actor, dashboards=runtime().defs.dashboards_of(actor.roles))
