"""Lifecycle checks on a write: per-state read-only and mandatory fields, and a client's direct
change of the lifecycle field held to the checks of the transition it amounts to."""

from __future__ import annotations

from ..definitions.model import ActionDef, Definitions, LifecycleDef, TableDef
from ..query.evaluate import evaluate
from ..records import AccessDenied, Conflict, RecordError, RecordService
from .conditions import resolver, unit_properties


def action_allows(actor, action) -> bool:
    """Whether the actor's roles allow an action (no roles declared: anyone who may write)."""
    return not action.roles or any(actor.has_role(role) for role in action.roles)


class LifecycleCheck:
    """Refuses the writes a table's lifecycle does not allow."""

    def __init__(self, defs: Definitions):
        self.defs = defs

    def check(self, service: RecordService, tdef: TableDef, pending: dict, previous: dict | None) -> None:
        """Check an insert or update (`pending`: the values about to be written) against the lifecycle."""
        lifecycle = self.defs.lifecycle(tdef.name)
        if lifecycle is None:
            return
        merged = {**(previous or {}), **pending}
        field = lifecycle.field
        if not service.trusted and field in pending:
            # a new record starts in the field's default state, so a client creating one in another state
            # makes the transition from there
            before = previous if previous is not None else {field: tdef.field(field).default}
            if before[field] is not None and str(pending[field]) != str(before[field]):
                self._check_direct_transition(service, tdef, lifecycle, before, pending, merged)
        if previous is not None and not service.trusted:
            _check_read_only(tdef, lifecycle, pending, previous)
        _check_mandatory(tdef, lifecycle, pending, merged)

    def _check_direct_transition(self, service: RecordService, tdef: TableDef, lifecycle: LifecycleDef,
                                 previous: dict, pending: dict, merged: dict) -> None:
        """A client changing the lifecycle field directly (a form, PATCH) does what one of the lifecycle's
        transitions does, so it must pass that transition's checks as the action would: the state it
        starts from (409), its roles (403), its condition (409) and its mandatory inputs (400 naming the
        first missing one). Journal inputs need an entry in this write; field inputs a value after it.
        Roles decide when they are all that stands in the way: 403 when every transition whose condition
        holds needs a role the user lacks, even if one the user may make is refused by its condition."""
        field = lifecycle.field
        candidates = [a for a in self.defs.actions_for(tdef.name)
                      if a.field == field and str(a.to_state) == str(pending[field])
                      and (a.from_states is None or str(previous.get(field)) in map(str, a.from_states))]
        if not candidates:
            raise Conflict(_moving(tdef, lifecycle, previous, pending), field=lifecycle.field)
        permitted = [a for a in candidates if action_allows(service.actor, a)]
        if not permitted:
            raise _denied(service, tdef, candidates)
        applicable = [a for a in candidates if self._condition_holds(service, tdef, a, merged)]
        possible = [a for a in applicable if action_allows(service.actor, a)]
        if not possible:
            if applicable:
                raise _denied(service, tdef, applicable)
            raise Conflict(permitted[0].refusal or _moving(tdef, lifecycle, previous, pending), field=lifecycle.field)
        _check_inputs(tdef, lifecycle, possible, pending, merged)

    @staticmethod
    def _condition_holds(service: RecordService, tdef: TableDef, action: ActionDef, merged: dict) -> bool:
        return action.condition is None or evaluate(action.condition, merged, properties=unit_properties(service).get,
                                                    resolve=resolver(service, tdef, merged))


def _moving(tdef: TableDef, lifecycle: LifecycleDef, previous: dict, pending: dict) -> str:
    """Why a direct change no transition makes is refused (409)."""
    field = lifecycle.field
    old, new = lifecycle.state(previous.get(field)), lifecycle.state(pending[field])
    return (f"a {tdef.label.lower()} in state {old.label if old else previous.get(field)} "
            f"cannot move to {new.label if new else pending[field]}")


def _denied(service: RecordService, tdef: TableDef, actions: list[ActionDef]) -> AccessDenied:
    """403 for transitions whose roles the user lacks, naming the roles that would do."""
    roles = sorted({r for a in actions for r in a.roles})
    return AccessDenied(f"user {service.actor.user_name!r} may not {actions[0].label.lower()} this "
                        f"{tdef.label.lower()} (needs one of the roles {', '.join(roles)})")


def _check_inputs(tdef: TableDef, lifecycle: LifecycleDef, possible: list[ActionDef], pending: dict,
                  merged: dict) -> None:
    """The write must give the mandatory inputs of one of the possible transitions; else a RecordError
    naming the first missing input of the transition that lacks the fewest."""
    shortest = None
    for action in possible:
        missing = [i for i in action.inputs if i.mandatory and not _input_given(tdef, i, pending, merged)]
        if not missing:
            return
        if shortest is None or len(missing) < len(shortest[1]):
            shortest = (action, missing)
    action, missing = shortest
    field, new = lifecycle.field, lifecycle.state(pending[lifecycle.field])
    names = ", ".join(i.name for i in missing)
    raise RecordError(missing[0].name, f"is needed to {action.label.lower()}: changing {field} to "
                                       f"{new.label if new else pending[field]} is the {action.label} transition, "
                                       f"which needs {names} (or use the {action.name} action)")


def _input_given(tdef: TableDef, spec, pending: dict, merged: dict) -> bool:
    """Whether a direct write supplies a transition's input: a new entry for a journal field, a value
    after the write for another field. A free input (a reason that only the action's effects use)
    cannot be given this way."""
    if not spec.field:
        return False
    field = tdef.field(spec.name)
    if field is not None and field.type == "journal":
        return bool(pending.get(spec.name))
    return merged.get(spec.name) not in (None, "")


def _check_read_only(tdef: TableDef, lifecycle: LifecycleDef, pending: dict, previous: dict) -> None:
    """A client may not change the fields the record's current state makes read-only."""
    state = lifecycle.state(previous.get(lifecycle.field))
    for name in state.read_only if state is not None else ():
        if name in pending and str(pending[name] or "") != str(previous.get(name) or ""):
            raise RecordError(name, f"is read-only while the {tdef.label.lower()} is {state.label}")


def _check_mandatory(tdef: TableDef, lifecycle: LifecycleDef, pending: dict, merged: dict) -> None:
    """The fields the record's new state makes mandatory must have a value after the write."""
    state = lifecycle.state(merged.get(lifecycle.field))
    for name in state.mandatory if state is not None else ():
        if merged.get(name) in (None, "") and not pending.get(name):
            raise RecordError(name, f"is mandatory when the {tdef.label.lower()} is {state.label}")
