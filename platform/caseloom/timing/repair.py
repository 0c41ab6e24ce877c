"""SLA repair (ServiceNow's *Repair SLAs*): a record's task SLAs removed and made again from its history,
as if the SLA definitions active now had been active since the record was created.

A record's history is its audit rows (sys_audit): each update is one checkpoint with the fields it
changed, old and new, and its moment. Going back from the record as stored, undoing each checkpoint's
changes, gives the record as it was created and after each update. The engine's own step
(`engine.step`, ServiceNow's order) then runs on each of those states at its moment, in memory: every
SLA that would have attached, paused, resumed, completed or been cancelled does so at the moment it
would have, with the change that caused it. What a condition reads through a reference (a dot-walk)
is read as it is now, as ServiceNow's repair reads it.

The task SLAs the record had are deleted and the replayed ones written, their stage changes audited
at their historic moments (the form's timeline shows them with their causes), running ones measured
as of now. An escalation whose moment has passed is not fired: a repair sends nothing for the past
(the next one not reached yet is the one the tick will fire). A repair is the caller's unit of work;
it goes through the matching records in chunks of CHUNK, with one statement of each kind per chunk.

Every repair keeps a log (ServiceNow's SLA repair log, `sla_repair_log`): who started it, from where,
on which records, when it began and ended, and what it did; its entries (`sla_repair_log_entry`) keep
each task SLA removed (`before`) and each made (`after`), written with them. The log is written
through the record service, so a notification declared on it (on its update to `complete`) tells
whoever started the repair.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .. import stamps
from ..bulk import analyse_if_grown, insert_rows
from ..definitions.model import TableDef
from ..query import All, Query, Term, select_rows, to_encoded
from ..records import AccessDenied, NotFound, new_sys_id, now
from ..setwrite import new_sys_id_sql
from .engine import Conditions, moment, moved, start_of, state_of, step
from .measure import ACTIVE, PAUSED, RUNNING, State, first, measure, next_due
from .slas import TASK_SLA, Sla, enabled, slas_for

CHUNK = 500  # records repaired per round of statements
LOG, ENTRY = "sla_repair_log", "sla_repair_log_entry"
# what a log entry keeps of a task SLA, before and after
KEPT = ("task", "sla", "stage", "has_breached", "percentage", "business_percentage", "start_time", "end_time",
        "planned_end_time", "duration", "business_duration", "pause_duration", "business_pause_duration")


class RepairRefused(ValueError):
    """A repair that cannot be done at all (a table without SLAs or without history), saying why."""


@dataclass
class Repaired:
    """What a repair did: records gone through, task SLAs deleted, task SLAs made from the history."""

    records: int = 0
    removed: int = 0
    created: int = 0
    log: str | None = None  # the repair's log (sla_repair_log): its sys_id
    number: str | None = None  # and its number, as people read it (not kept in `as_json`)

    def words(self, label: str) -> str:
        return (f"Repaired the SLAs of {self.records:,} {label} record{'' if self.records == 1 else 's'}: "
                f"{self.removed:,} task SLA{'' if self.removed == 1 else 's'} removed, {self.created:,} made from "
                f"their history")

    def as_json(self) -> dict:
        return {"records": self.records, "removed": self.removed, "created": self.created, "log": self.log}

    def counts(self) -> dict:
        return {"records": self.records, "removed": self.removed, "created": self.created}


def repairable(defs, table: str) -> TableDef:
    """The table to repair, or RepairRefused saying why it cannot be."""
    tdef = defs.tables.get(table)
    if tdef is None:
        raise NotFound(f"table {table!r} does not exist")
    if not enabled(defs, table):
        root = defs.sla_root
        raise RepairRefused(f"{table!r} has no SLAs: " + (f"only {root!r} and the tables extending it have them"
                                                          if root else "no table declares `sla: true`"))
    if not tdef.audit:
        raise RepairRefused(f"{table!r} keeps no history (`audit: false`): a repair replays a record's history")
    return tdef


def repair(service, table: str, where: Any = None, progress: Callable[[Repaired], None] | None = None,
           source: str = "cli") -> Repaired:
    """Repair the SLAs of the records of `table` matching `where` (a query Node; None: all) that the
    actor may read, CHUNK at a time, in sys_id order, logged as started from `source` (a choice of
    `sla_repair_log.source`). `progress` is told after each chunk. Only an administrator repairs (it
    deletes and writes task SLAs, which only the engine writes otherwise)."""
    ids = matching(service, table, where)
    log = start_log(service, table, to_encoded(Query(where)) if where is not None else "", source)
    return repair_these(service, table, ids, progress, log)


def repair_these(service, table: str, ids: list[str], progress: Callable[[Repaired], None] | None = None,
                 log: Repaired | None = None) -> Repaired:
    """`repair` of the records `matching` found, CHUNK at a time, adding to `log` (`start_log`), which
    then ends."""
    done = log or Repaired()
    for start in range(0, len(ids), CHUNK):
        repair_records(service, table, ids[start:start + CHUNK], done)
        if progress is not None:
            progress(done)
    end_log(service, table, done)
    return done


# -- the log ---------------------------------------------------------------------------------------

def start_log(service, table: str, query: str, source: str) -> Repaired:
    """A new repair's log, in progress: nothing done yet, with the log's sys_id and number. `query`: the
    encoded query of the records repaired."""
    with service.by_definitions():
        log = service.insert(LOG, {"table_name": table, "filter": query, "source": source,
                                   "initiated_by": service.actor.sys_id, "started": now()})
    return Repaired(log=log["sys_id"], number=log["number"])


def note_log(service, done: Repaired) -> None:
    """The log's counts as `done` has them now, in progress (a background repair's, after each chunk it
    commits, and as a re-run begins)."""
    if done.log is not None:
        with service.by_definitions():
            service.update(LOG, done.log, {**done.counts(), "state": "in_progress"})


def end_log(service, table: str, done: Repaired, state: str = "complete", message: str | None = None) -> None:
    """The log ended: its counts, its end, its state (`complete`, `stopped`, `failed`) and its outcome (by
    default what was done, in words)."""
    if done.log is None:
        return
    if message is None:
        message = done.words(label_of(service.defs, table)) + "."
    with service.by_definitions():
        service.update(LOG, done.log, {**done.counts(), "state": state, "ended": now(), "message": message})


def label_of(defs, table: str) -> str:
    """The table as a repair's words name its records ("case"): its label in lower case, else its name."""
    tdef = defs.tables.get(table)
    return tdef.label.lower() if tdef is not None else table


def matching(service, table: str, where: Any, after: str | None = None, limit: int | None = None) -> list[str]:
    """The sys_ids of the records to repair, in order (those after sys_id `after`; the first `limit`): read
    once, by one statement, so each chunk then reads its records by their keys (a page of the condition
    in sys_id order could sort every match again for every page)."""
    administrator(service)
    repairable(service.defs, table)
    service.table(table, "read")
    page = where if after is None else (Term("sys_id", "gt", after) if where is None
                                        else All((where, Term("sys_id", "gt", after))))
    stmt, _ = select_rows(service.storage, table, Query(page, (("sys_id", False),)), ["sys_id"], limit,
                          readable=service.readable)
    ids = list(service.conn.execute(stmt).scalars())
    if len(ids) > CHUNK:  # each chunk reads its history and task SLAs by 500 keys: planned for their size now
        for name in ("sys_audit", TASK_SLA):
            analyse_if_grown(service.conn, service.storage.physical(name))
    return ids


def repair_records(service, table: str, ids: list[str], done: Repaired) -> None:
    """Repair the SLAs of the records with these sys_ids (at most CHUNK, from `matching`), adding to `done`.
    A background repair (caseloom.jobs.slarepair) commits each chunk with its progress."""
    administrator(service)
    tdef = repairable(service.defs, table)
    records = service.query(table, Query(Term("sys_id", "in", ids)), None)
    if records:
        _repair_records(service, tdef, records, moment(), done)


def administrator(service) -> None:
    """AccessDenied unless the service's actor may repair SLAs (an administrator)."""
    if service.check_access and not service.actor.is_admin:
        raise AccessDenied(f"user {service.actor.user_name!r} may not repair SLAs: it needs the admin role")


# -- one chunk ------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """One update of a record, as its audit rows keep it."""

    when: dt.datetime
    user: str | None
    transaction: str | None
    changes: dict[str, tuple[str | None, str | None]]  # field -> (old, new), as the audit's texts


def _repair_records(service, table: TableDef, records: list[dict], at: dt.datetime, done: Repaired) -> None:
    defs = service.defs
    ids = [r["sys_id"] for r in records]
    history = _history(service, ids)
    replay = Replay()
    conditions: dict[str, Conditions] = {}  # per class of record
    for record in records:
        tdef = defs.tables.get(record.get("sys_class_name") or "") or table
        slas = slas_for(service, tdef.name)
        if not slas:
            continue
        asked = conditions.setdefault(tdef.name, Conditions(service, tdef))
        for when, user, transaction, values in _states(tdef, record, history.get(record["sys_id"], [])):
            replay.cause = (user, transaction)
            holds = asked.on(values)
            for sla in slas:
                step(sla, values, replay.active.get((record["sys_id"], sla.sys_id)), holds, when, replay)
        replay.finish(at)
    done.records += len(records)
    if done.log is not None:
        _entries(service, done.log, "before", ids)
    done.removed += _remove(service, ids)
    done.created += replay.write(service)
    if done.log is not None:
        _entries(service, done.log, "after", ids)


def _history(service, ids: list[str]) -> dict[str, list[Checkpoint]]:
    """sys_id -> its updates, oldest first (journal entries and system fields left out)."""
    audit = service.storage.physical("sys_audit")
    rows = service.conn.execute(
        sa.select(audit.c.documentkey, audit.c.record_checkpoint, audit.c.fieldname, audit.c.oldvalue,
                  audit.c.newvalue, audit.c.user, audit.c.transaction, audit.c.sys_created_on)
        .where(audit.c.documentkey.in_(ids))
        .order_by(audit.c.documentkey, audit.c.record_checkpoint, audit.c.sys_created_on)).mappings()
    out: dict[str, dict[int, Checkpoint]] = defaultdict(dict)
    for row in rows:
        points = out[row["documentkey"]]
        point = points.get(row["record_checkpoint"])
        if point is None:
            point = points[row["record_checkpoint"]] = Checkpoint(row["sys_created_on"], row["user"],
                                                                  row["transaction"], {})
        point.changes[row["fieldname"]] = (row["oldvalue"], row["newvalue"])
    # an audit row without a checkpoint (written before checkpoints were kept) goes first: its moment orders it
    return {sys_id: [points[k] for k in sorted(points, key=lambda k: (k is not None, k or 0, points[k].when))]
            for sys_id, points in out.items()}


def _states(tdef: TableDef, record: dict, checkpoints: list[Checkpoint]):
    """(moment, user, transaction, the record's values) as it was created, then after each update,
    oldest first: the record as stored with each later update's changes undone."""
    states = []
    values = dict(record)
    for point in reversed(checkpoints):
        states.append((_second(point.when), point.user, point.transaction, values))
        values = dict(values)
        for name, (old, _) in point.changes.items():
            field = tdef.field(name)
            if field is not None and not field.system and not field.ftype.journal:
                values[name] = _parsed(field, old)
    states.append((_second(record["sys_created_on"]), record.get("sys_created_by"), None, values))
    states.reverse()
    return states


def _parsed(field, text: str | None) -> Any:
    """An audit text as the field's value (as written then; a choice since retired stays its text)."""
    if text is None:
        return None
    try:
        return field.parse(text)
    except (ValueError, TypeError):
        return text


def _second(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


def _remove(service, ids: list[str]) -> int:
    """Delete the records' task SLAs; how many there were."""
    physical = service.storage.physical(TASK_SLA)
    removed = service.conn.execute(sa.delete(physical).where(physical.c.task.in_(ids))).rowcount
    service.written.add(TASK_SLA)
    return removed or 0


def _entries(service, log: str, kind: str, ids: list[str]) -> None:
    """The log's entries of `kind` for the records' task SLAs as they are now (`before`: the ones about
    to be removed; `after`: the ones just made), by one INSERT ... SELECT: nothing goes through Python."""
    conn, task_slas = service.conn, service.storage.physical(TASK_SLA)
    columns = (stamps.new_rows_sql(ENTRY, service.actor.user_name, now(), new_sys_id_sql(conn.dialect.name, task_slas))
               | {"repair_log": sa.literal(log), "type": sa.literal(kind), "task_sla": task_slas.c.sys_id}
               | {name: task_slas.c[name] for name in KEPT})
    conn.execute(sa.insert(service.storage.physical(ENTRY)).from_select(
        list(columns), sa.select(*columns.values()).where(task_slas.c.task.in_(ids))))
    service.written.add(ENTRY)


class Replay:
    """The engine's `Changes`, in memory: the task SLAs a replayed history makes, and their stage changes
    at their moments with their causes (`cause`: the user and unit of work of the state being replayed)."""

    def __init__(self):
        self.rows: list[tuple[Sla, dict]] = []
        self.active: dict[tuple[str, str], dict] = {}  # (task, SLA) -> its running or paused row
        self.stages: list[tuple[dict, int, str | None, str, dt.datetime, str | None, str | None]] = []
        self.cause: tuple[str | None, str | None] = (None, None)
        self.finished = 0  # rows[:finished] are the records' already finished
        # timings worked out once for the rows that share them: records written together (the children a
        # job created together) share every moment of their history
        self.timings: dict[tuple, dict] = {}

    def attach(self, sla: Sla, record: dict, at: dt.datetime, paused: bool) -> None:
        start = start_of(sla, record, at)
        state = State(PAUSED if paused else RUNNING, start, pause_time=at if paused else None,
                      next_threshold=first(sla.clock))
        user, transaction = self.cause
        key = (sla.sys_id, state, at)
        if key not in self.timings:
            self.timings[key] = measure(sla.clock, state, at)
        row = {"sys_id": new_sys_id(), "task": record["sys_id"], "sla": sla.sys_id, "stage": state.stage,
               "start_time": start, "pause_time": state.pause_time, "end_time": None,
               **self.timings[key], "pause_duration": 0, "business_pause_duration": 0,
               "transaction": transaction, "sys_mod_count": 0}
        self.rows.append((sla, row))
        self.active[(row["task"], sla.sys_id)] = row
        self.stages.append((row, 0, None, row["stage"], at, user, transaction))

    def move(self, sla: Sla, row: dict, stage: str, at: dt.datetime) -> None:
        old = row["stage"]
        row.update(self._moved(sla, row, stage, at))
        if row["stage"] != old:
            row["sys_mod_count"] += 1
            user, transaction = self.cause
            self.stages.append((row, row["sys_mod_count"], old, row["stage"], at, user, transaction))
        if row["stage"] not in ACTIVE:
            self.active.pop((row["task"], sla.sys_id), None)

    def _moved(self, sla: Sla, row: dict, stage: str, at: dt.datetime) -> dict:
        key = (sla.sys_id, state_of(row), bool(row.get("has_breached")), stage, at)
        if key not in self.timings:
            self.timings[key] = moved(sla, row, stage, at)
        return self.timings[key]

    def finish(self, at: dt.datetime) -> None:
        """The last record's running and paused ones measured as of `at`; every threshold passed counted
        as fired."""
        for sla, row in self.rows[self.finished:]:
            if row["stage"] in ACTIVE:
                row.update(self._moved(sla, row, row["stage"], at))
            reached = float(row["business_percentage"] or 0)
            row["next_threshold"] = next((t for t in sla.clock.thresholds if t > reached), None)
            if row["stage"] == RUNNING:
                state = state_of(row)
                row.update(next_due(sla.clock, state, reached, state.business_pause_duration))
        self.active.clear()
        self.finished = len(self.rows)

    def write(self, service) -> int:
        """Insert the task SLAs made and their stage changes' audit rows; how many task SLAs."""
        if not self.rows:
            return 0
        user, stamp = service.actor.user_name, now()
        rows = []
        for _, row in self.rows:
            system = stamps.new_row(TASK_SLA, user, stamp)
            rows.append(row | system | {"sys_mod_count": row["sys_mod_count"]})
        # not noted as made (`note_made`): a job's undo would remove them and leave the records without any
        insert_rows(service.conn, service.storage.physical(TASK_SLA), rows)
        # each audit row says when its change happened (sys_created_on, what the timeline reads), and was
        # written now (sys_updated_on)
        audits = [stamps.audit_row(TASK_SLA, row["sys_id"], checkpoint, "stage", old, new, who or user,
                                   transaction or service.transaction)
                  | stamps.new_row("sys_audit", who or user, when, new_sys_id()) | {"sys_updated_on": stamp}
                  for row, checkpoint, old, new, when, who, transaction in self.stages]
        insert_rows(service.conn, service.storage.physical("sys_audit"), audits)
        service.written.update((TASK_SLA, "sys_audit"))
        count = len(rows)
        self.rows, self.stages, self.finished = [], [], 0
        self.timings.clear()
        return count


__all__ = ["CHUNK", "ENTRY", "LOG", "RepairRefused", "Repaired", "administrator", "end_log", "label_of", "matching",
           "note_log", "repair", "repair_records", "repair_these", "repairable", "start_log"]
