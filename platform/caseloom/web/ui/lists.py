"""Lists of any table: columns, sort, paging with the total, filter builder, quick search, bulk edit."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import abort, flash, g, redirect, render_template, request, url_for

from ...definitions.model import TableDef
from ...definitions.tables import resolve_path
from ...query import OPERATORS, AnyOf, Query, QueryError, Term, parse_encoded, to_encoded
from ...query.compile import MAX_OFFSET
from ...query.conditions import All, Not, terms_of
from ...records import AccessDenied, Conflict, NotFound, RecordError
from .. import db
from ..auth import records, runtime, safe_path
from ..serialize import base_url, display_names, make_shape, record_name, render_record
from . import blueprint, login_required

PAGE = 20
PAGE_SIZES = (20, 50, 100)  # rows per page a person may choose (`sysparm_limit`)


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
    tables = runtime().defs.tables
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


def filter_rows(tdef: TableDef, query: Query) -> list[dict]:
    """The filter builder's rows for a query: [{join, field, op, value}], AND groups of OR terms."""
    node = query.where
    if node is None:
        return []
    groups = list(node.items) if isinstance(node, All) else [node]
    rows = []
    for group in groups:
        terms = list(group.items) if isinstance(group, AnyOf) else [group]
        for i, term in enumerate(terms):
            if not isinstance(term, Term):
                return []  # not expressible as rows (e.g. ^NQ); the encoded text is still shown
            value = ",".join(map(str, term.value)) if isinstance(term.value, list) else (term.value or "")
            rows.append({"join": "or" if i else "and", "field": term.field, "op": term.op, "value": value})
    return rows


# What ServiceNow's dynamic values read as in a sentence.
DYNAMIC_WORDS = {"gs.getuserid()": "me", "gs.getusername()": "me", "gs.nowdatetime()": "now",
                 "gs.beginningoftoday()": "the start of today", "gs.endoftoday()": "the end of today"}


def filter_sentence(tdef: TableDef, query: Query) -> str:
    """The filter as a person reads it: fields by label, choices by label, references by display value
    ("State is one of New, Open and Priority is 1 - Critical")."""
    def phrase(node, top: bool = False) -> str:
        if isinstance(node, All):
            return " and ".join(phrase(item) for item in node.items)
        if isinstance(node, AnyOf):
            text = " or ".join(phrase(item) for item in node.items)
            return text if top else f"({text})"
        if isinstance(node, Not):
            return f"not ({phrase(node.item, True)})"
        if not isinstance(node, Term):
            return ""
        field, label = _path_words(tdef, node.field)
        op = OPERATORS.get(node.op)
        words = op.label if op is not None else node.op
        if op is None or not op.takes_value:
            return f"{label} {words}"
        values = node.value if isinstance(node.value, (list, tuple)) else [node.value]
        return f"{label} {words} {', '.join(_value_words(field, v, names) for v in values)}"

    names = display_names(records(), _referenced(tdef, query))  # every sys_id the filter names, read at once
    text = phrase(query.where, True) if query.where is not None else ""
    for path, descending in query.order:
        _, label = _path_words(tdef, path)
        text += f"{'; ' if text else ''}ordered by {label}{' (descending)' if descending else ''}"
    return text[:1].upper() + text[1:]


def _path_words(tdef: TableDef, path: str):
    """The field a path ends at, and its labels joined as a person reads a dot-walk (`Account › Name`)."""
    defs = runtime().defs
    labels, current, field = [], tdef, None
    for part in path.split("."):
        field = current.field(part) if current is not None else None
        labels.append(field.label if field is not None else part)
        current = defs.tables.get(field.reference) if field is not None and field.reference else None
    return field, " › ".join(labels)


def _referenced(tdef: TableDef, query: Query) -> dict[str, set[str]]:
    """The sys_ids a filter compares references with, by the table they belong to."""
    wanted: dict[str, set[str]] = {}
    for term in terms_of(query.where):
        field = _path_words(tdef, term.field)[0] if isinstance(term, Term) else None
        if field is not None and field.type == "reference":
            values = term.value if isinstance(term.value, (list, tuple)) else [term.value]
            wanted.setdefault(field.reference, set()).update(str(v) for v in values if v and len(str(v)) == 32)
    return wanted


def _value_words(field, value, names: dict[tuple[str, str], str]) -> str:
    text = "" if value is None else str(value)
    if text.lower().startswith("javascript:"):
        return DYNAMIC_WORDS.get(text[len("javascript:"):].strip().lower(), text)
    if field is None or text == "":
        return text or "(empty)"
    if field.choices:
        return field.choice_label(text) or text
    if field.type == "reference":
        return names.get((field.reference, text), text)
    return text


def query_from_rows(form) -> Query:
    """The Query the filter builder's rows describe (the inverse of filter_rows)."""
    groups: list[list[Term]] = []
    for join, field, op_name, value in zip(form.getlist("f_join"), form.getlist("f_field"), form.getlist("f_op"),
                                           form.getlist("f_value"), strict=False):
        if not field:
            continue
        op = OPERATORS.get(op_name)
        if op is None:
            raise QueryError(f"unknown operator {op_name!r}")
        term_value = None if not op.takes_value else ([v.strip() for v in value.split(",") if v.strip()]
                                                       if op.list_value else value)
        term = Term(field, op.name, term_value)
        if join == "or" and groups:
            groups[-1].append(term)
        else:
            groups.append([term])
    nodes = [g[0] if len(g) == 1 else AnyOf(tuple(g)) for g in groups]
    return Query(None if not nodes else nodes[0] if len(nodes) == 1 else All(tuple(nodes)))


def filter_fields(tdef: TableDef) -> list[tuple[str, str]]:
    return [(name, f.label) for name, f in tdef.fields.items() if f.ftype.queryable]


@blueprint.route("/<path:name>.do", methods=["GET", "POST"])
@login_required
def dispatch(name: str):
    # `x_list.do` is the list of x, unless a table is itself named x_list (sn_..._recipients_list.do is a form)
    tables = runtime().defs.tables
    if name.endswith("_list") and (name not in tables or name[: -len("_list")] in tables):
        return list_view(name[: -len("_list")])
    from .forms import form

    return form(name)


def list_view(table: str):
    service = records()
    defs = runtime().defs
    if table not in defs.tables:
        abort(404)
    try:
        service.table(table, "read")
    except AccessDenied:
        abort(403)
    tdef = defs.tables[table]
    if request.method == "POST":
        return _apply_filter(tdef)
    encoded = request.args.get("sysparm_query", "")
    page = _page_size(request.args.get("sysparm_limit"))
    columns = readable_columns(service, tdef)
    error = None
    try:
        query = parse_encoded(encoded)
        order_by = request.args.get("sysparm_orderby")
        if order_by:
            desc = order_by.startswith("-")
            query = Query(query.where, ((order_by.lstrip("-"), desc),))
        search = request.args.get("sysparm_search", "").strip()
        effective = _combined(query, _quick_search(tdef, columns, search) if search else None)
        first = row_number(request.args.get("sysparm_first_row"))
        if request.args.get("page", "").isdigit():  # "go to page N"
            first = (max(int(request.args["page"]), 1) - 1) * page + 1
        shape = make_shape(defs.tables, tdef, ",".join(columns), "all", "true", base_url(), service.readable)
        rows = service.query(table, effective, shape.columns(), page, first - 1)
        total = service.count(table, effective)
    except (QueryError, ValueError, AccessDenied) as exc:
        error, rows, total, first, query, search = str(exc), [], 0, 1, Query(), ""
        shape = make_shape(defs.tables, tdef, ",".join(columns), "all", "true", base_url(), service.readable)
    context = {
        "tdef": tdef, "columns": [(c, shape.fields[c]) for c in columns],
        "rows": [render_record(shape, r) | {"sys_id": r["sys_id"]} for r in rows],
        "total": total, "first": first, "page": page, "page_sizes": PAGE_SIZES, "encoded": encoded, "error": error,
        "order": query.order[0] if query.order else None, "search": search,
        "filter_rows": filter_rows(tdef, query), "fields": filter_fields(tdef), "operators": list(OPERATORS.values()),
        "sentence": filter_sentence(tdef, parse_encoded(encoded)) if encoded and not error else "",
        "can_create": service.can(table, "create"), "can_write": service.can(table, "write"),
        "list_url": _list_url, "actor": g.actor,
        "condition_for": _condition_target(request.args.get("condition_for", ""), encoded),
    }
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "list-body":
        return render_template("_list_body.html", **context)
    return render_template("list.html", **context)


def _condition_target(value: str, encoded: str) -> dict | None:
    """Building a member list's condition here: `condition_for=<list table>:<sys_id>`."""
    table, _, sys_id = value.partition(":")
    if not sys_id or runtime().defs.member_list_for(table) is None:
        return None
    return {"table": table, "sys_id": sys_id, "query": encoded}


def _list_url(table: str, **params) -> str:
    args = {k: v for k, v in request.args.items()
            if k in ("sysparm_query", "sysparm_orderby", "sysparm_search", "condition_for", "sysparm_limit")}
    args.update({k: v for k, v in params.items() if v is not None})
    args = {k: v for k, v in args.items() if v != ""}
    return f"/{table}_list.do" + (f"?{urlencode(args)}" if args else "")


def _apply_filter(tdef: TableDef):
    """The filter builder posts its rows; the list moves to the URL of their encoded query."""
    if request.form.get("add_row"):
        rows = [{"join": j, "field": f, "op": o, "value": v} for j, f, o, v in zip(
            request.form.getlist("f_join"), request.form.getlist("f_field"), request.form.getlist("f_op"),
            request.form.getlist("f_value"), strict=False)]
        rows.append({"join": request.form["add_row"], "field": "", "op": "eq", "value": ""})
        # the page's own parameters stay (a member list's condition being built: `condition_for`)
        return render_template("_filter.html", tdef=tdef, filter_rows=rows, fields=filter_fields(tdef),
                               operators=list(OPERATORS.values()), encoded="", standalone=True, actor=g.actor,
                               condition_for=_condition_target(request.args.get("condition_for", ""), ""))
    try:
        query = query_from_rows(request.form)
        encoded = to_encoded(query)
        parse_encoded(encoded)
    except QueryError as exc:
        flash(f"Filter not applied: {exc}")
        return redirect(_list_url(tdef.name))
    return redirect(_list_url(tdef.name, sysparm_query=encoded, sysparm_first_row=None,
                              condition_for=request.args.get("condition_for")))


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
    if tdef.field(field) is None or tdef.field(field).system:
        flash(f"Bulk edit: choose a field of {tdef.label}.")
        return redirect(safe_path(request.form.get("back")) or _list_url(table))
    value = request.form.get("bulk_value", "")
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
    label = tdef.field(field).label
    message = f"Bulk edit of {label}: {changed} of {len(ids)} records changed"
    if refused:
        message += f"; {len(refused)} refused: " + "; ".join(refused[:5]) + (" …" if len(refused) > 5 else "")
    # a green banner only when something changed and nothing was refused
    flash(message, "warning" if refused or (ids and not changed) else "message")
    return redirect(safe_path(request.form.get("back")) or _list_url(table))


__all__ = ["list_columns", "list_view", "query_from_rows", "filter_rows", "row_number", "url_for"]


def _page_size(value: str | None) -> int:
    return int(value) if value and value.isdigit() and int(value) in PAGE_SIZES else PAGE
