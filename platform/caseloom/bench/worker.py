"""One background job run in a process of its own, as `caseloom worker` runs it, for the bench:
`python -m caseloom.bench.worker JOB_ID` (configured by the CASELOOM_* environment) prints one
JSON line with the job's end state, its time and the process's peak memory."""

from __future__ import annotations

import json
import sys
import time

from ..config import Config
from ..jobs.registry import execute_job
from ..runtime import Runtime


def _peak_rss_mb() -> float:
    """This process's peak resident set size since it started (VmHWM). Not getrusage's ru_maxrss:
    on Linux that keeps the parent's resident size from before the exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(job_id: str) -> None:
    runtime = Runtime(Config.from_env())
    started = time.perf_counter()
    job = execute_job(runtime, job_id)
    seconds = time.perf_counter() - started
    runtime.engine.dispose()
    peak_mb = _peak_rss_mb()
    print(json.dumps({"state": job.state if job else None, "done": job.done if job else 0,
                      "message": job.message if job else "no such job", "seconds": seconds, "peak_mb": peak_mb}))


if __name__ == "__main__":
    main(sys.argv[1])
