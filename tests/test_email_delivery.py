"""E-mail delivery at scale, against a real SMTP server (aiosmtpd) that answers as told: one
session per run, the per-minute rate limit, retries with back-off for temporary failures, errors
for permanent ones, and bounces (RFC 3464 reports) marking the message they report on."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from caseloom.jobs import email as delivery
from caseloom.query import Query, Term
from caseloom.records import now
from conftest import Mailbox, basic
from test_email import add_emails, smtp_runtime
from test_workspace import accepted_major

INBOUND = "/api/caseloom/email/inbound"


class ScriptedMailbox(Mailbox):
    """A mailbox whose replies are scripted: `rcpt` and `data` are lists of replies used one per
    message before the server accepts as usual; `per_session` messages at most per session (then 421,
    as a server with a session limit). `sessions` is every session that sent a message."""

    def __init__(self):
        super().__init__()
        self.rcpt: list[str] = []
        self.data: list[str] = []
        self.per_session = 0
        self.sessions: dict[int, int] = {}  # id of the session -> messages it delivered

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt:
            return self.rcpt.pop(0)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if self.per_session and self.sessions.get(id(session), 0) >= self.per_session:
            return "421 4.7.0 too many messages in this session"
        if self.data:
            return self.data.pop(0)
        self.sessions[id(session)] = self.sessions.get(id(session), 0) + 1
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def mailbox():
    from aiosmtpd.controller import Controller

    from conftest import free_port

    box = ScriptedMailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


@pytest.fixture
def runtime(config, definitions, mailbox):
    rt = smtp_runtime(config, definitions, mailbox.port)
    yield rt
    rt.engine.dispose()


def messages(runtime, count: int) -> list[str]:
    return add_emails(runtime, *({"recipients": f"r{i}@example.test", "subject": f"m{i:03d}", "body": "b"}
                                 for i in range(count)))


def rows(runtime, ids: list[str]) -> list[dict]:
    with runtime.transaction() as service:
        found = service.query("sys_email", Query(Term("sys_id", "in", ids)),
                              ["sys_id", "state", "type", "error", "attempts", "next_attempt", "sent_on"])
    return sorted(found, key=lambda r: ids.index(r["sys_id"]))


def make_due(runtime, ids: list[str]) -> None:
    """Let the back-off pass: the messages' next attempt is now due."""
    table = runtime.storage.physical("sys_email")
    with runtime.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.sys_id.in_(ids)).values(next_attempt=now() - dt.timedelta(seconds=1)))


def set_property(runtime, name: str, value: str) -> None:
    with runtime.transaction() as service:
        [prop] = service.query("sys_properties", Query(Term("name", "eq", name)), ["sys_id"])
        service.update("sys_properties", prop["sys_id"], {"value": value})


def minutes_ahead(when: dt.datetime) -> float:
    return (when - now()).total_seconds() / 60


# -- one session ------------------------------------------------------------------------------------


def test_one_run_sends_every_batch_over_one_session(runtime, mailbox, monkeypatch):
    monkeypatch.setattr(delivery, "BATCH", 3)
    ids = messages(runtime, 10)
    job = delivery.deliver_pending(runtime)
    assert (job.message, job.done, job.total) == ("10 sent, 0 failed", 10, 10)
    assert list(mailbox.sessions.values()) == [10]  # four batches, one SMTP session
    assert {(r["state"], r["attempts"]) for r in rows(runtime, ids)} == {("sent", 1)}
    assert all(r["sent_on"] is not None and r["next_attempt"] is None for r in rows(runtime, ids))


def test_a_server_that_ends_sessions_is_connected_to_again_and_nothing_goes_twice(runtime, mailbox, monkeypatch):
    monkeypatch.setattr(delivery, "BATCH", 4)
    mailbox.per_session = 3  # the fourth message of a session gets 421 and the session is over
    ids = messages(runtime, 10)
    job = delivery.deliver_pending(runtime)
    assert job.message == "10 sent, 0 failed"
    assert sorted(mailbox.sessions.values()) == [1, 3, 3, 3]
    assert mailbox.subjects() == [f"m{i:03d}" for i in range(10)]
    assert {r["state"] for r in rows(runtime, ids)} == {"sent"}


@pytest.mark.parametrize(("connections", "count", "sessions"), [
    (4, 100, [25, 25, 25, 25]),  # a batch of 100 dealt out over four sessions, sent side by side
    (4, 60, [20, 20, 20]),  # as many sessions as the batch has 25 messages, rounded up
    (4, 20, [20]),  # a small batch opens one
    (1, 100, [100]),  # CASELOOM_SMTP_CONNECTIONS=1: one session, one message at a time
])
def test_a_batch_goes_over_several_sessions_side_by_side(config, definitions, mailbox, connections, count, sessions):
    rt = smtp_runtime(config, definitions, mailbox.port, smtp_connections=connections)
    try:
        ids = messages(rt, count)
        job = delivery.deliver_pending(rt)
    finally:
        rt.engine.dispose()
    assert job.message == f"{count} sent, 0 failed"
    assert sorted(mailbox.sessions.values()) == sessions
    assert mailbox.subjects() == [f"m{i:03d}" for i in range(count)]  # every message, each once
    assert {(r["state"], r["attempts"]) for r in rows(rt, ids)} == {("sent", 1)}


def test_sessions_side_by_side_that_the_server_ends_are_connected_to_again(config, definitions, mailbox):
    mailbox.per_session = 7  # each of the four sessions is ended after 7 of its 25 messages, again and again
    rt = smtp_runtime(config, definitions, mailbox.port, smtp_connections=4)
    try:
        ids = messages(rt, 100)
        job = delivery.deliver_pending(rt)
    finally:
        rt.engine.dispose()
    assert job.message == "100 sent, 0 failed"
    assert sorted(mailbox.sessions.values()) == [4] * 4 + [7] * 12  # 25 = 7 + 7 + 7 + 4, four times
    assert mailbox.subjects() == [f"m{i:03d}" for i in range(100)]
    assert {r["state"] for r in rows(rt, ids)} == {"sent"}


def test_one_session_that_cannot_connect_stops_the_run_and_its_share_waits(config, definitions):
    from conftest import free_port

    rt = smtp_runtime(config, definitions, free_port(), smtp_connections=4)  # nothing listens there
    try:
        ids = messages(rt, 100)
        job = delivery.deliver_pending(rt)
    finally:
        rt.engine.dispose()
    assert job.message.startswith("0 sent, 0 failed, 100 to retry; stopped: could not connect to the SMTP server")
    assert {(r["state"], r["attempts"]) for r in rows(rt, ids)} == {("ready", 1)}


@pytest.mark.parametrize("raw", ["0", "33", "four", "-1"])
def test_a_bad_smtp_connections_setting_is_named(monkeypatch, raw):
    from caseloom.config import Config

    monkeypatch.setenv("CASELOOM_SMTP_CONNECTIONS", raw)
    with pytest.raises(ValueError, match=f"CASELOOM_SMTP_CONNECTIONS='{raw}': expected a whole number from 1 to 32"):
        Config.from_env()


# -- what a reply comes to ------------------------------------------------------------------------------

REPLIES = [  # (where, the server's reply, the message's state after one run, the error it keeps)
    ("rcpt", "451 4.3.0 try again later", "ready", "every recipient was refused: r0@example.test: 451 4.3.0 try again later"),
    ("rcpt", "452 4.2.2 mailbox full", "ready", "every recipient was refused: r0@example.test: 452 4.2.2 mailbox full"),
    ("data", "451 4.7.1 greylisted, come back later", "ready", "451 4.7.1 greylisted, come back later"),
    ("rcpt", "550 5.1.1 no such user", "error", "every recipient was refused: r0@example.test: 550 5.1.1 no such user"),
    ("data", "554 5.7.1 message rejected as spam", "error", "554 5.7.1 message rejected as spam"),
    ("data", "421 4.3.2 shutting down", "sent", None),  # the session is over: a new one, and it goes
]


@pytest.mark.parametrize("where, reply, state, error", REPLIES)
def test_a_reply_makes_the_message_sent_retried_or_failed(runtime, mailbox, where, reply, state, error):
    getattr(mailbox, where).append(reply)
    [sys_id] = messages(runtime, 1)
    delivery.deliver_pending(runtime)
    [row] = rows(runtime, [sys_id])
    assert (row["state"], row["error"], row["attempts"]) == (state, error, 1)
    if state == "ready":
        assert 0.95 < minutes_ahead(row["next_attempt"]) <= 1.0
        assert row["type"] == "send-ready" and row["sent_on"] is None
    else:
        assert row["next_attempt"] is None
    assert len(mailbox.messages) == (state == "sent")


def test_a_temporary_failure_waits_for_its_next_attempt_then_goes(runtime, mailbox):
    mailbox.rcpt.append("451 4.3.0 try again later")
    ids = messages(runtime, 1)
    delivery.deliver_pending(runtime)
    assert rows(runtime, ids)[0]["state"] == "ready"
    assert delivery.deliver_pending(runtime) is None  # a minute has not passed: not claimed, no run
    make_due(runtime, ids)
    job = delivery.deliver_pending(runtime)
    assert job.message == "1 sent, 0 failed"
    [row] = rows(runtime, ids)
    assert (row["state"], row["attempts"], row["error"], row["next_attempt"]) == ("sent", 2, None, None)
    assert mailbox.subjects() == ["m000"]


def test_five_temporary_failures_are_an_error_with_the_last_reason(runtime, mailbox):
    mailbox.data.extend(f"451 4.7.1 busy ({i})" for i in range(1, 6))
    ids = messages(runtime, 1)
    waits = []
    for _ in range(5):
        make_due(runtime, ids)
        delivery.deliver_pending(runtime)
        row = rows(runtime, ids)[0]
        waits.append(round(minutes_ahead(row["next_attempt"])) if row["next_attempt"] else None)
    assert waits == [1, 2, 4, 8, None]  # doubling, then no more
    assert (row["state"], row["type"], row["attempts"]) == ("error", "send-failed", 5)
    assert row["error"] == "gave up after 5 attempts: 451 4.7.1 busy (5)"
    assert mailbox.messages == []


@pytest.mark.parametrize("tries, minutes", [(1, 1), (2, 2), (3, 4), (4, 8), (7, 60), (9, 60)])
def test_the_back_off_doubles_up_to_an_hour(monkeypatch, tries, minutes):
    monkeypatch.setattr(delivery, "MAX_ATTEMPTS", 10)
    when = dt.datetime(2030, 1, 1)
    values = delivery.marked(("retry", "451 later"), tries, when)
    assert (values["state"], values["attempts"], values["next_attempt"]) == \
        ("ready", tries, when + dt.timedelta(minutes=minutes))


# -- the rate limit ---------------------------------------------------------------------------------


def test_the_rate_limit_sends_the_minutes_share_and_leaves_the_rest_ready(runtime, mailbox):
    set_property(runtime, "caseloom.email.rate_per_minute", "30")
    ids = messages(runtime, 40)
    job = delivery.deliver_pending(runtime)
    assert job.message == ("30 sent, 0 failed; the rate limit (caseloom.email.rate_per_minute = 30 a minute) "
                           "is reached: 10 message(s) left ready for a later run")
    states = rows(runtime, ids)
    assert [r["state"] for r in states] == ["sent"] * 30 + ["ready"] * 10  # oldest first
    assert {(r["error"], r["attempts"]) for r in states[30:]} == {(None, 0)}
    assert len(mailbox.messages) == 30
    assert delivery.deliver_pending(runtime) is None  # the minute is used up: no run at all
    set_property(runtime, "caseloom.email.rate_per_minute", "0")  # no limit
    assert delivery.deliver_pending(runtime).message == "10 sent, 0 failed"


def test_the_rate_limit_counts_what_other_runs_hold_in_sending(runtime, mailbox):
    set_property(runtime, "caseloom.email.rate_per_minute", "5")
    ids = messages(runtime, 8)
    held = delivery.claim(runtime, 3)  # another worker's batch, not sent yet
    assert len(held) == 3
    assert len(delivery.claim(runtime)) == 2  # 5 a minute, 3 of them in flight
    assert delivery.claim(runtime) == []
    assert sorted(r["state"] for r in rows(runtime, ids)) == ["ready"] * 3 + ["sending"] * 5


# -- bounces ------------------------------------------------------------------------------------------


def dsn(original: str, how: str) -> bytes:
    """A delivery status notification (RFC 3464) as a mail server sends one back."""
    report = ("Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; gone@example.test\r\n"
              "Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <gone@example.test>: "
              "Recipient address rejected: User unknown\r\n")
    returned = {
        "rfc822-headers": f"Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{original}>\r\nSubject: Hi\r\n",
        "rfc822": f"Content-Type: message/rfc822\r\n\r\nMessage-ID: <{original}>\r\nSubject: Hi\r\n\r\nHello.\r\n",
        "in-reply-to": "Content-Type: text/plain\r\n\r\n(no returned message)\r\n",
    }[how]
    thread = f"In-Reply-To: <{original}>\r\n" if how == "in-reply-to" else ""
    return (f"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: caseloom@example.test\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{how}@mx.example.net>\r\n{thread}"
            f"Auto-Submitted: auto-replied\r\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
            f"--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\n{report}"
            f"--B\r\n{returned}--B--\r\n").encode()


def case_count(client) -> str:
    stats = client.get("/api/now/stats/sn_customerservice_case?sysparm_count=true", headers=basic("admin"))
    return stats.json["result"]["stats"]["count"]


@pytest.mark.parametrize("how", ["rfc822-headers", "rfc822", "in-reply-to"])
def test_a_delivery_status_notification_marks_its_message_bounced(app, client, how):
    headers = basic("admin")
    ids = [client.post("/api/now/table/sys_email", headers=headers, json={
        "recipients": "gone@example.test", "subject": f"s{i}", "body": "b", "state": "sent", "type": "sent"}
    ).json["result"]["sys_id"] for i in range(2)]
    cases = case_count(client)
    out = client.post(INBOUND, data=dsn(f"{ids[1]}@example.test", how),
                      headers={**headers, "Content-Type": "message/rfc822"}).json["result"]
    diagnostic = "5.1.1 (smtp; 550 5.1.1 <gone@example.test>: Recipient address rejected: User unknown)"
    assert (out["action"], out["reason"], out["sys_id"]) == ("ignored", f"a bounce of {ids[1]}: {diagnostic}", "")
    bounced = client.get(f"/api/now/table/sys_email/{ids[1]}", headers=headers).json["result"]
    assert (bounced["state"], bounced["type"], bounced["error"]) == ("bounced", "send-failed", f"bounced: {diagnostic}")
    assert client.get(f"/api/now/table/sys_email/{ids[0]}", headers=headers).json["result"]["state"] == "sent"
    kept = client.get(f"/api/now/table/sys_email/{out['email']}", headers=headers).json["result"]
    assert (kept["type"], kept["state"], kept["reason"]) == ("received-ignored", "ignored", out["reason"])
    assert case_count(client) == cases  # a bounce never opens a case
    stats = client.get("/api/now/stats/sys_email?sysparm_count=true&sysparm_group_by=state&sysparm_query=type!=received-"
                       "ignored", headers=headers).json["result"]
    assert {g["groupby_fields"][0]["value"]: g["stats"]["count"] for g in stats} == {"bounced": "1", "sent": "1"}


# -- progress on the major case --------------------------------------------------------------------------


@pytest.fixture
def delivered(runtime, mailbox):
    """Whatever the demo data had waiting is sent first: the scripted replies then meet the major case's."""
    delivery.deliver_pending(runtime)
    mailbox.messages.clear()


@pytest.fixture
def major(client, runtime, delivered):
    return accepted_major(client, runtime)


def test_the_major_case_shows_how_far_its_e_mails_have_got(runtime, client, mailbox, major):
    import html
    import re

    from conftest import ui_sign_in
    from test_workspace import CASE

    ui_sign_in(client, "mim")

    def progress() -> tuple[str, str, str]:
        part = html.unescape(client.get(f"/ui/workspace/{CASE}/{major['sys_id']}/communications").get_data(as_text=True))
        line = re.sub(r"\s+", " ", re.search(r"<li>(\d+ e-mails: [^<]*)", part).group(1)).strip()
        bar = re.search(r'<progress class="ws-email-progress" max="(\d+)" value="(\d+)"', part)
        return line, f"{bar[2]} of {bar[1]}", re.search(r'hx-trigger="([^"]*)"', part).group(1)

    for update in ("We are on it.", "A fix is being rolled out."):  # each update tells every child's contact
        assert client.patch(f"/api/now/table/{CASE}/{major['sys_id']}", json={"comments": update},
                            headers=basic("mim")).status_code == 200
    line, bar, refresh = progress()
    total = int(line.split()[0])
    assert total >= 4  # one customer per child case told of it, then of each update
    assert (line, bar) == (f"{total} e-mails: 0 delivered, 0 failed, {total} waiting", f"0 of {total}")
    assert refresh == "every 5s, job-finished from:body"  # it refreshes itself while e-mails wait

    mailbox.data += ["451 4.7.1 greylisted, come back later", "554 5.7.1 message rejected as spam"]  # one message each
    delivery.deliver_pending(runtime)
    line, bar, refresh = progress()
    assert line == f"{total} e-mails: {total - 2} delivered, 1 failed, 1 waiting (1 to retry after a temporary failure)"
    assert bar == f"{total - 1} of {total}" and refresh.startswith("every 5s")

    children = client.get(f"/api/now/table/{CASE}?sysparm_query=parent={major['sys_id']}&sysparm_fields=sys_id",
                          headers=basic("admin")).json["result"]
    sent = client.get("/api/now/table/sys_email?sysparm_fields=sys_id&sysparm_limit=1&sysparm_query=state=sent^instanceIN"
                      + ",".join(c["sys_id"] for c in children), headers=basic("admin")).json["result"][0]
    client.post(INBOUND, data=dsn(f"{sent['sys_id']}@example.test", "rfc822"),
                headers={**basic("admin"), "Content-Type": "message/rfc822"})
    assert progress()[0].endswith(", 1 bounced")

    table = runtime.storage.physical("sys_email")
    with runtime.engine.connect() as conn:
        waiting = conn.execute(sa.select(table.c.sys_id).where(table.c.state == "ready")).scalars().all()
    make_due(runtime, waiting)
    delivery.deliver_pending(runtime)
    line, bar, refresh = progress()
    assert line == f"{total} e-mails: {total - 2} delivered, 1 failed, 0 waiting, 1 bounced"
    assert bar == f"{total} of {total}" and refresh == "job-finished from:body"  # all settled: no more polling
