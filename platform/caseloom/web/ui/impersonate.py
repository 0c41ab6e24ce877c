"""Impersonate user (administrators), as in ServiceNow: the browser session views as another active
user, seeing and doing exactly what that user would (menus, lists, forms, actions, and Table API
calls made with the same cookie), until the administrator stops or signs out. Writes meanwhile are
the impersonated user's; each start and stop is audited on that user's record (sys_audit, field
`impersonation`: who, whom, when). HTTP Basic requests never impersonate (web.auth)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, g, redirect, render_template, request, session, url_for

from ... import sessions
from ...query import All, AnyOf, Query, Term
from ...signin import Attempt, Throttle, ThrottlePolicy, TooManyFailures
from ...users import USERS
from .. import db
from ..auth import SESSION_TOKEN, VIEWING_AS, Impersonation, connection, impersonation, records, runtime
from . import admin_required, blueprint, login_required

SHOWN = 50  # users listed at most; a search narrows them


@blueprint.app_context_processor
def _impersonation() -> dict:
    """Every page's banner (base.html): whom the session views as, and who really signed in."""
    return {"impersonation": g.get("impersonation")}


@blueprint.get("/ui/impersonate", endpoint="impersonate")
@admin_required
def page():
    return _page(request.args.get("q", "").strip())


def _page(search: str, error: str | None = None, status: int = 200):
    return render_template("impersonate.html", users=_active_users(search), search=search, shown=SHOWN,
                           error=error), status


def _active_users(search: str) -> list[dict]:
    """Active users whose name or user name contains `search`, by name; locked-out ones marked."""
    where = Term("active", "eq", True)
    if search:
        where = All((where, AnyOf((Term("name", "like", search), Term("user_name", "like", search)))))
    rows = records().query(USERS, Query(where, (("name", False), ("user_name", False))),
                           ["sys_id", "user_name", "name", "email"], SHOWN)
    return [row | {"locked": _locked_out(row["user_name"])} for row in rows]


def _locked_out(user_name: str) -> str | None:
    """How long a user name stays locked out after failed sign-ins ('5 minutes'), or None."""
    rt = runtime()
    try:
        Throttle(rt.storage, ThrottlePolicy.from_config(rt.config)).check(connection(), Attempt(user_name))
    except TooManyFailures as exc:
        return exc.wait
    return None


@blueprint.post("/ui/impersonate")
@admin_required
def start():
    """View as the chosen user from the next request on (POST with the CSRF token: a GET changes nothing)."""
    sys_id = request.form.get("user", "").strip()
    user, refusal, status = _refusal(sys_id)
    if refusal:
        return _page("", refusal, status)
    viewing = impersonation()
    admin = viewing.admin if viewing is not None else g.actor
    if user["sys_id"] == admin.sys_id:
        return _page("", f"You are signed in as {user['name'] or user['user_name']}: there is nobody to impersonate.", 409)
    token, storage, conn = session[SESSION_TOKEN], runtime().storage, connection()
    if viewing is not None:  # an administrator viewed as may hand over to another user: the first view ends
        _stop(conn, token, viewing, "stopped viewing as this user")
    sessions.impersonate(storage, conn, token, user["sys_id"])
    sessions.audit_impersonation(storage, conn, admin.user_name, user["sys_id"],
                                 f"{admin.user_name} started viewing as this user")
    db.session.commit()
    session[VIEWING_AS] = user["sys_id"]
    flash(f"You are now viewing as {user['name'] or user['user_name']}: you see and do what they would.")
    return redirect(url_for("home"))


def _refusal(sys_id: str) -> tuple[dict, str | None, int]:
    """The user to impersonate, or why not (an unknown, inactive or locked-out user) and the status."""
    if not sys_id:
        return {}, "Choose a user to impersonate (the form's `user` field is empty).", 400
    users = runtime().storage.physical(USERS)
    row = connection().execute(sa.select(users.c.sys_id, users.c.user_name, users.c.name, users.c.active)
                               .where(users.c.sys_id == sys_id)).mappings().first()
    if row is None:
        return {}, f"No user has the sys_id {sys_id!r}.", 404
    who = row["name"] or row["user_name"]
    if row["active"] is False:
        return dict(row), f"{who} is inactive: an inactive user cannot be impersonated.", 409
    wait = _locked_out(row["user_name"])
    if wait:
        return dict(row), f"{who} is locked out after failed sign-ins (for {wait} more): they cannot be impersonated.", 409
    return dict(row), None, 200


@blueprint.post("/ui/impersonate/stop", endpoint="stop_impersonating")
@login_required
def stop():
    """Back to the administrator's own user; the impersonated user needs no right for this."""
    viewing = impersonation()
    if viewing is None:
        flash("You are not impersonating anyone.", "error")
        return redirect(url_for("home"))
    _stop(connection(), session[SESSION_TOKEN], viewing, "stopped viewing as this user")
    db.session.commit()
    flash(f"You are {viewing.admin_name} again.")
    return redirect(url_for("ui.impersonate"))


def _stop(conn: sa.Connection, token: str, viewing: Impersonation, what: str) -> None:
    session.pop(VIEWING_AS, None)
    sessions.stop_impersonating(runtime().storage, conn, token)
    sessions.audit_impersonation(runtime().storage, conn, viewing.admin.user_name, viewing.user.sys_id,
                                 f"{viewing.admin.user_name} {what}")
