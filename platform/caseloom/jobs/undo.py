"""Undoing what a background job created, while nobody has touched it.

A job remembers what it creates as it goes (`recording`): the rows of every set-based insert of
its run, and of every batch a creating effect writes row by row, share one sys_id prefix, noted
in the job's params in the same unit of work (a unit that rolls back notes nothing). Undo removes
in one transaction the records the job created that nobody has touched since. A record is
*touched* when

- it was updated since its creation (`sys_mod_count` above 0: a changed field, a comment or work
  note, a sync from its parent: every update counts), or
- a journal entry was written on it after its creation (the entries the job wrote with it are
  stamped with its creation time), or
- a file was attached to it, or
- another record refers to it through a reference field (except the platform's own records about
  it, which go with it: a system table's reference with `on_delete: delete`, such as an SLA running
  on it).

Untouched records are removed set-based: one audit row each (`DELETED` with a snapshot of its
values, as RecordService.delete writes), their e-mails still waiting (state ready) canceled
(state canceled, audited), then one DELETE. E-mails already sent (or being sent) cannot be
recalled: they are counted. A table with delete rules, delete notifications or deletion guards
has its records deleted one by one through RecordService.delete instead, so every one of them
runs. Undo does not reverse the action's change to its own record, nor other updates its effects
made. The job notes the undo in its params: a second undo finds nothing left to undo.

Who may undo: whoever may see the job and may delete records of every table it created records in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .. import stamps
from ..attachments import TABLE as ATTACHMENTS
from ..definitions.model import TableDef
from ..records import DELETE_GUARDS, Conflict, RecordService, now
from ..setinsert import INSERTED
from ..setwrite import _as_text, new_sys_id_sql
from .progress import FINISHED, Job, get_job, lock_job, write_params
from .visibility import allowed_job, job_refusal

if TYPE_CHECKING:
    from .registry import JobRun

CREATED, UNDONE = "created", "undone"  # the job's params: what it created, and its undo once done
EMAIL, READY, CANCELED = "sys_email", "ready", "canceled"
SENT = ("sent", "sending")  # out of reach: accepted by the server, or being handed to it now
NAMES_SHOWN = 10  # touched records named in a message
JSON_PAIRS = 40  # fields per JSON call (PostgreSQL takes 100 arguments at most)


@contextmanager
def recording(run: JobRun) -> Iterator[None]:
    """While the block runs, every insert told to `setinsert.INSERTED` is added to the job's params
    (guarded like its progress: only while this run holds the job, in the unit that inserted)."""

    def remember(conn: sa.Connection, table: str, prefix: str, count: int) -> None:
        run.remember(conn, **{CREATED: [*run.params.get(CREATED, []), [table, prefix, count]]})

    token = INSERTED.set(remember)
    try:
        yield
    finally:
        INSERTED.reset(token)


@dataclass(frozen=True)
class Batch:
    """The records one statement (or one batch) of a job created: sys_ids prefix + 12 hex digits."""

    table: str
    prefix: str
    count: int

    def holds(self, sys_id: sa.ColumnElement) -> sa.ColumnElement:
        return sys_id.between(self.prefix + "0" * 12, self.prefix + "f" * 12)


def created_batches(job: Job) -> list[Batch]:
    """What a job noted it created, oldest first."""
    return [Batch(table, prefix, int(count)) for table, prefix, count in job.params.get(CREATED, [])]


def created_count(job: Job) -> int:
    return sum(b.count for b in created_batches(job))


@dataclass(frozen=True)
class TableUndo:
    """The numbers of one table's records in an undo: planned (before) or done (after)."""

    table: str
    label: str
    created: int  # as the job counted them
    removable: int  # untouched: removed (planned or done)
    touched: int  # changed since: kept
    gone: int  # deleted since by someone else
    touched_names: tuple[str, ...]
    emails_waiting: int  # not yet sent: canceled
    emails_sent: int  # already sent or being sent: cannot be recalled

    def sentence(self, done: bool) -> str:
        noun = _noun(self.label, self.created)
        if done:
            said = [f"Removed {self.removable} of {self.created} {noun}"]
        else:
            said = [f"Removes {self.removable} of the {self.created} {noun} it created"]
        if self.touched:
            why = "could not be undone because they were" if self.touched != 1 else "could not be undone because it was"
            said.append(f"{self.touched} {why} changed since ({self._names()})")
        if self.gone:
            said.append(f"{self.gone} {'were' if self.gone != 1 else 'was'} deleted by someone since")
        emails = (f"{self.emails_waiting} unsent e-mail{'s' if self.emails_waiting != 1 else ''} "
                  f"{'canceled' if done else 'to cancel'}")
        if self.emails_sent:
            emails += f", {self.emails_sent} already sent (they cannot be recalled)"
        if self.emails_waiting or self.emails_sent:
            said.append(emails)
        return "; ".join(said) + "."

    def noun(self, count: int) -> str:
        """The table's records as a noun for `count` of them ("case", "cases")."""
        return _noun(self.label, count)

    def _names(self) -> str:
        more = self.touched - len(self.touched_names)
        return ", ".join(self.touched_names) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Undo:
    """An undo of a job's creations, per table: what it would do (`done` False) or what it did."""

    job_id: str
    tables: tuple[TableUndo, ...]
    done: bool

    @property
    def created(self) -> int:
        return sum(t.created for t in self.tables)

    @property
    def removable(self) -> int:
        return sum(t.removable for t in self.tables)

    def sentence(self) -> str:
        return " ".join(t.sentence(self.done) for t in self.tables)

    def noun(self, count: int) -> str:
        """What the job created as a noun for `count` of them: "cases", or "records" for several tables."""
        return self.tables[0].noun(count) if len(self.tables) == 1 else _noun("record", count)

    def as_dict(self) -> dict:
        return {"job": self.job_id, "done": self.done, "created": self.created, "removed": self.removable,
                "message": self.sentence(), "tables": [asdict(t) for t in self.tables]}


# -- what an undo would do, and who may --------------------------------------------------------------


def undo_refusal(service: RecordService, job: Job) -> str | None:
    """Why the service's actor may not undo `job`'s creations, or None when they may (whether
    there is anything left to undo is `undo_conflict`'s to say)."""
    unseen = job_refusal(service, job)
    if unseen:
        return unseen
    for table in sorted({b.table for b in created_batches(job)}):
        if table in service.defs.tables and not service.can(table, "delete"):
            label = service.defs.tables[table].label.lower()
            return (f"user {service.actor.user_name!r} may not undo job {job.id}: undo deletes the {label} records "
                    f"it created, and the user may not delete records of {table!r}")
    return None


def undo_conflict(job: Job) -> str | None:
    """Why `job` has nothing to undo now (still running, created nothing, undone already), or None."""
    if job.state not in FINISHED:
        return f"job {job.id} is still {job.state}: stop it first, then undo what it created"
    done = job.params.get(UNDONE)
    if done:
        return f"nothing left to undo: job {job.id} was undone by {done['by']} on {done['on']} ({done['message']})"
    if not created_batches(job):
        return f"nothing to undo: job {job.id} created no records"
    return None


def plan_undo(service: RecordService, job: Job) -> Undo:
    """The numbers an undo of `job` would have now, for its confirmation (nothing is written)."""
    tables = [_count(service, tdef, batches) for tdef, batches in _by_table(service, job)]
    return Undo(job.id, tuple(tables), done=False)


# -- undoing ----------------------------------------------------------------------------------------


def undo_job(service: RecordService, job_id: str) -> Undo:
    """Remove the untouched records job `job_id` created, cancel their unsent e-mails and audit it,
    in the service's transaction (commit it, or roll it back on error: nothing is half-done).
    NotFound, AccessDenied (`undo_refusal`), Conflict (`undo_conflict`)."""
    job = allowed_job(service, lock_job(service.conn, service.storage, job_id), job_id, undo_refusal)
    conflict = undo_conflict(job)
    if conflict:
        raise Conflict(conflict)
    tables = []
    for tdef, batches in _by_table(service, job):
        service.table(tdef.name, "delete")
        _lock(service, tdef, batches)
        planned = _count(service, tdef, batches)
        emails = _cancel_emails(service, _removable_ids(service, tdef, batches))
        removed = _delete(service, tdef, batches)
        tables.append(replace(planned, removable=removed, emails_waiting=emails))
    done = Undo(job.id, tuple(tables), done=True)
    stamp = now().replace(microsecond=0).isoformat(sep=" ")
    write_params(service.conn, service.storage, job.id, {**job.params, UNDONE: {
        "by": service.actor.user_name, "on": stamp, "removed": done.removable, "message": done.sentence()}})
    return done


def _by_table(service: RecordService, job: Job) -> list[tuple[TableDef, list[Batch]]]:
    grouped: dict[str, list[Batch]] = {}
    for batch in created_batches(job):
        grouped.setdefault(batch.table, []).append(batch)
    missing = [t for t in grouped if t not in service.defs.tables]
    if missing:
        raise Conflict(f"job {job.id} created records of {', '.join(missing)}, which the definitions no longer have")
    return [(service.defs.tables[t], batches) for t, batches in grouped.items()]


def _physical(service: RecordService, tdef: TableDef) -> sa.Table:
    return service.storage.physical(tdef.name)


def _created(physical: sa.FromClause, batches: list[Batch]) -> sa.ColumnElement:
    return sa.or_(*(b.holds(physical.c.sys_id) for b in batches))


def _untouched(service: RecordService, tdef: TableDef, physical: sa.FromClause) -> sa.ColumnElement:
    """The module docstring's definition, negated, as SQL over `physical`'s rows: a conjunction of
    NOT EXISTS, which PostgreSQL plans as anti-joins (an OR of EXISTS would be a subplan per row)."""
    journal = service.storage.physical("sys_journal_field")
    unchanged = [physical.c.sys_mod_count == 0,
                 ~sa.exists().where(journal.c.element_id == physical.c.sys_id,
                                    journal.c.sys_created_on > physical.c.sys_created_on)]
    if ATTACHMENTS in service.defs.tables:  # a file someone attached to it (caseloom.attachments)
        attached = service.storage.physical(ATTACHMENTS)
        unchanged.append(~sa.exists().where(attached.c.table_sys_id == physical.c.sys_id))
    for i, (other, field) in enumerate(service._referrers(tdef)):
        if _dependent(other, field):
            continue
        referrer = service.storage.physical(other.name).alias(f"referrer_{i}")
        unchanged.append(~sa.exists().where(referrer.c[field.name] == physical.c.sys_id))
    return sa.and_(*unchanged)


def _dependent(other: TableDef, field) -> bool:
    """A platform record about the record (an SLA running on it): not a touch, and deleted with it."""
    return other.system and field.on_delete == "delete"


def _removable(service: RecordService, tdef: TableDef, batches: list[Batch],
               physical: sa.FromClause | None = None) -> sa.ColumnElement:
    """The records the job created that nobody has touched (of `physical`, or an alias of it)."""
    physical = _physical(service, tdef) if physical is None else physical
    return sa.and_(_created(physical, batches), _untouched(service, tdef, physical))


def _removable_ids(service: RecordService, tdef: TableDef, batches: list[Batch]) -> sa.Select:
    removable = _physical(service, tdef).alias("removable")
    return sa.select(removable.c.sys_id).where(_removable(service, tdef, batches, removable))


def _lock(service: RecordService, tdef: TableDef, batches: list[Batch]) -> None:
    """PostgreSQL: lock the created rows, so none is touched between the count, the audit and the
    DELETE (an update waits, then finds the record gone). SQLite: the write lock already does."""
    if service.conn.dialect.name != "postgresql":
        return
    physical = _physical(service, tdef)
    locked = sa.select(physical.c.sys_id).where(_created(physical, batches)).with_for_update().subquery()
    service.conn.execute(sa.select(sa.func.count()).select_from(locked))


def _count(service: RecordService, tdef: TableDef, batches: list[Batch]) -> TableUndo:
    conn, physical = service.conn, _physical(service, tdef)
    created = _created(physical, batches)
    existing = conn.execute(sa.select(sa.func.count()).where(created)).scalar_one()
    removable = conn.execute(sa.select(sa.func.count()).where(_removable(service, tdef, batches))).scalar_one()
    name, ids = physical.c[_name_field(tdef)], _removable_ids(service, tdef, batches).subquery()
    kept = sa.and_(created, ~sa.exists().where(ids.c.sys_id == physical.c.sys_id))
    names = conn.execute(sa.select(name).where(kept).order_by(name).limit(NAMES_SHOWN)).scalars().all()
    waiting, sent = _emails(service, _removable_ids(service, tdef, batches))
    total = sum(b.count for b in batches)
    return TableUndo(tdef.name, tdef.label, total, removable, existing - removable, max(total - existing, 0),
                     tuple(str(n) for n in names), waiting, sent)


def _name_field(tdef: TableDef) -> str:
    """How people know a record: its number, else its display field, else its sys_id."""
    for name in ("number", tdef.display):
        if name and tdef.field(name) is not None and tdef.field(name).stored:
            return name
    return "sys_id"


def _emails(service: RecordService, ids: sa.Select) -> tuple[int, int]:
    """(waiting, sent) e-mails about the records `ids` selects."""
    email = service.storage.physical(EMAIL)
    about = email.c.instance.in_(ids.scalar_subquery())
    waiting, sent = service.conn.execute(sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((email.c.state == READY, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((email.c.state.in_(SENT), 1), else_=0)), 0)).where(about)).one()
    return waiting, sent


def _cancel_emails(service: RecordService, ids: sa.Select) -> int:
    """Cancel the e-mails still waiting about the records `ids` selects: audited, set-based."""
    conn, user = service.conn, service.actor.user_name
    email = service.storage.physical(EMAIL)
    waiting = sa.and_(email.c.instance.in_(ids.scalar_subquery()), email.c.state == READY)
    stamp = sa.literal(now(), sa.DateTime)
    columns = (stamps.new_rows_sql("sys_audit", user, stamp, new_sys_id_sql(conn.dialect.name, email))
               | stamps.audit_columns_sql(email, "state", email.c.state, sa.literal(CANCELED, sa.Text), user,
                                          service.transaction))
    audit = service.storage.physical("sys_audit")
    conn.execute(sa.insert(audit).from_select(list(columns), sa.select(*columns.values()).where(waiting)))
    canceled = conn.execute(sa.update(email).where(waiting).values(
        state=CANCELED, **stamps.touched_sql(email, user, stamp))).rowcount
    service.written.update({EMAIL, "sys_audit"})
    return canceled


def _delete(service: RecordService, tdef: TableDef, batches: list[Batch]) -> int:
    """Delete the untouched records: set-based, or one by one where rules or guards must see each."""
    conn, physical = service.conn, _physical(service, tdef)
    removable = _removable(service, tdef, batches)
    classes = conn.execute(sa.select(physical.c.sys_class_name).where(removable).distinct()).scalars().all()
    if any(_one_by_one(service, name) for name in classes):
        found = conn.execute(sa.select(physical.c.sys_id, physical.c.sys_class_name).where(removable)).all()
        for sys_id, class_name in found:  # the rules and guards of each record run
            service.delete(class_name, sys_id)
        return len(found)
    for name in classes:
        _audit_deletions(service, physical, service.defs.tables[name], removable)
    ids = sa.select(physical.c.sys_id).where(removable).scalar_subquery()
    for other, field in service._referrers(tdef):
        if _dependent(other, field):
            dependents = service.storage.physical(other.name)
            conn.execute(sa.delete(dependents).where(dependents.c[field.name].in_(ids)))
            service.written.add(other.name)
    deleted = conn.execute(sa.delete(physical).where(removable)).rowcount
    service.written.update({tdef.name, "sys_audit"})
    return deleted


def _one_by_one(service: RecordService, table: str) -> bool:
    """Whether deleting a record of `table` runs something per record (rules, notifications, guards)."""
    hooked = service.automation is not None and service.automation.has_hooks(table, "delete")
    return hooked or bool(DELETE_GUARDS.get(table))


def _audit_deletions(service: RecordService, physical: sa.Table, tdef: TableDef, removable: sa.ColumnElement) -> None:
    """One `DELETED` audit row per removable record of class `tdef`, its values as JSON (as
    RecordService.delete writes, the values as the database renders them as text)."""
    conn, user = service.conn, service.actor.user_name
    snapshot = _json_sql(conn.dialect.name, [(f.name, _as_text(physical.c[f.name], f.type))
                                             for f in tdef.stored_fields if not f.ftype.hidden and f.name in physical.c])
    columns = (stamps.new_rows_sql("sys_audit", user, now(), new_sys_id_sql(conn.dialect.name, physical))
               | stamps.audit_columns_sql(physical, "DELETED", snapshot, sa.null(), user, service.transaction))
    where = sa.and_(removable, physical.c.sys_class_name == tdef.name)
    conn.execute(sa.insert(service.storage.physical("sys_audit")).from_select(
        list(columns), sa.select(*columns.values()).where(where)))


def _json_sql(dialect: str, pairs: list[tuple[str, sa.ColumnElement]]) -> sa.ColumnElement:
    """A JSON object of (key, value) pairs, built by the database, as text."""
    chunks = [pairs[i:i + JSON_PAIRS] for i in range(0, len(pairs), JSON_PAIRS)]

    def flat(chunk: list[tuple[str, sa.ColumnElement]]) -> list[sa.ColumnElement]:
        return [x for key, value in chunk for x in (sa.literal(key, sa.Text), value)]

    if dialect == "postgresql":
        merged = sa.func.jsonb_build_object(*flat(chunks[0]))
        for chunk in chunks[1:]:
            merged = merged.op("||")(sa.func.jsonb_build_object(*flat(chunk)))
        return sa.cast(merged, sa.Text)
    parts = [sa.func.json_object(*flat(chunk), type_=sa.Text) for chunk in chunks]
    if len(parts) == 1:
        return parts[0]
    inner = [sa.func.substr(p, 2, sa.func.length(p) - 2, type_=sa.Text) for p in parts]  # without their braces
    joined = inner[0]
    for part in inner[1:]:
        joined = joined + sa.literal(",", sa.Text) + part
    return sa.literal("{", sa.Text) + joined + sa.literal("}", sa.Text)


def created_noun(service: RecordService, job: Job, count: int) -> str:
    """What the job created, as a noun for `count` of them: "cases", or "records" for several tables."""
    tables = {b.table for b in created_batches(job)}
    if len(tables) == 1 and next(iter(tables)) in service.defs.tables:
        return _noun(service.defs.tables[next(iter(tables))].label, count)
    return _noun("record", count)


def _noun(label: str, count: int) -> str:
    word = label.lower()
    if count == 1:
        return word
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def find_undo(service: RecordService, job_id: str) -> tuple[Job, Undo | None, str | None]:
    """A job, what undoing it would do now (None when there is nothing to undo), and why the actor
    may not or there is nothing (None when they may): what an undo's confirmation shows."""
    job = allowed_job(service, get_job(service.conn, service.storage, job_id), job_id)
    conflict = undo_conflict(job)
    return job, (None if conflict else plan_undo(service, job)), conflict or undo_refusal(service, job)


__all__ = ["CREATED", "UNDONE", "Batch", "TableUndo", "Undo", "created_batches", "created_count", "created_noun",
           "find_undo",
           "plan_undo", "recording", "undo_conflict", "undo_job", "undo_refusal"]
