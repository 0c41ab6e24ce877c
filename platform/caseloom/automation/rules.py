"""Before- and after-rules: a rule's effects run when its condition holds, and never in a loop.

A rule does not fire again for a record while its own effects are writing that record (an
after-update rule whose `set` updates the record it runs for fires once, as in ServiceNow);
other rules still fire, and so does the same rule for the other records its effects write.
A chain that keeps reaching new records stops at MAX_DEPTH nested rule runs with a RuleLoop,
which refuses the whole write and names the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

from ..definitions.model import Definitions, RuleDef, TableDef
from ..effects import EffectContext, run_effects
from ..properties import Properties
from ..records import RecordError, RecordService
from .conditions import Conditions, unit_properties

MAX_DEPTH = 16  # nested rule runs in one write: deeper is a loop


@dataclass(frozen=True)
class RuleRun:
    """One rule running for one record (sys_id None: a record not inserted yet)."""

    rule: RuleDef
    sys_id: str | None
    record: str  # how a RuleLoop names the record

    def __str__(self) -> str:
        return f"rule {self.rule.name!r} on {self.record}"


class RuleLoop(RecordError):
    """Rules triggered each other more than MAX_DEPTH deep: the write is refused (HTTP 400) and
    rolled back; the message names every rule and record of the chain."""

    def __init__(self, chain: list[RuleRun]):
        self.chain = tuple(chain)
        super().__init__(None, f"rules triggered each other more than {MAX_DEPTH} deep, so nothing was changed: "
                               f"{' -> '.join(map(str, chain))}; change a rule's condition so that the chain ends")


class Rules:
    """Runs the rules of a table around its writes, remembering per unit of work which are running."""

    def __init__(self, defs: Definitions, conditions: Conditions):
        self.defs, self.conditions = defs, conditions
        # per unit of work (its record service): the rules running now, outermost first
        self._running: WeakKeyDictionary[RecordService, list[RuleRun]] = WeakKeyDictionary()
        self._of: dict[tuple[str, str, str], tuple[RuleDef, ...]] = {}

    def of(self, table: str, when: str, event: str) -> tuple[RuleDef, ...]:
        """The rules of a table (and the tables it extends) for a moment and event, in order (asked per
        record: memoized)."""
        key = (table, when, event)
        if key not in self._of:
            self._of[key] = self.defs.rules_for(table, when, event)
        return self._of[key]

    def run_before(self, service: RecordService, tdef: TableDef, event: str, pending: dict,
                   previous: dict | None) -> None:
        """Before-rules, whose effects may change `pending` (the values about to be written)."""
        rules = self.of(tdef.name, "before", event)
        if not rules:
            return
        props = unit_properties(service)
        merged = {**(previous or {}), **pending}
        for rule in rules:
            if self._due(service, rule, tdef, merged, previous, props):
                self.run(EffectContext(service=service, table=tdef, record=merged, previous=previous,
                                       pending=pending, properties=props.get), rule)
                merged.update(pending)

    def run_after(self, service: RecordService, tdef: TableDef, event: str, record: dict, previous: dict | None,
                  journal: dict[str, str], props: Properties, notify) -> None:
        """After-rules, whose effects work on the stored record (`journal`: the entries this write added)."""
        with_journal = {**record, **journal}
        for rule in self.of(tdef.name, "after", event):
            if self._due(service, rule, tdef, with_journal, previous, props):
                self.run(EffectContext(service=service, table=tdef, record=dict(record), previous=previous,
                                       journal=dict(journal), properties=props.get, notify=notify), rule)

    def _due(self, service: RecordService, rule: RuleDef, tdef: TableDef, record: dict, previous: dict | None,
             props: Properties) -> bool:
        """Whether a rule fires: not already running for this record, and its condition holds."""
        sys_id = record.get("sys_id")
        if sys_id is not None and any(r.rule is rule and r.sys_id == sys_id for r in self._running.get(service, ())):
            return False
        return self.conditions.holds(service, rule.condition, tdef, record, previous, props)

    def run(self, ctx: EffectContext, rule: RuleDef) -> None:
        """Run a rule's effects for ctx.record, one level deeper in the unit of work's chain of rules."""
        runs = self._running.setdefault(ctx.service, [])
        run = RuleRun(rule, ctx.record.get("sys_id"), record_name(ctx.table, ctx.record))
        if len(runs) >= MAX_DEPTH:
            raise RuleLoop([*runs, run])
        runs.append(run)
        try:
            run_effects(ctx, rule.effects)
        finally:
            runs.pop()


def record_name(tdef: TableDef, record: dict) -> str:
    """How a message names a record: its number, display value or sys_id."""
    for name in ("number" if tdef.number is not None else None, tdef.display, "sys_id"):
        if name and record.get(name):
            return str(record[name])
    return f"a new {tdef.label.lower()}"
