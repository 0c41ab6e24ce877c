"""Member lists (recipients lists): records of one table gathered by condition, script or import.

A list's type names the table its members come from and the table that holds them. Members
added by a condition or a script are marked dynamic: a refresh re-evaluates them and keeps
the ones added by hand or by import. Conditions are evaluated in SQL; new members are
written by the record service in one INSERT ... SELECT (or, when the member table has rules
of its own, in batches streamed from the database).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from .definitions.model import MemberListDef, MemberType
from .query import Query, QueryError, Selection, Term, parse_encoded
from .records import NotFound, RecordError, RecordService

BATCH = 2000
SAMPLE = 10


@dataclass
class BuildReport:
    """What a refresh, a script run or an import did."""

    identified: int = 0
    added: int = 0
    removed: int = 0
    rejected: list[dict] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"identified": self.identified, "added": self.added, "removed": self.removed,
                "rejected": self.rejected, **({"log": self.log} if self.log else {})}


class MemberLists:
    """Build and read the members of the lists of one member-list definition."""

    def __init__(self, service: RecordService, mdef: MemberListDef):
        self.service, self.mdef = service, mdef

    # -- reading -----------------------------------------------------------------------------

    def record(self, sys_id: str) -> dict:
        record = self.service.get(self.mdef.table, sys_id)
        if record is None:
            raise NotFound(f"no {self.mdef.table} record with sys_id {sys_id}")
        return record

    def mtype(self, record: dict) -> MemberType:
        kind = record.get(self.mdef.type_field)
        if kind not in self.mdef.types:
            raise RecordError(self.mdef.type_field, f"{kind!r} is not a list type ({', '.join(self.mdef.types)})")
        return self.mdef.types[kind]

    def condition(self, record: dict) -> Query | None:
        text = record.get(self.mdef.conditions_field) if self.mdef.conditions_field else None
        if not text:
            return None
        try:
            query = parse_encoded(text)
        except QueryError as exc:
            raise RecordError(self.mdef.conditions_field, str(exc)) from None
        return query

    def member_ids(self, sys_id: str, mtype: MemberType) -> sa.Select:
        """SELECT of the target sys_ids that are members of a list (for joins, never loaded whole)."""
        members = self.service.storage.physical(mtype.members)
        return sa.select(members.c[mtype.member_field]).where(members.c[mtype.list_field] == sys_id)

    def count_members(self, sys_id: str, mtype: MemberType | None = None) -> int:
        mtype = mtype or self.mtype(self.record(sys_id))
        members = self.service.storage.physical(mtype.members)
        return self.service.conn.execute(sa.select(sa.func.count()).select_from(members)
                                         .where(members.c[mtype.list_field] == sys_id)).scalar_one()

    def preview(self, sys_id: str) -> dict:
        """How many records the list's condition or script identifies now, and a sample; nothing is written."""
        record = self.record(sys_id)
        mtype = self.mtype(record)
        target = self.service.defs.tables[mtype.table]
        if self._uses_script(record):
            ids, report = self._script_ids(record, mtype)
            sample_ids = ids[:SAMPLE]
            sample = self.service.query(mtype.table, Query(Term("sys_id", "in", sample_ids)), self._sample_columns(target))
            return {"source": "script", "count": len(ids), "sample": sample, "log": report.log,
                    "rejected": len(report.rejected), "members": self.count_members(sys_id, mtype)}
        query = self.condition(record)
        if query is None:
            return {"source": "import", "count": 0, "sample": [], "members": self.count_members(sys_id, mtype)}
        count = self.service.count(mtype.table, Query(query.where))
        sample = self.service.query(mtype.table, Query(query.where, query.order), self._sample_columns(target), SAMPLE)
        return {"source": "condition", "count": count, "sample": sample, "members": self.count_members(sys_id, mtype)}

    @staticmethod
    def _sample_columns(target) -> list[str]:
        names = ["sys_id"] + [c for c in (target.display, "number", "email") if c and target.field(c) is not None]
        return list(dict.fromkeys(names))

    # -- building ----------------------------------------------------------------------------

    def refresh(self, sys_id: str) -> BuildReport:
        """Re-evaluate the dynamic members (condition or script); manual and imported ones stay."""
        record = self.record(sys_id)
        mtype = self.mtype(record)
        if self._uses_script(record):
            ids, report = self._script_ids(record, mtype)
            self._replace_dynamic(sys_id, mtype, report, ids=ids)
            return report
        query = self.condition(record)
        report = BuildReport()
        if query is None:
            return report
        self._replace_dynamic(sys_id, mtype, report, where=query.where)
        return report

    def _uses_script(self, record: dict) -> bool:
        return bool(self.mdef.script_flag_field and record.get(self.mdef.script_flag_field)
                    and self.mdef.script_field and record.get(self.mdef.script_field))

    def _replace_dynamic(self, sys_id: str, mtype: MemberType, report: BuildReport, where=None,
                         ids: list[str] | None = None) -> None:
        storage, conn = self.service.storage, self.service.conn
        members = storage.physical(mtype.members)
        dynamic = self.mdef.dynamic_field
        selection = Selection(storage, mtype.table)
        if ids is None:
            wanted = selection.select(selection.base.c.sys_id, where=where)
        else:
            wanted = None
        # dynamic members no longer identified leave the list
        stale_filter = [members.c[mtype.list_field] == sys_id]
        if dynamic:
            stale_filter.append(members.c[dynamic].is_(True))
        if wanted is not None:
            stale_filter.append(members.c[mtype.member_field].not_in(wanted.scalar_subquery()))
        elif ids:
            stale_filter.append(members.c[mtype.member_field].not_in(ids))
        for member_row in conn.execute(sa.select(members.c.sys_id).where(*stale_filter)).scalars().all():
            self.service.delete(mtype.members, member_row)
            report.removed += 1
        # newly identified records join, in one INSERT ... SELECT when the member table allows it,
        # else streamed in batches; never one already a member
        existing = self.member_ids(sys_id, mtype).scalar_subquery()
        if wanted is not None:
            kept = self.count_members(sys_id, mtype)
            new = wanted.where(selection.base.c.sys_id.not_in(existing))
            added = self.service.insert_select(mtype.members, {mtype.list_field: sys_id, **self._dynamic(True)},
                                               new, [mtype.member_field], source=selection.base)
            if added is None:
                added = self._add(sys_id, mtype, conn.execute(new).scalars(), dynamic=True)
            report.added += added
            # what the condition identifies: on a first build, exactly what was added; else counted
            report.identified = added if not kept else conn.execute(
                sa.select(sa.func.count()).select_from(wanted.subquery())).scalar_one()
        else:
            have = set(conn.execute(self.member_ids(sys_id, mtype)).scalars())
            report.added += self._add(sys_id, mtype, (i for i in ids if i not in have), dynamic=True)

    def _dynamic(self, dynamic: bool) -> dict:
        return {self.mdef.dynamic_field: dynamic} if self.mdef.dynamic_field else {}

    def _add(self, sys_id: str, mtype: MemberType, ids, dynamic: bool) -> int:
        extra = self._dynamic(dynamic)

        def rows() -> Iterator[dict]:
            for member in ids:
                yield {mtype.list_field: sys_id, mtype.member_field: member, **extra}

        # the members were just read from their table (a condition, or checked script results)
        return self.service.insert_many(mtype.members, rows(), batch=BATCH, known_references=(mtype.member_field,))

    def _script_ids(self, record: dict, mtype: MemberType) -> tuple[list[str], BuildReport]:
        """Run the list's script in the sandbox; keep the sys_ids that are records of the type's table."""
        from .properties import Properties
        from .sandbox import require_scripts_enabled, run_script, script_source, service_data

        require_scripts_enabled(Properties(self.service.defs, self.service.storage, self.service.conn))
        source, filename = script_source(self.service, record.get(self.mdef.script_field) or "",
                                         f"{self.mdef.table}:{record['sys_id']}")
        data = service_data(self.service)
        outcome = run_script(source, filename, data, params={"list": record.get("name") or record["sys_id"]})
        raw = outcome.result
        if isinstance(raw, dict) and mtype.result_key in raw:
            candidates = [str(i) for i in raw[mtype.result_key]]
        else:
            candidates = outcome.sys_ids
        found = self.service.existing_ids(mtype.table, set(candidates))
        report = BuildReport(identified=len(candidates), log=list(outcome.log))
        ids = []
        for i, candidate in enumerate(dict.fromkeys(candidates)):
            if candidate in found:
                ids.append(candidate)
            else:
                report.rejected.append({"row": i + 1, "sys_id": candidate, "reason": f"not a {mtype.table} record"})
        return ids, report

    # -- importing ---------------------------------------------------------------------------

    def template(self, sys_id: str) -> str:
        """The CSV header an import of this list's type accepts."""
        mtype = self.mtype(self.record(sys_id))
        return ",".join(mtype.match) + "\n"

    def import_csv(self, sys_id: str, text: str) -> BuildReport:
        """Add the records a CSV names (by sys_id, then the type's other keys); report each rejected
        row with its line number and why. A record already in the list is never added twice."""
        record = self.record(sys_id)
        mtype = self.mtype(record)
        report = BuildReport()
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        columns = [c for c in (reader.fieldnames or []) if c and c.strip() in mtype.match]
        if not columns:
            raise RecordError("file", f"the CSV needs a column named one of: {', '.join(mtype.match)}")
        rows = [(line, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for line, row in
                enumerate(reader, start=2)]
        lookups = self._lookup(mtype, rows)
        have = set(self.service.conn.execute(self.member_ids(sys_id, mtype)).scalars())
        adding: list[str] = []
        for line, row in rows:
            report.identified += 1
            found, reason = None, "no value in any of the columns " + ", ".join(mtype.match)
            for key in mtype.match:
                value = row.get(key)
                if value:
                    found = lookups[key].get(value.lower() if key != "sys_id" else value)
                    reason = f"no {mtype.table} record with {key} {value!r}"
                    if found:
                        break
            if not found:
                report.rejected.append({"row": line, "reason": reason})
            elif found in have:
                report.rejected.append({"row": line, "reason": "already a member of this list"})
            else:
                have.add(found)
                adding.append(found)
        report.added = self._add(sys_id, mtype, adding, dynamic=False)
        return report

    def _lookup(self, mtype: MemberType, rows: list[tuple[int, dict]]) -> dict[str, dict[str, str]]:
        """For each match key, the values the file uses mapped to sys_ids, a few queries per 500 values."""
        table = self.service.storage.physical(mtype.table)
        class_filter = self.service.storage.class_filter(mtype.table)
        found: dict[str, dict[str, str]] = {}
        for key in mtype.match:
            values = sorted({r[key] for _, r in rows if r.get(key)})
            column = table.c[key]
            compare = column if key == "sys_id" else sa.func.lower(column)
            wanted = values if key == "sys_id" else [v.lower() for v in values]
            found[key] = {}
            for start in range(0, len(wanted), 500):
                stmt = sa.select(compare, table.c.sys_id).where(compare.in_(wanted[start:start + 500]))
                if class_filter is not None:
                    stmt = stmt.where(class_filter)
                found[key].update({str(k): i for k, i in self.service.conn.execute(stmt)})
        return found


def lists_for(service: RecordService, table: str) -> MemberLists:
    mdef = service.defs.member_list_for(table)
    if mdef is None:
        raise NotFound(f"table {table!r} holds no member lists")
    return MemberLists(service, mdef)


def apply_declared(service: RecordService) -> list[str]:
    """Create or update every list declared in YAML and build it (condition or script: refresh;
    import: add the file's records, never twice). Returns one line per list for `caseloom init`."""
    lines = []
    for declared in service.defs.declared_lists:
        mdef = service.defs.member_lists[declared.member_list]
        table = service.defs.tables[mdef.table]
        key = table.display or "name"
        existing = service.query(mdef.table, Query(Term(key, "eq", declared.name)), ["sys_id"], 1)
        values = {key: declared.name, mdef.type_field: declared.type}
        if "description" in table.fields and declared.description:
            values["description"] = declared.description
        if mdef.conditions_field:
            values[mdef.conditions_field] = declared.conditions
        if mdef.script_field:
            values[mdef.script_field] = declared.script
        if mdef.script_flag_field:
            values[mdef.script_flag_field] = bool(declared.script)
        lists = MemberLists(service, mdef)
        try:
            with service.conn.begin_nested():
                if existing:
                    sys_id = existing[0]["sys_id"]
                    service.update(mdef.table, sys_id, values)
                else:
                    sys_id = service.insert(mdef.table, values)["sys_id"]
                report = (lists.import_csv(sys_id, declared.import_text) if declared.import_text is not None
                          else lists.refresh(sys_id))
        except Exception as exc:  # one list that cannot be built must not stop init; say why
            lines.append(f"  {declared.name}: not built: {exc}")
            continue
        lines.append(f"  {declared.name}: {report.identified} identified, {report.added} added, "
                     f"{report.removed} removed, {len(report.rejected)} rejected")
    return lines
