"""Roles, system properties and access rules: from documents to frozen objects, cross-checked."""

from __future__ import annotations

from typing import Any

from ..fieldtypes import FieldValueError
from .model import AccessRule, PropertyDef, RoleDef
from .yamlsource import SourceDocument


def build_roles(docs: list[SourceDocument], errors: list) -> dict[str, RoleDef]:
    roles: dict[str, RoleDef] = {"admin": RoleDef("admin", "Full access to everything")}
    for doc in docs:
        for name, spec in doc.data["roles"].items():
            if name in roles and name != "admin":
                errors.append(doc.error(("roles", name), f"role {name!r} is declared twice"))
            roles[name] = RoleDef(name, spec.get("description", ""), tuple(spec.get("contains", ())))
    for doc in docs:
        for name, spec in doc.data["roles"].items():
            for i, contained in enumerate(spec.get("contains", ())):
                if contained not in roles:
                    errors.append(doc.error(("roles", name, "contains", i), f"unknown role {contained!r}"))
    return roles


# The value of a property declared without a default.
EMPTY_PROPERTY = {"boolean": False, "integer": 0, "string": "", "list": []}


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
        try:
            return int(str(value).strip())
        except ValueError:
            raise FieldValueError(f"expected a whole number, got {value!r}") from None
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
                errors.append(doc.error(where, f"property {name!r} is declared twice"))
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
            properties[name] = PropertyDef(name, spec["type"], default, spec.get("description", ""),
                                           choices, doc.where(*where))
    return properties


def build_access(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> list[AccessRule]:
    rules = []
    for doc in docs:
        for i, spec in enumerate(doc.data["access"]):
            if spec["table"] not in tables:
                errors.append(doc.error(("access", i, "table"), f"unknown table {spec['table']!r}"))
            for j, role in enumerate(spec["roles"]):
                if role not in roles:
                    errors.append(doc.error(("access", i, "roles", j), f"unknown role {role!r}"))
            rules.append(AccessRule(spec["table"], tuple(spec["operations"]), tuple(spec["roles"])))
    return rules
