"""A list exported as CSV or XLSX, ServiceNow's way: the list's URL with `?CSV` or `?XLSX`
(`/{table}_list.do?CSV&sysparm_query=...`). Every record the list's filter, sort and search match,
through the user's read access (row and field rules compiled into the one SELECT, as the list's),
as display values, read with a streaming cursor in batches: a million rows take bounded memory.

CSV is streamed as it is written; XLSX (XlsxWriter's constant-memory mode) is written to a temporary
file, then streamed. Text that a spreadsheet would run as a formula is neutralised: in CSV it gets a
leading `'`, in XLSX every text cell is written as a string, never a formula."""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import xlsxwriter
from flask import Response, request

from ...database import job_cache
from ...definitions.model import TableDef
from ...query import Query, QueryError
from ...query.compile import select_rows
from ...serving import still_working
from .. import db
from ..auth import act_as, api_actor, properties, records, runtime
from ..errors import ApiError
from ..serialize import Shape, base_url, make_shape, render_record
from .workspace import list_view_of, view_columns

FORMATS = {"CSV": "csv", "XLSX": "xlsx", "EXCEL": "xlsx"}  # ServiceNow's URL flags; EXCEL: its older name
MAX_ROWS = "caseloom.export.max_rows"
BATCH = 2_000  # rows fetched per round trip of the streaming cursor
CACHE_KB = 8_192  # SQLite's page cache for the export's connection (the platform's default is 256 MB)
CHUNK = 64 * 1024  # bytes per piece of the response
BEAT_ROWS = 10_000  # an XLSX file being written tells the server it is still working this often
SHEET_ROWS = 1_048_576  # an XLSX worksheet's rows, its header's included; more go on to the next sheet
NUMERIC = ("integer", "decimal")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"-?\d+(\.\d+)?\Z")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8",
                 "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def export_format(args) -> str | None:
    """"csv" or "xlsx" when the URL asks for an export (`?CSV`, `?XLSX`, `?EXCEL`), else None."""
    for flag, kind in FORMATS.items():
        if flag in args:
            return kind
    return None


def neutral(text: str) -> str:
    """Text a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, a tab or a carriage return
    first) with a `'` in front, as OWASP advises; a plain negative number stays a number."""
    if text and text.startswith(FORMULA_START) and not NUMBER.match(text):
        return "'" + text
    return text


def with_basic_auth(table: str, kind: str):
    """The export for a client signing in with HTTP Basic (`curl -u user:password`), as ServiceNow's
    CSV web service takes it: a wrong password is a 401, a customer (a portal's user) a 403."""
    actor = api_actor()
    if runtime().defs.portal_of(actor.roles) is not None:
        raise ApiError(403, "Not allowed", "exports are for staff; a customer's cases are in their portal")
    act_as(actor)
    return export_list(table, kind)


def export_list(table: str, kind: str):
    """The response: the whole list as a CSV or XLSX download; a bad parameter is a 400 naming it,
    more records than the caseloom.export.max_rows property allows a 400 saying how many."""
    from .lists import list_query, readable_columns, readable_table

    service, defs = records(), runtime().defs
    tdef = readable_table(table)
    args = request.args
    listed = readable_columns(service, tdef)
    try:
        columns = _columns(service, tdef, args, listed)
        shape = make_shape(defs.tables, tdef, ",".join(columns), "true", "true", base_url(), service.readable)
        _, query, _ = list_query(tdef, args, listed)
        matched = service.count(table, query)
    except QueryError as exc:
        raise ApiError(400, "Invalid export", str(exc)) from None
    limit = properties().get(MAX_ROWS)
    if matched > limit:
        raise ApiError(400, "Too many records to export",
                       f"{matched:,} records match; at most {limit:,} may be exported at once (the {MAX_ROWS} "
                       "property): narrow the filter")
    rows = _rows(service, table, query, shape)  # on a connection of its own, which outlives the request's
    name = f"{table}.{kind}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store",
               "X-Total-Count": str(matched)}
    if kind == "csv":
        body = csv_chunks(list(shape.fields), rows)
    else:
        numeric = [f.type in NUMERIC and not f.choices for f in shape.fields.values()]
        path = write_xlsx(shape.table.label, labels(shape), _numbers(rows, numeric))
        headers["Content-Length"] = str(path.stat().st_size)
        body = file_chunks(path)
    return Response(body, content_type=CONTENT_TYPES[kind], headers=headers)


def _columns(service, tdef: TableDef, args, listed: list[str]) -> list[str]:
    """The exported columns: `sysparm_fields` (comma-separated; dot-walks allowed), every field with
    `sysparm_default_export_fields=all`, else the list's (its view's, with `sysparm_view`). Fields the
    user may not read are left out, as from the list; an unknown one raises QueryError naming it."""
    if args.get("sysparm_fields", "").strip():
        asked = list(dict.fromkeys(p.strip() for p in args["sysparm_fields"].split(",") if p.strip()))
        make_shape(runtime().defs.tables, tdef, ",".join(asked), "true", "true", "", None)  # names the unknown
        shown = [p for p in asked if service.can_read_path(tdef.name, p)]
    elif args.get("sysparm_default_export_fields") == "all":
        shown = [n for n, f in tdef.fields.items()
                 if f.stored and not f.ftype.hidden and service.can_read_path(tdef.name, n)]
    else:
        view = list_view_of(tdef, args.get("sysparm_view"))
        shown = view_columns(view)[0] if view is not None else listed
    if not shown:
        raise QueryError("none of the fields asked for may be read: nothing to export")
    return shown


def _rows(service, table: str, query: Query, shape: Shape) -> Iterator[list[str]]:
    """Each matching record's display values in the shape's order, from one SELECT read in batches
    (a server-side cursor on PostgreSQL; SQLite steps through its rows as they are fetched). The
    statement is built and run now, for this request's user; its rows are read on a connection of
    its own as the response is sent, after the request's own has gone back to the pool."""
    stmt, _ = select_rows(service.storage, table, query, shape.columns(), None, 0, service.readable)
    held = ExitStack()  # the connection, then its page cache: given back in the reverse order
    conn = held.enter_context(db.engine.connect())
    held.enter_context(job_cache(conn, CACHE_KB))  # SQLite's page cache: each page is read once, so a small one
    try:
        result = conn.execute(stmt, execution_options={"stream_results": True, "yield_per": BATCH})
    except BaseException:
        _let_go(conn, held)
        raise
    return _rendered(conn, held, result, shape)


def _rendered(conn, held: ExitStack, result, shape: Shape) -> Iterator[list[str]]:
    paths = list(shape.fields)
    try:
        for row in result.mappings():
            shown = render_record(shape, row)
            yield [shown.get(p, "") for p in paths]
    finally:
        result.close()
        _let_go(conn, held)


def _let_go(conn, held: ExitStack) -> None:
    conn.rollback()  # the read ends before the page cache is given its size back
    held.close()


def _numbers(rows: Iterator[list[str]], numeric: list[bool]) -> Iterator[list[str | float]]:
    """The rows with the values of number columns as numbers (an empty one stays empty text)."""
    for row in rows:
        yield [float(v) if numeric[i] and v != "" else v for i, v in enumerate(row)]


def csv_chunks(header: list[str], rows: Iterator[list[str]]) -> Iterator[bytes]:
    """RFC 4180 CSV in UTF-8, the header row the fields' names (as ServiceNow's), yielded in pieces."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([neutral(v) for v in row])
        if buffer.tell() >= CHUNK:
            still_working()  # a sync server process is not stuck while it streams (`--timeout`)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def labels(shape: Shape) -> list[str]:
    """A column's heading for people: the field's label, a dot-walk's labels joined by ` > `."""
    out = []
    for path in shape.fields:
        table, words = shape.table, []
        for part in path.split("."):
            field = table.field(part) if table is not None else None
            words.append(field.label if field is not None else part)
            table = shape.tables.get(field.reference) if field is not None and field.reference else None
        out.append(" > ".join(words))
    return out


def write_xlsx(title: str, heading: list[str], rows: Iterator[list[str | float]]) -> Path:
    """The rows in a new XLSX file (a temporary one the caller streams and removes): a bold header,
    numbers (floats) as numbers, every other value as a string, never a formula; a sheet per
    1,048,575 rows, each named after `title`."""
    name_of = title[:25].replace("/", " ")  # a sheet's name: at most 31 characters, no `/`
    handle, name = tempfile.mkstemp(prefix="caseloom-export-", suffix=".xlsx")
    os.close(handle)
    path = Path(name)
    try:
        workbook = xlsxwriter.Workbook(name, {"constant_memory": True, "strings_to_formulas": False,
                                              "strings_to_numbers": False, "strings_to_urls": False})
        bold = workbook.add_format({"bold": True})
        sheet, row_no, sheets = None, SHEET_ROWS, 0
        for row in rows:
            if row_no == SHEET_ROWS:
                sheets += 1
                sheet = workbook.add_worksheet(name_of + (f" {sheets}" if sheets > 1 else ""))
                sheet.write_row(0, 0, heading, bold)
                sheet.freeze_panes(1, 0)
                row_no = 1
            if row_no % BEAT_ROWS == 0:
                still_working()
            for col, value in enumerate(row):
                if isinstance(value, float):
                    sheet.write_number(row_no, col, value)
                else:
                    sheet.write_string(row_no, col, value)
            row_no += 1
        if sheet is None:  # nothing matched: the header alone
            workbook.add_worksheet(name_of).write_row(0, 0, heading, bold)
        workbook.close()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def file_chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in pieces; the file is removed once sent (or the client went away)."""
    try:
        with path.open("rb") as handle:
            while piece := handle.read(CHUNK):
                still_working()
                yield piece
    finally:
        path.unlink(missing_ok=True)


__all__ = ["MAX_ROWS", "csv_chunks", "export_format", "export_list", "neutral", "with_basic_auth", "write_xlsx"]
