"""Background jobs: a huey queue built from CASELOOM_QUEUE, job progress in sys_job (visible to
every process), runs that hold their job while they work and are resumed by another worker when
they are lost (`liveness`), who may see a job (`visibility`), stopping a job (`cancel`), undoing
what a job created (`undo`), and e-mail delivery. The core of the platform: no Flask here."""

from .cancel import cancel_refusal, stop_job
from .email import deliver_email, deliver_pending
from .progress import (
    CANCELED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    STATES,
    ClaimLost,
    Job,
    active_job,
    claim_job,
    create_job,
    fail_job,
    finish_job,
    get_job,
    release_job,
    report_progress,
)
from .queue import FOLLOW_UPS, EmbeddedConsumer, JobConsumer, JobQueue, is_embedded, make_huey
from .registry import JOBS, JobRefused, JobRun, execute_job, job
from .slarepair import RepairStarted, repair_or_start
from .slices import Slicer
from .undo import Undo, find_undo, undo_job, undo_refusal
from .visibility import job_refusal

__all__ = [
    "CANCELED", "DONE", "FAILED", "FOLLOW_UPS", "JOBS", "QUEUED", "RUNNING", "STATES", "ClaimLost", "EmbeddedConsumer", "Slicer",
    "Job", "JobConsumer", "JobQueue", "JobRefused", "JobRun", "RepairStarted", "Undo", "active_job", "cancel_refusal",
    "claim_job", "create_job", "deliver_email", "deliver_pending", "execute_job", "fail_job", "find_undo", "finish_job",
    "get_job", "is_embedded", "job", "job_refusal", "make_huey", "release_job", "repair_or_start", "report_progress",
    "stop_job",
    "undo_job", "undo_refusal",
]
