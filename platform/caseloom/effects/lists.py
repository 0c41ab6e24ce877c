"""Running the effects over member lists: refresh a list, create one child record per member, refuse a write.

Declared with the other built-in effects in builtin.py.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..memberlists import BATCH, lists_for
from ..query import Selection
from ..records import RecordError
from ..setinsert import tell_inserted
from ..setwrite import sys_id_prefix
from .builtin import ChildrenFromListArgs, NoArgs, RefuseArgs
from .run import EffectContext


def refuse(ctx: EffectContext, args: RefuseArgs) -> None:
    raise RecordError(args.field, ctx.render(args.message))


def refresh_members(ctx: EffectContext, args: NoArgs) -> None:
    report = lists_for(ctx.service, ctx.table.name).refresh(ctx.record["sys_id"])
    ctx.result.update(report.as_dict())
    ctx.messages.append(f"{report.identified} identified, {report.added} added, {report.removed} removed, "
                        f"{report.rejected_total} rejected")


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
    done = 0
    total = _remaining(ctx, args, list_id, mtype, member_field)
    progress = ctx.progress
    shared = {**values, **journal, args.reference: ctx.record["sys_id"]}
    set_based = True  # until the table says its rows need Python one by one
    after = ""  # a keyset cursor over the members: each batch starts where the last one stopped
    while True:
        if set_based:
            upto = _slice_end(ctx, list_id, mtype, after)
            if upto is None:
                break
            select, fields, order = _members_select(ctx, args, list_id, mtype, member_field, lookups, after, upto)
            # the members and their looked-up values are read from the database by the INSERT itself
            added = service.insert_select(ctx.table.name, shared, select, fields, source=_members(ctx, mtype),
                                          order_by=order)
            if added is None:
                set_based = False
                continue
            after = upto
        else:
            batch, after = _next_members(ctx, args, list_id, mtype, member_field, lookups, after)
            if after is None:
                break
            if not batch:
                continue
            prefix = sys_id_prefix()  # the batch's sys_ids share it, as a set-based insert's do: a job can undo it
            rows = [{**shared, "sys_id": f"{prefix}{i:012x}", member_field: member,
                     **{child: found for child, found in extra.items() if found}}
                    for i, (member, extra) in enumerate(batch, 1)]
            # the members and their looked-up values were just read from the database
            service.insert_many(ctx.table.name, rows, batch=BATCH, known_references=(member_field, *lookups))
            added = len(rows)
            tell_inserted(service.conn, ctx.table.name, prefix, added)
        done += added
        if progress is not None:
            service = progress(done, total) or service  # a background job commits here and goes on in a new unit
            ctx.service = service
    if args.lock and not service.get(args.list_table, list_id).get(args.lock):  # a re-run finds it locked
        service.update(args.list_table, list_id, {args.lock: True})
    ctx.result["children_created"] = done
    ctx.messages.append(f"{done} child records created")


def _property_fields(ctx: EffectContext, args: ChildrenFromListArgs) -> list[str]:
    name = args.copy_fields_property
    return list(ctx.properties(name)) if name and ctx.properties else []


def _remaining(ctx, args, list_id, mtype, member_field) -> int:
    """Members of the list with no child of this record yet (the work left, for progress)."""
    storage = ctx.service.storage
    members = storage.physical(mtype.members)
    children = storage.physical(ctx.table.name)
    has_child = sa.exists().where(children.c[args.reference] == ctx.record["sys_id"],
                                  children.c[member_field] == members.c[mtype.member_field])
    stmt = sa.select(sa.func.count()).select_from(members).where(members.c[mtype.list_field] == list_id, ~has_child)
    return ctx.service.conn.execute(stmt).scalar_one()


SET_BATCH = 20_000  # members per INSERT ... SELECT: progress and commits about once a second


def _members(ctx, mtype) -> sa.Table:
    return ctx.service.storage.physical(mtype.members)


def _slice_end(ctx, list_id, mtype, after: str) -> str | None:
    """The member that ends the next slice of SET_BATCH members after `after` (None: no more)."""
    members = _members(ctx, mtype)
    member = members.c[mtype.member_field]
    base = sa.select(member).where(members.c[mtype.list_field] == list_id, member > after).order_by(member)
    conn = ctx.service.conn
    return (conn.execute(base.offset(SET_BATCH - 1).limit(1)).scalar()
            or conn.execute(sa.select(sa.func.max(member)).where(members.c[mtype.list_field] == list_id,
                                                                 member > after)).scalar())


def _members_select(ctx, args, list_id, mtype, member_field, lookups, after: str, upto: str):
    """SELECT of the members in (after, upto] with no child of this record yet, and the values
    their children take from them: the member, then each lookup."""
    storage = ctx.service.storage
    members = _members(ctx, mtype)
    member = members.c[mtype.member_field]
    target = Selection(storage, mtype.table)
    children = storage.physical(ctx.table.name)
    columns, fields = [member], [member_field]
    for child, path in lookups.items():
        columns.append(target.column(path.split(".", 1)[1])[0])
        fields.append(child)
    has_child = sa.exists().where(children.c[args.reference] == ctx.record["sys_id"],
                                  children.c[member_field] == member)
    select = (sa.select(*columns)
              .select_from(members.join(target.from_clause, target.base.c.sys_id == member))
              .where(members.c[mtype.list_field] == list_id, member > after, member <= upto, ~has_child))
    return select, fields, member


def _next_members(ctx, args, list_id, mtype, member_field, lookups, after: str
                  ) -> tuple[list[tuple[str, dict]], str | None]:
    """The next slice of members (keyset on the member's sys_id) without a child of this record yet,
    and where the slice ended (None when the list is done). Checking the slice against existing
    children makes the effect idempotent and resumable: a re-run skips what is done."""
    storage, conn = ctx.service.storage, ctx.service.conn
    members = storage.physical(mtype.members)
    target = Selection(storage, mtype.table)
    columns = [members.c[mtype.member_field].label("member")]
    for child, path in lookups.items():
        columns.append(target.column(path.split(".", 1)[1])[0].label(child))
    stmt = (sa.select(*columns)
            .select_from(members.join(target.from_clause, target.base.c.sys_id == members.c[mtype.member_field]))
            .where(members.c[mtype.list_field] == list_id, members.c[mtype.member_field] > after)
            .order_by(members.c[mtype.member_field]).limit(BATCH))
    rows = conn.execute(stmt).mappings().all()
    if not rows:
        return [], None
    children = storage.physical(ctx.table.name)
    ids = [r["member"] for r in rows]
    done = set(conn.execute(sa.select(children.c[member_field]).where(
        children.c[args.reference] == ctx.record["sys_id"], children.c[member_field].in_(ids))).scalars())
    return [(r["member"], {k: r[k] for k in lookups}) for r in rows if r["member"] not in done], ids[-1]
