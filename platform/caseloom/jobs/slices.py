"""One job's work in slices that several workers run at once.

A job whose work is big and splits by key ranges (creating one child per member of a list) plans
slices: one sys_job row each (job `slice`, its target the parent job: `target_table` sys_job,
`target_sys_id` the parent's id), created with a note of their ids in the parent's params in one
unit of work, and enqueued when it commits. Every idle worker claims one; so does the parent's
own run, which then waits for the ones others run and adds their progress up into its own.

A slice is an ordinary job: it is claimed by one guarded UPDATE, holds its row while it works,
beats, and is resumed by any worker's reaper when its worker dies. Its work must be idempotent
over its range (it picks what is left by the state of the data), so whatever dies when, every
unit of work is done once. A re-run of the parent finds its slices in its params and goes on
waiting; a failed slice is run again by that re-run. Stopping the parent stops its slices
(`progress.cancel_job`). What the slices created is added to the parent's record of what it
created, so undoing the parent undoes them too.

Slices are worth it where writers run side by side: PostgreSQL. On SQLite one writer holds the
database at a time, and the parent does the work alone, in one piece.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..records import RecordService
from ..setinsert import NUMBERS_APART
from .progress import (
    CANCELED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    SLICE_PARENT,
    ClaimLost,
    Job,
    create_job,
    get_job,
    get_jobs,
    report_progress,
)
from .registry import JobRun, execute_job, job
from .undo import CREATED

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger(__name__)

JOB = "slice"
POLL_SECONDS = 0.05  # how often a parent looks at its slices run elsewhere: the job ends this soon after its last
SliceFunction = Callable[[JobRun], str | None]
# What a slice of each kind does: a function of its JobRun (params: the parent's keys, `kind`,
# `after` and `upto`), idempotent over its range, reporting progress; "module:function" is
# imported on first use, so a worker process loads it only when it runs such a slice.
KINDS: dict[str, SliceFunction | str] = {
    "children_from_list": "caseloom.jobs.children:children_slice",
}


@job(JOB, label="Slice of a job")
def run_slice(run: JobRun) -> str | None:
    kind = run.params.get("kind")
    function = KINDS.get(kind)
    if function is None:
        raise ValueError(f"no slice kind {kind!r} is registered; known: {', '.join(sorted(KINDS))}")
    if isinstance(function, str):
        module, _, name = function.partition(":")
        function = KINDS[kind] = getattr(importlib.import_module(module), name)
    return function(run)


class Slicer:
    """A background job's sliced work, from inside the parent's run (see the module docstring).
    `commit` ends the run's unit of work (its follow-ups enqueued) and `begin` starts the next one
    (holding the job); both are given by the run's unit loop."""

    def __init__(self, run: JobRun, commit: Callable[[], None], begin: Callable[[], RecordService],
                 service: RecordService):
        self.run, self.commit, self.begin, self.service = run, commit, begin, service

    @property
    def size(self) -> int:
        return self.run.runtime.config.job_slice_rows

    def planned(self, key: str) -> bool:
        """Whether this job has planned slices under `key` (in an earlier run)."""
        return key in self.run.params

    def run_slices(self, kind: str, key: str, params: dict[str, Any], ranges: Callable[[], list], total: int) -> int:
        """Plan the slices (once per job: a re-run finds them), run them with every idle worker,
        and return the sum of their `done`. Back in a unit of work when it returns (`self.service`)."""
        run = self.run
        ids = run.params.get(key)
        if ids is None:  # what earlier runs did before the work was sliced counts in both
            base = run.job.done
            ids = self._plan(kind, key, params, ranges(), base + total, base)
        else:  # a re-run: what the slices did before counts in the total, as it does in the sum
            base = run.params.get(f"{key}:before", 0)
            total += base + sum(j.done for j in _jobs(run.runtime, ids))
        self.commit()
        try:
            done = self._wait(ids, total, base)
        finally:
            self.service = self.begin()
        self._adopt(ids)
        return done

    def _plan(self, kind: str, key: str, params: dict, ranges: list, total: int, base: int) -> list[str]:
        run, service = self.run, self.service
        ids = [create_job(service.conn, service.storage, JOB, created_by=run.job.created_by, target_table=SLICE_PARENT,
                          target_sys_id=run.job.id, params={**params, "kind": kind, "after": after, "upto": upto,
                                                            "slice": i, "slices": len(ranges)})
               for i, (after, upto) in enumerate(ranges, 1)]
        run.remember(service.conn, **{key: ids, f"{key}:before": base})
        run.progress(service.conn, base, total, f"{base} of {total} in {len(ids)} slices")
        service.follow_ups.extend(("run_job", (slice_id,)) for slice_id in ids)
        log.info("job %s: %d slices of about %d", run.job.id, len(ids), self.size)
        return ids

    def _wait(self, ids: list[str], total: int, base: int) -> int:
        """Run queued slices here, wait for the others; the parent's progress is their sum (and
        `base`, what its runs did before it was sliced)."""
        runtime, run = self.run.runtime, self.run
        retry = {j.id for j in _jobs(runtime, ids) if j.state == FAILED}  # a re-run tries failed slices once more
        tried: set[str] = set()
        reported = -1
        while True:
            slices = _jobs(runtime, ids)
            self._still_held()
            failed = [j for j in slices if j.state == FAILED and (j.id in tried or j.id not in retry)]
            stopped = [j for j in slices if j.state == CANCELED]
            if failed or stopped:
                bad = (failed or stopped)[0]
                raise SliceFailed(f"slice {bad.params.get('slice')} of {len(ids)} "
                                  f"{'failed' if failed else 'was stopped'}: {bad.message}")
            done = base + sum(j.done for j in slices)
            if done != reported:
                with runtime.engine.begin() as conn:
                    finished = sum(1 for j in slices if j.state == DONE)
                    report_progress(conn, runtime.storage, run.job.id, done, total,
                                    f"{done} of {total} ({finished} of {len(ids)} slices done)", worker=run.worker)
                reported = done
            if all(j.state == DONE for j in slices):
                return done
            ready = [j for j in slices if j.state == QUEUED or (j.state == FAILED and j.id in retry - tried)]
            if ready:
                tried.add(ready[0].id)
                execute_job(runtime, ready[0].id)  # claimed by another worker first: returns at once
            else:
                time.sleep(POLL_SECONDS)  # the rest are running elsewhere (or lost: a reaper requeues them)

    def _still_held(self) -> None:
        runtime, run = self.run.runtime, self.run
        with runtime.engine.connect() as conn:
            current = get_job(conn, runtime.storage, run.job.id)
        if current is None or current.state != RUNNING or current.worker != run.worker:
            raise ClaimLost(run.job.id, run.worker)

    def _adopt(self, ids: list[str]) -> None:
        """Note what the slices created as the parent's own (an undo of the parent removes it)."""
        run = self.run
        slices = _jobs(run.runtime, ids)
        known = {tuple(b) for b in run.params.get(CREATED, [])}
        merged = [*run.params.get(CREATED, [])]
        for one in slices:
            for batch in one.params.get(CREATED, []):
                if tuple(batch) not in known:
                    known.add(tuple(batch))
                    merged.append(batch)
        run.remember(self.service.conn, **{CREATED: merged})


class SliceFailed(Exception):
    """A slice of the job failed or was stopped; the job fails with its reason (a re-run retries it)."""


def _jobs(runtime: Runtime, ids: list[str]) -> list[Job]:
    with runtime.engine.connect() as conn:
        return get_jobs(conn, runtime.storage, ids)


def in_units(run: JobRun, work: Callable[[RecordService, Callable[[int], None]], None], total: int) -> int:
    """Run a slice's `work(service, batch_done)` in units of work and return how much it did:
    `batch_done(n)` counts n and commits the unit with the slice's progress (at most every
    CASELOOM_JOB_COMMIT_SECONDS), the next unit going on in the same service. Each unit holds the
    slice's job: a run that lost it rolls its unit back (ClaimLost). `total` is what is left to do;
    a re-run's counts go on from the progress its earlier runs committed with their work."""
    from ..database import WRITE_LOCK, job_cache

    runtime = run.runtime
    with runtime.engine.connect() as conn, job_cache(conn):
        conn.execution_options(**{WRITE_LOCK: True})
        conn.info[NUMBERS_APART] = True
        transaction = conn.begin()
        service = runtime.records(conn, run.actor)
        done, last = run.job.done, time.monotonic()
        total += done
        try:
            run.hold(conn)

            def batch_done(added: int) -> None:
                nonlocal transaction, done, last
                done += added
                if time.monotonic() - last < runtime.config.job_commit_seconds:
                    return
                transaction = run.next_unit(conn, transaction, service, done, total)
                last = time.monotonic()

            with service.by_definitions():
                work(service, batch_done)
            run.progress(conn, done, total, f"{done} of {total}")
            transaction.commit()
            runtime.committed(service)
        except BaseException:
            if transaction.is_active:  # else the next unit failed to begin, rolled back
                transaction.rollback()
            raise
        finally:
            conn.info.pop(NUMBERS_APART, None)
    return done




__all__ = ["JOB", "KINDS", "SliceFailed", "Slicer", "in_units", "run_slice"]
