"""Security headers on every response: API, UI, static files and errors alike.

The browser UI runs under a strict Content-Security-Policy: every script and style sheet is a
file served by this app, with no inline script, no inline style and no eval, so an injected
`<script>` or `style="..."` in a record's text is inert even if escaping ever failed.
"""

from __future__ import annotations

from flask import Flask, Response, request

# Each directive names the one source the UI needs; `default-src` covers the rest (frames,
# media, workers, manifests). `img-src data:` is for CodeMirror's lint icons.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "object-src 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2: no clickjacking
    "X-Content-Type-Options": "nosniff",  # an attachment or JSON answer is never run as a script or style
    # URLs carry encoded queries, sys_ids and record numbers: other sites get no Referer at all.
    "Referrer-Policy": "same-origin",
}

# Only over HTTPS (directly, or behind a proxy that says so): a browser ignores it over HTTP, and
# sending it from a plain-HTTP development server would say nothing true.
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"


def add_security_headers(response: Response) -> Response:
    """Set each security header the view did not set itself (a view's own choice wins)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
    return response


def register(app: Flask) -> None:
    app.after_request(add_security_headers)
