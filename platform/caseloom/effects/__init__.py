"""Effects: what actions and rules do, one registered primitive each.

Declared and parsed when the definitions load (`registry`, `builtin`, `build`), run by
`run` and `lists`. Importing this package imports nothing of the runtime, so the
definitions load without the record service; the runtime names below are imported on use.
"""

from __future__ import annotations

from typing import Any

from . import builtin  # noqa: F401  (registers the built-in effects)
from .build import Builder
from .registry import REGISTRY, EffectKind, parse_effects, register

_RUNTIME = {"EffectContext", "EffectFailed", "run_effects"}

__all__ = ["REGISTRY", "Builder", "EffectContext", "EffectFailed", "EffectKind", "parse_effects", "register",
           "run_effects"]


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
