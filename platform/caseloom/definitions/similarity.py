"""A table's similar lists (`similar:` in a table document; caseloom.similar): built after the actions and
properties they name, every field, condition, property, action and template checked where it is written.
A table extending one with similar lists (and none of its own) has them too."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..templates import template_problems
from .behaviour import _Checker
from .model import ActionDef, Setting, SimilarDef, SimilarSuggest, TableDef
from .yamlsource import SourceDocument

MESSAGE_NAMES = ("count", "groups", "days", "record")  # what a suggestion's message may name
MAX_LIMIT = 50


def build_similar(docs: list[SourceDocument], tables: dict[str, TableDef], roles: dict, errors: list,
                  properties: dict, actions: list[ActionDef]) -> dict[str, TableDef]:
    own: dict[str, tuple[SimilarDef, ...]] = {}
    for doc in docs:
        name = doc.data.get("table")
        if "similar" not in doc.data or name not in tables:
            continue
        check = _Checker(doc, tables, roles, errors, properties)
        own[name] = _lists(check, tables[name], doc.data["similar"], actions)
    if not own:
        return tables
    out = dict(tables)
    for name, tdef in tables.items():
        holder = next((t for t in (name, *_ancestors(tables, tdef)) if t in own), None)
        if holder is not None:
            out[name] = replace(tdef, similar=own[holder])
    return out


def _ancestors(tables: dict, tdef: TableDef) -> list[str]:
    found = []
    while tdef.extends and tdef.extends in tables:
        found.append(tdef.extends)
        tdef = tables[tdef.extends]
    return found


def _lists(check: _Checker, table: TableDef, specs: list, actions: list[ActionDef]) -> tuple[SimilarDef, ...]:
    where0 = ("similar",)
    if not table.text_index:
        check.error(where0, f"similar lists need a text index: give {table.name!r} `text_index:` (the text fields "
                            "whose words are compared)")
        return ()
    made, seen = [], set()
    for i, spec in enumerate(specs):
        where = (*where0, i)
        if spec["name"] in seen:
            check.error((*where, "name"), f"similar list {spec['name']!r} is declared twice in {table.name!r}")
            continue
        seen.add(spec["name"])
        built = _list(check, table, where, spec, actions)
        if built is not None:
            made.append(built)
    return tuple(made)


def _list(check: _Checker, table: TableDef, where: tuple, spec: dict, actions: list[ActionDef]) -> SimilarDef | None:
    before = len(check.errors)
    condition = check.encoded(table, spec.get("condition"), (*where, "condition"))
    when = check.encoded(table, spec.get("when"), (*where, "when"))
    min_score = _setting(check, spec, "min_score", 0.7, "decimal", where, (0.0, 1.0))
    add_action = add_input = None
    if "add" in spec:
        add_action, add_input = spec["add"]["action"], spec["add"]["input"]
        action = next((a for a in actions if a.name == add_action and a.table in (table.name, *_names(check, table))),
                      None)
        if action is None:
            check.error((*where, "add", "action"), f"unknown action {add_action!r} of {table.name!r}")
        else:
            given = next((i for i in action.inputs if i.name == add_input), None)
            if given is None or given.type != "records" or (given.table or action.table) != table.name:
                check.error((*where, "add", "input"), f"action {add_action!r} has no records input {add_input!r} "
                                                      f"taking {table.name!r} records")
    suggest = _suggest(check, table, (*where, "suggest"), spec["suggest"], actions) if "suggest" in spec else None
    if len(check.errors) > before:
        return None
    return SimilarDef(spec["name"], spec.get("label") or spec["name"].replace("_", " ").capitalize(), table.name,
                      condition, when, min_score, spec.get("limit", 5), add_action, add_input, suggest,
                      check.doc.where(*where, "name"))


def _names(check: _Checker, table: TableDef) -> list[str]:
    return _ancestors(check.tables, table)


def _suggest(check: _Checker, table: TableDef, where: tuple, spec: dict, actions: list[ActionDef]) -> SimilarSuggest:
    group_by = spec["group_by"]
    field = table.field(group_by)
    if field is None or not field.stored:
        check.error((*where, "group_by"), f"{group_by!r} is not a stored field of {table.name!r}")
    keep = spec.get("field")
    if keep is not None:
        kept = table.field(keep)
        if kept is None or not kept.stored or kept.type not in ("string", "text"):
            check.error((*where, "field"), f"{keep!r} is not a string or text field of {table.name!r} (the suggestion's "
                                           "message is kept there)")
    action = spec.get("action")
    if action is not None and not any(a.name == action and a.table in (table.name, *_names(check, table))
                                      for a in actions):
        check.error((*where, "action"), f"unknown action {action!r} of {table.name!r}")
    for problem in template_problems(spec["message"], MESSAGE_NAMES):
        check.error((*where, "message"), problem)
    date_field = spec.get("date_field", "sys_created_on")
    dated = table.field(date_field) if isinstance(date_field, str) else None
    if dated is None or not dated.stored or dated.type not in ("date", "datetime"):
        check.error((*where, "date_field"), f"{date_field!r} is not a stored date or date-time field of "
                                            f"{table.name!r} (the similar records since `since_days` are counted by it)")
    return SimilarSuggest(
        group_by,
        _setting(check, spec, "min_records", 10, "integer", where, (1, None)),
        _setting(check, spec, "min_groups", 3, "integer", where, (1, None)),
        _setting(check, spec, "since_days", 1, "integer", where, (0, None)),
        spec["message"], action, keep, date_field if dated is not None else "sys_created_on")


def _setting(check: _Checker, spec: dict, key: str, default: float, ptype: str, where: tuple,
             bounds: tuple[float | None, float | None]) -> Setting:
    """`key: number` or `key_property: name` (the property's value, read when used)."""
    name: Any = spec.get(f"{key}_property")
    value = spec.get(key, default)
    low, high = bounds
    if (low is not None and value < low) or (high is not None and value > high):
        check.error((*where, key), f"{key} {value} is out of range ({low} to {high if high is not None else 'any'})")
    if name is None:
        return Setting(value)
    declared = check.properties.get(name)
    if declared is None:
        check.error((*where, f"{key}_property"), f"unknown system property {name!r}")
    elif declared.type != ptype and not (ptype == "decimal" and declared.type == "integer"):
        check.error((*where, f"{key}_property"), f"{name!r} is a {declared.type} property, not a {ptype} one")
    return Setting(value if declared is None else declared.default, name)
