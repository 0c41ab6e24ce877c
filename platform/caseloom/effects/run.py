"""Running effects: their arguments were parsed and checked when the definitions loaded.

Every effect runs inside the record's transaction and writes through the record service;
if one fails, the whole action or write rolls back. Templates render in Jinja's sandbox
over `record` (dot-walks included), `previous`, `inputs`, `created`, `user` and `now`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..access import AccessDenied
from ..definitions.model import TableDef
from ..fieldtypes import FieldValueError
from ..query import Term
from ..query.conditions import All, Not
from ..query.evaluate import evaluate
from ..records import RecordError, RecordService
from ..scriptbudget import BudgetExhausted
from ..setwrite import update_where
from ..templates import Template, TemplateProblem
from .build import bind
from .builtin import (
    BranchArgs,
    ChildrenArgs,
    CreateArgs,
    JournalArgs,
    NotifyArgs,
    ReparentArgs,
    SetArgs,
    UpdateReferenceArgs,
)
from .registry import REGISTRY
from .walks import template_user, timestamp, walk_values


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
    # In a background job's re-run: the progress its earlier runs committed, which its counts go on from
    earlier: int = 0
    # In a background job: splits big work into slices other workers run too (caseloom.jobs.slices)
    slicer: Any = None

    def template_context(self, template: Template | None = None) -> dict:
        record, previous = self.record, self.previous or {}
        if template is not None and template.walks:
            record = {**record, **walk_values(self.service, self.table, [record], template.walks)[0]}
        if template is not None and template.previous_walks and self.previous:
            previous = {**previous, **walk_values(self.service, self.table, [previous], template.previous_walks)[0]}
        context = {"record": record, "previous": previous, "inputs": self.inputs, "created": self.created}
        if template is None or "user" in template.names:
            context["user"] = template_user(self.service)
        if template is None or "now" in template.names:
            context["now"] = timestamp()
        return context

    def render(self, value: Any) -> Any:
        """A parsed value: a template rendered now, anything else as it is."""
        if not isinstance(value, Template):
            return value
        try:
            return value.render(self.template_context(value))
        except TemplateProblem as exc:
            raise EffectFailed(str(exc)) from None

    def rendered(self, values, table: TableDef | None = None) -> dict:
        """Parsed (field, value) pairs as the values to write: templates rendered and parsed."""
        table = table or self.table
        out = {}
        for name, value in values:
            if isinstance(value, Template):
                try:
                    value = table.field(name).parse(self.render(value))
                except FieldValueError as exc:
                    raise RecordError(name, f"{exc} (from the template {value.text!r})") from None
            out[name] = value
        return out

    def bound(self, condition):
        """A condition whose values may be templates, for this record."""
        return bind(condition, self.render)

    def resolver(self, record: dict):
        """Dot-walks of a condition from `record` (a record of this table)."""
        from ..automation.conditions import resolver

        return resolver(self.service, self.table, record)

    def reload(self) -> None:
        fresh = self.service._load(self.table, self.record["sys_id"])
        if fresh is not None:
            self.record = fresh


# -- set, journal -----------------------------------------------------------------------------------

def set_fields(ctx: EffectContext, args: SetArgs) -> None:
    values = ctx.rendered(args.values)
    if ctx.pending is not None:
        ctx.pending.update(values)
        return
    ctx.service.update(ctx.table.name, ctx.record["sys_id"], values)
    ctx.reload()


def journal(ctx: EffectContext, args: JournalArgs) -> None:
    text = ctx.render(args.text)
    if ctx.pending is not None:
        ctx.pending[args.field] = text
        return
    ctx.service.update(ctx.table.name, ctx.record["sys_id"], {args.field: text})
    ctx.reload()


# -- create, reparent -------------------------------------------------------------------------------

def create(ctx: EffectContext, args: CreateArgs) -> None:
    target = ctx.service.defs.tables[args.table]
    created = ctx.service.insert(args.table, ctx.rendered(args.values, target))
    ctx.created[args.name] = created
    if args.link:
        ctx.service.update(ctx.table.name, ctx.record["sys_id"], {args.link: created["sys_id"]})
        ctx.reload()
    ctx.result.setdefault("created", []).append({"table": args.table, "sys_id": created["sys_id"]})


def reparent(ctx: EffectContext, args: ReparentArgs) -> None:
    ids = list(dict.fromkeys(ctx.inputs.get(args.input) or []))
    refusals = [(None if r.condition is None else ctx.bound(r.condition), r.reason) for r in args.refuse]
    added, refused = 0, []
    for sys_id in ids:
        candidate = ctx.service._load(ctx.table, sys_id)
        reason = "not found" if candidate is None else _refusal(ctx, candidate, refusals)
        if reason:
            refused.append({"sys_id": sys_id, "number": (candidate or {}).get("number", ""), "reason": reason})
            continue
        ctx.service.update(ctx.table.name, sys_id, {args.field: ctx.record["sys_id"]})
        added += 1
    ctx.result.update(added=added, total=len(ids), refused=refused)
    ctx.messages.append(f"{added} of {len(ids)} selected {args.noun} were added")


def _refusal(ctx: EffectContext, candidate: dict, refusals: list) -> str | None:
    for condition, reason in refusals:
        if condition is None:  # `self`
            if candidate["sys_id"] == ctx.record["sys_id"]:
                return reason
        elif evaluate(condition, candidate, properties=ctx.properties, resolve=ctx.resolver(candidate)):
            return reason
    return None


# -- children: copy, cascade ------------------------------------------------------------------------

def _children(ctx: EffectContext, args: ChildrenArgs):
    parts = [Term(args.reference, "eq", ctx.record["sys_id"])]
    if args.only is not None:
        parts.append(ctx.bound(args.only))
    if args.skip is not None:
        parts.append(Not(ctx.bound(args.skip)))
    return All(tuple(parts))


def copy_to_children(ctx: EffectContext, args: ChildrenArgs) -> None:
    names = list(args.fields)
    if args.fields_property and ctx.properties is not None:
        names += [n for n in ctx.properties(args.fields_property) if n not in names]
    for name, extra in args.with_:
        if name in names:
            names += [e for e in extra if e not in names]
    children = ctx.service.defs.tables[args.table]
    if args.changed_only and ctx.previous is not None:
        names = [n for n in names if ctx.table.field(n) is not None and (
            ctx.table.field(n).ftype.journal or str(ctx.record.get(n)) != str(ctx.previous.get(n)))]
    # a field named by a property may be missing on either side: copied only where both have it
    fields = [ctx.table.field(n) for n in names if ctx.table.field(n) is not None and children.field(n) is not None]
    values = {f.name: ctx.record.get(f.name) for f in fields if f.stored and not f.system}
    entries = {f.name: ctx.journal[f.name] for f in fields if f.ftype.journal and ctx.journal.get(f.name)}
    count = update_where(ctx.service, children, _children(ctx, args), values, entries)
    ctx.result["children_updated"] = ctx.result.get("children_updated", 0) + count


def cascade(ctx: EffectContext, args: ChildrenArgs) -> None:
    children = ctx.service.defs.tables[args.table]
    values = ctx.rendered(args.set, children)
    entries = {name: ctx.render(text) for name, text in args.journal}
    count = update_where(ctx.service, children, _children(ctx, args), values, entries)
    ctx.result["children_updated"] = ctx.result.get("children_updated", 0) + count


# -- the record a reference points at -----------------------------------------------------------------

def update_reference(ctx: EffectContext, args: UpdateReferenceArgs) -> None:
    target_id = ctx.record.get(args.field)
    if not target_id:
        return
    target = ctx.service.defs.tables[args.table]
    values = {**ctx.rendered(args.set, target), **{name: ctx.render(text) for name, text in args.journal}}
    ctx.service.update(args.table, target_id, values)
    ctx.result.setdefault("updated", []).append({"table": args.table, "sys_id": target_id})


# -- notify, branch -----------------------------------------------------------------------------------

def notify(ctx: EffectContext, args: NotifyArgs) -> None:
    if ctx.notify is None:
        raise EffectFailed("notifications are not available here")
    ctx.notify(args.name, ctx.table, ctx.record)


def branch(ctx: EffectContext, args: BranchArgs) -> None:
    holds = evaluate(args.condition, ctx.record, previous=ctx.previous, properties=ctx.properties,
                     resolve=ctx.resolver(ctx.record))
    chosen = args.then if holds else args.otherwise
    run_effects(ctx, chosen)


def run_effects(ctx: EffectContext, effects) -> None:
    """Run effects in order; a failure names the effect and rolls back with the caller's savepoint.
    Effects are declared in the definitions, so their writes may set read-only fields and move a
    lifecycle field (`RecordService.by_definitions`)."""
    with ctx.service.by_definitions():
        for item in effects:
            run = REGISTRY[item.kind].runner()
            try:
                run(ctx, item.args)
            except (RecordError, EffectFailed, AccessDenied, BudgetExhausted):  # they name what to fix: 400, 403, 429
                raise
            except Exception as exc:  # an effect that breaks must not leave half a change behind
                raise EffectFailed(f"effect {item.kind} failed: {exc}") from exc
