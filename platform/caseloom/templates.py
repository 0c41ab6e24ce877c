"""Jinja templates in Jinja's sandbox, for effect values and notification texts."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateProblem(ValueError):
    """A template that does not render; the message says which and why."""


@lru_cache(maxsize=1024)
def _compile(text: str):
    return _env.from_string(text)


def render(text: str, context: dict[str, Any]) -> str:
    substitution = _substitution(text)
    if substitution is not None:
        rendered = substitution.render(context)
        if rendered is not None:
            return rendered
    try:
        return _compile(text).render(**context)
    except TemplateError as exc:
        raise TemplateProblem(f"template {text!r}: {exc}") from None


class _Substitution:
    """A template that is only text and `{{ name.key }}` outputs of plain values, rendered by
    joining strings: notifications render once per recipient record, a hundred thousand times for
    a large major case, and Jinja's per-render context costs fifty times more. Anything else
    (a missing key, a value that is not plain data) is left to Jinja, so the output is Jinja's."""

    PLAIN = (str, int, float, bool, type(None))

    def __init__(self, parts: list):
        self.parts = parts

    def render(self, context: dict[str, Any]) -> str | None:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            holder = context.get(part[0])
            if not isinstance(holder, dict) or part[1] not in holder:
                return None
            value = holder[part[1]]
            if not isinstance(value, self.PLAIN):
                return None
            out.append(value if isinstance(value, str) else str(value))
        return "".join(out)


@lru_cache(maxsize=1024)
def _substitution(text: str) -> _Substitution | None:
    try:
        body = _env.parse(text).body
    except TemplateError:
        return None
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts: list = []
    for node in body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
        elif (isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name)
              and not hasattr(dict, node.attr)):  # `record.items` would be dict's method in Jinja
            parts.append((node.node.name, node.attr))
        else:
            return None
    return _Substitution(parts)


def substitution_parts(text: str) -> list | None:
    """A plain-substitution template as its parts: strings, and (name, key) for `{{ name.key }}`;
    None for any other template (for rendering it in SQL, where Python's str() of each value is
    the database's text of it)."""
    found = _substitution(text)
    return None if found is None else list(found.parts)


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render strings that contain a template; leave every other value as it is."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return render(value, context)
    return value
