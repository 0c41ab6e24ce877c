"""Running actions: a background transition writes its target state and field inputs in its job, with
the checks of a foreground one, in the unit of work of its effects; and an action needs both one of
its roles and write access to its table."""

from __future__ import annotations

import pytest

import caseloom.actions
from caseloom.jobs import get_job
from caseloom.jobs.registry import execute_job
from caseloom.users import add_user
from small_app import small_app

TICKETS = "/api/now/table/x_ticket"

TABLE = """
table: x_ticket
label: Ticket
number: {prefix: TKT}
display: number
fields:
  number: {type: string, max_length: 40, read_only: true}
  title: {type: string, max_length: 80, mandatory: true}
  state:
    type: choice
    default: 1
    choices: {1: New, 2: Working, 3: Resolved, 4: Canceled}
  resolution: {type: string, max_length: 80}
  notes: {type: journal}
"""

RESOLVE = """
  - name: NAME
    label: LABEL
    from: [1, 2]
    to: 3
    roles: [x_resolver, x_approver]
    background: BACKGROUND
    inputs:
      - {field: resolution, mandatory: true}
      - {field: notes}
      - {name: reason, type: text}
    effects:
      - journal:
          field: notes
          text: "{{ previous.state }} to {{ record.state }}: {{ record.resolution }} ({{ inputs.reason }})"
"""


def resolve(name: str, label: str, background: str) -> str:
    return RESOLVE.replace("NAME", name).replace("LABEL", label).replace("BACKGROUND", background)


LIFECYCLE = f"""
lifecycle: ticket
table: x_ticket
field: state
states:
  1: {{}}
  2: {{}}
  3: {{mandatory: [resolution], read_only: [title]}}
  4: {{}}
transitions:
{resolve("resolve", "Resolve", "false")}
{resolve("resolve_later", "Resolve later", "true")}
  - name: resolve_and_fail
    label: Resolve and fail
    from: [1]
    to: 3
    roles: [x_resolver]
    background: true
    inputs: [{{field: resolution, mandatory: true}}]
    effects:
      - journal: {{field: notes, text: "this entry must not survive"}}
      - create: {{table: x_ticket, values: {{title: ""}}}}
  - name: cancel
    label: Cancel
    from: [1, 2]
    to: 4
    roles: [x_resolver]
"""

FILES = {
    "tables/x_ticket.yaml": TABLE,
    "lifecycles/x_ticket.yaml": LIFECYCLE,
    "roles.yaml": "roles:\n  x_resolver: {}\n  x_approver: {}\n  x_writer: {}\n",
    "access/x.yaml": """
access:
  - {table: x_ticket, operations: [read], roles: [x_resolver, x_approver, x_writer]}
  - {table: x_ticket, operations: [create, write], roles: [x_resolver, x_writer]}
  - {table: sys_journal_field, operations: [read], roles: [x_resolver, x_approver, x_writer]}
""",
}
USERS = {"resolver": ["x_resolver"], "approver": ["x_approver"], "writer": ["x_writer"]}


@pytest.fixture
def small(config, tmp_path):
    with small_app(config, tmp_path, FILES, USERS) as made:
        yield made


def new_ticket(small, title: str = "Printer on fire") -> str:
    r = small.api("resolver").post(TICKETS, json={"title": title})
    assert r.status_code == 201, r.json
    return r.json["result"]["sys_id"]


def act(small, user: str, sys_id: str, action: str, **inputs):
    return small.api(user).post(f"/api/caseloom/actions/x_ticket/{sys_id}/{action}", json=inputs)


def ticket(small, sys_id: str) -> dict:
    return small.api("writer").get(f"{TICKETS}/{sys_id}?sysparm_fields=state,resolution,title").json["result"]


def notes(small, sys_id: str) -> list[str]:
    rows = small.api("writer").get(f"/api/now/table/sys_journal_field?sysparm_query=element_id={sys_id}").json
    return sorted(row["value"] for row in rows["result"])


def state_changes(small, sys_id: str) -> list[tuple[str, str]]:
    audit = small.runtime.storage.physical("sys_audit")
    with small.runtime.engine.connect() as conn:
        rows = conn.execute(audit.select().where(audit.c.documentkey == sys_id, audit.c.fieldname == "state"))
        return [(r.oldvalue, r.newvalue) for r in rows]


def job_of(small, response) -> str:
    assert response.status_code == 202, response.json
    return response.json["result"]["job"]


def run_job(small, job_id: str):
    execute_job(small.runtime, job_id)
    with small.runtime.engine.connect() as conn:
        return get_job(conn, small.runtime.storage, job_id)


# -- a background transition applies its state and field inputs ----------------------------------

@pytest.mark.parametrize("action, status", [("resolve", 200), ("resolve_later", 202)])
def test_a_background_transition_writes_what_a_foreground_one_writes(small, action, status):
    sys_id = new_ticket(small)
    r = act(small, "resolver", sys_id, action, resolution="Replaced the fuser", notes="Smoke is gone", reason="fire")
    assert r.status_code == status, r.json
    if status == 202:
        assert ticket(small, sys_id)["state"] == "1"  # nothing is written until the job runs
        job = run_job(small, r.json["result"]["job"])
        assert (job.state, job.message) == ("done", "done")
    assert ticket(small, sys_id) == {"state": "3", "resolution": "Replaced the fuser", "title": "Printer on fire"}
    assert notes(small, sys_id) == ["1 to 3: Replaced the fuser (fire)", "Smoke is gone"]
    assert state_changes(small, sys_id) == [("1", "3")]  # one update, audited once


def test_a_failing_effect_leaves_the_state_and_inputs_of_a_background_transition_unwritten(small):
    sys_id = new_ticket(small)
    job = run_job(small, job_of(small, act(small, "resolver", sys_id, "resolve_and_fail", resolution="Rebooted")))
    assert job.state == "failed" and "title" in job.message and "mandatory" in job.message
    assert ticket(small, sys_id) == {"state": "1", "resolution": "", "title": "Printer on fire"}
    assert notes(small, sys_id) == [] and state_changes(small, sys_id) == []


def _cancel(small, sys_id: str) -> None:
    assert act(small, "resolver", sys_id, "cancel").status_code == 200


def _lose_role(small, sys_id: str) -> None:
    with small.runtime.transaction() as service:
        add_user(service, "resolver", None, ["x_writer"])  # still reads and writes tickets


@pytest.mark.parametrize("between, refusal", [
    (_cancel, "cannot resolve later: the ticket is Canceled (allowed from New, Working)"),
    (_lose_role, "user 'resolver' may not resolve later (needs one of the roles x_resolver, x_approver)"),
])
def test_the_job_checks_again_what_a_foreground_action_checks(small, between, refusal):
    """Checked when started (202), and again when the job runs: what changed in between counts."""
    sys_id = new_ticket(small)
    job_id = job_of(small, act(small, "resolver", sys_id, "resolve_later", resolution="Fixed"))
    between(small, sys_id)
    before = ticket(small, sys_id)
    job = run_job(small, job_id)
    assert (job.state, job.message) == ("failed", refusal)
    assert ticket(small, sys_id) == before and before["resolution"] == ""


def test_a_mandatory_field_input_is_refused_when_started(small):
    sys_id = new_ticket(small)
    r = act(small, "resolver", sys_id, "resolve_later", reason="no resolution given")
    assert r.status_code == 400 and r.json["error"]["detail"]["field"] == "resolution"


def test_a_rerun_after_its_first_unit_committed_does_not_apply_the_transition_twice(small, monkeypatch):
    """The worker dies after the first unit (the update, the first batch of effects, the job's note that
    the update is applied) has committed: the re-run goes on with the effects, not refused by the state
    its own update moved, and the state changes once."""
    real = caseloom.actions.run_effects
    crashes = [RuntimeError("worker lost")]

    def crash_after_first_unit(ctx, effects):
        if crashes:
            ctx.progress(1, 1)  # commits the unit of work so far
            raise crashes.pop()
        real(ctx, effects)

    monkeypatch.setattr(caseloom.actions, "run_effects", crash_after_first_unit)
    sys_id = new_ticket(small)
    job_id = job_of(small, act(small, "resolver", sys_id, "resolve_later", resolution="Fixed", reason="again"))
    first = run_job(small, job_id)
    assert (first.state, first.message) == ("failed", "RuntimeError: worker lost")
    assert ticket(small, sys_id)["state"] == "3" and notes(small, sys_id) == []
    second = run_job(small, job_id)
    assert second.state == "done", second.message
    assert notes(small, sys_id) == ["3 to 3: Fixed (again)"]  # a re-run sees the record as it is now
    assert state_changes(small, sys_id) == [("1", "3")]


# -- who may run an action: its roles and write access to its table --------------------------------

@pytest.mark.parametrize("user, status, message", [
    ("resolver", 200, None),
    ("writer", 403, "user 'writer' may not resolve (needs one of the roles x_resolver, x_approver)"),
    ("approver", 403, "user 'approver' may not resolve: an action changes its record, and the user may not write "
                      "records of 'x_ticket' (an action needs one of its roles and write access to its table)"),
])
def test_an_action_needs_one_of_its_roles_and_write_access_to_its_table(small, user, status, message):
    """ServiceNow: a UI action's roles decide who is offered it; the record's update still needs the
    write ACL. The approver holds the action's role but may only read tickets: no button, and 403."""
    sys_id = new_ticket(small)
    small.sign_in(user)
    page = small.client.get(f"/x_ticket.do?sys_id={sys_id}")
    assert page.status_code == 200
    assert (f'action="/ui/action/x_ticket/{sys_id}/resolve"' in page.get_data(as_text=True)) == (status == 200)
    r = act(small, user, sys_id, "resolve", resolution="Fixed")
    assert r.status_code == status, r.json
    assert ticket(small, sys_id)["state"] == ("3" if status == 200 else "1")
    if message:
        assert r.json["error"]["detail"] == message
