"""Who may see a job: its progress and message say things about its target record.

A job with a target record is visible to whoever may read that record through the record
service (access to its table, and the record still there). A job without one (e-mail
delivery, maintenance) is visible to the user who started it. Administrators see every job.
"""

from __future__ import annotations

from collections.abc import Callable

from ..records import AccessDenied, NotFound, RecordService
from .progress import Job


def job_refusal(service: RecordService, job: Job) -> str | None:
    """Why the service's actor may not see `job`, or None when they may."""
    actor = service.actor
    if actor.is_admin:  # administrators see every job, a deleted record's too
        return None
    if not job.target_table or not job.target_sys_id:
        if (actor.user_name and actor.user_name == job.created_by):
            return None
        return (f"user {actor.user_name!r} may not see job {job.id}: a job without a target record is shown "
                "only to admins and to the user who started it")
    hidden = f"user {actor.user_name!r} may not see job {job.id}: it works on a {job.target_table} record they may not read"
    try:
        record = service.get(job.target_table, job.target_sys_id)
    except (AccessDenied, NotFound):
        return hidden
    if record is None:  # hidden by a row rule (never its sys_id, then), or deleted
        gone = job.target_table in service.defs.tables and not service.existing_ids(job.target_table, {job.target_sys_id})
        return (f"user {actor.user_name!r} may not see job {job.id}: its target record "
                f"{job.target_table} {job.target_sys_id} no longer exists") if gone else hidden
    return None


def allowed_job(service: RecordService, job: Job | None, job_id: str,
                refusal: Callable[[RecordService, Job], str | None] = job_refusal) -> Job:
    """The job read for `job_id`, if there is one and `refusal` (seeing it, by default) has nothing
    against the service's actor: NotFound or AccessDenied (saying why) otherwise."""
    if job is None:
        raise NotFound(f"no job with id {job_id}")
    why = refusal(service, job)
    if why:
        raise AccessDenied(why)
    return job
