"""run_script: one script, in a worker of the pool, against a DataSource."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

from . import wire
from .data import DataSource
from .limits import Limits
from .pool import WorkerPool, default_pool
from .result import ResultShapeError, ScriptFailed, ScriptRefused, ScriptResult, result_items, sys_ids_of


def run_script(source: str, filename: str, data: DataSource, params: dict | None = None,
               limits: Limits | None = None, *, pool: WorkerPool | None = None,
               on_cpu: Callable[[float], None] | None = None,
               result_keys: Collection[str] | None = None) -> ScriptResult:
    """Run a member-list script in the sandbox and return what it assigned to `result`.

    Raises ScriptRefused (syntax or policy, before anything ran) or ScriptFailed (an error
    while running, or a limit). Callers check `scripts_enabled` first (the kill switch).
    `on_cpu` hears the CPU seconds the run used, whatever its outcome. `result_keys`: the keys
    a keyed result `{key: [sys_id, ...]}` may use (the list type's `result_key`; see result_items)."""
    limits = limits or Limits()
    if not isinstance(params, (dict, type(None))):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    try:  # the script gets plain data: check here, where a bad value is the caller's to fix
        params = json.loads(wire.encode(params or {}))
    except TypeError as exc:
        raise TypeError(f"params must be plain data: {exc}") from None
    job = {"source": source, "filename": filename, "params": params, "limits": limits.to_wire()}
    reply, elapsed_ms = (pool or default_pool()).run(job, data, limits, filename, on_cpu)
    try:
        return _outcome(reply, filename, limits, elapsed_ms, result_keys)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ScriptFailed(f"{filename}: the sandbox worker sent a reply we cannot read ({exc!r})") from None


def _outcome(reply: dict, filename: str, limits: Limits, elapsed_ms: int,
             result_keys: Collection[str] | None) -> ScriptResult:
    if "refused" in reply:
        refused = reply["refused"]
        raise ScriptRefused(filename, int(refused["line"]), str(refused["why"]))
    if "failed" in reply:
        failed = reply["failed"]
        if "limit" in failed:
            raise _limit(filename, limits, failed["limit"])
        line = failed.get("line")
        where = f"{filename}:{line}" if isinstance(line, int) else filename
        raise ScriptFailed(f"{where}: {failed['error']}", line=line if isinstance(line, int) else None)
    done = reply["done"]
    log = [str(line) for line in done["log"]]
    if sum(len(line.encode("utf-8", "replace")) + 1 for line in log) > limits.log_bytes:
        raise _limit(filename, limits, "output")
    raw = done["result"]
    try:
        items = result_items(raw, result_keys)
        if len(items) > limits.result_items:
            raise _limit(filename, limits, "result")
        sys_ids = sys_ids_of(items)
    except ResultShapeError as exc:
        raise ScriptFailed(f"{filename}: {exc}") from None
    return ScriptResult(result=raw, sys_ids=sys_ids, log=log, elapsed_ms=elapsed_ms)


def _limit(filename: str, limits: Limits, limit: Any) -> ScriptFailed:
    if limit not in ("cpu", "wall", "memory", "output", "result", "result_bytes"):
        raise TypeError(f"unknown limit {limit!r}")
    return ScriptFailed(f"{filename}: {limits.exceeded(limit)}", limit=limit)
