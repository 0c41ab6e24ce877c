"""What happens around a write: lifecycle checks, before/after rules and notifications.

`hooks` holds what the record service calls (Automation); `rules` runs rules and keeps them from
looping; `lifecycle` checks per-state fields and direct changes of a lifecycle field;
`notifications` writes e-mails, `addresses` resolves and checks their recipient paths;
`conditions` evaluates declared conditions within a unit of work.

Importing this package imports only `addresses` (definitions, no database), so the definitions
loader can check recipient paths without the record service; the runtime names below are
imported on use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .addresses import address_path, recipient_path_problem

_RUNTIME = {"Automation": "hooks", "InsertSetPlan": "hooks", "action_allows": "lifecycle", "MAX_DEPTH": "rules",
            "RuleLoop": "rules"}

__all__ = ["MAX_DEPTH", "Automation", "InsertSetPlan", "RuleLoop", "action_allows", "address_path",
           "recipient_path_problem"]


def __getattr__(name: str) -> Any:
    module = _RUNTIME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
