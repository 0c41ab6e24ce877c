"""What a script run gives back: its result, or why it was refused or failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ServiceNow's recipients script shape: {"accounts": [sys_id, ...]} (or consumers, contacts).
RESULT_KINDS = ("accounts", "consumers", "contacts")
RESULT_SHAPES = 'a list of sys_ids, a list of records with a sys_id, or {"accounts": [sys_id, ...]}'


class ScriptRefused(Exception):
    """Code refused before it ran: a syntax error or something the sandbox's policy forbids."""

    def __init__(self, filename: str, line: int, why: str):
        self.filename, self.line, self.why = filename, line, why
        super().__init__(f"{filename}:{line}: {why}")


class ScriptFailed(Exception):
    """A script that raised while running (`line` says where) or went past a limit (`limit` names it)."""

    def __init__(self, message: str, *, line: int | None = None, limit: str | None = None):
        self.message, self.line, self.limit = message, line, limit
        super().__init__(message)


@dataclass
class ScriptResult:
    result: Any  # what the script assigned to `result`, as plain data
    sys_ids: list[str]  # the sys_ids it names, in order, each once
    log: list[str] = field(default_factory=list)
    elapsed_ms: int = 0

    @property
    def count(self) -> int:
        return len(self.sys_ids)


class ResultShapeError(ValueError):
    """`result` is not one of the shapes a recipients script may return."""


def result_items(raw: Any) -> list:
    """The items of a result in any accepted shape (sys_ids or records), before they are checked."""
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict) and raw and set(raw) <= set(RESULT_KINDS):
        items = []
        for kind in RESULT_KINDS:
            value = raw.get(kind)
            if value is not None and not isinstance(value, list):
                raise ResultShapeError(f'result["{kind}"] must be a list of sys_ids, not {type(value).__name__}')
            items.extend(value or [])
        return items
    if raw is None:
        raise ResultShapeError(f"the script did not set `result`; assign {RESULT_SHAPES}")
    what = f"a dict with keys {', '.join(sorted(map(str, raw)))}" if isinstance(raw, dict) else type(raw).__name__
    raise ResultShapeError(f"`result` must be {RESULT_SHAPES}; got {what}")


def sys_ids_of(items: list) -> list[str]:
    """The sys_ids named by result items (strings, or records with a sys_id), in order, each once."""
    ids = []
    for i, item in enumerate(items):
        value = item.get("sys_id") if isinstance(item, dict) else item
        if not isinstance(value, str) or not value.strip():
            what = "a record without a sys_id" if isinstance(item, dict) else repr(item)[:60]
            raise ResultShapeError(f"result item {i} is {what}; expected a sys_id string or a record with one")
        ids.append(value.strip())
    return list(dict.fromkeys(ids))
