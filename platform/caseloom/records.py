"""The one write path: every insert, update and delete of a record goes through here.

RecordService applies defaults, type and choice validation, mandatory fields, reference
checks, numbering, sys fields, audit rows and journal entries, inside a savepoint so a
failed write changes nothing. Inserts are set-based: a batch of rows is validated in
Python and written with one executemany per table, so the same path serves one form
save and a hundred thousand generated rows.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import stamps
from .access import SYSTEM, AccessDenied, Actor, Reader, allowed, field_rule, row_rule
from .bulk import insert_rows, update_rows
from .database import dict_rows, one_of
from .definitions.model import SYS_FIELDS, FieldDef, TableDef
from .fieldtypes import SYS_ID, FieldValueError
from .query import Query, QueryError, Selection, count_rows, select_rows
from .query.conditions import Term
from .query.nodes import All
from .query.total import Total, total_rows
from .storage import Storage

BATCH = 2000
ARRAY_IDS = 10_000  # sys_ids per array parameter of an existence check (PostgreSQL)
ONE_STATEMENTS = 64  # column sets per table whose one-record read is kept (`one`; sysparm_fields varies by client)
FEW_MATCHES = 1000  # a counted condition matching at most this many: its page is read from the matches (`query`)


class RecordError(Exception):
    """Bad input for one field (HTTP 400); `field` names it."""

    def __init__(self, field: str | None, message: str, row: int | None = None):
        self.field, self.message, self.row = field, message, row
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")


class NotFound(Exception):
    """No such table or record (HTTP 404)."""


class Conflict(Exception):
    """The record is not in a state that allows this (HTTP 409); `field`, when one field's value is
    what the state refuses (a lifecycle's field moved where no transition goes)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def now() -> dt.datetime:
    """UTC, naive. Microseconds are kept so journal and audit entries of one second keep their order;
    the API renders whole seconds, as ServiceNow does."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def new_sys_id() -> str:
    """32 hex digits, as ServiceNow's sys_ids: the time in milliseconds, then 80 random bits (from
    `random`, which Python reseeds in every forked process; a sys_id is a name, not a secret). New
    records sort after older ones, so a bulk insert appends to the primary key's index instead of
    touching a random page of it per row (what keeps a hundred thousand inserts cheap)."""
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


# Table validators: platform features that check a record before it is written,
# e.g. system properties checking a value against the property's type. A validator may also
# normalise a value it is given (a property's `yes` kept as `true`): on insert the record, on
# update the values of the fields being written.
Validator = Callable[["RecordService", TableDef, dict, dict | None], None]
VALIDATORS: dict[str, list[Validator]] = defaultdict(list)
# Deletion guards: platform features that may refuse the deletion of a record (the last administrator).
DeletionGuard = Callable[["RecordService", TableDef, dict], None]
DELETE_GUARDS: dict[str, list[DeletionGuard]] = defaultdict(list)


# Validators of a kind of table the definitions declare (a member list's table), not of one name:
# (whether a table is of the kind, the validator).
KIND_VALIDATORS: list[tuple[Callable[[Any, str], bool], Validator]] = []


def validator(table: str) -> Callable[[Validator], Validator]:
    def register(fn: Validator) -> Validator:
        VALIDATORS[table].append(fn)
        return fn

    return register


def kind_validator(applies: Callable[[Any, str], bool]) -> Callable[[Validator], Validator]:
    """A validator of every table `applies(defs, table)` says is of its kind."""
    def register(fn: Validator) -> Validator:
        KIND_VALIDATORS.append((applies, fn))
        return fn

    return register


def validators_for(storage: Storage, table: str) -> tuple[Validator, ...]:
    """The validators a table's records go through, worked out once per definitions set."""
    return storage.cached(("validators", table), lambda: (
        *VALIDATORS.get(table, ()), *(fn for applies, fn in KIND_VALIDATORS if applies(storage.defs, table))))


def deletion_guard(table: str) -> Callable[[DeletionGuard], DeletionGuard]:
    def register(fn: DeletionGuard) -> DeletionGuard:
        DELETE_GUARDS[table].append(fn)
        return fn

    return register


@dataclass
class Change:
    """What one update did: the fields that changed (old, new) and the journal entries added."""

    fields: dict[str, tuple[Any, Any]]
    journal: dict[str, str]


class RecordService:
    """Reads and writes records of any table for one actor on one connection.

    The caller owns the transaction; every method runs in a savepoint of its own.
    """

    def __init__(self, storage: Storage, conn: sa.Connection, actor: Actor = SYSTEM,
                 check_access: bool = True, automation: Any = None, set_based: bool = True):
        self.storage = storage
        # False: bulk inserts take the row-by-row path even where one INSERT ... SELECT could do them (to
        # compare the two, and to measure what set-based work saves)
        self.set_based = set_based
        self.row_by_row: dict[str, str] = {}  # table -> why its last bulk insert could not run set-based
        self.scripts_dir: str | None = None  # the scripts folder (the runtime's CASELOOM_SCRIPTS); None: the environment's
        self.defs = storage.defs
        self.conn = conn
        self.actor = actor
        self.check_access = check_access
        self.automation = automation  # lifecycles, rules, notifications (caseloom.automation)
        # False: values come from a client, who may not write read-only fields and may change a lifecycle
        # field only as one of its transitions allows; True inside `by_definitions` (actions, effects, rules)
        self.trusted = False
        self.script_meter: Any = None  # a caseloom.scriptbudget.ScriptMeter: the actor's script CPU budget
        self.lookups: dict = {}  # dot-walks of rule conditions in this unit of work; emptied by any update
        self.memo: dict = {}  # records read as definitions in this unit of work (SLAs); kept across updates
        self.transaction = new_sys_id()  # groups the audit rows of this unit of work
        self.written: set[str] = set()  # tables this unit of work wrote: follow-ups run after commit (caseloom.jobs)
        # the rows this unit of work inserted: table -> sys_id ranges (low, high) and how many (`made`)
        self.made: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        self._deferred: dict[str, dict[str, str]] | None = None  # table -> {sys_id: field}
        self._reader: Reader | None = None
        # True while `insert` writes one record (a form's, the API's, an e-mail's): what a similar list's
        # suggestion is looked for after (caseloom.similar), never a bulk insert's rows
        self.one_at_a_time = False
        self.follow_ups: list[tuple[str, tuple]] = []  # (task, its arguments): enqueued once the unit commits
        # what a write wants its user told without refusing it (an SLA definition's known pitfall): a form
        # shows each as a warning once it has saved
        self.notices: list[str] = []

    @contextmanager
    def by_definitions(self) -> Iterator[None]:
        """Writes declared in the definitions (an action and its effects, rules, demo data, declared
        lists): they may set read-only fields, and an action is itself the transition of the lifecycle
        field it moves. Everything else a client sends is held to both (see `_refuse_read_only` and
        the lifecycle check in caseloom.automation)."""
        outer, self.trusted = self.trusted, True
        try:
            yield
        finally:
            self.trusted = outer

    def _hooks(self, table: str, event: str):
        automation = self.automation
        return automation if automation is not None and automation.has_hooks(table, event) else None

    @contextmanager
    def unchecked(self) -> Iterator[None]:
        """Platform work for the actor that the actor's table access does not govern (an attachment's
        own record, whose access follows the record it belongs to): still as the actor, audited."""
        checked, self.check_access = self.check_access, False
        try:
            yield
        finally:
            self.check_access = checked

    @contextmanager
    def deferred_references(self) -> Iterator[None]:
        """Check references when the block ends instead of per batch, like a DEFERRABLE
        constraint, so rows that reference each other (accounts and their primary contacts)
        can be inserted in one pass. A dangling reference still fails the whole block."""
        outer, self._deferred = self._deferred, defaultdict(dict)
        try:
            yield
            pending, self._deferred = self._deferred, outer
            for table, wanted in pending.items():
                missing = set(wanted) - self.existing_ids(table, set(wanted))
                if missing:
                    bad = sorted(missing)[0]
                    raise RecordError(wanted[bad], f"no {table} record has sys_id {bad}")
        finally:
            self._deferred = outer

    # -- access -------------------------------------------------------------------------

    def table(self, name: str, operation: str | None = None) -> TableDef:
        tdef = self.defs.tables.get(name)
        if tdef is None:
            raise NotFound(f"table {name!r} does not exist")
        if operation and self.check_access and not allowed(self.defs, self.actor, name, operation):
            raise AccessDenied(f"user {self.actor.user_name!r} may not {operation} records of {name!r}")
        return tdef

    def can(self, table: str, operation: str) -> bool:
        return not self.check_access or allowed(self.defs, self.actor, table, operation)

    @property
    def readable(self) -> Reader | None:
        """This actor's read access, which every query of theirs passes to the compiler: the tables
        and fields they may read, and the row conditions put into the SQL (None: no checks)."""
        if not self.check_access or self.actor.is_admin:
            return None
        reader = self._reader
        if reader is None or reader.actor is not self.actor or reader.defs is not self.defs:
            reader = self._reader = Reader(self.defs, self.actor)
        return reader

    def can_read_path(self, table: str, path: str, *, everywhere: bool = False) -> bool:
        """Whether each table a dot-walked path such as `account.primary_contact.email` passes through,
        and each field on the way, may be read; `everywhere`: on every record, with no rule's condition
        on the way (a statement built without the actor's access then reads the path as they would)."""
        readable = self.readable
        tdef = self.defs.tables[table]
        parts = path.split(".")

        def passes(verdict: object) -> bool:
            return verdict is True if everywhere else verdict is not False

        for i, part in enumerate(parts):
            field = tdef.field(part)
            if field is None:
                return False
            if readable is not None and not passes(readable.field_rule(tdef.name, part)):
                return False
            if i == len(parts) - 1:
                return True
            if field.type != "reference":
                return False
            tdef = self.defs.tables[field.reference]
            if readable is not None and not passes(readable.rows(tdef.name)):
                return False
        return True

    def can_read_field(self, table: str, field: str, record: dict | None = None) -> bool:
        """Whether the actor may read this field (its field rules): of `record` (a rule's condition
        tested on it, in SQL), else of some records of the table at least."""
        readable = self.readable
        if readable is None:
            return True
        return self._on_record(table, readable.field_rule(table, field), record)

    def can_write_field(self, table: str, field: str, operation: str = "write", record: dict | None = None) -> bool:
        """Whether the actor's field rules let them give this field a value (`create` or `write`): on
        `record` (a stored one: a rule's condition tested on it), else on some records at least."""
        if not self.check_access:
            return True
        return self._on_record(table, field_rule(self.defs, self.actor, table, field, operation), record)

    def _on_record(self, table: str, verdict: Any, record: dict | None) -> bool:
        if verdict is True or verdict is False or record is None or not record.get("sys_id"):
            return verdict is not False
        key = ("field rule", table, record["sys_id"], record.get("sys_mod_count"), id(verdict))
        if key not in self.memo:  # a form asks per field; fields share their rules
            self.memo[key] = (verdict, not self._outside(self.defs.tables[table], [record["sys_id"]], verdict))
        return self.memo[key][1]

    def check_rows(self, tdef: TableDef, ids: Sequence[str], operation: str) -> None:
        """Refuse the operation unless the actor's rule for it matches each of these records (a rule's
        condition tested in SQL, as lists apply it): NotFound for a record they may not even read,
        AccessDenied for one they may read but not change."""
        if not self.check_access or not ids:
            return
        verdict = row_rule(self.defs, self.actor, tdef.name, operation)
        if verdict is True:
            return
        refused = sorted(set(ids)) if verdict is False else self._outside(tdef, ids, verdict)
        if not refused:
            return
        read = row_rule(self.defs, self.actor, tdef.name, "read") if operation != "create" else True
        hidden = refused if read is False else (self._outside(tdef, refused, read) if read is not True else [])
        if hidden:
            raise NotFound(f"no {tdef.name} record with sys_id {hidden[0]}")
        raise AccessDenied(f"user {self.actor.user_name!r} may not {operation} {tdef.name} record {refused[0]} "
                           "(no access rule allows it for this record)")

    def _outside(self, tdef: TableDef, ids: Sequence[str], rule: Any) -> list[str]:
        """Which of `ids` a rule's condition does not match."""
        wanted = sorted(set(ids))
        inside: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            sel = Selection(self.storage, tdef.name)
            where = rule if rule is True else All((Term("sys_id", "in", chunk), rule))
            inside.update(self.conn.execute(sel.select(sel.base.c.sys_id, where=where)).scalars())
        return [i for i in wanted if i not in inside]

    def _refuse_unwritable(self, tdef: TableDef, names: Iterable[str], operation: str, row: int | None = None,
                           current: dict | None = None) -> list[tuple[str, Any]]:
        """A client's values for fields its field rules do not let it write (create: `create` rules,
        else `write` ones) are refused, naming the field (403). A rule with a condition is tested on
        the stored record (`current`) of a write; for a create, the (field, condition) pairs are
        returned, to be tested on the new record once written (`_check_created_fields`)."""
        if not self.check_access or self.actor.is_admin:
            return []
        later = []
        for name in names:
            field = tdef.field(name)
            if field is None or field.system:
                continue
            verdict = field_rule(self.defs, self.actor, tdef.name, name, operation)
            if verdict is not True and verdict is not False and current is None:
                later.append((name, verdict))
                continue
            if verdict is False or (verdict is not True and self._outside(tdef, [current["sys_id"]], verdict)):
                where = f"row {row}: " if row is not None else ""
                also = "" if verdict is False else " on this record (no field rule's condition matches it)"
                raise AccessDenied(f"{where}{name}: user {self.actor.user_name!r} may not {operation} field "
                                   f"{tdef.name}.{name}{also}")
        return later

    # -- reading ------------------------------------------------------------------------

    def get(self, table: str, sys_id: str, *, for_update: bool = False) -> dict | None:
        """A record the actor may read (its table's read rule matches it), or None. Whole: what the
        actor may see of it is for the page or the API to choose (`can_read_field`)."""
        tdef = self.table(table, "read")
        record = self._load(tdef, sys_id, for_update)
        readable = self.readable
        if record is None or readable is None:
            return record
        verdict = readable.rows(tdef.name)
        return record if verdict is True or not self._outside(tdef, [sys_id], verdict) else None

    def _load(self, tdef: TableDef, sys_id: str, for_update: bool = False) -> dict | None:
        # built once per definitions set: every update and delete loads its record
        stmt = self.storage.cached(("load", tdef.name), lambda: record_by(self.storage, tdef.name, "sys_id"))
        if for_update and self.conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update(of=None)
        row = self.conn.execute(stmt, {"key": sys_id}).mappings().first()  # the built statement, not a copy
        return dict(row) if row else None

    def query(self, table: str, query: Query, columns: list[str] | None = None,
              limit: int | None = None, offset: int = 0, matching: int | None = None) -> list[dict]:
        """The records of `table` matching `query` that the actor may read, `columns` (paths) of each.
        `matching`: how many match, when the caller has just counted them (a list's total). On
        PostgreSQL, when that is FEW_MATCHES or fewer, the page is read from the matches, found
        first (query/compile.py, `_page_from_matches`): the planner's guess of how many match
        cannot then make it walk the whole table in the list's order."""
        self.table(table, "read")
        few = matching is not None and matching <= FEW_MATCHES and self.conn.dialect.name == "postgresql"
        stmt, _ = select_rows(self.storage, table, query, columns, limit, offset, self.readable, from_matches=few)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def one(self, table: str, sys_id: str, columns: list[str]) -> dict | None:
        """The record `sys_id` of `table` with `columns` (paths), as `query` reads it; None when it does
        not exist or the actor may not read it. When the actor's access puts no condition on the table
        or on these paths (admin, or rules without conditions), the statement is built once per table
        and column set and kept (the first ONE_STATEMENTS sets of a table): building it and its cache
        key is a fifth of the Python time of a one-record API read."""
        self.table(table, "read")
        readable = self.readable
        if readable is not None and not (readable.rows(table) is True
                                         and all(self.can_read_path(table, c, everywhere=True) for c in columns)):
            rows = self.query(table, Query(Term("sys_id", "eq", sys_id)), columns, limit=1)
            return rows[0] if rows else None
        kept: dict[tuple[str, ...], sa.Select] = self.storage.cached(("one", table), dict)
        stmt = kept.get(key := tuple(columns))
        if stmt is None:
            stmt, sel = select_rows(self.storage, table, Query(), columns)
            stmt = stmt.where(sel.base.c.sys_id == sa.bindparam("key")).order_by(None)
            if len(kept) < ONE_STATEMENTS:
                kept[key] = stmt
        row = self.conn.execute(stmt, {"key": sys_id}).mappings().first()
        return dict(row) if row else None

    def count(self, table: str, query: Query) -> int:
        self.table(table, "read")
        return self.conn.execute(count_rows(self.storage, table, query, self.readable)).scalar_one()

    def total(self, table: str, query: Query, exact_up_to: int) -> Total:
        """A list's total: `count` up to `exact_up_to` records, above it an estimate where the database
        gives one (query/total.py), through the same read access."""
        self.table(table, "read")
        return total_rows(self.conn, self.storage, table, query, self.readable, exact_up_to)

    def journal(self, table: str, sys_id: str, element: str | None = None) -> list[dict]:
        """Journal entries of a record, newest first: those of this key written for this table, a table
        it extends or one extending it (the same record, read through a parent), never another's."""
        self.table(table, "read")
        jt = self.storage.physical("sys_journal_field")
        stmt = sa.select(jt).where(jt.c.element_id == sys_id, jt.c.name.in_(self.defs.lineage(table)))
        if element:
            stmt = stmt.where(jt.c.element == element)
        stmt = stmt.order_by(jt.c.sys_created_on.desc(), jt.c.sys_id.desc())
        found = [dict(r) for r in self.conn.execute(stmt).mappings()]
        if self.readable is None:
            return found
        if self.get(table, sys_id) is None:  # a record the actor may not read has no journal for them
            return []
        return [e for e in found if self.can_read_field(e["name"] if e["name"] in self.defs.tables else table,
                                                        e["element"], {"sys_id": sys_id})]

    # -- inserting ----------------------------------------------------------------------

    def insert(self, table: str, values: dict) -> dict:
        """Insert one record; returns it as stored."""
        tdef = self.table(table, "create")
        outer, self.one_at_a_time = self.one_at_a_time, True
        try:
            with self.conn.begin_nested():
                record = self._insert_batch(tdef, [values])[0]
                self._check_created(tdef, [record["sys_id"]])
                return record
        finally:
            self.one_at_a_time = outer

    def insert_many(self, table: str, rows: Iterable[dict], batch: int = BATCH,
                    known_references: Collection[str] = ()) -> int:
        """Insert many records set-based (validated in Python, written by executemany in batches).
        All or nothing: the first bad row raises RecordError naming its row and field.
        `known_references`: reference fields whose values the caller has just read from the
        referenced table in this unit of work (a list's members), so they are not looked up again."""
        tdef = self.table(table, "create")
        total = 0
        outer, self.one_at_a_time = self.one_at_a_time, False
        try:
            with self.conn.begin_nested():
                for chunk in _chunks(rows, batch):
                    made = self._insert_batch(tdef, chunk, first_row=total + 1, known_references=known_references)
                    self._check_created(tdef, [r["sys_id"] for r in made])
                    total += len(chunk)
        finally:
            self.one_at_a_time = outer
        return total

    def _check_created(self, tdef: TableDef, ids: list[str]) -> None:
        """A create rule with a condition is tested on the new records as written (the savepoint
        around the insert undoes them when it refuses)."""
        if self.check_access and not self.trusted and row_rule(self.defs, self.actor, tdef.name, "create") is not True:
            self.check_rows(tdef, ids, "create")

    def insert_select(self, table: str, values: dict, select: sa.Select, fields: Sequence[str],
                      source: sa.FromClause | None = None, order_by: Any = None,
                      count: sa.Select | None = None) -> int | None:
        """Insert one record per row of `select` in one INSERT ... SELECT when nothing around the
        insert needs the rows one by one; None when the caller must use insert_many (see setinsert)."""
        from .setinsert import insert_select

        return insert_select(self, table, values, select, fields, source, order_by, count)

    def _insert_batch(self, tdef: TableDef, rows: list[dict], first_row: int | None = None,
                      known_references: Collection[str] = ()) -> list[dict]:
        stamp = now()
        plan = _insert_plan(self.storage, tdef)
        defaults = plan.defaults_at(stamp)
        records, journals, entries_of = [], [], []
        chosen: set[str] = set()  # sys_ids the caller gave
        hooks = self._hooks(tdef.name, "insert")
        declared = {} if hooks is None else plan.declared_at(stamp)
        verified = {} if hooks is None else self._check_given_references(
            tdef, [(v.get("sys_id"), v) for v in rows], first_row, known_references)
        parsed_values: dict = {}  # the rows of a batch share most values: each is parsed once
        field_checks: list[tuple[int, str, Any]] = []  # (row, field, its create rule's condition)
        for i, values in enumerate(rows):
            row_no = None if first_row is None else first_row + i
            parsed, entries = self._parse(tdef, values, row_no, allow_sys_id=True, memo=parsed_values)
            if not self.trusted:
                self._refuse_read_only(tdef, values, parsed, entries, None, row_no)
                field_checks.extend((i, *check) for check in self._refuse_unwritable(
                    tdef, [k for k, v in values.items() if v not in (None, "")], "create", row_no))
            if hooks is not None:  # rules see parsed values, never what a client typed, and the declared
                # defaults of the fields not given, as ServiceNow's new record has them (and a set-based insert)
                pending = {**declared, **parsed, **entries}
                hooks.before(self, tdef, "insert", pending, None)
                parsed, entries = self._parse(tdef, pending, row_no, allow_sys_id=True, memo=parsed_values)
            if parsed.get("sys_id"):
                chosen.add(parsed["sys_id"])
            record, entries = self._prepare_insert(tdef, defaults, parsed, entries, stamp, row_no)
            records.append(record)
            entries_of.append(entries)
            journals.extend((tdef.name, record["sys_id"], field, text) for field, text in entries.items())
        self._check_new_ids(tdef, records, first_row, chosen)
        self._check_references(tdef, records, first_row, (*known_references, *_still(verified, records)))
        self._assign_numbers(tdef, records)
        for record in records:
            for check in validators_for(self.storage, tdef.name):
                check(self, tdef, record, None)
        insert_rows(self.conn, self.storage.physical(tdef.name), records)
        if field_checks:
            self._check_created_fields(tdef, records, field_checks, first_row)
        self.written.add(tdef.name)
        self.note_made(tdef.name, [r["sys_id"] for r in records])
        self._write_journal(journals, stamp)
        if hooks is not None:
            hooks.after_insert_batch(self, tdef, records, entries_of)
        return records

    def _check_created_fields(self, tdef: TableDef, records: list[dict], checks: list[tuple[int, str, Any]],
                              first_row: int | None) -> None:
        """A field rule with a condition, on each field a new record was given: tested on the record as
        written, one query per condition (the caller's savepoint undoes the batch when one refuses)."""
        by_rule: dict[int, tuple[Any, list[tuple[int, str]]]] = {}
        for i, name, verdict in checks:
            by_rule.setdefault(id(verdict), (verdict, []))[1].append((i, name))
        for verdict, items in by_rule.values():
            outside = set(self._outside(tdef, [records[i]["sys_id"] for i, _ in items], verdict))
            for i, name in items:
                if records[i]["sys_id"] in outside:
                    where = f"row {first_row + i}: " if first_row is not None else ""
                    raise AccessDenied(f"{where}{name}: user {self.actor.user_name!r} may not create field "
                                       f"{tdef.name}.{name} on this record (no field rule's condition matches it)")

    def _prepare_insert(self, tdef: TableDef, defaults: dict, parsed: dict, entries: dict, stamp: dt.datetime,
                        row: int | None) -> tuple[dict, dict]:
        """A new record from parsed values: `defaults` (the plan's at `stamp`), mandatory fields, sys
        fields, secrets hashed."""
        plan = _insert_plan(self.storage, tdef)
        record = defaults | _prepared(self.storage, tdef, parsed)
        for name, default in plan.journal_defaults:
            entries.setdefault(name, default)
        _check_mandatory(self.storage, tdef, record, entries, row)
        sys_id = parsed.get("sys_id") or new_sys_id()
        record.update(stamps.new_row(tdef.name, self.actor.user_name, stamp, sys_id))
        return record, entries

    def _parse(self, tdef: TableDef, values: dict, row: int | None = None,
               allow_sys_id: bool = False, memo: dict | None = None) -> tuple[dict, dict]:
        """Parse input values by field type; unknown fields, bad values and unknown choices
        raise RecordError. Returns (stored values, journal entries). `memo` keeps what a batch
        has parsed already, so a value shared by its rows is parsed once."""
        parsed: dict[str, Any] = {}
        entries: dict[str, str] = {}
        fields = tdef.fields
        for name, raw in values.items():
            if memo is not None:
                key = (name, type(raw), raw)
                try:
                    is_entry, value = memo[key]
                except KeyError:
                    pass
                except TypeError:  # unhashable: parsed every time
                    key = None
                else:
                    (entries if is_entry else parsed)[name] = value
                    continue
            field = fields.get(name)
            if field is None:
                raise RecordError(name, f"unknown field of table {tdef.name!r}", row)
            if field.system:
                if name == "sys_id" and allow_sys_id and raw:
                    parsed["sys_id"] = self._parse_sys_id(tdef, raw, row)
                continue  # sys fields are the platform's to set; ServiceNow ignores them too
            self._parse_value(tdef, field, raw, row, parsed, entries)
            if memo is not None and key is not None and (name in parsed or name in entries):
                memo[key] = (name in entries, entries[name] if name in entries else parsed[name])
        return parsed, entries

    @staticmethod
    def _parse_value(tdef: TableDef, field: FieldDef, raw: Any, row: int | None, parsed: dict, entries: dict) -> None:
        """Parse one input value into `parsed` (or `entries`, for journal fields)."""
        name = field.name
        try:
            value = field.ftype.parse(field, raw)
        except FieldValueError as exc:
            raise RecordError(name, str(exc), row) from None
        if field.ftype.journal:
            if value is not None:  # an empty journal value adds no entry (and is no column)
                entries[name] = value
        elif value is None:
            parsed[name] = None
        elif field.choices and field.choice_label(value) is None:
            allowed_values = ", ".join(str(v) for v, _ in field.choices)
            raise RecordError(name, f"{raw!r} is not one of the choices ({allowed_values})", row)
        else:
            parsed[name] = value  # stored as is, but for secrets (see _prepared): parsing twice is harmless

    def _parse_sys_id(self, tdef: TableDef, raw: Any, row: int | None) -> str:
        field = tdef.field("sys_id")
        text = str(raw).strip().lower()
        if not SYS_ID.match(text):
            raise RecordError(field.name, f"expected 32 hex characters, got {raw!r}", row)
        return text

    def _refuse_read_only(self, tdef: TableDef, values: dict, parsed: dict, entries: dict, current: dict | None,
                          row: int | None = None) -> None:
        """A client may not write a read-only or system field: a value that would change one is a
        RecordError naming it. Sending a record back whole is no change (its values equal the stored
        ones); a new record may leave such a field at its default, or give one of its `create_values`
        (and choose its sys_id)."""
        for name in _guarded(self.storage, tdef).intersection(values):
            field = tdef.fields[name]
            if field.system and current is None and name == "sys_id":
                continue
            if name in entries:
                raise RecordError(name, "is read-only: it takes no new entries", row)
            if field.system:
                try:
                    value = field.parse(values[name])
                except FieldValueError:
                    raise RecordError(name, "is read-only: the platform sets it", row) from None
            else:
                value = parsed.get(name)
            if current is not None:
                if _differs(current.get(name), value):
                    raise RecordError(name, _read_only_reason(field), row)
            elif value is not None and _differs(_insert_plan(self.storage, tdef).defaults.get(name), value) \
                    and not any(not _differs(allowed, value) for allowed in field.create_values):
                allowed = ", ".join(map(str, field.create_values))
                raise RecordError(name, _read_only_reason(field) + (f"; a new record may take {allowed}" if allowed
                                                                    else ""), row)

    def _check_new_ids(self, tdef: TableDef, records: list[dict], first_row: int | None, chosen: set[str]) -> None:
        """Given sys_ids must be new in the whole database, not only in this table: history, journal and
        references find a record by its sys_id. One query per physical table and batch, not one per row.
        Generated ids are not looked up: each is the time in milliseconds and 80 random bits, so an even
        chance of two alike takes about 2^40 ids in one millisecond (and the primary key would still
        refuse the second); looking them up cost every insert a statement."""
        ids = [r["sys_id"] for r in records]
        taken: set[str] = set()
        if chosen:
            taken = self.existing_ids(tdef.root, chosen) | self._existing_elsewhere(tdef.root, chosen)
        if len(set(ids)) != len(ids):
            taken |= {i for i in ids if ids.count(i) > 1}
        if taken:
            bad = next(i for i, r in enumerate(records) if r["sys_id"] in taken)
            raise RecordError("sys_id", f"a record with sys_id {records[bad]['sys_id']} already exists",
                              None if first_row is None else first_row + bad)

    def _check_references(self, tdef: TableDef, records: list[dict], first_row: int | None = None,
                          known: Collection[str] = ()) -> None:
        """Every reference must point at an existing record of the referenced table (set-based), and
        never at the record itself (a case its own parent)."""
        for field in tdef.stored_fields:
            if field.type != "reference" or field.name in known:
                continue
            wanted = {r[field.name] for r in records if r.get(field.name)}
            if not wanted:
                continue
            own = next((i for i, r in enumerate(records) if r.get(field.name) == r.get("sys_id")), None)
            if own is not None:
                raise RecordError(field.name, "cannot refer to the record itself",
                                  None if first_row is None else first_row + own)
            if self._deferred is not None:
                self._deferred[field.reference].update(dict.fromkeys(wanted, field.name))
                continue
            found = self.existing_ids(field.reference, wanted)
            # a batch may reference its own rows (a parent inserted alongside its child)
            if field.reference in self.storage.classes(tdef.name) or tdef.name in self.storage.classes(field.reference):
                found |= {r["sys_id"] for r in records}
            missing = wanted - found
            if missing:
                bad = sorted(missing)[0]
                row = next(i for i, r in enumerate(records) if r.get(field.name) == bad)
                raise RecordError(field.name, f"no {field.reference} record has sys_id {bad}",
                                  None if first_row is None else first_row + row)

    def _check_given_references(self, tdef: TableDef, rows: list[tuple[str | None, dict]],
                                first_row: int | None = None, known: Collection[str] = ()) -> dict[str, set[str]]:
        """The references a client gave (with each row's sys_id), checked before any rule reads through
        them: a rule's dot-walk through a missing record reads empty, and would refuse the write for
        that (`must be a list of accounts`) rather than say the record is missing. Returns the sys_ids
        found, by field: what the rules leave as it was is not looked for again (_still)."""
        names = _references(self.storage, tdef).difference(known)
        given = [(sys_id, {k: v for k, v in values.items() if k in names and v}) for sys_id, values in rows]
        if not any(values for _, values in given):
            return {}
        checked, verified = [], defaultdict(set)
        for sys_id, values in given:
            row = {"sys_id": sys_id or ""}  # no sys_id yet: never its own reference
            for name, raw in values.items():
                try:
                    row[name] = tdef.fields[name].parse(raw)
                except FieldValueError:
                    continue  # not a sys_id: the write's own parse names it
                verified[name].add(row[name])
            checked.append(row)
        if self._deferred is not None:
            return {}  # checked when the deferral ends
        self._check_references(tdef, checked, first_row)
        return verified

    def _existing_elsewhere(self, root: str, ids: set[str]) -> set[str]:
        """Which of `ids` are records of any table but those under `root`: on PostgreSQL one UNION ALL
        of every other root table; elsewhere a query per table."""
        others = sorted({t.root for t in self.defs.tables.values()} - {root})
        if self.conn.dialect.name != "postgresql" or not others:
            found: set[str] = set()
            for other in others:
                found |= self.existing_ids(other, ids)
            return found
        stmt = self.storage.cached(("existing_elsewhere", root),
                                   lambda: sa.union_all(*(self._sys_ids_in(other) for other in others)))
        return self._found(stmt, ids, ARRAY_IDS)

    def existing_ids(self, table: str, ids: set[str]) -> set[str]:
        """Which of `ids` are records of `table` (and its children): on PostgreSQL a query per 10,000
        ids, given as one array parameter (one statement, compiled once); elsewhere per 500 ids."""
        array = self.conn.dialect.name == "postgresql"
        # built once per definitions set and database kind: every insert of a reference asks it
        stmt = self.storage.cached(("existing", table, array), lambda: self._sys_ids_in(table))
        return self._found(stmt, ids, ARRAY_IDS if array else 500)

    def _sys_ids_in(self, table: str) -> sa.Select:
        """SELECT sys_id of `table`'s records (its class only) among the parameter `ids` (`one_of`)."""
        physical = self.storage.physical(table)
        stmt = sa.select(physical.c.sys_id).where(one_of(self.conn.dialect, physical.c.sys_id, "ids"))
        class_filter = self.storage.class_filter(table)
        return stmt if class_filter is None else stmt.where(class_filter)

    def _found(self, stmt: sa.Executable, ids: set[str], per_query: int) -> set[str]:
        found: set[str] = set()
        ordered = sorted(ids)
        for start in range(0, len(ordered), per_query):
            found.update(self.conn.execute(stmt, {"ids": ordered[start:start + per_query]}).scalars())
        return found

    def _assign_numbers(self, tdef: TableDef, records: list[dict]) -> None:
        if tdef.number is None or tdef.field("number") is None:
            return
        need = [r for r in records if not r.get("number")]
        if not need:
            return
        first = reserve_numbers(self.conn, self.storage, tdef, len(need))
        spec = tdef.number
        for offset, record in enumerate(need):
            record["number"] = f"{spec.prefix}{first + offset:0{spec.digits}d}"

    def _write_journal(self, entries: list[tuple[str, str, str, str]], stamp: dt.datetime) -> None:
        """Journal entries (table, sys_id, field, text); the table is the record's own class."""
        if not entries:
            return
        rows = [{"name": table, "element_id": sys_id, "element": element, "value": text}
                for table, sys_id, element, text in entries]
        self._system_insert("sys_journal_field", rows, stamp)

    def _system_insert(self, table: str, rows: list[dict], stamp: dt.datetime | None = None) -> None:
        """Rows the platform writes about other writes (audit, journal): trusted, not re-validated."""
        system = stamps.new_row(table, self.actor.user_name, stamp or now())
        for row in rows:
            row["sys_id"] = new_sys_id()
            row.update(system)
        insert_rows(self.conn, self.storage.physical(table), rows)
        self.written.add(table)
        if table not in ("sys_audit", "sys_journal_field"):  # rows about rows: no one counts them
            self.note_made(table, [r["sys_id"] for r in rows])

    def note_made(self, table: str, ids: list[str] | tuple[str, str, int]) -> None:
        """Remember rows this unit inserted (sys_ids, or a (low, high, count) range of one INSERT ...
        SELECT): what an action would do is read from them (`caseloom.actions.footprint`). The ids a
        batch generates ascend, so its range holds exactly its rows."""
        if isinstance(ids, tuple):
            self.made[table].append(ids)
        elif ids:
            self.made[table].append((min(ids), max(ids), len(ids)))

    # -- updating -----------------------------------------------------------------------

    def update(self, table: str, sys_id: str, values: dict, *, expected_mod_count: int | None = None) -> dict:
        """Update one record; returns it as stored. Fields that do not change are not written.
        With `expected_mod_count`, a record changed by someone else since is refused (Conflict)."""
        tdef = self.table(table, "write")
        with self.conn.begin_nested():
            current = self._load(tdef, sys_id, for_update=True)
            if current is None:
                raise NotFound(f"no {table} record with sys_id {sys_id}")
            if not self.trusted:
                self.check_rows(tdef, [sys_id], "write")
            if expected_mod_count is not None and current["sys_mod_count"] != expected_mod_count:
                raise Conflict(f"this {tdef.label.lower()} was changed by {current['sys_updated_by']} at "
                               f"{current['sys_updated_on']:%Y-%m-%d %H:%M:%S} UTC after you opened it")
            changes = self._update_batch(tdef, [(current, values)])
            record_tdef = self.defs.tables.get(current.get("sys_class_name") or "", tdef)
            if record_tdef.keeps_suggestions and set(record_tdef.text_index) & set(changes[0].fields):
                # its words changed: it may raise a similar list's suggestion now (caseloom.similar, after commit)
                self.follow_ups.append(("similar_suggest", (record_tdef.name, sys_id)))
            return current | {k: new for k, (_, new) in changes[0].fields.items()}

    def update_many(self, table: str, updates: Iterable[tuple[str, dict]], batch: int = BATCH,
                    loaded: dict[str, dict] | None = None) -> int:
        """Update many records, each with its own values, set-based: rows are read with one query
        per batch and written with one executemany per set of changed fields. Returns how many
        records changed. `loaded`: records by sys_id, whole as `select_rows` reads them, read by the
        caller in this transaction and unchanged since (its locks): they are not read again."""
        tdef = self.table(table, "write")
        changed = 0
        with self.conn.begin_nested():
            for chunk in _chunks(updates, batch):
                ids = [sys_id for sys_id, _ in chunk]
                current = {i: loaded[i] for i in ids if i in loaded} if loaded else {}
                if len(current) < len(ids):
                    stmt, _ = select_rows(self.storage, table, Query(Term("sys_id", "in", ids)))
                    current.update((r["sys_id"], r) for r in dict_rows(self.conn.execute(stmt)))
                missing = [i for i in ids if i not in current]
                if missing:
                    raise NotFound(f"no {table} record with sys_id {missing[0]}")
                if not self.trusted:
                    self.check_rows(tdef, ids, "write")
                changes = self._update_batch(tdef, [(current[sys_id], values) for sys_id, values in chunk])
                changed += sum(1 for c in changes if c.fields or c.journal)
        return changed

    def _update_batch(self, tdef: TableDef, items: list[tuple[dict, dict]]) -> list[Change]:
        self.lookups.clear()
        stamp = now()
        changes: list[Change] = []
        by_columns: dict[tuple[str, ...], list[dict]] = defaultdict(list)
        audits: list[tuple[dict, list]] = []
        journals: list[tuple[str, str, str, str]] = []
        after: list[tuple[TableDef, dict, dict]] = []
        classes: dict[str, TableDef] = {}  # sys_id -> the record's own table
        memos: dict[str, dict] = defaultdict(dict)  # per class: the values parsed so far (shared by many rows)
        verified = {} if self._hooks(tdef.name, "update") is None else self._check_given_references(
            tdef, [(current["sys_id"], values) for current, values in items])
        for current, values in items:
            record_tdef = classes[current["sys_id"]] = self.defs.tables.get(current.get("sys_class_name"), tdef)
            parsed, entries = self._parse(record_tdef, values, memo=memos[record_tdef.name])
            if not self.trusted:
                self._refuse_read_only(record_tdef, values, parsed, entries, current)
                self._refuse_unwritable(record_tdef, [*(k for k, v in parsed.items() if _differs(current.get(k), v)),
                                                      *entries], "write", current=current)
            hooks = self._hooks(record_tdef.name, "update")
            if hooks is not None:
                pending = {k: v for k, v in parsed.items() if _differs(current.get(k), v)} | entries
                hooks.before(self, record_tdef, "update", pending, current)
                parsed, entries = self._parse(record_tdef, pending)
            parsed = _prepared(self.storage, record_tdef, parsed)
            fields = {k: (current.get(k), v) for k, v in parsed.items() if _differs(current.get(k), v)}
            if not fields and not entries:
                changes.append(Change({}, {}))
                continue
            merged = current | {k: new for k, (_, new) in fields.items()}
            _check_mandatory(self.storage, record_tdef, merged, entries, None)
            for check in validators_for(self.storage, record_tdef.name):
                check(self, record_tdef, merged, current)
            for k, (old, new) in list(fields.items()):  # a validator may write a value as its type keeps it
                if merged[k] is not new:
                    fields[k] = (old, merged[k])
            checkpoint = (current.get("sys_mod_count") or 0) + 1
            if hooks is not None:
                after.append((record_tdef, current, entries))
            by_columns[tuple(sorted(fields))].append(
                {**{k: new for k, (_, new) in fields.items()}, "sys_id": current["sys_id"]})
            audits.append((current, [(k, old, new) for k, (old, new) in fields.items()]
                           + [(k, None, text) for k, text in entries.items()]))
            journals.extend((record_tdef.name, current["sys_id"], k, text) for k, text in entries.items())
            sys_after = stamps.touched(self.actor.user_name, stamp, checkpoint)
            changes.append(Change(fields | {k: (current.get(k), v) for k, v in sys_after.items()}, entries))
        changed_rows: dict[str, list[dict]] = defaultdict(list)  # per class: a parent table's rows have more fields
        for change, (cur, _) in zip(changes, items, strict=True):
            record_tdef = classes[cur["sys_id"]]
            references = _references(self.storage, record_tdef).intersection(change.fields)
            if references:  # the changed references, to check they point at records
                changed_rows[record_tdef.name].append({k: change.fields[k][1] for k in references} |
                                                      {"sys_id": cur["sys_id"]})
        for name, rows in changed_rows.items():
            self._check_references(self.defs.tables[name], rows, known=_still(verified, rows))
        physical = self.storage.physical(tdef.name)
        for columns, rows in by_columns.items():
            update_rows(self.conn, physical, columns, rows, stamps.touched_sql, self.actor.user_name, stamp)
        if by_columns:
            self.written.add(tdef.name)
        self._audit_many(audits, stamp)
        self._write_journal(journals, stamp)
        by_id = {cur["sys_id"]: change for change, (cur, _) in zip(changes, items, strict=True)}
        for record_tdef, current, entries in after:
            record = current | {k: new for k, (_, new) in by_id[current["sys_id"]].fields.items()}
            self.automation.after(self, record_tdef, "update", record, current, entries)
        return changes

    def _audit_many(self, audits: list[tuple[dict, list]], stamp: dt.datetime) -> None:
        rows = []
        for current, fields in audits:
            tdef = self.defs.tables[current["sys_class_name"]]
            if not tdef.audit:
                continue
            rows.extend(self._audit_rows(tdef, current["sys_id"], (current.get("sys_mod_count") or 0) + 1, fields))
        if rows:
            self._system_insert("sys_audit", rows, stamp)

    def _audit_rows(self, tdef: TableDef, sys_id: str, checkpoint: int,
                    changes: list[tuple[str, Any, Any]]) -> list[dict]:
        rows = []
        for name, old, new in changes:
            field = tdef.field(name)
            if field is not None and not field.audit:
                continue
            if field is not None and field.ftype.hidden:
                old, new = ("*" if old else None), "*"
            rows.append(stamps.audit_row(tdef.name, sys_id, checkpoint, name, _audit_text(field, old),
                                         _audit_text(field, new), self.actor.user_name, self.transaction))
        return rows

    # -- deleting -----------------------------------------------------------------------

    def delete(self, table: str, sys_id: str) -> None:
        """Delete one record, audited; what referred to it is cleared, deleted or keeps it from being
        deleted, as each reference field's `on_delete` says."""
        tdef = self.table(table, "delete")
        with self.conn.begin_nested():
            current = self._load(tdef, sys_id, for_update=True)
            if current is None:
                raise NotFound(f"no {table} record with sys_id {sys_id}")
            if not self.trusted:
                self.check_rows(tdef, [sys_id], "delete")
            self._delete_rows(tdef, [current])

    def _delete_rows(self, tdef: TableDef, rows: list[dict]) -> None:
        """Delete loaded records of one table (any of its classes): guards and before-rules per record,
        one audit row each, one DELETE, then their references (`_cascade`), then after-rules."""
        self.lookups.clear()
        audits, after = [], []
        for current in rows:
            record_tdef = self.defs.tables[current["sys_class_name"]]
            for guard in DELETE_GUARDS.get(record_tdef.name, ()):
                guard(self, record_tdef, current)
            hooks = self._hooks(record_tdef.name, "delete")
            if hooks is not None:
                hooks.before(self, record_tdef, "delete", {}, current)
                after.append((hooks, record_tdef, current))
            snapshot = {k: _audit_text(record_tdef.field(k), v) for k, v in current.items()
                        if record_tdef.field(k) is not None and not record_tdef.field(k).ftype.hidden}
            if record_tdef.audit:
                audits.extend(self._audit_rows(record_tdef, current["sys_id"], (current["sys_mod_count"] or 0) + 1,
                                               [("DELETED", json.dumps(snapshot, sort_keys=True), None)]))
        if audits:
            self._system_insert("sys_audit", audits)
        ids = [r["sys_id"] for r in rows]
        physical = self.storage.physical(tdef.name)
        for start in range(0, len(ids), 500):
            self.conn.execute(sa.delete(physical).where(physical.c.sys_id.in_(ids[start:start + 500])))
        self.written.add(tdef.name)
        self._cascade(tdef, ids)
        from .attachments import forget

        forget(self, tdef.name, ids)  # their files go with them
        for hooks, record_tdef, current in after:
            hooks.after(self, record_tdef, "delete", current, current, {})

    def _cascade(self, tdef: TableDef, ids: list[str]) -> None:
        """What happens to the records that referred to deleted ones, by the reference field's
        `on_delete`: `clear` empties the field (ServiceNow's default), `delete` deletes them too (a
        membership or role row cannot outlive what it joins), `restrict` refuses the deletion (409)."""
        for other, field in self._referrers(tdef):
            physical = self.storage.physical(other.name)
            for start in range(0, len(ids), 500):
                pointing = physical.c[field.name].in_(ids[start:start + 500])
                if field.on_delete == "clear":
                    self.conn.execute(sa.update(physical).where(pointing).values({field.name: None}))
                    continue
                found = self.conn.execute(sa.select(physical.c.sys_id, physical.c.sys_class_name).where(pointing)).all()
                if found and field.on_delete == "restrict":
                    raise Conflict(f"this {tdef.label.lower()} cannot be deleted: {len(found)} {other.label} record(s) "
                                   f"refer to it through {field.label} (on_delete: restrict); change or delete them first")
                self.delete_found(found)

    def delete_found(self, found: Iterable[tuple[str, str]]) -> None:
        """Delete the records `found` names as (sys_id, class name) pairs, each loaded with its own
        class's fields and deleted as `_delete_rows` does (no access check: the caller's)."""
        by_class: dict[str, list[str]] = defaultdict(list)
        for sys_id, class_name in found:
            by_class[class_name].append(sys_id)
        for class_name, class_ids in by_class.items():
            for chunk in range(0, len(class_ids), BATCH):
                stmt, _ = select_rows(self.storage, class_name, Query(Term("sys_id", "in", class_ids[chunk:chunk + BATCH])))
                self._delete_rows(self.defs.tables[class_name], [dict(r) for r in self.conn.execute(stmt).mappings()])

    def _referrers(self, tdef: TableDef) -> list[tuple[TableDef, FieldDef]]:
        """The reference fields that may hold a record of `tdef` (one per physical column)."""
        targets = set(self.defs.lineage(tdef.name))
        found: dict[tuple[str, str], tuple[TableDef, FieldDef]] = {}
        for other in self.defs.tables.values():
            for field in other.stored_fields:
                if field.type == "reference" and field.reference in targets:
                    found.setdefault((other.root, field.name), (other, field))
        return list(found.values())


def record_by(storage: Storage, table: str, field: str) -> sa.Select:
    """The SELECT of a table's records (every stored field, its classes only) whose `field` is the
    bound parameter `key`: built once and reused, as building it costs more than running it."""
    sel = Selection(storage, table)
    columns = [sel.column(f.name)[0].label(f.name) for f in sel.table.stored_fields]
    where = sel.condition(None)
    stmt = sa.select(*columns).select_from(sel.from_clause).where(sel.base.c[field] == sa.bindparam("key"))
    return stmt if where is None else stmt.where(where)


@dataclass(frozen=True)
class _InsertPlan:
    defaults: dict[str, Any]  # every stored, non-sys field with its default (`default: now` ones: empty)
    journal_defaults: tuple[tuple[str, str], ...]
    mandatory: tuple[str, ...]
    at_now: tuple[FieldDef, ...] = ()  # the fields declaring `default: now`
    declared: frozenset[str] = frozenset()  # the fields declaring a default (`now` included)

    def declared_at(self, moment: dt.datetime) -> dict[str, Any]:
        """The declared defaults alone (a field with none is left out) of a record written at `moment`."""
        return {name: value for name, value in self.defaults_at(moment).items() if name in self.declared}

    def defaults_at(self, moment: dt.datetime) -> dict[str, Any]:
        """The defaults of a record written at `moment`: `default: now` fields hold it (one statement,
        one batch: one moment, the records' sys_created_on)."""
        if not self.at_now:
            return self.defaults
        return self.defaults | {f.name: f.initial(moment) for f in self.at_now}


def _insert_plan(storage: Storage, tdef: TableDef) -> _InsertPlan:
    """What every insert into a table needs, worked out once per definitions set."""
    return storage.cached(("insert", tdef.name), lambda: _InsertPlan(
        {f.name: f.parse(None) if f.default is None else f.default for f in tdef.stored_fields if not f.system},
        tuple((f.name, f.default) for f in tdef.journal_fields if f.default),
        tuple(f.name for f in tdef.fields.values() if f.mandatory),
        tuple(f for f in tdef.stored_fields if f.default_now),
        frozenset(f.name for f in tdef.stored_fields if f.has_default and not f.system),
    ))


def _check_mandatory(storage: Storage, tdef: TableDef, record: dict, entries: dict, row: int | None) -> None:
    """A record as it would be stored must have each mandatory field (a journal field: an entry)."""
    for name in _insert_plan(storage, tdef).mandatory:
        if record.get(name) is None and not entries.get(name):
            raise RecordError(name, "is mandatory", row)


def _still(verified: dict[str, set[str]], records: list[dict]) -> tuple[str, ...]:
    """The reference fields whose values in `records` were all found before the rules ran."""
    return tuple(name for name, ids in verified.items() if all(not r.get(name) or r[name] in ids for r in records))


def _references(storage: Storage, tdef: TableDef) -> frozenset[str]:
    """The reference fields of a table."""
    return storage.cached(("references", tdef.name),
                          lambda: frozenset(f.name for f in tdef.stored_fields if f.type == "reference"))


def _guarded(storage: Storage, tdef: TableDef) -> frozenset[str]:
    """The fields of a table a client may not change: read-only and system fields."""
    return storage.cached(("guarded", tdef.name),
                          lambda: frozenset(f.name for f in tdef.fields.values() if f.read_only or f.system))


def _read_only_reason(field: FieldDef) -> str:
    if field.system:
        return "is read-only: the platform sets it"
    return "is read-only: only the record's actions and rules change it"


def _prepared(storage: Storage, tdef: TableDef, parsed: dict) -> dict:
    """Parsed values as stored: secrets (password fields) hashed, everything else as it is."""
    names = storage.cached(("prepared", tdef.name), lambda: tuple(f.name for f in tdef.stored_fields if f.ftype.hashed))
    if not names or not any(name in parsed for name in names):
        return parsed
    return {k: (tdef.fields[k].ftype.prepare(v) if k in names and v is not None else v) for k, v in parsed.items()}


def reserve_numbers(conn: sa.Connection, storage: Storage, tdef: TableDef, count: int) -> int:
    """Reserve `count` consecutive numbers for a table; returns the first. One UPDATE ... RETURNING,
    so concurrent writers never get the same number."""
    counter = storage.internal("sys_number_counter")
    stmt = storage.cached("reserve_numbers", lambda: (  # built once: every numbered insert runs it
        sa.update(counter).where(counter.c.name == sa.bindparam("table", type_=counter.c.name.type))
        .values(next_value=counter.c.next_value + sa.bindparam("count", type_=counter.c.next_value.type))
        .returning(counter.c.next_value)))
    after = conn.execute(stmt, {"table": tdef.name, "count": count}).scalar()
    if after is None:
        conn.execute(sa.insert(counter).values(name=tdef.name, next_value=tdef.number.start + count))
        return tdef.number.start
    return after - count


def _differs(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return old is not new
    if old == new:
        return False
    if isinstance(old, dt.datetime) and isinstance(new, dt.datetime):  # stored to the second on some databases
        return old.replace(microsecond=0) != new.replace(microsecond=0)
    return True


def _audit_text(field: FieldDef | None, value: Any) -> str | None:
    if value is None:
        return None
    if field is None or isinstance(value, str):
        return str(value)
    return field.render(value)


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


__all__ = ["AccessDenied", "Conflict", "NotFound", "QueryError", "RecordError", "RecordService", "SYS_FIELDS",
           "deletion_guard", "now", "reserve_numbers", "validator"]
