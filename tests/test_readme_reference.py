"""The README documents every key of every definition kind, every effect argument and every operator.

Another team writes applications from the README alone, so a key a schema accepts and the
README does not name is a key nobody can use. The kinds' keys are walked from their JSON
Schemas (`schema_for`), the effects' from the effect registry, the operators from the
operator table: a key added to any of them fails here until the README says what it means.

A kind's keys are written in its `### KIND` subsection of `## Definitions reference` as
paths in backticks: `number.prefix` (a key of a mapping), `transitions[].inputs[].mandatory`
(an item of a list), `types.NAME.result_key` (an upper-case word for a key the author
chooses: a field, state or type name).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caseloom.definitions.loader import KINDS, schema_for
from caseloom.effects import REGISTRY
from caseloom.query.operators import OPERATORS

README = Path(__file__).resolve().parent.parent / "README.md"
REFERENCE = "Definitions reference"
OPERATORS_HEADING = "Operators"
PLACEHOLDER = "NAME"  # how key_paths writes a key the author chooses; the README may use any upper-case word


def key_paths(schema: dict) -> list[str]:
    """Every key a schema accepts, as a path (`a.b`, `a[].b`, `a.NAME.b`), in schema order. Local
    `$ref`s are followed, and the branches of `oneOf`, `anyOf`, `allOf` and `then`/`else` merged."""
    found: dict[str, None] = {}

    def walk(node: object, prefix: str, depth: int) -> None:
        if depth > 50:
            raise ValueError(f"schema too deep at {prefix!r} (a recursive $ref?)")
        node = _resolved(schema, node)
        if not isinstance(node, dict):
            return
        for name, sub in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            found[path] = None
            walk(sub, path, depth + 1)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{prefix}.{PLACEHOLDER}" if prefix else PLACEHOLDER, depth + 1)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{prefix}[]", depth + 1)
        for branch in (*node.get("oneOf", ()), *node.get("anyOf", ()), *node.get("allOf", ()),
                       *(node[key] for key in ("then", "else") if key in node)):
            walk(branch, prefix, depth + 1)

    walk(schema, "", 0)
    return list(found)


def _resolved(schema: dict, node: object) -> object:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs can be walked, not {ref!r}")
        target: object = schema
        for part in ref[2:].split("/"):
            target = target[part]  # type: ignore[index]
        node = target
    return node


def path_pattern(path: str) -> re.Pattern:
    """A key path as the README may write it: the placeholder as any upper-case word."""
    parts = [r"[A-Z][A-Z0-9_]*" if part == PLACEHOLDER else re.escape(part) for part in path.split(".")]
    return re.compile(r"\.".join(parts))


def undocumented(paths: list[str], spans: set[str]) -> list[str]:
    """The paths no backtick span writes out whole."""
    return [p for p in paths if not any(path_pattern(p).fullmatch(span) for span in spans)]


def backticked(text: str) -> set[str]:
    return {span.strip() for span in re.findall(r"`([^`\n]+)`", text)}


def section(text: str, level: int, title: str) -> str:
    """The text under a heading (`## title`, `### title`), up to the next heading of that level or
    higher; backticks in headings and `#` lines inside code blocks are ignored. Fails naming the
    heading when there is none."""
    lines = text.splitlines(keepends=True)
    start = end = None
    fenced = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"(#+) +(.*?)\s*$", line)
        if heading is None:
            continue
        depth, name = len(heading.group(1)), heading.group(2).strip("`")
        if start is None and depth == level and name == title:
            start = i + 1
        elif start is not None and depth <= level:
            end = i
            break
    assert start is not None, f"the README has no heading `{'#' * level} {title}`"
    return "".join(lines[start:end])


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_of_a_kind_is_in_its_reference_subsection(readme, kind):
    text = section(section(readme, 2, REFERENCE), 3, kind)
    missing = undocumented(key_paths(schema_for(kind)), backticked(text))
    assert not missing, (f"README, {REFERENCE}, ### {kind}: these keys of the {kind} schema are not "
                         f"described (write each path in backticks with its meaning): {', '.join(missing)}")


def unnamed_effect_words(name: str, schema: dict, text: str) -> list[str]:
    """The effect's name and argument keys (nested ones too) that no backtick span of `text` contains
    as a word (`create: {table, values: {FIELD: VALUE}, as: NAME, link: FIELD}` names all four)."""
    words = {word for span in backticked(text) for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}
    keys = {path.replace("[]", "").split(".")[-1] for path in key_paths(schema)} - {PLACEHOLDER}
    return sorted(k for k in keys | {name} if k not in words)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_effect_and_its_arguments_are_in_the_readme(readme, name):
    missing = unnamed_effect_words(name, REGISTRY[name].schema, readme)
    assert not missing, f"README: effect {name!r}: not in backticks anywhere: {', '.join(missing)}"


@pytest.mark.parametrize("name", list(OPERATORS))
def test_every_operator_is_in_the_operators_table_with_its_token(readme, name):
    rows = [backticked(line) for line in section(section(readme, 2, REFERENCE), 3, OPERATORS_HEADING).splitlines()
            if line.startswith("|")]
    op = OPERATORS[name]
    assert any({op.name, op.token} <= row for row in rows), (
        f"README, {REFERENCE}, ### {OPERATORS_HEADING}: no table row gives operator `{op.name}` "
        f"with its encoded token `{op.token}`")


# -- the checks themselves: they must fail on a key the README does not name --------------------


SAMPLE = {
    "type": "object",
    "properties": {
        "job": {"type": "string"},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
        "slots": {"type": "object", "additionalProperties": {"type": "object", "properties": {"size": {}}}},
        "mode": {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"fast": {}}}]},
    },
    "allOf": [{"if": {"properties": {"job": {"const": "x"}}}, "then": {"properties": {"extra": {}}}}],
    "$defs": {"step": {"type": "object", "properties": {"run": {}, "when": {"type": "object",
                                                                             "properties": {"at": {}}}}}},
}


def test_key_paths_follow_refs_lists_named_entries_and_branches():
    assert key_paths(SAMPLE) == ["job", "steps", "steps[].run", "steps[].when", "steps[].when.at", "slots",
                                 "slots.NAME.size", "mode", "mode.fast", "extra"]


@pytest.mark.parametrize("spans, missing", [
    ({"job", "steps", "steps[].run", "steps[].when", "steps[].when.at", "slots", "slots.TYPE.size", "mode",
      "mode.fast", "extra"}, []),
    ({"job", "steps", "steps[].run", "steps[].when", "slots", "slots.TYPE.size", "mode", "mode.fast", "extra"},
     ["steps[].when.at"]),  # a nested key left out
    ({"job", "steps", "steps[].run", "steps[].when", "steps[].when.at", "slots", "slots.size", "mode", "mode.fast",
      "extra"}, ["slots.NAME.size"]),  # the chosen key's level missing
    ({"job", "steps", "steps.run", "steps[].when", "steps[].when.at", "slots", "slots.T.size", "mode",
      "mode.fast", "extra (a note)"}, ["steps[].run", "extra"]),  # no `[]`; a span that is more than the path
])
def test_undocumented_names_each_key_not_written_out(spans, missing):
    assert undocumented(key_paths(SAMPLE), spans) == missing


def test_a_key_added_to_a_kind_schema_is_reported(readme):
    schema = dict(schema_for("menu"))
    schema["properties"] = {**schema["properties"], "u_undocumented": {"type": "string"}}
    documented = backticked(section(section(readme, 2, REFERENCE), 3, "menu"))
    assert undocumented(key_paths(schema), documented) == ["u_undocumented"]


def test_an_effect_argument_the_readme_does_not_name_is_reported():
    schema = {"type": "object", "properties": {"field": {}, "rows": {"type": "array", "items": {
        "type": "object", "properties": {"weight": {}}}}}}
    text = "`stamp: {field: FIELD, rows: [...]}` and `weight` here; shade not in backticks"
    assert unnamed_effect_words("stamp", schema, text) == []
    assert unnamed_effect_words("shade", schema, text.replace("`weight`", "weight")) == ["shade", "weight"]


def test_section_stops_at_the_next_heading_of_its_level_or_higher_outside_code_blocks():
    text = "## A\nintro\n### b\n```yaml\n# a comment\n## not a heading\n```\n### `c`\nc text\n## D\nd text\n"
    assert section(text, 2, "A") == "intro\n### b\n```yaml\n# a comment\n## not a heading\n```\n### `c`\nc text\n"
    assert section(text, 3, "b") == "```yaml\n# a comment\n## not a heading\n```\n"
    assert section(section(text, 2, "A"), 3, "c") == "c text\n"
    with pytest.raises(AssertionError, match="no heading `### e`"):
        section(text, 3, "e")


def cli_commands(group, prefix: str = "caseloom") -> list[str]:
    """Every command of the `caseloom` CLI as it is typed (`caseloom job undo`), groups walked."""
    import click

    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += cli_commands(command, f"{prefix} {name}")
        else:
            found.append(f"{prefix} {name}")
    return found


def test_every_cli_command_is_in_the_command_line_section(readme):
    from caseloom.cli import main

    text = section(readme, 2, "Command line")
    missing = [c for c in cli_commands(main) if not re.search(rf"^{re.escape(c)}(?= |$)", text, re.MULTILINE)]
    assert not missing, f"README, ## Command line: these commands have no line of their own: {', '.join(missing)}"
