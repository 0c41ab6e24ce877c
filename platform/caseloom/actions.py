"""Running actions: lifecycle transitions and declared actions, for the API and the UI alike.

An action is checked (its roles and write access to its table: 403; state and condition: 409
saying why; inputs: 400 naming the input), then its field inputs and target state are written
as one update and its effects run in order, all inside one savepoint: if anything fails,
nothing changed. A background action is checked when it is started and again by its job,
which then writes the update and runs the effects in its first unit of work.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .automation import Automation, action_allows
from .automation.conditions import resolver
from .definitions.model import ActionDef, TableDef
from .effects import EffectContext, run_effects
from .fieldtypes import SYS_ID, FieldValueError
from .properties import Properties
from .query.evaluate import evaluate
from .records import AccessDenied, Conflict, NotFound, RecordError, RecordService


@dataclass
class ActionOutcome:
    record: dict
    messages: list[str] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    job: str | None = None  # a background action: the sys_job that will do the work


def available_actions(service: RecordService, table: str, record: dict) -> list[ActionDef]:
    """The actions the actor may run on the record now (what the UI shows): its roles, write access
    to the table (every action changes its record) and the record's state and condition allow them."""
    tdef = service.table(table)
    if not service.can(tdef.name, "write"):
        return []
    props = Properties(service.defs, service.storage, service.conn)
    return [a for a in service.defs.actions_for(tdef.name)
            if action_allows(service.actor, a) and _refusal(service, tdef, a, record, props) is None]


def run_action(service: RecordService, table: str, sys_id: str, name: str, inputs: dict | None) -> ActionOutcome:
    action = _authorised(service, table, name)
    with service.conn.begin_nested():
        props = Properties(service.defs, service.storage, service.conn)
        record_tdef, record = _checked_record(service, table, sys_id, action, props)
        values, free = _read_inputs(action, inputs or {})
        if action.background:
            return _start_in_background(service, record_tdef, record, action, inputs or {})
        previous = dict(record)
        written = _written(action, values)
        record = _update(service, record_tdef, record, written)
        ctx = _context(service, record_tdef, record, previous, action, written, free, props)
        with service.by_definitions():
            run_effects(ctx, action.effects)
        ctx.reload()
        return ActionOutcome(ctx.record, ctx.messages, ctx.result)


def _authorised(service: RecordService, table: str, name: str) -> ActionDef:
    """The action, if the actor may run it: one of its roles, and write access to the table. As in
    ServiceNow, an action's roles decide who is offered it; the change it makes to the record still
    needs the table's write access (403 naming the table when it is missing)."""
    service.table(table, "read")
    action = service.defs.action(table, name)
    if action is None:
        raise NotFound(f"table {table!r} has no action {name!r}")
    refused = f"user {service.actor.user_name!r} may not {action.label.lower()}"
    if not action_allows(service.actor, action):
        raise AccessDenied(f"{refused} (needs one of the roles {', '.join(action.roles)})")
    if not service.can(table, "write"):
        raise AccessDenied(f"{refused}: an action changes its record, and the user "
                           f"may not write records of {table!r} (an action needs one of its roles and write access "
                           "to its table)")
    return action


def _checked_record(service: RecordService, table: str, sys_id: str, action: ActionDef,
                    props: Properties) -> tuple[TableDef, dict]:
    """The record, locked for the update, if its state and the action's condition allow the action (else 409)."""
    record = service.get(table, sys_id, for_update=True)
    if record is None:
        raise NotFound(f"no {table} record with sys_id {sys_id}")
    record_tdef = service.defs.tables[record["sys_class_name"]]
    service.check_rows(record_tdef, [sys_id], "write")  # the write rule's condition, for this record
    refusal = _refusal(service, record_tdef, action, record, props)
    if refusal:
        raise Conflict(refusal)
    return record_tdef, record


def _written(action: ActionDef, values: dict[str, Any]) -> dict[str, Any]:
    """What the action writes to its record: its field inputs, and its target state."""
    return values if action.to_state is None else {**values, action.field: action.to_state}


def _update(service: RecordService, tdef: TableDef, record: dict, written: dict[str, Any]) -> dict:
    """Write the action's values as one update, as the definitions (read-only fields and the lifecycle
    field may move), with every check of the write path: lifecycle, mandatory fields, rules."""
    if not written:
        return record
    with service.by_definitions():
        return service.update(tdef.name, record["sys_id"], written)


def _context(service: RecordService, tdef: TableDef, record: dict, previous: dict, action: ActionDef,
             written: dict[str, Any], free: dict[str, Any], props: Properties,
             progress: Callable[[int, int], RecordService | None] | None = None) -> EffectContext:
    declared = {i.name: None for i in action.inputs}  # an omitted optional input is empty, not undefined
    return EffectContext(service, tdef, dict(record), previous, inputs={**declared, **free, **written},
                         journal={k: v for k, v in written.items() if _is_journal(tdef, k)},
                         properties=props.get, notify=Automation(service.defs).notifier(service), progress=progress)


def _is_journal(tdef: TableDef, name: str) -> bool:
    f = tdef.field(name)
    return f is not None and f.ftype.journal


def _refusal(service: RecordService, tdef: TableDef, action: ActionDef, record: dict, props: Properties) -> str | None:
    """Why the record's state or the action's condition does not allow it now, or None."""
    if action.from_states is not None and action.field:
        current = record.get(action.field)
        if str(current) not in map(str, action.from_states):
            lifecycle_field = tdef.field(action.field)
            label = lifecycle_field.choice_label(current) if lifecycle_field else current
            allowed = ", ".join(lifecycle_field.choice_label(s) or str(s) for s in action.from_states)
            return f"cannot {action.label.lower()}: the {tdef.label.lower()} is {label} (allowed from {allowed})"
    if action.condition is not None and not evaluate(action.condition, record, properties=props.get,
                                                     resolve=resolver(service, tdef, record)):
        return action.refusal or f"cannot {action.label.lower()} this {tdef.label.lower()} in its current state"
    return None


def _read_inputs(action: ActionDef, given: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the inputs into field values (written to the record) and free values; check them."""
    known = {i.name for i in action.inputs}
    unknown = [k for k in given if k not in known]
    if unknown:
        raise RecordError(unknown[0], f"is not an input of {action.name} (inputs: {', '.join(sorted(known)) or 'none'})")
    values: dict[str, Any] = {}
    free: dict[str, Any] = {}
    for spec in action.inputs:
        value = given.get(spec.name)
        empty = value is None or (isinstance(value, (str, list)) and not (value.strip() if isinstance(value, str) else value))
        if spec.mandatory and empty:
            raise RecordError(spec.name, f"is needed to {action.label.lower()}")
        if empty:
            continue
        if spec.type == "records":
            free[spec.name] = _sys_ids(spec, value)
        elif spec.field:
            values[spec.name] = value
        else:
            free[spec.name] = _free_value(spec, value)
    return values, free


def _sys_ids(spec, value: Any) -> list[str]:
    """A records input: a list of sys_ids, or one string of them separated by commas (a form's)."""
    if isinstance(value, str):
        ids = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list):
        ids = value
    else:
        raise RecordError(spec.name, f"expected a list of sys_ids, got {_kind(value)}")
    for item in ids:
        if not isinstance(item, str) or not SYS_ID.match(item):
            raise RecordError(spec.name, f"{item!r} is not a sys_id (32 hexadecimal digits)")
    return ids


def _kind(value: Any) -> str:
    """What a JSON value is, in words, for a message."""
    return {dict: "an object", list: "a list", bool: "true or false"}.get(type(value), type(value).__name__)


def _free_value(spec, value: Any) -> Any:
    """A free input's value as its declared type takes it: text, a choice among its choices, a boolean."""
    from .fieldtypes import parse_boolean

    if isinstance(value, (dict, list)):  # JSON's object or array: never one value of a free input
        wanted = "true or false" if spec.type == "boolean" else \
            f"one of the choices ({', '.join(f'{c}: {label}' for c, label in spec.choices)})" if spec.choices else "text"
        raise RecordError(spec.name, f"expected {wanted}, got {_kind(value)}")

    if spec.choices:
        for choice, label in spec.choices:
            if str(value) in (str(choice), label):
                return choice
        raise RecordError(spec.name, f"{value!r} is not one of the choices "
                                     f"({', '.join(f'{c}: {label}' for c, label in spec.choices)})")
    if spec.type == "boolean":
        try:
            return parse_boolean(value)
        except FieldValueError as exc:
            raise RecordError(spec.name, str(exc)) from None
    return value


def _start_in_background(service: RecordService, tdef: TableDef, record: dict, action: ActionDef,
                         inputs: dict) -> ActionOutcome:
    """Checked now (roles, state, inputs); done by a job. The caller enqueues the job after commit.
    A second start while one is queued or running for the record returns that one; if the worker
    running it is lost, that job is put back in the queue (resumed, with the inputs it started with)."""
    from .jobs.progress import active_job, create_job, release_job

    running = active_job(service.conn, service.storage, f"action:{action.name}", tdef.name, record["sys_id"])
    if running is not None:
        why = release_job(service.conn, service.storage, running)
        said = (f"{action.label} resumed, with the inputs it was started with: {why}" if why
                else f"{action.label} is already {running.state}")
        return ActionOutcome(record, [said], {}, running.id)
    job_id = create_job(service.conn, service.storage, f"action:{action.name}", created_by=service.actor.user_name,
                        target_table=tdef.name, target_sys_id=record["sys_id"],
                        params={"table": tdef.name, "sys_id": record["sys_id"], "action": action.name,
                                "inputs": inputs})
    return ActionOutcome(record, [f"{action.label} started"], {}, job_id)


# A job parameter: the action's update has committed (with its first unit of work), so a re-run goes on
# with the effects instead of checking the state again (which the update has moved).
APPLIED = "applied"


def run_in_job(run) -> str:
    """A background action, run by its job: the checks of a foreground action (roles, write access,
    state, condition, inputs), then its field inputs and target state, then its effects, all in the
    first unit of work. The batches an effect reports commit with the job's progress at most every
    CASELOOM_JOB_COMMIT_SECONDS (1 s), so a crash loses at most that much work and a re-run resumes
    (effects pick their work by the state of the data). Each unit begins and ends holding the job
    (`run.hold`, guarded progress): a run that lost it to another worker rolls back its unit and
    stops, so no batch is ever committed by two runs."""
    from .database import WRITE_LOCK, job_cache

    runtime = run.runtime
    with runtime.engine.connect() as conn, job_cache(conn):
        conn.execution_options(**{WRITE_LOCK: True})
        transaction = conn.begin()
        service = runtime.records(conn, run.actor)
        try:
            run.hold(conn)
            action, ctx = _start_job(service, run)
            last_commit = time.monotonic()

            def progress(done: int, total: int):
                nonlocal transaction, last_commit
                if time.monotonic() - last_commit < runtime.config.job_commit_seconds and done < total:
                    return service  # the batch joins the next commit
                transaction = run.next_unit(conn, transaction, service, done, total)
                last_commit = time.monotonic()
                return service

            def commit() -> None:
                nonlocal transaction
                transaction.commit()
                runtime.committed(service)
                transaction = None

            def begin() -> RecordService:
                nonlocal transaction, last_commit
                transaction = conn.begin()
                run.hold(conn)
                last_commit = time.monotonic()
                return service

            ctx.progress, ctx.earlier = progress, run.job.done
            ctx.slicer = run.slicer(commit, begin, service)
            with service.by_definitions():
                run_effects(ctx, action.effects)
            run.hold(conn)
            transaction.commit()
            runtime.committed(service)
        except BaseException:
            if transaction is not None and transaction.is_active:  # else a unit that failed to begin, rolled back
                transaction.rollback()
            raise
    return "; ".join(ctx.messages) or "done"


def _start_job(service: RecordService, run) -> tuple[ActionDef, EffectContext]:
    """The first run: check as run_action does and apply the update, noting in the job (same unit of
    work) that it is applied. A re-run after that unit committed: the record as it is now."""
    params = run.params
    props = Properties(service.defs, service.storage, service.conn)
    if not params.get(APPLIED):
        action = _authorised(service, params["table"], params["action"])
        tdef, record = _checked_record(service, params["table"], params["sys_id"], action, props)
        values, free = _read_inputs(action, params["inputs"])
        written = _written(action, values)
        previous, record = dict(record), _update(service, tdef, record, written)
        run.remember(service.conn, **{APPLIED: True})
        return action, _context(service, tdef, record, previous, action, written, free, props)
    action = service.defs.action(params["table"], params["action"])
    record = service.get(params["table"], params["sys_id"])
    if action is None or record is None:
        raise NotFound(f"{params['table']} {params['sys_id']} or its action {params['action']} is gone")
    tdef = service.defs.tables[record["sys_class_name"]]
    values, free = _read_inputs(action, params["inputs"])
    return action, _context(service, tdef, record, dict(record), action, _written(action, values), free, props)


# -- what an action would do, before it runs --------------------------------------------------------

@dataclass
class Footprint:
    """What a unit of work made: records created per table, and e-mails queued with their distinct
    recipients. Read from the rows whose sys_ids are newer than a mark (sys_ids begin with the time)."""

    created: list[tuple[TableDef, int]] = field(default_factory=list)
    emails: int = 0
    recipients: int = 0

    def words(self) -> str:
        """"creates 40 cases and sends 40 e-mails to 40 recipients"."""
        parts = [f"creates {n} {_noun(tdef.label, n)}" for tdef, n in self.created]
        if self.emails:
            parts.append(f"sends {self.emails} {_noun('e-mail', self.emails)} to {self.recipients} "
                         f"{_noun('recipient', self.recipients)}")
        return " and ".join(parts) or "changes this record only"


def _noun(label: str, n: int) -> str:
    label = label.lower()
    return label if n == 1 else label + ("es" if label.endswith(("s", "x", "ch", "sh")) else "s")


def footprint(service: RecordService) -> Footprint:
    """What this unit of work has made so far (`RecordService.made`): records of the application's
    tables, and the e-mails it queued with their distinct recipients."""
    import sqlalchemy as sa

    out = Footprint()
    for name, batches in sorted(service.made.items()):
        tdef = service.defs.tables.get(name)
        if tdef is not None and not tdef.system and name != "sys_email":
            out.created.append((tdef, sum(n for _, _, n in batches)))
    if service.made.get("sys_email"):
        email = service.storage.physical("sys_email")
        within = sa.or_(*(email.c.sys_id.between(low, high) for low, high, _ in service.made["sys_email"]))
        addresses: set[str] = set()  # one row per distinct recipients text: e-mails to one contact group in SQL
        for recipients, n in service.conn.execute(
                sa.select(email.c.recipients, sa.func.count()).where(within).group_by(email.c.recipients)):
            out.emails += n
            addresses.update(a.strip().lower() for a in (recipients or "").split(",") if a.strip())
        out.recipients = len(addresses)
    return out


def preview_action(service: RecordService, table: str, sys_id: str, name: str, inputs: dict | None) -> Footprint:
    """Run the action, a background one included, in a savepoint that is rolled back: what it would
    create and whom it would e-mail, in numbers, for a confirmation. Every check of the real run
    applies (a refused action raises as `run_action` does)."""
    action = _authorised(service, table, name)
    before = service.written, service.made
    service.written, service.made = set(), defaultdict(list)
    savepoint = service.conn.begin_nested()
    try:
        props = Properties(service.defs, service.storage, service.conn)
        tdef, record = _checked_record(service, table, sys_id, action, props)
        values, free = _read_inputs(action, inputs or {})
        previous, written = dict(record), _written(action, values)
        record = _update(service, tdef, record, written)
        ctx = _context(service, tdef, record, previous, action, written, free, props)
        with service.by_definitions():
            run_effects(ctx, action.effects)
        return footprint(service)
    finally:
        savepoint.rollback()
        service.written, service.made = before
