"""E-mail delivery: sys_email rows go out over a real SMTP server (aiosmtpd on 127.0.0.1) once,
and are marked sent or error; two workers never send one message twice."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
import sqlalchemy as sa

from caseloom.database import write_transaction
from caseloom.jobs import DONE, JobQueue, get_job, make_huey
from caseloom.jobs import email as delivery
from caseloom.query import Query, Term
from caseloom.runtime import Runtime
from conftest import free_port, sqlite_plans


def smtp_runtime(config, definitions, port: int | None, **smtp) -> Runtime:
    host = None if port is None else "127.0.0.1"
    return Runtime(dataclasses.replace(config, smtp_host=host, smtp_port=port or 25,
                                       smtp_from="caseloom@example.test", **smtp), definitions)


@pytest.fixture
def runtime(config, definitions, mailbox):
    """A runtime that sends through the test's SMTP server."""
    rt = smtp_runtime(config, definitions, mailbox.port)
    yield rt
    rt.engine.dispose()


@pytest.fixture
def queue(runtime):
    """The job queue in huey's immediate mode: a task runs as it is enqueued."""
    return JobQueue(runtime, make_huey(runtime.config.queue, immediate=True))


def add_emails(runtime: Runtime, *rows: dict) -> list[str]:
    with runtime.transaction() as service:
        return [service.insert("sys_email", {"state": "ready", **row})["sys_id"] for row in rows]


def emails(runtime: Runtime, ids: list[str]) -> dict[str, dict]:
    with runtime.transaction() as service:
        rows = service.query("sys_email", Query(Term("sys_id", "in", ids)), ["sys_id", "state", "error", "sys_mod_count"])
    return {r["sys_id"]: r for r in rows}


def delivery_jobs(runtime: Runtime) -> list:
    table = runtime.storage.internal("sys_job")
    with runtime.engine.connect() as conn:
        ids = conn.execute(sa.select(table.c.id).where(table.c.name == "deliver_email")).scalars().all()
        return [get_job(conn, runtime.storage, i) for i in ids]


def test_ready_messages_are_delivered_once_and_marked_sent(runtime, queue, mailbox):
    ids = add_emails(runtime,
                     {"recipients": "ann@example.test", "subject": "Case CS001 opened", "body": "Hello Ann,\nyour case."},
                     {"recipients": "bob@example.test, cid@example.test", "subject": "Major issue", "body": "All hands."})
    queue.enqueue("deliver_email")

    assert len(mailbox.messages) == 2
    by_subject = {str(m["Subject"]): (sender, rcpts, m) for sender, rcpts, m in mailbox.messages}
    sender, rcpts, message = by_subject["Case CS001 opened"]
    assert (sender, rcpts, message["To"]) == ("caseloom@example.test", ["ann@example.test"], "ann@example.test")
    # the body, then the watermark a reply quotes back (contract section 11)
    assert message.get_payload(decode=True).decode().replace("\r\n", "\n").strip() == \
        f"Hello Ann,\nyour case.\n\nRef:MSG{ids[0]}"
    assert message["Message-ID"] == f"<{ids[0]}@example.test>"
    assert by_subject["Major issue"][1] == ["bob@example.test", "cid@example.test"]
    assert {r["state"] for r in emails(runtime, ids).values()} == {"sent"}
    [job] = delivery_jobs(runtime)
    assert (job.state, job.done, job.total, job.message) == (DONE, 2, 2, "2 sent, 0 failed")

    before = emails(runtime, ids)
    queue.enqueue("deliver_email")  # a second run: nothing is waiting, nothing is sent again
    assert len(mailbox.messages) == 2
    assert emails(runtime, ids) == before
    assert len(delivery_jobs(runtime)) == 1  # an idle run leaves no job behind


RENDERED = {  # (subject, body): what a recipient reads must be what was stored, however it is encoded
    "ASCII": ("Case CS001 opened", "Hello Ann,\nyour case."),
    "a long subject, folded": (" ".join(f"word{i}" for i in range(30)), "x"),
    "a subject outside ASCII": ("Störung – Düsseldorf", "x"),
    "a body outside ASCII": ("Umlauts", "Grüße aus Köln\n— das Team"),
    "a body line over 998 characters": ("Long", "y" * 1500),
    "an empty body": ("Nothing", ""),
}


@pytest.mark.parametrize("subject, body", RENDERED.values(), ids=RENDERED.keys())
def test_a_delivered_message_reads_as_stored(runtime, queue, mailbox, subject, body):
    """The fast rendering (the legacy API, for ASCII addresses) against what `EmailMessage` makes of
    the same row: the recipient's parser reads the same headers and text."""
    import email
    from email import policy

    from caseloom.jobs.smtp import message

    [sys_id] = add_emails(runtime, {"recipients": "ann@example.test", "subject": subject, "body": body})
    queue.enqueue("deliver_email")

    [(sender, rcpts, received)] = mailbox.messages
    got = email.message_from_bytes(received.as_bytes(), policy=policy.default)
    row = {"sys_id": sys_id, "subject": subject, "body": body}
    expected = message(runtime.config, row, ["ann@example.test"])
    for header in ("From", "To", "Subject", "Message-ID"):
        assert str(got[header]) == str(expected[header]), header
    assert got.get_content().replace("\r\n", "\n") == expected.get_content()
    assert emails(runtime, [sys_id])[sys_id]["state"] == "sent"


def test_a_line_break_in_an_address_is_an_error_not_a_header(runtime, queue, mailbox):
    [sys_id] = add_emails(runtime, {"recipients": "ann@example.test\nBcc: eve@example.test", "subject": "x", "body": "y"})
    queue.enqueue("deliver_email")

    assert mailbox.messages == []
    row = emails(runtime, [sys_id])[sys_id]
    assert (row["state"], row["error"]) == ("error", "Header values may not contain linefeed or carriage return characters")


def test_refused_recipients_mark_error_with_the_servers_reason(runtime, queue, mailbox):
    mailbox.refuse = {"gone@example.test"}
    gone, partly, fine = add_emails(
        runtime,
        {"recipients": "gone@example.test", "subject": "to nobody", "body": "x"},
        {"recipients": "gone@example.test,ann@example.test", "subject": "to some", "body": "y"},
        {"recipients": "bob@example.test", "subject": "to bob", "body": "z"})
    queue.enqueue("deliver_email")

    rows = emails(runtime, [gone, partly, fine])
    assert rows[gone]["state"] == "error"
    assert rows[gone]["error"] == ("every recipient was refused: gone@example.test: 550 5.1.1 "
                                   "<gone@example.test>: mailbox unavailable")
    assert rows[partly]["state"] == "sent"
    assert rows[partly]["error"].startswith("some recipients were refused: gone@example.test: 550")
    assert (rows[fine]["state"], rows[fine]["error"]) == ("sent", None)
    assert mailbox.subjects() == ["to bob", "to some"]
    assert delivery_jobs(runtime)[0].message == "2 sent, 1 failed"


def test_an_unreachable_server_is_a_temporary_failure_tried_again_later(config, definitions):
    rt = smtp_runtime(config, definitions, free_port())  # nothing listens there
    try:
        ids = add_emails(rt, *({"recipients": "ann@example.test", "subject": f"s{i}", "body": "b"} for i in range(3)))
        job = delivery.deliver_pending(rt)
        with rt.transaction() as service:
            rows = service.query("sys_email", Query(Term("sys_id", "in", ids)), ["state", "error", "attempts"])
        assert {(r["state"], r["attempts"]) for r in rows} == {("ready", 1)}  # one connection refused, for all
        assert all(r["error"].startswith(f"could not connect to the SMTP server 127.0.0.1:{rt.config.smtp_port}: ")
                   and "refused" in r["error"].lower() for r in rows)
        assert job.message.startswith("0 sent, 0 failed, 3 to retry; stopped: could not connect")
        assert delivery.deliver_pending(rt) is None  # not due yet: no run, no job
    finally:
        rt.engine.dispose()


def test_without_an_smtp_host_messages_stay_ready(config, definitions):
    rt = smtp_runtime(config, definitions, None)
    try:
        queue = JobQueue(rt, make_huey(rt.config.queue, immediate=True))
        ids = add_emails(rt, {"recipients": "ann@example.test", "subject": "s", "body": "b"})
        queue.enqueue("deliver_email")
        assert delivery_jobs(rt) == []
        job_id = queue.start("deliver_email")  # on demand: a job that says why nothing went out
        with rt.engine.connect() as conn:
            job = get_job(conn, rt.storage, job_id)
        assert (job.state, job.message) == (DONE, "no SMTP host configured (CASELOOM_SMTP_HOST): 1 message(s) left ready")
        assert emails(rt, ids)[ids[0]]["state"] == "ready"
    finally:
        rt.engine.dispose()


def test_a_second_claimer_never_gets_a_claimed_message(runtime):
    ids = add_emails(runtime, *({"recipients": "a@example.test", "subject": f"m{i}", "body": "b"} for i in range(10)))
    theirs: list[dict] = []
    other = threading.Thread(target=lambda: theirs.extend(delivery.claim(runtime, 4)))
    with write_transaction(runtime.engine) as conn:
        mine = delivery.claim_in(runtime.records(conn), 4)  # claimed, not yet committed
        other.start()
        if conn.dialect.name == "postgresql":
            other.join(10)  # SKIP LOCKED: the other claimer passes over our rows without waiting
            assert not other.is_alive()
        else:
            other.join(0.3)  # SQLite: the other claimer waits for our write lock
            assert other.is_alive()
    other.join(10)
    mine_ids, their_ids = {r["sys_id"] for r in mine}, {r["sys_id"] for r in theirs}
    assert len(mine_ids) == len(their_ids) == 4
    assert not mine_ids & their_ids
    states = emails(runtime, ids)
    assert sorted(r["state"] for r in states.values()) == ["ready"] * 2 + ["sending"] * 8


def test_a_claim_takes_a_lost_runs_messages_then_the_oldest_due_ones(runtime):
    """What a claim takes and in which order; each of its statements walks sys_email's (state,
    sys_created_on, sys_id) index and stops at the batch, sorting nothing."""
    names = ["lost", "fresh claim", "old", "retry later", "retry now", "new", "newer"]
    ids = dict(zip(names, add_emails(runtime, *({"recipients": "a@example.test", "subject": n, "body": "b"}
                                                for n in names)), strict=True))
    table, moment = runtime.storage.physical("sys_email"), delivery.now()
    created = {name: moment - dt.timedelta(minutes=60 - i) for i, name in enumerate(names)}
    changes = {"lost": {"state": "sending", "sys_updated_on": moment - delivery.SENDING_LEASE - dt.timedelta(minutes=1)},
               "fresh claim": {"state": "sending", "sys_updated_on": moment},
               "retry later": {"next_attempt": moment + dt.timedelta(minutes=5)},
               "retry now": {"next_attempt": moment - dt.timedelta(seconds=1)}}
    with runtime.engine.begin() as conn:
        for name, sys_id in ids.items():
            conn.execute(sa.update(table).where(table.c.sys_id == sys_id)
                         .values(sys_created_on=created[name], **changes.get(name, {})))
    subjects = [r["subject"] for r in delivery.claim(runtime, 4)]
    assert subjects == ["lost", "old", "retry now", "new"]
    assert [r["subject"] for r in delivery.claim(runtime, 4)] == ["newer"]
    assert delivery.claim(runtime, 4) == []

    with runtime.engine.connect() as conn:
        for part in delivery._claimable_parts(table, moment):
            stmt = sa.select(table.c.sys_id).where(part).order_by(table.c.sys_created_on, table.c.sys_id).limit(250)
            sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            if conn.dialect.name == "sqlite":
                plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
                assert "USING INDEX ixn_sys_email_state_sys_created_on_sys_id (state=?)" in plan, plan
                assert "TEMP B-TREE" not in plan, plan
            else:
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a handful of rows: scanning them wins
                plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))
                assert "ixn_sys_email_state_sys_created_on_sys_id" in plan and "Sort" not in plan, plan


def test_counting_and_claiming_read_by_the_state_among_many_sent(runtime):
    """With 20,000 messages sent and the statistics SQLite's hourly ANALYZE keeps (which average the messages
    per state), what a delivery run counts (once a second) and claims reads along the state's index: none
    of its statements reads every message."""
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner and its statistics")
    table, moment = runtime.storage.physical("sys_email"), delivery.now()
    sent = [{"sys_id": f"{i:032x}", "sys_created_on": moment - dt.timedelta(hours=2, seconds=i),
             "sys_updated_on": moment, "sys_created_by": "system", "sys_updated_by": "system", "sys_mod_count": 1,
             "sys_class_name": "sys_email", "state": "sent", "type": "sent", "attempts": 1,
             "sent_on": moment - dt.timedelta(hours=1, seconds=i)} for i in range(20_000)]
    with runtime.engine.begin() as conn:
        conn.execute(sa.insert(table), sent)
    add_emails(runtime, *({"recipients": "a@example.test", "subject": f"s{i}", "body": "b"} for i in range(5)))
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE sys_email")
    found: dict = {}

    def deliver_a_batch() -> None:
        with runtime.engine.connect() as conn:
            found["waiting"] = delivery.waiting(conn, runtime.storage)
        found["claimed"] = delivery.claim(runtime, 4)

    plans = sqlite_plans(runtime.engine, "sys_email", deliver_a_batch)
    assert found["waiting"] == 5 and len(found["claimed"]) == 4
    assert plans and any("ixn_sys_email_state_sys_created_on_sys_id" in plan for _, plan in plans)
    for statement, plan in plans:
        assert "SCAN sys_email" not in plan, (statement, plan)


def test_two_workers_delivering_at_once_send_each_message_once(runtime, mailbox, monkeypatch):
    monkeypatch.setattr(delivery, "BATCH", 3)
    ids = add_emails(runtime, *({"recipients": "a@example.test", "subject": f"m{i:02d}", "body": "b"} for i in range(24)))
    start = threading.Barrier(2)

    def work():
        start.wait()
        delivery.deliver_pending(runtime)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert mailbox.subjects() == [f"m{i:02d}" for i in range(24)]
    assert {r["state"] for r in emails(runtime, ids).values()} == {"sent"}
    jobs = delivery_jobs(runtime)
    assert all(j.state == DONE for j in jobs) and sum(j.done for j in jobs) == 24


def test_committed_email_is_delivered_right_away(runtime, queue, mailbox):
    """A unit of work that wrote sys_email rows enqueues delivery once it has committed."""
    with runtime.transaction() as service:
        service.insert("sys_email", {"recipients": "ann@example.test", "subject": "now", "body": "b"})
        assert mailbox.messages == []  # not before the commit
    assert mailbox.subjects() == ["now"]


def test_a_request_that_writes_email_enqueues_delivery_after_commit(app, as_user):
    from caseloom.web.jobs_api import queue

    huey = queue(app).huey
    assert as_user("admin").get("/api/now/table/sys_email").status_code == 200
    assert as_user("admin").post("/api/now/table/sys_user_group", json={"name": "No mail"}).status_code == 201
    assert huey.pending_count() == 0  # reads and writes of other tables call for nothing

    created = as_user("admin").post("/api/now/table/sys_email",
                                    json={"recipients": "ann@example.test", "subject": "s", "body": "b"})
    assert created.status_code == 201
    assert [task.name for task in huey.pending()] == ["deliver_email"]
    assert as_user("admin").post("/api/now/table/sys_email", json={"subject": "x", "state": "bogus"}).status_code == 400
    assert huey.pending_count() == 1  # a refused write commits nothing and enqueues nothing
