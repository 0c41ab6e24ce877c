"""What templates read besides the record itself: dot-walks, the current user and the time.

Dot-walks (`record.location.manager.name`) are read for a whole batch of records at once:
one query per reference field the paths start from, whatever the number of records.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ..definitions.model import TableDef
from ..query import Query, Term, select_rows

if TYPE_CHECKING:
    from ..records import RecordService

SLICE = 500  # sys_ids per IN list


def walk_values(service: RecordService, table: TableDef, records: list[dict], paths: tuple[str, ...]
                ) -> list[dict]:
    """For each record, {path: value} of each dot-walk path (None where a reference is empty).
    Paths start at the records' own reference fields, so unsaved values (a before-rule's) count."""
    by_start: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        start, rest = path.split(".", 1)
        by_start[start].append(rest)
    found = [dict.fromkeys(paths) for _ in records]
    for start, rests in by_start.items():
        field = table.field(start)
        target = field.reference if field is not None else None
        if target is None:
            continue
        ids = list(dict.fromkeys(str(r[start]) for r in records if r.get(start)))
        rows = _read(service, target, ids, rests)
        for record, values in zip(records, found, strict=True):
            row = rows.get(str(record.get(start) or ""))
            if row is not None:
                values.update({f"{start}.{rest}": row[rest] for rest in rests})
    return found


def _read(service: RecordService, table: str, ids: list[str], paths: list[str]) -> dict[str, dict]:
    """The values of `paths` on the records `ids` of `table` (trusted: definitions chose the paths)."""
    rows: dict[str, dict] = {}
    columns = ["sys_id", *dict.fromkeys(paths)]
    for start in range(0, len(ids), SLICE):
        stmt, _ = select_rows(service.storage, table, Query(Term("sys_id", "in", ids[start:start + SLICE])), columns)
        for row in service.conn.execute(stmt).mappings():
            rows[row["sys_id"]] = dict(row)
    return rows


def template_user(service: RecordService) -> dict:
    """`user` in templates: the acting user's sys_id, user name, name and e-mail (read once per unit of work)."""
    actor = service.actor
    key = ("template_user", actor.user_name)
    found = service.lookups.get(key)
    if found is None:
        found = {"sys_id": actor.sys_id or "", "user_name": actor.user_name, "name": actor.user_name, "email": ""}
        if "sys_user" in service.defs.tables:
            term = Term("sys_id", "eq", actor.sys_id) if actor.sys_id else Term("user_name", "eq", actor.user_name)
            stmt, _ = select_rows(service.storage, "sys_user", Query(term), ["sys_id", "user_name", "name", "email"])
            row = service.conn.execute(stmt).mappings().first()
            if row is not None:
                found = {"sys_id": row["sys_id"], "user_name": row["user_name"],
                         "name": row["name"] or row["user_name"], "email": row["email"] or ""}
        service.lookups[key] = found
    return dict(found)


def timestamp() -> str:
    """`now` in templates: the current UTC date and time as the platform writes them."""
    from ..records import now

    return now().strftime("%Y-%m-%d %H:%M:%S")
