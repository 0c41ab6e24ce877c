"""The table cleaner (ServiceNow's Table Cleaner over its Auto Flush rules): each active rule of
`sys_auto_flush` deletes the records of its table whose match field (a date or date-time field) is older
than its age in seconds and that match its conditions. The worker runs every rule once an hour (the
queue's `cleanup` task); `caseloom cleanup` runs them at once, or only counts with `--dry-run`.

A deletion is the record service's: audited, with the table's rules and guards, and what refers to a
deleted record cleared, deleted or keeping it, as each reference's `on_delete` says. The records go in
sys_id order (the order they were made in), CHUNK to a unit of work, so a rule's run never holds a long
transaction; a chunk that a reference (`on_delete: restrict`) or a guard refuses goes record by record,
and the records refused are kept and counted. One run deletes at most RUN_LIMIT records per rule; the
next run goes on."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import sqlalchemy as sa

from .query import Query, QueryError, parse_encoded
from .query.nodes import All, Term
from .records import Conflict, RecordError, now, validator

log = logging.getLogger(__name__)

RULES = "sys_auto_flush"
CHUNK = 1000  # records deleted per unit of work
RUN_LIMIT = 100_000  # records one rule deletes in one run; the rest wait for the next
CLAIMED = dt.timedelta(minutes=30)  # an hourly run of a rule begun this recently is another worker's
DATE_TYPES = ("date", "datetime")
MATCHFIELD = "sys_created_on"  # a rule's match field when it names none


@dataclass
class Cleaned:
    """What one rule did in one run (or, with `dry_run`, would do)."""

    rule: str
    table: str
    matched: int = 0  # old enough and matching when the run began
    deleted: int = 0
    kept: int = 0  # refused: a reference with on_delete restrict, or a guard
    error: str | None = None
    dry_run: bool = False

    def words(self) -> str:
        if self.error is not None:
            if self.deleted or self.kept:  # the units of work before the failure stand
                return f"{self.table}: {self.deleted:,} record(s) deleted, {self.kept:,} kept, then stopped: {self.error}"
            return f"{self.table}: not run: {self.error}"
        if self.dry_run:
            return f"{self.table}: {self.matched:,} record(s) would be deleted"
        text = f"{self.table}: {self.deleted:,} record(s) deleted"
        if self.kept:
            text += f", {self.kept:,} kept (something refers to them or a guard refused)"
        left = self.matched - self.deleted - self.kept
        if left > 0:
            text += f", {left:,} left for the next run (at most {RUN_LIMIT:,} a run)"
        return text

    def as_json(self) -> dict:
        return {"rule": self.rule, "table": self.table, "matched": self.matched, "deleted": self.deleted,
                "kept": self.kept, "error": self.error, "dry_run": self.dry_run}


def rule_problem(defs, record: dict) -> tuple[str, str] | None:
    """(field, what is wrong) with a rule, or None: the table, its match field, the age and the
    conditions, as the definitions have them now."""
    from .definitions.timing import condition_problem

    table = defs.tables.get(record.get("tablename") or "")
    if table is None:
        return "tablename", f"unknown table {record.get('tablename')!r}"
    name = record.get("matchfield") or MATCHFIELD
    field = table.field(name)
    if field is None or not field.stored or field.type not in DATE_TYPES:
        return "matchfield", f"{name!r} is not a date or date-time field of {table.name!r}"
    age = record.get("age")
    if not isinstance(age, int) or isinstance(age, bool) or age < 1:
        return "age", "must be a whole number of seconds, at least 1"
    problem = condition_problem(defs.tables, table, record.get("conditions") or "", "a table cleaner rule")
    if problem:
        return "conditions", problem
    return None


RULE_FIELDS = ("tablename", "matchfield", "age", "conditions")


@validator(RULES)
def check_rule(service, tdef, record: dict, current: dict | None) -> None:
    """A new rule, or a change to what a rule deletes, is checked; switching a rule off or noting its run
    is not (a rule the definitions no longer allow can still be switched off)."""
    if current is not None and all(record.get(name) == current.get(name) for name in RULE_FIELDS):
        return
    problem = rule_problem(service.defs, record)
    if problem is not None:
        raise RecordError(*problem)


def clean(runtime, at: dt.datetime | None = None, dry_run: bool = False, hourly: bool = False) -> list[Cleaned]:
    """Run every active rule as the system, at `at` (default: now), in the order of their table names. A
    rule that fails says why in its result and on its record; the others run. `hourly` (the workers'
    task): a rule another worker has run in the last CLAIMED is left to it, so that several workers run
    each rule once an hour."""
    at = now() if at is None else at
    with runtime.transaction() as service:
        rules = service.query(RULES, parse_encoded("active=true^ORDERBYtablename^ORDERBYsys_id"))
    done = []
    for rule in rules:
        if hourly and not _claimed(runtime, rule["sys_id"], at):
            continue
        cleaned = Cleaned(rule["sys_id"], rule["tablename"] or "", dry_run=dry_run)
        try:
            _run(runtime, rule, at, cleaned)
        except (QueryError, RecordError, sa.exc.SQLAlchemyError) as exc:
            log.exception("table cleaner: rule %s on %s failed", rule["sys_id"], rule["tablename"])
            cleaned.error = str(exc).splitlines()[0]
        if not dry_run:
            _note(runtime, rule["sys_id"], cleaned, at)
        done.append(cleaned)
    return done


def _claimed(runtime, rule: str, at: dt.datetime) -> bool:
    """Whether this process may run the rule now: no run of it began within CLAIMED before `at`. The
    claim is the rule's `last_run`, set by one conditional UPDATE, which only one of several workers
    woken at the same minute can make."""
    with runtime.transaction() as service:
        rules = service.storage.physical(RULES)
        free = sa.or_(rules.c.last_run.is_(None), rules.c.last_run <= at - CLAIMED)
        return service.conn.execute(sa.update(rules).where(rules.c.sys_id == rule, free).values(last_run=at)).rowcount == 1


def _run(runtime, rule: dict, at: dt.datetime, cleaned: Cleaned) -> None:
    problem = rule_problem(runtime.defs, rule)  # the definitions may have changed since it was saved
    if problem is not None:
        cleaned.error = f"{problem[0]}: {problem[1]}"
        return
    table, field = rule["tablename"], rule.get("matchfield") or MATCHFIELD
    cutoff = at - dt.timedelta(seconds=rule["age"])
    conditions = parse_encoded(rule.get("conditions") or "").where
    old = Term(field, "lt", cutoff.strftime("%Y-%m-%d %H:%M:%S"))
    where = old if conditions is None else All((old, conditions))
    with runtime.transaction() as service:
        cleaned.matched = service.count(table, Query(where))
    if cleaned.dry_run:
        return
    after = None  # the last sys_id read: each record is read once a run, whatever became of it
    while cleaned.deleted + cleaned.kept < min(cleaned.matched, RUN_LIMIT):
        page = where if after is None else All((where, Term("sys_id", "gt", after)))
        with runtime.transaction(write_lock=True) as service:
            rows = service.query(table, Query(page, (("sys_id", False),)), ["sys_id", "sys_class_name"],
                                 limit=min(CHUNK, RUN_LIMIT - cleaned.deleted - cleaned.kept))
            if not rows:
                return
            deleted, kept = _delete(service, _locked(service, table, rows))
        cleaned.deleted += deleted
        cleaned.kept += len(kept)
        after = rows[-1]["sys_id"]


def _locked(service, table: str, rows: list[dict]) -> list[dict]:
    """The rows still there, locked for this unit of work. On PostgreSQL, rows another run (a second
    `caseloom cleanup`, a worker) has locked are skipped, not waited for, so two runs never delete, nor
    audit, the same record; on SQLite the write lock already keeps them apart."""
    if service.conn.dialect.name != "postgresql":
        return rows
    physical = service.storage.physical(table)
    stmt = sa.select(physical.c.sys_id).where(physical.c.sys_id.in_([r["sys_id"] for r in rows]))
    there = set(service.conn.execute(stmt.with_for_update(skip_locked=True)).scalars())
    return [r for r in rows if r["sys_id"] in there]


def _delete(service, rows: list[dict]) -> tuple[int, list[str]]:
    """Delete the records `rows` names: together, or one by one when something refuses one of them.
    Returns how many were deleted and the sys_ids of those refused."""
    if not rows:
        return 0, []
    try:
        with service.conn.begin_nested(), service.by_definitions():
            service.delete_found((row["sys_id"], row["sys_class_name"]) for row in rows)
        return len(rows), []
    except (Conflict, RecordError):
        pass
    deleted, kept = 0, []
    with service.by_definitions():
        for row in rows:
            try:
                service.delete(row["sys_class_name"], row["sys_id"])
                deleted += 1
            except (Conflict, RecordError):
                kept.append(row["sys_id"])
    return deleted, kept


def _note(runtime, rule: str, cleaned: Cleaned, at: dt.datetime) -> None:
    """The run on the rule's record: when, how many deleted, and the outcome in words."""
    try:
        with runtime.transaction() as service, service.by_definitions():
            service.update(RULES, rule, {"last_run": at, "last_deleted": cleaned.deleted,
                                         "last_result": cleaned.words()})
    except Exception:  # the rule was deleted meanwhile, or the database is away: the run stands
        log.exception("table cleaner: could not note the run on rule %s", rule)
