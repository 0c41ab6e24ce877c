"""Lists of any table: columns, sort, paging with the total, the filter builder (an input per field type),
quick search, group-by with counts, saved filters, bulk edit and select-all-matching."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import abort, flash, g, redirect, render_template, request, url_for

from ...database import is_transient
from ...definitions.model import FieldDef, TableDef
from ...definitions.tables import resolve_path
from ...jobs.email import TABLE as EMAIL_TABLE
from ...query import AnyOf, Query, QueryError, Selection, Term, parse_encoded, to_encoded
from ...query.aggregate import Period
from ...query.compile import MAX_OFFSET
from ...query.conditions import TEXT_QUERY, All
from ...query.total import EXACT_COUNT_LIMIT, Total
from ...records import AccessDenied, Conflict, NotFound, RecordError
from ...timing.slas import enabled
from .. import db
from ..auth import connection, only_read_from_now, properties, records, runtime, safe_path, session_actor
from ..serialize import NOT_READABLE, base_url, display_names, make_shape, record_name, render_record
from . import blueprint, login_required
from .export import export_format, export_list, with_basic_auth
from .filters import (
    blank_row,
    error_words,
    filter_fields,
    filter_rows,
    filter_sentence,
    posted_rows,
    query_from_rows,
    row_redrawn,
    row_views,
    rows_edited,
    typed_value,
)
from .workspace import COMPUTED_COLUMNS, Computed, computed_cells, list_view_of, view_columns

PAGE = 20
PAGE_SIZES = (20, 50, 100)  # rows per page a person may choose (`sysparm_limit`)
# The page's own parameters, kept by every link, filter and form of the list.
PAGE_PARAMS = ("sysparm_query", "sysparm_orderby", "sysparm_search", "condition_for", "sysparm_limit",
               "sysparm_group_by", "sysparm_view")
SAVED_FILTERS = "sys_filter"


def row_number(raw: str | None) -> int:
    """A 1-based row to start a page at, from a URL: anything that is not a row number starts at 1."""
    try:
        value = int(raw) if raw and len(raw) <= 15 else 1
    except ValueError:
        return 1
    return min(max(value, 1), MAX_OFFSET)


def list_columns(tdef: TableDef) -> list[str]:
    if tdef.list_columns:
        return list(tdef.list_columns)
    names = [n for n, f in tdef.fields.items() if not f.system and f.ftype.listable]
    return names[:6] or ["sys_id"]


def readable_columns(service, tdef: TableDef) -> list[str]:
    """The table's list columns, less those that dot-walk through a table the user may not read
    and hidden ones (a password named in a declared `list:` shows no column at all)."""
    tables = runtime().defs.tables
    return [c for c in list_columns(tdef) if service.can_read_path(tdef.name, c) and _shown(tables, tdef, c)]


def _shown(tables, tdef: TableDef, path: str) -> bool:
    field = resolve_path(tables, tdef, path)
    return field is not None and not field.ftype.hidden


def _quick_search(tdef: TableDef, columns: list[str], text: str) -> Term | AnyOf | None:
    """A list's quick search: on a table with a text index, its words in the index (every word, the last as a
    prefix) or the text as the record's number or display value (both indexed); else the text anywhere in
    the list's text columns and references' display values (LIKE, a scan)."""
    tables = runtime().defs.tables
    if tdef.text_index:
        exact = [Term(name, "eq", text) for name in dict.fromkeys(("number", tdef.display))
                 if name and tdef.field(name) is not None and tdef.field(name).type == "string"]
        return AnyOf((Term(TEXT_QUERY, "eq", text), *exact)) if exact else Term(TEXT_QUERY, "eq", text)
    terms = []
    for path in columns:
        field = resolve_path(tables, tdef, path)
        if field is not None and field.stored and field.ftype.searchable:
            terms.append(Term(path, "like", text))
        elif field is not None and field.type == "reference":
            target = tables[field.reference]
            if target.display:
                terms.append(Term(f"{path}.{target.display}", "like", text))
    return None if not terms else terms[0] if len(terms) == 1 else AnyOf(tuple(terms))


def _combined(query: Query, extra) -> Query:
    if extra is None:
        return query
    where = extra if query.where is None else All((query.where, extra))
    return Query(where, query.order)


# -- the filter builder: operators and an input per kind of field ---------------------------------


# -- the applied filter as a sentence ----------------------------------------------------------------



# -- group by, with counts -----------------------------------------------------------------------------

def group_fields(tdef: TableDef) -> list[tuple[str, str]]:
    """Fields a list may be grouped by (those the user may read): choices and references first, then
    other queryable ones."""
    service = records()
    usable = [(n, f) for n, f in tdef.fields.items()
              if f.stored and f.ftype.queryable and f.ftype.sortable and f.ftype.input != "textarea"
              and service.can_read_path(tdef.name, n)]
    first = [(n, f.label) for n, f in usable if f.choices or f.type == "reference"]
    return first + [(n, f.label) for n, f in usable if not (f.choices or f.type == "reference")]


GROUPS_SHOWN = 500  # a grouping with more groups shows its largest; the filter finds the rest


def group_counts(service, tdef: TableDef, query: Query, path: str) -> tuple[list[dict], int]:
    """The list's records counted per value of `path` in one GROUP BY, through the same Selection and
    read access as the list's own count (`RecordService.count`): ([{label, count, query}], how many
    groups more than GROUPS_SHOWN there are), each with the encoded query of the list filtered to
    that group; with more, the largest groups are shown (grouping 45,000 SLAs by case made a 4 MB page)."""
    service.table(tdef.name, "read")
    selection = Selection(runtime().storage, tdef.name, readable=service.readable)
    column, field = selection.column(path)
    by_day = field.type == "datetime"  # a date-time groups by its day (UTC), as a person reads a list by date
    if by_day:
        column = Period(column, "day")  # the reports' daily bucket: YYYY-MM-DD on both databases
    grouped = selection.select(column, sa.func.count().label("n"), where=query.where).group_by(column)
    counts = [(value, n) for value, n in service.conn.execute(
        grouped.order_by(sa.func.count().desc()).limit(GROUPS_SHOWN + 1))]
    more = 0
    if len(counts) > GROUPS_SHOWN:
        counts = counts[:GROUPS_SHOWN]
        more = service.conn.execute(sa.select(sa.func.count()).select_from(grouped.subquery())).scalar_one() - GROUPS_SHOWN
    names = display_names(service, {field.reference: {str(v) for v, _ in counts if v}} if field.reference else {})
    order = {str(value): i for i, (value, _) in enumerate(field.choices)}
    groups = []
    for value, n in counts:
        if by_day:
            text = value or ""
            term = _day(path, text) if text else Term(path, "empty", None)
        else:
            text = field.ftype.render(value) if value is not None else ""
            term = Term(path, "eq", text) if text else Term(path, "empty", None)
        groups.append({"value": text, "label": _group_label(field, text, names), "count": n,
                       "query": to_encoded(_combined(query, term))})
    return sorted(groups, key=lambda grp: (grp["value"] == "", order.get(grp["value"], len(order)), grp["label"])), more


def _day(path: str, day: str) -> All:
    """The records whose date-time `path` falls on `day` (YYYY-MM-DD, UTC): from its midnight to the next."""
    start = dt.date.fromisoformat(day)
    return All((Term(path, "ge", f"{start} 00:00:00"), Term(path, "lt", f"{start + dt.timedelta(days=1)} 00:00:00")))


def _group_label(field: FieldDef, text: str, names: dict) -> str:
    if text == "":
        return "(empty)"
    if field.choices:
        return field.choice_label(text) or text
    if field.type == "reference":
        return names.get((field.reference, text), NOT_READABLE)
    return text


# -- saved filters (sys_filter): a user's own and the shared ones ----------------------------------------

def _filter_records():
    """The record service for sys_filter: no role is granted the table (the Table API serves it to
    administrators only); this page applies its rule itself: your own and the shared ones."""
    return runtime().records(connection(), g.actor, check_access=False)


def may_share(actor) -> bool:
    """Who may save a filter for everyone: administrators."""
    return actor.is_admin


def saved_filters(table: str) -> list[dict]:
    """The filters saved for a table that this user may use: their own, then the shared ones."""
    mine = AnyOf((Term("user", "eq", g.actor.sys_id or ""), Term("user", "empty", None)))
    query = Query(All((Term("table", "eq", table), mine)), (("title", False),))
    rows = _filter_records().query(SAVED_FILTERS, query, ["sys_id", "title", "filter", "group_by", "user"], 100)
    return sorted(rows, key=lambda r: (not r["user"], r["title"].casefold()))


@blueprint.post("/ui/filters/<table>")
@login_required
def save_filter(table: str):
    """Save the list's filter under a title, for this user or (who may) for everyone."""
    if table not in runtime().defs.tables or not records().can(table, "read"):
        abort(404)
    encoded, group_by = request.form.get("sysparm_query", ""), request.form.get("sysparm_group_by", "")
    back = _list_url(table, sysparm_query=encoded, sysparm_group_by=group_by)
    title = request.form.get("title", "").strip()
    shared = request.form.get("share") == "true"
    if shared and not may_share(g.actor):
        abort(403)
    try:
        records().query(table, parse_encoded(encoded), ["sys_id"], 1)  # its fields and operators, as the list reads them
        if not title:
            raise RecordError("title", "give the filter a title")
        _filter_records().insert(SAVED_FILTERS, {"title": title, "table": table, "filter": encoded,
                                                 "group_by": group_by, "user": "" if shared else g.actor.sys_id})
    except (RecordError, QueryError, AccessDenied) as exc:
        db.session.rollback()
        flash(f"Filter not saved: {exc}", "error")
        return redirect(back)
    db.session.commit()
    flash(f"Saved filter {title!r}{' for everyone' if shared else ''}.")
    return redirect(back)


@blueprint.post("/ui/filters/<table>/<sys_id>/delete")
@login_required
def delete_filter(table: str, sys_id: str):
    """Delete a saved filter: your own, or (who may share) a shared one; another's is not there for you."""
    service = _filter_records()
    row = service.get(SAVED_FILTERS, sys_id)
    mine = row is not None and row["table"] == table and (
        row["user"] == g.actor.sys_id or (not row["user"] and may_share(g.actor)))
    if not mine:
        abort(404)
    service.delete(SAVED_FILTERS, sys_id)
    db.session.commit()
    flash(f"Deleted saved filter {row['title']!r}.")
    return redirect(_list_url(table))


# -- the list page ----------------------------------------------------------------------------------

@blueprint.route("/<path:name>.do", methods=["GET", "POST"])
def dispatch(name: str):
    try:
        return _dispatch(name)
    except sa.exc.OperationalError as exc:  # a form's save the database refused as busy: the form again
        if request.method != "POST" or name.endswith("_list") or not is_transient(exc):
            raise
    from .forms import busy_form

    only_read_from_now()  # rolled back first: the session and the form are read again without the write lock
    g.pop("session_actor", None)
    return login_required(busy_form)(name)


def _dispatch(name: str):
    if request.authorization is None:
        session_actor()  # first: its statement checks the definitions' generation too (auth._checking_definitions)
    # `x_list.do` is the list of x, unless a table is itself named x_list (sn_..._recipients_list.do is a form)
    tables = runtime().defs.tables
    listed = name.endswith("_list") and (name not in tables or name[: -len("_list")] in tables)
    kind = export_format(request.args) if listed and request.method == "GET" else None
    if kind and request.authorization is not None:  # a script's export: `curl -u user:pw '.../x_list.do?CSV'`
        return with_basic_auth(name[: -len("_list")], kind)
    return _page(name, listed, kind)


@login_required
def _page(name: str, listed: bool, kind: str | None):
    if kind:
        return export_list(name[: -len("_list")], kind)
    if listed:
        return list_view(name[: -len("_list")])
    from .forms import form

    return form(name)


def readable_table(table: str) -> TableDef:
    """The table a list page shows: 404 when there is none, 403 when the user may not read it."""
    defs = runtime().defs
    if table not in defs.tables:
        abort(404)
    try:
        records().table(table, "read")
    except AccessDenied:
        abort(403)
    return defs.tables[table]


def list_view(table: str):
    tdef = readable_table(table)
    if request.method == "POST":
        return _apply_filter(tdef)
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "bulk-value":
        return _bulk_value_input(tdef, request.args.get("bulk_field", ""))
    context = _list_context(tdef)
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "list-body":
        return render_template("_list_body.html", **context)
    return render_template("list.html", **context)


def _list_context(tdef: TableDef, rows_typed: list[dict] | None = None, filter_error: str | None = None) -> dict:
    """Everything list.html draws, from the page's parameters (`_args`); `rows_typed`: the filter's rows as
    posted (shown again with `filter_error` when they could not be applied)."""
    service, defs, args = records(), runtime().defs, _args()
    table = tdef.name
    encoded = args.get("sysparm_query", "")
    page = _page_size(args.get("sysparm_limit"))
    columns = readable_columns(service, tdef)
    view = list_view_of(tdef, args.get("sysparm_view"))  # a workspace's list view: its columns, computed ones too
    shown = columns
    if view is not None:
        columns, shown = view_columns(view)
    shape = make_shape(defs.tables, tdef, ",".join(columns), "all", "true", base_url(), service.readable)
    selected = list(dict.fromkeys(shape.columns() + ([view.age_from, "sys_created_on"] if view else [])))
    group_by = args.get("sysparm_group_by", "")
    error, groups, groups_more = None, None, 0
    try:
        query, effective, search = list_query(tdef, args, columns)
        first = row_number(args.get("sysparm_first_row"))
        if args.get("page", "").isdigit():  # "go to page N"
            first = (max(int(args["page"]), 1) - 1) * page + 1
        counted = service.total(table, effective, properties().get(EXACT_COUNT_LIMIT))  # first: few matches
        rows = service.query(table, effective, selected, page, first - 1,  # are read from themselves
                             matching=None if counted.estimated else counted.rows)
        total = _shown_total(counted, first, rows)
        if group_by:
            groups, groups_more = group_counts(service, tdef, effective, group_by)
    except (QueryError, ValueError, AccessDenied) as exc:
        error, rows, total, first, query, search, groups = error_words(tdef, str(exc)), [], Total(0), 1, Query(), "", None
    typed = rows_typed if rows_typed is not None else filter_rows(tdef, query)
    computed = computed_cells(view, rows) if view is not None else {}
    return {
        "tdef": tdef, "columns": [(c, shape.fields[c] if c in shape.fields else Computed(c, COMPUTED_COLUMNS[c]))
                                  for c in shown],
        "rows": [render_record(shape, r) | computed.get(r["sys_id"], {}) | {"sys_id": r["sys_id"]} for r in rows],
        "total": total.rows, "estimated": total.estimated, "total_text": total_text(total),
        "first": first, "page": page, "page_sizes": PAGE_SIZES, "encoded": encoded,
        "error": error, "filter_error": filter_error, "search": search,
        "order": query.order[0] if query.order else None, "order_encoded": to_encoded(Query(None, query.order)),
        "filter_rows": row_views(tdef, typed or [blank_row()]), "filter_open": bool(typed),
        "fields": filter_fields(tdef),
        "sentence": filter_sentence(tdef, parse_encoded(encoded)) if encoded and not error else "",
        "can_create": service.can(table, "create"), "can_write": service.can(table, "write"),
        "list_url": _list_url, "filter_url": _filter_url(table), "actor": g.actor, "args": args,
        "condition_for": _condition_target(args.get("condition_for", ""), encoded),
        "group_by": group_by if groups is not None else "", "groups": groups, "groups_more": groups_more,
        "group_fields": group_fields(tdef),
        "saved_filters": saved_filters(table), "may_share": may_share(g.actor),
        "can_repair_slas": g.actor.is_admin and tdef.audit and enabled(defs, table) and not search and not error,
        "bulk_fields": [(n, f.label) for n, f in tdef.fields.items() if not f.system and f.ftype.queryable
                        and service.can_read_field(table, n) and service.can_write_field(table, n)],
        "outbox": _outbox(service) if table == EMAIL_TABLE and g.actor.is_admin else None,
        "job": _job_shown(request.args.get("job")),
    }


def _job_shown(job_id: str | None):
    """The panel of a background job the list started (`?job=ID`: an SLA repair of its records), for
    who may see the job; None otherwise."""
    from ...jobs import get_job, job_refusal
    from .members import job_panel

    if not job_id or len(job_id) > 64:
        return None
    job = get_job(connection(), runtime().storage, job_id)
    if job is None or job_refusal(records(), job):
        return None
    return job_panel(job)


def _shown_total(total: Total, first: int, rows: list) -> Total:
    """An estimated total never says fewer records than the page itself shows."""
    return Total(max(total.rows, first - 1 + len(rows)), True) if total.estimated else total


def total_text(total: Total) -> str:
    """A total as a list says it: "1,234", or "about 1,000,000" when it is the planner's estimate."""
    return f"{'about ' if total.estimated else ''}{total.rows:,}"


def list_query(tdef: TableDef, args, columns: list[str]) -> tuple[Query, Query, str]:
    """(the filter, the filter with the quick search the list applies, the search text) from a list's
    parameters: `sysparm_query`, `sysparm_orderby` (`-` first: descending), `sysparm_search` over
    `columns`. QueryError names what is wrong."""
    query = parse_encoded(args.get("sysparm_query", ""))
    order_by = args.get("sysparm_orderby")
    if order_by:
        query = Query(query.where, ((order_by.lstrip("-"), order_by.startswith("-")),))
    search = args.get("sysparm_search", "").strip()
    return query, _combined(query, _quick_search(tdef, columns, search) if search else None), search


def _args() -> dict:
    """The page's parameters: the URL's, and on a filter post the list's query the form carried."""
    args = dict(request.args.items())
    if request.method == "POST" and "sysparm_query" in request.form:
        args["sysparm_query"] = request.form["sysparm_query"]
    return args


def _outbox(service) -> dict:
    """What the admin's e-mail list says about sending: configured or not, and how many wait."""
    waiting = service.count(EMAIL_TABLE, Query(Term("state", "eq", "ready")))
    return {"configured": bool(runtime().config.smtp_host), "waiting": waiting}


def _condition_target(value: str, encoded: str) -> dict | None:
    """Building a member list's condition here: `condition_for=<list table>:<sys_id>`."""
    table, _, sys_id = value.partition(":")
    if not sys_id or runtime().defs.member_list_for(table) is None:
        return None
    return {"table": table, "sys_id": sys_id, "query": encoded}


def _list_url(table: str, **params) -> str:
    args = {k: v for k, v in _args().items() if k in PAGE_PARAMS}
    args.update({k: v for k, v in params.items() if v is not None})
    args = {k: v for k, v in args.items() if v != ""}
    return f"/{table}_list.do" + (f"?{urlencode(args, safe=':')}" if args else "")  # `condition_for=table:id`


def _filter_url(table: str) -> str:
    """Where the filter form posts: the list's URL with every page parameter but the query it replaces."""
    return _list_url(table, sysparm_query="", sysparm_orderby="")


def _apply_filter(tdef: TableDef):
    """The filter builder posts its rows: one row redrawn for its field (`row_for`), a row added or
    removed, or the list moved to the URL of their encoded query."""
    form, asked = request.form, request.values  # htmx names the row in the URL (`?row_for=2`), a button in the form
    rows = posted_rows(form)
    row = row_redrawn(tdef, rows, asked, _filter_url(tdef.name))
    if row is not None:
        return row
    if rows_edited(rows, form, asked):
        return _filter_page(tdef, rows)
    try:
        query = query_from_rows(tdef, rows, parse_encoded(form.get("f_order", "")).order)
        encoded = to_encoded(query)
        parse_encoded(encoded)
    except QueryError as exc:
        return _filter_page(tdef, rows, f"Filter not applied: {exc}"), 422
    return redirect(_list_url(tdef.name, sysparm_query=encoded, sysparm_first_row=None))


def _filter_page(tdef: TableDef, rows: list[dict], error: str | None = None):
    """The filter with `rows` drawn again: the fragment for htmx, else the whole list page."""
    context = _list_context(tdef, rows, error)
    if request.headers.get("HX-Request") and not error:
        return render_template("_filter.html", **context)
    return render_template("list.html", **context | {"filter_open": True})


# -- bulk edit ---------------------------------------------------------------------------------------

def _bulk_value_input(tdef: TableDef, name: str):
    """The bulk edit's value input for the chosen field: its choices, a reference picker, true/false."""
    field = tdef.field(name)
    return render_template("_list_bulk_value.html", tdef=tdef, field=field if field and not field.system else None)


@blueprint.post("/ui/bulk/<table>")
@login_required
def bulk_edit(table: str):
    """Set one field on the selected records, or on every record matching the list's filter,
    through the write path record by record; report what changed and what was refused."""
    service = records()
    defs = runtime().defs
    if table not in defs.tables:
        abort(404)
    tdef = defs.tables[table]
    field = request.form.get("bulk_field", "")
    back = safe_path(request.form.get("back")) or _list_url(table)
    if tdef.field(field) is None or tdef.field(field).system:
        flash(f"Bulk edit: choose a field of {tdef.label}.")
        return redirect(back)
    fdef = tdef.field(field)
    try:
        value = _bulk_value(fdef, request.form)
    except QueryError as exc:
        flash(f"Bulk edit not done: {exc}", "error")
        return redirect(back)
    if request.form.get("scope") == "filter":
        query = parse_encoded(request.form.get("sysparm_query", ""))
        ids = [r["sys_id"] for r in service.query(table, Query(query.where), ["sys_id"])]
    else:
        ids = request.form.getlist("sys_id")
    changed, refused = 0, []
    for sys_id in ids:
        before = None
        try:
            with service.conn.begin_nested():
                before = service.get(table, sys_id)
                after = service.update(table, sys_id, {field: value})
                if before and after.get("sys_mod_count") != before.get("sys_mod_count"):
                    changed += 1
        except (RecordError, Conflict, AccessDenied, NotFound) as exc:
            refused.append(f"{record_name(tdef, before) if before else sys_id[:8] + '…'}: {exc}")
    db.session.commit()
    message = f"Bulk edit of {fdef.label}: {changed} of {len(ids)} records changed"
    if refused:
        message += f"; {len(refused)} refused: " + "; ".join(refused[:5]) + (" …" if len(refused) > 5 else "")
    # a green banner only when something changed and nothing was refused
    flash(message, "warning" if refused or (ids and not changed) else "message")
    return redirect(back)


def _bulk_value(field: FieldDef, form) -> str:
    """The value a bulk edit sets: a choice by value or label, a reference by sys_id or by the name typed
    (the picker's `<field>__display` when nothing was picked); QueryError naming field and value."""
    value = form.get("bulk_value", "")
    if field.type == "reference" and not value.strip():
        value = form.get(f"{field.name}__display", "")
    return typed_value(field, value)


__all__ = ["filter_rows", "list_columns", "list_view", "query_from_rows", "row_number", "typed_value", "url_for"]


def _page_size(value: str | None) -> int:
    return int(value) if value and value.isdigit() and int(value) in PAGE_SIZES else PAGE
