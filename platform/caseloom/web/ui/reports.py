"""Reports and dashboards in the browser: `/dashboard/<name>` (a grid of reports, each fetched on its
own by htmx so a slow one holds up nothing, with one date range), `/report/<name>` (one report, a page
of its own that needs no script), the home page of the roles a dashboard is declared for, and a
report's numbers as CSV or XLSX (`?CSV`, `?XLSX`)."""

from __future__ import annotations

from flask import Response, abort, g, render_template, request

from ...access import AccessDenied
from ...definitions.model import DashboardDef, ReportDef
from ...insight import RANGES, ReportResult, run_report
from ...query import Query, QueryError, parse_encoded
from ...query.aggregate import number_text
from ..auth import records, runtime
from ..charts import chart, drill_url
from ..serialize import base_url, make_shape, render_record
from . import blueprint, login_required
from .export import CONTENT_TYPES, NUMBER, csv_chunks, export_format, file_chunks, write_xlsx

RANGE_LABELS = {"7": "Last 7 days", "30": "Last 30 days", "90": "Last 90 days", "365": "Last 365 days",
                "all": "All time"}


@blueprint.context_processor
def _report_helpers() -> dict:
    return {"data_table": table_rows, "drill": drill_url}


def may_open(report: ReportDef) -> bool:
    """The user reads the report's table and, when it names roles, holds one of them."""
    actor = g.actor
    if report.roles and not actor.is_admin and not set(report.roles) & actor.roles:
        return False
    return records().can(report.table, "read")


def may_see(dashboard: DashboardDef) -> bool:
    return dashboard in runtime().defs.dashboards_of(g.actor.roles)


def chosen_range(default: int | str) -> str:
    """The `range` parameter (the last 7, 30, 90 or 365 days, or all), else the dashboard's own."""
    raw = request.args.get("range") or str(default)
    if raw not in RANGES:
        abort(400, description=f"range: one of {', '.join(RANGES)}, not {raw[:20]!r}")
    return raw


def home_dashboard() -> DashboardDef | None:
    """The dashboard that is the home page of the signed-in user (the first declared `home: true` one of
    their most senior role), or None."""
    if g.actor.is_admin:  # an administrator's home stays the menu: every dashboard is a link there
        return None
    return next((d for d in runtime().defs.dashboards_of(g.actor.roles) if d.home), None)


@blueprint.get("/dashboard/<name>")
@login_required
def dashboard(name: str):
    board = runtime().defs.dashboards.get(name)
    if board is None or not may_see(board):
        abort(404)
    return render_dashboard(board)


def render_dashboard(board: DashboardDef):
    days = chosen_range(board.range)
    reports = [runtime().defs.reports[r] for r in board.reports]
    # `actor` given here too: the home page (an app route) renders this without the blueprint's context
    return render_template("dashboard.html", actor=g.actor, board=board, range=days, ranges=RANGE_LABELS,
                           reports=[r for r in reports if may_open(r)],
                           others=[d for d in runtime().defs.dashboards_of(g.actor.roles) if d.name != board.name])


@blueprint.get("/report/<name>")
@login_required
def report(name: str):
    """One report: a page of its own, or (htmx) the card a dashboard swaps in."""
    found = runtime().defs.reports.get(name)
    if found is None or not may_open(found):
        abort(404)
    days = chosen_range(30)
    kind = export_format(request.args)
    context = report_context(found, days)
    if kind and context["error"] is None:
        return _export(context["result"], context["rows"], kind)
    if request.headers.get("HX-Request"):
        return render_template("_report.html", **context)
    return render_template("report.html", **context)


def report_context(found: ReportDef, days: str) -> dict:
    """What `_report.html` shows of a report over the date range `days`: its result, chart or rows, or the
    error that keeps it from being shown (a condition the reader's access refuses, say)."""
    try:
        result = run_report(records(), found, days)
        rows = _list_rows(found, result) if found.kind == "list" else None
    except (QueryError, AccessDenied) as exc:
        return {"report": found, "error": str(exc), "range": days, "ranges": RANGE_LABELS, "result": None,
                "rows": None}
    return {"report": found, "result": result, "chart": chart(result), "rows": rows, "range": days,
            "ranges": RANGE_LABELS, "list_url": drill_url(found.table, result.query), "error": None,
            "change": _change(result)}


def _list_rows(report: ReportDef, result: ReportResult) -> dict:
    """A list report's rows: its columns the user may read, as display values, with links."""
    service, defs = records(), runtime().defs
    tdef = defs.tables[report.table]
    columns = [c for c in report.columns if service.can_read_path(report.table, c)]
    shape = make_shape(defs.tables, tdef, ",".join(columns), "true", "true", base_url(), service.readable)
    order = ((report.order_by.lstrip("-"), report.order_by.startswith("-")),) if report.order_by else ()
    query = Query(parse_encoded(result.query).where, order)
    total = service.count(report.table, query)  # first: few matches are read from themselves
    found = service.query(report.table, query, shape.columns(), report.limit, matching=total)
    return {"columns": [(c, shape.fields[c].label) for c in columns],
            "rows": [render_record(shape, r) | {"sys_id": r["sys_id"]} for r in found], "total": total}


def _change(result: ReportResult) -> dict | None:
    """A score against the period before: up, down or level, by how much."""
    if result.score is None or result.previous is None:
        return None
    now, before = result.score.value, result.previous.value
    missing = (result.score.text == "–", result.previous.text == "–")  # no records to measure
    if any(missing):
        text, after = {(True, True): ("nothing to compare", ": none in this period or the one before"),
                       (False, True): ("new", ": none in the period before"),
                       (True, False): ("none in this period", f", {result.previous.text} in the period before")}[missing]
        return {"direction": "level", "text": text, "after": after}
    if before == now:
        return {"direction": "level", "text": "no change"}
    direction = "up" if now > before else "down"
    if result.report.function == "percent":  # a share changes by points, not by a percent of itself
        points = round(abs(now - before), 1)
        words = f"{number_text(points)} point{'' if points == 1 else 's'}"
    elif before:
        share = abs(now - before) / before * 100
        words = "less than 1 %" if round(share) == 0 else f"{share:.0f} %"  # not "down 0 %": it did change
    else:
        words = "from none"
    return {"direction": direction, "text": f"{direction} {words}"}


def table_rows(result: ReportResult, rows: dict | None) -> tuple[list[str], list[list[str]]]:
    """The report's numbers as a table: a category per row, a column per series (the data table under a
    chart, and the export)."""
    report = result.report
    if rows is not None:
        return [label for _, label in rows["columns"]], [[r.get(c, "") for c, _ in rows["columns"]]
                                                          for r in rows["rows"]]
    if result.score is not None:
        return _score_rows(result)
    by = runtime().defs.tables[report.table]
    first = "Period" if report.trend else _label(by, report.group_by)
    if report.stack_by:
        return ([first, *(label for _, label in result.series)],
                [[label, *((result.cell(value, s).text if result.cell(value, s) else "") for s, _ in result.series)]
                 for value, label in result.categories])
    return [first, result.measure], [[label, result.cell(value).text if result.cell(value) else ""]
                                     for value, label in result.categories]


def _score_rows(result: ReportResult) -> tuple[list[str], list[list[str]]]:
    """A score as a table: its period's number and the period before's, and, as the page shows beside the
    score, its second number (`also:`, a median beside an average) in a column of its own, for its period."""
    header, current = ["Period", result.measure], [RANGE_LABELS[result.range], result.score.text]
    before = ["The period before", result.previous.text] if result.previous is not None else None
    if result.also is not None:
        header.append(result.also_measure)
        current.append(result.also.text)
        if before is not None:
            before.append("")  # the page shows no second number for the period before
    return header, [current] + ([before] if before is not None else [])


def _label(tdef, path: str | None) -> str:
    from ...definitions.tables import resolve_path

    field = resolve_path(runtime().defs.tables, tdef, path) if path else None
    return field.label if field is not None else (path or "")


def _export(result: ReportResult, rows: dict | None, kind: str):
    """The report's table as a CSV or XLSX download, through the lists' writers (export.py)."""
    header, body = table_rows(result, rows)
    name = f"{result.report.name}.{kind}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    if kind == "csv":
        return Response(b"".join(csv_chunks(header, body)), content_type=CONTENT_TYPES[kind], headers=headers)
    numbers = [[_number(value) for value in row] for row in body]
    return Response(file_chunks(write_xlsx(result.report.title, header, numbers)), content_type=CONTENT_TYPES[kind],
                    headers=headers)


def _number(text: str) -> str | float:
    """A number as shown ("1,234", "2.5") as a number for a spreadsheet; other text as it is."""
    plain = text.replace(",", "")
    return float(plain) if NUMBER.match(plain) else text


__all__ = ["home_dashboard", "render_dashboard", "table_rows"]
