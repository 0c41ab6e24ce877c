"""SLA repair in the background (caseloom.timing.repair): the records of a table matching an encoded
query, a chunk at a time, each chunk one unit of work committed with the job's progress (records
repaired of those that matched when it started) and the repair's log. A web request repairs up to
IN_A_REQUEST records itself and starts this job for more (`repair_or_start`). A run reads the matching
records' keys once, then repairs them CHUNK at a time; a re-run after a lost worker goes on after the
last chunk committed (`after`, kept in the job's params with the chunk); stopping the job keeps the
chunks done and ends the log `stopped`, and running the repair again does them again, to the same
result. The job's target is the repair's log, whose form shows its panel."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..query import Query, parse_encoded
from ..records import RecordService
from ..timing.repair import (
    CHUNK,
    LOG,
    Repaired,
    administrator,
    end_log,
    label_of,
    matching,
    note_log,
    repair_records,
    repair_these,
    start_log,
)
from .progress import Job, create_job
from .registry import JobRun, claim_lost, describe, job

logger = logging.getLogger(__name__)

JOB = "sla_repair"
IN_A_REQUEST = 10_000  # records one web request repairs itself (the API, a list); more: this job


@dataclass(frozen=True)
class RepairStarted:
    """What a web request's repair did: the repair itself (`done`), or the job it started (`job`); and
    the repair's log either way."""

    label: str  # the table's label, lower case
    matching: int
    log: Repaired  # the repair's log: its sys_id and number
    done: Repaired | None = None
    job: str | None = None

    @property
    def message(self) -> str:
        if self.done is not None:
            return self.done.words(self.label)
        return (f"Repairing the SLAs of {self.matching:,} {self.label} records in the background (more than "
                f"{IN_A_REQUEST:,}, as one request repairs)")


def repair_or_start(service: RecordService, table: str, query: str, source: str = "api") -> RepairStarted:
    """Repair the SLAs of `table`'s records matching the encoded `query` now, or, when more than
    IN_A_REQUEST match, start a job that does (the caller enqueues it after commit); logged as started
    from `source`. Checked now: the actor (an administrator), the table and the query."""
    administrator(service)  # before the query is read: whoever may not repair learns only that
    where = parse_encoded(query).where
    ids = matching(service, table, where, limit=IN_A_REQUEST + 1)  # checks the table first
    label = service.defs.tables[table].label.lower()
    log = start_log(service, table, query, source)
    if len(ids) <= IN_A_REQUEST:
        return RepairStarted(label, len(ids), log, done=repair_these(service, table, ids, log=log))
    total = service.count(table, Query(where))
    job_id = create_job(service.conn, service.storage, JOB, created_by=service.actor.user_name, target_table=LOG,
                        target_sys_id=log.log, params={"table": table, "query": query, "repaired": log.as_json()},
                        total=total)
    with service.by_definitions():
        service.update(LOG, log.log, {"job": job_id})
    return RepairStarted(label, total, log, job=job_id)


def _stopped(service: RecordService, stopped: Job) -> None:
    """A stopped repair's log ends `stopped`, with what the chunks committed did."""
    end_log(service, stopped.params.get("table") or "", Repaired(**stopped.params.get("repaired", {})), "stopped",
            stopped.message)


@job(JOB, label="Repair SLAs", target=LOG, stopped=_stopped)
def repair_in_background(run: JobRun) -> str:
    table, query = run.params["table"], run.params.get("query") or ""
    where = parse_encoded(query).where
    done = Repaired(**run.params.get("repaired", {}))
    label = label_of(run.runtime.defs, table)
    try:
        with run.transaction() as service:  # what is left: the matching records after the last chunk committed
            ids = matching(service, table, where, run.params.get("after"))
            if ids:
                note_log(service, done)  # in progress again, for a re-run after a failure
            else:
                end_log(service, table, done)
        total = max(run.job.total or 0, done.records + len(ids))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            with run.transaction() as service:
                repair_records(service, table, chunk, done)
                if start + CHUNK >= len(ids):
                    end_log(service, table, done)
                else:
                    note_log(service, done)
                run.remember(service.conn, after=chunk[-1], repaired=done.as_json())
                run.progress(service.conn, done.records, total, done.words(label))
    except Exception as exc:
        _failed(run, table, exc)
        raise
    return done.words(label)


def _failed(run: JobRun, table: str, exc: Exception) -> None:
    """A run that failed (not one stopped, nor one another worker took over) ends its log `failed`, with
    what the chunks committed did and why; a re-run takes it up again."""
    if claim_lost(exc):
        return
    try:
        with run.runtime.transaction(run.actor) as service:
            end_log(service, table, Repaired(**run.params.get("repaired", {})), "failed", describe(exc))
    except Exception:  # the database itself may be what failed: the job's own record still says why
        logger.warning("job %s: its SLA repair log could not be marked failed", run.job.id, exc_info=True)


__all__ = ["IN_A_REQUEST", "JOB", "RepairStarted", "repair_or_start"]
