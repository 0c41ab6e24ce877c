"""Checks on the records that define time: a schedule's hours and an SLA definition's conditions are
refused, naming the field and what is wrong, before they are written; a declared one is changed in
the definitions, not here. Any write to them makes the unit of work read them again."""

from __future__ import annotations

import sqlalchemy as sa

from ..records import Conflict, RecordError, deletion_guard, validator
from .schedule import schedule_problems
from .slas import SCHEDULE, SLA, TASK_SLA, forget

CONDITION_FIELDS = ("start_condition", "stop_condition", "pause_condition", "resume_condition", "cancel_condition",
                    "reset_condition")


def _declared(service, tdef, record: dict, current: dict | None) -> None:
    if current is not None and current.get("source") and not service.trusted:
        raise RecordError(None, f"this {tdef.label.lower()} is declared in {current['source']}; change it there "
                                "(Definitions), not here")


@validator(SCHEDULE)
def check_schedule(service, tdef, record: dict, current: dict | None) -> None:
    _declared(service, tdef, record, current)
    problems = schedule_problems(record.get("time_zone") or "", record.get("windows") or "", record.get("holidays") or "")
    if problems:
        first = problems[0]
        raise RecordError(first.field, str(first))
    forget(service)


@validator(SLA)
def check_sla(service, tdef, record: dict, current: dict | None) -> None:
    from ..definitions.timing import CONDITION_RULES, condition_problem

    _declared(service, tdef, record, current)
    table = service.defs.tables.get(record.get("collection"))
    if table is None:
        raise RecordError("collection", f"unknown table {record.get('collection')!r}")
    if not record.get("duration"):
        raise RecordError("duration", "must be at least one second")
    for name in CONDITION_FIELDS:
        problem = condition_problem(service.defs.tables, table, record.get(name) or "")
        if problem:
            raise RecordError(name, problem)
    if not (record.get("start_condition") or "").strip():
        raise RecordError("start_condition", "is mandatory: it says when the SLA attaches")
    conditions = {name.removesuffix("_condition"): record.get(name) for name in CONDITION_FIELDS}
    for rule in CONDITION_RULES:
        if rule.missing(record, conditions):
            raise RecordError(f"{rule.condition}_condition", rule.words(rule.condition))
    if record.get("retroactive"):
        field = table.field(record.get("set_start_to") or "")
        if field is None or field.type not in ("date", "datetime"):
            raise RecordError("set_start_to", f"{record.get('set_start_to')!r} is not a date or date-time field of "
                                              f"{table.name!r} (a retroactive start needs one)")
    if record.get("timezone_source") == "definition":
        from ..definitions.timing import _zone_problem

        problem = _zone_problem(record.get("timezone"))
        if problem:
            raise RecordError("timezone", problem)
    _check_flow(service.defs, table, record, current)
    _warn_of_pitfalls(service, table, record, conditions)
    forget(service)


def _warn_of_pitfalls(service, table, record: dict, conditions: dict) -> None:
    """The known pitfalls `caseloom validate` warns of in a declared SLA, told to whoever saves one in the
    browser: the save stands (the SLA may be meant so), the form says what it will do."""
    from ..definitions.model import SlaDecl
    from ..definitions.timing import sla_pitfalls

    sla = SlaDecl(record.get("name") or "", table.name, int(record.get("duration") or 0),
                  **{k: v or "" for k, v in conditions.items()},
                  when_to_cancel=record.get("when_to_cancel") or "no_match")
    for _, message in sla_pitfalls(service.defs.tables, table, sla):
        if message not in service.notices:
            service.notices.append(message)


def _check_flow(defs, table, record: dict, current: dict | None) -> None:
    """A new SLA definition without a flow gets its table's default one (ServiceNow's Default SLA flow);
    a flow whose effects are for records of another table is refused."""
    name = record.get("flow")
    if not name:
        default = defs.default_flow(table.name) if current is None and not record.get("source") else None
        if default is not None:
            record["flow"] = default.name
        return
    from ..definitions.timing import flow_problem

    flow = defs.sla_flows.get(name)
    problem = flow_problem(flow, table.name, (table.name, *defs.ancestors(table.name))) if flow is not None else None
    if problem:
        raise RecordError("flow", problem)


@deletion_guard(SLA)
@deletion_guard(SCHEDULE)
def keep_declared_and_measured(service, tdef, current: dict) -> None:
    """A declared SLA or schedule is removed from its definitions, not deleted here (it would come back
    at the next `caseloom init`, without the history); an SLA that task SLAs were measured against is
    set inactive instead: deleting it would delete them, and every report's figures with them."""
    if service.trusted:
        return
    if current.get("source"):
        raise Conflict(f"this {tdef.label.lower()} is declared in {current['source']}; remove it there "
                       "(Definitions), not here")
    if tdef.name != SLA or TASK_SLA not in service.defs.tables:
        return
    task_slas = service.storage.physical(TASK_SLA)
    measured = service.conn.execute(sa.select(sa.func.count()).select_from(task_slas)
                                    .where(task_slas.c.sla == current["sys_id"])).scalar_one()
    if measured:
        raise Conflict(f"{measured:,} task SLAs were measured against this SLA definition: set it inactive "
                       "instead, so that their history and the reports' figures stay")
