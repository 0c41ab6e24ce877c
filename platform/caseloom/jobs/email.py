"""E-mail delivery: every sys_email row in state ready goes out over SMTP and is marked sent; a
temporary failure is tried again later, a permanent one is marked error with the server's reason.

Messages are claimed before they are sent: a batch moves from ready to sending in a
transaction that holds the write lock (SQLite) or locks its rows, skipping rows another
worker holds (PostgreSQL), so two workers never send one message. After sending, the
batch is marked through the record service. A run finds only ready rows, so running it
again sends nothing twice. A message left in sending by a worker that died is claimed
again after SENDING_LEASE: it may then go out twice (with the same Message-ID), never not
at all. With no SMTP host configured nothing is claimed: messages stay ready.

A run keeps its SMTP sessions for all its batches, and sends each batch over up to
CASELOOM_SMTP_CONNECTIONS of them side by side (caseloom.jobs.smtp). A temporary failure
(a 4xx, a lost connection, a timeout) puts the message back to ready with `attempts` counted
and `next_attempt` one minute later, doubling each time up to an hour; after MAX_ATTEMPTS it is
an error. The property caseloom.email.rate_per_minute caps what all workers together send in
any 60 seconds: a claim takes at most what is left of it (caseloom.jobs.mailrate).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..access import SYSTEM
from ..database import write_transaction
from ..properties import Properties
from ..query import All, Query, Term
from ..records import RecordService, now
from ..storage import Storage
from . import mailrate
from .progress import Job, create_job
from .registry import JobRun, execute_job, job
from .smtp import ERROR, RETRY, SENT, Outcome, Sessions, message, watermark

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["deliver_email", "deliver_pending", "message", "watermark"]

JOB = "deliver_email"
TABLE = "sys_email"
READY, SENDING = "ready", "sending"
WAITING = (READY, SENDING)  # not yet delivered, failed or bounced
INBOUND_ADDRESS = "caseloom.email.inbound_address"
BATCH = 250  # messages claimed, sent and marked together
SENDING_LEASE = dt.timedelta(minutes=15)
MAX_ATTEMPTS = 5  # tries of a message with temporary failures before it is an error
FIRST_RETRY, LAST_RETRY = dt.timedelta(minutes=1), dt.timedelta(hours=1)
RATE_WAIT = 5.0  # seconds a run waits at most for the rate limit to let one more go; longer: the run ends
COUNT_SECONDS = 1.0  # a run counts the messages left (its progress's total) at most this often
RATE_PATIENCE = 60.0  # seconds a run waits for the rate limit in all; the minute's sweep goes on from there
CLAIMED = ["sys_id", "recipients", "subject", "body", "target_table", "instance", "attempts"]


def deliver_pending(runtime: Runtime) -> Job | None:
    """The `deliver_email` task: when an SMTP host is configured and e-mail is waiting (and the rate
    limit lets some go), run a deliver_email job for it (a job row only when there is work, so idle
    sweeps leave no trace)."""
    if not runtime.config.smtp_host:
        return None
    table = runtime.storage.physical(TABLE)
    with runtime.engine.connect() as conn:
        if not waiting(conn, runtime.storage):
            return None
        if mailrate.budget(runtime.records(conn), table, _in_flight(table)).left == 0:
            return None
    with write_transaction(runtime.engine) as conn:
        job_id = create_job(conn, runtime.storage, JOB, created_by=SYSTEM.user_name)
    return execute_job(runtime, job_id)


class Tally:
    """What a run came to, message by message."""

    def __init__(self) -> None:
        self.counts = {SENT: 0, RETRY: 0, ERROR: 0}

    def add(self, outcomes: dict[str, Outcome]) -> None:
        for state, _ in outcomes.values():
            self.counts[state] += 1

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        retry = self.counts[RETRY]
        return f"{self.counts[SENT]} sent, {self.counts[ERROR]} failed" + (f", {retry} to retry" if retry else "")


@job(JOB, label="Deliver e-mail")
def deliver_email(run: JobRun) -> str:
    """Claim, send and mark batches over the run's SMTP sessions until no message is waiting (or the
    rate limit or an unreachable server ends the run); progress counts messages."""
    runtime, config = run.runtime, run.runtime.config
    if not config.smtp_host:
        with runtime.engine.connect() as conn:
            left = waiting(conn, runtime.storage)
        return f"no SMTP host configured (CASELOOM_SMTP_HOST): {left} message(s) left ready"
    tally, sessions = Tally(), Sessions(config)
    try:
        ended = _deliver(run, sessions, tally)
    finally:
        sessions.close()
    with write_transaction(runtime.engine) as conn:
        run.progress(conn, tally.done, tally.done)
    return f"{tally}{ended}"


def _deliver(run: JobRun, sessions: Sessions, tally: Tally) -> str:
    """The run's batches; returns why it ended early ("" when nothing is left waiting)."""
    runtime, waited = run.runtime, 0.0
    left, counted = 0, float("-inf")
    while True:
        rows, allowed = _claim(runtime)
        if rows:
            outcomes = sessions.send(rows)
            tally.add(outcomes)
            # Marked whether or not this run still holds the job: the messages went out, and their own
            # claim (state sending) is what keeps them from going out twice. Progress is the run's.
            with write_transaction(runtime.engine) as conn:  # reads then writes: on SQLite, take the lock first
                mark(runtime.records(conn), rows, outcomes)
                # what is left, counted again at most every COUNT_SECONDS (the count reads every waiting
                # message: 40 ms with 100,000 of them, as long as sending a batch), less this run's since
                if time.monotonic() - counted >= COUNT_SECONDS:
                    left, counted = waiting(conn, runtime.storage), time.monotonic()
                else:
                    left = max(left - len(rows), 0)
            with write_transaction(runtime.engine) as conn:
                run.progress(conn, tally.done, tally.done + left, str(tally))
            if sessions.failed is not None:
                return f"; stopped: {sessions.failed[1]}"
            continue
        if allowed.left != 0:
            return ""
        if allowed.free_in > RATE_WAIT or waited >= RATE_PATIENCE:
            with runtime.engine.connect() as conn:
                left = waiting(conn, runtime.storage)
            return (f"; the rate limit ({mailrate.RATE} = {allowed.rate} a minute) is reached: "
                    f"{left} message(s) left ready for a later run") if left else ""
        time.sleep(allowed.free_in)
        waited += allowed.free_in


# -- claiming and marking -----------------------------------------------------------------------


def _claimable_parts(table: sa.Table, moment: dt.datetime) -> tuple[sa.ColumnElement, sa.ColumnElement]:
    """What a run may claim: a lost run's claims (sending, the lease over), and ready messages that
    are due (never tried, or their retry's time has come)."""
    stale = sa.and_(table.c.state == SENDING, table.c.sys_updated_on < moment - SENDING_LEASE)
    due = sa.or_(table.c.next_attempt.is_(None), table.c.next_attempt <= moment)
    return stale, sa.and_(table.c.state == READY, due)


def _in_flight(table: sa.Table) -> sa.ColumnElement:
    """Claimed by a run that is sending them now (not a lost run's, whose lease is over)."""
    return sa.and_(table.c.state == SENDING, table.c.sys_updated_on >= now() - SENDING_LEASE)


def waiting(conn: sa.Connection, storage: Storage) -> int:
    """How many messages a run would claim now (the rate limit aside): each part counted on its own, by the
    index that starts with the state. (In one OR, SQLite's statistics, which average the messages per state,
    read every message ever sent: 0.77 s with a million, once a second while a run delivers.)"""
    table = storage.physical(TABLE)
    parts = [sa.select(sa.func.count()).select_from(table).where(part).scalar_subquery()
             for part in _claimable_parts(table, now())]
    return conn.execute(sa.select(parts[0] + parts[1])).scalar_one()


def claim(runtime: Runtime, limit: int | None = None) -> list[dict]:
    """Move up to `limit` (BATCH) waiting messages to sending, within the rate limit, in a
    transaction of their own, and return them."""
    return _claim(runtime, limit)[0]


def _claim(runtime: Runtime, limit: int | None = None) -> tuple[list[dict], mailrate.Budget]:
    with write_transaction(runtime.engine) as conn:
        service = runtime.records(conn)
        table = runtime.storage.physical(TABLE)
        allowed = mailrate.budget(service, table, _in_flight(table))
        if allowed.left == 0:
            return [], allowed
        return claim_in(service, min(limit or BATCH, allowed.left or BATCH)), allowed


def claim_in(service: RecordService, limit: int | None = None) -> list[dict]:
    """Claim inside the caller's transaction, which must be a `write_transaction`: on SQLite it
    holds the write lock, on PostgreSQL the rows read here stay locked (others skip them) until
    it commits, when they are no longer ready."""
    table, limit, moment = service.storage.physical(TABLE), limit or BATCH, now()
    # A lost run's claims first, then the oldest due messages: each part an ordered walk of sys_email's
    # (state, sys_created_on, sys_id) index that stops at the limit. (One statement with both parts
    # in an OR read and sorted every ready message for each batch: 34 ms a batch with 100,000 waiting.)
    lost, due = _claimable_parts(table, moment)
    stale = _oldest(service.conn, table, lost, limit)
    ids = stale + (_oldest(service.conn, table, due, limit - len(stale)) if len(stale) < limit else [])
    if not ids:
        return []
    service.update_many(TABLE, [(sys_id, {"state": SENDING}) for sys_id in ids])
    if stale:  # already sending, so that write left them as they were: their lease starts again here
        service.conn.execute(sa.update(table).where(table.c.sys_id.in_(stale))
                             .values(sys_updated_on=moment, sys_mod_count=table.c.sys_mod_count + 1))
    rows = service.query(TABLE, Query(Term("sys_id", "in", ids)), CLAIMED)
    _threading(service, rows)
    order = {sys_id: i for i, sys_id in enumerate(ids)}
    return sorted(rows, key=lambda r: order[r["sys_id"]])


def _oldest(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement, limit: int) -> list[str]:
    """The sys_ids of the `limit` oldest messages matching `where`; on PostgreSQL locked, passing over
    those another claim holds."""
    stmt = sa.select(table.c.sys_id).where(where).order_by(table.c.sys_created_on, table.c.sys_id).limit(limit)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(conn.execute(stmt).scalars())


def _threading(service: RecordService, rows: list[dict]) -> None:
    """What lets a reply find its record: the record's number (for the subject) and the address
    replies go to (the caseloom.email.inbound_address property, as Reply-To)."""
    reply_to = Properties(service.defs, service.storage, service.conn).get(INBOUND_ADDRESS)
    by_table: dict[str, list[dict]] = {}
    for row in rows:
        row["reply_to"] = reply_to
        tdef = service.defs.tables.get(row.get("target_table") or "")
        if tdef is not None and tdef.number is not None and tdef.field("number") is not None and row.get("instance"):
            by_table.setdefault(tdef.name, []).append(row)
    for table, items in by_table.items():
        physical = service.storage.physical(table)
        numbers = dict(service.conn.execute(sa.select(physical.c.sys_id, physical.c.number).where(
            physical.c.sys_id.in_([r["instance"] for r in items]))).all())
        for row in items:
            row["number"] = numbers.get(row["instance"])


def mark(service: RecordService, rows: list[dict], outcomes: dict[str, Outcome]) -> None:
    """Mark a sent batch: one update_many through the record service (audited like any write);
    then the records the sent e-mails are filed under whose notification declares a `sent_field`
    get the time in it, where it is still empty."""
    when = now()
    tries = {row["sys_id"]: (row.get("attempts") or 0) + 1 for row in rows}
    service.update_many(TABLE, [(sys_id, marked(outcome, tries[sys_id], when)) for sys_id, outcome in outcomes.items()])
    stamping = {name: note.sent_field for name, note in service.defs.notifications.items() if note.sent_field}
    sent = [sys_id for sys_id, (state, _) in outcomes.items() if state == SENT]
    if stamping and sent:
        _stamp_sent(service, stamping, sent)


def marked(outcome: Outcome, tries: int, when: dt.datetime) -> dict:
    """A message's values after its `tries`-th try came to `outcome`: sent; back to ready for a
    temporary failure, `next_attempt` FIRST_RETRY later, doubling per try up to LAST_RETRY; an
    error for a permanent failure or the MAX_ATTEMPTS-th temporary one."""
    state, reason = outcome
    if state == SENT:
        return {"state": SENT, "type": "sent", "error": reason, "attempts": tries, "sent_on": when,
                "next_attempt": None}
    if state == RETRY and tries < MAX_ATTEMPTS:
        return {"state": READY, "type": "send-ready", "error": reason, "attempts": tries,
                "next_attempt": when + min(FIRST_RETRY * 2 ** (tries - 1), LAST_RETRY)}
    if state == RETRY:
        reason = f"gave up after {tries} attempts: {reason}"
    return {"state": ERROR, "type": "send-failed", "error": reason, "attempts": tries, "next_attempt": None}


def _stamp_sent(service: RecordService, stamping: dict[str, str], sent: list[str]) -> None:
    """Set each stamping notification's `sent_field` on the records its sent e-mails are filed
    under: one set-based update per table and field (caseloom.setwrite, audited, no rules)."""
    from ..setwrite import update_where

    table = service.storage.physical(TABLE)
    targets: dict[tuple[str, str], list[str]] = {}
    for target_table, instance, notification in service.conn.execute(
            sa.select(table.c.target_table, table.c.instance, table.c.notification)
            .where(table.c.sys_id.in_(sent), table.c.notification.in_(list(stamping)))):
        tdef = service.defs.tables.get(target_table or "")
        if tdef is not None and instance and tdef.field(stamping[notification]) is not None:
            targets.setdefault((tdef.name, stamping[notification]), []).append(instance)
    when = now()
    for (name, field), ids in targets.items():
        update_where(service, service.defs.tables[name],
                     All((Term("sys_id", "in", ids), Term(field, "empty"))), {field: when})


