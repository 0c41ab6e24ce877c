"""Prometheus metrics (`GET /metrics`, the Prometheus text format).

HTTP requests are counted where they are answered. Under `caseloom serve`, gunicorn answers in
several processes: the server sets PROMETHEUS_MULTIPROC_DIR before they start (caseloom.serving),
prometheus_client then keeps each process's counts in files there, and a scrape answered by any
process sums the files of all (its multiprocess mode). Without it (tests, `serve --dev`) the
counts live in the app's own registry.

Everything else is read when scraped, so every process answers the same: the queue's pending
count, and grouped counts from the database (`STORE_GAUGES`, and the jobs of sys_job with their
durations). Each is one GROUP BY on an indexed column, over tables the definitions have; one that
fails (a table not migrated yet, the database away) is left out of that scrape and logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .jobs.progress import FINISHED
from .jobs.workers import alive_count
from .storage import Storage

if TYPE_CHECKING:
    from .jobs import JobQueue
    from .runtime import Runtime

log = logging.getLogger(__name__)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the classic text format generate_latest writes
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route of a request no URL rule matched (a 404): never its raw path
# No `_created` series: the multiprocess mode has none, and a scrape reads the same either way.
disable_created_metrics()


def multiprocess() -> bool:
    """Whether this process counts into PROMETHEUS_MULTIPROC_DIR (set by `caseloom serve`)."""
    return bool(os.environ.get(MULTIPROC_DIR))


class HttpMetrics:
    """The request counter and latency histogram of one app. Labels are bounded: the method (an
    unusual one is `other`), the URL rule (`/api/now/table/<table>/<sys_id>`, never the path, so
    sys_ids do not multiply the series) and the status."""

    def __init__(self) -> None:
        if multiprocess() and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(f"{MULTIPROC_DIR} was set after prometheus_client was imported: counts would "
                               "stay in each process; set it before the server starts (caseloom.serving)")
        self.registry = None if multiprocess() else CollectorRegistry()
        self.requests = Counter("caseloom_http_requests", "HTTP requests answered, by method, route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.duration = Histogram("caseloom_http_request_duration_seconds",
                                  "Time to answer an HTTP request (until the view's response), by method and route",
                                  ["method", "route"], registry=self.registry)

    def observe(self, method: str, route: str | None, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        route = route or UNMATCHED
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def families(self) -> Iterable[Metric]:
        if multiprocess():
            return MultiProcessCollector(None).collect()  # every process's files, summed
        assert self.registry is not None
        return self.registry.collect()


class _Families(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def exposition(http: HttpMetrics, runtime: Runtime, queue: JobQueue) -> bytes:
    """The text a scrape answers: the HTTP metrics, then what the queue and the database say now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(http.families))
    registry.register(_Families(lambda: store_families(runtime, queue)))
    return generate_latest(registry)


# -- read at scrape time -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreGauge:
    """Rows of a record table counted by the values of some fields, when the definitions have the table."""

    metric: str
    help: str
    table: str
    fields: tuple[str, ...]


STORE_GAUGES = (
    StoreGauge("caseloom_emails", "E-mails in sys_email, by state", "sys_email", ("state",)),
    StoreGauge("caseloom_task_slas", "Task SLAs (task_sla), by stage and whether breached", "task_sla",
               ("stage", "has_breached")),
    StoreGauge("caseloom_em_alerts", "Alerts (em_alert), by state", "em_alert", ("state",)),
)


def store_families(runtime: Runtime, queue: JobQueue) -> Iterator[Metric]:
    """The gauges read now from the queue and the database; a part that cannot be read is left out."""
    try:
        pending = GaugeMetricFamily("caseloom_queue_pending", "Task messages waiting in the job queue")
        pending.add_metric([], queue.pending())
        yield pending
    except Exception as exc:
        log.warning("metrics: the queue's pending count could not be read: %s: %s", type(exc).__name__, exc)
    try:
        with runtime.engine.connect() as conn:
            yield from _database_families(conn, runtime)
    except Exception as exc:
        log.warning("metrics: the database could not be read: %s: %s", type(exc).__name__, exc)


def _database_families(conn: sa.Connection, runtime: Runtime) -> Iterator[Metric]:
    readers: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
        ("sys_job", lambda: _job_families(conn, runtime.storage)),
        ("sys_worker", lambda: [_workers_family(conn, runtime.storage)]),
    ]
    readers += [(g.table, lambda g=g: [_store_gauge(conn, runtime.storage, g)])
                for g in STORE_GAUGES if g.table in runtime.defs.tables]
    for table, read in readers:
        try:
            yield from list(read())
        except Exception as exc:
            log.warning("metrics: %s could not be counted: %s: %s", table, type(exc).__name__,
                        (str(exc).splitlines() or [""])[0])
            conn.rollback()  # PostgreSQL refuses any statement after an error in the transaction


def _label(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _store_gauge(conn: sa.Connection, storage: Storage, gauge: StoreGauge) -> Metric:
    table = storage.physical(gauge.table)
    columns = [table.c[f] for f in gauge.fields]
    # `IS NOT NULL` lets the first field's partial index (storage._partial_index) serve the count
    where = [columns[0].is_not(None)]
    if (classes := storage.class_filter(gauge.table, table)) is not None:
        where.append(classes)
    rows = conn.execute(sa.select(*columns, sa.func.count()).where(*where).group_by(*columns)).all()
    family = GaugeMetricFamily(gauge.metric, gauge.help, labels=list(gauge.fields))
    for *labels, count in rows:
        family.add_metric([_label(v) for v in labels], count)
    return family


def _seconds_between(start: sa.ColumnElement, end: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    if dialect == "postgresql":
        return sa.extract("epoch", end - start)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def _job_families(conn: sa.Connection, storage: Storage) -> list[Metric]:
    """Jobs by name and state, and the durations of finished ones (created to last update: the
    wait in the queue included), as a summary by name and state."""
    job = storage.internal("sys_job")
    finished = job.c.state.in_(FINISHED)
    duration = sa.case((finished, _seconds_between(job.c.created_on, job.c.updated_on, conn.dialect.name)))
    rows = conn.execute(sa.select(job.c.name, job.c.state, sa.func.count(), sa.func.sum(duration))
                        .group_by(job.c.name, job.c.state)).all()
    jobs = GaugeMetricFamily("caseloom_jobs", "Background jobs in sys_job, by name and state", labels=["name", "state"])
    durations = SummaryMetricFamily("caseloom_job_duration_seconds",
                                    "Seconds from creation to end of finished background jobs, by name and state",
                                    labels=["name", "state"])
    for name, state, count, seconds in rows:
        jobs.add_metric([name, state], count)
        if state in FINISHED:
            durations.add_metric([name, state], count, max(float(seconds or 0.0), 0.0))
    return [jobs, durations]


def _workers_family(conn: sa.Connection, storage: Storage) -> Metric:
    family = GaugeMetricFamily("caseloom_workers_alive",
                               "Job workers seen in sys_worker within CASELOOM_JOB_LOST_SECONDS")
    family.add_metric([], alive_count(conn, storage))
    return family
