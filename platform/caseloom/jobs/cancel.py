"""Stopping a job: who may, and what it leaves.

A queued or running job may be stopped by the user who started it, by an administrator, or by
anyone who may run its action on its record now (one of the action's roles and write access to
the table), as long as they may see the job (`visibility`). The job ends `canceled` with "stopped
by NAME after N of M": the run stops at its next unit of work and the unit in progress rolls
back (see `progress.cancel_job`), so every unit is either wholly there or not at all. Running
the action again does what is left: jobs pick their work by the state of the data.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..automation.lifecycle import action_allows
from ..definitions.model import ActionDef
from ..records import Conflict, RecordService
from ..users import USERS
from .progress import Job, cancel_job, get_job
from .registry import STOPPED
from .visibility import allowed_job, job_refusal


def job_action(service: RecordService, job: Job) -> ActionDef | None:
    """The action a background-action job runs (`action:<name>` on its target's table), if declared."""
    if not job.name.startswith("action:") or not job.target_table:
        return None
    return service.defs.action(job.params.get("table") or job.target_table, job.name.removeprefix("action:"))


def cancel_refusal(service: RecordService, job: Job) -> str | None:
    """Why the service's actor may not stop `job`, or None when they may."""
    unseen = job_refusal(service, job)
    if unseen:
        return unseen
    actor = service.actor
    if actor.is_admin or (actor.user_name and actor.user_name == job.created_by):
        return None
    action = job_action(service, job)
    if action is not None and action_allows(actor, action) and service.can(job.target_table, "write"):
        return None
    may = f", or a user who may {action.label.lower()}" if action is not None else ""
    return (f"user {actor.user_name!r} may not stop job {job.id}: only the user who started it "
            f"({job.created_by}), an administrator{may} may stop it")


def stop_job(service: RecordService, job_id: str) -> Job:
    """Stop a queued or running job in the service's transaction (NotFound, AccessDenied as
    `cancel_refusal`, Conflict when it has already finished); returns it as canceled, its message
    naming the user by their name."""
    job = allowed_job(service, get_job(service.conn, service.storage, job_id), job_id, cancel_refusal)
    if job.finished:
        raise Conflict(_finished(job))
    canceled = cancel_job(service.conn, service.storage, job_id, user_words(service))
    if canceled is None:  # it ended between the read and the update
        raise Conflict(_finished(get_job(service.conn, service.storage, job_id) or job))
    if canceled.name in STOPPED:
        STOPPED[canceled.name](service, canceled)
    return canceled


def user_words(service: RecordService) -> str:
    """The actor as people know them: their name, else their user name."""
    actor = service.actor
    users = service.storage.physical(USERS)
    name = None
    if actor.sys_id and "name" in users.c:
        name = service.conn.execute(sa.select(users.c.name).where(users.c.sys_id == actor.sys_id)).scalar()
    return name or actor.user_name or "a user"


def _finished(job: Job) -> str:
    return f"job {job.id} has already finished ({job.state}{': ' + job.message if job.message else ''}); nothing to stop"


__all__ = ["cancel_refusal", "job_action", "stop_job", "user_words"]
