"""The workspace of a record that has children through a declared reference (a major case): its
summary, its children counted by state, who needs attention, its affected customers, what was sent
to them, and its timeline, at a glance; refreshed while a job works on it. Declared per table in a
`workspace:` definition, so any application can have one."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from dataclasses import dataclass

import sqlalchemy as sa
from flask import abort, g, render_template

from ...definitions.model import TableDef, WorkspaceDef
from ...jobs.email import READY, WAITING
from ...query import All, Query, Selection, Term
from ...query.evaluate import evaluate
from ...records import AccessDenied
from ..auth import connection, records, runtime
from ..serialize import audit_names, change_words, record_name
from . import blueprint, login_required

TIMELINE_SHOWN = 40
ATTENTION_SHOWN = 10
# how often, in seconds, the workspace refreshes itself while a job works on the record, and its
# communications (less often) while e-mails about it wait for delivery or a job works on it
REFRESH_JOB, REFRESH_EMAIL = 2, 5
# ... and never more often than their own reads allow: an open workspace keeps the database busy for at most
# this share of the time. Its counts grow with the children (a major case's million children and their
# e-mails take seconds to count), and a page left open during a delivery would otherwise compete with it
READ_SHARE = 0.1


def refresh_every(base: int, took: float) -> int:
    """Seconds between two refreshes of a workspace whose reads took `took` seconds: `base`, or longer
    when the reads would take more than READ_SHARE of that."""
    return max(base, math.ceil(took / READ_SHARE))


def workspace_for(tdef: TableDef, record: dict) -> WorkspaceDef | None:
    """The workspace a record's page shows, if its table declares one and the record meets its `when`."""
    ws = runtime().defs.workspace_for(tdef.name)
    if ws is None or not record:
        return None
    if ws.when is not None and not evaluate(ws.when, record):
        return None
    return ws


def workspace_panel(tdef: TableDef, record: dict, rendered: dict, job=None, communications: bool = False) -> dict | None:
    """A record's workspace, or None. Its communications, which grow with its children's journal entries
    and e-mails, are drawn after it (`communications_part`) unless `communications` asks for them in it
    (a page without JavaScript)."""
    ws = workspace_for(tdef, record)
    if ws is None:
        return None
    started = time.perf_counter()
    service = records()
    children = runtime().defs.tables[ws.child_table]
    live = job is not None and not job.finished
    panel = {
        "ws": ws, "table": tdef.name, "sys_id": record["sys_id"], "live": live,
        "summary": [(tdef.field(name).label, _shown(rendered.get(name)), _link(tdef.field(name), record.get(name)))
                    for name in ws.summary if tdef.field(name) is not None and name in rendered],
        "age": age_words(record.get(ws.age_from) or record.get("sys_created_on")),
        "children": None, "members": None, "communications": None,
        "communications_url": communications_url(tdef.name, record["sys_id"]),
    }
    if service.can(children.name, "read"):
        panel["children"] = _children(ws, children, record["sys_id"])
    panel["members"] = _members(ws, tdef, record)
    if communications:
        panel["communications"] = _communications_panel(ws, tdef, children, record["sys_id"], live)
    panel["timeline"] = _timeline(ws, tdef, children, record)
    panel["refresh"] = refresh_every(REFRESH_JOB, time.perf_counter() - started) if live else None
    return panel


def communications_url(table: str, sys_id: str) -> str:
    return f"/ui/workspace/{table}/{sys_id}/communications"


def _communications_panel(ws: WorkspaceDef, tdef: TableDef, children: TableDef, parent_id: str, live: bool) -> dict:
    """The communications part: the counts, where it is fetched from, and how often it refreshes itself (while
    a job works on the record or e-mails about it wait; no more often than its reads allow)."""
    started = time.perf_counter()
    out = _communications(ws, tdef, children, parent_id)
    waiting = bool(out["emails"] and out["emails"]["waiting"])
    out["url"] = communications_url(tdef.name, parent_id)
    out["refresh"] = refresh_every(REFRESH_EMAIL, time.perf_counter() - started) if waiting or live else None
    out["refresh_reason"] = "while e-mails about it wait for delivery" if waiting else "while a job works on it"
    return out


def _shown(cell) -> str:
    if isinstance(cell, dict):
        return cell.get("display_value") or ""
    return "" if cell is None else str(cell)


def _link(field, value) -> str | None:
    if field is None or field.type != "reference" or not value:
        return None
    return f"/{field.reference}.do?sys_id={value}"


def age_words(since) -> str:
    """How long ago, in the largest whole unit ("3 days", "5 hours", "under a minute")."""
    if not isinstance(since, dt.datetime):
        return ""
    seconds = max(int((dt.datetime.now(dt.UTC).replace(tzinfo=None) - since).total_seconds()), 0)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return "under a minute"


@dataclass(frozen=True)
class Counted:
    total: int
    by_value: dict[str, int]  # by the grouping field's value (as text); empty without one
    flagged: int  # with the flag field true; 0 without one

    def by_choice(self, field) -> list[tuple[str, str, int]]:
        """The counts by the grouping field's choices, in their order: (value, label, how many), those
        with any."""
        return [(value, label, self.by_value[str(value)]) for value, label in field.choices
                if str(value) in self.by_value]


def counted(table: str, field: str, value: str, group_field: str | None = None, flag: str | None = None) -> Counted:
    """The records of `table` whose `field` is `value` that the user may read: how many, how many by
    `group_field`'s value, how many with the boolean `flag` true, in one statement (a major case's hundred
    thousand children are read once, not three times). Kept for the rest of the request: a form's related
    list of children and its workspace count the same records."""
    kept = g.setdefault("caseloom_counted", {})
    key = (table, field, value, group_field)
    found = kept.get(key)
    if found is not None and (flag is None or found[0] == flag):
        return found[1]
    records().table(table, "read")
    # the user's rows only; the outermost statement, so the storage's aliases, made once, serve it (`shared`)
    selection = Selection(runtime().storage, table, readable=records().readable, shared=True)
    columns = [sa.func.count()]
    if flag is not None:
        columns.append(sa.func.count().filter(selection.condition(Term(flag, "eq", True))))
    group = selection.column(group_field)[0] if group_field else None
    stmt = selection.select(*columns, *([group] if group is not None else []), where=Term(field, "eq", value))
    rows = connection().execute(stmt.group_by(group) if group is not None else stmt).all()
    result = Counted(total=sum(r[0] for r in rows),
                     by_value={str(r[-1]): r[0] for r in rows} if group is not None else {},
                     flagged=sum(r[1] for r in rows) if flag is not None else 0)
    kept[key] = (flag, result)
    return result


def _children(ws: WorkspaceDef, children: TableDef, parent_id: str) -> dict:
    """The children counted by their lifecycle state, and those flagged as needing attention (one
    statement for the counts, with the reader's access; the flagged ones read when there are any)."""
    service = records()
    where = Term(ws.children, "eq", parent_id)
    lifecycle = runtime().defs.lifecycle(children.name)
    counts = counted(children.name, ws.children, parent_id, lifecycle.field if lifecycle else None, ws.attention)
    total = counts.total
    out = {"total": total, "label": children.label, "by_state": [], "attention": [], "attention_total": 0,
           "list_url": f"/{children.name}_list.do?sysparm_query={ws.children}={parent_id}"}
    if lifecycle is not None and total:
        out["by_state"] = [(label, n, f"{out['list_url']}^{lifecycle.field}={value}")
                           for value, label, n in counts.by_choice(children.field(lifecycle.field))]
    if ws.attention and total:
        out["attention_total"] = counts.flagged
        out["attention_url"] = f"{out['list_url']}^{ws.attention}=true"
    if ws.attention and counts.flagged:
        flagged = Query(All((where, Term(ws.attention, "eq", True))), (("sys_updated_on", True),))
        shown = [c for c in ("number", children.display) if c and children.field(c) is not None]
        rows = service.query(children.name, flagged, ["sys_id", *dict.fromkeys(shown)], ATTENTION_SHOWN)
        out["attention"] = [{"sys_id": r["sys_id"], "name": record_name(children, r),
                             "url": f"/{children.name}.do?sys_id={r['sys_id']}"} for r in rows]
    return out


def _members(ws: WorkspaceDef, tdef: TableDef, record: dict) -> dict | None:
    """Whom the record concerns (CSM: the affected customers): the member list it names, how many, a link."""
    if not ws.members:
        return None
    field = tdef.field(ws.members)
    heading = ws.members_label or field.label
    if not record.get(ws.members):
        return {"missing": True, "heading": heading, "label": field.label}
    from .members import member_panel

    target = runtime().defs.tables[field.reference]
    try:
        listed = records().get(target.name, record[ws.members])
    except AccessDenied:
        return None
    if listed is None:
        return None
    members = member_panel(target.name, listed)
    return {"missing": False, "heading": heading, "label": field.label, "name": record_name(target, listed),
            "url": f"/{target.name}.do?sys_id={listed['sys_id']}", "count": members["count"] if members else None}


def _communications(ws: WorkspaceDef, tdef: TableDef, children: TableDef, parent_id: str) -> dict | None:
    """What reached customers: the record's entries in its communication journal fields, and the
    e-mails about it and its children, by state (delivered, failed, waiting: of which retrying after
    a temporary failure; bounced and the rest by their label)."""
    defs, service = runtime().defs, records()
    out = {"entries": [], "emails": None}
    child_rows = runtime().storage.physical(children.name)
    kids = sa.select(child_rows.c.sys_id).where(child_rows.c[ws.children] == parent_id)  # the children's ids
    if ws.communications:
        journal = runtime().storage.physical("sys_journal_field")
        stmt = (sa.select(journal.c.element, sa.func.count())  # on the record and on its children
                .where(sa.or_(journal.c.element_id == parent_id, journal.c.element_id.in_(kids)),
                       journal.c.name.in_({*defs.lineage(tdef.name), *defs.lineage(children.name)}),
                       journal.c.element.in_(ws.communications))
                .group_by(journal.c.element))
        counts = dict(connection().execute(stmt).all())
        out["entries"] = [(tdef.field(name).label, counts.get(name, 0)) for name in ws.communications]
    if "sys_email" in defs.tables and service.can(children.name, "read"):  # as the activity stream shows them
        email = runtime().storage.physical("sys_email")
        tried = sa.func.sum(sa.case((email.c.attempts > 0, 1), else_=0))  # a ready one tried before: retrying
        stmt = (sa.select(email.c.state, sa.func.count(), tried)
                .where(sa.or_(email.c.instance == parent_id, email.c.instance.in_(kids)))
                .group_by(email.c.state))
        found = connection().execute(stmt).all()
        by_state = {state: n for state, n, _ in found}
        states = defs.tables["sys_email"].field("state")
        sent = by_state.pop("sent", 0)
        failed = by_state.pop("error", 0)
        total = sent + failed + sum(by_state.values())
        out["emails"] = {"total": total, "sent": sent, "failed": failed,
                         "waiting": sum(n for s, n in by_state.items() if s in WAITING),
                         "retrying": sum(int(t or 0) for s, _, t in found if s == READY),
                         "other": [(states.choice_label(s) or s, n) for s, n in by_state.items() if s not in WAITING]}
    return out


def _timeline(ws: WorkspaceDef, tdef: TableDef, children: TableDef, record: dict) -> list[dict]:
    """What happened, oldest first: created; each save that changed a timeline field (who, what, from
    what to what, in words); children added (grouped per save); the jobs that worked on it."""
    defs = runtime().defs
    audit = runtime().storage.physical("sys_audit")
    events = [{"when": record.get("sys_created_on"), "who": record.get("sys_created_by"),
               "what": f"{tdef.label} {record_name(tdef, record)} created", "rank": 0}]
    readable = [f for f in ws.timeline if records().can_read_field(tdef.name, f, record)]
    moments: dict[str, dict] = {}
    for name in readable:  # a date-time field is a moment of its own ("Proposed on" -> "Proposed")
        field = tdef.field(name)
        if field.type in ("datetime", "date") and record.get(name):
            when = record[name]
            if not isinstance(when, dt.datetime):  # a date: its day's start, to sort among the moments of the others
                when = dt.datetime.combine(when, dt.time())
            moments[name] = {"when": when, "who": "", "what": re.sub(r" (on|at)$", "", field.label), "rank": 1}
    events.extend(moments.values())
    if ws.timeline:
        rows = list(connection().execute(
            sa.select(audit.c.fieldname, audit.c.oldvalue, audit.c.newvalue, audit.c.user, audit.c.sys_created_on,
                      audit.c.record_checkpoint)
            .where(audit.c.documentkey == record["sys_id"], audit.c.tablename.in_(defs.lineage(tdef.name)),
                   audit.c.fieldname.in_(readable))
            .order_by(audit.c.sys_created_on.desc()).limit(TIMELINE_SHOWN * 3)).mappings())
        names = audit_names(records(), tdef, rows)
        saves: dict[tuple, list] = {}
        for r in rows:
            saves.setdefault((r["record_checkpoint"], r["user"]), []).append(r)
        for (_, who), changes in saves.items():
            told = []
            for r in changes:
                moment = moments.get(r["fieldname"])
                if moment is not None and r["oldvalue"] in (None, ""):  # a moment set: its own line names who
                    moment["who"] = moment["who"] or who
                else:
                    told.append(r)
            parts = [change_words(tdef, r, names) for r in sorted(told, key=lambda r: ws.timeline.index(r["fieldname"]))]
            if parts:
                events.append({"when": changes[0]["sys_created_on"], "who": who, "what": "; ".join(parts)})
    when = sa.func.min(audit.c.sys_created_on)
    added = list(connection().execute(  # one line per unit of work (an action adding several is one)
        sa.select(audit.c.user, when, sa.func.count())
        .where(audit.c.fieldname == ws.children, audit.c.newvalue == record["sys_id"],  # its partial index's rows
               audit.c.tablename.in_(runtime().storage.children_audited(ws)))
        .group_by(audit.c.user, audit.c.transaction)
        .order_by(when.desc()).limit(TIMELINE_SHOWN)))
    for who, when, n in added:
        noun = children.label.lower()
        events.append({"when": when, "who": who,
                       "what": f"1 {noun} added as a child" if n == 1 else f"{n} {noun}s added as children"})
    jobs = runtime().storage.internal("sys_job")
    for job in connection().execute(
            sa.select(jobs).where(jobs.c.target_table.in_(defs.lineage(tdef.name)),
                                  jobs.c.target_sys_id == record["sys_id"])
            .order_by(jobs.c.created_on.desc()).limit(TIMELINE_SHOWN)).mappings():
        label = _job_label(tdef, job["name"])
        events.append({"when": job["created_on"], "who": job["created_by"], "what": f"{label} started"})
        if job["state"] not in ("queued", "running"):
            events.append({"when": job["updated_on"], "who": job["created_by"],
                           "what": f"{label} {job['state']}" + (f": {job['message']}" if job["message"] else "")})
    events = [e for e in events if e["when"] is not None]
    # in the second it happened (a moment is kept in whole seconds): the record's creation, then its moments, then
    # the rest as they happened
    return sorted(events, key=lambda e: (e["when"].replace(microsecond=0), e.get("rank", 2), e["when"]))[-TIMELINE_SHOWN:]


def _job_label(tdef: TableDef, name: str) -> str:
    if name.startswith("action:"):
        action = runtime().defs.action(tdef.name, name.removeprefix("action:"))
        if action is not None:
            return action.label
    return name.replace("_", " ").capitalize()


def _shown_record(table: str, sys_id: str):
    """What a workspace's routes show: the record's table (its class), the record as its page loads it, and
    the job working on it. 404 for no such table or record, 403 when the user may not read the table."""
    from .forms import _load
    from .lists import readable_table
    from .members import running_job

    rendered, record = _load(readable_table(table), sys_id)
    tdef = runtime().defs.tables.get(record.get("sys_class_name"), runtime().defs.tables[table])
    return tdef, rendered, record, running_job(tdef.name, sys_id)


@blueprint.get("/ui/workspace/<table>/<sys_id>")
@login_required
def workspace_part(table: str, sys_id: str):
    """The workspace alone (htmx refreshes it while a job works on the record, and when it ends)."""
    tdef, rendered, record, job = _shown_record(table, sys_id)
    panel = workspace_panel(tdef, record, rendered, job)
    if panel is None:
        abort(404)
    return render_template("_workspace.html", workspace=panel)


@blueprint.get("/ui/workspace/<table>/<sys_id>/communications")
@login_required
def communications_part(table: str, sys_id: str):
    """A workspace's communications alone: drawn after the page (they count every journal entry and
    e-mail of the children), and refreshed by themselves while e-mails wait or a job works on the record."""
    tdef, _, record, job = _shown_record(table, sys_id)
    ws = workspace_for(tdef, record)
    if ws is None:
        abort(404)
    comms = _communications_panel(ws, tdef, runtime().defs.tables[ws.child_table], record["sys_id"],
                                  job is not None and not job.finished)
    return render_template("_ws_communications.html", comms=comms)


# -- the list view of a workspace (`sysparm_view=NAME`, named by menu modules' `view:`) ---------------

@dataclass(frozen=True)
class Computed:
    """A column the workspace computes: how many children a row has, or its age."""

    name: str
    label: str
    computed: bool = True


COMPUTED_COLUMNS = {"children": "Children", "age": "Age"}


def list_view_of(tdef: TableDef, view: str | None) -> WorkspaceDef | None:
    """The workspace whose list view `sysparm_view` names, when it is one of this table's lineage."""
    defs = runtime().defs
    ws = defs.workspaces.get(view or "")
    if ws is None or ws.table not in (tdef.name, *defs.ancestors(tdef.name)):
        return None
    return ws


def view_columns(ws: WorkspaceDef) -> tuple[list[str], list[str]]:
    """(the view's stored columns the reader may see, all its columns in order, computed ones included)."""
    service = records()
    fields = [c for c in ws.columns if c not in COMPUTED_COLUMNS and service.can_read_path(ws.table, c)]
    return fields, [c for c in ws.columns if c in COMPUTED_COLUMNS or c in fields]


def computed_cells(ws: WorkspaceDef, raw_rows: list[dict]) -> dict[str, dict[str, str]]:
    """sys_id -> {column: text} for the view's computed columns, for one page of rows: the children
    counted in one GROUP BY (with the reader's access to the children's table), the age in words."""
    out: dict[str, dict[str, str]] = {r["sys_id"]: {} for r in raw_rows}
    if "children" in ws.columns and raw_rows:
        service = records()
        counts: dict[str, int] = {}
        if service.can(ws.child_table, "read"):
            selection = Selection(runtime().storage, ws.child_table, readable=service.readable, shared=True)
            column, _ = selection.column(ws.children)
            stmt = selection.select(column, sa.func.count(),
                                    where=Term(ws.children, "in", [r["sys_id"] for r in raw_rows])).group_by(column)
            counts = {str(parent): n for parent, n in connection().execute(stmt)}
        for sys_id in out:
            out[sys_id]["children"] = str(counts.get(sys_id, 0))
    if "age" in ws.columns:
        for r in raw_rows:
            out[r["sys_id"]]["age"] = age_words(r.get(ws.age_from) or r.get("sys_created_on"))
    return out
