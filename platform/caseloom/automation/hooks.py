"""What the record service calls around a write: rules, lifecycle checks and notifications.

The record service calls `before` and `after` for every insert, update and delete of a table
`has_hooks` names. Before-rules may change the values about to be written; after-rules run
their effects on the stored record, in the same transaction, then notifications are sent.
"""

from __future__ import annotations

from ..definitions.model import Definitions, RuleDef, TableDef
from ..effects import EffectContext
from ..properties import Properties
from ..records import RecordService
from ..setwrite import Touched
from .conditions import Conditions, fields_read, unit_properties
from .lifecycle import LifecycleCheck
from .notifications import EmailWriter, Notifications
from .rules import Rules


def timing_enabled(defs: Definitions, table: str) -> bool:
    """Whether records of `table` may have SLAs or timers (caseloom.timing)."""
    from ..timing.slas import enabled

    return enabled(defs, table) or bool(defs.timers_for(table))


def timing_rows(service: RecordService, tdef: TableDef, records: list[dict], new: bool = False) -> None:
    """The SLAs and timers of records just written (`new`: just inserted, so with neither yet)."""
    from ..timing import engine, timers

    engine.after_rows(service, tdef, records, new)
    timers.after_rows(service, tdef, records, new)


def timing_where(service: RecordService, tdef: TableDef, touched: Touched, new: bool = False) -> None:
    from ..timing import setbased, timers

    setbased.after_where(service, tdef, touched, new)
    timers.after_where(service, tdef, touched, new)


class Automation:
    """Rules, lifecycles and notifications of one definitions set, for every unit of work."""

    def __init__(self, defs: Definitions):
        self.defs = defs
        self.conditions = Conditions(defs)
        self.rules = Rules(defs, self.conditions)
        self.lifecycle = LifecycleCheck(defs)
        self.notifications = Notifications(defs, self.conditions)
        self._hooked: dict[tuple[str, str], bool] = {}

    def before(self, service: RecordService, tdef: TableDef, event: str, pending: dict,
               previous: dict | None) -> None:
        """Before a write: before-rules (which may change `pending`), then lifecycle checks."""
        self.rules.run_before(service, tdef, event, pending, previous)
        if event != "delete":
            self.lifecycle.check(service, tdef, pending, previous)

    def after(self, service: RecordService, tdef: TableDef, event: str, record: dict, previous: dict | None,
              journal: dict[str, str]) -> None:
        """After an update or delete: the record's SLAs, after-rules, then notifications. SLAs go first:
        an after-rule that updates the record again has them evaluated on its newer values."""
        if event == "update" and self.timed(tdef.name):
            timing_rows(service, tdef, [record])
        if not self._acts_after(tdef.name, event):
            return
        props = Properties(self.defs, service.storage, service.conn)  # fresh: this write may be to sys_properties
        self.rules.run_after(service, tdef, event, record, previous, journal, props, self.notifier(service))
        self.notifications.after(service, tdef, event, record, previous, journal, props)

    def after_insert_batch(self, service: RecordService, tdef: TableDef, records: list[dict],
                           entries_of: list[dict]) -> None:
        """After a batch insert: rules record by record; notifications for the whole batch at once
        (one query for the recipients' addresses, one executemany of sys_email rows); a record made one at
        a time, the search for its similar lists' suggestions, after commit (caseloom.similar)."""
        if self.timed(tdef.name):
            timing_rows(service, tdef, records, new=True)
        if service.one_at_a_time and tdef.keeps_suggestions:
            # a record made one at a time may raise a similar list's suggestion: looked for once committed
            service.follow_ups += [("similar_suggest", (tdef.name, r["sys_id"])) for r in records]
        if not self._acts_after(tdef.name, "insert"):
            return
        props = unit_properties(service)
        notify = self.notifier(service)
        for record, journal in zip(records, entries_of, strict=True):
            self.rules.run_after(service, tdef, "insert", record, None, journal, props, notify)
        self.notifications.after_batch(service, tdef, records, entries_of, props)

    def timed(self, table: str) -> bool:
        """Whether records of `table` may have SLAs or timers (caseloom.timing)."""
        return timing_enabled(self.defs, table)

    def has_slas(self, service: RecordService, table: str) -> bool:
        """Whether records of `table` have active SLA definitions or timers to follow now."""
        if not self.timed(table):
            return False
        from ..timing.slas import slas_for

        return bool(self.defs.timers_for(table) or slas_for(service, table))

    def after_set_update(self, service: RecordService, tdef: TableDef, touched: Touched) -> None:
        """After a set-based update (caseloom.setwrite) of the records `touched` selects: their SLAs."""
        timing_where(service, tdef, touched)

    def _acts_after(self, table: str, event: str) -> bool:
        """Whether an after-rule or a notification may act after a write of `table`."""
        return bool(self.rules.of(table, "after", event) or self.notifications.for_event(table, event))

    def insert_set_plan(self, service: RecordService, tdef: TableDef, values: dict, record: dict,
                        entries: dict, varying: set[str], in_sql: set[str]) -> InsertSetPlan | str:
        """What runs around a set-based insert of records that share `values` (`record`: with the
        defaults; `entries`: journal entries) and differ only in the `varying` fields, when it
        cannot depend on them (`in_sql`: they and the fields the database computes, such as the
        number): before-rules whose conditions do not read them and whose effects
        only refuse; a lifecycle whose field and mandatory fields are not among them; no
        after-insert rules; notifications whose conditions do not read them, addressed to one
        recipient path or to roles, with plain-substitution texts (rendered in SQL). Else why not: each
        part of the write says what keeps it from running once for all the rows."""
        after = self.rules.of(tdef.name, "after", "insert")
        if after:
            return f"after-insert rule {after[0].name!r} runs for each record"
        rules = self.rules.of(tdef.name, "before", "insert")
        for rule in rules:
            if fields_read(rule.condition) & varying:
                return (f"before-insert rule {rule.name!r} reads "
                        f"{', '.join(sorted(fields_read(rule.condition) & varying))}, which differ by row")
            changing = [e.kind for e in rule.effects if e.kind != "refuse"]
            if changing:
                return f"before-insert rule {rule.name!r} has a {changing[0]!r} effect (only refusals run once)"
        lifecycle = self.defs.lifecycle(tdef.name)
        if lifecycle is not None:
            state = lifecycle.state(values.get(lifecycle.field))
            if lifecycle.field in varying:
                return f"the lifecycle field {lifecycle.field!r} differs by row"
            if state is not None and set(state.mandatory) & varying:
                return f"state {state.label}'s mandatory fields include fields that differ by row"
        emails = self.notifications.set_insert_emails(service, tdef, record, entries, in_sql)
        if isinstance(emails, str):
            return emails
        return InsertSetPlan(self, service, tdef, values, rules, emails)

    def notifier(self, service: RecordService):
        """The `notify` effect's way to send a declared notification by name."""
        return self.notifications.notifier(service)

    def has_hooks(self, table: str, event: str) -> bool:
        """Whether writes of `table` for `event` need this object at all (asked per record: memoized)."""
        key = (table, event)
        if key not in self._hooked:
            self._hooked[key] = self._find_hooks(table, event)
        return self._hooked[key]

    def _find_hooks(self, table: str, event: str) -> bool:
        tables = (table, *self.defs.ancestors(table))
        return (any(r.table in tables and event in r.on for r in self.defs.rules)
                or (event != "delete" and self.timed(table))
                or any(n.table in tables and event in n.on for n in self.defs.notifications.values())
                or (event != "delete" and self.defs.lifecycle(table) is not None)
                or (event == "insert" and self.defs.tables[table].keeps_suggestions))


class InsertSetPlan:
    """The hooks of one set-based insert (Automation.insert_set_plan): `before` once for all the
    rows, `after` writes the notifications' e-mails for the new rows in SQL."""

    def __init__(self, automation: Automation, service: RecordService, tdef: TableDef, values: dict,
                 rules: tuple[RuleDef, ...], emails: list[EmailWriter]):
        self.automation, self.service, self.tdef, self.values = automation, service, tdef, values
        self.rules, self.emails = rules, emails

    def before(self) -> None:
        automation, service, tdef = self.automation, self.service, self.tdef
        props = unit_properties(service)
        for rule in self.rules:
            if automation.conditions.holds(service, rule.condition, tdef, dict(self.values), None, props):
                automation.rules.run(EffectContext(service=service, table=tdef, record=dict(self.values), previous=None,
                                                   pending={}, properties=props.get), rule)
        automation.lifecycle.check(service, tdef, dict(self.values), None)

    def after(self, low: str, high: str) -> None:
        if self.automation.timed(self.tdef.name):
            timing_where(self.service, self.tdef, Touched(low, high), new=True)
        for email in self.emails:
            email(low, high)
