"""Notifications: the sys_email rows (state ready) a write leaves for the worker to deliver.

Each e-mail is filed under the record it is about (`target_table`, `instance`): the notified
record for its roles and recipient paths, each child for the `children` option. A batch of
new records is addressed with one query and written with one executemany; a set-based insert
(caseloom.setinsert) writes its e-mails with one INSERT ... SELECT when the texts are plain
substitutions (`email_sql`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from .. import stamps
from ..access import Actor, field_rule
from ..definitions.model import Definitions, NotificationDef, TableDef
from ..effects.walks import template_user, timestamp, walk_values
from ..properties import Properties
from ..query import Query, Selection, Term, select_rows
from ..query.conditions import All
from ..records import RecordError, RecordService, now
from ..setwrite import joined_set, new_sys_id_sql, sys_id_prefix
from ..templates import TemplateProblem, compile_template, substitution_parts
from .addresses import address_path, recipient_path_problem
from .conditions import Conditions, fields_read, unit_properties

EmailWriter = Callable[[str, str], None]  # writes the e-mails of the new records whose sys_ids are between two bounds


class Notifications:
    """Sends a table's notifications around its writes and on a `notify` effect."""

    def __init__(self, defs: Definitions, conditions: Conditions):
        self.defs, self.conditions = defs, conditions
        self._for_event: dict[tuple[str, str], tuple[NotificationDef, ...]] = {}

    def for_event(self, table: str, event: str) -> tuple[NotificationDef, ...]:
        """The notifications a write of `table` may send (those of the table and the tables it extends;
        asked per record: memoized)."""
        key = (table, event)
        if key not in self._for_event:
            tables = (table, *self.defs.ancestors(table))
            self._for_event[key] = tuple(n for n in self.defs.notifications.values()
                                         if event in n.on and n.table in tables)
        return self._for_event[key]

    def after(self, service: RecordService, tdef: TableDef, event: str, record: dict, previous: dict | None,
              journal: dict[str, str], props: Properties) -> None:
        """After one write: each notification whose condition holds."""
        with_journal = {**record, **journal}
        for note in self.for_event(tdef.name, event):
            if self.conditions.holds(service, note.condition, tdef, with_journal, previous, props):
                self.send(service, note, tdef, record, journal)

    def after_batch(self, service: RecordService, tdef: TableDef, records: list[dict], entries_of: list[dict],
                    props: Properties) -> None:
        """After a batch insert: per notification, one query for the addresses of all the records whose
        condition holds and one executemany of their e-mails."""
        for note in self.for_event(tdef.name, "insert"):
            matching = [(r, j) for r, j in zip(records, entries_of, strict=True)
                        if self.conditions.holds(service, note.condition, tdef, {**r, **j}, None, props)]
            if matching:
                self._send_many(service, note, tdef, matching)

    def notifier(self, service: RecordService) -> Callable[[str, TableDef, dict], None]:
        """The `notify` effect's way to send a declared notification by name."""
        def notify(name: str, tdef: TableDef, record: dict) -> None:
            self.send(service, self.defs.notifications[name], tdef, record, {})

        return notify

    @contextmanager
    def batched(self, service: RecordService) -> Iterator[Callable[[str, TableDef, dict], None]]:
        """A `notify` for many records at once (the SLA clock's escalations): it collects, and when the
        block ends each notification's e-mails are written for all its records together (one query
        for their addresses, one executemany)."""
        pending: dict[tuple[str, str], list[dict]] = defaultdict(list)

        def notify(name: str, tdef: TableDef, record: dict) -> None:
            pending[(name, tdef.name)].append(record)

        yield notify
        for (name, table), records in pending.items():
            note, tdef = self.defs.notifications[name], self.defs.tables[table]
            if note.children is not None:
                for record in records:
                    self.send(service, note, tdef, record, {})
            else:
                self._send_many(service, note, tdef, [(record, {}) for record in records])

    def send(self, service: RecordService, note: NotificationDef, tdef: TableDef, record: dict,
             journal: dict[str, str]) -> None:
        """Write the notification's sys_email rows (state ready) for the worker to deliver."""
        if note.children is not None:  # to the children's people, each with the access of no role at least
            subject, body = rendered(service, note, tdef, [(record, journal)],
                                     [frozenset(restricted_paths(service, note, tdef))],
                                     {"child": _child_marks(service, note, tdef)}, cut=False)[0]
            _send_to_children(service, note, tdef, record, subject, body)
        self._send_many(service, note, tdef, [(record, journal)])

    def _send_many(self, service: RecordService, note: NotificationDef, tdef: TableDef,
                   matching: list[tuple[dict, dict]]) -> None:
        """One e-mail per record with at least one address (its roles' users and its recipient paths);
        when its texts read a limited field, one per audience (the recipients who may read the same)."""
        role_emails = set(role_addresses(service, note.roles))
        addresses = _path_addresses(service, tdef, [r["sys_id"] for r, _ in matching], note)
        restricted = restricted_paths(service, note, tdef)
        hidden_of = _hidden_by_address(service, tdef, restricted, role_emails.union(*addresses.values())) \
            if restricted else {}
        addressed, recipients_of, hidden = [], [], []
        for record, journal in matching:
            audiences: dict[frozenset[str], list[str]] = defaultdict(list)
            for address in sorted(role_emails | set(addresses.get(record["sys_id"], ()))):
                audiences[hidden_of.get(address, frozenset())].append(address)
            for paths, recipients in audiences.items():
                addressed.append((record, journal))
                recipients_of.append(",".join(recipients))
                hidden.append(paths)
        if not addressed:
            return
        texts = rendered(service, note, tdef, addressed, hidden)
        service._system_insert("sys_email", [
            {"recipients": recipients, "subject": subject, "body": body, "state": "ready", "error": None,
             "target_table": tdef.name, "instance": record["sys_id"], "notification": note.name}
            for (record, _), recipients, (subject, body) in zip(addressed, recipients_of, texts, strict=True)])

    def set_insert_emails(self, service: RecordService, tdef: TableDef, record: dict, entries: dict,
                          in_sql: set[str]) -> list[EmailWriter] | str:
        """The e-mail writers of a set-based insert of records sharing `record` and `entries`, whose
        `in_sql` fields the database computes: one per notification whose condition holds; or why
        one of them needs the rows one by one (a condition reading an `in_sql` or unknown field, or
        an e-mail `email_sql` cannot write)."""
        props = unit_properties(service)
        with_journal = {**record, **entries}
        writers = []
        for note in self.for_event(tdef.name, "insert"):
            reads = fields_read(note.condition)  # the number and sys fields are not known yet: row by row
            if reads & in_sql or reads - set(with_journal):
                return (f"notification {note.name!r}: its condition reads "
                        f"{', '.join(sorted(reads & in_sql or reads - set(with_journal)))}, which differ by row")
            if not self.conditions.holds(service, note.condition, tdef, with_journal, None, props):
                continue
            writer = email_sql(service, note, tdef, record, entries, in_sql, role_addresses(service, note.roles))
            if writer is None:
                return (f"notification {note.name!r}: its recipients or texts need each record in Python "
                        f"(texts some recipients may not read, or a template that is not plain substitution)")
            writers.append(writer)
        return writers


def role_addresses(service: RecordService, roles: tuple[str, ...]) -> list[str]:
    """The addresses of the active users who have one of `roles` (or a role containing one)."""
    if not roles:
        return []
    users = service.storage.physical("sys_user")
    has_role = service.storage.physical("sys_user_has_role")
    granted = [r for r in service.defs.roles if set(roles) & service.defs.role_closure({r})]
    rows = service.conn.execute(
        sa.select(users.c.email).distinct().join(has_role, has_role.c.user == users.c.sys_id)
        .where(has_role.c.role.in_(granted), users.c.email.is_not(None), users.c.email != "",
               users.c.active.is_not(False)))
    return [r.email for r in rows]


def _path_addresses(service: RecordService, tdef: TableDef, ids: list[str], note: NotificationDef
                    ) -> dict[str, list[str]]:
    """sys_id -> the addresses the notification's recipient paths reach from that record, dot-walks
    joined in SQL, 500 records a query."""
    if not note.fields:
        return {}
    paths = [address_path(service.defs.tables, tdef, path) for path in note.fields]
    found: dict[str, list[str]] = {}
    for start in range(0, len(ids), 500):
        stmt, _ = select_rows(service.storage, tdef.name, Query(Term("sys_id", "in", ids[start:start + 500])),
                              ["sys_id", *paths])
        for row in service.conn.execute(stmt).mappings():
            found[row["sys_id"]] = [row[p] for p in paths if row[p]]
    return found


NOBODY = Actor("", frozenset())  # whom an address no user has is shown a record as


def restricted_paths(service: RecordService, note: NotificationDef, tdef: TableDef) -> tuple[str, ...]:
    """The record paths the notification's texts read through a field whose field rules limit who
    may read it (a case's work notes, `parent.work_notes`): shown only to recipients who may."""
    key = ("notifications.restricted", note.name, tdef.name)
    found = service.storage.cache.get(key)
    if found is None:
        paths = []
        for text in (note.subject, note.body):
            try:
                template = compile_template(text)
            except TemplateProblem:
                continue
            paths += [path for root, path, _ in template.paths
                      if root == "record" and not path_readable(service.defs, NOBODY, tdef, path)]
        found = service.storage.cache[key] = tuple(dict.fromkeys(paths))
    return found


def path_readable(defs: Definitions, actor: Actor, tdef: TableDef, path: str) -> bool:
    """Whether the field rules let `actor` read each field along a record path, on every record (a
    rule with a condition counts as no: an e-mail is not held back to test it on the record)."""
    table = tdef
    for part in path.split("."):
        field = table.field(part)
        if field is None:
            return True
        if field_rule(defs, actor, table.name, part, "read") is not True:
            return False
        if field.type != "reference" or field.reference not in defs.tables:
            return True
        table = defs.tables[field.reference]
    return True


def _hidden_by_address(service: RecordService, tdef: TableDef, restricted: tuple[str, ...],
                       addresses: set[str]) -> dict[str, frozenset[str]]:
    """address -> the restricted paths its reader may not read: the user's roles who has the address
    (every one of them, when several share it), no role for an address no active user has."""
    users, has_role = service.storage.physical("sys_user"), service.storage.physical("sys_user_has_role")
    ordered, owners = sorted(addresses), defaultdict(list)
    for start in range(0, len(ordered), 500):
        for address, sys_id, user_name in service.conn.execute(
                sa.select(users.c.email, users.c.sys_id, users.c.user_name).where(
                    users.c.email.in_(ordered[start:start + 500]), users.c.active.is_not(False))):
            owners[address].append((sys_id, user_name))
    ids = [sys_id for found in owners.values() for sys_id, _ in found]
    roles: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        for user, role in service.conn.execute(sa.select(has_role.c.user, has_role.c.role)
                                               .where(has_role.c.user.in_(ids[start:start + 500]))):
            roles[user].append(role)
    hidden = {}
    for address in addresses:
        readers = [Actor(name, service.defs.role_closure(roles[sys_id]), sys_id) for sys_id, name in owners[address]]
        hidden[address] = frozenset(path for path in restricted
                                    if not all(path_readable(service.defs, reader, tdef, path)
                                               for reader in readers or [NOBODY]))
    return hidden


def rendered(service: RecordService, note: NotificationDef, tdef: TableDef, items: list[tuple[dict, dict]],
             hidden: list[frozenset[str]] | None = None, extra: dict | None = None,
             cut: bool = True) -> list[tuple[str, str]]:
    """The subject (at most 255 characters, unless not `cut`) and body of the notification for each
    (record, journal entries), the `hidden` paths of each left empty: the dot-walks the texts read are
    read for all the records at once, the acting user and the time once. `extra`: more names."""
    subject, body = compile_template(note.subject), compile_template(note.body)
    walks = tuple(dict.fromkeys(subject.walks + body.walks))
    walked = walk_values(service, tdef, [record for record, _ in items], walks) if walks else [{}] * len(items)
    names = subject.names | body.names
    context = {"table": tdef.label, "notification": note.name, **(extra or {})}
    if "child" in names and "child" not in context:  # the e-mails to its roles and fields: no child, empty
        context["child"] = {path: "" for root, path, _ in (*subject.paths, *body.paths) if root == "child"}
    if "user" in names:
        context["user"] = template_user(service)
    if "now" in names:
        context["now"] = timestamp()
    texts = []
    for (record, journal), values, paths in zip(items, walked, hidden or [frozenset()] * len(items), strict=True):
        context["record"] = {**record, **journal, **values, **dict.fromkeys(paths, "")}
        try:
            shown = subject.render(context)
            texts.append((shown[:255] if cut else shown, body.render(context)))
        except TemplateProblem as exc:
            raise RecordError(None, f"notification {note.name}: {exc}") from None
    return texts


CHILD_MARK = re.compile("\x00child:([a-z0-9_.]+)\x00")


def _child_marks(service: RecordService, note: NotificationDef, tdef: TableDef) -> dict[str, str]:
    """`child.PATH` as a mark in the rendered text, filled in for each child in SQL (_filled); a path
    a recipient with no role may not read stays empty, as the record's own limited fields do."""
    marks = {}
    for text in (note.subject, note.body):
        for root, path, _ in compile_template(text).paths:
            if root == "child":
                readable = path_readable(service.defs, NOBODY, tdef, path)
                marks[path] = f"\x00child:{path}\x00" if readable else ""
    return marks


def _filled(text: str, selection: Selection) -> sa.ColumnElement:
    """A rendered text whose child marks become each child's values: a concatenation in SQL."""
    joined: sa.ColumnElement = sa.literal("", sa.Text)
    at = 0
    for found in CHILD_MARK.finditer(text):
        if found.start() > at:
            joined = joined.concat(sa.literal(text[at:found.start()], sa.Text))
        column, _ = selection.column(found.group(1))
        joined = joined.concat(sa.func.coalesce(sa.cast(column, sa.Text), ""))
        at = found.end()
    return joined.concat(sa.literal(text[at:], sa.Text)) if at < len(text) else joined


def _send_to_children(service: RecordService, note: NotificationDef, tdef: TableDef, record: dict,
                      subject: str, body: str) -> None:
    """One sys_email per child record with an address, filed under the child, in one INSERT ... SELECT;
    `child.PATH` in the texts is each child's own value."""
    reference, field, only = note.children
    selection = Selection(service.storage, tdef.name)
    email, _ = selection.column(address_path(service.defs.tables, tdef, field))
    parts = [Term(reference, "eq", record["sys_id"])] + ([only] if only is not None else [])
    where = sa.and_(selection.condition(All(tuple(parts))), email.is_not(None))
    _insert_emails(service, selection, where, email, sa.func.substr(_filled(subject, selection), 1, 255),
                   _filled(body, selection), selection.base.c.sys_class_name, note.name)


# Field types whose stored value renders in SQL as Python's str() renders it in a template.
_SQL_TEXT_TYPES = {"string", "text", "email", "url", "reference", "choice", "integer"}


def email_sql(service: RecordService, note: NotificationDef, tdef: TableDef, record: dict, entries: dict,
              in_sql: set[str], role_emails: list[str]) -> EmailWriter | None:
    """A function writing the notification's sys_email rows for the new records (sys_ids between
    two bounds), as Notifications._send_many would: one per record with an address, the texts
    rendered in SQL from the shared values and the `in_sql` fields. None when that needs Python
    (texts reading a field some recipients may not read, a recipient path that does not end on an
    address, a template that is not plain substitution)."""
    writer = email_writer(service, note, tdef, {**record, **entries}, in_sql, role_emails)
    if writer is None:
        return None
    return lambda low, high: writer(lambda base: base.c.sys_id.between(low, high))


def email_writer(service: RecordService, note: NotificationDef, tdef: TableDef, shared: dict, in_sql: set[str],
                 role_emails: list[str]) -> Callable[[Callable[[sa.FromClause], sa.ColumnElement]], None] | None:
    """A function writing the notification's sys_email rows, in one INSERT ... SELECT, for the records
    a condition over the table selects (`where(base)`); None when that needs Python (see email_sql)."""
    if restricted_paths(service, note, tdef):
        return None  # (a limited field: rendered per audience, in Python)
    if any(recipient_path_problem(service.defs.tables, tdef, path) is not None for path in note.fields):
        return None
    selection = Selection(service.storage, tdef.name)
    subject, body = (_sql_text(template, tdef, selection, shared, in_sql) for template in (note.subject, note.body))
    if subject is None or body is None:
        return None
    if len(note.fields) == 1 and not role_emails:
        recipients, _ = selection.column(address_path(service.defs.tables, tdef, note.fields[0]))
        has_address = sa.and_(recipients.is_not(None), recipients != "")
    elif note.fields:  # several addresses: each record's own, with the roles', sorted and each once (_send_many)
        addresses = [selection.column(address_path(service.defs.tables, tdef, path))[0] for path in note.fields]
        recipients = joined_set(service.conn.dialect.name,
                                [*addresses, *(sa.literal(a, sa.Text) for a in sorted(set(role_emails)))])
        has_address = recipients.is_not(None)
    elif role_emails:
        recipients, has_address = sa.literal(",".join(sorted(set(role_emails)))), sa.true()
    else:
        return lambda where: None

    def write(where: Callable[[sa.FromClause], sa.ColumnElement]) -> None:
        _insert_emails(service, selection, sa.and_(where(selection.base), has_address),
                       recipients, sa.func.substr(subject, 1, 255), body, sa.literal(tdef.name), note.name)

    return write


def _sql_text(template: str, tdef: TableDef, selection: Selection, shared: dict,
              in_sql: set[str]) -> sa.ColumnElement | None:
    """A plain-substitution template as an SQL expression over the new rows; None for any other."""
    parts = substitution_parts(template)
    if parts is None:
        return None
    joined: sa.ColumnElement = sa.literal("", sa.Text)
    for part in parts:
        item = sa.literal(part, sa.Text) if isinstance(part, str) else _sql_value(part, tdef, selection, shared, in_sql)
        if item is None:
            return None
        joined = joined.concat(item)  # ||
    return joined


def _sql_value(part: tuple[str, str], tdef: TableDef, selection: Selection, shared: dict,
               in_sql: set[str]) -> sa.ColumnElement | None:
    """`{{ record.key }}` in SQL: the column of a field the database computes, or the shared value."""
    holder, key = part
    field = tdef.field(key)
    if holder != "record" or field is None:
        return None
    if key in in_sql:
        if field.type not in _SQL_TEXT_TYPES and key != "sys_id":
            return None
        return sa.func.coalesce(sa.cast(selection.base.c[key], sa.Text), "")  # empty: nothing, as rendered
    if key in shared and isinstance(shared[key], (str, int, bool, type(None))):
        return sa.literal("" if shared[key] is None else str(shared[key]), sa.Text)
    return None


def _insert_emails(service: RecordService, selection: Selection, where: sa.ColumnElement,
                   recipients: sa.ColumnElement, subject: sa.ColumnElement, body: sa.ColumnElement,
                   target_table: sa.ColumnElement, notification: str) -> None:
    """One sys_email (state ready) of `notification` per record of `selection` matching `where`,
    filed under that record (`instance`), in one INSERT ... SELECT."""
    prefix = sys_id_prefix()
    new_id = new_sys_id_sql(service.conn.dialect.name, selection.base, prefix)
    columns = {
        **stamps.new_rows_sql("sys_email", service.actor.user_name, now(), new_id),
        "recipients": recipients, "subject": subject, "body": body, "state": sa.literal("ready"),
        "target_table": target_table, "instance": selection.base.c.sys_id,
        "notification": sa.literal(notification),
    }
    select = sa.select(*columns.values()).select_from(selection.from_clause).where(where)
    inserted = service.conn.execute(sa.insert(service.storage.physical("sys_email")).from_select(
        list(columns), select).execution_options(preserve_rowcount=True)).rowcount
    service.written.add("sys_email")
    service.note_made("sys_email", (prefix + "0" * 12, prefix + "f" * 12, inserted))
