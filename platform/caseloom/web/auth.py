"""Who is asking: HTTP Basic for API clients, a session cookie for the browser."""

from __future__ import annotations

from flask import Flask, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError

from ..access import Actor
from ..database import WRITE_LOCK
from ..properties import Properties
from ..records import RecordService
from ..runtime import Runtime
from ..users import actor_for, authenticate
from . import csrf, db
from .errors import ApiError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def runtime() -> Runtime:
    """The runtime this request started with (definitions may be swapped between requests)."""
    if "runtime" not in g:
        g.runtime = current_app.extensions["caseloom"]
    return g.runtime


def connection():
    """This request's connection. A request that may write (POST, PUT, PATCH, DELETE) holds the
    SQLite write lock from its first statement, so reading then writing never meets another
    writer's commit in between ("database is locked"); PostgreSQL ignores the option."""
    if request.method not in SAFE_METHODS and not db.session().in_transaction():
        return db.session.connection(execution_options={WRITE_LOCK: True})
    return db.session.connection()


def records() -> RecordService:
    """The record service of this request, for the signed-in actor."""
    if "records" not in g:
        g.records = runtime().records(connection(), g.actor)
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


def session_actor() -> Actor | None:
    user = session.get("user")
    if not user:
        return None
    rt = runtime()
    actor = actor_for(rt.storage, connection(), user)
    if actor is None:
        session.clear()
    return actor


def api_actor() -> Actor:
    """The actor of an API request: HTTP Basic first, then the browser session (whose unsafe
    requests must carry the CSRF token, e.g. htmx's X-CSRFToken header). Raises 401."""
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        rt = runtime()
        actor = authenticate(rt.storage, connection(), auth.username or "", auth.password or "")
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


def register(app: Flask) -> None:
    @app.route("/login", methods=["GET", "POST"])
    def login():
        error = None
        if request.method == "POST":
            rt = runtime()
            user_name = request.form.get("user_name", "").strip()
            actor = authenticate(rt.storage, connection(), user_name, request.form.get("user_password", ""))
            if actor is not None:
                session.clear()
                session["user"] = actor.sys_id
                session.permanent = True
                target = request.args.get("next", "")
                return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("home"))
            error = "Wrong user name or password."
        return render_template("login.html", error=error), (401 if error else 200)

    @app.route("/logout", methods=["GET", "POST"])
    def logout():
        session.clear()
        flash("You are signed out.")
        return redirect(url_for("login"))

    @app.route("/")
    def home():
        actor = session_actor()
        if actor is None:
            return redirect(url_for("login", next=request.path))
        g.actor = actor
        return render_template("home.html", actor=actor)
