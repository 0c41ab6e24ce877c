"""The effect registry: what actions and rules can do, one entry per primitive.

Every effect runs inside the record's transaction and writes through the record service;
if one fails, the whole action or write rolls back. String values may be Jinja templates
(rendered in the sandbox) over `record`, `previous`, `inputs`, `created` and `user`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .access import AccessDenied
from .definitions.model import TableDef
from .definitions.tables import resolve_path
from .fieldtypes import FieldValueError
from .query import Term
from .query.conditions import All, QueryError, from_data
from .query.evaluate import evaluate
from .records import RecordError, RecordService
from .scriptbudget import BudgetExhausted
from .setwrite import update_where
from .templates import TemplateProblem, render_value


class EffectFailed(Exception):
    """An effect could not be carried out; the whole action or write is rolled back."""


@dataclass
class EffectContext:
    """What an effect works on: the record (as stored so far), the inputs and earlier results."""

    service: RecordService
    table: TableDef
    record: dict
    previous: dict | None = None
    inputs: dict = field(default_factory=dict)
    created: dict[str, dict] = field(default_factory=dict)
    pending: dict | None = None  # before-rules: values about to be written, which `set` changes
    messages: list[str] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    journal: dict[str, str] = field(default_factory=dict)  # entries this write added (for copy_to_children)
    properties: Callable[[str], Any] | None = None
    notify: Callable[[str, TableDef, dict], None] | None = None
    # In a background job: called after each batch with (done, total); commits the work so far and
    # returns the record service of the next unit of work.
    progress: Callable[[int, int], RecordService | None] | None = None

    def template_context(self) -> dict:
        return {"record": self.record, "previous": self.previous or {}, "inputs": self.inputs,
                "created": self.created, "user": self.service.actor.user_name}

    def render(self, value: Any) -> Any:
        try:
            return render_value(value, self.template_context())
        except TemplateProblem as exc:
            raise EffectFailed(str(exc)) from None

    def reload(self) -> None:
        fresh = self.service._load(self.table, self.record["sys_id"])
        if fresh is not None:
            self.record = fresh


@dataclass(frozen=True)
class Effect:
    name: str
    description: str
    run: Callable[[EffectContext, Any], None]
    check: Callable[[dict, TableDef, Any], list[str]] = lambda tables, table, args: []


EFFECTS: dict[str, Effect] = {}


def effect(name: str, description: str, check: Callable | None = None):
    def register(fn: Callable[[EffectContext, Any], None]) -> Callable:
        EFFECTS[name] = Effect(name, description, fn, check or (lambda tables, table, args: []))
        return fn

    return register


def _fields_exist(tables: dict, table: TableDef, names) -> list[str]:
    return [f"{name!r} is not a field of {table.name!r}" for name in names if resolve_path(tables, table, name) is None]


def _check_mapping(tables, table, args) -> list[str]:
    if not isinstance(args, dict) or not args:
        return ["expected a mapping of field: value"]
    return _fields_exist(tables, table, args)


# -- set, journal ----------------------------------------------------------------------------

@effect("set", "Set fields of the record (values may be templates).", _check_mapping)
def _set(ctx: EffectContext, args: dict) -> None:
    values = {name: ctx.render(value) for name, value in args.items()}
    if ctx.pending is not None:
        ctx.pending.update(_parse_values(ctx, values))
        return
    ctx.service.update(ctx.table.name, ctx.record["sys_id"], values)
    ctx.reload()


def _check_journal(tables, table, args) -> list[str]:
    if not isinstance(args, dict) or set(args) != {"field", "text"}:
        return ["expected {field: <journal field>, text: <template>}"]
    f = table.field(args["field"])
    return [] if f is not None and f.type == "journal" else [f"{args['field']!r} is not a journal field of {table.name!r}"]


@effect("journal", "Add an entry to a journal field (comments, work notes).", _check_journal)
def _journal(ctx: EffectContext, args: dict) -> None:
    text = ctx.render(args["text"])
    if ctx.pending is not None:
        ctx.pending[args["field"]] = text
        return
    ctx.service.update(ctx.table.name, ctx.record["sys_id"], {args["field"]: text})
    ctx.reload()


# -- create, reparent ------------------------------------------------------------------------

def _check_create(tables, table, args) -> list[str]:
    if not isinstance(args, dict) or "table" not in args or not isinstance(args.get("values"), dict):
        return ["expected {table: <table>, values: {field: value}, as: <name>}"]
    if args["table"] not in tables:
        return [f"unknown table {args['table']!r}"]
    problems = _fields_exist(tables, tables[args["table"]], args["values"])
    if "link" in args:
        problems += _fields_exist(tables, table, [args["link"]])
    return problems


@effect("create", "Create a related record; `as` names it for later effects, `link` points a field of "
                  "this record at it.", _check_create)
def _create(ctx: EffectContext, args: dict) -> None:
    values = {name: ctx.render(value) for name, value in args["values"].items()}
    created = ctx.service.insert(args["table"], values)
    ctx.created[args.get("as", args["table"])] = created
    if args.get("link"):
        ctx.service.update(ctx.table.name, ctx.record["sys_id"], {args["link"]: created["sys_id"]})
        ctx.reload()
    ctx.result.setdefault("created", []).append({"table": args["table"], "sys_id": created["sys_id"]})


def _check_reparent(tables, table, args) -> list[str]:
    if not isinstance(args, dict) or "input" not in args or "field" not in args:
        return ["expected {input: <records input>, field: <reference field>, refuse: [{condition, reason}]}"]
    problems = _fields_exist(tables, table, [args["field"]])
    for i, rule in enumerate(args.get("refuse", [])):
        if rule.get("condition") == "self":
            continue
        try:
            from_data(rule.get("condition"))
        except QueryError as exc:
            problems.append(f"refuse[{i}]: {exc}")
    return problems


@effect("reparent", "Make the records of a records input children of this record (setting their reference "
                    "field), refusing those that match a refusal condition, and say how many were added.",
        _check_reparent)
def _reparent(ctx: EffectContext, args: dict) -> None:
    ids = ctx.inputs.get(args["input"]) or []
    refusals = [(rule["condition"], rule["reason"]) for rule in args.get("refuse", [])]
    added, refused = 0, []
    noun = args.get("noun", "records")
    for sys_id in dict.fromkeys(ids):
        candidate = ctx.service._load(ctx.table, sys_id)
        reason = "not found" if candidate is None else _refusal(ctx, candidate, refusals)
        if reason:
            refused.append({"sys_id": sys_id, "number": (candidate or {}).get("number", ""), "reason": reason})
            continue
        ctx.service.update(ctx.table.name, sys_id, {args["field"]: ctx.record["sys_id"]})
        added += 1
    total = len(dict.fromkeys(ids))
    ctx.result.update(added=added, total=total, refused=refused)
    ctx.messages.append(f"{added} of {total} selected {noun} were added")


def _refusal(ctx: EffectContext, candidate: dict, refusals: list) -> str | None:
    for condition, reason in refusals:
        if condition == "self":
            if candidate["sys_id"] == ctx.record["sys_id"]:
                return reason
            continue
        node = from_data(ctx.render(condition) if isinstance(condition, str) else _render_tree(ctx, condition))
        if evaluate(node, candidate):
            return reason
    return None


def _render_tree(ctx: EffectContext, data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _render_tree(ctx, v) for k, v in data.items()}
    if isinstance(data, list):
        return [_render_tree(ctx, v) for v in data]
    return ctx.render(data)


# -- children: copy, cascade ---------------------------------------------------------------------

def _check_children(tables, table, args) -> list[str]:
    if not isinstance(args, dict) or "reference" not in args:
        return ["expected {reference: <child field pointing here>, ...}"]
    problems = _fields_exist(tables, table, [args["reference"]])
    problems += _fields_exist(tables, table, args.get("fields", []))
    problems += _fields_exist(tables, table, list(args.get("set", {})))
    for name, extra in (args.get("with") or {}).items():
        problems += _fields_exist(tables, table, [name, *extra])
    for key in ("skip", "only"):
        if key in args:
            try:
                from_data(args[key])
            except QueryError as exc:
                problems.append(f"{key}: {exc}")
    return problems


def _children(ctx: EffectContext, args: dict):
    node = Term(args["reference"], "eq", ctx.record["sys_id"])
    parts = [node]
    if "only" in args:
        parts.append(from_data(_render_tree(ctx, args["only"])))
    if "skip" in args:
        from .query.conditions import Not

        parts.append(Not(from_data(_render_tree(ctx, args["skip"]))))
    return All(tuple(parts))


def _parse_values(ctx: EffectContext, values: dict) -> dict:
    parsed = {}
    for name, value in values.items():
        field_def = ctx.table.field(name)
        try:
            parsed[name] = field_def.parse(value)
        except FieldValueError as exc:
            raise RecordError(name, str(exc)) from None
    return parsed


@effect("copy_to_children", "Copy fields of this record to its children, set-based; `fields` or "
                            "`fields_property` names them, `with` adds fields that travel with one "
                            "(state brings close notes), `skip` leaves children out, `changed_only` copies only "
                            "what this write changed; journal fields copy the entries this write added.",
        _check_children)
def _copy_to_children(ctx: EffectContext, args: dict) -> None:
    names = list(args.get("fields", []))
    if "fields_property" in args and ctx.properties is not None:
        names += [n for n in ctx.properties(args["fields_property"]) if n not in names]
    for name, extra in (args.get("with") or {}).items():
        if name in names:
            names += [e for e in extra if e not in names]
    if args.get("changed_only") and ctx.previous is not None:
        names = [n for n in names if ctx.table.field(n) is not None and (
            ctx.table.field(n).type == "journal" or str(ctx.record.get(n)) != str(ctx.previous.get(n)))]
    fields = [ctx.table.field(n) for n in names if ctx.table.field(n) is not None]
    values = {f.name: ctx.record.get(f.name) for f in fields if f.stored and not f.system}
    journal = {f.name: ctx.journal[f.name] for f in fields if f.type == "journal" and ctx.journal.get(f.name)}
    count = update_where(ctx.service, ctx.table, _children(ctx, args), values, journal)
    ctx.result["children_updated"] = ctx.result.get("children_updated", 0) + count


@effect("cascade", "Set fields on this record's children that match `only` (e.g. close the open ones with "
                   "this record's resolution), set-based and audited as one change set.", _check_children)
def _cascade(ctx: EffectContext, args: dict) -> None:
    values = _parse_values(ctx, {k: ctx.render(v) for k, v in (args.get("set") or {}).items()})
    journal = {k: ctx.render(v) for k, v in (args.get("journal") or {}).items()}
    count = update_where(ctx.service, ctx.table, _children(ctx, args), values, journal)
    ctx.result["children_updated"] = ctx.result.get("children_updated", 0) + count


# -- notify -----------------------------------------------------------------------------------

@effect("notify", "Send a declared notification about this record.")
def _notify(ctx: EffectContext, name: str) -> None:
    if ctx.notify is None:
        raise EffectFailed("notifications are not available here")
    ctx.notify(name, ctx.table, ctx.record)


# -- branch ------------------------------------------------------------------------------------

def _check_branch(tables, table, args) -> list[str]:
    if not isinstance(args, dict) or "if" not in args or "then" not in args:
        return ["expected {if: <condition>, then: [effects], else: [effects]}"]
    problems = []
    try:
        from_data(args["if"])
    except QueryError as exc:
        problems.append(f"if: {exc}")
    for key in ("then", "else"):
        for item in args.get(key, []):
            if not isinstance(item, dict) or len(item) != 1:
                problems.append(f"{key}: each effect is a mapping with one key")
                continue
            kind, inner = next(iter(item.items()))
            if kind not in EFFECTS:
                problems.append(f"{key}: unknown effect {kind!r}")
            else:
                problems += [f"{key}: {kind}: {p}" for p in EFFECTS[kind].check(tables, table, inner)]
    return problems


@effect("branch", "Run `then` effects when the record meets the `if` condition, else the `else` effects.",
        _check_branch)
def _branch(ctx: EffectContext, args: dict) -> None:
    from .definitions.model import EffectDef

    chosen = args["then"] if evaluate(from_data(args["if"]), ctx.record, properties=ctx.properties) \
        else args.get("else", [])
    run_effects(ctx, [EffectDef(*next(iter(item.items()))) for item in chosen])


def run_effects(ctx: EffectContext, effects) -> None:
    """Run effects in order; a failure names the effect and rolls back with the caller's savepoint.
    Effects are declared in the definitions, so their writes may set read-only fields and move a
    lifecycle field (`RecordService.by_definitions`)."""
    with ctx.service.by_definitions():
        for item in effects:
            spec = EFFECTS[item.kind]
            try:
                spec.run(ctx, item.args)
            except (RecordError, EffectFailed, AccessDenied, BudgetExhausted):  # they name what to fix: 400, 403, 429
                raise
            except Exception as exc:  # an effect that breaks must not leave half a change behind
                raise EffectFailed(f"effect {item.kind} failed: {exc}") from exc


from . import list_effects  # noqa: E402,F401  (more primitives, registered like the ones above)
