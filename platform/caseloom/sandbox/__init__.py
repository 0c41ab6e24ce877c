"""The sandbox for recipient scripts (contract section 9).

    from caseloom.sandbox import run_script, ScriptRefused, ScriptFailed, ScriptResult, Limits

A script is compiled with RestrictedPython under our policy (policy.py) and run in a worker
process of a warm pool (pool.py, worker.py) with CPU, memory, wall-clock, output and result
limits (limits.py). Its `records` calls are answered in the calling process by a DataSource:
FixtureData (data.py) or DatabaseData (database.py, through the record service and the
user's read access). Nothing here imports Flask; DatabaseData is loaded only when asked for,
so a worker never loads database code.
"""

from __future__ import annotations

from typing import Any

from .data import DataError, DataSource, FixtureData
from .limits import Limits
from .policy import compile_script
from .pool import WorkerPool, default_pool
from .result import ScriptFailed, ScriptRefused, ScriptResult
from .run import run_script
from .sources import script_source
from .switch import SCRIPTS_ENABLED, ScriptsDisabled, require_scripts_enabled, scripts_enabled

__all__ = ["DataError", "DataSource", "DatabaseData", "FixtureData", "Limits", "SCRIPTS_ENABLED", "ScriptFailed",
           "ScriptRefused", "ScriptResult", "ScriptsDisabled", "WorkerPool", "check_script", "default_pool",
           "require_scripts_enabled", "run_script", "script_source", "scripts_enabled", "service_data"]


def check_script(source: str, filename: str) -> None:
    """Compile a script under the policy without running it; raises ScriptRefused (e.g. for an editor)."""
    compile_script(source, filename)


def __getattr__(name: str) -> Any:
    if name in ("DatabaseData", "service_data"):
        from . import database

        return getattr(database, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
