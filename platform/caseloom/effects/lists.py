"""Running the effects over member lists: refresh a list, create one child record per member, refuse a write.

Declared with the other built-in effects in builtin.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..bulk import refresh_if_stale
from ..memberlists import BATCH, lists_for
from ..query import Selection
from ..records import RecordError, RecordService
from ..setinsert import tell_inserted
from ..setwrite import sys_id_prefix
from ..slicing import bounds, decode, encode, worth_slicing
from .builtin import ChildrenFromListArgs, NoArgs, RefuseArgs
from .run import EffectContext


def refuse(ctx: EffectContext, args: RefuseArgs) -> None:
    raise RecordError(args.field, ctx.render(args.message))


def refresh_members(ctx: EffectContext, args: NoArgs) -> None:
    report = lists_for(ctx.service, ctx.table.name).refresh(ctx.record["sys_id"])
    ctx.result.update(report.as_dict())
    ctx.messages.append(f"{report.identified} identified, {report.added} added, {report.removed} removed, "
                        f"{report.rejected_total} rejected")


@dataclass(frozen=True)
class Children:
    """One record's children for the members of one list: all a batch, or a slice job, needs."""

    table: str  # the children's table
    parent: str  # the record's sys_id
    reference: str  # the child field that refers to the record
    list_table: str
    list_id: str
    member_field: str  # the child field that takes the member
    lookups: dict[str, str]  # child field -> path from the member field
    shared: dict[str, Any]  # the values every child gets

    def params(self) -> dict[str, Any]:
        return {"table": self.table, "parent": self.parent, "reference": self.reference, "list_table": self.list_table,
                "list_id": self.list_id, "member_field": self.member_field, "lookups": self.lookups,
                "shared": encode(self.shared)}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Children:
        return cls(params["table"], params["parent"], params["reference"], params["list_table"], params["list_id"],
                   params["member_field"], dict(params["lookups"]), decode(params["shared"]))


def create_children_from_list(ctx: EffectContext, args: ChildrenFromListArgs) -> None:
    service = ctx.service
    list_id = ctx.record.get(args.list_field)
    if not list_id:
        raise RecordError(args.list_field, "no list is attached")
    lists = lists_for(service, args.list_table)
    mtype = lists.mtype(lists.record(list_id))
    member_field = dict(args.member_fields).get(mtype.name)
    if member_field is None:
        raise RecordError(args.list_field, f"lists of type {mtype.name} cannot make children here "
                                           f"(types: {', '.join(t for t, _ in args.member_fields)})")
    values = ctx.rendered(args.values)
    for name in [*args.copy_fields, *_property_fields(ctx, args)]:
        f = ctx.table.field(name)
        if f is not None and f.stored and not f.system and name not in values:
            values[name] = ctx.record.get(name)
    journal = {k: v for k, v in ((name, ctx.render(text)) for name, text in args.journal) if v}
    lookups = {child: path for child, path in args.lookups if path.split(".")[0] == member_field}
    spec = Children(ctx.table.name, ctx.record["sys_id"], args.reference, args.list_table, list_id, member_field,
                    lookups, {**values, **journal, args.reference: ctx.record["sys_id"]})
    for table in (service.storage.physical(spec.table), _members(service, mtype)):
        refresh_if_stale(service.conn, table)  # a re-run counts what other workers made: plan on it
    total = remaining_members(service, spec, mtype)
    slicer, key = ctx.slicer, f"slices:{list_id}"
    # once planned, always in slices: a re-run must not do a range a slice may be doing now
    if slicer is not None and (slicer.planned(key) or worth_slicing(service.conn, total, slicer.size)):
        members = _members(service, mtype)
        where = members.c[mtype.list_field] == list_id
        done = slicer.run_slices(SLICE, key, spec.params(),
                                 lambda: bounds(service.conn, members.c[mtype.member_field], where, slicer.size), total)
        service = ctx.service = slicer.service
    else:  # a re-run's counts go on from what its earlier runs did
        done = ctx.earlier
        total += done
        progress = ctx.progress

        def batch_done(added: int) -> None:
            nonlocal done
            done += added
            if progress is not None:
                ctx.service = progress(done, total) or ctx.service  # a background job commits here

        fill_children(service, spec, mtype, "", None, batch_done)
        service = ctx.service
    if args.lock and not service.get(args.list_table, list_id).get(args.lock):  # a re-run finds it locked
        service.update(args.list_table, list_id, {args.lock: True})
    ctx.result["children_created"] = done
    ctx.messages.append(f"{done} child records created")


SLICE = "children_from_list"  # the slice kind (caseloom.jobs.slices.KINDS, run by caseloom.jobs.children)


def fill_children(service: RecordService, spec: Children, mtype, after: str, end: str | None,
          batch_done: Callable[[int], None]) -> None:
    """Create the children of the members in (after, end] (end None: to the last) that have none yet,
    batch by batch, calling batch_done(n) after each (a background job commits there). Set-based
    (INSERT ... SELECT) unless the table needs each row in Python; then row by row in batches."""
    set_based = True  # until the table says its rows need Python one by one
    while True:  # a keyset cursor over the members: each batch starts where the last one stopped
        if set_based:
            upto = _slice_end(service, spec, mtype, after, end)
            if upto is None:
                break
            select, count, fields, order = _members_select(service, spec, mtype, after, upto)
            # the members and their looked-up values are read from the database by the INSERT itself
            added = service.insert_select(spec.table, spec.shared, select, fields, source=_members(service, mtype),
                                          order_by=order, count=count)
            if added is None:
                set_based = False
                continue
            after = upto
        else:
            batch, after = _next_members(service, spec, mtype, after, end)
            if after is None:
                break
            if not batch:
                continue
            prefix = sys_id_prefix()  # the batch's sys_ids share it, as a set-based insert's do: a job can undo it
            rows = [{**spec.shared, "sys_id": f"{prefix}{i:012x}", spec.member_field: member,
                     **{child: found for child, found in extra.items() if found}}
                    for i, (member, extra) in enumerate(batch, 1)]
            # the members and their looked-up values were just read from the database
            service.insert_many(spec.table, rows, batch=BATCH, known_references=(spec.member_field, *spec.lookups))
            added = len(rows)
            tell_inserted(service.conn, spec.table, prefix, added)
        batch_done(added)


def _property_fields(ctx: EffectContext, args: ChildrenFromListArgs) -> list[str]:
    name = args.copy_fields_property
    return list(ctx.properties(name)) if name and ctx.properties else []


def _in_range(column: sa.ColumnElement, after: str, end: str | None) -> sa.ColumnElement:
    return column > after if end is None else sa.and_(column > after, column <= end)


def _has_child(children: sa.Table, spec: Children, member: sa.ColumnElement, after: str,
               end: str | None) -> sa.Exists:
    """Whether `member` has a child of this record already. The children are looked for in the
    members' own range too: whatever plan the database picks, it reads only the children of that
    range (none, unless a job resumes), never every child made so far. Statistics taken before
    the job estimate the record's children at one row, and a nested loop over all of them for each
    member made the 100,000 children of the bench take two minutes instead of six seconds."""
    field = children.c[spec.member_field]
    return sa.exists().where(children.c[spec.reference] == spec.parent, field == member, _in_range(field, after, end))


def remaining_members(service: RecordService, spec: Children, mtype, after: str = "", end: str | None = None) -> int:
    """Members of the list in (after, end] with no child of this record yet (the work left, for progress)."""
    storage = service.storage
    members = storage.physical(mtype.members)
    children = storage.physical(spec.table)
    member = members.c[mtype.member_field]
    stmt = sa.select(sa.func.count()).select_from(members).where(
        members.c[mtype.list_field] == spec.list_id, _in_range(member, after, end),
        ~_has_child(children, spec, member, after, end))
    return service.conn.execute(stmt).scalar_one()


SET_BATCH = 20_000  # members per INSERT ... SELECT: progress and commits about once a second
MADE_BY_VALUE = 20_000  # a batch's members with a child already, left out as values (bound parameters) up to this


def _members(service: RecordService, mtype) -> sa.Table:
    return service.storage.physical(mtype.members)


def _slice_end(service: RecordService, spec: Children, mtype, after: str, end: str | None) -> str | None:
    """The member that ends the next batch of SET_BATCH members in (after, end] (None: no more)."""
    members = _members(service, mtype)
    member = members.c[mtype.member_field]
    where = sa.and_(members.c[mtype.list_field] == spec.list_id, _in_range(member, after, end))
    conn = service.conn
    return (conn.execute(sa.select(member).where(where).order_by(member).offset(SET_BATCH - 1).limit(1)).scalar()
            or conn.execute(sa.select(sa.func.max(member)).where(where)).scalar())


def _members_select(service: RecordService, spec: Children, mtype, after: str, upto: str):
    """SELECT of the members in (after, upto] with no child of this record yet, and the values
    their children take from them: the member, then each lookup; with a count of those rows
    (an upper bound), the fields and the order.

    The range's children are read first, in one scan of the children's index: only the range of a
    resumed job, a re-run or records made children by hand has any. Their members are left out by
    value (NOT IN a list, which PostgreSQL hashes and SQLite indexes), so the INSERT ... SELECT
    never reads the children's index while it writes to it. Looked for in the same statement
    (NOT EXISTS), on statistics that knew no member, the planner looped over the members with a
    scan of the range's children, the rows being inserted among them: invisible to the statement
    but read, 53.5 s for a batch of 20,000 instead of half a second. More than MADE_BY_VALUE
    children in the range (a parameter per value) are left out by the NOT EXISTS still.

    The members' own rows are counted (their numbers are reserved for that many), not the join
    with their table: the same rows but for a member whose record is gone, read from the members'
    index alone. The join is told the range on the members' table too (the member is its key): on
    PostgreSQL's default costs the planner hashed every row of that table, a million of them, for
    each batch of 20,000 members, in the count and in the INSERT."""
    storage = service.storage
    members = _members(service, mtype)
    member = members.c[mtype.member_field]
    target = Selection(storage, mtype.table)
    children = storage.physical(spec.table)
    columns, fields = [member], [spec.member_field]
    for child, path in spec.lookups.items():
        columns.append(target.column(path.split(".", 1)[1])[0])
        fields.append(child)
    where = [members.c[mtype.list_field] == spec.list_id, member > after, member <= upto]
    field = children.c[spec.member_field]
    made = service.conn.execute(sa.select(field).where(children.c[spec.reference] == spec.parent,
                                                       _in_range(field, after, upto)).limit(MADE_BY_VALUE + 1)).scalars().all()
    if len(made) > MADE_BY_VALUE:
        where.append(~_has_child(children, spec, member, after, upto))
    elif made:
        where.append(member.not_in(sorted(set(made))))
    count = sa.select(sa.func.count()).select_from(members).where(*where)
    key = target.base.c.sys_id
    select = (sa.select(*columns)
              .select_from(members.join(target.from_clause, key == member))
              .where(*where, key > after, key <= upto))
    return select, count, fields, member


def _next_members(service: RecordService, spec: Children, mtype, after: str, end: str | None
                  ) -> tuple[list[tuple[str, dict]], str | None]:
    """The next batch of members in (after, end] (keyset on the member's sys_id) without a child of
    this record yet, and where the batch ended (None when the range is done). Checking the batch
    against existing children makes the effect idempotent and resumable: a re-run skips what is done."""
    storage, conn = service.storage, service.conn
    members = storage.physical(mtype.members)
    target = Selection(storage, mtype.table)
    member = members.c[mtype.member_field]
    columns = [member.label("member")]
    for child, path in spec.lookups.items():
        columns.append(target.column(path.split(".", 1)[1])[0].label(child))
    stmt = (sa.select(*columns)
            .select_from(members.join(target.from_clause, target.base.c.sys_id == member))
            .where(members.c[mtype.list_field] == spec.list_id, _in_range(member, after, end))
            .order_by(member).limit(BATCH))
    rows = conn.execute(stmt).mappings().all()
    if not rows:
        return [], None
    children = storage.physical(spec.table)
    ids = [r["member"] for r in rows]
    done = set(conn.execute(sa.select(children.c[spec.member_field]).where(
        children.c[spec.reference] == spec.parent, children.c[spec.member_field].in_(ids))).scalars())
    return [(r["member"], {k: r[k] for k in spec.lookups}) for r in rows if r["member"] not in done], ids[-1]
