"""Stopping a background job that creates records, and undoing what it created while nobody has
touched it: through the API, the browser's forms without JavaScript, and the job's own guards.

Units are made small (two members per INSERT, a commit after each), and the job is stopped from a
commit hook after its first unit, so "midway" is the same place on every run."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import sqlalchemy as sa

from caseloom.access import SYSTEM
from caseloom.effects import lists as list_effects
from caseloom.jobs import CANCELED, DONE, execute_job, get_job
from caseloom.jobs.undo import CREATED, UNDONE
from caseloom.memberlists import lists_for
from caseloom.query import parse_encoded
from caseloom.records import DELETE_GUARDS, now
from conftest import form_token, ui_sign_in

CASE = "sn_customerservice_case"
MEMBERS = 6


@pytest.fixture
def config(config):
    """Every batch of a job commits at once: a job of six members has three units of work."""
    return dataclasses.replace(config, job_commit_seconds=0)


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setattr(list_effects, "SET_BATCH", 2)


@pytest.fixture
def runtime(app):
    return app.extensions["caseloom"]


def major_with_customers(runtime, n: int = MEMBERS, country: str = "QZ") -> str:
    """An accepted major case whose recipients list holds `n` new accounts, each with a contact to e-mail."""
    with runtime.transaction() as service:
        for i in range(n):
            contact = service.insert("customer_contact", {"name": f"Contact {country} {i}",
                                                          "email": f"c{i}@{country.lower()}.example"})
            service.insert("customer_account", {"name": f"{country} {i}", "country": country,
                                                "primary_contact": contact["sys_id"]})
        list_id = service.insert("sn_publications_recipients_list",
                                 {"name": country, "type": "accounts", "conditions": f"country={country}"})["sys_id"]
    with runtime.transaction() as service, service.by_definitions():
        lists_for(service, "sn_publications_recipients_list").refresh(list_id)
        return service.insert(CASE, {"short_description": "Storage outage", "state": 10,
                                     "major_case_state": "accepted", "recipient_list": list_id})["sys_id"]


def start(api, major: str) -> str:
    r = api.post(f"/api/caseloom/actions/{CASE}/{major}/create_child_cases", json={"comments": "We are on it"})
    assert r.status_code == 202, r.json
    return r.json["result"]["job"]


def children(runtime, major: str) -> list[dict]:
    with runtime.transaction(SYSTEM) as service:
        return service.query(CASE, parse_encoded(f"parent={major}^ORDERBYnumber"), ["sys_id", "number", "account"])


def job_row(runtime, job_id: str):
    with runtime.engine.connect() as conn:
        return get_job(conn, runtime.storage, job_id)


def stop_after_first_unit(runtime, stop) -> None:
    """Call `stop()` once, after the job's first unit of work has committed (a commit hook)."""
    calls = []

    def hook(service) -> None:
        if not calls:
            calls.append(stop())

    runtime.commit_hooks.append(hook)


def emails(runtime, ids: list[str]) -> dict[str, int]:
    email = runtime.storage.physical("sys_email")
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(email.c.state, sa.func.count()).where(email.c.instance.in_(ids))
                            .group_by(email.c.state)).all()
    return dict(rows)


def deleted_audits(runtime, ids: list[str]) -> list[dict]:
    audit = runtime.storage.physical("sys_audit")
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(audit.c.documentkey, audit.c.oldvalue, audit.c.user, audit.c.tablename).where(
            audit.c.documentkey.in_(ids), audit.c.fieldname == "DELETED")).mappings().all()
    return [dict(r) for r in rows]


def created_children(runtime, as_user, major: str) -> tuple[str, list[dict]]:
    """Run create_child_cases to its end as the manager; returns the job and the children."""
    job_id = start(as_user("manager"), major)
    assert execute_job(runtime, job_id).state == DONE
    made = children(runtime, major)
    assert len(made) == MEMBERS
    return job_id, made


# -- stopping -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stopper, name", [
    ("manager", "Morgan Manager"),  # who started it
    ("mim", "Mika Major"),  # may run the action on the record
    ("admin", "System Administrator"),
])
def test_a_job_stopped_midway_keeps_whole_units_and_running_it_again_does_the_rest(runtime, as_user, stopper, name):
    major = major_with_customers(runtime)
    job_id = start(as_user("manager"), major)
    answers = []
    stop_after_first_unit(runtime, lambda: answers.append(as_user(stopper).post(f"/api/caseloom/jobs/{job_id}/cancel")))
    ended = execute_job(runtime, job_id)
    assert answers[0].status_code == 200, answers[0].json
    # the contract's job states are queued, running, done and failed: a stopped job reads failed, and says so
    assert answers[0].json["result"] == {"state": "failed", "done": 2, "total": MEMBERS,
                                         "message": f"stopped by {name} after 2 of {MEMBERS}"}
    assert (ended.state, ended.message) == (CANCELED, f"stopped by {name} after 2 of {MEMBERS}")
    made = children(runtime, major)
    assert len(made) == 2 == len({c["account"] for c in made})  # one whole unit: two customers, one child each
    assert execute_job(runtime, job_id).state == CANCELED  # a canceled job never runs again

    again = start(as_user("manager"), major)
    assert again != job_id
    assert (execute_job(runtime, again).state, len(children(runtime, major))) == (DONE, MEMBERS)
    assert len({c["account"] for c in children(runtime, major)}) == MEMBERS  # never two children for one customer


def test_a_queued_job_stopped_never_starts(runtime, as_user):
    major = major_with_customers(runtime)
    job_id = start(as_user("manager"), major)
    r = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/cancel")
    assert r.json["result"]["message"] == "canceled by Morgan Manager before it started"
    assert execute_job(runtime, job_id).state == CANCELED and children(runtime, major) == []


@pytest.mark.parametrize("user, status, message", [
    ("agent", 403, "user 'agent' may not stop job {job}: only the user who started it (manager), an administrator, "
                   "or a user who may create child cases may stop it"),
    ("author", 403, "user 'author' may not see job {job}: it works on a sn_customerservice_case record they may "
                    "not read"),  # never the record's sys_id
])
def test_who_may_not_stop_a_job(runtime, as_user, user, status, message):
    major = major_with_customers(runtime)
    job_id = start(as_user("manager"), major)
    r = as_user(user).post(f"/api/caseloom/jobs/{job_id}/cancel")
    assert (r.status_code, r.json["error"]["detail"]) == (status, message.format(job=job_id, major=major))
    assert job_row(runtime, job_id).state == "queued"


def test_a_finished_or_unknown_job_cannot_be_stopped(runtime, as_user):
    job_id, _ = created_children(runtime, as_user, major_with_customers(runtime))
    r = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/cancel")
    assert r.status_code == 409
    assert r.json["error"]["message"] == (f"job {job_id} has already finished (done: {MEMBERS} child records created); "
                                         "nothing to stop")
    assert as_user("manager").post("/api/caseloom/jobs/" + "0" * 32 + "/cancel").status_code == 404


# -- undoing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("set_based", [True, False])
def test_undo_removes_every_untouched_child_cancels_unsent_email_and_audits(runtime, as_user, set_based):
    runtime.set_based = set_based  # False: the effect inserts row by row; its batches are remembered the same way
    job_id, made = created_children(runtime, as_user, major_with_customers(runtime))
    ids = [c["sys_id"] for c in made]
    assert emails(runtime, ids) == {"ready": MEMBERS}
    email = runtime.storage.physical("sys_email")
    with runtime.engine.begin() as conn:  # one went out before the undo
        conn.execute(sa.update(email).where(email.c.instance == ids[0]).values(state="sent"))

    plan = as_user("manager").get(f"/api/caseloom/jobs/{job_id}/undo").json["result"]
    assert (plan["refusal"], plan["removed"], plan["done"]) == (None, MEMBERS, False)
    r = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/undo")
    assert r.status_code == 200, r.json
    assert r.json["result"]["message"] == (f"Removed {MEMBERS} of {MEMBERS} cases; {MEMBERS - 1} unsent e-mails "
                                           "canceled, 1 already sent (they cannot be recalled).")
    assert children(runtime, (job_row(runtime, job_id)).target_sys_id) == []
    assert emails(runtime, ids) == {"canceled": MEMBERS - 1, "sent": 1}
    audits = deleted_audits(runtime, ids)
    assert sorted(a["documentkey"] for a in audits) == sorted(ids)
    assert {(a["user"], a["tablename"]) for a in audits} == {("manager", CASE)}
    snapshots = {json.loads(a["oldvalue"])["number"] for a in audits}
    assert snapshots == {c["number"] for c in made}

    again = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/undo")
    assert again.status_code == 409
    assert again.json["error"]["message"].startswith(f"nothing left to undo: job {job_id} was undone by manager on ")


def _change_a_field(service, child):
    service.update(CASE, child["sys_id"], {"short_description": "Only my printer"})


def _comment(service, child):
    service.update(CASE, child["sys_id"], {"comments": "Any news?"})


def _refer_to_it(service, child):
    service.insert(CASE, {"short_description": "Follow-up", "parent": child["sys_id"]})


def _journal_entry(service, child):
    journal = service.storage.physical("sys_journal_field")
    service.conn.execute(sa.insert(journal).values(
        sys_id="f" * 32, sys_class_name="sys_journal_field", name=CASE, element_id=child["sys_id"], element="comments",
        value="written beside the record service", sys_created_on=now(), sys_updated_on=now(), sys_created_by="agent",
        sys_updated_by="agent", sys_mod_count=0))


def test_undo_keeps_and_names_the_children_touched_since(runtime, as_user):
    job_id, made = created_children(runtime, as_user, major_with_customers(runtime))
    touched = made[1:5]
    with runtime.transaction() as service:
        for child, touch in zip(touched, (_change_a_field, _comment, _refer_to_it, _journal_entry), strict=True):
            touch(service, child)
    numbers = ", ".join(c["number"] for c in touched)
    plan = as_user("manager").get(f"/api/caseloom/jobs/{job_id}/undo").json["result"]
    assert plan["message"] == (f"Removes 2 of the {MEMBERS} cases it created; 4 could not be undone because they were "
                               f"changed since ({numbers}); 2 unsent e-mails to cancel.")
    done = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/undo").json["result"]
    assert done["message"] == (f"Removed 2 of {MEMBERS} cases; 4 could not be undone because they were changed since "
                               f"({numbers}); 2 unsent e-mails canceled.")
    left = children(runtime, job_row(runtime, job_id).target_sys_id)
    assert [c["number"] for c in left] == [c["number"] for c in touched]
    assert emails(runtime, [c["sys_id"] for c in touched]) == {"ready": 4}  # theirs still go out


def test_a_child_with_a_file_attached_is_touched_and_kept(runtime, as_user):
    from caseloom.attachments import attach

    job_id, made = created_children(runtime, as_user, major_with_customers(runtime))
    with runtime.transaction() as service:
        attach(service, CASE, made[0]["sys_id"], "screenshot.png", "image/png", b"\x89PNG")
    plan = as_user("manager").get(f"/api/caseloom/jobs/{job_id}/undo").json["result"]
    cases = next(t for t in plan["tables"] if t["table"] == CASE)
    assert (cases["removable"], cases["touched_names"]) == (MEMBERS - 1, [made[0]["number"]])
    assert f"could not be undone because it was changed since ({made[0]['number']})" in plan["message"]


@pytest.mark.parametrize("user, message", [
    ("mim", "user 'mim' may not undo job {job}: undo deletes the case records it created, and the user may not "
            "delete records of 'sn_customerservice_case'"),
    ("agent", "user 'agent' may not undo job {job}: undo deletes the case records it created, and the user may not "
              "delete records of 'sn_customerservice_case'"),
])
def test_undo_needs_delete_access_to_what_the_job_created(runtime, as_user, user, message):
    job_id, made = created_children(runtime, as_user, major_with_customers(runtime))
    r = as_user(user).post(f"/api/caseloom/jobs/{job_id}/undo")
    assert (r.status_code, r.json["error"]["detail"]) == (403, message.format(job=job_id))
    assert as_user(user).get(f"/api/caseloom/jobs/{job_id}/undo").json["result"]["refusal"] == message.format(job=job_id)
    assert len(children(runtime, job_row(runtime, job_id).target_sys_id)) == MEMBERS


def test_undo_of_a_running_job_is_refused_and_a_stopped_one_undoes_what_it_made(runtime, as_user):
    major = major_with_customers(runtime)
    job_id = start(as_user("manager"), major)
    r = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/undo")
    assert (r.status_code, r.json["error"]["message"]) == (
        409, f"job {job_id} is still queued: stop it first, then undo what it created")
    stop_after_first_unit(runtime, lambda: as_user("manager").post(f"/api/caseloom/jobs/{job_id}/cancel"))
    execute_job(runtime, job_id)
    done = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/undo").json["result"]
    assert done["message"] == "Removed 2 of 2 cases; 2 unsent e-mails canceled."
    assert children(runtime, major) == []


def test_a_table_whose_deletions_run_guards_is_undone_record_by_record(runtime, as_user, monkeypatch):
    """A deletion guard (or a delete rule) sees every record, as RecordService.delete would show it."""
    seen = []
    monkeypatch.setitem(DELETE_GUARDS, CASE, [lambda service, tdef, record: seen.append(record["number"])])
    job_id, made = created_children(runtime, as_user, major_with_customers(runtime))
    done = as_user("manager").post(f"/api/caseloom/jobs/{job_id}/undo").json["result"]
    assert done["removed"] == MEMBERS and sorted(seen) == [c["number"] for c in made]
    assert len(deleted_audits(runtime, [c["sys_id"] for c in made])) == MEMBERS


def test_a_failing_undo_leaves_everything_as_it_was(runtime, as_user, monkeypatch):
    """One transaction: the audit rows and canceled e-mails written before a failure roll back with it."""
    from caseloom.jobs import undo as undo_module

    job_id, made = created_children(runtime, as_user, major_with_customers(runtime))

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(undo_module, "_delete", broken)
    with pytest.raises(RuntimeError), runtime.transaction(runtime_actor(runtime, "manager")) as service:
        undo_module.undo_job(service, job_id)
    ids = [c["sys_id"] for c in made]
    assert len(children(runtime, job_row(runtime, job_id).target_sys_id)) == MEMBERS
    assert emails(runtime, ids) == {"ready": MEMBERS} and deleted_audits(runtime, ids) == []
    assert UNDONE not in job_row(runtime, job_id).params and job_row(runtime, job_id).params[CREATED]


def runtime_actor(runtime, user: str):
    from caseloom.users import actor_named

    with runtime.engine.connect() as conn:
        return actor_named(runtime.storage, conn, user)


# -- in the browser, without JavaScript ---------------------------------------------------------------


def flashes(page: str) -> list[str]:
    return re.findall(r'<p class="flash[^"]*" role="\w+">([^<]*)</p>', page)


def test_stop_and_undo_from_the_record_form_with_plain_form_posts(runtime, client):
    major = major_with_customers(runtime)
    ui_sign_in(client, "manager")
    form_url = f"/{CASE}.do?sys_id={major}"
    start_page = client.post(f"/ui/action/{CASE}/{major}/create_child_cases",
                             data={"comments": "We are on it", "confirmed": "1",
                                   "csrf_token": form_token(client, form_url)}, follow_redirects=True)
    page = start_page.get_data(as_text=True)
    job_id = re.search(r'id="job-([0-9a-f]{32})"', page).group(1)
    assert f'action="/ui/job/{job_id}/cancel"' in page and ">Stop</button>" in page
    card = page[page.index(f'id="job-{job_id}"'):]
    card = card[:card.index("</section>")]
    assert "<p>Starting: counting what there is to do</p>" in card and " of 0" not in card  # queued, not counted

    stop_after_first_unit(runtime, lambda: client.post(f"/ui/job/{job_id}/cancel",
                                                       data={"csrf_token": form_token(client, form_url)}))
    execute_job(runtime, job_id)
    page = client.get(form_url).get_data(as_text=True)
    assert "Create child cases: canceled" in page and "stopped by Morgan Manager after 2 of 6" in page
    assert "Create child cases stopped by Morgan Manager after 2 of 6." in " ".join(flashes(page))
    assert ">Stop</button>" not in page
    assert f'href="/ui/job/{job_id}/undo">Undo: remove the 2 cases it created…</a>' in page

    confirm = client.get(f"/ui/job/{job_id}/undo").get_data(as_text=True)
    assert "Removes 2 of the 2 cases it created; 2 unsent e-mails to cancel." in confirm
    assert ">Remove 2 cases</button>" in confirm and ">Keep them</a>" in confirm
    done = client.post(f"/ui/job/{job_id}/undo", data={"csrf_token": form_token(client, form_url)},
                       follow_redirects=True).get_data(as_text=True)
    assert "Undo create child cases: Removed 2 of 2 cases; 2 unsent e-mails canceled." in flashes(done)
    assert f'id="job-{job_id}"' not in done  # undone: the panel has nothing more to offer
    again = client.get(f"/ui/job/{job_id}/undo").get_data(as_text=True)
    assert f"nothing left to undo: job {job_id} was undone by manager" in again and "Remove 2 cases" not in again


def test_the_panel_offers_stop_and_undo_only_to_who_may(runtime, client, as_user):
    major = major_with_customers(runtime)
    job_id = start(as_user("manager"), major)
    ui_sign_in(client, "agent")
    page = client.get(f"/{CASE}.do?sys_id={major}").get_data(as_text=True)
    assert f'id="job-{job_id}"' in page and ">Stop</button>" not in page
    refused = client.post(f"/ui/job/{job_id}/cancel", data={"csrf_token": form_token(client, f"/{CASE}.do?sys_id={major}")},
                          follow_redirects=True).get_data(as_text=True)
    assert any(m.startswith("Create child cases: not stopped. user &#39;agent&#39; may not stop job") for m in flashes(refused))
    assert execute_job(runtime, job_id).state == DONE
    page = client.get(f"/{CASE}.do?sys_id={major}").get_data(as_text=True)
    assert "Undo: remove" not in page  # agents may not delete cases


# -- the command line -----------------------------------------------------------------------------------


def test_the_command_line_stops_and_undoes_as_a_user(runtime, as_user, config):
    from click.testing import CliRunner

    from caseloom.cli import main
    from conftest import DEFINITIONS

    env = {"CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": str(DEFINITIONS),
           "CASELOOM_INSTANCE": config.instance}
    cli = CliRunner()
    job_id, made = created_children(runtime, as_user, major_with_customers(runtime))
    stop = cli.invoke(main, ["job", "cancel", job_id], env=env)
    assert (stop.exit_code, stop.output) == (1, f"caseloom job cancel: job {job_id} has already finished "
                                                f"(done: {MEMBERS} child records created); nothing to stop\n")
    refused = cli.invoke(main, ["job", "undo", job_id, "--user", "agent"], env=env)
    assert refused.exit_code == 1 and "may not delete records of 'sn_customerservice_case'" in refused.output
    done = cli.invoke(main, ["job", "undo", job_id, "--user", "manager"], env=env)
    assert (done.exit_code, done.output) == (0, f"Removed {MEMBERS} of {MEMBERS} cases; {MEMBERS} unsent e-mails "
                                                "canceled.\n")
    assert children(runtime, job_row(runtime, job_id).target_sys_id) == []
    assert len(deleted_audits(runtime, [c["sys_id"] for c in made])) == MEMBERS
