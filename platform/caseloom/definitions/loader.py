"""Load a definitions folder: parse, check against the JSON Schemas, cross-check, freeze.

Every problem is collected (not just the first) as a DefinitionError with its
`PATH:LINE:COL`, so `caseloom validate` can list them all in one run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ..fieldtypes import FIELD_TYPES, FieldValueError
from .behaviour import (
    build_actions,
    build_lifecycles,
    build_menu,
    build_notifications,
    build_rules,
    check_unique_actions,
)
from .bench import build_bench
from .lists import build_declared_lists, build_member_lists
from .model import (
    AccessRule,
    DefinitionFile,
    Definitions,
    DemoGenerator,
    DemoSet,
    DemoUser,
    PropertyDef,
    RoleDef,
    frozen_map,
)
from .tables import build_tables
from .yamlsource import DefinitionError, SourceDocument, parse_yaml

# The top-level key of a file names its kind; each kind has one JSON Schema. A declared list names
# its member list with a `member_list:` key, so the declared-list kinds come before `member_list`.
KINDS = ("table", "properties", "roles", "access", "demo", "lifecycle", "actions", "rules", "notifications", "menu",
         "declared_list", "recipients_list", "member_list", "bench")
SYSTEM_DIR = Path(__file__).resolve().parent.parent / "system"
SYSTEM_PREFIX = "<caseloom>/"


class DefinitionErrors(Exception):
    """All the problems found in a definitions folder."""

    def __init__(self, errors: list[DefinitionError]):
        self.errors = sorted(errors, key=lambda e: (e.location.path, e.location.line, e.location.column))
        super().__init__("\n".join(str(e) for e in self.errors))


@cache
def schema_for(kind: str) -> dict:
    text = resources.files("caseloom.definitions").joinpath(f"schemas/{kind}.schema.json").read_text()
    if kind in ("lifecycle", "actions"):  # both embed the action shape
        shared = json.loads(resources.files("caseloom.definitions").joinpath("schemas/action.schema.json").read_text())
        text = text.replace("action.schema.json#/$defs/", "#/$defs/")
        schema = json.loads(text)
        schema["$defs"] = shared["$defs"]
    else:
        schema = json.loads(text)
    if kind == "table":  # the field-type enum comes from the registry: one entry adds a type
        schema["$defs"]["field"]["properties"]["type"]["enum"] = sorted(FIELD_TYPES)
    return schema


def read_sources(folder: Path, prefix: str = "") -> list[tuple[str, str]]:
    """(display path, text) of every YAML file under `folder`, in a stable order."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml", ".csv") and p.is_file())
    return [(prefix + str(p.relative_to(folder)), p.read_text(encoding="utf-8")) for p in files]


def load_folder(folder: str | Path) -> Definitions:
    """Load the system tables shipped with the platform plus an application folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DefinitionErrors([DefinitionError(_nowhere(str(folder)), "definitions folder not found")])
    return load_sources(read_sources(folder), display_root=str(folder))


def load_sources(sources: Iterable[tuple[str, str]], display_root: str = "definitions") -> Definitions:
    """Load (relative path, YAML text) pairs; raises DefinitionErrors listing every problem."""
    errors: list[DefinitionError] = []
    sources = list(sources)
    texts = {f"{display_root}/{path}": text for path, text in sources}
    documents: dict[str, list[SourceDocument]] = {kind: [] for kind in KINDS}
    files: list[DefinitionFile] = []
    system = read_sources(SYSTEM_DIR, SYSTEM_PREFIX)
    broken = _Broken()
    for rel_path, text in [*system, *sources]:
        if rel_path.endswith(".csv"):
            continue  # data a definition points at (a list's import), read through `texts`
        shown = rel_path if rel_path.startswith(SYSTEM_PREFIX) else f"{display_root}/{rel_path}"
        doc = _parse_one(shown, text, errors, broken)
        if doc is None:
            continue
        kind = next(iter(k for k in KINDS if k in doc.data and k != "table"), "table")
        documents[kind].append(doc)
        if not rel_path.startswith(SYSTEM_PREFIX):
            files.append(DefinitionFile(rel_path, kind, hashlib.sha256(text.encode()).hexdigest()[:16]))
    roles = _build_roles(documents["roles"], errors)
    tables = build_tables(documents["table"], errors)
    properties = _build_properties(documents["properties"], errors)
    access = _build_access(documents["access"], tables, roles, errors)
    demo = _build_demo(documents["demo"], tables, roles, errors)
    lifecycles, actions = build_lifecycles(documents["lifecycle"], tables, roles, errors, properties)
    actions += build_actions(documents["actions"], tables, roles, errors, properties)
    check_unique_actions(actions, errors, documents["actions"])
    rules = build_rules(documents["rules"], tables, roles, errors, properties)
    notifications = build_notifications(documents["notifications"], tables, roles, errors, properties)
    _check_notify_effects(actions, rules, notifications, errors)
    menu = build_menu(documents["menu"], tables, roles, errors)
    member_lists = build_member_lists(documents["member_list"], tables, roles, errors)
    declared_lists = build_declared_lists([*documents["recipients_list"], *documents["declared_list"]], member_lists,
                                          errors, lambda yaml_path, name: texts.get(_sibling(yaml_path, name)),
                                          tables=tables)
    bench = build_bench(documents["bench"], tables, actions, properties, errors)
    if errors:
        raise DefinitionErrors(broken.without_follow_ons(errors))
    return Definitions(
        tables=frozen_map(tables),
        properties=frozen_map(properties),
        roles=frozen_map(roles),
        access=tuple(access),
        demo=demo,
        files=tuple(files),
        lifecycles=frozen_map(lifecycles),
        actions=tuple(actions),
        rules=tuple(rules),
        notifications=frozen_map(notifications),
        menu=tuple(menu),
        member_lists=frozen_map(member_lists),
        declared_lists=tuple(declared_lists),
        bench=bench,
    )


def _sibling(yaml_path: str, name: str) -> str:
    from posixpath import dirname, join, normpath

    return normpath(join(dirname(yaml_path), name))


def _check_notify_effects(actions, rules, notifications, errors) -> None:
    from ..effects.builtin import BranchArgs, NotifyArgs

    def check(effects) -> None:
        for effect in effects:
            if isinstance(effect.args, NotifyArgs) and effect.args.name not in notifications:
                known = ", ".join(sorted(notifications)) or "none are declared"
                errors.append(DefinitionError(effect.args.location or effect.location,
                                              f"notify: unknown notification {effect.args.name!r} (known: {known})"))
            elif isinstance(effect.args, BranchArgs):
                check(effect.args.then)
                check(effect.args.otherwise)

    for owner in (*actions, *rules):
        check(owner.effects)


def _nowhere(path: str):
    from .yamlsource import Location

    return Location(path, 1, 1)


class _Broken:
    """Names whose definitions could not be read, so that a mistake is reported once: where it is,
    not again at every place that names what it broke ("unknown table 'x'" in every file after
    x's file failed its schema)."""

    # the kinds of name a cross-check reports as unknown, by the key that declares them
    KINDS = {"table": "table", "roles": "role", "properties": "system property", "notifications": "notification"}
    UNKNOWN = re.compile(r"unknown (table|role|system property|notification) '([^']*)'")

    def __init__(self):
        self.names: dict[str, set[str]] = {kind: set() for kind in self.KINDS.values()}
        self.unreadable = False  # a file that is not YAML: what it declares is not known at all

    def document(self, data: dict) -> None:
        """A document dropped whole: every name it declares."""
        for key, kind in self.KINDS.items():
            value = data.get(key)
            if key == "table" and isinstance(value, str):
                self.names[kind].add(value)
            elif key != "table" and isinstance(value, dict):
                self.names[kind].update(map(str, value))

    def entry(self, data: dict, path: tuple) -> None:
        """One entry pruned from a document (`properties.NAME`, `notifications.NAME`, ...)."""
        kind = self.KINDS.get(path[0])
        if kind is not None and path[0] != "table":
            self.names[kind].add(str(path[1]))

    def without_follow_ons(self, errors: list[DefinitionError]) -> list[DefinitionError]:
        def follows(error: DefinitionError) -> bool:
            match = self.UNKNOWN.search(error.message)
            return match is not None and (self.unreadable or match.group(2) in self.names[match.group(1)])

        kept = [e for e in errors if not follows(e)]
        return kept or errors


# Collections of named entries: a schema mistake inside one entry drops that entry, not the file.
_NAMED_ENTRIES = ("fields", "properties", "notifications", "roles", "states")


def _parse_one(path: str, text: str, errors: list[DefinitionError], broken: _Broken) -> SourceDocument | None:
    try:
        doc = parse_yaml(text, path)
    except DefinitionError as exc:
        errors.append(exc)
        broken.unreadable = True
        return None
    errors.extend(doc.problems)
    if not isinstance(doc.data, dict):
        errors.append(doc.error((), "a definition file must be a mapping with one of the keys: " + ", ".join(KINDS)))
        return None
    kinds = [k for k in KINDS if k in doc.data]
    if len(kinds) > 1 and "table" in kinds:  # other kinds name their table with a `table:` key
        kinds.remove("table")
    if "member_list" in kinds and kinds[0] in ("declared_list", "recipients_list"):  # names its member list
        kinds.remove("member_list")
    if len(kinds) != 1:
        found = ", ".join(kinds) if kinds else ", ".join(map(str, doc.data)) or "nothing"
        errors.append(doc.error((), f"cannot tell what this file defines (found {found}); "
                                    f"it needs exactly one of the top-level keys: {', '.join(KINDS)}"))
        return None
    validator = jsonschema.Draft202012Validator(schema_for(kinds[0]))
    problems = sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path)))
    for problem in reported(problems):
        errors.append(DefinitionError(_schema_location(doc, problem), _schema_message(problem)))
    return _pruned(doc, problems, broken)


def reported(problems: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """The problems to report: a misspelled required key (`feild:` for `field:`) is one mistake, so
    "'field' is a required property" is left out where the same mapping has an unknown key."""
    unknown_at = {tuple(p.absolute_path) for p in problems if p.validator == "additionalProperties"}
    return [p for p in problems if not (p.validator == "required" and tuple(p.absolute_path) in unknown_at)]


def _pruned(doc: SourceDocument, problems: list, broken: _Broken) -> SourceDocument | None:
    """The document without what its schema problems touch, so the rest still loads: unknown keys
    are left out, an entry of a named collection with a mistake in it is dropped (a field, a
    property, a notification); any other mistake drops the whole document."""
    if not problems:
        return doc
    entries, keys_out = set(), set()
    for problem in problems:
        keys = tuple(problem.absolute_path)
        if problem.validator == "additionalProperties" and isinstance(problem.instance, dict):
            continue
        if len(keys) >= 3 and keys[0] == "fields" and isinstance(doc.data["fields"].get(keys[1]), dict):
            keys_out.add(keys[:3])  # a field keeps its other keys (a bad type: read as a string meanwhile)
            continue
        if len(keys) >= 2 and keys[0] in _NAMED_ENTRIES and isinstance(doc.data.get(keys[0]), dict):
            entries.add(keys[:2])
            continue
        broken.document(doc.data)
        return None
    for problem in problems:  # unknown keys: the mapping keeps the ones the schema knows
        if problem.validator == "additionalProperties" and isinstance(problem.instance, dict):
            known = problem.schema.get("properties", {})
            for key in [k for k in problem.instance if k not in known]:
                problem.instance.pop(key, None)
    for _, name, key in keys_out:
        spec = doc.data["fields"][name]
        if key == "type":
            spec["type"] = "string"
        else:
            spec.pop(key, None)
    for collection, name in entries:
        doc.data[collection].pop(name, None)
        broken.entry(doc.data, (collection, name))
    return doc


def _schema_location(doc: SourceDocument, problem: jsonschema.ValidationError):
    """Where a schema problem is: an unknown key is pointed at, not the mapping holding it."""
    keys = tuple(problem.absolute_path)
    if problem.validator == "additionalProperties" and isinstance(problem.instance, dict):
        known = problem.schema.get("properties", {})
        unknown = [key for key in problem.instance if key not in known]
        if unknown:
            return doc.where_key(*keys, unknown[0])
    return doc.where(*keys)


def _schema_message(problem: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in problem.absolute_path)
    prefix = f"{where}: " if where else ""
    if problem.validator == "additionalProperties":
        return prefix + problem.message.replace("Additional properties are not allowed", "unknown key")
    if problem.validator == "enum":
        return f"{prefix}{problem.instance!r} is not one of {', '.join(map(str, problem.validator_value))}"
    if problem.validator == "oneOf" and isinstance(problem.instance, (dict, str)):
        return f"{prefix}{problem.instance!r} does not match any of the allowed shapes"
    return prefix + problem.message


def _build_roles(docs: list[SourceDocument], errors: list) -> dict[str, RoleDef]:
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


def _build_properties(docs: list[SourceDocument], errors: list) -> dict[str, PropertyDef]:
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


def _build_access(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> list[AccessRule]:
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


def _build_demo(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> DemoSet:
    users: list[DemoUser] = []
    generators: list[DemoGenerator] = []
    user_table = tables.get("sys_user")

    def check_constant(doc: SourceDocument, at: tuple, field, value: Any) -> None:
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

    def is_a(name: str, wanted: str | None) -> bool:
        """Whether records of table `name` are records of `wanted` (the same table, or one it extends)."""
        seen = set()
        while name in tables and name != wanted and name not in seen:  # `seen`: a cycle is reported elsewhere
            seen.add(name)
            name = tables[name].extends
        return name == wanted

    for doc in docs:
        spec = doc.data["demo"]
        for i, user in enumerate(spec.get("users", ())):
            for j, role in enumerate(user["roles"]):
                if role not in roles:
                    errors.append(doc.error(("demo", "users", i, "roles", j), f"unknown role {role!r}"))
            for field_name in user.get("values") or {}:
                if user_table is not None and user_table.field(field_name) is None:
                    errors.append(doc.error(("demo", "users", i, "values", field_name),
                                            f"table 'sys_user' has no field {field_name!r}"))
            users.append(DemoUser(user["user_name"], user["password"], tuple(user["roles"]),
                                  frozen_map(user.get("values"))))
    user_names = {u.user_name for u in users}
    made = {g["name"]: g["table"] for doc in docs for g in doc.data["demo"].get("generate", ())}
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
                at = where + ("values", field_name)
                field = table.field(field_name)
                if field is None:
                    errors.append(doc.error(at, f"table {table.name!r} has no field {field_name!r}"))
                elif isinstance(value, dict) and "ref" in value:
                    ref_table = made.get(value["ref"])
                    if ref_table is None:
                        errors.append(doc.error(at + ("ref",), f"unknown generator {value['ref']!r}"))
                    elif field.type != "reference" or not is_a(ref_table, field.reference):
                        to = f"a reference to {field.reference!r}" if field.type == "reference" else field.type
                        errors.append(doc.error(at, f"generator {value['ref']!r} makes {ref_table!r} records; "
                                                    f"field {field_name!r} is {to}"))
                elif isinstance(value, dict) and "user" in value and value["user"] not in user_names:
                    errors.append(doc.error(at + ("user",), f"unknown demo user {value['user']!r}"))
                elif isinstance(value, dict) and "cycle" in value:
                    for j, item in enumerate(value["cycle"]):
                        check_constant(doc, at + ("cycle", j), field, item)
                else:
                    check_constant(doc, at, field, value)
            generators.append(DemoGenerator(gen["name"], gen["table"], frozen_map(gen["values"]),
                                            gen.get("count"), gen.get("per_scale", gen.get("per_account"))))
    return DemoSet(tuple(users), tuple(generators))
