"""Log lines as text, or with CASELOOM_LOG_FORMAT=json as one JSON object per line, for the server
(gunicorn's own lines included), the worker and the CLI, through the standard logging module.

A JSON line has `ts` (UTC, ISO 8601), `level`, `logger`, `message` and `pid`, then whatever the call
passed as `extra` (an HTTP request's access line: `method`, `path`, `route`, `status`, `ms`, `user`,
`request_id`; see caseloom.web.operations), and `exc` with the traceback when there is one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from urllib.parse import urlsplit, urlunsplit

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("alembic",)  # libraries whose INFO lines say nothing to an operator (alembic's set-up of its plugins)
HANDLER = "caseloom_handler"  # marks the root handler `setup` installed, so a second call replaces it
# The attributes every LogRecord has: anything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which of the server's processes
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (as logging's last resort does), so a
    caller that swaps stderr for a while (click's test runner) never leaves it a closed stream."""

    def __init__(self, level: int = logging.NOTSET):
        logging.Handler.__init__(self, level)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def formatter(kind: str) -> logging.Formatter:
    """The formatter of a CASELOOM_LOG_FORMAT value (`text` or `json`)."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT)


def setup(kind: str, level: int = logging.INFO) -> None:
    """Log records of `level` and above to stderr in the `kind` format, from every logger. Called
    again, it replaces what it installed the first time."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, HANDLER, False)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter(kind))
    setattr(handler, HANDLER, True)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def gunicorn_config(kind: str) -> dict:
    """gunicorn's `logconfig_dict`: its own lines (`gunicorn.error`) and the app's go to stderr in the
    `kind` format. gunicorn's access lines are off: the app logs each request itself, without the
    query string (caseloom.web.operations), and gunicorn's would carry it."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"caseloom": {"()": f"{__name__}.formatter", "kind": kind}},
        "handlers": {"stderr": {"()": f"{__name__}.StderrHandler", "formatter": "caseloom"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            **{name: {"level": "WARNING"} for name in QUIET},
        },
    }


def redacted(url: str) -> str:
    """A URL as it may be logged: its password, if any, as `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
