"""create_child_cases with one and with two `caseloom worker` processes on one job (PostgreSQL, where
the job is sliced): each run on its own copy of the database as it is now, so both start alike, three
runs each way, alternating; the speed-up is the ratio of the medians."""

from __future__ import annotations

import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from ..access import SYSTEM
from ..actions import run_action
from ..config import Config
from ..jobs import JobQueue, get_job
from ..runtime import Runtime
from .timing import PAIRS

if TYPE_CHECKING:
    from .suite import BenchRun, Result

POLL = 0.05


def workers_speedup(run: BenchRun, created: Result) -> Result:
    """The create action's job run by two worker processes, against the same run by one, PAIRS times
    each way, alternating: one slow moment of the machine moves a median less than it moves a single
    run (single pairs ranged from 1.16 to 1.89 over the passes). The result's seconds are the median of
    the runs with two workers; its baseline is the create benchmark's (the same rows written the
    plainest way)."""
    from .suite import Result

    ones, twos = [], []
    for _ in range(PAIRS):
        ones.append(run_on_copy(run, 1))
        twos.append(run_on_copy(run, 2))
    one, two = (statistics.median(r[1] for r in runs) for runs in (ones, twos))
    made = twos[0][0]
    peak_one, peak_two = max(r[2] for r in ones), max(r[2] for r in twos)
    name = f"{run.bench.names['create']}_2_workers"
    speedup = one / two if two else 0.0
    run.say(f"{name}: {made:,} in {two:.2f} s with two worker processes, {one:.2f} s with one "
            f"(speed-up {speedup:.2f}); peak memory per worker {peak_two:.0f} MB (one worker: {peak_one:.0f} MB); "
            f"slices of {run.config.job_slice_rows:,}; medians of {PAIRS} runs each way, alternating (two workers "
            f"{', '.join(f'{r[1]:.2f}' for r in twos)}; one {', '.join(f'{r[1]:.2f}' for r in ones)})")
    return Result(name, made, two, created.baseline_seconds,
                  {"one_worker_seconds": one, "speedup": speedup, "peak_mb": peak_two})


def run_on_copy(run: BenchRun, workers: int) -> tuple[int, float, float]:
    run.runtime.engine.dispose()
    copy = run.db.snapshot()
    config = dataclasses.replace(run.config, database_url=run.db.url_of(copy),
                                 queue=f"sqlite:///{run.folder / f'queue-{copy}.db'}")
    runtime = Runtime(config, run.defs)
    try:
        return run_with_workers(run, runtime, run.new_parent(runtime), workers)
    finally:
        runtime.engine.dispose()
        run.db.drop_snapshot(copy)


def run_with_workers(run: BenchRun, runtime: Runtime, parent_id: str, workers: int) -> tuple[int, float, float]:
    """Start `workers` worker processes, queue the parent's create job, wait for it: (children made,
    seconds from queueing to done, the largest peak memory of a worker in MB)."""
    b, config = run.bench, runtime.config
    with runtime.transaction(SYSTEM) as service:
        job_id = run_action(service, b.parent_table, parent_id, b.create_action, dict(b.create_inputs)).job
    processes = start_workers(config, workers)
    try:
        started = time.perf_counter()
        JobQueue(runtime).enqueue_job(job_id)
        deadline = started + 3600
        while True:
            with runtime.engine.connect() as conn:
                job = get_job(conn, runtime.storage, job_id)
            if job.finished or time.perf_counter() > deadline:
                break
            if all(p.poll() is not None for p in processes):
                raise RuntimeError(f"every worker process of the {b.create_action} job exited "
                                   f"(exit codes {[p.returncode for p in processes]})")
            time.sleep(POLL)
        seconds = time.perf_counter() - started
        peak = max(peak_mb_of(p.pid) for p in processes)
    finally:
        stop_workers(processes)
    if job.state != "done":
        raise RuntimeError(f"the {b.create_action} job with {workers} worker(s) did not finish: {job.state}: {job.message}")
    return job.done, seconds, peak


def start_workers(config: Config, count: int, **env: str) -> list[subprocess.Popen]:
    """`count` `caseloom worker` processes of one thread each on the run's database and queue (`env`:
    more CASELOOM_* settings), started and listening, as the workers of a running system are."""
    env = {**os.environ, "CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": config.definitions,
           "CASELOOM_SCRIPTS": config.scripts, "CASELOOM_QUEUE": config.queue, "CASELOOM_INSTANCE": config.instance,
           "CASELOOM_UI": config.ui, "CASELOOM_SECRET_KEY": config.secret_key or "bench",
           "CASELOOM_JOB_SLICE_ROWS": str(config.job_slice_rows), **env}
    processes = [subprocess.Popen([sys.executable, "-m", "caseloom.cli", "worker", "--workers", "1"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]
    time.sleep(1.5)
    return processes


def stop_workers(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def peak_mb_of(pid: int) -> float:
    """A running process's peak resident memory (VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0
