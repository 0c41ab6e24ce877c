"""SLA repair in the background (caseloom.timing.repair): the records of a table matching an encoded
query, a chunk at a time, each chunk one unit of work committed with the job's progress (records
repaired of those that matched when it started). A web request repairs up to IN_A_REQUEST records
itself and starts this job for more (`repair_or_start`). A run reads the matching records' keys once,
then repairs them CHUNK at a time; a re-run after a lost worker goes on after the last chunk committed
(`after`, kept in the job's params with the chunk); stopping the job keeps the chunks done, and running
the repair again does them again, to the same result."""

from __future__ import annotations

from dataclasses import dataclass

from ..query import Query, parse_encoded
from ..records import RecordService
from ..timing.repair import CHUNK, Repaired, administrator, matching, repair_records, repair_these
from .progress import create_job
from .registry import JobRun, job

JOB = "sla_repair"
IN_A_REQUEST = 10_000  # records one web request repairs itself (the API, a list); more: this job


@dataclass(frozen=True)
class RepairStarted:
    """What a web request's repair did: the repair itself (`done`), or the job it started (`job`)."""

    label: str  # the table's label, lower case
    matching: int
    done: Repaired | None = None
    job: str | None = None

    @property
    def message(self) -> str:
        if self.done is not None:
            return self.done.words(self.label)
        return (f"Repairing the SLAs of {self.matching:,} {self.label} records in the background (more than "
                f"{IN_A_REQUEST:,}, as one request repairs)")


def repair_or_start(service: RecordService, table: str, query: str) -> RepairStarted:
    """Repair the SLAs of `table`'s records matching the encoded `query` now, or, when more than
    IN_A_REQUEST match, start a job that does (the caller enqueues it after commit). Checked now:
    the actor (an administrator), the table and the query."""
    administrator(service)  # before the query is read: whoever may not repair learns only that
    where = parse_encoded(query).where
    ids = matching(service, table, where, limit=IN_A_REQUEST + 1)  # checks the table first
    label = service.defs.tables[table].label.lower()
    if len(ids) <= IN_A_REQUEST:
        return RepairStarted(label, len(ids), done=repair_these(service, table, ids))
    total = service.count(table, Query(where))
    job_id = create_job(service.conn, service.storage, JOB, created_by=service.actor.user_name,
                        params={"table": table, "query": query}, total=total)
    return RepairStarted(label, total, job=job_id)


@job(JOB, label="Repair SLAs")
def repair_in_background(run: JobRun) -> str:
    table, query = run.params["table"], run.params.get("query") or ""
    where = parse_encoded(query).where
    done = Repaired(**run.params.get("repaired", {}))
    label = run.runtime.defs.tables[table].label.lower() if table in run.runtime.defs.tables else table
    with run.transaction() as service:  # what is left: the matching records after the last chunk committed
        ids = matching(service, table, where, run.params.get("after"))
    total = max(run.job.total or 0, done.records + len(ids))
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        with run.transaction() as service:
            repair_records(service, table, chunk, done)
            run.remember(service.conn, after=chunk[-1], repaired=done.as_json())
            run.progress(service.conn, done.records, total, done.words(label))
    return done.words(label)


__all__ = ["IN_A_REQUEST", "JOB", "RepairStarted", "repair_or_start"]
