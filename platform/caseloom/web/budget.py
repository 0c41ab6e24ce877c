"""The script CPU budget in the web layer: one meter per request, charged when the request ends."""

from __future__ import annotations

from flask import Flask, current_app, g

from ..scriptbudget import BudgetExhausted, ScriptMeter
from . import db
from .errors import error_response


def script_meter() -> ScriptMeter | None:
    """The meter of this request's signed-in user (None before sign-in): checked before each script run,
    charged once the request's transaction has ended, so a rolled-back run still pays for its CPU."""
    actor = g.get("actor")
    if actor is None:
        return None
    if "script_meter" not in g:
        g.script_meter = ScriptMeter(actor.user_name, current_app.extensions["caseloom"].config.script_cpu_budget_seconds)
    return g.script_meter


def register(app: Flask) -> None:
    @app.teardown_request
    def _settle(_exc) -> None:
        meter = g.pop("script_meter", None)
        if meter is not None and meter.pending:
            db.session.rollback()  # what the view did not commit is not kept; and on SQLite it holds the write lock
            rt = current_app.extensions["caseloom"]
            meter.settle(rt.engine, rt.storage)

    @app.errorhandler(BudgetExhausted)
    def _exhausted(exc: BudgetExhausted):
        return error_response(429, str(exc), {"retry_after": exc.retry_after}, {"Retry-After": str(exc.retry_after)})
