"""Background jobs: a huey queue built from CASELOOM_QUEUE, job progress in sys_job (visible to
every process), and e-mail delivery. The core of the platform: no Flask here."""

from .email import deliver_email, deliver_pending
from .progress import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    STATES,
    Job,
    active_job,
    claim_job,
    create_job,
    fail_job,
    finish_job,
    get_job,
    report_progress,
)
from .queue import FOLLOW_UPS, EmbeddedConsumer, JobQueue, is_embedded, make_huey
from .registry import JOBS, JobRefused, JobRun, execute_job, job

__all__ = [
    "DONE", "FAILED", "FOLLOW_UPS", "JOBS", "QUEUED", "RUNNING", "STATES", "EmbeddedConsumer", "Job", "JobQueue",
    "JobRefused", "JobRun", "active_job", "claim_job", "create_job", "deliver_email", "deliver_pending",
    "execute_job", "fail_job", "finish_job", "get_job", "is_embedded", "job", "make_huey", "report_progress",
]
