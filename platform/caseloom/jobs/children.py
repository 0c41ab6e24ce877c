"""The slice job of `create_children_from_list` (caseloom.effects.lists): the children of the
members in one key range, in units of work that hold the slice's job (caseloom.jobs.slices)."""

from __future__ import annotations

from ..effects import lists
from ..effects.lists import Children
from ..memberlists import lists_for
from ..records import RecordService
from .slices import in_units


def children_slice(run) -> str:
    """A slice job: the children of the members in its range (after, upto] that have none yet."""
    spec = Children.from_params(run.params)
    after, upto = run.params["after"], run.params["upto"]

    def work(service: RecordService, batch_done) -> None:
        members = lists_for(service, spec.list_table)
        lists.fill_children(service, spec, members.mtype(members.record(spec.list_id)), after, upto, batch_done)

    with run.runtime.engine.connect() as conn:
        service = run.runtime.records(conn, run.actor)
        members = lists_for(service, spec.list_table)
        total = lists.remaining_members(service, spec, members.mtype(members.record(spec.list_id)), after, upto)
    done = in_units(run, work, total)
    return f"{done} child records created"
