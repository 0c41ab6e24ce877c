"""What happens around a write: lifecycle flags, rules and notifications.

The record service calls `before` and `after` for every insert, update and delete when
the runtime gives it an Automation. Before-rules may change the values about to be
written; after-rules run their effects on the stored record, in the same transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .definitions.model import Definitions, NotificationDef, TableDef
from .effects import EffectContext, run_effects
from .properties import Properties
from .query import Query, Term
from .query.conditions import fields_of
from .query.evaluate import evaluate
from .records import AccessDenied, Conflict, RecordError, RecordService
from .templates import TemplateProblem, render


class Automation:
    def __init__(self, defs: Definitions):
        self.defs = defs
        self._hooked: dict[tuple[str, str], bool] = {}
        self._reads: dict[int, tuple[str, ...]] = {}  # condition -> the fields it reads

    # -- hooks called by the record service ---------------------------------------------------

    def before(self, service: RecordService, tdef: TableDef, event: str, pending: dict,
               previous: dict | None) -> None:
        """Before a write: before-rules (which may change `pending`), then lifecycle flags."""
        rules = self.defs.rules_for(tdef.name, "before", event)
        if rules:
            props = self._properties(service)
            merged = {**(previous or {}), **pending}
            for rule in rules:
                if self._holds(service, rule.condition, tdef, merged, previous, props):
                    ctx = EffectContext(service, tdef, merged, previous, pending=pending, properties=props.get)
                    run_effects(ctx, rule.effects)
                    merged.update(pending)
        if event != "delete":
            self._check_lifecycle(service, tdef, pending, previous)

    def after(self, service: RecordService, tdef: TableDef, event: str, record: dict, previous: dict | None,
              journal: dict[str, str]) -> None:
        rules = self.defs.rules_for(tdef.name, "after", event)
        notifications = [n for n in self.defs.notifications.values()
                         if event in n.on and n.table in (tdef.name, *self.defs.ancestors(tdef.name))]
        if not rules and not notifications:
            return
        props = Properties(self.defs, service.storage, service.conn)
        record_with_journal = {**record, **journal}
        for rule in rules:
            if evaluate(rule.condition, record_with_journal, previous=previous, properties=props.get,
                        resolve=self._resolver(service, tdef, record)):
                ctx = EffectContext(service, tdef, dict(record), previous, journal=dict(journal),
                                    properties=props.get, notify=self.notifier(service))
                run_effects(ctx, rule.effects)
        for note in notifications:
            if evaluate(note.condition, record_with_journal, previous=previous, properties=props.get,
                        resolve=self._resolver(service, tdef, record)):
                self.send(service, note, tdef, record, journal)

    def insert_set_plan(self, service: RecordService, tdef: TableDef, values: dict, record: dict,
                        entries: dict, varying: set[str], in_sql: set[str]) -> InsertSetPlan | None:
        """What runs around a set-based insert of records that share `values` (`record`: with the
        defaults; `entries`: journal entries) and differ only in the `varying` fields, when it
        cannot depend on them (`in_sql`: they and the fields the database computes, such as the
        number): before-rules whose conditions do not read them and whose effects
        only refuse; a lifecycle whose field and mandatory fields are not among them; no
        after-insert rules; notifications whose conditions do not read them, addressed to one
        field's e-mail or to roles, with plain-substitution texts (rendered in SQL). Else None."""
        if self.defs.rules_for(tdef.name, "after", "insert"):
            return None
        rules = self.defs.rules_for(tdef.name, "before", "insert")
        if any(_reads(rule.condition) & varying for rule in rules) \
                or any(e.kind != "refuse" for rule in rules for e in rule.effects):
            return None
        lifecycle = self.defs.lifecycle(tdef.name)
        if lifecycle is not None:
            state = lifecycle.state(values.get(lifecycle.field))
            if lifecycle.field in varying or (state is not None and set(state.mandatory) & varying):
                return None
        props = self._properties(service)
        with_journal = {**record, **entries}
        emails = []
        for note in self.defs.notifications.values():
            if "insert" not in note.on or note.table not in (tdef.name, *self.defs.ancestors(tdef.name)):
                continue
            reads = _reads(note.condition)  # the number and sys fields are not known yet: row by row
            if reads & in_sql or reads - set(with_journal):
                return None
            if not self._holds(service, note.condition, tdef, with_journal, None, props):
                continue
            email = _email_sql(service, note, tdef, record, entries, in_sql, self._role_emails(service, note.roles))
            if email is None:
                return None
            emails.append(email)
        return InsertSetPlan(self, service, tdef, values, rules, emails)

    def after_insert_batch(self, service: RecordService, tdef: TableDef, records: list[dict],
                           entries_of: list[dict]) -> None:
        """After a batch insert: rules record by record; notifications for the whole batch at once
        (one query for the recipients' addresses, one executemany of sys_email rows)."""
        rules = self.defs.rules_for(tdef.name, "after", "insert")
        notifications = [n for n in self.defs.notifications.values()
                         if "insert" in n.on and n.table in (tdef.name, *self.defs.ancestors(tdef.name))]
        if not rules and not notifications:
            return
        props = self._properties(service)
        for record, journal in zip(records, entries_of, strict=True):
            for rule in rules:
                if self._holds(service, rule.condition, tdef, {**record, **journal}, None, props):
                    ctx = EffectContext(service, tdef, dict(record), None, journal=dict(journal),
                                        properties=props.get, notify=self.notifier(service))
                    run_effects(ctx, rule.effects)
        for note in notifications:
            matching = [(r, j) for r, j in zip(records, entries_of, strict=True)
                        if self._holds(service, note.condition, tdef, {**r, **j}, None, props)]
            if matching:
                self._send_many(service, note, tdef, matching)

    def _send_many(self, service: RecordService, note: NotificationDef, tdef: TableDef,
                   matching: list[tuple[dict, dict]]) -> None:
        role_emails = self._role_emails(service, note.roles)
        addresses = self._field_emails_many(service, tdef, [r["sys_id"] for r, _ in matching], note)
        rows = []
        for record, journal in matching:
            recipients = sorted(set(role_emails) | set(addresses.get(record["sys_id"], ())))
            if not recipients:
                continue
            subject, body = self._render(note, tdef, record, journal)
            rows.append({"recipients": ",".join(recipients), "subject": subject, "body": body, "state": "ready",
                         "error": None, "target_table": tdef.name, "instance": record["sys_id"]})
        if rows:
            service._system_insert("sys_email", rows)

    @staticmethod
    def _field_emails_many(service: RecordService, tdef: TableDef, ids: list[str],
                           note: NotificationDef) -> dict[str, list[str]]:
        if not note.fields:
            return {}
        from .query import select_rows

        paths = [f"{path}.email" if tdef.field(path) and tdef.field(path).type == "reference" else path
                 for path in note.fields]
        found: dict[str, list[str]] = {}
        for start in range(0, len(ids), 500):
            stmt, _ = select_rows(service.storage, tdef.name, Query(Term("sys_id", "in", ids[start:start + 500])),
                                  ["sys_id", *paths])
            for row in service.conn.execute(stmt).mappings():
                found[row["sys_id"]] = [row[p] for p in paths if row[p]]
        return found

    def has_hooks(self, table: str, event: str) -> bool:
        """Whether writes of `table` for `event` need this object at all (asked per record: memoized)."""
        key = (table, event)
        if key not in self._hooked:
            self._hooked[key] = self._find_hooks(table, event)
        return self._hooked[key]

    def _find_hooks(self, table: str, event: str) -> bool:
        tables = (table, *self.defs.ancestors(table))
        return (any(r.table in tables and event in r.on for r in self.defs.rules)
                or any(n.table in tables and event in n.on for n in self.defs.notifications.values())
                or (event != "delete" and self.defs.lifecycle(table) is not None))

    def _holds(self, service: RecordService, condition, tdef: TableDef, record: dict, previous: dict | None,
               props: Properties) -> bool:
        """Whether a rule's or notification's condition holds for a record. For a new record the
        answer depends only on the values the condition reads, so the rows of a batch that share
        them (all the children of one parent) are evaluated once; the memo lives with the unit of
        work's dot-walk cache, which any update empties."""
        if condition is None:
            return True
        key = None
        if previous is None:
            reads = self._reads.get(id(condition))
            if reads is None:
                reads = self._reads[id(condition)] = tuple(dict.fromkeys(f.split(".")[0] for f in fields_of(condition)))
            try:
                key = ("holds", id(condition), tdef.name, tuple(record.get(f) for f in reads))
                return service.lookups[key]
            except KeyError:
                pass
            except TypeError:  # an unhashable value: evaluated every time
                key = None
        result = evaluate(condition, record, previous=previous, properties=props.get,
                          resolve=self._resolver(service, tdef, record))
        if key is not None:
            service.lookups[key] = result
        return result

    def _properties(self, service: RecordService) -> Properties:
        """The unit of work's system properties, read once (a property's update empties the cache)."""
        props = service.lookups.get("properties")
        if props is None:
            props = service.lookups["properties"] = Properties(self.defs, service.storage, service.conn)
        return props

    # -- lifecycle -------------------------------------------------------------------------------

    def _check_lifecycle(self, service: RecordService, tdef: TableDef, pending: dict, previous: dict | None) -> None:
        lifecycle = self.defs.lifecycle(tdef.name)
        if lifecycle is None:
            return
        merged = {**(previous or {}), **pending}
        old_state = lifecycle.state((previous or {}).get(lifecycle.field)) if previous else None
        new_state = lifecycle.state(merged.get(lifecycle.field))
        field = lifecycle.field
        if not service.trusted and field in pending:
            # a new record starts in the field's default state, so a client creating one in another state
            # makes the transition from there
            before = previous if previous is not None else {field: tdef.field(field).default}
            if before[field] is not None and str(pending[field]) != str(before[field]):
                self._check_direct_transition(service, tdef, lifecycle, before, pending, merged)
        if old_state is not None and not service.trusted:
            for name in old_state.read_only:
                if name in pending and str(pending[name] or "") != str(previous.get(name) or ""):
                    raise RecordError(name, f"is read-only while the {tdef.label.lower()} is {old_state.label}")
        if new_state is not None:
            for name in new_state.mandatory:
                if merged.get(name) in (None, "") and not pending.get(name):
                    raise RecordError(name, f"is mandatory when the {tdef.label.lower()} is {new_state.label}")

    def _check_direct_transition(self, service: RecordService, tdef: TableDef, lifecycle, previous: dict,
                                 pending: dict, merged: dict) -> None:
        """A client changing the lifecycle field directly (a form, PATCH) does what one of the lifecycle's
        transitions does, so it must pass that transition's checks as the action would: the state it
        starts from (409), its roles (403), its condition (409) and its mandatory inputs (400 naming the
        first missing one). Journal inputs need an entry in this write; field inputs a value after it."""
        field = lifecycle.field
        old = lifecycle.state(previous.get(field))
        new = lifecycle.state(pending[field])
        moving = (f"a {tdef.label.lower()} in state {old.label if old else previous.get(field)} "
                  f"cannot move to {new.label if new else pending[field]}")
        candidates = [a for a in self.defs.actions_for(tdef.name)
                      if a.field == field and str(a.to_state) == str(pending[field])
                      and (a.from_states is None or str(previous.get(field)) in map(str, a.from_states))]
        if not candidates:
            raise Conflict(moving)
        permitted = [a for a in candidates if action_allows(service.actor, a)]
        if not permitted:
            roles = sorted({r for a in candidates for r in a.roles})
            raise AccessDenied(f"user {service.actor.user_name!r} may not {candidates[0].label.lower()} this "
                               f"{tdef.label.lower()} (needs one of the roles {', '.join(roles)})")
        props = self._properties(service)
        possible = [a for a in permitted if a.condition is None
                    or evaluate(a.condition, merged, properties=props.get, resolve=self._resolver(service, tdef, merged))]
        if not possible:
            raise Conflict(permitted[0].refusal or moving)
        shortest = None
        for action in possible:
            missing = [i for i in action.inputs if i.mandatory and not _input_given(tdef, i, pending, merged)]
            if not missing:
                return
            if shortest is None or len(missing) < len(shortest[1]):
                shortest = (action, missing)
        action, missing = shortest
        names = ", ".join(i.name for i in missing)
        raise RecordError(missing[0].name, f"is needed to {action.label.lower()}: changing {field} to "
                                           f"{new.label if new else pending[field]} is the {action.label} transition, "
                                           f"which needs {names} (or use the {action.name} action)")

    # -- notifications ---------------------------------------------------------------------------

    def notifier(self, service: RecordService):
        def notify(name: str, tdef: TableDef, record: dict) -> None:
            self.send(service, self.defs.notifications[name], tdef, record, {})

        return notify

    def send(self, service: RecordService, note: NotificationDef, tdef: TableDef, record: dict,
             journal: dict[str, str]) -> None:
        """Write the notification's sys_email rows (state ready) for the worker to deliver."""
        if note.children is not None:
            subject, body = self._render(note, tdef, record, journal)
            self._send_to_children(service, note, tdef, record, subject, body)
        self._send_many(service, note, tdef, [(record, journal)])

    @staticmethod
    def _render(note: NotificationDef, tdef: TableDef, record: dict, journal: dict) -> tuple[str, str]:
        context = {"record": {**record, **journal}, "table": tdef.label, "notification": note.name}
        try:
            return render(note.subject, context)[:255], render(note.body, context)
        except TemplateProblem as exc:
            raise RecordError(None, f"notification {note.name}: {exc}") from None

    @staticmethod
    def _send_to_children(service: RecordService, note: NotificationDef, tdef: TableDef, record: dict,
                          subject: str, body: str) -> None:
        """One sys_email per child record whose contact has an email, in one INSERT ... SELECT."""
        from .query import Selection
        from .query.conditions import All

        reference, field, only = note.children
        selection = Selection(service.storage, tdef.name)
        email, _ = selection.column(f"{field}.email")
        parts = [Term(reference, "eq", record["sys_id"])] + ([only] if only is not None else [])
        where = sa.and_(selection.condition(All(tuple(parts))), email.is_not(None))
        _insert_emails(service, selection, where, email, sa.literal(subject), sa.literal(body, sa.Text),
                       selection.base.c.sys_class_name)

    @staticmethod
    def _role_emails(service: RecordService, roles: tuple[str, ...]) -> list[str]:
        if not roles:
            return []
        users = service.storage.physical("sys_user")
        has_role = service.storage.physical("sys_user_has_role")
        granted = [r for r in service.defs.roles if set(roles) & service.defs.role_closure({r})]
        rows = service.conn.execute(
            sa.select(users.c.email).distinct().join(has_role, has_role.c.user == users.c.sys_id)
            .where(has_role.c.role.in_(granted), users.c.email.is_not(None), users.c.active.is_not(False)))
        return [r.email for r in rows]

    @staticmethod
    def _resolver(service: RecordService, tdef: TableDef, record: dict):
        """Dot-walks from the record's own values (so a before-rule sees the reference about to be
        written), then through the database."""
        def resolve(path: str) -> Any:
            from .query import select_rows

            first, rest = path.split(".", 1)
            field = tdef.field(first)
            target = record.get(first)
            if field is None or field.type != "reference" or not target:
                return None
            key = (field.reference, target, rest)
            if key not in service.lookups:  # many rows of a batch walk to the same record
                stmt, _ = select_rows(service.storage, field.reference, Query(Term("sys_id", "eq", target)), [rest], 1)
                service.lookups[key] = service.conn.execute(stmt).scalar()
            return service.lookups[key]

        return resolve


def _input_given(tdef: TableDef, spec, pending: dict, merged: dict) -> bool:
    """Whether a direct write supplies a transition's input: a new entry for a journal field, a value
    after the write for another field. A free input (a reason that only the action's effects use)
    cannot be given this way."""
    if not spec.field:
        return False
    field = tdef.field(spec.name)
    if field is not None and field.type == "journal":
        return bool(pending.get(spec.name))
    return merged.get(spec.name) not in (None, "")


def _reads(condition) -> set[str]:
    """The fields of the record a condition reads (the first step of each dot-walk)."""
    return set() if condition is None else {f.split(".")[0] for f in fields_of(condition)}


class InsertSetPlan:
    """The hooks of one set-based insert (Automation.insert_set_plan): `before` once for all the
    rows, `after` writes the notifications' e-mails for the new rows in SQL."""

    def __init__(self, automation: Automation, service: RecordService, tdef: TableDef, values: dict, rules,
                 emails: list):
        self.automation, self.service, self.tdef, self.values = automation, service, tdef, values
        self.rules, self.emails = rules, emails

    def before(self) -> None:
        service, tdef = self.service, self.tdef
        props = self.automation._properties(service)
        for rule in self.rules:
            if self.automation._holds(service, rule.condition, tdef, dict(self.values), None, props):
                run_effects(EffectContext(service, tdef, dict(self.values), None, pending={}, properties=props.get),
                            rule.effects)
        self.automation._check_lifecycle(service, tdef, dict(self.values), None)

    def after(self, low: str, high: str) -> None:
        for email in self.emails:
            email(low, high)


# Field types whose stored value renders in SQL as Python's str() renders it in a template.
_SQL_TEXT_TYPES = {"string", "text", "email", "url", "reference", "choice", "integer"}


def _email_sql(service: RecordService, note: NotificationDef, tdef: TableDef, record: dict, entries: dict,
               in_sql: set[str], role_emails: list[str]):
    """A function writing the notification's sys_email rows for the new records (sys_ids between
    two bounds), as Automation._send_many would: one per record with an address, the texts
    rendered in SQL from the shared values and the `in_sql` fields. None when that needs Python."""
    from .query import Selection
    from .templates import substitution_parts

    if len(note.fields) > 1 or (note.fields and role_emails):
        return None
    selection = Selection(service.storage, tdef.name)
    base = selection.base
    shared = {**record, **entries}

    def text(template: str) -> sa.ColumnElement | None:
        parts = substitution_parts(template)
        if parts is None:
            return None
        out: list[sa.ColumnElement] = [sa.literal("", sa.Text)]
        for part in parts:
            if isinstance(part, str):
                out.append(sa.literal(part, sa.Text))
                continue
            holder, key = part
            field = tdef.field(key)
            if holder != "record" or field is None:
                return None
            if key in in_sql:
                if field.type not in _SQL_TEXT_TYPES and key != "sys_id":
                    return None
                out.append(sa.func.coalesce(sa.cast(base.c[key], sa.Text), "None"))
            elif key in shared and isinstance(shared[key], (str, int, bool, type(None))):
                out.append(sa.literal(str(shared[key]), sa.Text))
            else:
                return None
        joined = out[0]
        for item in out[1:]:
            joined = joined.concat(item)  # ||
        return joined

    subject, body = text(note.subject), text(note.body)
    if subject is None or body is None:
        return None
    if note.fields:
        path = note.fields[0]
        field = tdef.field(path)
        recipients, _ = selection.column(f"{path}.email" if field is not None and field.type == "reference" else path)
        has_address = sa.and_(recipients.is_not(None), recipients != "")
    elif role_emails:
        recipients, has_address = sa.literal(",".join(sorted(set(role_emails)))), sa.true()
    else:
        return lambda low, high: None

    def write(low: str, high: str) -> None:
        _insert_emails(service, selection, sa.and_(base.c.sys_id.between(low, high), has_address), recipients,
                       sa.func.substr(subject, 1, 255), body, sa.literal(tdef.name))

    return write


def _insert_emails(service: RecordService, selection, where: sa.ColumnElement, recipients: sa.ColumnElement,
                   subject: sa.ColumnElement, body: sa.ColumnElement, target_table: sa.ColumnElement) -> None:
    """One sys_email (state ready) per record of `selection` matching `where`, in one INSERT ... SELECT."""
    from .records import now
    from .setwrite import new_sys_id_sql

    stamp, user = sa.literal(now(), sa.DateTime), sa.literal(service.actor.user_name)
    columns = {
        "sys_id": new_sys_id_sql(service.conn.dialect.name, selection.base), "sys_class_name": sa.literal("sys_email"),
        "sys_created_on": stamp, "sys_updated_on": stamp, "sys_created_by": user, "sys_updated_by": user,
        "sys_mod_count": sa.literal(0), "recipients": recipients, "subject": subject, "body": body,
        "state": sa.literal("ready"), "target_table": target_table, "instance": selection.base.c.sys_id,
    }
    select = sa.select(*columns.values()).select_from(selection.from_clause).where(where)
    service.conn.execute(sa.insert(service.storage.physical("sys_email")).from_select(list(columns), select))
    service.written.add("sys_email")


def action_allows(actor, action) -> bool:
    """Whether the actor's roles allow an action (no roles declared: anyone who may write)."""
    return not action.roles or any(actor.has_role(role) for role in action.roles)
