"""What every app in a process compiles the same way, compiled once: page templates and URL builders.

Each Flask app has its own Jinja environment and URL map, and compiles each template and each
route's URL builder into Python code again. That is a fifth of a second per app, paid by every
gunicorn worker, every app a test makes and every live switch of definitions that builds one; the
code is the same each time. Both are kept here, per process, keyed by what the code is made from.
"""

from __future__ import annotations

import threading
from typing import Any

from jinja2.bccache import Bucket, BytecodeCache
from werkzeug.routing import Rule as _Rule


class TemplateCode(BytecodeCache):
    """Compiled templates in memory, shared by the apps' Jinja environments (all made by create_app
    with the same options). Jinja keys a bucket by the template's name and file and checks it against
    a hash of the source, so an edited template is compiled again."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key] = code


TEMPLATE_CODE = TemplateCode()


class Rule(_Rule):
    """A route whose URL builders are compiled once per process for its pattern. Werkzeug compiles
    two builder functions per rule from its parsed pattern (`_trace`); they take the rule as their
    first argument and call its converters at build time, so a rule of the same pattern, with no
    defaults compiled into them, can use the same functions."""

    _builders: dict[tuple, Any] = {}
    _lock = threading.Lock()

    def _compile_builder(self, append_unknown: bool = True):  # type: ignore[override]
        if self.defaults:
            return super()._compile_builder(append_unknown)
        key = (self.rule, self.subdomain, self.host, tuple(self._trace), append_unknown)
        built = self._builders.get(key)
        if built is None:
            built = super()._compile_builder(append_unknown)
            with self._lock:
                self._builders[key] = built
        return built
