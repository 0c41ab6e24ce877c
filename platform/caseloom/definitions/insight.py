"""Reports and dashboards: from documents to ReportDefs and DashboardDefs, each table, field, role,
condition and aggregate checked where it is written."""

from __future__ import annotations

from .behaviour import _Checker
from .model import Aggregate, DashboardDef, ReportDef, TableDef
from .tables import resolve_path
from .yamlsource import SourceDocument

CHARTS = ("bar", "horizontal_bar", "stacked_bar", "pie", "donut")
TRENDS = ("line", "area")
STANDALONE_CHARTS = ("bar", "horizontal_bar", "line", "area")  # charts whose every number stands alone
NUMERIC = ("integer", "decimal", "duration")
DATES = ("date", "datetime")


def build_reports(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
                  properties: dict) -> dict[str, ReportDef]:
    reports: dict[str, ReportDef] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        for name, spec in doc.data["reports"].items():
            where = ("reports", name)
            if name in reports:
                check.error(where, f"report {name!r} is already declared at {reports[name].location}")
                continue
            table = check.table(spec["table"], where + ("table",))
            check.roles_of(spec.get("roles", ()), where + ("roles",))
            if table is None:
                continue
            report = _report(check, table, name, spec, where)
            if report is not None:
                reports[name] = report
    return reports


def _report(check: _Checker, table: TableDef, name: str, spec: dict, where: tuple) -> ReportDef | None:
    kind = spec["type"]
    before = len(check.errors)

    def groupable(key: str) -> str | None:
        path = spec.get(key)
        if path is None:
            return None
        field = check.field(table, path, where + (key,))
        if field is not None and not (field.stored and field.ftype.queryable and field.ftype.sortable):
            check.error(where + (key,), f"{path!r} is a {field.type} field: a report cannot group by it")
        return path

    def dated(path: str | None, key: tuple) -> None:
        if path is None:
            return
        field = check.field(table, path, where + key)
        if field is not None and field.type not in DATES:
            check.error(where + key, f"{path!r} is a {field.type} field, not a date or date-time")

    group_by, stack_by = groupable("group_by"), groupable("stack_by")
    needs = {"group_by": kind in CHARTS, "stack_by": kind == "stacked_bar", "trend": kind in TRENDS,
             "columns": kind == "list"}
    for key, needed in needs.items():
        if needed and spec.get(key) is None:
            check.error(where, f"a {kind} report needs `{key}`")
        elif not needed and spec.get(key) is not None:
            check.error(where + (key,), f"a {kind} report takes no `{key}`")
    trend = spec.get("trend") or {}
    dated(trend.get("field"), ("trend", "field"))
    dated(spec.get("date_field"), ("date_field",))
    for i, path in enumerate(spec.get("columns", ())):
        check.field(table, path, where + ("columns", i))
    order = spec.get("order_by")
    if order is not None:
        if kind != "list":
            check.error(where + ("order_by",), f"a {kind} report takes no `order_by` (only a list is sorted)")
        else:
            groupable_order = check.field(table, order.lstrip("-"), where + ("order_by",))
            if groupable_order is not None and not groupable_order.ftype.sortable:
                check.error(where + ("order_by",), f"{order!r}: {groupable_order.type} fields cannot be sorted on")
    measure = _aggregate(check, table, spec.get("aggregate"), kind, where + ("aggregate",))
    also = None
    if spec.get("also") is not None:
        if kind != "score":
            check.error(where + ("also",), f"a {kind} report takes no `also` (a score's second number)")
        also = _aggregate(check, table, spec["also"], kind, where + ("also",))
    condition = check.encoded(table, spec.get("condition"), where + ("condition",))
    date_field = spec.get("date_field") or trend.get("field") or "sys_created_on"
    ranged = spec.get("date_range", True)
    if not ranged and (kind in TRENDS or spec.get("date_field")):
        check.error(where + ("date_range",), "a report outside the date range has no `trend` or `date_field`")
    if len(check.errors) > before:
        return None
    return ReportDef(name, spec["title"], table.name, kind, condition, spec.get("condition", ""), group_by, stack_by,
                     trend.get("field"), trend.get("per", "day"), date_field, ranged, measure.function,
                     measure.measured, measure.span, tuple(spec.get("columns", ())), order, spec.get("limit", 10),
                     tuple(spec.get("roles", ())), spec.get("description", ""), check.doc.where(*where), also,
                     measure.share, measure.share_label)


def _aggregate(check: _Checker, table: TableDef, spec: dict | None, kind: str, where: tuple) -> Aggregate:
    """The number of `aggregate:` (or `also:`); a count of records when there is none."""
    if spec is None:
        return Aggregate()
    if kind == "list":
        check.error(where, "a list report takes no `aggregate` (it lists records)")
        return Aggregate()
    function, path = spec["function"], spec.get("field")
    if function in ("median", "percent") and kind not in ("score", *STANDALONE_CHARTS):
        check.error(where + ("function",), f"a {function} is one number of each group's records, and a {kind}'s parts "
                                           f"add up to a whole: a {kind} report takes count, sum, avg, min or max (a "
                                           f"{function} goes in a score, {', '.join(STANDALONE_CHARTS)})")
    if function == "percent":
        if path is not None or "from" in spec or "to" in spec:
            check.error(where, "percent is the share of the records that also meet `where`: it takes no `field`, "
                               "`from` or `to`")
        if not spec.get("where"):
            check.error(where, "percent needs `where`: the condition of the records counted as the share")
            return Aggregate(function)
        share = check.encoded(table, spec["where"], where + ("where",))
        return Aggregate(function, share=share, share_label=spec.get("label") or f"meeting {spec['where']}")
    for key in ("where", "label"):
        if key in spec:
            check.error(where + (key,), f"`{key}` belongs to percent, not {function}")
    span = (spec["from"], spec["to"]) if "from" in spec and "to" in spec else None
    if ("from" in spec) != ("to" in spec):
        check.error(where, "a duration needs both `from` and `to` (two date-time fields)")
    if function == "count":
        if path is not None or "from" in spec:
            check.error(where, "count counts records: it takes no `field`, `from` or `to`")
        return Aggregate()
    if (path is None) == (span is None):
        check.error(where, f"{function} needs either `field` or a duration `from` and `to`")
        return Aggregate(function)
    if span is not None:
        for key, end in zip(("from", "to"), span, strict=True):
            field = check.field(table, end, where + (key,))
            if field is not None and field.type != "datetime":
                check.error(where + (key,), f"{end!r} is a {field.type} field, not a date-time")
        return Aggregate(function, span=span)
    field = resolve_path(check.tables, table, path)
    if field is None:
        check.error(where + ("field",), f"{path!r} is not a field of {table.name!r}")
    elif function in ("avg", "sum", "median") and not (field.type in NUMERIC or (field.type == "choice"
                                                                       and field.choice_kind == "integer")):
        check.error(where + ("field",), f"{path!r} is a {field.type} field: {function} takes numbers or durations")
    elif not (field.stored and field.ftype.sortable):
        check.error(where + ("field",), f"{path!r}: {field.type} fields have no {function}")
    return Aggregate(function, measured=path)


def build_dashboards(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
                     reports: dict[str, ReportDef], broken_reports: set[str]) -> dict[str, DashboardDef]:
    dashboards: dict[str, DashboardDef] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors)
        spec = doc.data["dashboard"]
        where = ("dashboard",)
        name = spec["name"]
        if name in dashboards:
            check.error(where + ("name",), f"dashboard {name!r} is already declared at {dashboards[name].location}")
            continue
        check.roles_of(spec["roles"], where + ("roles",))
        for i, report in enumerate(spec["reports"]):
            if report not in reports and report not in broken_reports:
                known = ", ".join(sorted(reports)) or "none are declared"
                check.error(where + ("reports", i), f"unknown report {report!r} (known: {known})")
        dashboards[name] = DashboardDef(name, spec["title"], tuple(spec["roles"]),
                                        tuple(r for r in spec["reports"] if r in reports), spec.get("home", False),
                                        spec.get("range", 30), spec.get("description", ""), doc.where(*where))
    return dashboards


__all__ = ["CHARTS", "TRENDS", "build_dashboards", "build_reports"]
