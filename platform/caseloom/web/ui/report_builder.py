"""Reports in the browser: `/ui/reports` lists the reports a user may open; administrators build a new one
(`/ui/reports/new`) or change one (`/ui/reports/<name>/edit`) on a form of choices (a table, a type, its
fields by label), preview it on the records, and save it through the Definitions area's review: the
report's entry is written in YAML where a `reports:` file declares it (a new one in `reports/NAME.yaml`),
checked by the same loader as every definition, so the builder can make nothing YAML could not say."""

from __future__ import annotations

import re

import yaml
from flask import abort, flash, g, render_template, request, url_for

from ...definitions.changes import declaring_file
from ...definitions.documents import Broken, read_document
from ...definitions.insight import CHARTS, DATES, TRENDS, build_dashboards, build_reports
from ...definitions.model import ReportDef, TableDef
from ...definitions.store import version_of
from ...definitions.yamledit import YamlEditError, set_entry, set_top_level
from ...query import QueryError, parse_encoded, to_encoded
from .. import live_definitions
from ..auth import records, runtime
from . import admin_required, blueprint, login_required
from .definitions import review
from .filters import (
    blank_row,
    filter_fields,
    filter_rows,
    filter_sentence,
    posted_rows,
    query_from_rows,
    row_redrawn,
    row_views,
    rows_edited,
)
from .reports import RANGE_LABELS, may_open, may_see, report_context

TYPES = {"bar": "Bar", "horizontal_bar": "Horizontal bar", "stacked_bar": "Stacked bar", "pie": "Pie",
         "donut": "Donut", "line": "Line (over time)", "area": "Area (over time)", "score": "Single score",
         "list": "List of records"}
FUNCTIONS = {"count": "Count of records", "sum": "Sum", "avg": "Average", "median": "Median", "min": "Minimum",
             "max": "Maximum", "percent": "Percent of records that also meet a condition"}
PERIODS = {"day": "Day", "week": "Week (from Monday)", "month": "Month"}
NAME = re.compile(r"[a-z][a-z0-9_]{0,79}")
LIMITED = ("list", "bar", "horizontal_bar", "pie", "donut")  # the kinds whose `limit` means something
# a report's key -> the input showing its errors (an aggregate's keys: `aggregate.KEY`)
INPUTS = {"title": "title", "description": "description", "table": "table", "type": "type", "condition": "condition",
          "group_by": "group_by", "stack_by": "stack_by", "trend": "trend_field", "date_field": "date_field",
          "date_range": "date_range", "columns": "columns", "order_by": "order_by", "limit": "limit", "roles": "roles",
          "aggregate": "function", "aggregate.function": "function", "aggregate.field": "measure",
          "aggregate.from": "from", "aggregate.to": "to", "aggregate.where": "where", "aggregate.label": "label"}
LISTS = ("columns", "roles", "dashboards")  # the inputs that hold several values
LONGEST = {"title": 200, "description": 500, "condition": 4000, "where": 4000, "label": 200}  # characters


@blueprint.get("/ui/reports", endpoint="reports")
@login_required
def index():
    """Every report the user may open, by title, with its table and type; administrators may build one."""
    defs = runtime().defs
    shown = sorted((r for r in defs.reports.values() if may_open(r)), key=lambda r: r.title.lower())
    seen = [d for d in defs.dashboards.values() if may_see(d)]
    boards = {name: [d for d in seen if name in d.reports] for name in defs.reports}
    rows = [{"report": r, "table": defs.tables[r.table].label, "type": TYPES.get(r.kind, r.kind),
             "dashboards": boards.get(r.name, [])} for r in shown]
    return render_template("reports_index.html", rows=rows, can_build=g.actor.is_admin,
                           dashboards=sorted(seen, key=lambda d: d.title.lower()))


@blueprint.route("/ui/reports/new", methods=["GET", "POST"], endpoint="report_new")
@admin_required
def new():
    values = _posted() if request.method == "POST" else {**_values_of({}), "table": request.args.get("table", "")}
    return _builder(None, values, {})


@blueprint.route("/ui/reports/<name>/edit", methods=["GET", "POST"], endpoint="report_edit")
@admin_required
def edit(name: str):
    found = runtime().defs.reports.get(name) or abort(404)
    path = declaring_file(runtime().defs, found.location)
    if path is None:
        abort(404)
    kept = _stored_spec(path, name)
    values = _posted() if request.method == "POST" else _values_of(kept) | {
        "dashboards": [d.name for d in runtime().defs.dashboards.values() if name in d.reports]}
    return _builder(found, values, kept, path)


def _builder(found: ReportDef | None, values: dict, kept: dict, path: str | None = None):
    """The builder's page: on a post, `action` says what to do (`refresh`: the choices of another table or
    type; `preview`; `save`: the review of the change)."""
    defs = runtime().defs
    action = request.form.get("action", "refresh") if request.method == "POST" else "refresh"
    name = found.name if found is not None else values.get("name", "").strip()
    tdef = defs.tables.get(values.get("table", ""))
    errors: dict[str, str] = {}
    general: list[str] = []
    preview = None
    rows = _condition_rows(tdef, values, errors)

    def page(status: int = 200, sentence: str = ""):
        return render_template("report_builder.html", found=found, name=name, values=values, tdef=tdef,
                               sentence=sentence, filter_rows=None if rows is None else row_views(tdef, rows),
                               fields=filter_fields(tdef) if tdef is not None else [], filter_url=request.path,
                               choices=_choices(tdef), errors=errors, general=general, preview=preview,
                               types=TYPES, functions=FUNCTIONS, periods=PERIODS, ranges=RANGE_LABELS,
                               roles=sorted(defs.roles), path=path or f"reports/{name or 'NAME'}.yaml",
                               dashboards=sorted(defs.dashboards.values(), key=lambda d: d.title.lower()),
                               charts=CHARTS, trends=TRENDS, limited=LIMITED), status

    asked = request.values
    if tdef is not None and rows is not None and request.method == "POST":
        # the condition's rows, as the list's filter builder draws them: one redrawn for its field, one added
        # or removed (htmx swaps the row, or the rows; without script the whole page comes back)
        row = row_redrawn(tdef, rows, asked, request.path)
        if row is not None:
            return row
        if rows_edited(rows, request.form, asked):
            if request.headers.get("HX-Request"):
                return render_template("_report_filter.html", filter_rows=row_views(tdef, rows), tdef=tdef,
                                       fields=filter_fields(tdef), filter_url=request.path, errors=errors)
            return page()
    if action == "refresh" or tdef is None:
        if action != "refresh":
            errors["table"] = "Choose the table whose records the report counts."
        return page(422 if errors else 200)
    if found is None and not NAME.fullmatch(name):
        errors["name"] = ("A name of lower-case letters, digits and _, starting with a letter (at most 80): "
                          "open_items_by_state.")
    elif found is None and name in defs.reports:
        errors["name"] = f"A report named {name!r} already exists: choose another name, or edit that one."
    spec = _spec(values, kept, errors)
    report = None
    if not errors:
        report, located = _checked(name, spec)
        for key, message in located:
            if key in INPUTS:
                errors.setdefault(INPUTS[key], message)
            else:
                general.append(message)
    if errors or general or report is None:
        return page(422)
    if action == "preview":
        days = values.get("range") if values.get("range") in RANGE_LABELS else "30"
        preview = report_context(report, days)
        sentence = filter_sentence(tdef, parse_encoded(report.condition_text)) if report.condition_text else ""
        return page(sentence=sentence)
    stored = live_definitions.store().texts()
    if found is None:
        path = _new_path("reports", name, stored, errors)
        if path is None:
            return page(422)
    try:
        changes = {path: _document(name, spec) if found is None else set_entry(stored[path], "reports", name, spec)}
        changes |= _dashboard_changes(name, values.get("dashboards") or [], stored, changes)
    except YamlEditError as exc:
        flash(f"Not changed: {exc}.", "error")
        return page(422)
    return review(changes, {p: version_of(stored.get(p)) for p in changes}, next_url=url_for("ui.report", name=name))


def _new_path(folder: str, name: str, stored: dict[str, str], errors: dict[str, str]) -> str | None:
    """The file a new definition named `name` goes to (`folder/NAME.yaml`); None, said at `name`, when it exists."""
    path = f"{folder}/{name}.yaml"
    if path in stored:
        errors["name"] = f"The file {path} exists already: choose another name."
        return None
    return path


def _dashboard_changes(name: str, wanted: list[str], stored: dict[str, str], changes: dict[str, str]) -> dict[str, str]:
    """The dashboard files to rewrite so that the report is on exactly the `wanted` dashboards (added at the end
    of a dashboard's reports, or taken off)."""
    defs = runtime().defs
    out: dict[str, str] = {}
    for board in defs.dashboards.values():
        if (board.name in wanted) == (name in board.reports):
            continue
        board_path = declaring_file(defs, board.location)
        if board_path is None:
            continue
        reports = [r for r in board.reports if r != name] + ([name] if board.name in wanted else [])
        text = out.get(board_path) or changes.get(board_path) or stored[board_path]
        out[board_path] = set_entry(text, "dashboard", "reports", reports)
    return out


def _condition_rows(tdef: TableDef | None, values: dict, errors: dict[str, str]) -> list[dict] | None:
    """The condition as the filter builder's rows (None: shown as its encoded query, which no rows can say,
    a date part or `^NQ` say). Posted rows set `values["condition"]`; rows drawn for another table start
    again empty."""
    if tdef is None:
        return None
    form = request.form if request.method == "POST" else {}
    drawn_for = form.get("rows_for") if form else None
    if form and "f_field" in form and drawn_for == tdef.name:
        rows = posted_rows(form)
        try:
            values["condition"] = to_encoded(query_from_rows(tdef, rows))
            parse_encoded(values["condition"])
        except QueryError as exc:
            errors["condition"] = str(exc)
        return rows
    if form and drawn_for not in (None, tdef.name):  # the table changed: its condition too
        values["condition"] = ""
    condition = str(values.get("condition") or "").strip()
    if not condition:
        return [blank_row()]
    try:
        rows = filter_rows(tdef, parse_encoded(condition))
    except QueryError:
        return None
    return rows or None


def _stored_spec(path: str, name: str) -> dict:
    """The report's entry as its file declares it now (the keys the builder does not show are kept)."""
    data = yaml.safe_load(live_definitions.store().texts()[path]) or {}
    return dict((data.get("reports") or {}).get(name) or {})


def _values_of(spec: dict) -> dict:
    """A report's entry as the builder's inputs."""
    aggregate, trend, order = spec.get("aggregate") or {}, spec.get("trend") or {}, str(spec.get("order_by") or "")
    return {"title": spec.get("title", ""), "description": spec.get("description", ""), "table": spec.get("table", ""),
            "type": spec.get("type", "bar"), "condition": spec.get("condition", ""),
            "group_by": spec.get("group_by", ""), "stack_by": spec.get("stack_by", ""),
            "trend_field": trend.get("field", ""), "trend_per": trend.get("per", "day"),
            "date_field": spec.get("date_field", ""), "date_range": "" if spec.get("date_range") is False else "on",
            "function": aggregate.get("function", "count"), "measure": aggregate.get("field", ""),
            "from": aggregate.get("from", ""), "to": aggregate.get("to", ""), "where": aggregate.get("where", ""),
            "label": aggregate.get("label", ""), "columns": list(spec.get("columns") or ()),
            "order_by": order.lstrip("-"), "descending": "on" if order.startswith("-") else "",
            "limit": str(spec.get("limit", "")), "roles": list(spec.get("roles") or ())}


def _posted() -> dict:
    form = request.form
    values = {key: form.get(key, "") for key in _values_of({}) if key not in LISTS}
    values |= {key: [v for v in form.getlist(key) if v] for key in LISTS}
    values["name"], values["range"] = form.get("name", ""), form.get("range", "30")
    return values


def _spec(values: dict, kept: dict, errors: dict[str, str]) -> dict:
    """The report's YAML entry from the inputs: only the keys its type takes (an input of another type,
    hidden, is left out); the keys the builder does not show (`also`) as they were."""
    kind = values.get("type", "")
    text = {key: str(values.get(key) or "").strip() for key in values if key not in LISTS}
    spec: dict = {"title": text["title"]}
    if text["description"]:
        spec["description"] = text["description"]
    spec |= {"table": text["table"], "type": kind}
    if text["condition"]:
        spec["condition"] = text["condition"]
    if kind in CHARTS and text["group_by"]:
        spec["group_by"] = text["group_by"]
    if kind == "stacked_bar" and text["stack_by"]:
        spec["stack_by"] = text["stack_by"]
    if kind in TRENDS and text["trend_field"]:
        spec["trend"] = {"field": text["trend_field"], **({"per": text["trend_per"]} if text["trend_per"] in PERIODS
                                                          and text["trend_per"] != "day" else {})}
    if kind not in TRENDS and text["date_range"] != "on":
        spec["date_range"] = False
    elif kind not in TRENDS and text["date_field"]:
        spec["date_field"] = text["date_field"]
    if kind != "list" and text["function"] not in ("", "count"):
        aggregate: dict = {"function": text["function"]}
        if text["function"] == "percent":
            aggregate |= {k: text[k] for k in ("where", "label") if text[k]}
        elif text["from"] or text["to"]:
            aggregate |= {k: text[k] for k in ("from", "to") if text[k]}
        elif text["measure"]:
            aggregate["field"] = text["measure"]
        spec["aggregate"] = aggregate
    if kind == "list":
        spec["columns"] = list(values.get("columns") or [])
        if text["order_by"]:
            spec["order_by"] = ("-" if text["descending"] == "on" else "") + text["order_by"]
    if kind in LIMITED and text["limit"]:
        if re.fullmatch(r"[0-9]{1,3}", text["limit"]) and 1 <= int(text["limit"]) <= 100:
            spec["limit"] = int(text["limit"])
        else:
            errors["limit"] = "A whole number from 1 to 100."
    if values.get("roles"):
        spec["roles"] = list(values["roles"])
    if kind == "score" and "also" in kept:
        spec["also"] = kept["also"]
    if not spec["title"]:
        errors["title"] = "A title: the words on the report's card and page."
    for key, most in LONGEST.items():
        if len(text[key]) > most:
            errors[key] = f"At most {most:,} characters ({len(text[key]):,} given)."
    return spec


def _document(name: str, spec: dict) -> str:
    return yaml.safe_dump({"reports": {name: spec}}, sort_keys=False, allow_unicode=True, width=1000)


def _checked(name: str, spec: dict) -> tuple[ReportDef | None, list[tuple[str, str]]]:
    """The report the entry declares, checked as the loader checks every report, with each problem's key
    (`group_by`, `aggregate.field`; `` for the report as a whole)."""
    defs = runtime().defs
    text = _document(name, spec)
    errors: list = []
    doc = read_document(f"definitions/reports/{name}.yaml", text, errors, Broken())
    reports = build_reports([doc], dict(defs.tables), dict(defs.roles), errors, dict(defs.properties)) \
        if doc is not None else {}
    lines = text.splitlines()
    located = [(_key_at(lines, e.location.line, e.message), e.message) for e in errors]
    return reports.get(name), located


def _key_at(lines: list[str], line: int, message: str) -> str:
    """The key of the report's entry a problem on `line` (1-based) of the document is at; a problem of the
    whole report naming the key it needs ("a bar report needs `group_by`") is at that key."""
    needed = re.search(r"needs `([a-z_]+)`", message)
    key, sub = "", ""
    for text in lines[:max(line, 0)]:
        found = re.match(r"( {4}| {6})([a-z_]+):", text)
        if found and len(found.group(1)) == 4:
            key, sub = found.group(2), ""
        elif found and key:
            sub = found.group(2)
    if needed and key == "aggregate" and f"aggregate.{needed.group(1)}" in INPUTS:
        return f"aggregate.{needed.group(1)}"
    if needed and needed.group(1) in INPUTS:
        return needed.group(1)
    if line <= 2:  # `reports:` or the report's own line: the report as a whole
        return ""
    return f"{key}.{sub}" if key == "aggregate" and sub else key


def _choices(tdef: TableDef | None) -> dict:
    """The fields of the chosen table each input offers, by label: what a report may group by (stored,
    filterable and sortable), its dates, numbers, date-times and columns."""
    if tdef is None:
        return {"tables": _tables(), "groupable": [], "dates": [], "datetimes": [], "measurable": [], "columns": []}
    service = records()
    shown = sorted((f for f in tdef.fields.values() if not f.ftype.hidden and service.can_read_path(tdef.name, f.name)),
                   key=lambda f: f.label.lower())

    def pick(keep) -> list[tuple[str, str]]:
        return [(f.name, f.label) for f in shown if keep(f)]

    return {"tables": _tables(),
            "groupable": pick(lambda f: f.stored and f.ftype.queryable and f.ftype.sortable),
            "dates": pick(lambda f: f.type in DATES),
            "datetimes": pick(lambda f: f.type == "datetime"),
            "measurable": pick(lambda f: f.stored and f.ftype.sortable and f.type not in ("reference",)),
            "columns": pick(lambda f: f.ftype.listable or f.type == "text")}


def _tables() -> list[tuple[str, str]]:
    service = records()
    tables = runtime().defs.tables.values()
    return sorted(((t.name, t.label) for t in tables if service.can(t.name, "read")), key=lambda t: t[1].lower())


__all__ = ["TYPES"]


# -- dashboards: their title, who sees them (and as their home), their date range and their reports ----------

DASHBOARD_KEYS = ("title", "description", "roles", "home", "range", "reports")
DASHBOARD_RANGES = {"7": 7, "30": 30, "90": 90, "365": 365, "all": "all"}


@blueprint.route("/ui/dashboards/new", methods=["GET", "POST"], endpoint="dashboard_new")
@admin_required
def new_dashboard():
    return _dashboard_builder(None)


@blueprint.route("/ui/dashboards/<name>/edit", methods=["GET", "POST"], endpoint="dashboard_edit")
@admin_required
def edit_dashboard(name: str):
    return _dashboard_builder(runtime().defs.dashboards.get(name) or abort(404))


def _dashboard_builder(found):
    """A dashboard on a form: saved, as a report is, through the Definitions area's review (a new one in
    `dashboards/NAME.yaml`; a changed one's `dashboard:` rewritten in its file, the comments above kept)."""
    defs = runtime().defs
    path = declaring_file(defs, found.location) if found is not None else None
    if found is not None and path is None:
        abort(404)
    form = request.form
    if request.method == "POST":
        name = found.name if found is not None else form.get("name", "").strip()
        values = {"title": form.get("title", "").strip(), "description": form.get("description", "").strip(),
                  "roles": form.getlist("roles"), "home": form.get("home") == "on", "range": form.get("range", "30"),
                  "reports": form.getlist("reports"),
                  "positions": {r: form.get(f"position_{r}", "").strip() for r in defs.reports}}
    else:
        name = found.name if found is not None else ""
        values = {"title": found.title if found else "", "description": found.description if found else "",
                  "roles": list(found.roles) if found else [], "home": bool(found and found.home),
                  "range": str(found.range) if found else "30", "reports": list(found.reports) if found else [],
                  "positions": {r: str(i + 1) for i, r in enumerate(found.reports)} if found else {}}
    errors: dict[str, str] = {}

    def page(status: int = 200):
        reports = sorted(defs.reports.values(), key=lambda r: (r.name not in values["reports"],
                                                               _position(values, r.name), r.title.lower()))
        return render_template("dashboard_builder.html", found=found, name=name, values=values, errors=errors,
                               reports=reports, roles=sorted(defs.roles), ranges=RANGE_LABELS,
                               path=path or f"dashboards/{name or 'NAME'}.yaml"), status

    if request.method == "GET":
        return page()
    if found is None and not NAME.fullmatch(name):
        errors["name"] = "A name of lower-case letters, digits and _, starting with a letter: team_overview."
    elif found is None and name in defs.dashboards:
        errors["name"] = f"A dashboard named {name!r} already exists: choose another name, or edit that one."
    for key, message in (("title", "A title: the dashboard's heading."),
                         ("roles", "At least one role: the users who may open it."),
                         ("reports", "At least one report.")):
        if not values[key]:
            errors[key] = message
    if values["range"] not in DASHBOARD_RANGES:
        errors["range"] = f"One of {', '.join(RANGE_LABELS.values())}."
    if any(v and not re.fullmatch(r"[0-9]{1,3}", v) for v in values["positions"].values()):
        errors["reports"] = "A position is a whole number (1 first)."
    if len(values["title"]) > 100 or len(values["description"]) > 1000:
        errors["title" if len(values["title"]) > 100 else "description"] = "Too long: a title has at most 100 " \
                                                                           "characters, a description 1,000."
    if errors:
        return page(422)
    ordered = sorted(values["reports"], key=lambda r: (_position(values, r), values["reports"].index(r)))
    spec = {"name": name, "title": values["title"], **({"description": values["description"]}
                                                       if values["description"] else {}),
            "roles": values["roles"], **({"home": True} if values["home"] else {}),
            "range": DASHBOARD_RANGES[values["range"]], "reports": ordered}
    text = yaml.safe_dump({"dashboard": spec}, sort_keys=False, allow_unicode=True, width=1000)
    problems: list = []
    doc = read_document(f"definitions/dashboards/{name}.yaml", text, problems, Broken())
    if doc is not None:
        build_dashboards([doc], dict(defs.tables), dict(defs.roles), problems, dict(defs.reports), set())
    lines = text.splitlines()
    for problem in problems:  # at the input of the key whose lines the problem is on
        keys = [found.group(1) for found in (re.match(r"  ([a-z_]+):", t) for t in lines[:problem.location.line])
                if found]
        key = keys[-1] if keys else ""
        errors.setdefault(key if key in ("name", *DASHBOARD_KEYS) else "title", problem.message)
    if errors:
        return page(422)
    stored = live_definitions.store().texts()
    if found is None:
        path = _new_path("dashboards", name, stored, errors)
        if path is None:
            return page(422)
        new_text = text
    else:
        try:
            new_text = set_top_level(stored[path], "dashboard", spec)
        except YamlEditError as exc:
            flash(f"Not changed: {exc}.", "error")
            return page(422)
    return review({path: new_text}, {path: version_of(stored.get(path))}, next_url=url_for("ui.dashboard", name=name))


def _position(values: dict, report: str) -> int:
    text = values["positions"].get(report, "")
    return int(text) if text.isdigit() else 1000
