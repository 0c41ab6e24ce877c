"""Whether this deployment can do its work now (`GET /health`). Three parts:

- database: it answers `SELECT 1`;
- queue: huey's storage (`CASELOOM_QUEUE`) answers how many task messages are pending;
- workers: a job consumer was seen in sys_worker within the liveness timing's `lost_after`
  (caseloom.jobs.workers).

Each check runs in a thread of its own with a deadline (`PROBE_SECONDS`), so a database or queue
that hangs makes the answer "down" within that time instead of hanging it. A check still running
from an earlier call is waited on again rather than started twice: a load balancer asking every few
seconds does not pile up threads on a dead host. The answer names a failure only by its kind (an
exception's class name, or `timeout`), never a host, URL or password; the full reason is logged once
when a part goes down, and a line says when it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .jobs.liveness import timing
from .jobs.workers import SeenWorker, seen
from .storage import Storage

if TYPE_CHECKING:
    from .jobs import JobQueue

log = logging.getLogger(__name__)

PROBE_SECONDS = 2.0
SEEN_LISTED = 50  # workers listed in the answer, the most recently seen first


@dataclass(frozen=True)
class Probe:
    """One check's outcome: whether it answered, in how long, what it answered, and if not, why."""

    ok: bool
    ms: float
    value: Any = None
    error: str | None = None  # the kind of failure, safe to show: an exception's class name or "timeout"
    reason: str = field(default="", repr=False)  # the failure in full, for the log only


class _Attempt:
    """A check running in a daemon thread; `done` is set when it has returned or raised."""

    def __init__(self, check: Callable[[], Any]):
        self.started = time.perf_counter()
        self.done = threading.Event()
        self.value: Any = None
        self.failure: BaseException | None = None
        self.ms = 0.0
        threading.Thread(target=self._run, args=(check,), name="health-check", daemon=True).start()

    def _run(self, check: Callable[[], Any]) -> None:
        try:
            self.value = check()
        except Exception as exc:
            self.failure = exc
        finally:
            self.ms = (time.perf_counter() - self.started) * 1000
            self.done.set()

    def probe(self, deadline: float, timeout: float) -> Probe:
        if not self.done.wait(max(deadline - time.monotonic(), 0.0)):
            waited = (time.perf_counter() - self.started) * 1000
            return Probe(False, waited, error="timeout", reason=f"no answer within {timeout:g} s")
        if self.failure is not None:
            first_line = (str(self.failure).splitlines() or [""])[0]
            return Probe(False, self.ms, error=type(self.failure).__name__,
                         reason=f"{type(self.failure).__name__}: {first_line}")
        return Probe(True, self.ms, self.value)


class Prober:
    """Runs named checks at once, each bounded by `timeout`; one attempt per name in flight at a time."""

    def __init__(self, timeout: float = PROBE_SECONDS):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._running: dict[str, _Attempt] = {}

    def run(self, checks: dict[str, Callable[[], Any]]) -> dict[str, Probe]:
        attempts = {name: self._attempt(name, check) for name, check in checks.items()}
        deadline = time.monotonic() + self.timeout
        return {name: attempt.probe(deadline, self.timeout) for name, attempt in attempts.items()}

    def _attempt(self, name: str, check: Callable[[], Any]) -> _Attempt:
        with self._lock:
            attempt = self._running.get(name)
            if attempt is None or attempt.done.is_set():
                attempt = self._running[name] = _Attempt(check)
            return attempt


@dataclass(frozen=True)
class WorkersSeen:
    lost_after: float  # seconds: a worker seen longer ago is not alive (CASELOOM_JOB_LOST_SECONDS)
    seen: list[SeenWorker]  # every worker sys_worker holds, the most recently seen first


@dataclass(frozen=True)
class HealthReport:
    database: Probe
    queue: Probe
    queue_kind: str
    workers: Probe  # its value: a WorkersSeen

    @property
    def seen(self) -> list[SeenWorker]:
        return self.workers.value.seen if self.workers.ok else []

    @property
    def alive(self) -> list[SeenWorker]:
        return [w for w in self.seen if w.alive(self.workers.value.lost_after)]

    def verdicts(self) -> dict[str, tuple[bool, str]]:
        """Each part: up or not, and why not (for the log)."""
        workers_why = self.workers.reason or (f"no job worker seen within {self.workers.value.lost_after:g} s "
                                              "(CASELOOM_JOB_LOST_SECONDS)")
        return {"database": (self.database.ok, self.database.reason),
                "queue": (self.queue.ok, self.queue.reason),
                "workers": (self.workers.ok and bool(self.alive), workers_why)}

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.verdicts().values())

    def as_json(self) -> dict:
        verdicts = self.verdicts()
        answer = {
            "status": "ok" if self.ok else "down",
            "database": {"ok": verdicts["database"][0], "ms": round(self.database.ms, 2)},
            "queue": {"ok": verdicts["queue"][0], "kind": self.queue_kind, "pending": self.queue.value,
                      "ms": round(self.queue.ms, 2)},
            "workers": {"ok": verdicts["workers"][0], "alive": len(self.alive),
                        "seen": [w.as_json() for w in self.seen[:SEEN_LISTED]]},
        }
        for part, probe in (("database", self.database), ("queue", self.queue), ("workers", self.workers)):
            if probe.error:
                answer[part]["error"] = probe.error
        return answer


class Health:
    """The health checks of one server process: the checks in flight, and which parts were last
    found down (so going down and coming back are logged once each)."""

    def __init__(self, timeout: float = PROBE_SECONDS):
        self.prober = Prober(timeout)
        self._down: dict[str, str] = {}
        self._lock = threading.Lock()

    def check(self, engine: sa.Engine, storage: Storage, queue: JobQueue) -> HealthReport:
        def database() -> None:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1")).scalar_one()

        def workers() -> WorkersSeen:
            lost_after = timing().lost_after  # a bad CASELOOM_JOB_LOST_SECONDS: the part is down, logged
            with engine.connect() as conn:
                return WorkersSeen(lost_after, seen(conn, storage))

        probes = self.prober.run({"database": database, "queue": queue.pending, "workers": workers})
        report = HealthReport(probes["database"], probes["queue"], queue.kind, probes["workers"])
        self._log_changes(report)
        return report

    def _log_changes(self, report: HealthReport) -> None:
        with self._lock:
            for part, (ok, why) in report.verdicts().items():
                if not ok and part not in self._down:
                    log.warning("health: %s is down: %s", part, why)
                    self._down[part] = why
                elif ok and part in self._down:
                    log.info("health: %s is up again", part)
                    del self._down[part]
