"""Rewrite parts of a definition file as text, so its comments and layout elsewhere stay.

The layout editors and the small declaration forms change one top-level key (`list`, `form`)
or one entry of a top-level mapping (a table's `fields`, a file's `properties`). Only those
lines are rewritten; values are written in YAML's flow style by PyYAML. Every rewrite is
checked by parsing the result: a file this cannot edit safely is refused, never damaged.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .yamlsource import DefinitionError, parse_yaml


class YamlEditError(ValueError):
    """A file that cannot be rewritten in place; edit its YAML in the Definitions area instead."""


def set_top_level(text: str, key: str, value: Any) -> str:
    """`key: value` at the top level: the key's lines replaced, or added at the end of the file."""
    lines = text.splitlines()
    block = _block(lines, key)
    rendered = _render(key, value, "")
    if block is None:
        new_lines = _with_end(lines) + rendered
    else:
        start, end = block
        new_lines = lines[:start] + rendered + lines[end:]
    return _checked(text, _joined(new_lines), key, None, value)


def set_entry(text: str, key: str, name: str, value: Any) -> str:
    """Entry `name` of the top-level mapping `key` set to `value`: its lines replaced (in the style
    they were written, one line or a block), or a new line after the mapping's last entry."""
    lines = text.splitlines()
    block = _block(lines, key)
    if block is None:
        return _checked(text, _joined(_with_end(lines) + [f"{key}:", *_render(name, value, "  ")]), key, name, value)
    start, end = block
    indent = _child_indent(lines, start, end)
    entry = _entry(lines, start, end, indent, name)
    if entry is None:
        new_lines = lines[:end] + _render(name, value, indent, flow=True) + lines[end:]
    else:
        first, last = entry
        block_style = lines[first].rstrip().endswith(":")
        new_lines = lines[:first] + _render(name, value, indent, flow=not block_style) + lines[last:]
    return _checked(text, _joined(new_lines), key, name, value)


def _flow(value: Any) -> str:
    dumped = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000_000, allow_unicode=True)
    return dumped.strip().removesuffix("...").strip()


def _render(key: str, value: Any, indent: str, flow: bool = False) -> list[str]:
    """`key: value` as lines: scalars and lists of scalars on one line; a list of mappings or a
    mapping (unless `flow`) as a block of flow-style items."""
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        lines = [f"{indent}{key}:"]
        for item in value:
            pairs = list(item.items()) if isinstance(item, dict) else []
            if not pairs:
                lines.append(f"{indent}  - {_flow(item)}")
                continue
            lines.append(f"{indent}  - {pairs[0][0]}: {_flow(pairs[0][1])}")
            lines.extend(f"{indent}    {k}: {_flow(v)}" for k, v in pairs[1:])
        return lines
    if isinstance(value, dict) and not flow:
        return [f"{indent}{key}:", *(f"{indent}  {k}: {_flow(v)}" for k, v in value.items())]
    return [f"{indent}{key}: {_flow(value)}"]


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _block(lines: list[str], key: str) -> tuple[int, int] | None:
    """(first line, line after the last) of a top-level key's lines; comments and blank lines
    after its last indented line belong to what follows."""
    pattern = re.compile(rf"^{re.escape(key)}\s*:(\s|$)")
    for start, line in enumerate(lines):
        if pattern.match(line):
            return start, _block_end(lines, start, lambda candidate: not candidate[0].isspace())
    return None


def _block_end(lines: list[str], start: int, ends) -> int:
    end = start + 1
    last = start + 1
    while end < len(lines):
        if _content(lines[end]):
            if ends(lines[end]):
                break
            last = end + 1
        end += 1
    return last


def _child_indent(lines: list[str], start: int, end: int) -> str:
    for line in lines[start + 1:end]:
        if _content(line):
            return line[: len(line) - len(line.lstrip())]
    return "  "


def _entry(lines: list[str], start: int, end: int, indent: str, name: str) -> tuple[int, int] | None:
    pattern = re.compile(rf"^{re.escape(indent)}{re.escape(name)}\s*:(\s|$)")
    for first in range(start + 1, end):
        if pattern.match(lines[first]):
            stop = _block_end(lines[:end], first, lambda line: len(line) - len(line.lstrip()) <= len(indent))
            return first, stop
    return None


def _with_end(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _joined(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _checked(old: str, new: str, key: str, name: str | None, value: Any) -> str:
    """The rewritten text, if it parses to the old data with exactly the one change made."""
    try:
        before = parse_yaml(old, "before").data
    except DefinitionError as exc:
        raise YamlEditError(f"the file does not parse ({exc.message}); fix its YAML in the Definitions area") from None
    if not isinstance(before, dict):
        raise YamlEditError("the file is not a mapping; fix its YAML in the Definitions area")
    expected = dict(before)
    if name is None:
        expected[key] = value
    else:
        expected[key] = {**(before.get(key) or {}), name: value}
    try:
        after = parse_yaml(new, "after").data
    except DefinitionError:
        after = None
    if after != expected:
        where = key if name is None else f"{key}.{name}"
        raise YamlEditError(f"{where} could not be rewritten in place; edit the file's YAML in the Definitions area")
    return new
