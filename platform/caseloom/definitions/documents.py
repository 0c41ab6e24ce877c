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
from .yamlsource import DefinitionError, SourceDocument, parse_yaml

# The top-level key of a file names its kind; each kind has one JSON Schema. A declared list names
# its member list with a `member_list:` key, so the declared-list kinds come before `member_list`.
KINDS = ("table", "properties", "roles", "access", "demo", "lifecycle", "actions", "rules", "notifications", "menu",
         "declared_list", "recipients_list", "member_list", "bench", "workspace", "schedules", "slas", "timers",
         "inbound_email", "portal", "reports", "dashboard", "alert_rules")
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
    """Names whose definitions could not be read, so that a mistake is reported once: where it is,
    not again at every place that names what it broke ("unknown table 'x'" in every file after
    x's file failed its schema)."""

    # the kinds of name a cross-check reports as unknown, by the key that declares them
    KINDS = {"table": "table", "roles": "role", "properties": "system property", "notifications": "notification",
             "reports": "report"}
    UNKNOWN = re.compile(r"unknown (table|role|system property|notification|report) '([^']*)'")

    def __init__(self):
        self.names: dict[str, set[str]] = {kind: set() for kind in self.KINDS.values()}

    def unreadable(self, text: str) -> None:
        """A file that is not YAML: the names it seems to declare, read line by line (`table: x`, or
        the keys one level under `roles:`, `properties:` or `notifications:`)."""
        kind = None
        for line in text.splitlines():
            top = re.match(r"^([a-z_]+):\s*(\S*)", line)
            if top:
                kind = self.KINDS.get(top.group(1))
                if top.group(1) == "table" and re.fullmatch(r"[a-z_][a-z0-9_]*", top.group(2)):
                    self.names["table"].add(top.group(2))
                continue
            entry = re.match(r"^ {1,4}([A-Za-z0-9_.\-]+)\s*:", line)
            if entry and kind is not None and kind != "table":
                self.names[kind].add(entry.group(1))

    def document(self, data: dict) -> None:
        """A document dropped whole: every name it declares."""
        for key, kind in self.KINDS.items():
            value = data.get(key)
            if key == "table" and isinstance(value, str):
                self.names[kind].add(value)
            elif key != "table" and isinstance(value, dict):
                self.names[kind].update(map(str, value))

    def entry(self, path: tuple) -> None:
        """One entry pruned from a document (`properties.NAME`, `notifications.NAME`, ...)."""
        kind = self.KINDS.get(path[0])
        if kind is not None and path[0] != "table":
            self.names[kind].add(str(path[1]))

    def without_follow_ons(self, errors: list[DefinitionError]) -> list[DefinitionError]:
        def follows(error: DefinitionError) -> bool:
            match = self.UNKNOWN.search(error.message)
            return match is not None and match.group(2) in self.names[match.group(1)]

        kept = [e for e in errors if not follows(e)]
        return kept or errors


# Collections of named entries: a schema mistake inside one entry drops that entry, not the file.
_NAMED_ENTRIES = ("fields", "properties", "notifications", "roles", "states", "reports")


def read_document(path: str, text: str, errors: list[DefinitionError], broken: Broken) -> SourceDocument | None:
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
        broken.entry((collection, name))
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
