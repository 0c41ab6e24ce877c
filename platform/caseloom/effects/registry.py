"""The effect registry: one entry per primitive, built-in or added by an extension.

An effect is declared by its name, a description, the JSON Schema of its arguments (unknown
keys refused), a parser that turns checked arguments into a frozen object when the
definitions load, and the function that runs it. The runner may be named as
"module:function" so that declaring an effect imports nothing of the runtime: the
definitions load without the record service, and run time reads only parsed objects.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema

from ..definitions.model import EffectDef
from ..definitions.yamlsource import KEY

if TYPE_CHECKING:
    from .build import Builder


@dataclass(frozen=True)
class EffectKind:
    name: str
    description: str
    schema: dict  # JSON Schema of the arguments
    parse: Callable[[Builder, Any, tuple], Any]  # (builder, arguments, where) -> frozen arguments
    run: Callable | str  # (EffectContext, frozen arguments) -> None, or "module:function"
    example: str = ""  # YAML, for the README and the Definitions area
    background_safe: bool = True  # may run in a background action
    _runner: list = field(default_factory=list, repr=False, compare=False)

    def runner(self) -> Callable:
        if not self._runner:
            run = self.run
            if isinstance(run, str):
                module, _, name = run.partition(":")
                run = getattr(importlib.import_module(module), name)
            self._runner.append(run)
        return self._runner[0]


REGISTRY: dict[str, EffectKind] = {}


def register(kind: EffectKind) -> EffectKind:
    """Add an effect (the extension point for built-in effects and any other)."""
    if kind.name in REGISTRY and REGISTRY[kind.name] is not kind:
        raise ValueError(f"effect {kind.name!r} is registered twice")
    REGISTRY[kind.name] = kind
    return kind


def parse_effects(b: Builder, items: Any, at: tuple) -> tuple[EffectDef, ...]:
    """A list of `{effect: arguments}` items, each checked against its effect's schema and parsed."""
    built = []
    for i, item in enumerate(items or ()):
        if not isinstance(item, dict) or len(item) != 1:
            b.error(at + (i,), "each effect is a mapping with one key: the effect's name")
            continue
        name, args = next(iter(item.items()))
        kind = REGISTRY.get(name)
        if kind is None:
            b.error(at + (i, name, KEY), f"unknown effect {name!r}; known: {', '.join(sorted(REGISTRY))}")
            continue
        where = at + (i, name)
        if not _schema_ok(b, kind, args, where):
            continue
        errors_before = b.errors_seen()
        parsed = kind.parse(b, args, where)
        if b.errors_seen() == errors_before:
            built.append(EffectDef(name, parsed, b.location(at + (i,))))
    return tuple(built)


def _schema_ok(b: Builder, kind: EffectKind, args: Any, where: tuple) -> bool:
    validator = jsonschema.Draft202012Validator(kind.schema)
    problems = sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
    unknown_at = {tuple(p.absolute_path) for p in problems if p.validator == "additionalProperties"}
    for problem in problems:
        keys = tuple(problem.absolute_path)
        if problem.validator == "required" and keys in unknown_at:
            continue  # a misspelled required key: its unknown key says it
        inside = ".".join(map(str, keys))
        prefix = f"{kind.name}{'.' + inside if inside else ''}: "
        if problem.validator == "additionalProperties" and isinstance(problem.instance, dict):
            known = problem.schema.get("properties", {})
            for key in [k for k in problem.instance if k not in known]:
                b.error(where + keys + (key, KEY), f"{prefix}unknown key {key!r} (expected: {', '.join(known)})")
        elif problem.validator == "required":
            b.error(where + keys, f"{prefix}{problem.message}")
        else:
            b.error(where + keys, prefix + problem.message)
    return not problems
