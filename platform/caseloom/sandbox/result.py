"""What a script run gives back: its result, or why it was refused or failed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

PLAIN_SHAPES = "a list of sys_ids or a list of records with a sys_id"


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
    """`result` is not one of the shapes a member-list script may return."""


def result_items(raw: Any, result_keys: Collection[str] | None = None) -> list:
    """The items of a result in any accepted shape (sys_ids or records), before they are checked.

    Besides a plain list, a script may answer ServiceNow's keyed shape `{key: [sys_id, ...]}`,
    where the key is the list type's own `result_key` (`result_keys`, given by the member-list
    code; empty when the type declares none). None: no list type is known (a run from the
    command line), so a mapping of one key to a list is accepted whatever the key."""
    if isinstance(raw, list):
        return raw
    if raw is None:
        raise ResultShapeError(f"the script did not set `result`; assign {_shapes(result_keys)}")
    if isinstance(raw, dict) and len(raw) == 1:
        key, value = next(iter(raw.items()))
        if result_keys is None or key in result_keys:
            if not isinstance(value, list):
                raise ResultShapeError(f'result["{key}"] must be a list of sys_ids, not {type(value).__name__}')
            return value
    if isinstance(raw, dict):
        got = f"a dict with keys {', '.join(sorted(map(str, raw)))}" if raw else "an empty dict"
        raise ResultShapeError(f"`result` must be {_shapes(result_keys)}; got {got}")
    raise ResultShapeError(f"`result` must be {_shapes(result_keys)}; got {type(raw).__name__}")


def _shapes(result_keys: Collection[str] | None) -> str:
    """The shapes a result may take, for a message: the keyed shape names the expected key."""
    if result_keys is None:
        return PLAIN_SHAPES + ', or {"<key>": [sys_id, ...]}'
    if not result_keys:
        return PLAIN_SHAPES + " (the list's type declares no result_key, so no keyed shape)"
    keyed = " or ".join(f'{{"{key}": [sys_id, ...]}}' for key in sorted(result_keys))
    return f"{PLAIN_SHAPES}, or {keyed} (the list type's result_key)"


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
