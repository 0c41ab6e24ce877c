"""What a received e-mail does: ignored (and why), a comment on the record it answers, or a new
record, as the definitions' inbound e-mail actions say. Every message is kept in sys_email
(type `received`, or `received-ignored` with the reason), filed under the record it touched.

The order, as ServiceNow's: a duplicate (its Message-ID seen before) and our own message coming
back are ignored first, then automatic replies, then bounces (which mark the outbound e-mail that
bounced `bounced`), then senders over the rate limit (a loop); then the record the message
answers is looked for (the watermark `Ref:MSG…` in the body, the In-Reply-To and References
headers, a record number in the subject); the first inbound action by order whose condition
holds, of the reply type when a record was found and of the new type otherwise, runs.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from email.utils import parseaddr

import sqlalchemy as sa

from ..access import SYSTEM
from ..definitions.model import InboundActionDef, TableDef
from ..fieldtypes import length_limit
from ..properties import Properties
from ..query.evaluate import evaluate
from ..records import RecordError, RecordService, now, record_by
from ..templates import render_value
from .message import Inbound, parse, reply_text

TABLE = "sys_email"
WATERMARK = re.compile(r"Ref:MSG([0-9a-f]{32})\b")
OUR_ID = re.compile(r"^([0-9a-f]{32})@")
REPLY_TO_CLOSED = "caseloom.email.inbound.reply_to_closed"
UNKNOWN_SENDER = "caseloom.email.inbound.unknown_sender"
PER_SENDER = "caseloom.email.inbound.per_sender_per_hour"
MAX_BYTES = "caseloom.email.inbound.max_bytes"
MAX_ATTACHMENTS = "caseloom.email.inbound.max_attachments"
INBOUND_ADDRESS = "caseloom.email.inbound_address"


@dataclass
class Outcome:
    """What a message did: `action` created, commented or ignored; the record (`table`, `sys_id`)
    it created or commented on; `reason` why it was ignored; `email` the sys_email row kept."""

    action: str
    table: str | None = None
    sys_id: str | None = None
    reason: str | None = None
    email: str | None = None

    def as_json(self) -> dict:
        return {"action": self.action, "table": self.table or "", "sys_id": self.sys_id or "",
                "reason": self.reason or "", "email": self.email or ""}


def receive(service: RecordService, message: bytes | Inbound, own_address: str = "") -> Outcome:
    """Act on one message inside the caller's transaction: raw (NotAnEmail when it is not one), or
    already parsed, as the callers do before their transaction so that a large message is never
    read with SQLite's write lock held. When it raises, the caller rolls its transaction back (the
    IMAP poll's unit per message, the inbound route's request), so no savepoint of its own is
    needed: two round trips a message fewer. `own_address`: the address our e-mails are sent from
    (CASELOOM_SMTP_FROM); mail from it is a loop."""
    inbound = _read(message)
    props = Properties(service.defs, service.storage, service.conn)
    system = _as_system(service)
    ours = {parseaddr(a)[1].strip().lower() for a in (own_address, props.get(INBOUND_ADDRESS))} - {""}
    if inbound.sender in ours:
        outcome = Outcome("ignored", reason=f"a loop: it comes from our own address {inbound.sender}")
    else:
        outcome = _decide(system, props, inbound)
    outcome.email = _keep(system, inbound, outcome)
    outcome.reason = _reason(inbound, outcome)  # what was left out of it too (attachments, a cut subject)
    return outcome


def keep_refused(service: RecordService, message: bytes | Inbound, reason: str) -> str:
    """Keep a message whose work was refused and rolled back as received-ignored with `reason`, in
    the caller's (new) transaction; the sys_email row's sys_id."""
    return _keep(_as_system(service), _read(message), Outcome("ignored", reason=reason))


def _read(message: bytes | Inbound) -> Inbound:
    """A message as parsed: raw bytes are parsed here (NotAnEmail when they are not an e-mail)."""
    return message if isinstance(message, Inbound) else parse(message)


def _as_system(service: RecordService) -> RecordService:
    """The caller's unit of work, acted on as the system: a message's work is the definitions'."""
    return service.__class__(service.storage, service.conn, SYSTEM, automation=service.automation)


def _decide(service: RecordService, props: Properties, inbound: Inbound) -> Outcome:
    ignored = _ignored_before_threading(service, props, inbound)
    if ignored is not None:
        return ignored
    found = _answered_record(service, inbound)
    email_row = _as_row(inbound)
    for action in service.defs.inbound_email:
        if (action.type == "reply") != (found is not None):
            continue
        if found is not None and not _handles(service, action, found[0]):
            continue
        if action.condition is not None and not evaluate(action.condition, email_row,
                                                          table=service.defs.tables[TABLE], tables=service.defs.tables):
            continue
        if found is not None:
            return _reply(service, props, action, inbound, *found)
        return _new(service, props, action, inbound)
    if found is not None:
        return Outcome("ignored", found[0].name, found[1]["sys_id"],
                       f"it answers {found[0].label.lower()} {_name(found[0], found[1])}, which no reply action handles")
    return Outcome("ignored", reason="no inbound e-mail action takes a new message like this one")


RECEIVED = ("received", "received-ignored")
STATEMENTS = {
    # the checks before threading, in one round trip: our own message coming back (by its sys_id),
    # the Message-ID received before, and the sender's messages since `since`
    "checks": lambda emails: sa.select(
        sa.select(emails.c.sys_id).where(emails.c.sys_id == sa.bindparam("ours")).scalar_subquery().label("ours"),
        sa.select(emails.c.sys_id).where(emails.c.message_id == sa.bindparam("message_id"),
                                         emails.c.type.in_(RECEIVED)).limit(1).scalar_subquery().label("seen"),
        sa.select(sa.func.count()).select_from(emails).where(
            emails.c.sender == sa.bindparam("sender"), emails.c.type.in_(RECEIVED),
            emails.c.sys_created_on >= sa.bindparam("since")).scalar_subquery().label("recent")),
    "by_id": lambda emails: sa.select(emails.c.target_table, emails.c.instance).where(
        emails.c.sys_id == sa.bindparam("key"), emails.c.instance.is_not(None)).limit(1),
    "by_message_id": lambda emails: sa.select(emails.c.target_table, emails.c.instance).where(
        emails.c.message_id == sa.bindparam("key"), emails.c.instance.is_not(None)).limit(1),
}


def _ask(service: RecordService, name: str, **params) -> sa.CursorResult:
    """Run one of the statements above, built once per definitions set (building costs more than running)."""
    key = ("inbound", name)
    stmt = service.storage.cache.get(key)
    if stmt is None:
        stmt = service.storage.cache[key] = STATEMENTS[name](service.storage.physical(TABLE))
    return service.conn.execute(stmt, params)


def _ignored_before_threading(service: RecordService, props: Properties, inbound: Inbound) -> Outcome | None:
    ours = OUR_ID.match(inbound.message_id or "")
    checks = _ask(service, "checks", ours=ours.group(1) if ours else None, message_id=inbound.message_id or None,
                  sender=inbound.sender, since=now() - dt.timedelta(hours=1)).one()
    if checks.ours is not None:
        return Outcome("ignored", reason="a loop: it is our own outbound message coming back")
    if checks.seen is not None:
        return Outcome("ignored", reason=f"a duplicate: Message-ID <{inbound.message_id}> was received before "
                                         f"(sys_email {checks.seen})")
    if inbound.bounce:
        return _bounce(service, inbound)
    if inbound.auto:
        return Outcome("ignored", reason=inbound.auto)
    limit = props.get(PER_SENDER)
    if limit > 0 and checks.recent >= limit:
        return Outcome("ignored", reason=f"a loop or a flood: {checks.recent} messages from {inbound.sender} in the last "
                                         f"hour (the {PER_SENDER} property allows {limit})")
    return None


def _bounce(service: RecordService, inbound: Inbound) -> Outcome:
    """A delivery failure report: the outbound e-mail it returns (by its Message-ID, the headers or
    the watermark) is marked bounced with the report's Status and Diagnostic-Code (RFC 3464), or
    its first lines when it has no delivery status part."""
    emails = service.storage.physical(TABLE)
    candidates = [m.group(1) for i in (*inbound.original_ids, *inbound.in_reply_to) if (m := OUR_ID.match(i))]
    candidates += WATERMARK.findall(inbound.body)
    ids = list(dict.fromkeys(candidates))
    found = service.conn.execute(sa.select(emails.c.sys_id).where(
        emails.c.sys_id.in_(ids or ["-"]), emails.c.type.notin_(RECEIVED))).scalars().all()
    summary = inbound.delivery_status or " ".join(inbound.body.split())[:300] or inbound.subject
    if found:
        service.update_many(TABLE, [(sys_id, {"state": "bounced", "type": "send-failed", "next_attempt": None,
                                              "error": f"bounced: {summary}"}) for sys_id in found])
        return Outcome("ignored", reason=f"a bounce of {', '.join(found)}: {summary}"[:1000])
    return Outcome("ignored", reason=f"a bounce for no e-mail of ours: {summary}"[:1000])


def _answered_record(service: RecordService, inbound: Inbound) -> tuple[TableDef, dict] | None:
    """The record a reply answers: by the watermark, then In-Reply-To/References, then a number."""
    ids = WATERMARK.findall(inbound.body)
    for sys_id in ids:
        found = _record_of_email(service, "by_id", sys_id)
        if found:
            return found
    for message_id in inbound.in_reply_to:
        ours = OUR_ID.match(message_id)
        found = _record_of_email(service, "by_id", ours.group(1)) if ours else \
            _record_of_email(service, "by_message_id", message_id)
        if found:
            return found
    for action in service.defs.inbound_email:
        tdef = service.defs.tables[action.table]
        if action.type != "reply" or tdef.number is None:
            continue
        for number in re.findall(rf"\b{re.escape(tdef.number.prefix)}\d{{{tdef.number.digits}}}\b", inbound.subject,
                                 flags=re.IGNORECASE):
            row = _one(service, tdef.name, "number", number.upper())
            if row:
                return service.defs.tables[row["sys_class_name"]], row
    return None


def _record_of_email(service: RecordService, statement: str, key: str) -> tuple[TableDef, dict] | None:
    row = _ask(service, statement, key=key).first()
    if row is None or row.target_table not in service.defs.tables:
        return None
    record = _one(service, row.target_table, "sys_id", row.instance)
    if record is None:
        return None
    return service.defs.tables[record["sys_class_name"]], record


def _one(service: RecordService, table: str, field: str, value) -> dict | None:
    """The first record of `table` whose `field` is `value` (its statement built once per definitions)."""
    key = ("inbound", table, field)
    stmt = service.storage.cache.get(key)
    if stmt is None:
        stmt = service.storage.cache[key] = record_by(service.storage, table, field).limit(1)
    row = service.conn.execute(stmt, {"key": value}).mappings().first()
    return dict(row) if row else None


def _handles(service: RecordService, action: InboundActionDef, tdef: TableDef) -> bool:
    return action.table in (tdef.name, *service.defs.ancestors(tdef.name))


def _reply(service: RecordService, props: Properties, action: InboundActionDef, inbound: Inbound,
           tdef: TableDef, record: dict) -> Outcome:
    if not _may_reply(service, action, inbound.sender, tdef, record):
        return Outcome("ignored", tdef.name, record["sys_id"],
                       f"{inbound.sender} may not comment on {tdef.label.lower()} {_name(tdef, record)}: not an address "
                       f"the record names, nor one its e-mails went to, nor a user who may write its {action.comment}")
    text = f"reply from: {inbound.sender}\n\n{reply_text(inbound.body)}"
    closed = action.closed is not None and evaluate(action.closed, record, table=tdef, tables=service.defs.tables)
    if closed and props.get(REPLY_TO_CLOSED) == "new":
        new_action = next((a for a in service.defs.inbound_email if a.type == "new" and a.table == action.table), None)
        if new_action is not None:
            link = {action.closed_link: record["sys_id"]} if action.closed_link else {}
            return _new(service, props, new_action, inbound, link, follows=(tdef, record))
    values = {action.comment: _fitted(tdef, action.comment, text, inbound)}
    if closed:
        values.update(action.closed_reopen)
    with service.by_definitions():
        record = service.update(tdef.name, record["sys_id"], values)
    _attach(service, props, tdef.name, record["sys_id"], inbound)
    _effects(service, props, action, tdef, record)
    return Outcome("commented", tdef.name, record["sys_id"],
                   f"reopened {tdef.label.lower()} {_name(tdef, record)}" if closed else None)


def _may_reply(service: RecordService, action: InboundActionDef, sender: str, tdef: TableDef, record: dict) -> bool:
    """Whether a reply's sender may add to the record: an address the record names (an e-mail field of
    its own, or of a record a reference points at: the case's contact), an address one of our e-mails
    filed under it went to, or an active user with that address whose access rules let them write
    its `comment` field on it. Anyone else (a number in a subject is easily guessed) is ignored."""
    if sender in named_addresses(service, tdef, record):
        return True
    emails = service.storage.physical(TABLE)
    for recipients in service.conn.execute(sa.select(emails.c.recipients).where(
            emails.c.instance == record["sys_id"], emails.c.type.notin_(RECEIVED),
            sa.func.lower(emails.c.recipients).contains(sender, autoescape=True)).limit(50)).scalars():
        if sender in {a.strip().lower() for a in recipients.split(",")}:
            return True
    return any(_user_may_write(service, actor, tdef, record, action.comment) for actor in _users_of(service, sender))


def named_addresses(service: RecordService, tdef: TableDef, record: dict) -> set[str]:
    """The e-mail addresses a record names, lower-cased: its e-mail fields and those of the records its
    references point at (a case's contact; a user's contact or consumer), in one read. Not through a
    reference to its own kind of record (a case's parent, a user's manager): theirs are not its own."""
    key = ("inbound", "addresses of", tdef.name)
    paths = service.storage.cache.get(key)
    if paths is None:
        tables, found, own = service.defs.tables, [], {tdef.name, *service.defs.lineage(tdef.name)}
        for name, field in tdef.fields.items():
            if field.type == "email":
                found.append(name)
            elif field.type == "reference" and field.reference in tables and field.reference not in own:
                found += [f"{name}.{n}" for n, f in tables[field.reference].fields.items() if f.type == "email"]
        paths = service.storage.cache[key] = tuple(found)
    if not paths:
        return set()
    row = service.one(tdef.name, record["sys_id"], list(paths)) or {}  # its statement built once
    return {str(v).strip().lower() for p in paths if (v := row.get(p))}


def _users_of(service: RecordService, sender: str) -> list:
    """The active users whose e-mail is the address (any letter case), as actors with their roles."""
    from ..users import actor_for

    users = service.storage.physical("sys_user")
    ids = service.conn.execute(sa.select(users.c.sys_id).where(
        sa.func.lower(users.c.email) == sender, users.c.active.is_not(False)).limit(10)).scalars().all()
    return [actor for sys_id in ids if (actor := actor_for(service.storage, service.conn, sys_id)) is not None]


def _user_may_write(service: RecordService, actor, tdef: TableDef, record: dict, field: str) -> bool:
    from ..access import AccessDenied
    from ..records import NotFound

    theirs = service.__class__(service.storage, service.conn, actor, automation=service.automation)
    if not theirs.can(tdef.name, "write") or not theirs.can_write_field(tdef.name, field, "write", record):
        return False
    try:
        theirs.check_rows(tdef, [record["sys_id"]], "write")
    except (AccessDenied, NotFound):
        return False
    return True


def _new(service: RecordService, props: Properties, action: InboundActionDef, inbound: Inbound,
         extra: dict | None = None, follows: tuple[TableDef, dict] | None = None) -> Outcome:
    sender_values, known = _sender(service, action, inbound)
    if action.senders and not known and props.get(UNKNOWN_SENDER) != "create":
        return Outcome("ignored", reason=f"unknown sender {inbound.sender} (the {UNKNOWN_SENDER} property is ignore)")
    context = {"email": _as_row(inbound) | {"body": inbound.body}, "sender": known or {}}
    tdef = service.defs.tables[action.table]
    values = {}
    for name, value in action.values.items():
        values[name] = _fitted(tdef, name, render_value(value, context), inbound)
    values.update(sender_values)
    values.update(extra or {})
    with service.by_definitions():
        try:
            record = service.insert(tdef.name, values)
        except RecordError as exc:
            return Outcome("ignored", reason=f"the {tdef.label.lower()} could not be created: {exc}")
    _attach(service, props, tdef.name, record["sys_id"], inbound)
    _effects(service, props, action, tdef, record)
    why = f"a reply to closed {follows[0].label.lower()} {_name(*follows)}" if follows else None
    return Outcome("created", tdef.name, record["sys_id"], why)


def _fitted(tdef: TableDef, name: str, value, inbound: Inbound):
    """A text from the message cut to what its field holds, noted (the whole message is kept in
    sys_email): a long subject must not lose the customer's mail."""
    field = tdef.field(name)
    limit = length_limit(field) if field is not None else None
    if not isinstance(value, str) or limit is None or len(value) <= limit:
        return value
    inbound.problems.append(f"{field.label} cut to {limit:,} characters (it was {len(value):,}; the e-mail has it whole)")
    return value[:limit - 1].rstrip() + "…"


def _sender(service: RecordService, action: InboundActionDef, inbound: Inbound) -> tuple[dict, dict | None]:
    """The values the first known sender gives the new record, and that sender's record."""
    for sender in action.senders:
        row = _one(service, sender.table, sender.email, inbound.sender)
        if row is None:  # an address stored with capitals
            table = service.storage.physical(sender.table)
            found = service.conn.execute(sa.select(table.c.sys_id).where(
                sa.func.lower(table.c[sender.email]) == inbound.sender).limit(1)).scalar()
            row = _one(service, sender.table, "sys_id", found) if found else None
        if row is not None:
            record = {k: ("" if v is None else v) for k, v in row.items()}
            return {k: render_value(v, {"sender": record, "email": _as_row(inbound)})
                    for k, v in sender.values.items()}, record
    return {}, None


def _attach(service: RecordService, props: Properties, table: str, sys_id: str, inbound: Inbound) -> None:
    """The message's files, on the record; one the attachment properties refuse is noted, not fatal,
    and so are those past the number a message may bring."""
    from ..attachments import Refused, attach

    if not inbound.attachments:
        return
    most = props.get(MAX_ATTACHMENTS)
    if len(inbound.attachments) > most:
        inbound.problems.append(f"{len(inbound.attachments) - most:,} of {len(inbound.attachments):,} attachments not "
                                f"kept (the {MAX_ATTACHMENTS} property allows {most:,})")
    for item in inbound.attachments[:most]:
        try:
            attach(service, table, sys_id, item.name, item.content_type, item.data)
        except Refused as exc:
            inbound.problems.append(f"attachment {item.name!r} not kept: {exc.message}")


def _effects(service: RecordService, props: Properties, action: InboundActionDef, tdef: TableDef,
             record: dict) -> None:
    """The action's effects, on the record as the message left it."""
    if not action.effects:
        return
    from ..effects.run import EffectContext, run_effects

    run_effects(EffectContext(service=service, table=tdef, record=record, properties=props.get), action.effects)


def _keep(service: RecordService, inbound: Inbound, outcome: Outcome) -> str:
    row = {**_as_row(inbound), "type": "received-ignored" if outcome.action == "ignored" else "received",
           "state": "ignored" if outcome.action == "ignored" else "processed",
           "reason": _reason(inbound, outcome),
           "target_table": outcome.table, "instance": outcome.sys_id, "headers": inbound.headers}
    service._system_insert(TABLE, [row])
    return row["sys_id"]


def _reason(inbound: Inbound, outcome: Outcome) -> str | None:
    """Why a message was ignored, and what of it was not kept or read as sent."""
    return "; ".join(filter(None, [outcome.reason, *inbound.problems])) or None


def _as_row(inbound: Inbound) -> dict:
    return {"subject": inbound.subject, "body": inbound.body, "sender": inbound.sender,
            "recipients": inbound.recipients, "message_id": inbound.message_id}


def _name(tdef: TableDef, record: dict) -> str:
    return str(record.get("number") or record.get(tdef.display or "sys_id") or record["sys_id"])
