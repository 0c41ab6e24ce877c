"""`email_delivery`: N ready e-mails delivered by two `caseloom worker` processes to a local SMTP
server (aiosmtpd, in a process of its own), from queueing to the last one marked; the baseline sends
the same messages, rendered beforehand, with smtplib over one connection to the same server.

The server runs apart from the bench so that neither the figure nor the baseline shares an
interpreter (and its lock) with it: in the bench's own process, smtplib and the server took turns
on one core."""

from __future__ import annotations

import dataclasses
import multiprocessing
import smtplib
import socket
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


class Counter:
    """An aiosmtpd handler that accepts every message and only counts them (in memory shared with
    the bench)."""

    def __init__(self, messages) -> None:
        self.messages = messages

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.value += 1  # one event loop: no other writer
        return "250 OK"


def _serve(port: int, messages, ready, stop) -> None:
    """The SMTP server process: listens on `port` until `stop` is set."""
    from aiosmtpd.controller import Controller

    server = Controller(Counter(messages), hostname="127.0.0.1", port=port)
    server.start()
    ready.set()
    stop.wait()
    server.stop()


class Server:
    """The counting SMTP server, in a process of its own."""

    def __init__(self) -> None:
        try:
            import aiosmtpd  # noqa: F401
        except ImportError:
            raise RuntimeError(f"{NAME} needs aiosmtpd for its SMTP server (pip install aiosmtpd, a test "
                               "dependency)") from None
        context = multiprocessing.get_context("spawn")
        self.port = _free_port()
        self.messages = context.Value("q", 0, lock=False)
        self._stop, ready = context.Event(), context.Event()
        self._process = context.Process(target=_serve, args=(self.port, self.messages, ready, self._stop), daemon=True)
        self._process.start()
        if not ready.wait(30):
            self.close()
            raise RuntimeError(f"{NAME}: the SMTP server did not start on port {self.port}")

    def close(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def email_delivery(run: BenchRun) -> Result:
    from .suite import Result

    n = min(getattr(run, "children", run.scale), MOST)
    rows = _ready_emails(run, n)
    server = Server()
    port = server.port
    try:
        seconds, peak = _delivered(run, n, port)
        if server.messages.value != n:
            raise RuntimeError(f"{NAME}: the SMTP server received {server.messages.value:,} messages, not {n:,}")
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
