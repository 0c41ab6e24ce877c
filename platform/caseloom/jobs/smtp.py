"""The SMTP side of e-mail delivery: a few sessions per delivery run, and what each message's try came to.

A `Session` connects on its first message and is kept for every batch of the run (connecting
costs more than sending). `Sessions` sends a batch over up to CASELOOM_SMTP_CONNECTIONS of them
side by side, one thread each: a session spends most of its time waiting for the server's reply
to each of the four commands a message takes, and the others send meanwhile. When the server
drops a session mid-run (its own per-session message limit, a 421, a restart) it connects again
and sends that message once more. Each try is told apart as sent, a temporary failure to try
again later (a 4xx reply for the message or for all of its recipients, a lost connection, a
timeout) or a permanent one (a 5xx reply, no recipients).

A message whose addresses are ASCII (nearly all) is rendered with the standard library's legacy
API (`compat32`), which stores header values as given: the modern `EmailMessage` parses every
header it is given, which cost two thirds of a delivery worker's time per message (3 ms of 4.5 on
the bench's machine). Both render the same headers, checked the same way; a message with an
address outside ASCII is an `EmailMessage`, sent with SMTPUTF8 where the server needs it.
"""

from __future__ import annotations

import math
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from email import charset, policy
from email.header import Header
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.utils import formatdate

from ..config import Config

SENT, RETRY, ERROR = "sent", "retry", "error"
SMTP_TIMEOUT = 30  # seconds for connecting and for each SMTP command
CLOSING = 421  # the server is closing the session: connect again
SHARE = 25  # messages of a batch per session at least: a small batch opens no more sessions than it needs

Outcome = tuple[str, str | None]  # (SENT | RETRY | ERROR, reason)
ADDRESSES = ("From", "To", "Reply-To")
UTF8_QP = charset.Charset("utf-8")
UTF8_QP.header_encoding, UTF8_QP.body_encoding = charset.QP, charset.QP
WIRE = policy.compat32.clone(linesep="\r\n")
LONGEST_LINE = 998  # characters in a line of a 7bit body (RFC 5322)


class Session:
    """An SMTP session shared by every message of one delivery run. Once the server cannot be
    reached, `failed` is what every further message of the run comes to at once (no second wait
    for a timeout): a temporary failure, or an error when the server refused the session for good
    (a 5xx to the login)."""

    def __init__(self, config: Config):
        self.config = config
        self.smtp: smtplib.SMTP | None = None
        self.failed: Outcome | None = None

    def send(self, row: dict) -> Outcome:
        """Send one sys_email row (with `reply_to` and `number` from the claim)."""
        recipients = [a.strip() for a in (row["recipients"] or "").split(",") if a.strip()]
        if not recipients:
            return ERROR, "no recipients"
        try:
            msg = wire(self.config, row, recipients)
        except ValueError as exc:  # a header that cannot be written (an address with a line break)
            return ERROR, str(exc)
        outcome = self._try(msg, recipients, last=False)
        return outcome if outcome is not None else self._try(msg, recipients, last=True)

    def _try(self, msg: bytes | EmailMessage, recipients: list[str], last: bool) -> Outcome | None:
        """One try over the session; None when the session was lost and one more try is due."""
        smtp = self._connected()
        if smtp is None:
            return self.failed
        try:
            if isinstance(msg, bytes):
                refused = smtp.sendmail(self.config.smtp_from, recipients, msg)
            else:
                refused = smtp.send_message(msg, self.config.smtp_from, recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            temporary = all(_temporary(code) for code, _ in exc.recipients.values())
            return RETRY if temporary else ERROR, "every recipient was refused: " + _refusals(exc.recipients)
        except smtplib.SMTPServerDisconnected as exc:
            return self._lost(exc, last)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == CLOSING:
                return self._lost(exc, last)
            return RETRY if _temporary(exc.smtp_code) else ERROR, _reason(exc)
        except (smtplib.SMTPException, ValueError) as exc:  # before OSError: SMTPException is one
            return ERROR, _reason(exc)
        except OSError as exc:  # the connection broke or timed out
            return self._lost(exc, last)
        if refused:
            return SENT, "some recipients were refused: " + _refusals(refused)
        return SENT, None

    def _lost(self, exc: BaseException, last: bool) -> Outcome | None:
        self._drop()
        return (RETRY, f"the SMTP session was lost: {_reason(exc)}") if last else None

    def _connected(self) -> smtplib.SMTP | None:
        if self.smtp is None and self.failed is None:
            try:
                self.smtp = connect(self.config)
            except (OSError, smtplib.SMTPException) as exc:
                permanent = isinstance(exc, smtplib.SMTPResponseException) and not _temporary(exc.smtp_code)
                self.failed = (ERROR if permanent else RETRY, f"could not connect to the SMTP server "
                               f"{self.config.smtp_host}:{self.config.smtp_port}: {_reason(exc)}")
        return self.smtp

    def _drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def close(self) -> None:
        """End the session; the messages are already accepted, so a failing QUIT changes nothing."""
        if self.smtp is None:
            return
        try:
            self.smtp.quit()
        except (OSError, smtplib.SMTPException):
            self.smtp.close()
        self.smtp = None


class Sessions:
    """The sessions of one delivery run: a batch is dealt out over as many of them as it has SHARE
    messages, up to the configured number, and sent side by side. Each session stays with its own
    thread's share, so no session is used by two threads at once."""

    def __init__(self, config: Config):
        self.sessions = [Session(config) for _ in range(config.smtp_connections)]
        self.pool = ThreadPoolExecutor(len(self.sessions), "smtp") if len(self.sessions) > 1 else None

    def send(self, rows: list[dict]) -> dict[str, Outcome]:
        """Each row's outcome by sys_id."""
        used = min(len(self.sessions), max(1, math.ceil(len(rows) / SHARE)))
        if used == 1:
            return _send_share(self.sessions[0], rows)
        shares = [rows[i::used] for i in range(used)]
        outcomes: dict[str, Outcome] = {}
        for sent in self.pool.map(_send_share, self.sessions[:used], shares):
            outcomes.update(sent)
        return outcomes

    @property
    def failed(self) -> Outcome | None:
        """The first session's lasting failure, when one cannot reach the server."""
        return next((s.failed for s in self.sessions if s.failed is not None), None)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        for session in self.sessions:
            session.close()


def _send_share(session: Session, rows: list[dict]) -> dict[str, Outcome]:
    return {row["sys_id"]: session.send(row) for row in rows}


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


def headers(config: Config, row: dict, recipients: list[str]) -> list[tuple[str, str]]:
    """The headers of a sys_email row's message. Its Message-ID comes from the row, so a copy sent
    again after a lost worker is recognisably the same message (and a bounce finds the row by it)."""
    subject = " ".join((row["subject"] or "").split())  # no line breaks in a header
    number = row.get("number")
    if number and number.lower() not in subject.lower():  # a reply finds its record by the number too
        subject = f"{subject} [{number}]" if subject else number
    domain = config.smtp_from.rpartition("@")[2].strip("> ") or "caseloom"
    values = [("From", config.smtp_from), ("To", ", ".join(recipients)), ("Subject", subject),
              ("Date", formatdate(usegmt=True)), ("Message-ID", f"<{row['sys_id']}@{domain}>")]
    if row.get("reply_to"):
        values.append(("Reply-To", row["reply_to"]))
    return values


def body(row: dict) -> str:
    return f"{(row['body'] or '').rstrip()}\n\n{watermark(row['sys_id'])}\n"


def message(config: Config, row: dict, recipients: list[str]) -> EmailMessage:
    """The message of a sys_email row, as an `EmailMessage`."""
    return _email_message(headers(config, row, recipients), body(row))


def _email_message(values: list[tuple[str, str]], text: str) -> EmailMessage:
    msg = EmailMessage()
    for name, value in values:
        msg[name] = value
    msg.set_content(text)
    return msg


def wire(config: Config, row: dict, recipients: list[str]) -> bytes | EmailMessage:
    """The message of a sys_email row as it goes over the wire: its bytes, rendered by the legacy
    API, when its addresses are ASCII; else the `EmailMessage` (for SMTPUTF8). A header value with a
    line break is a ValueError either way, as `EmailMessage` has it."""
    values, text = headers(config, row, recipients), body(row)
    if not all(value.isascii() for name, value in values if name in ADDRESSES):
        return _email_message(values, text)
    plain = text.isascii() and all(len(line) <= LONGEST_LINE for line in text.splitlines())
    msg = MIMEText(text, "plain", "us-ascii" if plain else UTF8_QP)
    for name, value in values:
        if "\n" in value or "\r" in value:
            raise ValueError("Header values may not contain linefeed or carriage return characters")
        msg[name] = value if value.isascii() else Header(value, UTF8_QP, header_name=name)
    return msg.as_bytes(policy=WIRE)


def watermark(sys_id: str) -> str:
    """The line a reply quotes back, naming the e-mail it answers (and so its record)."""
    return f"Ref:MSG{sys_id}"


def _temporary(code: int) -> bool:
    return 400 <= code < 500


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
