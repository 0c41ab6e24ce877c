"""Reading one definition file: YAML with positions, its kind, its JSON Schema.

A schema mistake is reported where it is written, and takes as little as it can with it: an
unknown key is left out, a named entry with a mistake in it (a field, a property, a
notification) is dropped, and only a mistake that leaves the file unreadable drops the file.
What a dropped part declared is remembered (`Broken`), so that the files that name it do not
report it again as unknown.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources

import jsonschema

from ..fieldtypes import FIELD_TYPES
from .yamlsource import DefinitionError, Location, SourceDocument, parse_yaml

# The top-level key of a file names its kind; each kind has one JSON Schema. A declared list names
# its member list with a `member_list:` key, so the declared-list kinds come before `member_list`.
KINDS = ("table", "properties", "roles", "access", "demo", "lifecycle", "actions", "rules", "notifications", "menu",
         "declared_list", "recipients_list", "member_list", "bench", "workspace", "schedules", "slas", "sla_flows",
         "timers", "inbound_email", "portal", "reports", "dashboard", "alert_rules")
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


class Broken:
    """What reported mistakes broke, so that a mistake is reported once: where it is, not again at
    every place that names what it broke. Names whose definitions could not be read ("unknown table
    'x'" in every file after x's file failed its schema, or x was declared twice, or extends a
    table that is not there); fields and member types dropped for a mistake in them; references to
    an unknown table (a path walking through one, a generator making records for one)."""

    # the kinds of name a cross-check reports as unknown, by the key that declares them
    KINDS = {"table": "table", "roles": "role", "properties": "system property", "notifications": "notification",
             "reports": "report", "schedules": "schedule"}
    UNKNOWN = re.compile(r"unknown (table|role|system property|notification|report|schedule) '([^']*)'")

    # a dot-walked path ('location.name') and the tables a message names ('fac_work_order')
    PATH = re.compile(r"'([a-z_][a-z0-9_]*(?:\.[A-Za-z0-9_]+)+)'")
    NAME = re.compile(r"'([a-z_][a-z0-9_]*)'")
    NOT_A_TYPE = re.compile(r"'([^']*)' is not a type of member list '([^']*)'")
    HAS_NO = re.compile(r"table '([^']*)' has no ")  # "table 'x' has no action 'y'": x could not be read

    def __init__(self):
        self.names: dict[str, set[str]] = {kind: set() for kind in self.KINDS.values()}
        self.targets: set[str] = set()  # unknown tables references point at (each reported at its `to:`)
        self.fields: dict[str, set[str]] = {}  # table -> its fields dropped for a mistake in them
        self.member_types: set[tuple[str, str]] = set()  # (member list, type) dropped for a mistake
        self.sla = False  # a table declaring `sla: true` could not be read: the SLA tables are not made
        self.unknowable: set[str] = set()  # kinds a dropped file declared without a name to read (`roles: 5`)
        self.built: dict = {}

    def tables(self, declared: set[str], built: dict) -> None:
        """After the tables are built: a declared table that could not be (its file's mistake, or a
        parent's, already reported) is not reported again where it is named; nor is a reference to an
        unknown table (reported at its `to:`) where a path walks through it or names its target."""
        self.built = built
        self.names["table"].update(declared - set(built))
        for table in built.values():  # a child table lacks its parent's dropped fields too
            parent = table
            while parent is not None:
                self.fields.setdefault(table.name, set()).update(self.fields.get(parent.name, ()))
                parent = built.get(parent.extends) if parent.extends else None
        for table in built.values():
            for field in table.fields.values():
                if field.type == "reference" and field.reference and field.reference not in built:
                    self.targets.add(field.reference)

    def unreadable(self, text: str) -> None:
        """A file that is not YAML: the names it seems to declare, read line by line (`table: x`, or
        the keys one level under `roles:`, `properties:` or `notifications:`)."""
        kind = None
        for line in text.splitlines():
            top = re.match(r"^([a-z_]+):\s*(\S*)", line)
            if top and top.group(1) == "sla" and top.group(2) == "true":
                self.sla = True
            if top:
                kind = self.KINDS.get(top.group(1))
                if top.group(1) == "table" and re.fullmatch(r"[a-z_][a-z0-9_]*", top.group(2)):
                    self.names["table"].add(top.group(2))
                continue
            entry = re.match(r"^[ \t]{1,4}([A-Za-z0-9_.\-]+)\s*:", line)  # a tab is the mistake, often
            if entry and kind is not None and kind != "table":
                self.names[kind].add(entry.group(1))

    def document(self, data: dict) -> None:
        """A document dropped whole: every name it declares."""
        if data.get("sla") is True:
            self.sla = True
        for key, kind in self.KINDS.items():
            value = data.get(key)
            if key == "table" and isinstance(value, str):
                self.names[kind].add(value)
            elif key != "table" and isinstance(value, dict):
                self.names[kind].update(map(str, value))
            elif key != "table" and key in data:  # its names cannot be told: none of that kind is reported unknown
                self.unknowable.add(kind)

    def entry(self, path: tuple, table: str | None = None) -> None:
        """One entry pruned from a document (`properties.NAME`, `notifications.NAME`, a table's
        `fields.NAME`, ...)."""
        if path[0] == "fields" and table is not None:
            self.fields.setdefault(table, set()).add(str(path[1]))
        kind = self.KINDS.get(path[0])
        if kind is not None and path[0] != "table":
            self.names[kind].add(str(path[1]))

    def _walks_broken(self, table: str, path: str) -> bool:
        """Whether the dot-walked `path` from `table` passes through what a reported mistake broke: a
        field dropped for it, or a reference to a table that is unknown or could not be built."""
        current = self.built.get(table)
        for part in path.split("."):
            if current is None:
                return False
            if part in self.fields.get(current.name, ()):
                return True
            field = current.fields.get(part)
            if field is None or field.type != "reference":
                return False
            if field.reference not in self.built:
                return True
            current = self.built[field.reference]
        return False

    def without_follow_ons(self, errors: list[DefinitionError]) -> list[DefinitionError]:
        def follows(error: DefinitionError) -> bool:
            message = error.message
            if " is already defined at " in message:  # a declaration itself, never a follow-on
                return False
            match = self.UNKNOWN.search(message)
            if match is not None:
                return match.group(2) in self.names[match.group(1)] or match.group(1) in self.unknowable
            named = set(self.NAME.findall(message))
            if named & self.targets:
                return True
            has_no = self.HAS_NO.search(message)
            if has_no is not None and has_no.group(1) in self.names["table"]:
                return True
            not_a_type = self.NOT_A_TYPE.search(message)
            if not_a_type is not None and (not_a_type.group(2), not_a_type.group(1)) in self.member_types:
                return True
            return any(self._walks_broken(table, path) for path in self.PATH.findall(message) for table in named) \
                or any(name in self.fields.get(table, ()) for name in named for table in named)

        kept = [e for e in errors if not follows(e)]
        return kept or errors


NAME_PATTERN = "^[a-z][a-z0-9_]*$"  # the schemas' pattern of a table's or a field's name
PREFIX_PATTERN = "^[A-Za-z][A-Za-z0-9]{0,9}$"  # a table's number prefix (table.schema.json)
NAME_LENGTH = 48  # the longest table or field name (table.schema.json)

# Collections of named entries: a schema mistake inside one entry drops that entry, not the file.
_NAMED_ENTRIES = ("fields", "properties", "notifications", "roles", "states", "reports")


MAX_FILE_CHARS = 1_048_576  # a definition file's size at most (the largest CSM file is 7 KB)


def read_document(path: str, text: str, errors: list[DefinitionError], broken: Broken) -> SourceDocument | None:
    if len(text) > MAX_FILE_CHARS:
        errors.append(DefinitionError(Location(path, 1, 1), f"the file is larger than {MAX_FILE_CHARS:,} characters "
                                                            f"({len(text):,}); split it into several files"))
        broken.unreadable(text[:MAX_FILE_CHARS])
        return None
    try:
        doc = parse_yaml(text, path)
    except DefinitionError as exc:
        errors.append(exc)
        broken.unreadable(text)
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


def _pruned(doc: SourceDocument, problems: list, broken: Broken) -> SourceDocument | None:
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
        broken.entry((collection, name), doc.data.get("table") if isinstance(doc.data.get("table"), str) else None)
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
    if problem.validator == "maxLength" and problem.validator_value == NAME_LENGTH:
        return f"{prefix}{problem.instance!r} is longer than {NAME_LENGTH} characters: a table's or a field's name " \
               f"is a database name (PostgreSQL's hold 63 characters, and some get a suffix)"
    if problem.validator == "pattern" and problem.validator_value == PREFIX_PATTERN:
        return f"{prefix}{problem.instance!r} is not a number prefix: a letter, then at most 9 letters or digits"
    if problem.validator == "pattern" and problem.validator_value == NAME_PATTERN:
        return f"{prefix}{problem.instance!r} is not a name: a lower-case letter, then lower-case letters, digits or _"
    if problem.validator == "not" and problem.validator_value == {"pattern": "^sys_"}:
        return f"{prefix}{problem.instance!r}: a name beginning with sys_ is the platform's own (sys_id, " \
               f"sys_created_on, ...); choose another"
    if problem.validator == "oneOf" and isinstance(problem.instance, dict):
        told = _shape_message(problem)
        if told:
            return prefix + told
    if problem.validator == "oneOf" and isinstance(problem.instance, (dict, str)):
        return f"{prefix}{problem.instance!r} does not match any of the allowed shapes"
    return prefix + problem.message


def _shape_message(problem: jsonschema.ValidationError) -> str | None:
    """A mapping that is none of the shapes allowed, where each shape is a mapping known by a key it
    requires (a demo value: `cycle`, `ref`, `user`, ...): the shape its keys name, and what is wrong with it;
    or, when they name none, the keys that would."""
    shapes = {i: alt["required"][0] for i, alt in enumerate(problem.validator_value)
              if isinstance(alt, dict) and alt.get("type") == "object" and alt.get("required")}
    if not shapes:
        return None
    named = [i for i, key in shapes.items() if key in problem.instance]
    if not named:
        got = ", ".join(map(str, problem.instance)) or "none"
        return f"a mapping here is one of {', '.join('{' + key + ': ...}' for key in shapes.values())} (keys given: {got})"
    inner = [e for e in problem.context or () if e.schema_path and e.schema_path[0] == named[0]]
    if not inner:
        return None
    first = inner[0]
    if first.validator == "additionalProperties":
        known = first.schema.get("properties", {})
        extra = ", ".join(repr(k) for k in problem.instance if k not in known)
        return f"unknown key {extra} in {{{shapes[named[0]]}: ...}}, which takes {', '.join(known)}"
    return f"{shapes[named[0]]}: {first.message}"
