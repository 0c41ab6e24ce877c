"""E-mail into the platform: a raw message, from the API or a polled IMAP mailbox, becomes a
comment on the record it answers or a new record, as the definitions' inbound actions say."""

from .message import Inbound, NotAnEmail, html_to_text, parse, reply_text
from .receive import MAX_BYTES, Outcome, receive

__all__ = ["MAX_BYTES", "Inbound", "NotAnEmail", "Outcome", "html_to_text", "parse", "receive", "reply_text"]
