"""What a script is handed besides builtins: `records`, `datetime`, `log` (and `print`).

Stand-ins, never the real thing: `records` holds no connection (each call is a message to
the parent), `datetime` holds three types (never the module), `log` holds its lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

SCALARS = (str, int, float, bool, type(None))


class RecordsError(Exception):
    """A records call the data source refused: unknown table or field, or no read access."""


class OutputLimitExceeded(BaseException):  # noqa: N818 - a BaseException, so `except Exception` does not swallow it
    """The script's log went past its limit."""


class Records:
    """`records.query(table, **equals)` -> list of dicts; `records.get(table, sys_id)` -> dict or None."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[..., Any]):
        self._call = call

    def query(self, table: str, /, **equals: Any) -> list[dict]:
        """Records of `table` whose fields equal the given values (`active=True, country="DE"`)."""
        _check_table("query", table)
        for field, value in equals.items():
            if not isinstance(value, SCALARS):
                raise TypeError(f"records.query: {field}= must be a string, number, boolean or None, "
                                f"not {type(value).__name__}")
        return self._call("query", table=table, equals=equals)

    def get(self, table: str, sys_id: str, /) -> dict | None:
        """One record of `table` by sys_id, or None."""
        _check_table("get", table)
        if not isinstance(sys_id, str):
            raise TypeError(f"records.get: sys_id must be a string, not {type(sys_id).__name__}")
        return self._call("get", table=table, sys_id=sys_id)

    def __repr__(self) -> str:
        return "<records: query(table, **equals), get(table, sys_id)>"


def _check_table(call: str, table: Any) -> None:
    if not isinstance(table, str):
        raise TypeError(f"records.{call}: the table name must be a string, not {type(table).__name__}")


class DatetimeStandIn:
    """The `datetime` a script sees: `datetime.date`, `datetime.datetime`, `datetime.timedelta`."""

    __slots__ = ()
    date = dt.date
    datetime = dt.datetime
    timedelta = dt.timedelta

    def __repr__(self) -> str:
        return "<datetime: date, datetime, timedelta>"


DATETIME = DatetimeStandIn()


class ScriptLog:
    """The lines a script logs (with `log(...)` or `print(...)`), up to a limit in bytes."""

    def __init__(self, limit_bytes: int):
        self.lines: list[str] = []
        self.size = 0
        self.limit = limit_bytes
        self.exceeded = False  # sticky: a script that catches the limit still fails

    def write(self, text: str) -> None:
        self.size += len(text.encode("utf-8", "replace")) + 1
        if self.exceeded or self.size > self.limit:
            self.exceeded = True
            raise OutputLimitExceeded()
        self.lines.append(text)

    def function(self) -> Callable[..., None]:
        """The script's `log(*args)`: one line, the arguments joined by spaces."""

        def log(*args: Any) -> None:
            self.write(" ".join(str(arg) for arg in args))

        return log

    def printer(self, _getattr_: Any = None) -> _Printer:
        """RestrictedPython's `_print_` hook: `print(...)` in a script writes a log line."""
        return _Printer(self)


class _Printer:
    def __init__(self, log: ScriptLog):
        self._log = log

    def _call_print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n",
                    file: Any = None, flush: bool = False) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not available in scripts; print writes to the log")
        if sep is not None and not isinstance(sep, str):
            raise TypeError("print: sep must be a string")
        self._log.write((" " if sep is None else sep).join(str(obj) for obj in objects))

    def __call__(self) -> str:  # RestrictedPython's `printed`
        return "\n".join(self._log.lines)
