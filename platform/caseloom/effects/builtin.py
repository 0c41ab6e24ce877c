"""The built-in effects: their argument schemas, their frozen parsed arguments and their parsers.

Registered through `registry.register` like any other effect; they run in `run.py` and
`lists.py`. Every argument is checked when the definitions load, each mistake at its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..definitions.model import EffectDef
from ..definitions.yamlsource import Location
from .build import Builder
from .registry import EffectKind, register

RUN = "caseloom.effects.run:"
LISTS = "caseloom.effects.lists:"

Values = tuple[tuple[str, Any], ...]  # (field, constant or Template)


def _object(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_NAME = {"type": "string", "minLength": 1}
_MAPPING = {"type": "object"}
_CONDITION = {"type": ["object", "string"]}
_NAMES = {"type": "array", "items": _NAME}
_EFFECTS = {"type": "array", "items": {"type": "object", "minProperties": 1, "maxProperties": 1}}


# -- set, journal ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetArgs:
    values: Values


register(EffectKind(
    "set", "Set fields of the record (values may be templates; a choice value must be one of the field's).",
    {"type": "object", "minProperties": 1}, lambda b, args, at: SetArgs(b.values(args, at)), RUN + "set_fields",
    "set: {state: 6, resolved_by: \"{{ user.sys_id }}\", resolved_at: \"{{ now }}\"}"))


@dataclass(frozen=True)
class JournalArgs:
    field: str
    text: Any


def _parse_journal(b: Builder, args: dict, at: tuple) -> JournalArgs | None:
    entries = b.journal({args["field"]: args["text"]}, at)
    if not entries:
        return None
    return JournalArgs(args["field"], entries[0][1])


register(EffectKind(
    "journal", "Add an entry to a journal field (comments, work notes).",
    _object({"field": _NAME, "text": {"type": "string"}}, ("field", "text")), _parse_journal, RUN + "journal",
    "journal: {field: work_notes, text: \"Escalated by {{ user.name }}\"}"))


# -- create, reparent ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CreateArgs:
    table: str
    values: Values
    name: str  # how later effects' templates call it: created.<name>
    link: str | None


def _parse_create(b: Builder, args: dict, at: tuple) -> CreateArgs | None:
    target = b.target(args["table"], at + ("table",))
    if target is None:
        return None
    values = b.values(args["values"], at + ("values",), target)
    if "link" in args:
        b.reference(args["link"], at + ("link",), to=target.name)
    return CreateArgs(target.name, values, args.get("as", target.name), args.get("link"))


register(EffectKind(
    "create", "Create a related record; `as` names it for later effects (`created.<as>`), `link` points a "
              "reference field of this record at it.",
    _object({"table": _NAME, "values": _MAPPING, "as": _NAME, "link": _NAME}, ("table", "values")),
    _parse_create, RUN + "create",
    "create: {table: problem, values: {short_description: \"{{ record.short_description }}\"}, as: problem, "
    "link: problem}"))


@dataclass(frozen=True)
class Refusal:
    condition: Any  # a Node (values may be templates), or None: the record itself
    reason: str


@dataclass(frozen=True)
class ReparentArgs:
    input: str
    field: str
    refuse: tuple[Refusal, ...]
    noun: str


def _parse_reparent(b: Builder, args: dict, at: tuple) -> ReparentArgs:
    given = (b.inputs or {}).get(args["input"])
    if given is None or given.type != "records":
        records = [name for name, spec in (b.inputs or {}).items() if spec.type == "records"]
        where = "this action's records inputs: " + ", ".join(records) if records else \
            "it needs an action with an input of type records"
        b.error(at + ("input",), f"{args['input']!r} is not a records input ({where})")
    b.reference(args["field"], at + ("field",), to=b.table.name)
    refusals = []
    for i, rule in enumerate(args.get("refuse", ())):
        where = at + ("refuse", i)
        condition = None
        if rule["condition"] != "self":
            condition = b.condition(rule["condition"], where + ("condition",), templates=True)
        refusals.append(Refusal(condition, rule["reason"]))
    return ReparentArgs(args["input"], args["field"], tuple(refusals), args.get("noun", "records"))


register(EffectKind(
    "reparent", "Make the records of a `records` input children of this record (setting their reference "
                "`field`), refusing those that match a refusal condition (`self`: the record itself), and say "
                "how many were added.",
    _object({"input": _NAME, "field": _NAME, "noun": _NAME,
             "refuse": {"type": "array", "items": _object({"condition": _CONDITION, "reason": {"type": "string"}},
                                                          ("condition", "reason"))}}, ("input", "field")),
    _parse_reparent, RUN + "reparent",
    "reparent: {input: orders, field: parent, noun: orders, refuse: [{condition: self, reason: it is this order}]}"))


# -- children: copy, cascade (in this table or another) ---------------------------------------------

@dataclass(frozen=True)
class ChildrenArgs:
    table: str  # the children's table
    reference: str  # the children's field that points at this record
    only: Any = None
    skip: Any = None
    fields: tuple[str, ...] = ()
    fields_property: str | None = None
    with_: tuple[tuple[str, tuple[str, ...]], ...] = ()
    changed_only: bool = False
    set: Values = ()
    journal: Values = ()


_CHILDREN = {"table": _NAME, "reference": _NAME, "only": _CONDITION, "skip": _CONDITION}


def _children_table(b: Builder, args: dict, at: tuple):
    """The children's table (this one unless `table` names another) and its builder."""
    table = b.table if "table" not in args else b.target(args["table"], at + ("table",))
    if table is None:
        return None, None
    kids = b.on(table)
    if kids.reference(args["reference"], at + ("reference",), table, to=b.table.name) is None:
        return None, None
    return table, kids


def _parse_copy(b: Builder, args: dict, at: tuple) -> ChildrenArgs | None:
    table, kids = _children_table(b, args, at)
    if table is None:
        return None
    for i, name in enumerate(args.get("fields", ())):
        _same_field(b, kids, name, at + ("fields", i))
    if "fields_property" in args:
        b.field_list_property(args["fields_property"], at + ("fields_property",))
    for name, extra in (args.get("with") or {}).items():
        for j, other in enumerate([name, *extra]):
            _same_field(b, kids, other, at + ("with", name) + ((j - 1,) if j else ()))
    return ChildrenArgs(table.name, args["reference"], kids.condition(args.get("only"), at + ("only",), templates=True),
                        kids.condition(args.get("skip"), at + ("skip",), templates=True), tuple(args.get("fields", ())),
                        args.get("fields_property"),
                        tuple((k, tuple(v)) for k, v in (args.get("with") or {}).items()),
                        bool(args.get("changed_only")))


def _same_field(b: Builder, kids: Builder, name: str, at: tuple) -> None:
    """A field copied to children: one of this record's, and the children's table has it too."""
    mine = b.field(name, at, own=True)
    if mine is None or kids.table is b.table:
        return
    theirs = kids.field(name, at, own=True)
    if theirs is not None and theirs.type != mine.type:
        b.error(at, f"{name!r} is a {mine.type} field here but a {theirs.type} field of {kids.table.name!r}")


register(EffectKind(
    "copy_to_children", "Copy fields of this record to its children (records of `table`, this record's table "
                        "unless given, whose `reference` points here), set-based; `fields` or `fields_property` "
                        "(a list property) names them, `with` adds fields that travel with one (state brings close "
                        "notes), `only`/`skip` choose children, `changed_only` copies only what this write changed; "
                        "journal fields copy the entries this write added.",
    _object({**_CHILDREN, "fields": _NAMES, "fields_property": _NAME, "changed_only": {"type": "boolean"},
             "with": {"type": "object", "additionalProperties": _NAMES}}, ("reference",)),
    _parse_copy, RUN + "copy_to_children",
    "copy_to_children: {reference: parent, fields_property: x.fields_to_sync, with: {state: [close_notes]}, "
    "changed_only: true}"))


def _parse_cascade(b: Builder, args: dict, at: tuple) -> ChildrenArgs | None:
    table, kids = _children_table(b, args, at)
    if table is None:
        return None
    return ChildrenArgs(table.name, args["reference"], kids.condition(args.get("only"), at + ("only",), templates=True),
                        kids.condition(args.get("skip"), at + ("skip",), templates=True),
                        set=kids.values(args.get("set"), at + ("set",)),
                        journal=kids.journal(args.get("journal"), at + ("journal",)))


register(EffectKind(
    "cascade", "Set fields on this record's children (records of `table`, this record's table unless given, "
               "whose `reference` points here) that match `only` and not `skip`, set-based and audited as one "
               "change set; `journal` adds an entry to each.",
    _object({**_CHILDREN, "set": _MAPPING, "journal": _MAPPING}, ("reference",)),
    _parse_cascade, RUN + "cascade",
    "cascade: {table: task, reference: work_order, only: {field: state, op: in, value: [1, 2]}, set: {state: 7}, "
    "journal: {work_notes: \"Canceled with {{ record.number }}\"}}"))


# -- the record a reference points at ----------------------------------------------------------------

@dataclass(frozen=True)
class UpdateReferenceArgs:
    field: str  # a reference field of this record
    table: str  # the table it points at
    set: Values
    journal: Values


def _parse_update_reference(b: Builder, args: dict, at: tuple) -> UpdateReferenceArgs | None:
    field = b.reference(args["field"], at + ("field",))
    if field is None or field.reference not in b.tables:  # an unknown target table is reported with the field
        return None
    target = b.on(b.tables[field.reference])
    values = target.values(args.get("set"), at + ("set",))
    journal = target.journal(args.get("journal"), at + ("journal",))
    if not values and not journal:
        b.error(at, "update_reference: give `set`, `journal` or both")
    return UpdateReferenceArgs(field.name, field.reference, values, journal)


register(EffectKind(
    "update_reference", "Update the record a reference field of this record points at (its rules run as for any "
                        "write); nothing happens when the reference is empty.",
    _object({"field": _NAME, "set": _MAPPING, "journal": _MAPPING}, ("field",)),
    _parse_update_reference, RUN + "update_reference",
    "update_reference: {field: asset, set: {last_serviced: \"{{ now }}\"}, "
    "journal: {work_notes: \"Serviced under {{ record.number }}\"}}"))


# -- notify, branch ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NotifyArgs:
    name: str
    location: Location | None = field(default=None, compare=False)  # where the name is written


register(EffectKind(
    "notify", "Send a declared notification about this record.", _NAME,
    lambda b, args, at: NotifyArgs(args, b.location(at)), RUN + "notify", "notify: work_order_completed"))


@dataclass(frozen=True)
class BranchArgs:
    condition: Any
    then: tuple[EffectDef, ...]
    otherwise: tuple[EffectDef, ...]


def field_list_properties(defs) -> dict[str, tuple[str, ...]]:
    """The list properties effects read as names of fields (`fields_property`, `copy_fields_property`), each
    with the tables whose fields it names (the tables of the rules, actions and timers that read it): what a
    value set at run time is checked against, as `caseloom validate` checks the declared default."""
    derived = defs.derived.get(field_list_properties)
    if derived is not None:
        return derived
    found: dict[str, dict[str, None]] = {}

    def walk(table: str, effects) -> None:
        for effect in effects:
            args = effect.args
            name = getattr(args, "fields_property", None) or getattr(args, "copy_fields_property", None)
            if name:
                found.setdefault(name, {})[table] = None
            if isinstance(args, BranchArgs):
                walk(table, args.then)
                walk(table, args.otherwise)

    for owner in (*defs.actions, *defs.rules, *defs.timers.values(), *defs.inbound_email):
        walk(owner.table, owner.effects)
    derived = defs.derived[field_list_properties] = {name: tuple(tables) for name, tables in found.items()}
    return derived


def _parse_branch(b: Builder, args: dict, at: tuple) -> BranchArgs:
    return BranchArgs(b.condition(args["if"], at + ("if",)), b.effects(args["then"], at + ("then",)),
                      b.effects(args.get("else", ()), at + ("else",)))


register(EffectKind(
    "branch", "Run the `then` effects when the record meets the `if` condition, else the `else` effects.",
    _object({"if": _CONDITION, "then": _EFFECTS, "else": _EFFECTS}, ("if", "then")), _parse_branch, RUN + "branch",
    "branch: {if: {field: priority, op: eq, value: 1}, then: [{notify: p1_raised}], else: []}"))


# -- refuse, member lists ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RefuseArgs:
    field: str | None
    message: Any


def _parse_refuse(b: Builder, args: dict, at: tuple) -> RefuseArgs:
    if "field" in args:
        b.field(args["field"], at + ("field",), own=True)
    return RefuseArgs(args.get("field"), b.text(args["message"], at + ("message",)))


register(EffectKind(
    "refuse", "Refuse the write (in before-rules) with a message naming a field: 400.",
    _object({"field": _NAME, "message": {"type": "string", "minLength": 1}}, ("message",)),
    _parse_refuse, LISTS + "refuse",
    "refuse: {field: assigned_to, message: \"assign the order before completing it\"}"))


@dataclass(frozen=True)
class NoArgs:
    pass


register(EffectKind(
    "refresh_members", "Re-evaluate the member list's condition or script (on the list's own table): dynamic "
                       "members follow it, members added by hand or import stay.",
    {"anyOf": [{"type": "null"}, {"const": True}, _object({})]}, lambda b, args, at: NoArgs(),
    LISTS + "refresh_members", "refresh_members: {}"))


@dataclass(frozen=True)
class ChildrenFromListArgs:
    list_field: str
    list_table: str
    reference: str
    member_fields: tuple[tuple[str, str], ...]  # (member type, child field)
    values: Values
    lookups: tuple[tuple[str, str], ...]  # (child field, path from the member field)
    journal: Values
    lock: str | None
    copy_fields: tuple[str, ...]
    copy_fields_property: str | None


def _parse_children_from_list(b: Builder, args: dict, at: tuple) -> ChildrenFromListArgs | None:
    list_ref = b.reference(args["list_field"], at + ("list_field",))
    b.reference(args["reference"], at + ("reference",), to=b.table.name)
    for kind, name in args["member_fields"].items():
        b.reference(name, at + ("member_fields", kind))
    for child, path in (args.get("lookups") or {}).items():
        b.field(child, at + ("lookups", child), own=True)
        if b.field(path, at + ("lookups", child)) is not None and path.split(".")[0] not in \
                args["member_fields"].values():
            b.error(at + ("lookups", child), f"{path!r} must start with one of the member fields "
                                             f"({', '.join(args['member_fields'].values())})")
    for i, name in enumerate(args.get("copy_fields", ())):
        b.field(name, at + ("copy_fields", i), own=True)
    if "copy_fields_property" in args:
        b.field_list_property(args["copy_fields_property"], at + ("copy_fields_property",))
    if list_ref is not None and "lock" in args:
        b.field(args["lock"], at + ("lock",), b.tables[list_ref.reference], own=True)
    if list_ref is None:
        return None
    return ChildrenFromListArgs(
        args["list_field"], list_ref.reference, args["reference"], tuple(args["member_fields"].items()),
        b.values(args.get("values"), at + ("values",)), tuple((args.get("lookups") or {}).items()),
        b.journal(args.get("journal"), at + ("journal",)), args.get("lock"), tuple(args.get("copy_fields", ())),
        args.get("copy_fields_property"))


register(EffectKind(
    "create_children_from_list", "Create one child record of this table per member of the list this record points "
                                 "at (never two for one member, even when run again or after a crash), in batches "
                                 "with progress; set-based inserts through the write path.",
    _object({"list_field": _NAME, "reference": _NAME, "member_fields": {"type": "object", "minProperties": 1,
                                                                         "additionalProperties": _NAME},
             "values": _MAPPING, "lookups": {"type": "object", "additionalProperties": _NAME}, "journal": _MAPPING,
             "lock": _NAME, "copy_fields": _NAMES, "copy_fields_property": _NAME},
            ("list_field", "reference", "member_fields")),
    _parse_children_from_list, LISTS + "create_children_from_list",
    "create_children_from_list: {list_field: asset_list, reference: parent, member_fields: {assets: asset}, "
    "lookups: {owner: asset.owner}, lock: locked}"))
