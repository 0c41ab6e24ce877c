"""Charts drawn on the server as SVG: the geometry of a report's bars, slices, lines and areas, each
mark a link to the list of exactly its records. templates/_chart.html writes them out; there is no
script, so a chart is read without JavaScript, and every mark is a keyboard-reachable link with its
label and value (the report's data table repeats them for screen readers)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlencode

from ..insight import OTHER, ReportResult

# Okabe and Ito's palette, told apart by people with every common colour-vision deficiency
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C6D31", "#555555")
WIDTH, HEIGHT = 480, 240
CHAR = 6.5  # the width of a character of an 11-unit label, about
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 16, 48


@dataclass
class Mark:
    shape: str  # rect, path, circle
    attrs: dict
    href: str
    label: str  # what a screen reader and a tooltip say: "Open, 1 - Critical: 12"
    color: str


@dataclass
class Text:
    x: float
    y: float
    text: str
    anchor: str = "middle"
    css: str = ""
    rotate: float | None = None


@dataclass
class Chart:
    width: int
    height: int
    marks: list[Mark] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)  # axis and grid lines: x1, y1, x2, y2
    polyline: dict | None = None  # a trend's line (and area): points, fill
    legend: list[tuple[str, str]] = field(default_factory=list)  # (colour, label)


def drill_url(table: str, query: str) -> str:
    return f"/{table}_list.do?{urlencode({'sysparm_query': query})}"


def chart(result: ReportResult) -> Chart | None:
    kind = result.report.kind
    if kind in ("bar", "stacked_bar"):
        return _columns(result)
    if kind == "horizontal_bar":
        return _rows(result)
    if kind in ("pie", "donut"):
        return _pie(result, kind == "donut")
    if kind in ("line", "area"):
        return _trend(result, kind == "area")
    return None


def _top(result: ReportResult, values=None) -> float:
    """The axis's top: 100 for percents, else the biggest of `values` (default: the cells') made nice
    (`_nice_max`)."""
    if result.report.function == "percent":
        return 100
    return _nice_max(max(values if values is not None else (c.value for c in result.cells.values()), default=0))


def _nice_max(value: float) -> float:
    """The axis's top: 1, 2 or 5 times a power of ten at or above `value`."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _short(text: str, size: int = 14) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _axis(chart: Chart, top: float, bottom: float, left: float, right: float, maximum: float, result) -> None:
    for i in range(5):
        y = bottom - (bottom - top) * i / 4
        chart.lines.append({"x1": left, "y1": y, "x2": right, "y2": y, "css": "grid" if i else "axis"})
        value = maximum * i / 4
        chart.texts.append(Text(left - 6, y + 4, _tick(value, result), "end", "tick"))


def _tick(value: float, result: ReportResult) -> str:
    if result.duration:
        hours = value / 3600
        return f"{hours:g} h" if hours >= 1 or value == 0 else f"{value / 60:g} min"
    if result.report.function == "percent":
        return f"{value:g} %"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _columns(result: ReportResult) -> Chart:
    """Vertical bars, one per category; stacked by series when the report has `stack_by`."""
    series = result.series or [("", "")]
    stacked = bool(result.report.stack_by)
    totals = {c: sum((result.cell(c, s).value if result.cell(c, s) else 0) for s, _ in series)
              for c, _ in result.categories}
    top = _top(result, totals.values())
    n = max(len(result.categories), 1)
    width = max(WIDTH, LEFT + RIGHT + n * 28)
    chart = Chart(width, HEIGHT)
    bottom, plot = HEIGHT - BOTTOM, HEIGHT - BOTTOM - TOP
    _axis(chart, TOP, bottom, LEFT, width - RIGHT, top, result)
    slot = (width - LEFT - RIGHT) / n
    bar = min(slot * 0.7, 60)
    for i, (value, label) in enumerate(result.categories):
        x = LEFT + slot * i + (slot - bar) / 2
        y = bottom
        for j, (sv, sl) in enumerate(series):
            cell = result.cell(value, sv)
            if cell is None:
                continue
            h = plot * cell.value / top
            y -= h
            name = f"{label}, {sl}" if stacked else label
            color = PALETTE[j % len(PALETTE)] if stacked else PALETTE[0]
            chart.marks.append(Mark("rect", {"x": _r(x), "y": _r(y), "width": _r(bar), "height": _r(max(h, 0.5))},
                                    drill_url(result.report.table, cell.query), f"{name}: {cell.text}", color))
        if not stacked and result.cell(value):
            chart.texts.append(Text(x + bar / 2, y - 4, result.cell(value).text, css="value"))
        chart.texts.append(Text(x + bar / 2, bottom + 14, _short(label, max(int(slot / 7), 4)), css="category"))
    if stacked:
        chart.legend = [(PALETTE[j % len(PALETTE)], sl) for j, (_, sl) in enumerate(series)]
    return chart


def _rows(result: ReportResult) -> Chart:
    """Horizontal bars: a row per category, its label on the left, its value at the bar's end."""
    row, label_width = 26, 150
    height = TOP + max(len(result.categories), 1) * row + 8
    chart = Chart(WIDTH, height)
    top = _top(result)
    span = WIDTH - label_width - RIGHT - 56
    chart.lines.append({"x1": label_width, "y1": TOP - 4, "x2": label_width, "y2": height - 4, "css": "axis"})
    for i, (value, label) in enumerate(result.categories):
        cell = result.cell(value)
        if cell is None:
            continue
        y = TOP + i * row
        w = span * cell.value / top
        chart.texts.append(Text(label_width - 8, y + 15, _short(label, 22), "end", "category"))
        chart.marks.append(Mark("rect", {"x": label_width, "y": _r(y + 3), "width": _r(max(w, 0.5)), "height": 18},
                                drill_url(result.report.table, cell.query), f"{label}: {cell.text}", PALETTE[0]))
        chart.texts.append(Text(label_width + w + 6, y + 16, cell.text, "start", "value"))
    return chart


def _pie(result: ReportResult, donut: bool) -> Chart:
    """Slices in the categories' order from twelve o'clock, clockwise; a donut has a hole with the total."""
    chart = Chart(WIDTH, HEIGHT)
    cx, cy, r = 120, HEIGHT / 2, 100
    inner = 58 if donut else 0
    total = sum(c.value for c in result.cells.values())
    angle = 0.0
    for i, (value, label) in enumerate(result.categories):
        cell = result.cell(value)
        if cell is None or cell.value <= 0 or total <= 0:
            continue
        share = cell.value / total
        color = PALETTE[i % len(PALETTE)] if value != OTHER else "#999999"
        path = _slice(cx, cy, r, inner, angle, angle + share * 2 * math.pi)
        percent = f"{share * 100:.0f} %"
        chart.marks.append(Mark("path", {"d": path}, drill_url(result.report.table, cell.query),
                                f"{label}: {cell.text} ({percent})", color))
        chart.legend.append((color, f"{label}: {cell.text} ({percent})"))
        angle += share * 2 * math.pi
    if donut:
        chart.texts.append(Text(cx, cy + 6, _tick(total, result) if not result.duration else "", css="total"))
    return chart


def _slice(cx: float, cy: float, r: float, inner: float, start: float, end: float) -> str:
    if end - start >= 2 * math.pi - 1e-9:  # one slice is the whole: two half circles
        whole = (f"M {cx} {cy - r} A {r} {r} 0 1 1 {cx} {cy + r} A {r} {r} 0 1 1 {cx} {cy - r} Z")
        if inner:
            whole += (f" M {cx} {cy - inner} A {inner} {inner} 0 1 0 {cx} {cy + inner} "
                      f"A {inner} {inner} 0 1 0 {cx} {cy - inner} Z")
        return whole

    def point(radius: float, a: float) -> str:
        return f"{_r(cx + radius * math.sin(a))} {_r(cy - radius * math.cos(a))}"

    large = 1 if end - start > math.pi else 0
    if not inner:
        return f"M {cx} {cy} L {point(r, start)} A {r} {r} 0 {large} 1 {point(r, end)} Z"
    return (f"M {point(r, start)} A {r} {r} 0 {large} 1 {point(r, end)} L {point(inner, end)} "
            f"A {inner} {inner} 0 {large} 0 {point(inner, start)} Z")


def _trend(result: ReportResult, area: bool) -> Chart:
    """A line over the periods (every one of the range, an empty one at 0), a dot per period linking to
    its records; an area fills under the line."""
    n = max(len(result.categories), 1)
    chart = Chart(WIDTH, HEIGHT)
    bottom, plot = HEIGHT - BOTTOM, HEIGHT - BOTTOM - TOP
    top = _top(result)
    _axis(chart, TOP, bottom, LEFT, WIDTH - RIGHT, top, result)
    step = (WIDTH - LEFT - RIGHT) / max(n - 1, 1)
    points = []
    ticks = [_period_tick(value, result.report.per) for value, _ in result.categories]
    widest = max((len(t) for t in ticks), default=1) * CHAR + 12  # a label and a gap, in the SVG's units
    every = max(1, math.ceil(widest / step)) if n > 1 else 1  # as many labels as fit side by side
    for i, (value, label) in enumerate(result.categories):
        cell = result.cell(value)
        x = LEFT + step * i if n > 1 else (LEFT + WIDTH - RIGHT) / 2
        y = bottom - plot * (cell.value if cell else 0) / top
        points.append((x, y))
        if cell is not None:
            chart.marks.append(Mark("circle", {"cx": _r(x), "cy": _r(y), "r": 4 if n <= 62 else 2.5},
                                    drill_url(result.report.table, cell.query), f"{label}: {cell.text}", PALETTE[0]))
        if i % every == 0:
            chart.texts.append(Text(_r(x), bottom + 14, ticks[i], css="category"))
    line = " ".join(f"{_r(x)},{_r(y)}" for x, y in points)
    fill = None
    if area and points:
        fill = f"{_r(points[0][0])},{bottom} {line} {_r(points[-1][0])},{bottom}"
    chart.polyline = {"points": line, "area": fill, "color": PALETTE[0]}
    return chart


def _period_tick(value: str, per: str) -> str:
    """A period's short label under the axis: "31 Oct" (a day, a week's Monday), "Oct 2026" (a month)."""
    day = date.fromisoformat(value)
    return f"{day:%b %Y}" if per == "month" else f"{day.day} {day:%b}"


def _r(value: float) -> float:
    return round(value, 1)


__all__ = ["PALETTE", "Chart", "chart", "drill_url"]
