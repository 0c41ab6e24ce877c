"""A small generic application for the SLA engine's tests (tests/test_sla.py): a ticket table that
declares `sla: true`, an office schedule in Europe/London with a lunch break and holidays, and SLAs
that exercise every condition, a retroactive start and escalations at 50/75/100 %.

Every SLA starts on its own `category`, so a ticket meets only the SLAs a test means it to."""

from __future__ import annotations

import datetime as dt

from caseloom.query import Query, parse_encoded
from caseloom.query.dynamic import fixed_clock

TICKET = "x_ticket"
HOUR = 3600

TABLE = """table: x_ticket
label: Ticket
number: {prefix: TKT, digits: 5}
display: number
sla: true
fields:
  number: {type: string, max_length: 40, read_only: true}
  title: {type: string, max_length: 80}
  category: {type: string, max_length: 20}
  state:
    type: choice
    default: 1
    choices: {1: New, 2: In progress, 3: Awaiting customer, 5: Closed, 6: Withdrawn, 7: Reopened}
  priority:
    type: choice
    default: 4
    choices: {1: Critical, 2: High, 3: Moderate, 4: Low}
  vip: {type: boolean, default: false}
  assigned_to: {type: reference, to: sys_user}
  opened_at: {type: datetime}
  work_notes: {type: journal, label: Work notes}
"""

SCHEDULE = """schedules:
  office:
    label: Office hours (Mon-Fri 09:00-12:30, 13:30-17:30, London)
    time_zone: Europe/London
    windows:
      mon-fri: ["09:00-12:30", "13:30-17:30"]
    holidays:
      2026-04-03: Good Friday
      2026-04-06: Easter Monday
      2026-12-25: Christmas Day
"""

# Conditions (24x7, one hour) and timing (office hours) SLAs.
SLAS = """slas:
  order:
    table: x_ticket
    duration: 1h
    start: category=order^priority=1
    stop: state=5
    pause: stateIN3,5
    reset: state=7
  resume:
    table: x_ticket
    duration: 1h
    start: category=resume
    stop: state=5
    pause: state=3
    when_to_resume: resume_condition
    resume: vip=true
  cancel:
    table: x_ticket
    duration: 1h
    start: category=cancel^priority=1
    stop: state=5
    pause: stateIN3,6
    when_to_cancel: cancel_condition
    cancel: state=6
  never:
    table: x_ticket
    duration: 1h
    start: category=never^priority=1
    stop: state=5
    when_to_cancel: never
  office:
    table: x_ticket
    duration: 8h
    schedule: office
    start: category=office
    stop: state=5
    pause: state=3
  office response:
    table: x_ticket
    duration: 2h
    schedule: office
    start: category=office^state=1
    stop: state!=1
  office 24x7:
    table: x_ticket
    duration: 8h
    start: category=office
    stop: state=5
    pause: state=3
  retro:
    table: x_ticket
    duration: 8h
    schedule: office
    start: category=retro
    stop: state=5
    retroactive: opened_at
  escalate:
    table: x_ticket
    duration: 1h
    start: category=esc
    stop: state=5
    pause: state=3
    escalations:
      - {at: 50, effects: [{set: {priority: 2}}]}
      - {at: 75, effects: [{journal: {field: work_notes, text: "Three quarters of the time has gone"}}]}
      - at: 100
        effects:
          - notify: x_breached
          - journal: {field: work_notes, text: "Breached"}
"""

NOTIFICATIONS = """notifications:
  x_breached:
    table: x_ticket
    recipients: {fields: [assigned_to, assigned_to.manager]}
    subject: "Breached: {{ record.number }}"
    body: "The time allowed for {{ record.number }} has run out."
  x_repaired:
    table: sla_repair_log
    on: [update]
    condition: stateCHANGESTOcomplete
    recipients: {fields: [initiated_by]}
    subject: "SLA repair {{ record.number }} complete"
    body: "{{ record.message }}"
"""

FILES = {
    "tables/x_ticket.yaml": TABLE,
    "slas/schedule.yaml": SCHEDULE,
    "slas/tickets.yaml": SLAS,
    "notifications/tickets.yaml": NOTIFICATIONS,
}
USERS = {"root": ["admin"], "ann": [], "boss": []}


def at(text: str) -> dt.datetime:
    """A naive UTC moment from 'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text)


def write(runtime, moment: dt.datetime, sys_id: str | None = None, **values) -> str:
    """Insert a ticket (no `sys_id`) or update one, with the SLA clock at `moment`; returns its sys_id."""
    with fixed_clock(moment), runtime.transaction() as service:
        if sys_id is None:
            return service.insert(TICKET, values)["sys_id"]
        service.update(TICKET, sys_id, values)
        return sys_id


def task_slas(runtime, task: str) -> list[dict]:
    """The task_sla rows of a record with their SLA's name (`name`), oldest first."""
    with runtime.transaction() as service:
        names = {r["sys_id"]: r["name"] for r in service.query("contract_sla", Query())}
        rows = service.query("task_sla", parse_encoded(f"task={task}^ORDERBYsys_created_on"))
    return [dict(r, name=names[r["sla"]]) for r in rows]


def stages(runtime, task: str, sla: str) -> list[str]:
    """The stages of one SLA's task_sla rows on a record, oldest first ([] when it never attached)."""
    return [r["stage"] for r in task_slas(runtime, task) if r["name"] == sla]


def one(runtime, task: str, sla: str) -> dict:
    """The only task_sla row of `sla` on the record."""
    rows = [r for r in task_slas(runtime, task) if r["name"] == sla]
    assert len(rows) == 1, rows
    return rows[0]
