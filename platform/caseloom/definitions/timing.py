"""Time in the definitions: the table SLAs attach to, declared schedules and SLA definitions.

A table declares `sla: true` to be the one SLAs attach to (ServiceNow's task): task_sla.task refers to
it and contract_sla.collection offers it and the tables extending it. Without such a table the SLA
tables do not exist. Declared schedules and SLAs are checked here and written to their records by
`caseloom.timing.seed`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..fieldtypes import FIELD_TYPES, FieldValueError
from ..query.conditions import parse_encoded, terms_of
from ..query.meaning import bind_fields
from ..query.nodes import QueryError
from ..query.operators import operator
from .behaviour import _Checker
from .model import Escalation, ScheduleDecl, SlaDecl, SlaFlow, TableDef, TimerDef
from .tables import label_from_name, resolve_path
from .yamlsource import SourceDocument

SLA_TABLES = ("contract_sla", "task_sla", "sla_repair_log", "sla_repair_log_entry")
CONDITIONS = ("start", "stop", "pause", "resume", "cancel", "reset")


@dataclass(frozen=True)
class ConditionRule:
    """An SLA rule (`when_to_resume`, `when_to_cancel`) one of whose values reads a condition of its own:
    set to it without the condition, the rule never fires, so the SLA is refused."""

    rule: str  # when_to_resume
    value: str  # resume_condition: the value that reads the condition
    condition: str  # resume: the condition's key in YAML (its contract_sla field: `resume_condition`)
    without: str  # what the SLA would do without it
    instead: str  # the values that need no condition

    def missing(self, rules: Mapping[str, Any], conditions: Mapping[str, Any]) -> bool:
        """Whether `rules` (by rule name) set this rule to the value that reads a condition `conditions`
        (by key: `resume`) does not have."""
        return rules.get(self.rule) == self.value and not str(conditions.get(self.condition) or "").strip()

    def words(self, condition: str) -> str:
        """What is wrong and what to do, the condition named as its reader knows it (`resume`, `resume_condition`)."""
        return (f"{self.rule} is {self.value}, but there is no {condition} condition: {self.without}; give a "
                f"{condition} condition, or set {self.rule} to {self.instead}")

    def ignored(self, rules: Mapping[str, Any], conditions: Mapping[str, Any]) -> str | None:
        """What is wrong when `conditions` give this rule's condition but `rules` set the rule to a value that
        never reads it (ServiceNow ignores it without a word), else None."""
        chosen = rules.get(self.rule) or "no_match"
        if chosen == self.value or not str(conditions.get(self.condition) or "").strip():
            return None
        return (f"`{self.condition}` is given, but {self.rule} is {chosen}, which never reads it; set {self.rule} "
                f"to {self.value}, or remove `{self.condition}`")


# ServiceNow's "Resume conditions are met" and "Cancel conditions are met" (the README's SLA definitions)
CONDITION_RULES = (
    ConditionRule("when_to_resume", "resume_condition", "resume", "a paused SLA would never resume",
                  "no_match (it resumes when the pause condition no longer matches)"),
    ConditionRule("when_to_cancel", "cancel_condition", "cancel", "the SLA would never be cancelled",
                  "no_match (cancelled when the start condition no longer matches) or never"),
)


def sla_root(table_docs: list[SourceDocument], errors: list) -> str | None:
    """The table declaring `sla: true`, or None; two hierarchies declaring it is an error."""
    declaring = [d for d in table_docs if d.data.get("sla") is True]
    parents = {d.data["table"]: d.data.get("extends") for d in table_docs}

    def root_of(name: str) -> str:
        seen = set()
        while parents.get(name) and name not in seen:
            seen.add(name)
            name = parents[name]
        return name

    roots = {root_of(d.data["table"]) for d in declaring}
    if len(roots) > 1:
        first = declaring[0]
        for doc in declaring[1:]:
            if root_of(doc.data["table"]) != root_of(first.data["table"]):
                errors.append(doc.error(("sla",), f"SLAs attach to one table and the tables extending it; "
                                                  f"{first.data['table']!r} ({first.where('sla')}) already declares "
                                                  f"sla: true and {doc.data['table']!r} does not extend it"))
        return None
    if not declaring:
        return None
    # the highest declaring table of the hierarchy
    names = {d.data["table"] for d in declaring}
    for doc in declaring:
        name, above = doc.data["table"], doc.data["table"]
        while parents.get(above):
            above = parents[above]
            if above in names:
                break
        else:
            return name
    return declaring[0].data["table"]


def timing_tables(table_docs: list[SourceDocument], errors: list,
                  flow_docs: list[SourceDocument] = ()) -> tuple[list[SourceDocument], str | None]:
    """The table documents with the SLA tables bound to the SLA table (task_sla.task and
    sla_repair_log_entry.task refer to it, contract_sla.collection offers it and its descendants,
    contract_sla.flow the declared SLA flows),
    or without them when no table declares `sla: true`."""
    root = sla_root(table_docs, errors)
    flows = list(dict.fromkeys(name for doc in flow_docs for name in doc.data["sla_flows"]))
    out = []
    for doc in table_docs:
        name = doc.data.get("table")
        if name in SLA_TABLES and doc.path.startswith("<caseloom>/"):
            if root is None:
                continue
            data = _bound(doc.data, root, table_docs, flows)
            doc = SourceDocument(doc.path, data, doc._positions, doc.problems)
        out.append(doc)
    return out, root


def _bound(data: dict, root: str, table_docs: list[SourceDocument], flows: list[str]) -> dict:
    fields = dict(data["fields"])
    if data["table"] in ("task_sla", "sla_repair_log_entry"):
        fields["task"] = {**fields["task"], "to": root}
    elif data["table"] == "contract_sla":
        parents = {d.data["table"]: (d.data.get("extends"), d.data.get("label")) for d in table_docs}
        choices = {}
        for name, (_, label) in parents.items():
            above = name
            while above and above != root:
                above = parents.get(above, (None, None))[0]
            if above == root:
                choices[name] = label or label_from_name(name)
        fields["collection"] = {**fields["collection"], "type": "choice", "choices": choices}
        fields["collection"].pop("max_length", None)
        fields["flow"] = {**fields["flow"], "type": "choice", "choices": {f: f for f in flows}}
        fields["flow"].pop("max_length", None)
    return {**data, "fields": fields}


# -- schedules ------------------------------------------------------------------------------------

def build_schedules(docs: list[SourceDocument], errors: list) -> tuple[dict[str, ScheduleDecl], set[str]]:
    """The declared schedules, and the names of those with mistakes (reported here, so that an SLA or a
    timer naming one does not report it again as unknown)."""
    if not docs:
        return {}, set()
    from ..timing.schedule import parse_schedule, schedule_problems

    schedules: dict[str, ScheduleDecl] = {}
    broken: set[str] = set()
    for doc in docs:
        for name, spec in doc.data["schedules"].items():
            where = ("schedules", name)
            if name in schedules:
                errors.append(doc.error(where, f"schedule {name!r} is already declared at {schedules[name].location}"))
                continue
            holidays = spec.get("holidays")
            if isinstance(holidays, dict):
                holidays = {(k.isoformat() if isinstance(k, dt.date) else str(k)): v for k, v in holidays.items()}
            problems = schedule_problems(spec["time_zone"], spec["windows"], holidays)
            for problem in problems:
                at = where + (problem.field,) + ((problem.key,) if problem.key is not None else ())
                errors.append(doc.error(at, f"schedule {name!r}: {problem}"))
            if problems:
                broken.add(name)
                continue
            parsed = parse_schedule(name, spec["time_zone"], spec["windows"], holidays)
            schedules[name] = ScheduleDecl(name, spec.get("label") or name, spec["time_zone"], parsed.windows_text(),
                                           parsed.holidays_text(), doc.where(*where))
    return schedules, broken


# -- SLA flows --------------------------------------------------------------------------------------

def build_sla_flows(docs: list[SourceDocument], tables: dict[str, TableDef], roles: dict, errors: list,
                    properties: dict, root: str | None) -> tuple[dict[str, SlaFlow], set[str]]:
    """The declared SLA flows, and the names of those with mistakes (reported here, so that an SLA
    naming one does not report it again as unknown)."""
    flows: dict[str, SlaFlow] = {}
    broken: set[str] = set()
    defaults: dict[str, str] = {}  # table -> its default flow
    for check, name, spec, where in _entries(docs, "sla_flows", "SLA flow", tables, roles, errors, properties):
        broken.add(name)
        table = check.table(spec["table"], where + ("table",))
        if table is None:
            continue
        if root is None or root not in (table.name, *_ancestors(tables, table.name)):
            check.error(where + ("table",), _not_an_sla_table(table.name, root, "SLA flows"))
            continue
        escalations = _escalations(check, table, spec, where)
        if escalations is None:
            continue
        if spec.get("default"):
            if table.name in defaults:
                check.error(where + ("default",), f"{table.name!r} already has a default SLA flow, "
                                                  f"{defaults[table.name]!r}: a table has one at most")
                continue
            defaults[table.name] = name
        broken.discard(name)
        flows[name] = SlaFlow(name, table.name, escalations, bool(spec.get("default")), check.doc.where(*where))
    return flows, broken


def _not_an_sla_table(name: str, root: str | None, what: str) -> str:
    return (f"{what} attach to the table that declares `sla: true` and the tables extending it; {name!r} is "
            "not one of them" + (f" ({root!r} declares it)" if root else " (no table declares it)"))


def _escalations(check: _Checker, table: TableDef, spec: dict, where: tuple) -> tuple[Escalation, ...] | None:
    """An SLA's or a flow's escalations, in order of their percentage; None when two share one."""
    escalations = []
    for i, item in enumerate(spec.get("escalations") or ()):
        effects = check.effects(table, item["effects"], where + ("escalations", i, "effects"))
        escalations.append(Escalation(item["at"], effects))
    ats = [e.at for e in escalations]
    if len(set(ats)) != len(ats):
        check.error(where + ("escalations",), "two escalations at the same percentage")
        return None
    return tuple(sorted(escalations, key=lambda e: e.at))


# -- SLA definitions -------------------------------------------------------------------------------

def build_slas(docs: list[SourceDocument], tables: dict[str, TableDef], roles: dict, errors: list,
               properties: dict, schedules: dict[str, ScheduleDecl], root: str | None,
               warnings: list | None = None, flows: dict[str, SlaFlow | None] | None = None) -> dict[str, SlaDecl]:
    """The declared SLAs, checked; the known pitfalls of each go to `warnings` (located). `flows`: the
    declared SLA flows (a broken one's name as None: already reported)."""
    slas: dict[str, SlaDecl] = {}
    for check, name, spec, where in _entries(docs, "slas", "SLA", tables, roles, errors, properties):
        sla = _sla(check, tables, name, spec, where, schedules, root, flows or {})
        if sla is not None:
            slas[name] = sla
            for key, message in sla_pitfalls(tables, tables[sla.table], sla):
                if warnings is not None:
                    warnings.append(check.doc.error(where + (key,), message))
    return slas


def _entries(docs: list[SourceDocument], key: str, noun: str, tables: dict, roles: dict, errors: list,
             properties: dict):
    """(checker, name, spec, where) of every entry under `key` in the files; a name declared twice is
    an error at its second place."""
    seen: dict[str, object] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        for name, spec in doc.data[key].items():
            where = (key, name)
            if name in seen:
                check.error(where, f"{noun} {name!r} is already declared at {seen[name]}")
                continue
            seen[name] = doc.where(*where)
            yield check, name, spec, where


def _sla(check: _Checker, tables: dict, name: str, spec: dict, where: tuple, schedules: dict,
         root: str | None, flows: dict[str, SlaFlow | None]) -> SlaDecl | None:
    table = check.table(spec["table"], where + ("table",))
    if table is None:
        return None
    if root is None or root not in (table.name, *_ancestors(tables, table.name)):
        check.error(where + ("table",), _not_an_sla_table(table.name, root, "SLAs"))
        return None
    ok = True
    try:
        duration = FIELD_TYPES["duration"].parse(None, spec["duration"])
    except FieldValueError as exc:
        check.error(where + ("duration",), f"duration: {exc}")
        duration, ok = None, False
    ok &= _schedule_known(check, spec.get("schedule"), schedules, where)
    conditions = {}
    for key in CONDITIONS:
        text = spec.get(key)
        if text is None:
            conditions[key] = ""
            continue
        problem = condition_problem(tables, table, text)
        if problem:
            check.error(where + (key,), f"{key}: {problem}")
            ok = False
        conditions[key] = text if isinstance(text, str) else ""
    retro = spec.get("retroactive")
    if retro is not None:
        field = table.field(retro)
        if field is None or field.type not in ("datetime", "date"):
            check.error(where + ("retroactive",), f"retroactive: {retro!r} is not a date or date-time field of "
                                                  f"{table.name!r}")
            ok = False
    if spec.get("timezone_source") == "definition":
        problem = _zone_problem(spec.get("timezone"))
        if problem:
            check.error(where + ("timezone",), problem)
            ok = False
    escalations = _escalations(check, table, spec, where)
    ok &= escalations is not None
    ok &= _flow_fits(check, tables, table, spec, where, flows)
    for rule in CONDITION_RULES:
        if rule.missing(spec, conditions):
            check.error(where + (rule.rule,), rule.words(f"`{rule.condition}`"))
            ok = False
        problem = rule.ignored(spec, conditions)
        if problem:
            check.error(where + (rule.condition,), problem)
            ok = False
    if not ok or duration is None:
        return None
    return SlaDecl(name, table.name, duration, conditions["start"], conditions["stop"], conditions["pause"],
                   conditions["resume"], conditions["cancel"], conditions["reset"], spec.get("schedule"),
                   spec.get("timezone_source", "schedule"), spec.get("timezone", ""),
                   spec.get("when_to_cancel", "no_match"), spec.get("when_to_resume", "no_match"), retro,
                   spec.get("active", True), escalations, check.doc.where(*where), spec.get("flow"))


def _flow_fits(check: _Checker, tables: dict, table: TableDef, spec: dict, where: tuple,
               flows: dict[str, SlaFlow | None]) -> bool:
    """Whether an SLA's `flow` names a declared flow of its table or one its table extends, and the
    SLA has no escalations of its own beside it."""
    name = spec.get("flow")
    if name is None:
        return True
    if spec.get("escalations"):
        check.error(where + ("flow",), "an SLA has its flow's escalations or its own, not both: remove `flow` "
                                       "or `escalations`")
        return False
    if name in flows and flows[name] is None:
        return False  # its mistakes were reported where it is declared
    flow = flows.get(name)
    if flow is None:
        known = ", ".join(sorted(n for n, f in flows.items() if f is not None)) or "none are declared"
        check.error(where + ("flow",), f"unknown SLA flow {name!r} (known: {known})")
        return False
    problem = flow_problem(flow, table.name, (table.name, *_ancestors(tables, table.name)))
    if problem:
        check.error(where + ("flow",), problem)
        return False
    return True


def flow_problem(flow: SlaFlow, table: str, lineage: tuple[str, ...]) -> str | None:
    """What is wrong with an SLA of `table` (whose lineage is `table` and the tables it extends) using
    `flow`: its effects are for records of a table `table` is not; None when it may."""
    if flow.table in lineage:
        return None
    return (f"SLA flow {flow.name!r} runs its effects on {flow.table!r} records; this SLA attaches to {table!r} "
            f"records, which are not {flow.table!r} records (choose a flow of {table!r} or of a table it extends)")


def _schedule_known(check: _Checker, name: Any, schedules: dict, where: tuple) -> bool:
    """Whether a named schedule is declared and sound; an unknown one is an error here, a declared one
    with mistakes was reported where it is written (`schedules` holds its name as None)."""
    if name is None or schedules.get(name) is not None:
        return True
    if name not in schedules:
        known = ", ".join(sorted(n for n, s in schedules.items() if s is not None)) or "none are declared"
        check.error(where + ("schedule",), f"unknown schedule {name!r} (known: {known})")
    return False


def condition_problem(tables: dict, table: TableDef, text: Any, kind: str = "an SLA") -> str | None:
    """What is wrong with a condition of `kind` (an SLA's: an encoded query over `table`'s records), or
    None. Such conditions read the record's values as they are: operators about changes are refused."""
    if not isinstance(text, str):
        return "expected an encoded query such as priority=1^state!=6"
    if not text.strip():
        return None
    try:
        query = parse_encoded(text)
    except QueryError as exc:
        return str(exc)
    for term in terms_of(query.where):
        field = resolve_path(tables, table, term.field)
        if field is None:
            return f"{term.field!r} is not a field of {table.name!r}"
        if field.ftype.hidden or not field.ftype.queryable:
            return f"{term.field!r}: {field.type} fields cannot be used in a condition"
        if operator(term.op).change is not None:
            return (f"{term.field}: the operator {term.op!r} is about a change; the conditions of {kind} are "
                    "read on the record's values as they are")
    if query.order:
        return f"a condition of {kind} has no order (remove ORDERBY)"
    try:  # a value the field refuses (`priority=high` on an integer): every write of the table would fail
        bind_fields(query.where, tables, table)
    except QueryError as exc:
        return str(exc)
    return None


def _zone_problem(name: Any) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not name:
        return "is needed: an IANA name such as Europe/London"
    try:
        ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (an IANA name such as Europe/London)"
    return None


def _ancestors(tables: dict, name: str) -> tuple[str, ...]:
    chain, parent = [], tables[name].extends
    while parent:
        chain.append(parent)
        parent = tables[parent].extends
    return tuple(chain)


# -- the known pitfalls (warnings: the definitions load, `caseloom validate` says them) ---------------

def sla_pitfalls(tables: dict, table: TableDef, sla: SlaDecl) -> list[tuple[str, str]]:
    """(key, message) for each known SLA pitfall: a start condition every record of which matches the
    stop condition never attaches; start and pause conditions that cannot hold together cancel the SLA
    (its start no longer matches) where it was meant to pause."""
    from ..query.meaning import bind_fields

    def bound(text: str):
        return bind_fields(parse_encoded(text).where, tables, table) if text and text.strip() else None

    start, stop, pause = bound(sla.start), bound(sla.stop), bound(sla.pause)
    found = []
    allowed = _allowed_values(start)
    if stop is not None and allowed and _implied(stop, allowed):
        found.append(("stop", f"SLA {sla.name!r} never attaches: every record its start condition matches also "
                              f"matches its stop condition ({sla.start} / {sla.stop})"))
    if pause is not None and sla.when_to_cancel == "no_match" and _excluded(pause, allowed):
        found.append(("pause", f"SLA {sla.name!r} is cancelled where it was meant to pause: its start and pause "
                               f"conditions cannot both match, so when the pause condition matches the start "
                               f"condition no longer does ({sla.start} / {sla.pause}); add the paused values to "
                               "the start condition, or set when_to_cancel"))
    return found


def _conjunction(node) -> list | None:
    """The terms of a condition that is one term or an AND of terms (None for anything else)."""
    from ..query.nodes import All, Term

    if isinstance(node, Term):
        return [node]
    if isinstance(node, All) and all(isinstance(item, Term) for item in node.items):
        return list(node.items)
    return None


def _allowed_values(node) -> dict[str, list]:
    """field -> the only values a condition allows it (from its `=` and IN terms on plain fields)."""
    out: dict[str, list] = {}
    for term in _conjunction(node) or ():
        if "." in term.field or term.target is None or term.op not in ("eq", "in"):
            continue
        values = term.value if isinstance(term.value, (list, tuple)) else [term.value]
        try:
            parsed = [term.target.parse(v) for v in values]
        except ValueError:
            continue
        out[term.field] = [v for v in parsed if v is not None and (term.field not in out or v in out[term.field])]
    return out


def _holds_for(term, name: str, value) -> bool:
    from ..query.evaluate import evaluate

    return evaluate(term, {name: value})


def _implied(node, allowed: dict[str, list]) -> bool:
    """Whether every record with the `allowed` values matches `node` (an AND of terms on those fields)."""
    terms = _conjunction(node)
    return bool(terms) and all(t.field in allowed and allowed[t.field]
                               and all(_holds_for(t, t.field, v) for v in allowed[t.field]) for t in terms)


def _excluded(node, allowed: dict[str, list]) -> bool:
    """Whether no record with the `allowed` values can match `node`."""
    return any(t.field in allowed and allowed[t.field] and not any(_holds_for(t, t.field, v) for v in allowed[t.field])
               for t in _conjunction(node) or ())


# -- timers ------------------------------------------------------------------------------------------

def build_timers(docs: list[SourceDocument], tables: dict[str, TableDef], roles: dict, errors: list,
                 properties: dict, schedules: dict[str, ScheduleDecl]) -> dict[str, TimerDef]:
    timers: dict[str, TimerDef] = {}
    for check, name, spec, where in _entries(docs, "timers", "timer", tables, roles, errors, properties):
        timer = _timer(check, tables, name, spec, where, schedules)
        if timer is not None:
            timers[name] = timer
    return timers


def _timer(check: _Checker, tables: dict, name: str, spec: dict, where: tuple,
           schedules: dict) -> TimerDef | None:
    table = check.table(spec["table"], where + ("table",))
    if table is None:
        return None
    ok, duration, offset = True, None, 0
    if ("for" in spec) == ("at" in spec):
        check.error(where, f"timer {name!r}: say either `for` (a condition held for a while) or `at` (a date-time "
                           "field), one of the two")
        return None
    condition = spec.get("condition", "")
    problem = condition_problem(tables, table, condition) if condition else None
    if problem:
        check.error(where + ("condition",), f"condition: {problem}")
        ok = False
    if "for" in spec:
        if not condition:
            check.error(where + ("for",), f"timer {name!r}: `for` counts how long `condition` has matched; give "
                                          "the condition")
            ok = False
        duration = _seconds(check, spec["for"], where + ("for",))
        ok &= duration is not None
    ok &= _schedule_known(check, spec.get("schedule"), schedules, where)
    if "at" in spec:
        field = table.field(spec["at"])
        if field is None or field.type not in ("date", "datetime"):
            check.error(where + ("at",), f"at: {spec['at']!r} is not a date or date-time field of {table.name!r}")
            ok = False
        if spec.get("schedule") is not None:
            check.error(where + ("schedule",), "a schedule governs `for`, not `at`")
            ok = False
        raw = spec.get("offset", 0)
        negative = isinstance(raw, str) and raw.strip().startswith("-")
        offset = _seconds(check, raw.strip()[1:] if negative else raw, where + ("offset",))
        ok &= offset is not None
        offset = -(offset or 0) if negative else (offset or 0)
    effects = check.effects(table, spec["effects"], where + ("effects",))
    if not ok:
        return None
    return TimerDef(name, table.name, effects, condition, duration, spec.get("schedule"), spec.get("at"), offset,
                    check.doc.where(*where))


def _seconds(check: _Checker, raw: Any, at: tuple) -> int | None:
    try:
        return FIELD_TYPES["duration"].parse(None, raw)
    except FieldValueError as exc:
        check.error(at, f"{at[-1]}: {exc}")
        return None


__all__ = ["CONDITIONS", "CONDITION_RULES", "SLA_TABLES", "ConditionRule", "build_schedules", "build_slas",
           "build_timers", "condition_problem", "sla_pitfalls", "sla_root", "timing_tables"]
