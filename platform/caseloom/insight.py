"""Reports run (definitions kind `reports`): a chart's groups, a trend's periods, a single score
against the previous period, each value with the encoded query of exactly the records it counts, so
clicking it opens that list. One aggregate statement per chart through the user's read access (the
Aggregate API's compiler: row rules in the WHERE, field rules around their columns), so a user counts
only what they may read, and a drill-down list shows the same records as the number."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from .definitions.insight import TRENDS
from .definitions.model import FieldDef, ReportDef
from .definitions.tables import resolve_path
from .fieldtypes import duration_words
from .query import Query, Term, parse_encoded, to_encoded
from .query.aggregate import AggregateQuery, Measure, Period, aggregate, measure_sql, median, medians_by, number_text
from .query.compile import Selection
from .query.conditions import All
from .query.dynamic import now

RANGES = ("7", "30", "90", "365", "all")  # a dashboard's date range: the last N days, or everything
OTHER = "(other)"


@dataclass
class Cell:
    """One number of a report: its value, as people read it, and the records it counts."""

    value: float
    text: str
    query: str  # the encoded query of its records


@dataclass
class ReportResult:
    report: ReportDef
    measure: str  # what the numbers are ("Count", "Average of Priority", "Average Opened to Closed")
    range: str
    query: str  # the report's own records: its condition and the date range
    categories: list[tuple[str, str]] = field(default_factory=list)  # (value, label): bars, slices, periods
    series: list[tuple[str, str]] = field(default_factory=list)  # (value, label) of a stack; one ("", "") else
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (category, series) -> its number
    score: Cell | None = None
    previous: Cell | None = None  # a score's value over the period before
    duration: bool = False  # the numbers are seconds, read as a duration in words
    also: Cell | None = None  # a score's second number (`also:`), and what it is
    also_measure: str = ""

    def cell(self, category: str, series: str = "") -> Cell | None:
        return self.cells.get((category, series))

    def as_json(self) -> dict:
        out: dict[str, Any] = {"name": self.report.name, "title": self.report.title, "type": self.report.kind,
                               "table": self.report.table, "measure": self.measure, "range": self.range,
                               "query": self.query}
        if self.score is not None:
            out["score"] = _cell_json(self.score)
            out["previous"] = _cell_json(self.previous) if self.previous else None
            if self.also is not None:
                out["also"] = {"measure": self.also_measure, **_cell_json(self.also)}
            return out
        out["groups"] = []
        for value, label in self.categories:
            group = {"group": {"value": value, "display_value": label}}
            if self.report.stack_by:
                group["series"] = [{"group": {"value": sv, "display_value": sl}, **_cell_json(self.cells[(value, sv)])}
                                   for sv, sl in self.series if (value, sv) in self.cells]
            else:
                group.update(_cell_json(self.cells.get((value, "")) or Cell(0, "0", "")))
            out["groups"].append(group)
        return out


def _cell_json(cell: Cell) -> dict:
    return {"value": number_text(cell.value), "display_value": cell.text, "query": cell.query}


def first_day_ago(days: str) -> int:
    """How many days before today the last `days` days start: they are today and the days-1 before it
    (the last 7 days: today and the 6 days before, 7 daily buckets)."""
    return int(days) - 1


def range_condition(report: ReportDef, days: str):
    """The date range as a condition on the report's date field (None: all time)."""
    if days == "all" or not report.ranged:
        return None
    return parse_encoded(f"{report.date_field}>=javascript:gs.daysAgoStart({first_day_ago(days)})").where


def earlier_condition(report: ReportDef, days: str):
    """The period before the date range, as long as it: the `days` days before its first day."""
    start, length = first_day_ago(days), int(days)
    return parse_encoded(f"{report.date_field}>=javascript:gs.daysAgoStart({start + length})"
                         f"^{report.date_field}<javascript:gs.daysAgoStart({start})").where


def run_report(service, report: ReportDef, days: str) -> ReportResult:
    """The report's numbers for the user of `service` (a RecordService) over the last `days` days."""
    if days not in RANGES:
        raise ValueError(f"range: one of {', '.join(RANGES)}, not {days!r}")
    service.table(report.table, "read")
    where = _and(report.condition, range_condition(report, days))
    result = ReportResult(report, measure_label(service.defs.tables, report), days if report.ranged else "all",
                          to_encoded(Query(where)))
    result.duration = _in_seconds(service.defs.tables, report)
    if report.kind == "list":
        return result
    if report.kind == "score":
        return _score(service, report, result, where, days)
    if report.kind in TRENDS:
        return _trend(service, report, result, where, days)
    groups = tuple(p for p in (report.group_by, report.stack_by) if p)
    measure = _measure(report)
    middles = None
    if report.function == "median":  # the groups and their labels counted, then each group's median
        middles = medians_by(service.storage, service.conn, report.table, where, measure, report.group_by,
                             readable=service.readable)
        measure = Measure("count", None, measure.source)
    query = AggregateQuery(where, groups, (measure,), group_source=f"report {report.name}")
    found, answers = aggregate(service.storage, service.conn, report.table, query, service.readable)
    categories: dict[str, str] = {}
    series: dict[str, str] = {}
    for answer in answers:
        (value, label), *stack = [_group_text(g.field, v, shown) for g, (v, shown) in zip(found, answer.values,
                                                                                       strict=True)]
        stacked = stack[0] if stack else ("", "")
        categories.setdefault(value, label)
        series.setdefault(*stacked)
        terms = [_group_term(report.group_by, value)] + ([_group_term(report.stack_by, stacked[0])] if stack else [])
        number = answer.measures[measure.key] if middles is None else middles.get(answer.values[0][0])
        result.cells[(value, stacked[0])] = _cell(result, number, _share_of(report, _and(where, *terms)))
    order = _choice_order(found[0].field) if found else {}
    totals: dict[str, float] = {}  # a category's number, its stack's summed
    for (value, _), cell in result.cells.items():
        totals[value] = totals.get(value, 0) + cell.value
    result.categories = sorted(categories.items(), key=lambda c: _category_key(c, order, totals))
    if report.kind != "stacked_bar" and len(result.categories) > report.limit:
        result.categories = _with_other(result, report, where)
    stack_order = _choice_order(found[1].field) if len(found) > 1 else {}
    result.series = sorted(series.items(), key=lambda s: (s[0] == "", stack_order.get(s[0], len(stack_order)), s[1]))
    return result


def _score(service, report: ReportDef, result: ReportResult, where, days: str) -> ReportResult:
    value = _single(service, report, where)
    result.score = _cell(result, value, _share_of(report, where))
    if report.also is not None:  # a second number of the same records: a median beside an average
        also = report.also
        second = replace(report, function=also.function, measured=also.measured, span=also.span, share=also.share,
                         share_label=also.share_label, also=None)
        result.also_measure = measure_label(service.defs.tables, second)
        result.also = _cell(result, _single(service, second, where), _share_of(second, where), second.function,
                            _in_seconds(service.defs.tables, second))
    if days != "all" and report.ranged:
        before = _and(report.condition, earlier_condition(report, days))
        result.previous = _cell(result, _single(service, report, before), _share_of(report, before))
    return result


def _in_seconds(tables, report: ReportDef) -> bool:
    """Whether the report's numbers are seconds of a duration (read in words)."""
    if report.function in ("count", "percent"):
        return False
    measured = resolve_path(tables, tables[report.table], report.measured) if report.measured else None
    return report.span is not None or (measured is not None and measured.type == "duration")


def _share_of(report: ReportDef, where):
    """The records a number opens: for a percent, those counted as the share."""
    return _and(where, report.share) if report.function == "percent" else where


def _single(service, report: ReportDef, where) -> float | None:
    measure = _measure(report)
    if report.function == "median":
        return median(service.storage, service.conn, report.table, where, measure, service.readable)
    _, answers = aggregate(service.storage, service.conn, report.table, AggregateQuery(where, (), (measure,)),
                           service.readable)
    return answers[0].measures[measure.key] if answers else None


def _trend(service, report: ReportDef, result: ReportResult, where, days: str) -> ReportResult:
    """Per day, week or month of the trend field, every period of the range shown (an empty one as 0)."""
    if report.function == "median":
        found = medians_by(service.storage, service.conn, report.table, where, _measure(report), report.trend,
                           report.per, service.readable)
    else:
        sel = Selection(service.storage, report.table, readable=service.readable)
        column, _ = sel.column(report.trend)
        bucket = Period(column, report.per)
        measured = measure_sql(sel, _measure(report))
        condition = sel.condition(where)
        stmt = sa.select(bucket, measured).select_from(sel.from_clause)
        if condition is not None:
            stmt = stmt.where(condition)
        stmt = stmt.where(column.is_not(None)).group_by(bucket).order_by(bucket)
        found = {str(day): number for day, number in service.conn.execute(stmt)}
    first = _period_start(now() - dt.timedelta(days=first_day_ago(days)), report.per) if days != "all" else None
    if first is None and found:
        first = dt.date.fromisoformat(min(found))
    periods = _periods(first, _period_start(now(), report.per), report.per) if first else []
    periods = sorted(set(periods) | set(found))
    for start in periods:
        end = _next(dt.date.fromisoformat(start), report.per).isoformat()
        span = [Term(report.trend, "ge", f"{start} 00:00:00"), Term(report.trend, "lt", f"{end} 00:00:00")]
        result.categories.append((start, _period_label(start, report.per)))
        number = found.get(start)
        result.cells[(start, "")] = _cell(result, number if number is not None else
                                          (0 if report.function in ("count", "sum") else None),
                                          _share_of(report, _and(report.condition, *span)))
    return result


def _period_start(moment: dt.datetime | dt.date, per: str) -> dt.date:
    day = moment.date() if isinstance(moment, dt.datetime) else moment
    if per == "week":
        return day - dt.timedelta(days=day.weekday())
    if per == "month":
        return day.replace(day=1)
    return day


def _next(day: dt.date, per: str) -> dt.date:
    if per == "day":
        return day + dt.timedelta(days=1)
    if per == "week":
        return day + dt.timedelta(days=7)
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _periods(first: dt.date, last: dt.date, per: str) -> list[str]:
    out, day = [], first
    while day <= last and len(out) < 1000:
        out.append(day.isoformat())
        day = _next(day, per)
    return out


def _period_label(start: str, per: str) -> str:
    day = dt.date.fromisoformat(start)
    if per == "month":
        return f"{day:%b %Y}"
    return f"{'Week of ' if per == 'week' else ''}{day.day} {day:%b %Y}"


def _measure(report: ReportDef) -> Measure:
    """A report's number as an aggregate (a percent: the share of each group's records, in percent)."""
    return Measure(report.function, report.measured, f"report {report.name}", report.span,
                   report.share if report.function == "percent" else None)


def measure_label(tables, report: ReportDef) -> str:
    names = {"count": "Count", "sum": "Sum", "avg": "Average", "min": "Minimum", "max": "Maximum", "median": "Median"}
    if report.function == "count":
        return "Count"
    if report.function == "percent":
        return f"Percent {report.share_label}"
    tdef = tables[report.table]
    if report.span is not None:
        start, end = (resolve_path(tables, tdef, p) for p in report.span)
        return f"{names[report.function]} time from {start.label} to {end.label}"
    return f"{names[report.function]} of {resolve_path(tables, tdef, report.measured).label}"


def _cell(result: ReportResult, number: Any, where, function: str | None = None,
          duration: bool | None = None) -> Cell:
    """A number as people read it: a duration in words, a count whole, a percent to one place, others to
    two places (as the report's own number unless `function` and `duration` say otherwise)."""
    function = function or result.report.function
    duration = result.duration if duration is None else duration
    value = float(number) if number is not None else 0.0
    if number is None:
        text = "–"
    elif function == "percent":
        text = f"{number_text(round(value, 1))} %"
    elif duration:  # from an hour on, to the minute: "1 Day 1 Hour 12 Minutes", not "... 26 Seconds"
        seconds = int(round(value)) if value < 3600 else int(round(value / 60)) * 60
        text = duration_words(seconds) if seconds else "0 seconds"
    elif function == "count":
        text = f"{int(value):,}"
    else:
        text = number_text(round(value, 2))
    return Cell(value, text, to_encoded(Query(where)))


def _group_text(field: FieldDef, value: Any, shown: Any) -> tuple[str, str]:
    text = "" if value is None else field.ftype.render(value)
    if not text:
        return "", "(empty)"
    if field.choices:
        return text, field.choice_label(text) or text
    if field.type == "boolean":
        return text, f"{field.label}: {'yes' if text == 'true' else 'no'}"
    if field.type in ("integer", "decimal"):  # a number alone says little: "Reassignment count 0"
        return text, f"{field.label} {text}"
    if field.type == "reference":
        return text, "(a record you may not read)" if shown is None else str(shown)
    if field.ftype.words is not None:
        return text, field.ftype.words(value)
    return text, text


def _group_term(path: str, value: str) -> Term:
    return Term(path, "eq", value) if value else Term(path, "empty", None)


def _choice_order(field: FieldDef) -> dict[str, int]:
    return {str(value): i for i, (value, _) in enumerate(field.choices)}


def _category_key(category: tuple[str, str], order: dict[str, int], totals: dict[str, float]):
    value, label = category
    if order:  # choices in their declared order
        return (value == "", order.get(value, len(order)), label)
    # others biggest first (a bar chart of agents, accounts), the empty group last
    return (value == "", -totals[value], label)


def _with_other(result: ReportResult, report: ReportDef, where) -> list[tuple[str, str]]:
    """A chart of many groups: the `limit` biggest, the rest summed as one "(other)" group (counts and
    sums only: an average of averages would mean nothing, so those keep only the biggest)."""
    ranked = sorted(result.categories, key=lambda c: -(result.cells[(c[0], "")].value))
    kept, rest = ranked[:report.limit], ranked[report.limit:]
    shown = [c for c in result.categories if c in kept]
    if report.function in ("count", "sum") and rest:
        values = [v for v, _ in kept if v]
        terms = [Term(report.group_by, "notin", values)] if values else []  # NOT IN keeps the empty ones
        if len(values) < len(kept):  # the empty group is one of those shown
            terms.append(Term(report.group_by, "notempty", None))
        others = _and(where, *terms)
        total = sum(result.cells[(v, "")].value for v, _ in rest)
        result.cells[(OTHER, "")] = _cell(result, total, others)
        shown.append((OTHER, "Other"))
    for value, _ in rest:
        result.cells.pop((value, ""), None)
    return shown


def _and(*parts):
    """The parts all holding, as one flat AND (so it can be written as an encoded query)."""
    items = tuple(i for p in parts if p is not None for i in (p.items if isinstance(p, All) else (p,)))
    if not items:
        return None
    return items[0] if len(items) == 1 else All(items)


__all__ = ["RANGES", "Cell", "ReportResult", "measure_label", "range_condition", "run_report"]
