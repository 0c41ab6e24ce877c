"""Read YAML while remembering where every value came from.

Errors in definitions must name `PATH:LINE:COL`, so the loader keeps, for each
JSON path into the document, the line and column of the node that produced it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor


@dataclass(frozen=True)
class Location:
    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class DefinitionError(Exception):
    """One problem in one definition file, located to the line."""

    def __init__(self, location: Location, message: str):
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message

    def as_dict(self) -> dict:
        loc = self.location
        return {"path": loc.path, "line": loc.line, "column": loc.column, "message": self.message}


class SourceDocument:
    """A parsed YAML document with a position for every value in it."""

    def __init__(self, path: str, data: Any, positions: dict[tuple, tuple[int, int]],
                 problems: list[DefinitionError] | None = None):
        self.path = path
        self.data = data
        self._positions = positions
        self.problems = problems or []  # mistakes found while reading it that do not stop it loading

    def where(self, *keys: Any) -> Location:
        """The location of the value at `keys`, or of its nearest located parent."""
        keys = tuple(keys)
        while keys and keys not in self._positions:
            keys = keys[:-1]
        line, column = self._positions.get(keys, (1, 1))
        return Location(self.path, line, column)

    def where_key(self, *keys: Any) -> Location:
        """The location of the last of `keys` as a mapping key (not its value), else `where(*keys)`."""
        position = self._positions.get((*keys, KEY))
        return Location(self.path, *position) if position else self.where(*keys)

    def error(self, keys: tuple, message: str) -> DefinitionError:
        return DefinitionError(self.where(*keys), message)


_scalar = SafeConstructor()


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `on:`, `yes` and `no` as booleans,
    turning a rule's `on: [update]` or a choice `no: No` into True/False keys."""


# libyaml's parser (PyYAML's C binding; the Python one where PyYAML was built without it), with the
# same resolvers: the repository's definitions load three times faster. A document it rejects is read
# again by the Python parser, whose messages the errors have always quoted.
_FastLoader = type("_FastLoader", (getattr(yaml, "CSafeLoader", _Loader),), {})

for _loader in (_Loader, _FastLoader):
    _loader.yaml_implicit_resolvers = {
        key: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
KEY = object()  # positions[(*path, KEY)]: where the mapping key at the end of `path` is written


# What a definition file may hold once its aliases are expanded: a few anchors each used a few times
# are fine; nine nested levels of them ("billion laughs") would be a billion values.
MAX_VALUES = 100_000
MAX_DEPTH = 64


def _to_python(node: yaml.Node, path: tuple, positions: dict, source: str, problems: list,
               count: list | None = None) -> Any:
    """The node as Python data. A key given twice is one problem, reported at the second one; the
    first value stays, so the rest of the file (and every file that refers to it) loads as written.
    Refuses a file nested deeper than MAX_DEPTH or holding more than MAX_VALUES values (aliases
    counted each time they are used)."""
    count = count if count is not None else [0]
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise DefinitionError(_mark(source, node), f"the file holds more than {MAX_VALUES:,} values once its aliases "
                                                   f"(*name) are expanded; write it out without so many")
    if len(path) > MAX_DEPTH:
        raise DefinitionError(_mark(source, node), f"values nested more than {MAX_DEPTH} levels deep")
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, path + ("<key>",), {}, source, problems, count)
            if isinstance(key, (dict, list)):
                raise DefinitionError(_mark(source, key_node), "a mapping key must be a plain value")
            if key in result:
                first = positions[path + (key, KEY)]
                problems.append(DefinitionError(_mark(source, key_node), f"duplicate key {key!r} (first at line "
                                                                         f"{first[0]}; the first one is used)"))
                continue
            positions[path + (key, KEY)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _to_python(value_node, path + (key,), positions, source, problems, count)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, path + (i,), positions, source, problems, count) for i, item in enumerate(node.value)]
    try:
        value = _scalar.construct_object(node, deep=True)
    except ValueError as exc:  # written as a date or a time that cannot be one (2027-02-30, 25:00:00)
        raise DefinitionError(_mark(source, node), f"{node.value!r} is written as a date or time but is not one "
                                                   f"({exc}); write a real one, or quote it to mean the text") from None
    if isinstance(value, float) and not math.isfinite(value):  # .inf, .nan: no count, size or score is one
        raise DefinitionError(_mark(source, node), f"{node.value!r} is not a finite number; write a number, or quote "
                                                   f"it to mean the text")
    return value


def _mark(source: str, node: yaml.Node) -> Location:
    return Location(source, node.start_mark.line + 1, node.start_mark.column + 1)


def parse_yaml(text: str, path: str) -> SourceDocument:
    """Parse one YAML document; syntax errors become a located DefinitionError."""
    try:
        try:
            node = yaml.compose(text, Loader=_FastLoader)
        except yaml.YAMLError:
            node = yaml.compose(text, Loader=_Loader)  # raises, with the Python parser's message and mark
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise DefinitionError(Location(path, line, column), f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(Location(path, 1, 1), f"YAML error: {exc}") from None
    except RecursionError:  # the parser's own recursion, far past MAX_DEPTH
        raise DefinitionError(Location(path, 1, 1), f"values nested more than {MAX_DEPTH} levels deep") from None
    positions: dict[tuple, tuple[int, int]] = {}
    problems: list[DefinitionError] = []
    data = None if node is None else _to_python(node, (), positions, path, problems)
    return SourceDocument(path, data, positions, problems)
