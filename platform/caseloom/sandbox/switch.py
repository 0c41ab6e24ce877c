"""The kill switch: the system property `caseloom.scripts.enabled` (platform/caseloom/system/properties.yaml)."""

from __future__ import annotations

from typing import Any

SCRIPTS_ENABLED = "caseloom.scripts.enabled"


class ScriptsDisabled(Exception):
    """Scripts are switched off on this instance."""

    def __init__(self) -> None:
        super().__init__(f"scripts are disabled: the system property {SCRIPTS_ENABLED} is false")


def scripts_enabled(properties: Any) -> bool:
    """Whether scripts may run: `properties` is a `caseloom.properties.Properties` (read per unit of
    work, so a change applies to the next run) or any mapping of property names to values."""
    try:
        value = properties.get(SCRIPTS_ENABLED)
    except KeyError:  # not declared in this definition set: the declared default, on
        return True
    return True if value is None else bool(value)


def require_scripts_enabled(properties: Any) -> None:
    """Raise ScriptsDisabled when the kill switch is off."""
    if not scripts_enabled(properties):
        raise ScriptsDisabled()
