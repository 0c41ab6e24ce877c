"""Alert rules at work (definitions kind `alert_rules`): what the alerts a batch of events opened or
changed make for the people they affect, and what an alert's clearing does to what it made.

For the alerts that are open and not yet linked, rule by rule (set-based: one query for the rule's
condition, one for the distinct `who` of the `affected` table's records on their nodes), the first
rule whose condition an alert meets and whose nodes someone uses makes its record. With at least the
threshold of them the rule creates its `major` record, with a member list of exactly them on its
`list` field (members added by hand, so the list stays what the alert found) and then runs its
action (CSM: create_child_cases, a job); with fewer, its `single` record for each. The (first) record
goes in the alert's `link` field, so a later event on the alert makes nothing more; a make's
`alert_field` refers each record back to the alert. An alert a batch closed gives every record it made
(the linked one and those referring back to it) the `cleared` journal entry and runs the `cleared`
action (refused: a work note says why). All as the system (the sender of events holds none of the roles
the actions need), in the batch's transaction: nothing half made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .access import SYSTEM
from .database import dict_rows, one_of
from .definitions.model import AlertMake, AlertRuleDef
from .query import All, Selection, Term
from .records import RecordService, now
from .templates import render_value

if TYPE_CHECKING:
    from .properties import Properties

ALERTS = "em_alert"
CLOSED = "Closed"


def apply_alert_rules(service: RecordService, props: Properties, opened: list[str], closed: list[str]) -> list[str]:
    """Run the alert rules on the alerts a batch opened or changed (`opened`: still open; `closed`: closed
    by it); returns the ids of the jobs the actions started, for the caller to enqueue after commit."""
    rules = service.defs.alert_rules
    if not rules or not (opened or closed):
        return []
    system = RecordService(service.storage, service.conn, SYSTEM, automation=service.automation,
                           set_based=service.set_based)
    system.scripts_dir = service.scripts_dir
    jobs: list[str] = []
    links = tuple(dict.fromkeys(rule.link for rule in rules))
    alerts = _alerts(system, opened + closed, ("sys_id", "state", "node", *links))  # what choosing reads
    cleared = [a for a in alerts if a["state"] == CLOSED and a["sys_id"] in closed and any(a.get(k) for k in links)]
    whole = _whole(system, cleared)  # the alerts a record is made or cleared for: all their values, for templates
    made = {rule.name: _made_by(system, rule, [a for a in cleared if a.get(rule.link)]) for rule in rules}
    for alert in cleared:  # cleared first: what an alert made hears of its clearing
        for rule in rules:
            for table, record in made[rule.name].get(alert["sys_id"], ()):
                jobs += _cleared(system, rule, whole[alert["sys_id"]], table, record)
    waiting = [a for a in alerts if a["state"] != CLOSED]
    for rule in rules:  # set-based: one query for the rule's condition, one for who uses the nodes
        pending = [a for a in waiting if not any(a.get(r.link) for r in rules)]
        if not pending:
            break
        applies = _applying(system, rule, [a["sys_id"] for a in pending])
        users = affected(system, rule, sorted({a.get("node") or "" for a in pending if a["sys_id"] in applies}))
        making = [a for a in pending if a["sys_id"] in applies and users.get(a.get("node") or "")]
        whole = _whole(system, making)
        for alert in making:
            made = _make_for(system, props, rule, whole[alert["sys_id"]], users[alert.get("node") or ""], jobs)
            if made is not None:
                alert[rule.link] = made
                with system.by_definitions():
                    system.update(ALERTS, alert["sys_id"], {rule.link: made})
    service.written |= system.written
    for table, ranges in system.made.items():
        service.made[table].extend(ranges)
    return jobs


def _alerts(service: RecordService, ids: list[str], columns: tuple[str, ...] | None = None) -> list[dict]:
    """The alerts `ids` in the order they were opened: `columns` of them, or whole. (A batch's alerts are
    hundreds, and most make nothing: reading every value of each cost more than the rules' queries.)"""
    table = service.storage.physical(ALERTS)
    selected = [table.c[name] for name in columns] if columns else [table]
    stmt = (sa.select(*selected).where(one_of(service.conn.dialect, table.c.sys_id, "ids"))
            .order_by(table.c.sys_created_on, table.c.sys_id))
    return dict_rows(service.conn.execute(stmt, {"ids": ids}))


def _whole(service: RecordService, alerts: list[dict]) -> dict[str, dict]:
    """Sys_id -> every value of each of `alerts` (none read when there are none)."""
    return {a["sys_id"]: a for a in _alerts(service, [a["sys_id"] for a in alerts])} if alerts else {}


def _applying(service: RecordService, rule: AlertRuleDef, ids: list[str]) -> set[str]:
    """The alerts among `ids` that meet the rule's condition, in one query."""
    if rule.condition is None:
        return set(ids)
    selection = Selection(service.storage, ALERTS)
    where = selection.condition(All((Term("sys_id", "in", ids), rule.condition)))
    stmt = sa.select(selection.base.c.sys_id).select_from(selection.from_clause).where(where)
    return set(service.conn.execute(stmt).scalars())


def affected(service: RecordService, rule: AlertRuleDef, nodes: list[str]) -> dict[str, list[str]]:
    """Node -> the distinct `who` of the affected table's records on it (meeting the rule's condition),
    for every node of `nodes` in one query."""
    if not nodes:
        return {}
    selection = Selection(service.storage, rule.affected_table)
    node, _ = selection.column(rule.affected_node)
    who, _ = selection.column(rule.affected_who)
    parts = (Term(rule.affected_node, "in", nodes),) + ((rule.affected_condition,) if rule.affected_condition else ())
    where = selection.condition(All(parts))
    stmt = (sa.select(node, who).distinct().select_from(selection.from_clause).where(where, who.is_not(None))
            .order_by(node, who))
    found: dict[str, list[str]] = {}
    for name, value in service.conn.execute(stmt):
        if value:
            found.setdefault(name, []).append(value)
    return found


def _made_by(service: RecordService, rule: AlertRuleDef, alerts: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """Alert sys_id -> (table, sys_id) of every record the rule made for it: the one its link holds, then
    those whose `alert_field` refers back to it, in the order they were made (one query per make for
    every alert)."""
    link_table = service.defs.tables[ALERTS].field(rule.link).reference
    found = {a["sys_id"]: [(link_table, a[rule.link])] for a in alerts}
    for make in (rule.major, rule.single):
        if not found or make is None or make.alert_field is None:
            continue
        selection = Selection(service.storage, make.table)
        back, _ = selection.column(make.alert_field)
        stmt = (sa.select(back, selection.base.c.sys_id).select_from(selection.from_clause)
                .where(back.in_(list(found))).order_by(selection.base.c.sys_created_on, selection.base.c.sys_id))
        for alert, sys_id in service.conn.execute(stmt):
            if all(sys_id != known for _, known in found[alert]):
                found[alert].append((make.table, sys_id))
    return found


def _make_for(service: RecordService, props: Properties, rule: AlertRuleDef, alert: dict, who: list[str],
              jobs: list[str]) -> str | None:
    """The record the rule makes for the alert's affected `who` (None: fewer than the threshold and no
    `single`)."""
    threshold = props.get(rule.threshold_property) if rule.threshold_property else rule.threshold
    severity = str(alert.get("severity") or "")
    context = {"alert": _text_values(alert), "count": len(who), "priority": rule.priority.get(severity, severity),
               "now": now().strftime("%Y-%m-%d %H:%M:%S"), "affected": {}}
    if len(who) >= max(threshold, 1):
        return _make(service, rule.major, context, who, jobs)
    if rule.single is None:
        return None
    target = service.defs.tables[rule.affected_table].field(rule.affected_who).reference
    made = []
    for one in who:  # below the threshold: one record each (with the default threshold of 2, the one)
        context["affected"] = _text_values(service.get(target, one) or {"sys_id": one})
        made.append(_make(service, rule.single, context, [], jobs))
    return made[0]


def _make(service: RecordService, make: AlertMake, context: dict, members: list[str], jobs: list[str]) -> str:
    from .actions import run_action
    from .memberlists import lists_for

    values = {name: render_value(value, context) for name, value in make.values.items()}
    if make.alert_field is not None:
        values[make.alert_field] = context["alert"]["sys_id"]
    with service.by_definitions():
        if make.list_field is not None:
            list_table = service.defs.tables[make.table].field(make.list_field).reference
            made_list = service.insert(list_table, {k: render_value(v, context) for k, v in make.list_values.items()})
            lists_for(service, list_table).add_members(made_list["sys_id"], members)
            values[make.list_field] = made_list["sys_id"]
        record = service.insert(make.table, values)
    if make.action:
        inputs = {k: render_value(v, context) for k, v in make.inputs.items()}
        outcome = run_action(service, make.table, record["sys_id"], make.action, inputs)
        if outcome.job:
            jobs.append(outcome.job)
    return record["sys_id"]


def _cleared(service: RecordService, rule: AlertRuleDef, alert: dict, table: str, linked: str) -> list[str]:
    """The alert closed: a record's journal entry, then the cleared action (a refusal is noted there)."""
    from .actions import run_action
    from .records import AccessDenied, Conflict, RecordError

    tdef = service.defs.tables[table]
    record = service.get(tdef.name, linked)
    if record is None:
        return []
    tdef = service.defs.tables.get(record.get("sys_class_name"), tdef)
    context = {"alert": _text_values(alert), "now": now().strftime("%Y-%m-%d %H:%M:%S"), "count": 0,
               "priority": "", "affected": {}}
    if rule.cleared_journal is not None:
        field, text = rule.cleared_journal
        with service.by_definitions():
            service.update(tdef.name, linked, {field: render_value(text, context)})
    if not rule.cleared_action:
        return []
    inputs = {k: render_value(v, context) for k, v in rule.cleared_inputs.items()}
    try:
        with service.conn.begin_nested():
            outcome = run_action(service, tdef.name, linked, rule.cleared_action, inputs)
    except (AccessDenied, Conflict, RecordError) as exc:
        if rule.cleared_journal is not None:
            with service.by_definitions():
                service.update(tdef.name, linked, {rule.cleared_journal[0]: f"{rule.cleared_action} was not run: {exc}"})
        return []
    return [outcome.job] if outcome.job else []


def _text_values(record: dict[str, Any]) -> dict[str, Any]:
    """A record's values as templates read them: dates as text, nothing missing as None."""
    return {k: (v.strftime("%Y-%m-%d %H:%M:%S") if hasattr(v, "strftime") else v) for k, v in record.items()}


__all__ = ["affected", "apply_alert_rules"]
