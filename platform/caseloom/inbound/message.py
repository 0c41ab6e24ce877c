"""One received e-mail, read from its raw RFC 822 bytes into what the platform acts on.

Real mail is messy: headers in odd charsets, a charset Python does not know, broken MIME,
HTML with no text part, Outlook's winmail.dat. Everything here is read defensively: a part that
cannot be decoded as its charset says is decoded as Latin-1 (every byte is a character there)
and the problem is noted; an HTML-only message becomes plain text (scripts, styles and markup
dropped); only bytes that are not an e-mail at all (no header block, no sender) are refused.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.header import Header, decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser

SUBJECT_LENGTH = 255
BODY_LENGTH = 200_000  # characters of text kept from one message (a description or a comment)
HEADERS_LENGTH = 16_000
MESSAGE_ID = re.compile(r"<([^<>\s]{1,250})>")
BOUNCE_SENDERS = ("mailer-daemon", "postmaster")
BULK_PRECEDENCE = ("bulk", "junk", "list", "auto_reply")


class NotAnEmail(ValueError):
    """Bytes that cannot be read as an e-mail (400): the message says why."""


@dataclass
class Attachment:
    name: str
    content_type: str
    data: bytes


@dataclass
class Inbound:
    """What the platform needs of a received message."""

    sender: str  # the address, lower case
    sender_name: str
    recipients: str
    subject: str
    message_id: str | None
    in_reply_to: list[str]  # In-Reply-To then References, ids without brackets, nearest first
    body: str  # the text: the text/plain part, or the HTML part as text
    headers: str
    auto: str | None = None  # why it is an automatic reply (None: a person wrote it)
    bounce: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read as the message said
    original_ids: list[str] = field(default_factory=list)  # a bounce: the Message-IDs of what bounced
    delivery_status: str | None = None  # a bounce's report (RFC 3464): "5.1.1 smtp; 550 ..." of its first failure


def parse(raw: bytes) -> Inbound:
    """Read a raw message; NotAnEmail when it is not one."""
    if not raw or not raw.strip():
        raise NotAnEmail("the message is empty")
    try:  # compat32: headers as sent, decoded here once (the default policy re-parses a header per read)
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception as exc:  # the parser is lenient; anything it still raises is a broken message
        raise NotAnEmail(f"the message cannot be parsed: {exc}") from None
    problems: list[str] = []
    sender_header = _header(msg, "From", problems)
    name, address = parseaddr(sender_header)
    if not address or "@" not in address:
        raise NotAnEmail("the message has no sender: a From header with an e-mail address is required"
                         + (f" (found {sender_header[:80]!r})" if sender_header else ""))
    inbound = Inbound(
        sender=address.strip().lower()[:255], sender_name=name.strip()[:100],
        recipients=", ".join(a for _, a in getaddresses([_header(msg, "To", problems), _header(msg, "Cc", problems)])
                             if a)[:4000],
        subject=" ".join(_header(msg, "Subject", problems).split())[:SUBJECT_LENGTH],
        message_id=_first_id(_header(msg, "Message-ID", problems)),
        in_reply_to=_ids(_header(msg, "In-Reply-To", problems)) + _ids(_header(msg, "References", problems))[::-1],
        body="", headers=_headers_text(msg)[:HEADERS_LENGTH], problems=problems,
    )
    inbound.auto = _automatic(msg, problems)
    local = inbound.sender.partition("@")[0]
    report = msg.get_content_type() == "multipart/report"
    inbound.bounce = local in BOUNCE_SENDERS or (report and "delivery-status" in str(msg.get_param("report-type") or ""))
    text, html = _bodies(msg, inbound)
    inbound.body = (text if text.strip() or not html else html_to_text(html))[:BODY_LENGTH]
    if msg.defects:
        problems.append("malformed MIME: " + "; ".join(sorted({type(d).__name__ for d in msg.defects}))[:200])
    return inbound


def _header(msg: Message, name: str, problems: list[str]) -> str:
    """A header as text: encoded words (RFC 2047) decoded; one that cannot be, read as it was sent."""
    value = msg.get(name)
    if value is None:
        return ""
    if isinstance(value, Header):  # raw 8-bit bytes (charset unknown-8bit): kept as surrogates for _clean
        value = "".join(chunk.decode("ascii", "surrogateescape") if isinstance(chunk, bytes) else chunk
                        for chunk, _ in decode_header(value))
    text = _clean(str(value), problems, name)
    if "=?" not in text:
        return " ".join(text.split())
    try:
        return _clean(str(make_header(decode_header(text))), problems, name)
    except Exception as exc:  # an unknown charset or a broken encoded word: each word on its own
        problems.append(f"{name} header not wholly decodable ({type(exc).__name__}): each encoded word read on its own")
        return " ".join(_words_decoded(text).split())


ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _words_decoded(text: str) -> str:
    """Each RFC 2047 encoded word decoded on its own, one that cannot be left as sent; the space
    between two encoded words is dropped, as the RFC says."""
    out, last, previous_word = [], 0, False
    for found in ENCODED_WORD.finditer(text):
        between = text[last:found.start()]
        try:
            word = "".join(_text_in(chunk, charset) for chunk, charset in decode_header(found.group(0)))
        except Exception:  # not decodable at all (bad base64): as sent
            word = None
        if not (previous_word and word is not None and not between.strip()):
            out.append(between)
        out.append(found.group(0) if word is None else word)
        last, previous_word = found.end(), word is not None
    out.append(text[last:])
    return _clean("".join(out))


def _text_in(chunk: bytes | str, charset: str | None) -> str:
    """An encoded word's bytes in its charset, or as Latin-1 when the charset is unknown or lies."""
    if isinstance(chunk, str):
        return chunk
    try:
        return chunk.decode(charset or "ascii")
    except (LookupError, UnicodeDecodeError):
        return chunk.decode("latin-1")


def _clean(text: str, problems: list[str] | None = None, name: str = "") -> str:
    """Header text with raw 8-bit bytes (kept by the parser as surrogates) read as UTF-8, or as
    Latin-1 when they are not UTF-8; control characters other than tab and newline dropped."""
    if _RAW_BYTES.search(text):
        raw = text.encode("utf-8", "surrogateescape")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
            if problems is not None:
                problems.append(f"{name} header not UTF-8, read as Latin-1")
    return _CONTROL.sub("", text)


_RAW_BYTES = re.compile("[\udc80-\udcff]")  # bytes the parser could not decode, kept as surrogates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")  # all but tab and newline


def _first_id(value: str) -> str | None:
    found = MESSAGE_ID.search(value or "")
    return found.group(1) if found else ((value or "").strip()[:250] or None)


def _ids(value: str) -> list[str]:
    return MESSAGE_ID.findall(value or "")


def _headers_text(msg: Message) -> str:
    lines = []
    for key, value in msg.raw_items():
        lines.append(_clean(f"{key}: {' '.join(str(value).split())}"))
    return "\n".join(lines)


def _automatic(msg: Message, problems: list[str]) -> str | None:
    """Why a message is an automatic one (RFC 3834's Auto-Submitted, the de facto X-Autoreply and
    Precedence headers), or None."""
    submitted = _header(msg, "Auto-Submitted", problems).strip().lower()
    if submitted and submitted != "no":
        return f"auto-reply (Auto-Submitted: {submitted[:40]})"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        value = _header(msg, name, problems).strip()
        if value and not (name == "X-Auto-Response-Suppress"):
            return f"auto-reply ({name}: {value[:40]})"
    precedence = _header(msg, "Precedence", problems).strip().lower()
    if precedence in BULK_PRECEDENCE:
        return f"auto-reply (Precedence: {precedence})"
    return None


def _bodies(msg: Message, inbound: Inbound) -> tuple[str, str]:
    """The first text/plain and text/html parts that are not attachments; the rest are attachments.
    A bounce's returned message gives the Message-IDs of what bounced."""
    text, html = "", ""
    if msg.get_content_maintype() == "multipart" and not msg.is_multipart():
        msg = _repaired(msg, inbound.problems)
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() == "multipart":  # still no parts: its text is the body
            text = text or _part_text(part, inbound.problems)
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part, inbound.problems)
        if ctype in ("message/rfc822", "text/rfc822-headers") or ctype == "message/delivery-status":
            inbound.original_ids += _ids(_part_text(part, inbound.problems))
        if ctype == "text/plain" and disposition != "attachment" and not filename and not text:
            text = _part_text(part, inbound.problems)
        elif ctype == "text/html" and disposition != "attachment" and not filename and not html:
            html = _part_text(part, inbound.problems)
        elif filename or disposition == "attachment" or disposition == "inline" and not ctype.startswith("text/"):
            data = _part_bytes(part)
            name = filename or f"attachment-{len(inbound.attachments) + 1}"
            if data:
                inbound.attachments.append(Attachment(name, ctype, data))
            else:
                inbound.problems.append(f"attachment {name!r} is empty, not kept")
    for part in msg.walk():  # a returned message inside a bounce (message/rfc822 is multipart to the walker)
        if part.get_content_type() == "message/delivery-status" and inbound.delivery_status is None:
            inbound.delivery_status = delivery_status(part)
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                inbound.original_ids += _ids(str(inner.get("Message-ID") or ""))
    return text, html


BOUNDARY_LINE = re.compile(r"^--([0-9A-Za-z'()+_,./:=?-]{1,70}?)(?:--)?[ \t\r]*$", re.MULTILINE)


def _repaired(msg: Message, problems: list[str]) -> Message:
    """A multipart message whose parts the parser could not find (no boundary, or not the one its
    lines use): read again with the boundary its first `--` line has; as it was when none has one."""
    payload = msg.get_payload()
    found = BOUNDARY_LINE.search(payload) if isinstance(payload, str) else None
    if found is None:
        return msg
    declared = msg.get_param("boundary")
    msg.set_param("boundary", found.group(1))
    again = email.message_from_string(msg.as_string(), policy=email.policy.compat32)
    if not again.is_multipart():
        return msg
    problems.append(f"multipart boundary {declared!r} not in the message; read with the one its lines use "
                    f"({found.group(1)!r})" if declared else "multipart without a boundary; read with the one its "
                    f"lines use ({found.group(1)!r})")
    return again


def delivery_status(part: Message) -> str | None:
    """The Status and Diagnostic-Code of a delivery status report's first failed recipient (RFC 3464:
    the report's first block is about the message, each further one about a recipient)."""
    blocks = [b for b in (part.get_payload() or []) if isinstance(b, Message)]
    recipients = [b for b in blocks if b.get("Status") or b.get("Final-Recipient")] or blocks
    failed = next((b for b in recipients if str(b.get("Action") or "").strip().lower() == "failed"), None)
    block = failed or (recipients[0] if recipients else None)
    if block is None:
        return None
    status = " ".join(str(block.get("Status") or "").split())
    diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split())
    text = " ".join(filter(None, [status, f"({diagnostic})" if diagnostic and status else diagnostic]))
    return _clean(text)[:1000] or None


NAME_LENGTH = 255


def _filename(part: Message, problems: list[str]) -> str:
    """An attachment's name as a person reads it: encoded words decoded (`=?utf-8?q?R=C3=A9sum=C3=A9.pdf?=`),
    no folders, spaces collapsed, and a name too long cut before its extension, which it keeps."""
    try:
        name = str(part.get_filename() or "")
        if "=?" in name:
            name = str(make_header(decode_header(name)))
    except Exception:
        problems.append("an attachment's name could not be read")
        name = ""
    name = " ".join(name.replace("/", "_").replace("\\", "_").split())
    if len(name) <= NAME_LENGTH:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 16:
        return name[:NAME_LENGTH]
    return stem[:NAME_LENGTH - len(extension) - 2] + "…." + extension


def _part_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def _part_text(part: Message, problems: list[str]) -> str:
    """A text part decoded by its charset; an unknown or lying charset read as Latin-1, noted."""
    data = _part_bytes(part)
    charset = (part.get_content_charset() or "us-ascii").lower()
    try:
        return _clean(data.decode(charset))
    except LookupError:
        problems.append(f"unknown charset {charset[:40]!r}, read as Latin-1")
    except UnicodeDecodeError:
        if charset in ("us-ascii", "ascii"):
            try:
                return _clean(data.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        problems.append(f"text not valid {charset[:40]}, read as Latin-1")
    return _clean(data.decode("latin-1"))


class _HtmlText(HTMLParser):
    """An HTML body's text as it streams by: the content of SKIPPED elements left out, a line break
    for `<br>` and after each BLOCK element. One pass, whatever the nesting (a tree of 100,000 nested
    elements took minutes to build and walk)."""

    SKIPPED = frozenset({"script", "style", "head", "title", "noscript", "template", "iframe", "object"})
    BLOCKS = frozenset({"p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0  # how many SKIPPED elements the parser is inside

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag == "br" and not self.skipping:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag == "br" and not self.skipping:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self.skipping = max(self.skipping - 1, 0)
        elif tag in self.BLOCKS and not self.skipping:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """An HTML body as safe plain text: no script, style or head; block elements on lines of their
    own; runs of blank lines collapsed (Python's own HTML parser, streamed: linear in the body)."""
    reader = _HtmlText()
    reader.feed(html)
    reader.close()
    lines = [" ".join(line.split()) for line in "".join(reader.parts).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


QUOTE_STARTS = (re.compile(r"^\s*On .{5,200} wrote:\s*$"), re.compile(r"^\s*-{2,}\s*Original Message\s*-{2,}", re.I),
                re.compile(r"^\s*From: .+"), re.compile(r"^\s*Am .{5,200} schrieb .{1,200}:\s*$"),
                re.compile(r"^\s*Le .{5,200} a écrit\s*:\s*$"))


def reply_text(body: str) -> str:
    """What the person wrote in a reply: the text above the quoted message (the first line that
    starts a quote: "On … wrote:", "-----Original Message-----", a From: header, or ">" lines).
    The whole body when nothing is above it."""
    kept: list[str] = []
    for line in body.splitlines():
        if line.lstrip().startswith(">") or any(p.match(line) for p in QUOTE_STARTS) or "Ref:MSG" in line:
            break
        kept.append(line)
    text = "\n".join(kept).strip()
    return text or body.strip()


def as_message(raw: bytes) -> EmailMessage:
    """The parsed message (for tests and tools)."""
    return email.message_from_bytes(raw, policy=email.policy.default)
