"""Effects over member lists: refresh a list, create one child record per member, refuse a write.

Registered in the same effect registry as every other primitive (see effects.py).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .definitions.tables import resolve_path
from .effects import EffectContext, effect
from .memberlists import BATCH, lists_for
from .query import Selection
from .records import RecordError


@effect("refuse", "Refuse the write with a message naming a field (in before-rules).")
def _refuse(ctx: EffectContext, args: dict) -> None:
    raise RecordError(args.get("field"), ctx.render(args["message"]))


def _check_refresh(tables, table, args) -> list[str]:
    return [] if args in (None, {}, True) else ["takes no arguments: refresh_members: {}"]


@effect("refresh_members", "Re-evaluate a member list's condition or script: dynamic members follow it, "
                           "members added by hand or import stay.", _check_refresh)
def _refresh_members(ctx: EffectContext, args: Any) -> None:
    report = lists_for(ctx.service, ctx.table.name).refresh(ctx.record["sys_id"])
    ctx.result.update(report.as_dict())
    ctx.messages.append(f"{report.identified} identified, {report.added} added, {report.removed} removed, "
                        f"{report.rejected_total} rejected")


def _check_children_from_list(tables, table, args) -> list[str]:
    if not isinstance(args, dict) or not {"list_field", "reference", "member_fields"} <= set(args):
        return ["expected {list_field, reference, member_fields: {type: child field}, values, lookups, journal, lock}"]
    problems = []
    for name in [args["list_field"], args["reference"], *args["member_fields"].values(), *args.get("values", {}),
                 *args.get("lookups", {}), *args.get("journal", {})]:
        if resolve_path(tables, table, name) is None:
            problems.append(f"{name!r} is not a field of {table.name!r}")
    return problems


@effect("create_children_from_list", "Create one child record per member of the list this record points at "
                                     "(never two for one member, even when run again or after a crash), "
                                     "streamed in batches with progress; set-based inserts through the write path.",
        _check_children_from_list)
def _create_children_from_list(ctx: EffectContext, args: dict) -> None:
    service = ctx.service
    list_id = ctx.record.get(args["list_field"])
    if not list_id:
        raise RecordError(args["list_field"], "no list is attached")
    list_table = ctx.table.field(args["list_field"]).reference
    lists = lists_for(service, list_table)
    mtype = lists.mtype(lists.record(list_id))
    member_field = args["member_fields"].get(mtype.name)
    if member_field is None:
        raise RecordError(args["list_field"], f"lists of type {mtype.name} cannot make children here "
                                              f"(types: {', '.join(args['member_fields'])})")
    values = {k: ctx.render(v) for k, v in (args.get("values") or {}).items()}
    for name in args.get("copy_fields", []) + _property_fields(ctx, args):
        f = ctx.table.field(name)
        if f is not None and f.stored and not f.system and name not in values:
            values[name] = ctx.record.get(name)
    journal = {k: ctx.render(v) for k, v in (args.get("journal") or {}).items()}
    journal = {k: v for k, v in journal.items() if v}
    lookups = {child: path for child, path in (args.get("lookups") or {}).items()
               if path.split(".")[0] == member_field}
    done = 0
    total = _remaining(ctx, args, list_id, mtype, member_field)
    progress = ctx.progress
    shared = {**values, **journal, args["reference"]: ctx.record["sys_id"]}
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
            rows = [{**shared, member_field: member, **{child: found for child, found in extra.items() if found}}
                    for member, extra in batch]
            # the members and their looked-up values were just read from the database
            service.insert_many(ctx.table.name, rows, batch=BATCH, known_references=(member_field, *lookups))
            added = len(rows)
        done += added
        if progress is not None:
            service = progress(done, total) or service  # a background job commits here and goes on in a new unit
            ctx.service = service
    if args.get("lock") and not service.get(list_table, list_id).get(args["lock"]):  # a re-run finds it locked
        service.update(list_table, list_id, {args["lock"]: True})
    ctx.result["children_created"] = done
    ctx.messages.append(f"{done} child records created")


def _property_fields(ctx: EffectContext, args: dict) -> list[str]:
    name = args.get("copy_fields_property")
    return list(ctx.properties(name)) if name and ctx.properties else []


def _remaining(ctx, args, list_id, mtype, member_field) -> int:
    """Members of the list with no child of this record yet (the work left, for progress)."""
    storage = ctx.service.storage
    members = storage.physical(mtype.members)
    children = storage.physical(ctx.table.name)
    has_child = sa.exists().where(children.c[args["reference"]] == ctx.record["sys_id"],
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
    has_child = sa.exists().where(children.c[args["reference"]] == ctx.record["sys_id"],
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
        children.c[args["reference"]] == ctx.record["sys_id"], children.c[member_field].in_(ids))).scalars())
    return [(r["member"], {k: r[k] for k in lookups}) for r in rows if r["member"] not in done], ids[-1]
