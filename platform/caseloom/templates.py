"""Jinja templates in Jinja's sandbox, for effect values and notification texts."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateProblem(ValueError):
    """A template that does not render; the message says which and why."""


@lru_cache(maxsize=1024)
def _compile(text: str):
    return _env.from_string(text)


def render(text: str, context: dict[str, Any]) -> str:
    try:
        return _compile(text).render(**context)
    except TemplateError as exc:
        raise TemplateProblem(f"template {text!r}: {exc}") from None


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render strings that contain a template; leave every other value as it is."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return render(value, context)
    return value
