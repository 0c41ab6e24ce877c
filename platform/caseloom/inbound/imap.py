"""Polling a mailbox: the worker reads unseen messages from CASELOOM_IMAP_URL
(`imap://user:password@host:143/INBOX`, or `imaps://` for TLS on 993), acts on each in a
transaction of its own (caseloom.inbound.receive), then flags it \\Seen on the server.

A message is flagged only after its work has committed; a worker that dies in between leaves it
unseen, and the next poll reads it again, when its Message-ID makes it a duplicate (kept as
received-ignored, nothing done twice). A message that cannot be read as an e-mail at all is flagged
\\Seen and \\Flagged (for a person to look at) and logged, so it does not come back every poll. So
is one the definitions refuse (a rule or an effect raising): its work is rolled back and it is kept
as received-ignored with the reason.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..access import AccessDenied
from ..database import write_transaction
from ..effects.run import EffectFailed
from ..properties import Properties
from ..records import Conflict, RecordError
from .message import NotAnEmail, parse
from .receive import MAX_BYTES, keep_refused, receive

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger(__name__)
# what the definitions refuse a message with (a rule, an effect, access): rolled back, then kept as
# received-ignored with the reason and flagged for a person, instead of stopping every later poll
# at it. Anything else (the database gone) stops the poll and leaves the message unseen for the next.
REFUSALS = (RecordError, EffectFailed, AccessDenied, Conflict)
BATCH = 200  # messages read per poll at most; the rest wait for the next
TIMEOUT = 30


@dataclass(frozen=True)
class Mailbox:
    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"
    tls: bool = False


def mailbox_of(url: str) -> Mailbox:
    """The mailbox a CASELOOM_IMAP_URL names; ValueError saying what is wrong with it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("imap", "imaps") or not parts.hostname:
        raise ValueError(f"CASELOOM_IMAP_URL={_shown(url)!r}: expected imap://user:password@host[:port]/FOLDER "
                         "(imaps:// for TLS)")
    if not parts.username:
        raise ValueError(f"CASELOOM_IMAP_URL={_shown(url)!r}: the user name is missing (imap://user:password@host/)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"CASELOOM_IMAP_URL={_shown(url)!r}: the port is not a number from 1 to 65535") from None
    tls = parts.scheme == "imaps"
    return Mailbox(parts.hostname, port or (993 if tls else 143), unquote(parts.username),
                   unquote(parts.password or ""), unquote(parts.path.strip("/")) or "INBOX", tls)


def _shown(url: str) -> str:
    """A URL as it may be shown: the password replaced."""
    parts = urlsplit(url.strip())
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


@dataclass
class PollReport:
    read: int = 0
    outcomes: list[str] = field(default_factory=list)  # created, commented, ignored, refused: one per message

    def __str__(self) -> str:
        counts = {name: self.outcomes.count(name) for name in dict.fromkeys(self.outcomes)}
        return f"{self.read} message(s)" + (": " + ", ".join(f"{n} {k}" for k, n in counts.items()) if counts else "")


def connect(box: Mailbox) -> imaplib.IMAP4:
    client = (imaplib.IMAP4_SSL(box.host, box.port, ssl_context=ssl.create_default_context(), timeout=TIMEOUT)
              if box.tls else imaplib.IMAP4(box.host, box.port, timeout=TIMEOUT))
    try:
        if not box.tls and "STARTTLS" in client.capabilities:
            client.starttls(ssl.create_default_context())
        client.login(box.user, box.password)
        typ, data = client.select(_quoted(box.folder))
        if typ != "OK":
            raise imaplib.IMAP4.error(f"cannot open folder {box.folder!r}: {data[0]!r}")
    except BaseException:
        client.shutdown()
        raise
    return client


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def poll(runtime: Runtime, limit: int = BATCH) -> PollReport:
    """Read and act on up to `limit` unseen messages of the configured mailbox."""
    report = PollReport()
    url = runtime.config.imap_url
    if not url:
        return report
    with runtime.engine.connect() as conn:
        largest = Properties(runtime.defs, runtime.storage, conn).get(MAX_BYTES)
    client = connect(mailbox_of(url))
    try:
        typ, data = client.uid("search", None, "UNSEEN")
        uids = data[0].split()[:limit] if typ == "OK" and data and data[0] else []
        sizes = _sizes(client, uids)
        for uid in uids:
            if sizes.get(uid, 0) > largest:  # its headers only: never held whole (the API's 413 too)
                _keep_oversized(runtime, client, uid, sizes[uid], largest, report)
                continue
            typ, fetched = client.uid("fetch", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched or () if isinstance(item, tuple)), None)
            if typ != "OK" or raw is None:
                continue
            report.read += 1
            flags = "(\\Seen)"
            try:
                inbound = parse(raw)  # before the transaction: read without holding SQLite's write lock
                with write_transaction(runtime.engine) as conn:
                    outcome = receive(runtime.records(conn), inbound, runtime.config.smtp_from)
                report.outcomes.append(outcome.action)
            except NotAnEmail as exc:
                log.warning("IMAP message %s is not an e-mail, flagged for a person: %s", uid.decode(), exc)
                report.outcomes.append("refused")
                flags = "(\\Seen \\Flagged)"
            except REFUSALS as exc:  # the definitions refuse it: the same at every poll, so not read again
                reason = f"refused: {exc}"
                log.warning("IMAP message %s was refused, kept as ignored and flagged for a person: %s",
                            uid.decode(), reason)
                with write_transaction(runtime.engine) as conn:
                    keep_refused(runtime.records(conn), inbound, reason)
                report.outcomes.append("refused")
                flags = "(\\Seen \\Flagged)"
            client.uid("store", uid, "+FLAGS", flags)
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            client.shutdown()
    return report


SIZE = re.compile(rb"UID (\d+)\b.*\bRFC822\.SIZE (\d+)|RFC822\.SIZE (\d+)\b.*\bUID (\d+)")


def _sizes(client: imaplib.IMAP4, uids: list[bytes]) -> dict[bytes, int]:
    """Each message's size in bytes, as the server counts it, in one command."""
    if not uids:
        return {}
    typ, data = client.uid("fetch", b",".join(uids), "(RFC822.SIZE)")
    sizes = {}
    for item in data or () if typ == "OK" else ():
        line = item[0] if isinstance(item, tuple) else item
        found = SIZE.search(line or b"")
        if found:
            uid, size = (found.group(1), found.group(2)) if found.group(1) else (found.group(4), found.group(3))
            sizes[uid] = int(size)
    return sizes


def _keep_oversized(runtime: Runtime, client: imaplib.IMAP4, uid: bytes, size: int, largest: int,
                    report: PollReport) -> None:
    """A message larger than the property allows: read no further than its headers, kept as
    received-ignored with the reason, flagged for a person, so no poll reads it again."""
    report.read += 1
    report.outcomes.append("refused")
    typ, fetched = client.uid("fetch", uid, "(BODY.PEEK[HEADER])")
    head = next((item[1] for item in fetched or () if isinstance(item, tuple)), None) if typ == "OK" else None
    reason = f"refused: the message is larger than {largest:,} bytes ({size:,}; the {MAX_BYTES} property)"
    log.warning("IMAP message %s %s; flagged for a person", uid.decode(), reason)
    try:
        with write_transaction(runtime.engine) as conn:
            keep_refused(runtime.records(conn), head or b"", reason)
    except NotAnEmail:
        pass  # headers without a sender: flagged all the same
    client.uid("store", uid, "+FLAGS", "(\\Seen \\Flagged)")
