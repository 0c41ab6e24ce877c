"""SLA definitions at run time: the active contract_sla records of a table, their conditions bound to
the table's fields, their schedule parsed, and their escalations: a declared SLA's own, or those of
the SLA flow the record names.

Records are read once per unit of work (`service.memo`) and parsed once per version of the record
(its sys_id and sys_mod_count), so a unit that writes a hundred records reads them once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..definitions.model import Definitions, Escalation, TableDef
from ..query.conditions import parse_encoded
from ..query.meaning import bind_fields
from .measure import Clock
from .schedule import Schedule, parse_schedule

SLA, TASK_SLA, SCHEDULE = "contract_sla", "task_sla", "cmn_schedule"
MEMO = "timing.slas"


@dataclass(frozen=True)
class Sla:
    """One active SLA definition of a table, ready to evaluate."""

    sys_id: str
    name: str
    table: str
    clock: Clock
    start: Any  # bound condition Nodes (None: never, for start; else not set)
    stop: Any = None
    pause: Any = None
    resume: Any = None
    cancel: Any = None
    reset: Any = None
    when_to_cancel: str = "no_match"
    when_to_resume: str = "no_match"
    retroactive: str | None = None  # the date-time field it starts from
    escalations: Mapping[int, Escalation] = dataclasses.field(default_factory=dict)


_PARSED: dict[tuple, Any] = {}  # (id of the definitions, sys_id, sys_mod_count, sys_updated_on) -> Sla or Schedule


def enabled(defs: Definitions, table: str) -> bool:
    """Whether records of `table` may have SLAs (it is the SLA table or extends it)."""
    root = defs.sla_root
    return root is not None and table in defs.tables and root in (table, *defs.ancestors(table))


def slas_for(service, table: str) -> list[Sla]:
    """The active SLA definitions that apply to records of `table` (its own and its ancestors')."""
    defs = service.defs
    if not enabled(defs, table):
        return []
    memo = service.memo.setdefault(MEMO, {})
    if table not in memo:
        tables = (table, *defs.ancestors(table))
        memo[table] = [s for s in _all(service) if s.table in tables]
    return memo[table]


def active_slas(service) -> list[Sla]:
    """Every active SLA definition, whatever its table."""
    return _all(service)


def forget(service) -> None:
    """A write to an SLA definition or a schedule: read them again in this unit of work."""
    service.memo.pop(MEMO, None)
    service.memo.pop(MEMO + ".all", None)


def _all(service) -> list[Sla]:
    memo = service.memo
    if MEMO + ".all" not in memo:
        memo[MEMO + ".all"] = _read(service)
    return memo[MEMO + ".all"]


VERSION_KEY, READ_KEY = ("timing.slas", "version"), ("timing.slas", "read")


def _read(service) -> list[Sla]:
    """Every active SLA definition, parsed. One small query asks which definitions (and their
    schedules) there are and when each last changed; their rows are read and parsed again only when
    that differs from the last read in this process, as after a write here or in another process."""
    storage, conn = service.storage, service.conn
    stmt = storage.cache.get(VERSION_KEY)
    if stmt is None:  # built once per definitions set
        slas, schedules = storage.physical(SLA), storage.physical(SCHEDULE)
        active = slas.c.active.is_(True)
        stmt = storage.cache[VERSION_KEY] = sa.union_all(
            sa.select(slas.c.sys_id, slas.c.sys_mod_count, slas.c.sys_updated_on).where(active),
            sa.select(schedules.c.sys_id, schedules.c.sys_mod_count, schedules.c.sys_updated_on)
            .where(schedules.c.sys_id.in_(sa.select(slas.c.schedule).where(active))))
    version = frozenset(tuple(row) for row in conn.execute(stmt))
    known = storage.cache.get(READ_KEY)
    if known is not None and known[0] == version:
        return known[1]
    slas = storage.physical(SLA)
    rows = conn.execute(sa.select(slas).where(slas.c.active.is_(True))).mappings().all()
    schedules = _schedules(service, {r["schedule"] for r in rows if r["schedule"]})
    parsed = [s for s in (_sla(service.defs, dict(r), schedules) for r in rows) if s is not None]
    storage.cache[READ_KEY] = (version, parsed)
    return parsed


def _schedules(service, ids: set[str]) -> dict[str, Schedule]:
    if not ids:
        return {}
    table = service.storage.physical(SCHEDULE)
    out = {}
    for row in service.conn.execute(sa.select(table).where(table.c.sys_id.in_(ids))).mappings():
        key = (id(service.defs), row["sys_id"], row["sys_mod_count"], row["sys_updated_on"])
        if key not in _PARSED:
            _PARSED[key] = parse_schedule(row["name"], row["time_zone"], row["windows"], row["holidays"] or "")
        out[row["sys_id"]] = _PARSED[key]
    return out


def _sla(defs: Definitions, row: dict, schedules: dict[str, Schedule]) -> Sla | None:
    key = (id(defs), row["sys_id"], row["sys_mod_count"], row["sys_updated_on"],
           row["schedule"] and id(schedules.get(row["schedule"])))
    if key in _PARSED:
        return _PARSED[key]
    tdef = defs.tables.get(row["collection"])
    if tdef is None:
        return None  # a table the definitions no longer have
    schedule = schedules.get(row["schedule"]) if row["schedule"] else None
    if schedule is not None and row["timezone_source"] == "definition" and row["timezone"]:
        schedule = dataclasses.replace(schedule, time_zone=row["timezone"])
    declared = defs.slas.get(row["name"]) if row["source"] else None
    flow = defs.flow_covers(row.get("flow"), tdef.name)
    own = declared.escalations if declared is not None else ()  # none beside a flow (the loader refuses both)
    escalations = {e.at: e for e in (flow.escalations if flow is not None else own)}
    clock = Clock(int(row["duration"] or 0), schedule, tuple(sorted({*escalations, 100})))
    conditions = {name: condition(defs, tdef, row.get(f"{name}_condition"))
                  for name in ("start", "stop", "pause", "resume", "cancel", "reset")}
    sla = Sla(row["sys_id"], row["name"], tdef.name, clock, when_to_cancel=row["when_to_cancel"] or "no_match",
              when_to_resume=row["when_to_resume"] or "no_match",
              retroactive=row["set_start_to"] if row["retroactive"] and row["set_start_to"] else None,
              escalations=escalations, **conditions)
    if len(_PARSED) > 10_000:
        _PARSED.clear()
    _PARSED[key] = sla
    return sla


def condition(defs: Definitions, tdef: TableDef, text: str | None) -> Any:
    """An SLA condition (an encoded query) bound to the table's fields; None when empty."""
    if not text or not text.strip():
        return None
    return bind_fields(parse_encoded(text).where, defs.tables, tdef)


__all__ = ["SCHEDULE", "SLA", "TASK_SLA", "Sla", "active_slas", "condition", "enabled", "forget", "slas_for"]
