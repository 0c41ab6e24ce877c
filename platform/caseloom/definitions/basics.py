"""Roles, system properties and access rules: from documents to frozen objects, cross-checked."""

from __future__ import annotations

import math
from typing import Any

from ..fieldtypes import INTEGER_MAX, INTEGER_MIN, WHOLE_NUMBER, FieldValueError
from ..query.nodes import QueryError
from .model import AccessRule, PropertyDef, RoleDef
from .yamlsource import SourceDocument


def build_roles(docs: list[SourceDocument], errors: list) -> dict[str, RoleDef]:
    roles: dict[str, RoleDef] = {"admin": RoleDef("admin", "Full access to everything")}
    seen: dict[str, object] = {}
    for doc in docs:
        for name, spec in doc.data["roles"].items():
            if name in seen:
                errors.append(doc.error(("roles", name), f"role {name!r} is already declared at {seen[name]}"))
            elif name != "admin":
                seen[name] = doc.where("roles", name)
            roles[name] = RoleDef(name, spec.get("description", ""), tuple(spec.get("contains", ())))
    for doc in docs:
        for name, spec in doc.data["roles"].items():
            for i, contained in enumerate(spec.get("contains", ())):
                if contained not in roles:
                    errors.append(doc.error(("roles", name, "contains", i), f"unknown role {contained!r}"))
    return roles


# The value of a property declared without a default.
EMPTY_PROPERTY = {"boolean": False, "integer": 0, "decimal": 0.0, "string": "", "list": []}


def parse_property_value(ptype: str, value: Any) -> Any:
    """A property value of `ptype` from YAML, JSON or a string; raises FieldValueError."""
    from ..fieldtypes import parse_boolean

    if ptype == "boolean":
        parsed = parse_boolean(value)
        if parsed is None:
            raise FieldValueError("expected true or false")
        return parsed
    if ptype == "integer":
        if isinstance(value, bool):
            raise FieldValueError("expected a whole number")
        if not isinstance(value, int):
            text = "" if value is None else str(value).strip()
            if not text:
                raise FieldValueError("expected a whole number, got nothing")
            if not WHOLE_NUMBER.fullmatch(text):  # int() would take other scripts' digits (١) and 1_000
                raise FieldValueError(f"expected a whole number, got {value!r}")
            value = int(text)
        if not INTEGER_MIN <= value <= INTEGER_MAX:  # what an integer field holds; more overflows where it is used
            raise FieldValueError(f"{value} is out of range: a whole number from {INTEGER_MIN:,} to {INTEGER_MAX:,}")
        return value
    if ptype == "decimal":
        if isinstance(value, bool):
            raise FieldValueError("expected a number")
        try:
            number = float(str(value).strip())
        except ValueError:
            raise FieldValueError(f"expected a number such as 0.75, got {value!r}") from None
        if not math.isfinite(number):
            raise FieldValueError(f"expected a finite number, got {value!r}")
        return number
    if ptype == "list":
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value]
        if value is None:
            return []
        return [item.strip() for item in str(value).split(",") if item.strip()]
    return "" if value is None else str(value)


def build_properties(docs: list[SourceDocument], errors: list) -> dict[str, PropertyDef]:
    properties: dict[str, PropertyDef] = {}
    for doc in docs:
        for name, spec in doc.data["properties"].items():
            where = ("properties", name)
            if name in properties:
                errors.append(doc.error(where, f"property {name!r} is already declared at {properties[name].location}"))
                continue
            try:
                raw_default = spec.get("default", EMPTY_PROPERTY[spec["type"]])
                default = parse_property_value(spec["type"], raw_default)
                if isinstance(default, list):
                    default = tuple(default)  # definitions are immutable; get() hands out copies
            except FieldValueError as exc:
                errors.append(doc.error(where + ("default",), f"default of {spec['type']} property: {exc}"))
                continue
            choices = tuple(spec.get("choices", ()))
            if choices and spec["type"] == "string" and default not in choices:
                errors.append(doc.error(where + ("default",), f"default {default!r} is not among the choices"))
            bounds = {key: spec[key] for key in ("min", "max") if key in spec}
            if bounds and spec["type"] not in ("integer", "decimal"):
                errors.append(doc.error(where + (next(iter(bounds)),), f"min and max are for integer and decimal "
                                                                        f"properties, not {spec['type']}"))
                continue
            if spec["type"] == "integer" and any(isinstance(b, float) for b in bounds.values()):
                errors.append(doc.error(where + ("min" if isinstance(bounds.get("min"), float) else "max",),
                                        "an integer property's min and max are whole numbers"))
                continue
            if len(bounds) == 2 and bounds["min"] > bounds["max"]:
                errors.append(doc.error(where + ("max",), f"max {bounds['max']} is below min {bounds['min']}"))
                continue
            declared = PropertyDef(name, spec["type"], default, spec.get("description", ""), choices,
                                   doc.where(*where), bounds.get("min"), bounds.get("max"))
            if bounds and (problem := declared.out_of_range(default)):
                errors.append(doc.error(where + ("default",), f"default {default}: {problem}"))
                continue
            properties[name] = declared
    return properties


def build_access(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> list[AccessRule]:
    rules = []
    for doc in docs:
        for i, spec in enumerate(doc.data["access"]):
            rule = _access_rule(doc, i, spec, tables, roles, errors)
            if rule is not None:
                rules.append(rule)
    return rules


def _access_rule(doc: SourceDocument, i: int, spec: dict, tables: dict, roles: dict, errors: list) -> AccessRule | None:
    where = ("access", i)
    table, _, field = spec["table"].partition(".")
    tdef = tables.get(table)
    if tdef is None:
        errors.append(doc.error(where + ("table",), f"unknown table {table!r}"))
    elif field and field != "*" and tdef.field(field) is None:
        errors.append(doc.error(where + ("table",), f"table {table!r} has no field {field!r} (a field rule names "
                                                   "`table.field`, or `table.*` for every field)"))
    for j, role in enumerate(spec.get("roles", ())):
        if role not in roles:
            errors.append(doc.error(where + ("roles", j), f"unknown role {role!r}"))
    decision = spec.get("decision", "allow_if")
    text = (spec.get("condition") or "").strip()
    if decision == "allow_if" and not spec.get("roles") and not text:
        errors.append(doc.error(where, "an allow_if rule needs roles or a condition: with neither it would let "
                                       "every user in (name the roles, or write `roles: [admin]`)"))
    condition = None
    if text and tdef is not None:
        condition = _access_condition(doc, where + ("condition",), text, tables, tdef, errors)
        if condition is None:
            return None
    return AccessRule(table, tuple(spec["operations"]), tuple(spec.get("roles", ())), field or None, decision,
                      condition, text, doc.where(*where))


def _access_condition(doc: SourceDocument, where: tuple, text: str, tables: dict, tdef, errors: list):
    """A rule's condition, parsed and checked against its table; the user's own fields it reads
    (`gs.getUser().getRecord().getValue('path')`) checked against sys_user."""
    from ..query.conditions import parse_encoded, terms_of
    from ..query.dynamic import Dynamic, recognise
    from ..query.meaning import bind_fields, field_at

    try:
        query = parse_encoded(text)
        if query.order:
            raise QueryError("a rule's condition takes no ORDERBY")
        bind_fields(query.where, tables, tdef)
        for term in terms_of(query.where):
            values = term.value if isinstance(term.value, (list, tuple)) else [term.value]
            for value in values:
                found = recognise(value)
                if isinstance(found, Dynamic) and found.user_path:
                    if "sys_user" not in tables:
                        raise QueryError(f"{found}: there is no sys_user table")
                    field_at(tables, tables["sys_user"], found.user_path)
    except QueryError as exc:
        errors.append(doc.error(where, f"condition: {exc}"))
        return None
    return query.where
