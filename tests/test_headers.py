"""Security headers on every kind of response (API answers and errors, pages, fragments, static
files, redirects, 404s and 500s), HSTS only over HTTPS, a view's own header kept, and templates
and scripts free of what the Content-Security-Policy forbids (inline handlers, style attributes,
inline scripts and styles, eval)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from flask import Response

from caseloom.web.headers import CONTENT_SECURITY_POLICY, add_security_headers
from conftest import ROOT, basic

EXPECTED = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"
CASES = "/api/now/table/sn_customerservice_case"

# (method, url, who: None, "basic" or "session", expected status)
RESPONSES = {
    "api get": ("GET", f"{CASES}?sysparm_limit=1", "basic", 200),
    "api error: unknown table": ("GET", "/api/now/table/no_such_table", "basic", 404),
    "api error: no credentials": ("GET", CASES, None, 401),
    "api error: bad input": ("POST", CASES, "basic", 400),
    "login page": ("GET", "/login", None, 200),
    "sign-in redirect": ("GET", "/sn_customerservice_case_list.do", None, 302),
    "csrf refusal": ("POST", "/login", None, 400),
    "home": ("GET", "/", "session", 200),
    "list": ("GET", "/sn_customerservice_case_list.do?sysparm_query=state=1", "session", 200),
    "form": ("GET", "/sn_customerservice_case.do?sys_id=-1", "session", 200),
    "type-ahead fragment": ("GET", "/ui/reference/sn_customerservice_case/assignment_group?q=Net", "session", 200),
    "static file": ("GET", "/static/caseloom.css", None, 200),
    "vendor file": ("GET", "/ui/vendor/htmx.org/dist/htmx.min.js", None, 200),
    "404 page": ("GET", "/no/such/page", None, 404),
}


def sign_in(client, user: str = "admin") -> None:
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    answer = client.post("/login", data={"user_name": user, "user_password": user, "csrf_token": token})
    assert answer.status_code == 302


def fetch(client, method: str, url: str, who: str | None, **kw):
    headers = basic("admin") if who == "basic" else {}
    if who == "session":
        sign_in(client)
    body = {"json": {"no_such_field": "x"}} if method == "POST" and url.startswith("/api/") else {}
    return client.open(url, method=method, headers=headers, **body, **kw)


@pytest.mark.parametrize("method, url, who, status", RESPONSES.values(), ids=RESPONSES.keys())
def test_every_response_carries_the_security_headers(client, method, url, who, status):
    response = fetch(client, method, url, who)
    assert response.status_code == status
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, name
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP: no HSTS


@pytest.mark.parametrize(
    "method, url, who, status",
    [RESPONSES[k] for k in ("api get", "login page", "list", "404 page")],
    ids=["api get", "login page", "list", "404 page"],
)
def test_hsts_only_over_https(client, method, url, who, status):
    response = fetch(client, method, url, who, base_url="https://localhost")
    assert response.status_code == status
    assert response.headers.get("Strict-Transport-Security") == HSTS
    assert response.headers.get("X-Frame-Options") == "DENY"


@pytest.mark.parametrize("proxies, hsts", [(1, True), (0, False)], ids=["behind a trusted proxy", "no proxy trusted"])
def test_hsts_behind_a_proxy_that_terminates_https(config, definitions, proxies, hsts):
    """X-Forwarded-Proto counts only from the CASELOOM_PROXIES trusted proxies (else anyone could set it)."""
    from caseloom.web import create_app, db

    app = create_app(replace(config, proxies=proxies), definitions, testing=True)
    response = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.9"})
    assert response.status_code == 200
    assert (response.headers.get("Strict-Transport-Security") == HSTS) is hsts
    with app.app_context():
        db.engine.dispose()


def test_an_unexpected_error_still_carries_them(app):
    @app.get("/test-only/boom")
    def boom():
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer 500 as production does, not raise into the test
    response = app.test_client().get("/test-only/boom")
    assert response.status_code == 500
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, name


def test_a_header_the_view_set_itself_is_kept(app):
    own = Response(
        "framed on purpose", headers={"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "default-src 'none'"}
    )
    with app.test_request_context("/", base_url="https://localhost"):
        response = add_security_headers(own)
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # the others are still added
    assert response.headers["Strict-Transport-Security"] == HSTS


def test_the_policy_allows_nothing_inline_and_no_eval():
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"


# What a strict CSP blocks in our own files; the browser test (test_csp_browser.py) checks the pages.
FORBIDDEN_IN_TEMPLATES = {
    "an inline event handler": re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE),
    "a style attribute": re.compile(r"<[^>]*\sstyle\s*=", re.IGNORECASE),
    "an inline <script>": re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.IGNORECASE),
    "a <style> element": re.compile(r"<style[\s>]", re.IGNORECASE),
    "a javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
    "an hx-on attribute": re.compile(r"\shx-on", re.IGNORECASE),
}
FORBIDDEN_IN_SCRIPTS = {
    "eval": re.compile(r"\beval\s*\("),
    "new Function": re.compile(r"new\s+Function\b"),
    "a style attribute": re.compile(r"setAttribute\(\s*['\"]style"),
    "a timer from a string": re.compile(r"set(Timeout|Interval)\(\s*['\"`]"),
    "markup with a style attribute": re.compile(r"innerHTML[^;]*style="),
}
TEMPLATES = sorted((ROOT / "ui" / "templates").glob("*.html"))
SCRIPTS = sorted((ROOT / "ui" / "static").glob("*.js"))


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_templates_have_nothing_the_policy_blocks(path):
    text = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.DOTALL)  # Jinja comments are never sent
    found = [what for what, pattern in FORBIDDEN_IN_TEMPLATES.items() if pattern.search(text)]
    assert not found, f"{path.name} has {', '.join(found)}: use a class in caseloom.css or a data- attribute in caseloom.js"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_have_nothing_the_policy_blocks(path):
    text = path.read_text()
    found = [what for what, pattern in FORBIDDEN_IN_SCRIPTS.items() if pattern.search(text)]
    assert not found, f"{path.name} uses {', '.join(found)}"


def test_the_page_configures_htmx_for_the_policy(client):
    html = client.get("/login").get_data(as_text=True)
    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", html)
    assert config, "base.html must configure htmx"
    settings = json.loads(config.group(1))
    assert settings["includeIndicatorStyles"] is False and settings["allowEval"] is False
    assert settings["allowScriptTags"] is False and "style" not in settings["attributesToSettle"]


def test_the_favicon_is_ours_without_signing_in(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 301 and "/static/favicon.svg" in r.headers["Location"]
    icon = client.get(r.headers["Location"])
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
