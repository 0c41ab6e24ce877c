"""Declared schedules and SLA definitions written to their records (cmn_schedule, contract_sla) by
`caseloom init` and by every change to the definitions: a record per name, marked with the file that
declares it (`source`); one whose declaration is gone is made inactive, never deleted (its task SLAs
keep their history)."""

from __future__ import annotations

import sqlalchemy as sa

from ..definitions.model import SlaDecl
from .slas import SCHEDULE, SLA, forget


def seed_timing(service) -> int:
    """Write the declared schedules and SLAs; returns how many records were added or changed."""
    defs = service.defs
    if SCHEDULE not in defs.tables:
        return 0
    changed = 0
    with service.by_definitions():
        ids = {}
        for decl in defs.schedules.values():
            values = {"label": decl.label, "time_zone": decl.time_zone, "windows": decl.windows,
                      "holidays": decl.holidays, "source": _source(defs, decl.location)}
            ids[decl.name], n = _upsert(service, SCHEDULE, decl.name, values)
            changed += n
        if SLA in defs.tables:
            for decl in defs.slas.values():
                _, n = _upsert(service, SLA, decl.name, _sla_values(defs, decl, ids))
                changed += n
            changed += _retire(service, set(defs.slas))
    forget(service)
    return changed


def _sla_values(defs, decl: SlaDecl, schedules: dict[str, str]) -> dict:
    return {"collection": decl.table, "duration": decl.duration, "schedule": schedules.get(decl.schedule),
            "timezone_source": decl.timezone_source, "timezone": decl.timezone, "start_condition": decl.start,
            "stop_condition": decl.stop, "pause_condition": decl.pause, "resume_condition": decl.resume,
            "cancel_condition": decl.cancel, "reset_condition": decl.reset, "when_to_cancel": decl.when_to_cancel,
            "when_to_resume": decl.when_to_resume, "retroactive": decl.retroactive is not None,
            "set_start_to": decl.retroactive or "", "active": decl.active, "flow": decl.flow or "",
            "source": _source(defs, decl.location)}


def _source(defs, location) -> str:
    return defs.portable(location.path) if location is not None else ""


def _upsert(service, table: str, name: str, values: dict) -> tuple[str, int]:
    physical = service.storage.physical(table)
    current = service.conn.execute(sa.select(physical).where(physical.c.name == name)).mappings().first()
    if current is None:
        return service.insert(table, {"name": name, **values})["sys_id"], 1
    differs = {k: v for k, v in values.items() if _text(current.get(k)) != _text(v)}
    if differs:
        service.update(table, current["sys_id"], differs)
    return current["sys_id"], int(bool(differs))


def _retire(service, declared: set[str]) -> int:
    """Declared SLA records whose declaration is gone become inactive. Written directly: the record
    may name a table the definitions no longer have, which its checks would refuse."""
    from .. import stamps
    from ..records import now

    physical = service.storage.physical(SLA)
    gone = sa.and_(physical.c.source != "", physical.c.source.is_not(None), physical.c.active.is_(True),
                   physical.c.name.not_in(declared) if declared else sa.true())
    result = service.conn.execute(sa.update(physical).where(gone).values(
        active=False, **stamps.touched_sql(physical, service.actor.user_name, now())))
    service.written.add(SLA)
    return result.rowcount


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


__all__ = ["seed_timing"]
