"""Attachments (ServiceNow's sys_attachment): files kept with a record of any table.

A file is a sys_attachment record (`file_name`, `content_type`, `size_bytes`, `hash`, and the
record it belongs to: `table_name`, `table_sys_id`) and its bytes in sys_attachment_doc, in the
same database and the same transaction as everything else: backed up, replicated and rolled back
with the records, on SQLite and PostgreSQL alike.

Access follows the record: whoever may read a record may list and download its attachments;
whoever may write it may attach files to it and delete them. An attachment of a record the user
may not read does not exist for them (404, never 403), and a list holds only attachments of
tables the user may read, filtered in SQL so counts and paging are right. The size limit and the
allowed content types are system properties.
"""

from __future__ import annotations

import hashlib
import mimetypes
import unicodedata
from dataclasses import dataclass

import sqlalchemy as sa

from .properties import Properties
from .query import Query, Selection, Term
from .query.compile import select_rows
from .records import NotFound, RecordService

TABLE, DOC = "sys_attachment", "sys_attachment_doc"
MAX_BYTES, CONTENT_TYPES = "caseloom.attachment.max_bytes", "caseloom.attachment.content_types"
NAME_LENGTH = 255
KNOWN = {".log": "text/plain"}  # what support files are, where Python's mimetypes does not know
# the names browsers and systems also give common types (Chromium sends a .log file as text/x-log)
ALIASES = {"text/x-log": "text/plain", "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg",
           "application/x-zip-compressed": "application/zip", "application/x-pdf": "application/pdf"}


class Refused(Exception):
    """An attachment that cannot be taken: `status` (400, 413, 415) and what was wrong."""

    def __init__(self, status: int, message: str, detail: str = ""):
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


@dataclass(frozen=True)
class File:
    record: dict  # the sys_attachment record
    data: bytes


def attach(service: RecordService, table: str, sys_id: str, file_name: str | None, content_type: str | None,
           data: bytes) -> dict:
    """Attach `data` to the record `table`/`sys_id` (the user must be able to write it); returns the
    sys_attachment record. Refused (with what and why) when the name, type or size is not allowed."""
    _writable_record(service, table, sys_id)
    name = clean_name(file_name)
    ctype = content_type_of(content_type, name)
    props = Properties(service.defs, service.storage, service.conn)
    if not data:
        raise Refused(400, "The file is empty", "send the file's bytes as the request body")
    limit = props.get(MAX_BYTES)
    if len(data) > limit:
        raise Refused(413, f"The file is larger than {limit:,} bytes",
                      f"{name}: {len(data):,} bytes (the {MAX_BYTES} property)")
    if not type_allowed(ctype, props.get(CONTENT_TYPES)):
        raise Refused(415, f"Files of type {ctype} may not be attached",
                      f"{name}: allowed are {', '.join(props.get(CONTENT_TYPES))} (the {CONTENT_TYPES} property)")
    row = {"file_name": name, "content_type": ctype, "size_bytes": len(data), "table_name": table,
           "table_sys_id": sys_id, "hash": hashlib.sha256(data).hexdigest()}
    service._system_insert(TABLE, [row])
    service.conn.execute(sa.insert(service.storage.internal(DOC)).values(sys_id=row["sys_id"], data=data))
    return _attachment(service, row["sys_id"])


def clean_name(file_name: str | None) -> str:
    """The file's name as given, or refused naming what is wrong with it (400)."""
    name = unicodedata.normalize("NFC", (file_name or "").strip())
    if not name:
        raise Refused(400, "file_name is required", "the file's name, such as file_name=screenshot.png")
    if len(name) > NAME_LENGTH:
        raise Refused(400, f"file_name is longer than {NAME_LENGTH} characters", f"it has {len(name)}")
    bad = next((c for c in name if c in '/\\' or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None or name in (".", ".."):
        shown = repr(bad) if bad is not None else repr(name)
        raise Refused(400, "file_name may not hold a path or control characters", f"found {shown} in {name!r}")
    return name


def content_type_of(given: str | None, name: str) -> str:
    """The request's content type without its parameters; a generic or missing one is guessed from
    the file's extension."""
    ctype = (given or "").split(";")[0].strip().lower()
    if ctype in ("", "application/octet-stream", "application/x-www-form-urlencoded", "multipart/form-data"):
        extension = ("." + name.rsplit(".", 1)[1].lower()) if "." in name else ""
        guessed = KNOWN.get(extension) or mimetypes.guess_type(name, strict=False)[0]
        ctype = (guessed or "application/octet-stream").lower()
    return ALIASES.get(ctype, ctype)[:100]


def type_allowed(ctype: str, allowed_types: list[str]) -> bool:
    """`ctype` is one of the allowed types, or matches a `type/*` among them."""
    for pattern in allowed_types:
        pattern = pattern.strip().lower()
        if pattern == ctype or (pattern.endswith("/*") and ctype.startswith(pattern[:-1])):
            return True
    return False


def _readable_scope(service: RecordService, attachments: sa.FromClause) -> sa.ColumnElement | None:
    """The attachments of records the user may read, as SQL (None: every one): per table, all of its
    records, or those its read rule's condition matches."""
    reader = service.readable
    if reader is None:
        return None
    parts = []
    for table in sorted(service.defs.tables):
        verdict = reader.rows(table)
        if verdict is False:
            continue
        mine = attachments.c.table_name == table
        if verdict is not True:
            records = Selection(service.storage, table)
            mine = sa.and_(mine, attachments.c.table_sys_id.in_(records.select(records.base.c.sys_id, where=verdict)))
        parts.append(mine)
    return sa.or_(sa.false(), *parts)


def find(service: RecordService, query: Query, limit: int, offset: int) -> tuple[list[dict], int]:
    """The attachments matching `query` of records the user may read, and how many there are in all."""
    scoped = Query(query.where, query.order or (("sys_created_on", False), ("sys_id", False)))
    stmt, sel = select_rows(service.storage, TABLE, scoped, offset=offset)
    scope = _readable_scope(service, sel.base)
    if scope is not None:
        stmt = stmt.where(scope)
    counted = sa.select(sa.func.count()).select_from(stmt.order_by(None).offset(None).subquery())
    rows = [dict(r) for r in service.conn.execute(stmt.limit(limit)).mappings()]
    return rows, service.conn.execute(counted).scalar_one()


def get(service: RecordService, sys_id: str) -> dict:
    """One attachment the user may read (NotFound otherwise, as if it did not exist)."""
    record = _attachment(service, sys_id)
    if record is None or not _readable_record(service, record["table_name"], record["table_sys_id"]):
        raise NotFound(f"no attachment with sys_id {sys_id}")
    return record


def content(service: RecordService, sys_id: str) -> File:
    record = get(service, sys_id)
    doc = service.storage.internal(DOC)
    data = service.conn.execute(sa.select(doc.c.data).where(doc.c.sys_id == sys_id)).scalar_one_or_none()
    if data is None:
        raise NotFound(f"the file of attachment {sys_id} is missing")
    return File(record, bytes(data))


def delete(service: RecordService, sys_id: str) -> dict:
    """Delete an attachment of a record the user may write (audited as a sys_attachment deletion)."""
    record = get(service, sys_id)  # its record is readable, or this is a NotFound
    _writable_record(service, record["table_name"], record["table_sys_id"])
    with service.unchecked():
        service.delete(TABLE, sys_id)
    return record


def of_record(service: RecordService, table: str, sys_id: str) -> list[dict]:
    """The attachments of one record the user may read, oldest first."""
    if not _readable_record(service, table, sys_id):
        return []
    attachments = service.storage.physical(TABLE)
    stmt = sa.select(attachments).where(attachments.c.table_sys_id == sys_id, attachments.c.table_name == table
                                        ).order_by(attachments.c.sys_created_on, attachments.c.sys_id)
    return [dict(r) for r in service.conn.execute(stmt).mappings()]


def forget(service: RecordService, table: str, ids: list[str]) -> None:
    """The files of deleted records (or of deleted attachments) go with them."""
    attachments, doc = service.storage.physical(TABLE), service.storage.internal(DOC)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        if table == TABLE:
            service.conn.execute(sa.delete(doc).where(doc.c.sys_id.in_(chunk)))
            continue
        owned = sa.select(attachments.c.sys_id).where(attachments.c.table_sys_id.in_(chunk))
        service.conn.execute(sa.delete(doc).where(doc.c.sys_id.in_(owned.scalar_subquery())))
        if service.conn.execute(sa.delete(attachments).where(attachments.c.table_sys_id.in_(chunk))).rowcount:
            service.written.add(TABLE)


def _attachment(service: RecordService, sys_id: str) -> dict | None:
    stmt, _ = select_rows(service.storage, TABLE, Query(Term("sys_id", "eq", sys_id)), limit=1)
    row = service.conn.execute(stmt).mappings().first()
    return dict(row) if row else None


def _readable_record(service: RecordService, table: str, sys_id: str) -> bool:
    if table not in service.defs.tables or not service.can(table, "read"):
        return False
    return bool(service.query(table, Query(Term("sys_id", "eq", sys_id)), ["sys_id"], limit=1))


def _writable_record(service: RecordService, table: str, sys_id: str) -> None:
    """The record exists, the user may read it (else NotFound) and write it (else AccessDenied)."""
    if not table or table not in service.defs.tables:
        raise NotFound(f"table {table!r} does not exist")
    if not _readable_record(service, table, sys_id or ""):
        raise NotFound(f"no {table} record with sys_id {sys_id}")
    tdef = service.table(table, "write")
    service.check_rows(tdef, [sys_id], "write")


__all__ = ["CONTENT_TYPES", "DOC", "MAX_BYTES", "TABLE", "File", "Refused", "attach", "clean_name", "content",
           "content_type_of", "delete", "find", "forget", "get", "of_record", "type_allowed"]
