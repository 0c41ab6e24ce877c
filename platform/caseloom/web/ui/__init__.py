"""The agent and administrator UI: generic lists and forms rendered from the definitions.

Every page is generic: nothing here names an application table. Routes follow
ServiceNow's URL habits (`/{table}_list.do`, `/{table}.do?sys_id=`), and each page
returns its fragment alone to htmx requests.
"""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, abort, current_app, g, redirect, request, url_for

from ..auth import act_as, runtime, session_actor

blueprint = Blueprint("ui", __name__)


@blueprint.context_processor
def _signed_in() -> dict:
    """The signed-in actor for base.html's top bar and menu."""
    return {"actor": g.get("actor")}


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        actor = session_actor()
        if actor is None:
            return redirect(url_for("login", next=request.full_path.rstrip("?")))
        act_as(actor)
        portal = runtime().defs.portal_of(actor.roles)
        if portal is not None:  # a customer: the staff pages are not theirs; their portal is
            return redirect(url_for("portal.home", name=portal.name))
        return view(*args, **kwargs)

    return wrapper


def admin_required(view):
    """Signed in with the admin role (403 otherwise)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not g.actor.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return login_required(wrapper)


MENU_URLS = "caseloom_menu_urls"  # app.extensions: a module's link by (script root, table, query, view)


def _module_url(table: str, query: str, view: str | None) -> str:
    """A list module's link. Building one with url_for costs about as much as a small statement, and
    every page draws the whole menu (dozens of links): each is built once per process."""
    urls = current_app.extensions.setdefault(MENU_URLS, {})
    key = (request.script_root, table, query, view)
    url = urls.get(key)
    if url is None:
        if len(urls) >= 10_000:  # `{me}` makes one link per user: bounded
            urls.clear()
        url = urls[key] = url_for("ui.dispatch", name=f"{table}_list", sysparm_query=query,
                                  **({"sysparm_view": view} if view else {}))
    return url


def menu_for(actor) -> list[dict]:
    """The applications and modules this actor may see, with their links."""
    from ..auth import records

    rt = runtime()
    service = records()
    apps = []
    for app in rt.defs.menu:
        if app.roles and not any(actor.has_role(r) for r in app.roles):
            continue
        modules = []
        for module in app.modules:
            if module.roles and not any(actor.has_role(r) for r in module.roles):
                continue
            if module.page == "properties":
                if actor.is_admin:
                    modules.append({"label": module.label, "url": url_for("ui.properties")})
                continue
            if module.page == "status":  # System status: administrators only
                if actor.is_admin:
                    modules.append({"label": module.label, "url": url_for("ui.status")})
                continue
            if module.page == "reports":  # the reports this user may open, and for administrators New report
                modules.append({"label": module.label, "url": url_for("ui.reports")})
                continue
            if module.table and not service.can(module.table, "read"):
                continue
            if module.page == "new":
                if service.can(module.table, "create"):
                    modules.append({"label": module.label, "url": url_for("ui.dispatch", name=module.table, sys_id="-1")})
                continue
            query = module.query_for(actor.sys_id)
            modules.append({"label": module.label, "url": _module_url(module.table, query, module.view)})
        if modules:
            apps.append({"label": app.label, "modules": modules})
    return apps


from . import (  # noqa: E402,F401  (routes register on the blueprint)
    actions,
    attachments,
    definitions,
    forms,
    impersonate,
    layout,
    lists,
    members,
    properties,
    references,
    report_builder,
    reports,
    slas,
    status,
    workspace,
)
