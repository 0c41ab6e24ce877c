"""What a script may do: RestrictedPython's compiler plus our guards and builtins.

RestrictedPython rewrites every attribute read into `_getattr_(obj, name)`, every subscript
into `_getitem_`, every loop into `_getiter_`, every assignment target into `_write_`, and
refuses underscore names, imports of underscore names and frame attributes at compile time.
This module supplies those hooks. The rules, in one place:

- no import, no class statement (a class is a way to define dunder methods on data);
- no attribute that starts with "_" and none that reaches frames, generators, coroutines,
  tracebacks or code objects (`gi_frame`, `f_globals`, `tb_frame`, `co_code`, ...), whether
  written in the source, or reached through `str.format` / `format_map` field names;
- writes only to the lists and dicts the script itself holds;
- builtins: RestrictedPython's `safe_builtins` plus the plain data helpers recipient scripts
  need. `sorted`, `tuple`, `zip` and `reversed` iterate in C without calling `_getiter_`;
  that is safe here because our `_getiter_` restricts nothing (it exists for the hook).
"""

from __future__ import annotations

import ast
import operator
import re
import string
import sys
from _string import formatter_field_name_split  # the field-name parser str.format itself uses
from collections.abc import Callable, Mapping
from types import CodeType
from typing import Any

from RestrictedPython import compile_restricted_exec, safe_builtins
from RestrictedPython.Guards import full_write_guard, guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

from .result import ScriptRefused

MAX_SOURCE_BYTES = 256 * 1024

# Attribute families of frames (f_), tracebacks (tb_), generators (gi_), coroutines (cr_), async
# generators (ag_) and code objects (co_): all of them, not only those RestrictedPython lists.
INTERNALS = re.compile(r"^(f|tb|gi|cr|ag|co)_")
REFUSED_ATTRIBUTES = INSPECT_ATTRIBUTES | {"mro"}


def refused_attribute(name: str) -> str | None:
    """Why a script may not read attribute `name`, or None when it may."""
    if name.startswith("_"):
        return f'"{name}" starts with "_"; scripts may not use names that start with an underscore'
    if name in REFUSED_ATTRIBUTES or INTERNALS.match(name):
        return (f'"{name}" reaches interpreter internals (frames, generators, tracebacks, code, class hierarchy), '
                "which scripts may not use")
    return None


class ScriptPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy, plus: no imports, no classes, no interpreter-internal attributes."""

    def visit_Import(self, node: ast.Import) -> ast.AST:
        self.error(node, "import is not allowed: scripts get records, params, datetime and log as globals")
        return node

    visit_ImportFrom = visit_Import  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.error(node, "class statements are not allowed in scripts; use dicts and functions")
        return node

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        why = refused_attribute(node.attr)
        if why and not node.attr.startswith("_") and node.attr not in INSPECT_ATTRIBUTES:
            self.error(node, why)  # RestrictedPython already reports the others, in its words
        return super().visit_Attribute(node)


LINE = re.compile(r"^Line (\d+|None): (.*)$", re.DOTALL)
MORE_SHOWN = 3  # the problems named after the first, each with its line


def compile_script(source: str, filename: str) -> CodeType:
    """Compile a script under the policy; raises ScriptRefused with the first problem's line."""
    if len(source.encode("utf-8", "replace")) > MAX_SOURCE_BYTES:
        raise ScriptRefused(filename, 1, f"the script is larger than {MAX_SOURCE_BYTES // 1024} KB")
    result = compile_restricted_exec(source, filename=filename, policy=ScriptPolicy)
    if result.errors:
        problems = []
        for error in result.errors:
            match = LINE.match(error)
            line = int(match.group(1)) if match and match.group(1).isdigit() else 1
            problems.append((line, match.group(2) if match else error))
        problems.sort(key=lambda p: p[0])
        (line, why), others = problems[0], problems[1:]
        also = "; ".join(f"line {n}: {w.rstrip('.')}" for n, w in others[:MORE_SHOWN])
        if len(others) > MORE_SHOWN:
            also += f"; and {len(others) - MORE_SHOWN} more"
        raise ScriptRefused(filename, line, why.rstrip(".") + (f" (also {also})" if also else ""))
    return result.code


# -- the guards -------------------------------------------------------------------------

_MISSING = object()


def guarded_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    """`obj.name` for a script: refused names raise AttributeError; `str.format` is the safe one."""
    if type(name) is not str:
        raise TypeError("attribute names must be strings")
    why = refused_attribute(name)
    if why:
        raise AttributeError(why)
    if name in ("format", "format_map") and (isinstance(obj, str) or obj is str):
        return _safe_format(obj, name)
    return getattr(obj, name) if default is _MISSING else getattr(obj, name, default)


def guarded_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def guarded_getiter(obj: Any) -> Any:
    return obj


def guarded_apply(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """`f(*args, **kwargs)` in a script (e.g. `records.query(table, **equals)`)."""
    return func(*args, **kwargs)


INPLACE = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "|=": operator.ior, "^=": operator.ixor, "&=": operator.iand,
    "@=": operator.imatmul,
}


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    """`name += value` and friends (RestrictedPython rewrites them into this call)."""
    return INPLACE[op](target, value)


class GuardedFormatter(string.Formatter):
    """str.format with every field lookup (`{0.attr}`, `{0[key]}`) going through the guards,
    so "{0.__class__}" or "{0.gi_frame}" fails as `x.__class__` would."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
        first, rest = formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = guarded_getattr(obj, key) if is_attr else guarded_getitem(obj, key)
        return obj, first


_FORMATTER = GuardedFormatter()


def _safe_format(obj: str | type, name: str) -> Callable:
    if obj is str:  # str.format(template, ...) / str.format_map(template, mapping)
        if name == "format":
            return lambda template, *args, **kwargs: _FORMATTER.vformat(_text(template), args, kwargs)
        return lambda template, mapping: _FORMATTER.vformat(_text(template), (), mapping)
    if name == "format":
        return lambda *args, **kwargs: _FORMATTER.vformat(obj, args, kwargs)
    return lambda mapping: _FORMATTER.vformat(obj, (), mapping)


def _text(template: Any) -> str:
    if not isinstance(template, str):
        raise TypeError(f"str.format needs a str, not {type(template).__name__}")
    return template


# -- builtins ---------------------------------------------------------------------------

EXTRA_BUILTINS = {
    "sorted": sorted, "list": list, "dict": dict, "set": set, "sum": sum, "min": min, "max": max,
    "enumerate": enumerate, "any": any, "all": all, "len": len, "range": range, "zip": zip, "map": map,
    "filter": filter, "reversed": reversed, "str": str, "int": int, "float": float, "bool": bool,
    "tuple": tuple, "abs": abs, "round": round, "isinstance": isinstance,
}
# Modules that C code inside allowed calls imports by itself through the caller's builtins
# (`datetime.strftime` imports `time`, `strptime` imports `_strptime`). A script cannot name
# `__import__` (underscore) nor write `import` (refused), so only those internal imports get here.
INTERNAL_IMPORTS = frozenset({"time", "_strptime"})


def internal_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level == 0 and name in INTERNAL_IMPORTS and name in sys.modules:
        return sys.modules[name]
    raise ImportError(f"scripts cannot import modules ({name!r})")


# No class statements, so no class builder either.
BUILTINS: Mapping[str, Any] = {
    **{k: v for k, v in safe_builtins.items() if k != "__build_class__"},
    **EXTRA_BUILTINS,
    "__import__": internal_import,
}

GUARDS: Mapping[str, Any] = {
    "_getattr_": guarded_getattr,
    "_getitem_": guarded_getitem,
    "_getiter_": guarded_getiter,
    "_write_": full_write_guard,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_inplacevar_": guarded_inplacevar,
    "_apply_": guarded_apply,
}


def script_globals(names: Mapping[str, Any]) -> dict[str, Any]:
    """The globals of one run: the builtins, the guards, and `names` (records, params, ...)."""
    return {"__builtins__": dict(BUILTINS), "__name__": "script", **GUARDS, **names}
