"""Demo data: users and row generators, checked against the tables before any row is made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..fieldtypes import FieldValueError, moment_types
from .model import DemoGenerator, DemoSet, DemoUser, frozen_map
from .yamlsource import SourceDocument


def build_demo(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> DemoSet:
    """Demo users and generators, every name and literal value checked at its line."""
    users = _users(docs, tables, roles, errors)
    user_names = {u.user_name for u in users}
    made = {g["name"]: g["table"] for doc in docs for g in doc.data["demo"].get("generate", ())}
    generators = []
    for doc in docs:
        for i, gen in enumerate(doc.data["demo"].get("generate", ())):
            where = ("demo", "generate", i)
            table = tables.get(gen["table"])
            if table is None:
                errors.append(doc.error(where + ("table",), f"unknown table {gen['table']!r}"))
                continue
            if "per_scale" in gen and "per_account" in gen:
                errors.append(doc.error(where + ("per_account",), "per_account is the same as per_scale: give one"))
            for field_name, value in gen["values"].items():
                _check_value(doc, where + ("values", field_name), tables, table, field_name, value, made, user_names,
                             errors)
            check_after_values(doc, where, table, gen["values"], errors)
            generators.append(DemoGenerator(gen["name"], gen["table"], frozen_map(gen["values"]),
                                            gen.get("count"), gen.get("per_scale", gen.get("per_account"))))
    return DemoSet(tuple(users), tuple(generators))


def _users(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> list[DemoUser]:
    users = []
    user_table = tables.get("sys_user")
    for doc in docs:
        for i, user in enumerate(doc.data["demo"].get("users", ())):
            for j, role in enumerate(user["roles"]):
                if role not in roles:
                    errors.append(doc.error(("demo", "users", i, "roles", j), f"unknown role {role!r}"))
            made = {g["name"]: g["table"] for d in docs for g in d.data["demo"].get("generate", ())}
            for field_name, value in (user.get("values") or {}).items():
                at = ("demo", "users", i, "values", field_name)
                field = user_table.field(field_name) if user_table is not None else None
                if user_table is not None and field is None:
                    errors.append(doc.error(at, f"table 'sys_user' has no field {field_name!r}"))
                elif isinstance(value, dict) and field is not None:
                    _check_user_ref(doc, at, tables, field, value, made, errors)
            users.append(DemoUser(user["user_name"], user["password"], tuple(user["roles"]),
                                  frozen_map(user.get("values"))))
    return users


def _check_user_ref(doc: SourceDocument, at: tuple, tables: dict, field, value: dict, made: dict,
                    errors: list) -> None:
    """A demo user's `{ref: generator, row: N}`: one generated record (the user is given it once the
    generators have run)."""
    ref_table = made.get(value.get("ref"))
    if set(value) - {"ref", "row"} or not isinstance(value.get("row", 1), int) or value.get("row", 1) < 1:
        errors.append(doc.error(at, "a demo user's value is a literal or {ref: generator, row: N} (N from 1)"))
    elif ref_table is None:
        errors.append(doc.error(at + ("ref",), f"unknown generator {value.get('ref')!r}"))
    elif field.type != "reference" or not _is_a(tables, ref_table, field.reference):
        errors.append(doc.error(at, f"generator {value['ref']!r} makes {ref_table!r} records; field "
                                    f"{field.name!r} is {field.type}"))


def _check_value(doc: SourceDocument, at: tuple, tables: dict, table, field_name: str, value: Any,
                 made: dict[str, str], user_names: set[str], errors: list) -> None:
    """One generator value: a field of the table; a `ref` to a generator of the table it points at, a
    known `user`, a `days_ago` of a date or date-time field, or literals its field's type takes; a
    cycle's items each the same way."""
    field = table.field(field_name)
    if field is None:
        errors.append(doc.error(at, f"table {table.name!r} has no field {field_name!r}"))
        return
    for keys, item in _items(value):
        _check_item(doc, at + keys, tables, field, item, made, user_names, errors)


def _check_item(doc: SourceDocument, at: tuple, tables: dict, field, value: Any, made: dict[str, str],
                user_names: set[str], errors: list) -> None:
    if isinstance(value, dict) and "ref" in value:
        ref_table = made.get(value["ref"])
        if ref_table is None:
            errors.append(doc.error(at + ("ref",), f"unknown generator {value['ref']!r}"))
        elif field.type != "reference" or not _is_a(tables, ref_table, field.reference):
            errors.append(doc.error(at, f"generator {value['ref']!r} makes {ref_table!r} records; "
                                        f"field {field.name!r} is {_kind(field)}"))
    elif isinstance(value, dict) and "user" in value:
        if value["user"] not in user_names:
            errors.append(doc.error(at + ("user",), f"unknown demo user {value['user']!r}"))
        elif field.type != "reference" or not _is_a(tables, "sys_user", field.reference):
            errors.append(doc.error(at, f"{{user: ...}} is a sys_user record; field {field.name!r} is {_kind(field)}"))
    elif isinstance(value, dict) and "days_ago" in value:
        if field.ftype.now is None:
            errors.append(doc.error(at, f"{{days_ago: ...}} makes a date-time; field {field.name!r} is {field.type}, "
                                        f"not {moment_types()}"))
    else:
        _check_constant(doc, at, field, value, errors)


def _kind(field) -> str:
    """What a field holds, for a value it cannot take: `a reference to 'u_site'`, or its type."""
    return f"a reference to {field.reference!r}" if field.type == "reference" else field.type


def _check_constant(doc: SourceDocument, at: tuple, field, value: Any, errors: list) -> None:
    """A literal value (not a "{i}" template, which varies by row) parses as its field's type."""
    if isinstance(value, dict) or (isinstance(value, str) and "{i}" in value) or field.ftype.journal:
        return
    try:
        parsed = field.parse(value)
    except FieldValueError as exc:
        errors.append(doc.error(at, f"{value!r} is not a value of {field.type} field {field.name!r}: {exc}"))
        return
    if parsed is not None and field.choices and field.choice_label(parsed) is None:
        errors.append(doc.error(at, f"{value!r} is not one of the choices of {field.name!r} "
                                    f"({', '.join(str(v) for v, _ in field.choices)})"))


AFTER_KEYS = ("after", "within_hours")


def check_after_values(doc: SourceDocument, where: tuple, table, values: Mapping, errors: list) -> None:
    """Every `{after: FIELD, within_hours: H}` among a generator's values (a cycle's items too), each
    problem at its key: a date or date-time made from a date or date-time FIELD that the row has a
    value of before this one is made (given above it)."""
    above: set[str] = set()
    for name, value in values.items():
        for keys, item in _items(value):
            if isinstance(item, dict) and "after" in item:
                for key, why in _after_problems(table, name, item, above, values):
                    errors.append(doc.error(where + ("values", name) + keys + key, why))
        above.add(name)


def _items(value: Any) -> list[tuple[tuple, Any]]:
    """A value's forms with their keys: a cycle's items, or the value itself."""
    if isinstance(value, dict) and isinstance(value.get("cycle"), list):
        return [(("cycle", j), item) for j, item in enumerate(value["cycle"])]
    return [((), value)]


def _after_problems(table, name: str, spec: dict, above: set[str], values: Mapping) -> list[tuple[tuple, str]]:
    """What is wrong with field `name`'s `{after: FIELD, within_hours: H}`: each problem's keys, and why."""
    problems = [((key,), f"unknown key {key!r}: an `after` value takes {' and '.join(AFTER_KEYS)}")
                for key in spec if key not in AFTER_KEYS]
    target = table.field(name)
    if target is not None and target.ftype.now is None:
        problems.append(((), f"{{after: ...}} makes a date-time; field {name!r} is {target.type}, not "
                             f"{moment_types()}"))
    start = spec["after"]
    field = table.field(start) if isinstance(start, str) else None
    if field is None:
        problems.append((("after",), f"after {start!r}: table {table.name!r} has no field {start!r}"))
    elif field.ftype.now is None:
        problems.append((("after",), f"after {start!r}: field {start!r} is {field.type}, not {moment_types()}"))
    elif start == name:
        problems.append((("after",), f"after {start!r}: a field cannot come after itself; name the date or "
                                     f"date-time field it follows"))
    elif start not in above:
        given = f"is given below {name!r}" if start in values else "has no value in this generator"
        problems.append((("after",), f"after {start!r}: {start!r} {given}, so no row has it yet when {name!r} is "
                                     f"made: give {start!r} a value above {name!r}"))
    hours = spec.get("within_hours")
    if "within_hours" not in spec:
        problems.append(((), f"after {start!r} needs within_hours: H, the most hours after it (a whole number, "
                             f"1 or more)"))
    elif isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
        problems.append((("within_hours",), f"within_hours: {hours!r} is not a whole number of hours, 1 or more"))
    return problems


def _is_a(tables: dict, name: str, wanted: str | None) -> bool:
    """Whether records of table `name` are records of `wanted` (the same table, or one it extends)."""
    seen = set()
    while name in tables and name != wanted and name not in seen:  # `seen`: a cycle is reported elsewhere
        seen.add(name)
        name = tables[name].extends
    return name == wanted
