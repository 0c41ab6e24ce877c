"""E-mail delivery: every sys_email row in state ready goes out over SMTP and is marked sent,
or error with the server's reason.

Messages are claimed before they are sent: a batch moves from ready to sending in a
transaction that holds the write lock (SQLite) or locks its rows, skipping rows another
worker holds (PostgreSQL), so two workers never send one message. After sending, the
batch is marked through the record service. A run finds only ready rows, so running it
again sends nothing twice. A message left in sending by a worker that died is claimed
again after SENDING_LEASE: it may then go out twice (with the same Message-ID), never not
at all. With no SMTP host configured nothing is claimed: messages stay ready.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..access import SYSTEM
from ..config import Config
from ..database import write_transaction
from ..properties import Properties
from ..query import All, Query, Term
from ..records import RecordService, now
from ..storage import Storage
from .progress import Job, create_job
from .registry import JobRun, execute_job, job

if TYPE_CHECKING:
    from ..runtime import Runtime

JOB = "deliver_email"
TABLE = "sys_email"
READY, SENDING, SENT, ERROR = "ready", "sending", "sent", "error"
INBOUND_ADDRESS = "caseloom.email.inbound_address"
BATCH = 50
SENDING_LEASE = dt.timedelta(minutes=15)
SMTP_TIMEOUT = 30  # seconds for connecting and for each SMTP command

Outcome = tuple[str, str | None]  # (state, error text)


def deliver_pending(runtime: Runtime) -> Job | None:
    """The `deliver_email` task: when an SMTP host is configured and e-mail is waiting, run a
    deliver_email job for it (a job row only when there is work, so idle sweeps leave no trace)."""
    if not runtime.config.smtp_host:
        return None
    with runtime.engine.connect() as conn:
        if not waiting(conn, runtime.storage):
            return None
    with runtime.engine.begin() as conn:
        job_id = create_job(conn, runtime.storage, JOB, created_by=SYSTEM.user_name)
    return execute_job(runtime, job_id)


@job(JOB)
def deliver_email(run: JobRun) -> str:
    """Claim, send and mark batches until no message is waiting; progress counts messages."""
    runtime, config = run.runtime, run.runtime.config
    if not config.smtp_host:
        with runtime.engine.connect() as conn:
            left = waiting(conn, runtime.storage)
        return f"no SMTP host configured (CASELOOM_SMTP_HOST): {left} message(s) left ready"
    sent = failed = 0
    while rows := claim(runtime):
        outcomes = send(config, rows)
        sent += sum(1 for state, _ in outcomes.values() if state == SENT)
        failed += sum(1 for state, _ in outcomes.values() if state == ERROR)
        # Marked whether or not this run still holds the job: the messages went out, and their own
        # claim (state sending) is what keeps them from going out twice. Progress is the run's.
        with write_transaction(runtime.engine) as conn:  # reads then writes: on SQLite, take the lock first
            mark(runtime.records(conn), outcomes)
            left = waiting(conn, runtime.storage)
        with runtime.engine.begin() as conn:
            run.progress(conn, sent + failed, sent + failed + left, _summary(sent, failed))
    with runtime.engine.begin() as conn:
        run.progress(conn, sent + failed, sent + failed)
    return _summary(sent, failed)


def _summary(sent: int, failed: int) -> str:
    return f"{sent} sent, {failed} failed"


# -- claiming and marking -----------------------------------------------------------------------


def _claimable(table: sa.Table) -> sa.ColumnElement:
    stale = now() - SENDING_LEASE
    return sa.or_(table.c.state == READY, sa.and_(table.c.state == SENDING, table.c.sys_updated_on < stale))


def waiting(conn: sa.Connection, storage: Storage) -> int:
    """How many messages a run would claim now."""
    table = storage.physical(TABLE)
    return conn.execute(sa.select(sa.func.count()).select_from(table).where(_claimable(table))).scalar_one()


def claim(runtime: Runtime, limit: int | None = None) -> list[dict]:
    """Move up to `limit` (BATCH) waiting messages to sending, in a transaction of their own, and return them."""
    with write_transaction(runtime.engine) as conn:
        return claim_in(runtime.records(conn), limit)


def claim_in(service: RecordService, limit: int | None = None) -> list[dict]:
    """Claim inside the caller's transaction, which must be a `write_transaction`: on SQLite it
    holds the write lock, on PostgreSQL the rows read here stay locked (others skip them) until
    it commits, when they are no longer ready."""
    table = service.storage.physical(TABLE)
    stmt = (sa.select(table.c.sys_id).where(_claimable(table))
            .order_by(table.c.sys_created_on, table.c.sys_id).limit(limit or BATCH))
    if service.conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(service.conn.execute(stmt).scalars())
    if not ids:
        return []
    service.update_many(TABLE, [(sys_id, {"state": SENDING}) for sys_id in ids])
    rows = service.query(TABLE, Query(Term("sys_id", "in", ids)),
                         ["sys_id", "recipients", "subject", "body", "target_table", "instance"])
    _threading(service, rows)
    order = {sys_id: i for i, sys_id in enumerate(ids)}
    return sorted(rows, key=lambda r: order[r["sys_id"]])


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


def mark(service: RecordService, outcomes: dict[str, Outcome]) -> None:
    """Mark a sent batch: one update_many through the record service (audited like any write);
    then the records the sent e-mails are filed under whose notification declares a `sent_field`
    get the time in it, where it is still empty."""
    service.update_many(TABLE, [(sys_id, {"state": state, "error": error,
                                          "type": "sent" if state == SENT else "send-failed"})
                                for sys_id, (state, error) in outcomes.items()])
    stamping = {name: note.sent_field for name, note in service.defs.notifications.items() if note.sent_field}
    sent = [sys_id for sys_id, (state, _) in outcomes.items() if state == SENT]
    if stamping and sent:
        _stamp_sent(service, stamping, sent)


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


# -- SMTP -----------------------------------------------------------------------------------------


def send(config: Config, rows: list[dict]) -> dict[str, Outcome]:
    """Send each message over one SMTP connection; returns sys_id -> (sent | error, reason)."""
    try:
        smtp = connect(config)
    except (OSError, smtplib.SMTPException) as exc:
        reason = f"could not connect to the SMTP server {config.smtp_host}:{config.smtp_port}: {_reason(exc)}"
        return {row["sys_id"]: (ERROR, reason) for row in rows}
    try:
        return {row["sys_id"]: _send_one(smtp, config, row) for row in rows}
    finally:
        _quit(smtp)


def _quit(smtp: smtplib.SMTP) -> None:
    """End the session; the messages are already accepted, so a failing QUIT changes nothing."""
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def connect(config: Config) -> smtplib.SMTP:
    """An SMTP session: implicit TLS on port 465, else STARTTLS as CASELOOM_SMTP_STARTTLS says
    (auto: when the server offers it), then login when a user is configured."""
    implicit_tls = config.smtp_port == 465
    factory = smtplib.SMTP_SSL if implicit_tls else smtplib.SMTP
    smtp = factory(config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT)
    try:
        if not implicit_tls and config.smtp_starttls != "false":
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            elif config.smtp_starttls == "true":
                raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS (CASELOOM_SMTP_STARTTLS=true)")
        if config.smtp_user:
            smtp.login(config.smtp_user, config.smtp_password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def _send_one(smtp: smtplib.SMTP, config: Config, row: dict) -> Outcome:
    recipients = [a.strip() for a in (row["recipients"] or "").split(",") if a.strip()]
    if not recipients:
        return ERROR, "no recipients"
    try:
        refused = smtp.send_message(message(config, row, recipients), config.smtp_from, recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        return ERROR, "every recipient was refused: " + _refusals(exc.recipients)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        return ERROR, _reason(exc)
    if refused:
        return SENT, "some recipients were refused: " + _refusals(refused)
    return SENT, None


def message(config: Config, row: dict, recipients: list[str]) -> EmailMessage:
    """The message of a sys_email row. Its Message-ID comes from the row, so a copy sent again
    after a lost worker is recognisably the same message."""
    msg = EmailMessage()
    msg["From"] = config.smtp_from
    msg["To"] = ", ".join(recipients)
    subject = " ".join((row["subject"] or "").split())  # no line breaks in a header
    number = row.get("number")
    if number and number.lower() not in subject.lower():  # a reply finds its record by the number too
        subject = f"{subject} [{number}]" if subject else number
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    domain = config.smtp_from.rpartition("@")[2].strip("> ") or "caseloom"
    msg["Message-ID"] = f"<{row['sys_id']}@{domain}>"
    if row.get("reply_to"):
        msg["Reply-To"] = row["reply_to"]
    msg.set_content(f"{(row['body'] or '').rstrip()}\n\n{watermark(row['sys_id'])}\n")
    return msg


def watermark(sys_id: str) -> str:
    """The line a reply quotes back, naming the e-mail it answers (and so its record)."""
    return f"Ref:MSG{sys_id}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"sender {exc.sender} refused: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return str(exc) or type(exc).__name__


def _refusals(refused: dict) -> str:
    return "; ".join(f"{address}: {code} {_text(text)}" for address, (code, text) in sorted(refused.items()))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
