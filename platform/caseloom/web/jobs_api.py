"""Background jobs over HTTP: `GET /api/caseloom/jobs/<id>` (contract section 7), shown only to
users who may see the job (see caseloom.jobs.visibility); `POST .../<id>/cancel` to stop it (see
caseloom.jobs.cancel); `GET` and `POST .../<id>/undo` for what undoing its creations would do, and
to do it (see caseloom.jobs.undo); and the hook that enqueues follow-up tasks (e-mail delivery)
once a request's writes have committed."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, g, has_app_context, jsonify
from sqlalchemy import event

from ..jobs import JobQueue, find_undo, get_job, job_refusal, stop_job, undo_job
from . import db
from .auth import act_as, api_actor, connection, records, runtime
from .errors import ApiError

blueprint = Blueprint("jobs_api", __name__, url_prefix="/api/caseloom/jobs")
EXTENSION = "caseloom_jobs"


@blueprint.before_request
def _authenticate() -> None:
    act_as(api_actor())


@blueprint.get("/<job_id>")
def get(job_id: str):
    job = get_job(connection(), runtime().storage, job_id)
    if job is None:
        raise ApiError(404, "No Record found", f"no job with id {job_id}")
    refusal = job_refusal(records(), job)
    if refusal:
        raise ApiError(403, "User Not Authorized", refusal)
    return jsonify({"result": job.as_result()})


@blueprint.post("/<job_id>/cancel")
def cancel(job_id: str):
    """Stop a queued or running job: 200 and the job as canceled; 403 for who may not (see
    caseloom.jobs.cancel), 409 when it has already finished."""
    job = stop_job(records(), job_id)
    db.session.commit()
    return jsonify({"result": job.as_result()})


@blueprint.get("/<job_id>/undo")
def undo_plan(job_id: str):
    """What undoing the job's creations would do now (counts, and the records that would stay), or
    why it cannot (`refusal`): nothing is written."""
    _, plan, why = find_undo(records(), job_id)
    return jsonify({"result": {**(plan.as_dict() if plan else {}), "refusal": why}})


@blueprint.post("/<job_id>/undo")
def undo(job_id: str):
    """Remove the records the job created that nobody touched, cancel their unsent e-mails, audited,
    in one transaction: 200 and what was done; 403 without delete access; 409 when there is nothing
    (left) to undo or the job still runs."""
    done = undo_job(records(), job_id)  # an error answer rolls the request back: nothing is half-done
    db.session.commit()
    return jsonify({"result": done.as_dict()})


def queue(app: Flask) -> JobQueue:
    """The job queue of an app (its huey instance is opened on first use)."""
    return app.extensions[EXTENSION]


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)
    app.extensions[EXTENSION] = JobQueue(app.extensions["caseloom"])
    if not event.contains(db.session, "after_commit", _after_commit):
        event.listen(db.session, "after_commit", _after_commit)


def _after_commit(session) -> None:
    """A request committed: enqueue what its record service's writes call for (see FOLLOW_UPS).
    Listened for on every Flask-SQLAlchemy session, so it acts only inside a Caseloom request."""
    if not has_app_context() or EXTENSION not in current_app.extensions:
        return
    service = g.get("records")
    if service is not None and service.written:
        queue(current_app).follow_up(service)
