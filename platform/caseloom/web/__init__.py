"""The web layer: Flask app factory. The core never imports from here."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, redirect, url_for
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from ..config import Config
from ..database import absolute_url, engine_options, prepare_engine, requests_engine
from ..definitions import Definitions, load_folder
from ..runtime import Runtime
from ..sessions import SessionPolicy
from .compiled import TEMPLATE_CODE, Rule

db = SQLAlchemy()
csrf = CSRFProtect()


class App(Flask):
    """Flask, with its templates and URL builders compiled once per process, not once per app
    (see `compiled`)."""

    url_rule_class = Rule
    jinja_options = {**Flask.jinja_options, "bytecode_cache": TEMPLATE_CODE}


PAGE_TEMPLATE = "base.html"  # every page extends it: without it the UI can render nothing


class StartupError(click.ClickException):
    """A server that cannot start as configured. `caseloom serve` prints the message as one line and
    exits 1 (a ClickException); anywhere else it is an ordinary exception saying what to fix."""


def create_app(config: Config | None = None, defs: Definitions | None = None, testing: bool = False) -> Flask:
    """Build the app for a configuration; definitions are validated first, so a server never
    starts on an invalid definition set, nor without its UI templates."""
    config = config or Config.from_env()
    ui = ui_folder(config)
    given = defs is not None
    defs = defs or load_folder(config.definitions)
    app = App(__name__, root_path=str(ui), instance_path=str(Path(config.instance).resolve()),
                template_folder="templates", static_folder="static")
    app.config.update(
        SECRET_KEY=config.session_secret(),
        SQLALCHEMY_DATABASE_URI=absolute_url(config.database_url),
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(config.database_url, config.db_pool_size),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=(config.base_url or "").startswith("https://"),  # else per request (auth.SessionCookies)
        PERMANENT_SESSION_LIFETIME=SessionPolicy().lifetime,
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=config.max_request_bytes,  # a larger body is a 413 (CASELOOM_MAX_REQUEST_BYTES)
        MAX_FORM_MEMORY_SIZE=min(config.max_request_bytes, 8 * 1024 * 1024),  # form fields held in memory
        TESTING=testing,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    if config.proxies:  # the client's address, scheme and host as the trusted proxies saw them
        n = config.proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    db.init_app(app)
    csrf.init_app(app)
    with app.app_context():
        app.extensions["caseloom"] = Runtime(config, defs, engine=requests_engine(prepare_engine(db.engine)))

    from . import (
        api,
        attachments_api,
        auth,
        budget,
        definitions_api,
        email_api,
        errors,
        events_api,
        headers,
        jobs_api,
        operations,
        portal,
    )

    operations.register(app)  # first: a request's time includes every other hook; /health reads nothing before
    errors.register(app)
    budget.register(app)
    headers.register(app)
    definitions_api.register(app)
    jobs_api.register(app)
    auth.register(app)
    app.session_interface = auth.SessionCookies()
    app.register_blueprint(api.blueprint)
    attachments_api.register(app)
    email_api.register(app)
    events_api.register(app)
    _register_ui(app, ui)
    portal.register(app)
    for blueprint in (api.blueprint, definitions_api.blueprint, jobs_api.blueprint):
        csrf.exempt(blueprint)  # API requests check CSRF themselves for cookie sessions (auth.api_actor)
    _remember_generation(app, given)
    return app


def ui_folder(config: Config) -> Path:
    """The UI folder (CASELOOM_UI), if its templates are there: a server without them would answer
    every page with a 500, so it refuses to start instead."""
    ui = Path(config.ui).resolve()
    if not (ui / "templates" / PAGE_TEMPLATE).is_file():
        raise StartupError(f"CASELOOM_UI={config.ui!r}: no UI templates in {ui / 'templates'} (expected "
                           f"{PAGE_TEMPLATE} there); set CASELOOM_UI to the folder that holds templates/ and "
                           "static/ (the repository's ui/)")
    return ui


def _register_ui(app: Flask, ui: Path) -> None:
    """The browser UI, and the front-end packages installed from npm into ui/node_modules."""
    from flask import send_from_directory

    from .ui import blueprint, menu_for
    from .ui.layout import table_file

    app.register_blueprint(blueprint)
    app.jinja_env.globals.update(menu_for=menu_for, table_file=table_file)
    _static_caching(app, ui / "static")
    vendor = ui / "node_modules"

    @app.get("/favicon.ico", endpoint="favicon")
    def favicon():  # what a browser asks for before it reads a page's <link rel="icon">
        return redirect(url_for("static", filename="favicon.svg"), 301)

    @app.get("/ui/vendor/<path:filename>", endpoint="ui_vendor")
    def ui_vendor(filename: str):
        if not filename.endswith((".js", ".css", ".map")):
            return "", 404
        return send_from_directory(vendor, filename, max_age=3600)


STATIC_VERSIONED_MAX_AGE = 365 * 24 * 3600  # a URL with ?v=<content hash> never changes: cached for a year
STATIC_MAX_AGE = 300


def _static_caching(app: Flask, folder: Path) -> None:
    """Static files are linked with `?v=` and a hash of their content, and such a URL is cached for a
    year (`immutable`): a new file gets a new URL, so browsers and proxies never serve a stale one.
    Without `v`, five minutes."""
    import hashlib

    from flask import request

    versions: dict[str, tuple[float, str]] = {}

    def version(filename: str) -> str | None:
        path = folder / filename
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        known = versions.get(filename)
        if known is None or known[0] != mtime:
            known = (mtime, hashlib.sha256(path.read_bytes()).hexdigest()[:12])
            versions[filename] = known
        return known[1]

    @app.url_defaults
    def static_version(endpoint: str, values: dict) -> None:
        if endpoint == "static" and "v" not in values and (v := version(str(values.get("filename", "")))):
            values["v"] = v

    def max_age(filename: str | None) -> int:
        return STATIC_VERSIONED_MAX_AGE if request.args.get("v") else STATIC_MAX_AGE

    app.get_send_file_max_age = max_age  # type: ignore[method-assign]

    @app.after_request
    def immutable(response):
        if request.endpoint == "static" and request.args.get("v") and response.status_code == 200:
            response.cache_control.immutable = True
        return response


def _remember_generation(app: Flask, given: bool) -> None:
    """The definitions generation this process starts at; requests reload when it moves.
    Unless the caller handed us the definitions, the first request loads the set stored in the
    database (the one every process shares, which `caseloom init` copies from the folder)."""
    from sqlalchemy.exc import DBAPIError

    from ..definitions.store import DefinitionStore
    from .live_definitions import GENERATION

    if not given:
        app.extensions[GENERATION] = None
        return

    with app.app_context():
        try:
            with db.engine.connect() as conn:
                generation = DefinitionStore(app.extensions["caseloom"].storage, conn).generation()
        except DBAPIError:
            generation = None  # not initialised yet: `caseloom init` first
    app.extensions[GENERATION] = generation
