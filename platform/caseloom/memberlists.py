"""Member lists: records of one table gathered by condition, script or import (e.g. recipients lists).

A list's type names the table its members come from and the table that holds them. Members
added by a condition or a script are marked dynamic: a refresh re-evaluates them and keeps
the ones added by hand or by import. Conditions are evaluated in SQL; new members are
written by the record service in one INSERT ... SELECT (or, when the member table has rules
of its own, in batches streamed from the database).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

import sqlalchemy as sa

from .access import Actor
from .definitions.model import MemberListDef, MemberType, TableDef
from .query import Query, QueryError, Selection, Term, parse_encoded
from .records import Conflict, NotFound, RecordError, RecordService, kind_validator
from .users import actor_named

BATCH = 2000
SAMPLE = 10
IMPORT_SLICE = 5000  # CSV rows read, looked up and added at a time
MAX_IMPORT_ROWS = 1_000_000
REJECTED_SHOWN = 1000  # rejected rows reported one by one; the rest are counted


@dataclass
class BuildReport:
    """What a refresh, a script run or an import did."""

    identified: int = 0
    added: int = 0
    removed: int = 0
    rejected: list[dict] = field(default_factory=list)  # the first REJECTED_SHOWN, with rows and reasons
    rejected_total: int = 0
    log: list[str] = field(default_factory=list)

    def reject(self, item: dict) -> None:
        self.rejected_total += 1
        if len(self.rejected) < REJECTED_SHOWN:
            self.rejected.append(item)

    def as_dict(self) -> dict:
        return {"identified": self.identified, "added": self.added, "removed": self.removed,
                "rejected": self.rejected, "rejected_total": max(self.rejected_total, len(self.rejected)),
                **({"log": self.log} if self.log else {})}


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
        """How many records the list's condition or script identifies now, and a sample; nothing is written.
        Only for users who may change the list: a preview runs its script (and spends their CPU budget)."""
        self.service.table(self.mdef.table, "write")
        record = self.record(sys_id)
        mtype = self.mtype(record)
        target = self.service.defs.tables[mtype.table]
        if self._uses_script(record):
            ids, report = self._script_ids(record, mtype)
            sample_ids = ids[:SAMPLE]
            sample = self.service.query(mtype.table, Query(Term("sys_id", "in", sample_ids)), self._sample_columns(target))
            return {"source": "script", "count": len(ids), "sample": sample, "log": report.log,
                    "rejected": report.rejected_total, "members": self.count_members(sys_id, mtype)}
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
        self.service.table(mtype.table, "read")  # the condition reads the type's table as the user
        if self._uses_script(record):
            ids, report = self._script_ids(record, mtype)
            self._replace_dynamic(sys_id, mtype, report, ids=ids)
            return report
        query = self.condition(record)
        report = BuildReport()
        if query is None:
            return report
        try:
            self._replace_dynamic(sys_id, mtype, report, where=query.where)
        except QueryError as exc:  # saved before conditions were checked, or the table changed since
            raise RecordError(self.mdef.conditions_field, f"{exc} (a condition on {mtype.table})") from None
        return report

    def _uses_script(self, record: dict) -> bool:
        return bool(self.mdef.script_flag_field and record.get(self.mdef.script_flag_field)
                    and self.mdef.script_field and record.get(self.mdef.script_field))

    def _replace_dynamic(self, sys_id: str, mtype: MemberType, report: BuildReport, where=None,
                         ids: list[str] | None = None) -> None:
        storage, conn = self.service.storage, self.service.conn
        members = storage.physical(mtype.members)
        dynamic = self.mdef.dynamic_field
        selection = Selection(storage, mtype.table, readable=self.service.readable)  # the condition's dot-walks too
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
            stale = conn.execute(sa.select(members.c.sys_id).where(*stale_filter)).scalars().all()
        else:  # a script's: compared here, as a list of any length (no NOT IN of as many parameters)
            keep = set(ids)
            stale = [row.sys_id for row in conn.execute(sa.select(members.c.sys_id, members.c[mtype.member_field]
                                                                  .label("member")).where(*stale_filter))
                     if row.member not in keep]
        for member_row in stale:
            self.service.delete(mtype.members, member_row)
            report.removed += 1
        # newly identified records join, in one INSERT ... SELECT when the member table allows it,
        # else streamed in batches; never one already a member
        existing = self.member_ids(sys_id, mtype).scalar_subquery()
        if wanted is not None:
            kept = self.count_members(sys_id, mtype)
            # a list with no member left (a first build) is filled without looking among its members,
            # which the same statement is inserting
            new = wanted.where(selection.base.c.sys_id.not_in(existing)) if kept else wanted
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

    def add_members(self, sys_id: str, ids: list[str]) -> int:
        """Add records of the list's type (sys_ids its caller has just read from the type's table) as
        members added by hand (not dynamic): a list made by a rule, fixed at what it found."""
        mtype = self.mtype(self.record(sys_id))
        return self._add(sys_id, mtype, ids, dynamic=False)

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
        from .sandbox import script_source

        display = self.service.defs.tables[self.mdef.table].display
        shown = record.get(display) if display else None
        source, filename = script_source(self.service, record.get(self.mdef.script_field) or "",
                                         f"the script of {shown or record['sys_id']!r}", self.service.scripts_dir)
        outcome = self.run_script(record, source, filename, self.script_author(record))
        candidates = outcome.sys_ids
        found = self.service.existing_ids(mtype.table, set(candidates))
        report = BuildReport(identified=len(candidates), log=list(outcome.log))
        ids = []
        for i, candidate in enumerate(dict.fromkeys(candidates)):
            if candidate in found:
                ids.append(candidate)
            else:
                report.reject({"row": i + 1, "sys_id": candidate, "reason": f"not a {mtype.table} record"})
        return ids, report

    def run_script(self, record: dict, source: str, filename: str, author: Actor):
        """Run a script for a list in the sandbox, for the service's user: scripts must be on (the kill
        switch), the user's CPU budget must not be spent (its use is charged), and the script reads
        with the access of its author, never more than the user running it (no confused deputy: a
        manager's Refresh does not lend the manager's rights to an author's script). Its result is a
        list of sys_ids or records, or `{result_key: [...]}` with the list type's own `result_key`."""
        from .properties import Properties
        from .records import RecordService
        from .sandbox import require_scripts_enabled, run_script, service_data

        service = self.service
        require_scripts_enabled(Properties(service.defs, service.storage, service.conn))
        meter = service.script_meter
        if meter is not None:
            meter.require(service.conn, service.storage)
        reader = RecordService(service.storage, service.conn, service.actor.within(author), service.check_access,
                               service.automation)
        mtype = self.mtype(record)
        return run_script(source, filename, service_data(reader), params={"list": record.get("name") or record["sys_id"]},
                          on_cpu=meter.add if meter is not None else None,
                          result_keys=(mtype.result_key,) if mtype.result_key else ())

    def script_author(self, record: dict) -> Actor:
        """Who wrote the list's script: the user who last changed its text, as the audit trail has it,
        else who created the list; with their roles as they are now. A script
        whose author is gone or inactive does not run until someone saves it again."""
        storage, conn = self.service.storage, self.service.conn
        audit = storage.physical("sys_audit")
        name = conn.execute(sa.select(audit.c.user).where(
            audit.c.documentkey == record["sys_id"], audit.c.tablename.in_(self.service.defs.lineage(self.mdef.table)),
            audit.c.fieldname == self.mdef.script_field).order_by(audit.c.sys_created_on.desc(), audit.c.sys_id.desc())
            .limit(1)).scalar() or record.get("sys_created_by")
        author = actor_named(storage, conn, name)
        if author is None:
            raise Conflict(f"the script's author {name!r} no longer exists or is inactive; "
                           "save the script again to run it with your access")
        return author

    # -- importing ---------------------------------------------------------------------------

    def template(self, sys_id: str) -> str:
        """The CSV header an import of this list's type accepts."""
        mtype = self.mtype(self.record(sys_id))
        return ",".join(mtype.match) + "\n"

    def import_csv(self, sys_id: str, text: str | TextIO, max_rows: int = MAX_IMPORT_ROWS) -> BuildReport:
        """Add the records a CSV names (by sys_id, then the type's other keys); report each rejected
        row with its line number and why (the first REJECTED_SHOWN of them; `rejected_total` counts
        all). A record already in the list is never added twice. The file is read as a stream, in
        slices of IMPORT_SLICE rows, so a large one is never held whole; more than `max_rows` rows
        refuse the whole import. A file that is not UTF-8 text is refused naming where."""
        record = self.record(sys_id)
        mtype = self.mtype(record)
        report = BuildReport()
        stream = io.StringIO(text) if isinstance(text, str) else text
        try:
            reader = csv.DictReader(_without_bom(stream))
            if reader.fieldnames is None:
                raise RecordError("file", "the CSV is empty: send it as the request body (Content-Type: text/csv)")
            columns = [c for c in reader.fieldnames if c and c.strip() in mtype.match]
            if not columns:
                raise RecordError("file", f"the CSV needs a column named one of: {', '.join(mtype.match)}")
            line = 1
            while slice_ := list(itertools.islice(reader, IMPORT_SLICE)):
                rows = [(line + i, {k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)})
                        for i, row in enumerate(slice_, start=1)]
                line += len(rows)
                if line - 1 > max_rows:
                    raise RecordError("file", f"the CSV has more than {max_rows:,} rows (CASELOOM_MAX_IMPORT_ROWS); "
                                              "split it into several imports")
                report.added += self._import_slice(sys_id, mtype, rows, report)
        except UnicodeDecodeError as exc:
            raise RecordError("file", f"the file is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} cannot be "
                                      "read (save it as CSV UTF-8)") from None
        except csv.Error as exc:
            raise RecordError("file", f"line {reader.line_num}: not a CSV row the import can read: {exc}") from None
        return report

    def _import_slice(self, sys_id: str, mtype: MemberType, rows: list[tuple[int, dict]], report: BuildReport) -> int:
        """Look up and add one slice of an import; rejected rows go to the report."""
        lookups = self._lookup(mtype, rows)

        def named(key: str, value: str) -> set[str]:
            """The records whose `key` is `value` (sys_ids exactly, the other keys in any case)."""
            return lookups[key].get(value if key == "sys_id" else value.lower(), set())

        candidates = {i for key in mtype.match for ids in lookups[key].values() for i in ids}
        members = self.service.storage.physical(mtype.members)
        have = set(self.service.conn.execute(self.member_ids(sys_id, mtype).where(
            members.c[mtype.member_field].in_(sorted(candidates)))).scalars()) if candidates else set()
        adding: list[str] = []
        for line, row in rows:
            report.identified += 1
            found, reason, by = None, "no value in any of the columns " + ", ".join(mtype.match), None
            for key in mtype.match:
                value = row.get(key)
                if value:
                    reason = f"no {mtype.table} record with {key} {value!r}"
                    if ids := named(key, value):
                        found, by = min(ids), (key, value)
                        break
            for key in mtype.match if found else ():  # every other key given must name the same record
                value = row.get(key)
                if value and key != by[0] and found not in named(key, value):
                    found, reason = None, f"{key} {value!r} does not name the {mtype.table} record whose {by[0]} " \
                                          f"is {by[1]!r}"
                    break
            if not found:
                report.reject({"row": line, "reason": reason})
            elif found in have:
                report.reject({"row": line, "reason": "already a member of this list"})
            else:
                have.add(found)
                adding.append(found)
        return self._add(sys_id, mtype, adding, dynamic=False)

    def _lookup(self, mtype: MemberType, rows: list[tuple[int, dict]]) -> dict[str, dict[str, set[str]]]:
        """For each match key, the values the file uses mapped to the sys_ids that have them (an e-mail
        two records share names both), a few queries per 500 values."""
        table = self.service.storage.physical(mtype.table)
        class_filter = self.service.storage.class_filter(mtype.table)
        found: dict[str, dict[str, set[str]]] = {}
        for key in mtype.match:
            values = sorted({r[key] for _, r in rows if r.get(key)})
            column = table.c[key]
            compare = column if key == "sys_id" else sa.func.lower(column)
            wanted = values if key == "sys_id" else [v.lower() for v in values]
            found[key] = defaultdict(set)
            for start in range(0, len(wanted), 500):
                stmt = sa.select(compare, table.c.sys_id).where(compare.in_(wanted[start:start + 500]))
                if class_filter is not None:
                    stmt = stmt.where(class_filter)
                for value, record_id in self.service.conn.execute(stmt):
                    found[key][str(value)].add(record_id)
        return found


def _without_bom(stream: TextIO) -> Iterator[str]:
    """The lines of a text stream, without the byte-order mark a spreadsheet may start a CSV with."""
    first = True
    for line in stream:
        yield line.lstrip("\ufeff") if first else line
        first = False


def _is_list_table(defs, table: str) -> bool:
    return defs.member_list_for(table) is not None


@kind_validator(_is_list_table)
def check_list(service: RecordService, tdef: TableDef, record: dict, current: dict | None) -> None:
    """A list's condition and script are checked when they are saved, naming the field (and the
    script's line): an unknown field or a refused import was saved, and only its Refresh said so."""
    mdef = service.defs.member_list_for(tdef.name)
    mtype = mdef.types.get(record.get(mdef.type_field))
    if mtype is None:
        return
    changed = current is None or current.get(mdef.type_field) != record.get(mdef.type_field)
    name = mdef.conditions_field
    text = record.get(name) if name else None
    if text and (changed or current.get(name) != text):
        try:
            query = parse_encoded(text)
            Selection(service.storage, mtype.table).condition(query.where)
        except QueryError as exc:
            raise RecordError(name, f"{exc} (a condition on {mtype.table})") from None
    name = mdef.script_field
    text = record.get(name) if name else None
    if text and (current is None or current.get(name) != text):
        from .sandbox import ScriptRefused, check_script, script_source

        try:
            source, filename = script_source(service, text, "the script", service.scripts_dir)
            check_script(source, filename)
        except ScriptRefused as exc:
            where = f"the script's line {exc.line}" if exc.filename == "the script" else f"{exc.filename}:{exc.line}"
            raise RecordError(name, f"{where}: {exc.why}") from None


def lists_for(service: RecordService, table: str) -> MemberLists:
    mdef = service.defs.member_list_for(table)
    if mdef is None:
        raise NotFound(f"table {table!r} holds no member lists")
    return MemberLists(service, mdef)


class DeclaredListError(Exception):
    """A list declared in YAML that `caseloom init` could not build; the message names it and says why."""


def apply_declared(service: RecordService) -> list[str]:
    """Create or update every list declared in YAML and build it (condition or script: refresh;
    import: add the file's records, never twice). Returns one line per list for `caseloom init`;
    raises DeclaredListError naming the first list that cannot be built (init then fails)."""
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
            with service.conn.begin_nested(), service.by_definitions():  # declared in YAML
                if existing:
                    sys_id = existing[0]["sys_id"]
                    service.update(mdef.table, sys_id, values)
                else:
                    sys_id = service.insert(mdef.table, values)["sys_id"]
                report = (lists.import_csv(sys_id, declared.import_text) if declared.import_text is not None
                          else lists.refresh(sys_id))
        except RecordError as exc:
            if not existing:
                raise DeclaredListError(f"declared list {declared.name!r} of member list {declared.member_list!r} "
                                        f"cannot be built: {exc}") from exc
            # a list the definitions' own rules keep as it is (a recipients list child cases were made
            # from is read-only): left so, which is what those rules ask; init goes on
            lines.append(f"  {declared.name}: left as it is ({exc.message})")
            continue
        except Exception as exc:  # whatever stopped it (a refused script, a rule, a bad row): name the list
            raise DeclaredListError(f"declared list {declared.name!r} of member list {declared.member_list!r} "
                                    f"cannot be built: {exc}") from exc
        lines.append(f"  {declared.name}: {report.identified} identified, {report.added} added, "
                     f"{report.removed} removed, {report.rejected_total} rejected")
    return lines
