"""`email_delivery`: N ready e-mails delivered by two `caseloom worker` processes to a local SMTP
server (aiosmtpd, in a process of its own: `caseloom.bench.smtpd`), from queueing to the last one
marked; the baseline sends the same messages, rendered beforehand, with smtplib over one connection
to the same server."""

from __future__ import annotations

import dataclasses
import smtplib
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..jobs import JobQueue
from ..jobs.smtp import wire
from .workers import peak_mb_of, start_workers, stop_workers

if TYPE_CHECKING:
    from .suite import BenchRun, Result

NAME = "email_delivery"
MOST = 100_000  # messages at most, whatever the scale
SENDER = "bench@caseloom.example"
WORKERS = 2
POLL = 0.1


class Server:
    """The counting SMTP server (`caseloom.bench.smtpd`), in a process of its own."""

    def __init__(self) -> None:
        try:
            import aiosmtpd  # noqa: F401
        except ImportError:
            raise RuntimeError(f"{NAME} needs aiosmtpd for its SMTP server (pip install aiosmtpd, a test "
                               "dependency)") from None
        self.port = _free_port()
        self._process = subprocess.Popen([sys.executable, "-m", "caseloom.bench.smtpd", str(self.port)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._process.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"{NAME}: the SMTP server did not start on port {self.port}")

    def received(self) -> int:
        """The messages it has accepted so far."""
        self._process.stdin.write("count\n")
        self._process.stdin.flush()
        return int(self._process.stdout.readline())

    def close(self) -> None:
        try:
            self._process.stdin.close()
            self._process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()


def email_delivery(run: BenchRun) -> Result:
    from .suite import Result

    n = min(getattr(run, "children", run.scale), MOST)
    rows = _ready_emails(run, n)
    server = Server()
    port = server.port
    try:
        seconds, peak = _delivered(run, n, port)
        received = server.received()
        if received != n:
            raise RuntimeError(f"{NAME}: the SMTP server received {received:,} messages, not {n:,}")
        baseline = _plain_send(run, rows, port)
    finally:
        server.close()
    run.say(f"{NAME}: {n:,} e-mails in {seconds:.2f} s by {WORKERS} worker processes ({n / seconds:,.0f}/s), "
            f"peak memory per worker {peak:.0f} MB; baseline {baseline:.2f} s ({n / baseline:,.0f}/s), smtplib "
            f"over one connection")
    return Result(NAME, n, seconds, baseline, {"peak_mb": peak})


def _ready_emails(run: BenchRun, n: int) -> list[dict]:
    """N notifications waiting in ready, as a notification writes them, and nothing else ready."""
    rows = [{"recipients": f"customer{i}@bench.example", "subject": f"Storage outage in region QQ ({i})",
             "body": f"Dear customer {i},\n\nwe are aware of the storage outage and are working on it.\n"
                     "We will update you within the hour.", "state": "ready"} for i in range(n)]
    with run.runtime.transaction() as service:
        table = service.storage.physical("sys_email")
        # what the scenario's notifications left waiting (no SMTP host so far) is set aside, so the
        # workers send exactly these N
        earlier = service.conn.execute(sa.update(table).where(table.c.state == "ready").values(state="canceled"))
        service.insert_many("sys_email", rows)
        found = service.conn.execute(sa.select(table.c.sys_id, table.c.recipients, table.c.subject, table.c.body)
                                     .where(table.c.state == "ready")).mappings().all()
    run.say(f"{NAME}: {earlier.rowcount:,} e-mails the scenario left ready set aside (canceled), {n:,} queued")
    return [dict(r) for r in found]


def _delivered(run: BenchRun, n: int, port: int) -> tuple[float, float]:
    """Two workers deliver every ready e-mail: (seconds from queueing to the last one marked, the
    larger peak memory of the two in MB)."""
    runtime = run.runtime
    runtime.engine.dispose()
    processes = start_workers(run.config, WORKERS, CASELOOM_SMTP_HOST="127.0.0.1", CASELOOM_SMTP_PORT=str(port),
                              CASELOOM_SMTP_FROM=SENDER, CASELOOM_SMTP_STARTTLS="false")
    table = runtime.storage.physical("sys_email")
    waiting = sa.select(sa.func.count()).select_from(table).where(table.c.state.in_(["ready", "sending"]))
    try:
        started = time.perf_counter()
        queue = JobQueue(runtime)
        for _ in range(WORKERS):  # one run for each worker; they share the messages batch by batch
            queue.enqueue("deliver_email")
        deadline = started + 3600
        while time.perf_counter() < deadline:
            with runtime.engine.connect() as conn:
                if conn.execute(waiting).scalar_one() == 0:
                    break
            time.sleep(POLL)
        seconds = time.perf_counter() - started
        peak = max(peak_mb_of(p.pid) for p in processes)
    finally:
        stop_workers(processes)
    with runtime.engine.connect() as conn:
        states = dict(conn.execute(sa.select(table.c.state, sa.func.count()).group_by(table.c.state)).all())
    if states.get("sent", 0) < n:
        raise RuntimeError(f"{NAME}: not every e-mail was sent: {states}")
    return seconds, peak


def _plain_send(run: BenchRun, rows: list[dict], port: int) -> float:
    """The same messages (rendered beforehand) sent with smtplib over one connection."""
    config = dataclasses.replace(run.config, smtp_from=SENDER)
    rendered = [(row["recipients"], _as_bytes(wire(config, row, [row["recipients"]]))) for row in rows]
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for recipient, data in rendered:
            smtp.sendmail(SENDER, [recipient], data)
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_bytes(rendered) -> bytes:
    return rendered if isinstance(rendered, bytes) else rendered.as_bytes()
