"""E-mail in through a real IMAP server: a Dovecot of the test's own (Debian's dovecot-imapd, which
`.ci/run` installs) on a free port, with one mailbox. Messages are put there with IMAP APPEND, as a
mail server would deliver them; `caseloom email poll` and the worker's poll read them."""

from __future__ import annotations

import dataclasses
import imaplib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from caseloom.cli import main
from caseloom.inbound.imap import mailbox_of, poll
from caseloom.runtime import Runtime
from conftest import DEFINITIONS, basic, free_port
from test_email_inbound import CASES, mail

DOVECOT = os.environ.get("CASELOOM_DOVECOT") or shutil.which("dovecot") or "/usr/sbin/dovecot"
CONFIG = """
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
"""


@pytest.fixture
def imap_url():
    """A running Dovecot with the mailbox support (password s3cret@p%ss, to test the URL's quoting)."""
    if not Path(DOVECOT).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Dovecot at {DOVECOT}: .ci/run installs dovecot-imapd")
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd; CI installs it)")
    # Dovecot's own processes (users dovecot and dovenull) must reach the files: not under pytest's
    # private temporary folder
    root = Path(tempfile.mkdtemp(prefix="caseloom-dovecot-"))
    for sub in ("run", "state", "home"):
        (root / sub).mkdir()
    root.chmod(0o755)
    uid, gid = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())
    if os.getuid() == 0:
        os.chown(root / "home", uid, gid)
    port = free_port()
    (root / "users").write_text("support:{PLAIN}s3cret@p%ss\n")
    (root / "users").chmod(0o644)
    (root / "dovecot.conf").write_text(CONFIG.format(root=root, port=port, uid=uid, gid=gid))
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    url = f"imap://support:s3cret%40p%25ss@127.0.0.1:{port}/INBOX"
    for _ in range(100):
        try:
            imaplib.IMAP4("127.0.0.1", port, timeout=2).shutdown()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
        pytest.fail(f"Dovecot did not start: {process.stderr.read().decode() if process.stderr else ''} {log}")
    yield url
    process.terminate()
    process.wait(10)
    shutil.rmtree(root, ignore_errors=True)


def deliver(url: str, *messages: bytes) -> None:
    box = mailbox_of(url)
    client = imaplib.IMAP4(box.host, box.port)
    client.login(box.user, box.password)
    for raw in messages:
        client.append(box.folder, None, None, raw)
    client.logout()


def flags(url: str) -> list[bytes]:
    box = mailbox_of(url)
    client = imaplib.IMAP4(box.host, box.port)
    client.login(box.user, box.password)
    client.select(box.folder)
    _, data = client.fetch("1:*", "(FLAGS)")
    client.logout()
    return [item for item in data if item]


@pytest.fixture
def mail_runtime(config, definitions, imap_url):
    rt = Runtime(dataclasses.replace(config, imap_url=imap_url), definitions)
    yield rt
    rt.engine.dispose()


def test_the_poll_opens_a_case_and_comments_a_reply_and_flags_both_seen(mail_runtime, imap_url, client):
    deliver(imap_url, mail(subject="Disk full", headers={"Message-ID": "<m1@customer.example>"}))
    report = poll(mail_runtime)
    assert (report.read, report.outcomes) == (1, ["created"])
    found = client.get(f"{CASES}?sysparm_query=short_description=Disk full&sysparm_fields=sys_id",
                       headers=basic("admin")).json["result"]
    assert len(found) == 1
    deliver(imap_url, mail(subject="Re: Disk full", body="Now it is worse.",
                           headers={"In-Reply-To": "<m1@customer.example>"}))
    assert poll(mail_runtime).outcomes == ["commented"]
    assert poll(mail_runtime).read == 0  # both seen: nothing is read twice
    assert all(b"\\Seen" in f for f in flags(imap_url))


def test_a_message_read_again_after_a_crash_does_nothing_twice(mail_runtime, imap_url):
    raw = mail(subject="Once only", headers={"Message-ID": "<once@customer.example>"})
    deliver(imap_url, raw, raw)  # as if the first had been acted on but not flagged before a crash
    assert poll(mail_runtime).outcomes == ["created", "ignored"]


def test_what_is_not_an_email_is_flagged_for_a_person(mail_runtime, imap_url):
    deliver(imap_url, b"Subject: no sender at all\r\n\r\nbody\r\n")
    report = poll(mail_runtime)
    assert report.outcomes == ["refused"]
    assert b"\\Flagged" in flags(imap_url)[0]


def test_a_message_larger_than_the_limit_is_not_read_but_kept_as_ignored_and_flagged(mail_runtime, imap_url, client):
    """The mailbox holds the API's limit (`caseloom.email.inbound.max_bytes`): a larger message is read
    no further than its headers (a 250 MiB one took 2.3 GB to read whole), kept as ignored with the
    reason, flagged for a person; the message after it is read as usual."""
    prop = client.get("/api/now/table/sys_properties?sysparm_query=name=caseloom.email.inbound.max_bytes",
                      headers=basic("admin")).json["result"][0]
    r = client.patch(f"/api/now/table/sys_properties/{prop['sys_id']}", json={"value": "5000"}, headers=basic("admin"))
    assert r.status_code == 200, r.json
    deliver(imap_url, mail(subject="Huge", body="x" * 20_000, headers={"Message-ID": "<huge@customer.example>"}),
            mail(subject="Small one"))
    report = poll(mail_runtime)
    assert (report.read, report.outcomes) == (2, ["refused", "created"])
    assert b"\\Flagged" in flags(imap_url)[0] and b"\\Seen" in flags(imap_url)[0]
    kept = client.get("/api/now/table/sys_email?sysparm_query=subject=Huge", headers=basic("admin")).json["result"]
    assert [(k["type"], k["body"]) for k in kept] == [("received-ignored", "")]
    assert kept[0]["reason"].startswith("refused: the message is larger than 5,000 bytes (")
    assert poll(mail_runtime).read == 0


# the contract's command (section 4), and its first name, kept for the scripts that use it
MAIL_COMMANDS = [["mail", "fetch"], ["email", "poll"]]


@pytest.mark.parametrize("command", MAIL_COMMANDS, ids=" ".join)
def test_caseloom_mail_fetch_reads_the_mailbox(database_url, imap_url, monkeypatch, command):
    deliver(imap_url, mail(subject="From the command line"))
    monkeypatch.setenv("CASELOOM_DATABASE_URL", database_url)
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    monkeypatch.setenv("CASELOOM_IMAP_URL", imap_url)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0, result.output
    assert "1 message(s): 1 created" in result.output


@pytest.mark.parametrize("command", MAIL_COMMANDS, ids=" ".join)
def test_mail_fetch_without_a_mailbox_says_what_to_set(database_url, monkeypatch, command):
    monkeypatch.setenv("CASELOOM_DATABASE_URL", database_url)
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    monkeypatch.delenv("CASELOOM_IMAP_URL", raising=False)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert result.output == f"caseloom {' '.join(command)}: CASELOOM_IMAP_URL is not set (imap://user:password@host/INBOX)\n"


def test_a_message_the_definitions_refuse_is_kept_as_ignored_flagged_and_the_poll_goes_on(config, definitions_copy,
                                                                                         imap_url, client):
    """An inbound action's effect refuses the first message after its case was written: its work is
    rolled back, it is kept as received-ignored with the reason and flagged for a person, and the
    message after it is taken in the same poll; neither comes back at the next poll."""
    from caseloom.definitions import load_folder
    from test_email_inbound import refusing

    refusing(definitions_copy)
    rt = Runtime(dataclasses.replace(config, imap_url=imap_url, definitions=str(definitions_copy)),
                 load_folder(definitions_copy))
    try:
        deliver(imap_url, mail(subject="Please refuse"), mail(subject="Printer on fire"))
        report = poll(rt)
        assert report.outcomes == ["refused", "created"]
        assert str(report) == "2 message(s): 1 refused, 1 created"
        first, second = flags(imap_url)
        assert b"\\Seen" in first and b"\\Flagged" in first and b"\\Seen" in second and b"\\Flagged" not in second
        assert poll(rt).read == 0
    finally:
        rt.engine.dispose()
    kept = client.get("/api/now/table/sys_email?sysparm_query=subject=Please refuse&sysparm_fields=type,reason",
                      headers=basic("admin")).json["result"]
    assert kept == [{"type": "received-ignored", "reason": "refused: short_description: this message is not kept"}]
    assert client.get(f"{CASES}?sysparm_query=short_description=Please refuse",
                      headers=basic("admin")).json["result"] == []


@pytest.mark.parametrize("url, words", [
    ("pop3://u:p@host/", "expected imap://"),
    ("imap://host/INBOX", "user name is missing"),
    ("imap://u:p@host:99999/", "port"),
])
def test_a_bad_mailbox_url_is_refused_naming_what_is_wrong(url, words):
    with pytest.raises(ValueError, match=words):
        mailbox_of(url)


def test_the_password_is_never_shown_in_an_error():
    with pytest.raises(ValueError) as info:
        mailbox_of("imap://u:topsecret@host:0x/")
    assert "topsecret" not in str(info.value)


def test_a_mailbox_that_cannot_be_reached_is_a_clear_error(database_url, monkeypatch):
    monkeypatch.setenv("CASELOOM_DATABASE_URL", database_url)
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    monkeypatch.setenv("CASELOOM_IMAP_URL", f"imap://u:p@127.0.0.1:{free_port()}/INBOX")
    result = CliRunner().invoke(main, ["mail", "fetch"])
    assert result.exit_code == 1 and "caseloom mail fetch: the mailbox could not be read" in result.output
