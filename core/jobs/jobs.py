"""Jobs in the catalog: long work (import, export, capture) claimed by one worker at a time with a lease.

A job is `queued` (an upload's import is `waiting` until its bytes have all arrived, and no worker
claims it meanwhile), then `running` under a lease (owner + expiry) that its worker renews with every
progress report; it ends `done`, `failed` or `cancelled`. A worker that dies stops renewing: once
the lease expires, any worker may claim the job again and resume it (`attempts` counts the claims).
A worker that finds its lease gone (taken over, or the job cancelled) must stop at once.

Claiming: SQLite serialises writers (BEGIN IMMEDIATE); PostgreSQL uses FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.catalog import audit, db
from core.catalog.clock import utcnow
from core.catalog.models import Job, JobState
from core.catalog.stored_errors import detail_of

WAITING, QUEUED, RUNNING, DONE, FAILED, CANCELLED = (
    JobState.WAITING,
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.DONE,
    JobState.FAILED,
    JobState.CANCELLED,
)
ACTIVE_STATES: tuple[JobState, ...] = (JobState.WAITING, JobState.QUEUED, JobState.RUNNING)
DEFAULT_LEASE_SECONDS = 30.0


def worker_id(label: str = "worker") -> str:
    """A name unique to this process and worker: host, PID and a random suffix."""
    return f"{label}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def submit(
    session: Session,
    kind: str,
    image_id: str | None,
    params: dict[str, Any] | None = None,
    secret: str | None = None,
) -> Job:
    """Queue a job in the caller's transaction."""
    job = Job(kind=kind, image_id=image_id, params=json.dumps(params or {}, sort_keys=True), secret=secret)
    session.add(job)
    session.flush()
    return job


def params_of(job: Job) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(job.params or "{}")
    return params


def claim(
    engine: Engine,
    owner: str,
    kinds: Iterable[str] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    max_running_total: int | None = None,
    job_id: int | None = None,
) -> Job | None:
    """Take the oldest queued job, or one whose lease expired (only job `job_id`, if given);
    None when there is nothing to do."""
    now = utcnow()
    with db.write_session(engine) as session:
        if max_running_total is not None:
            if not db.is_sqlite(engine):
                # serialise claimers while they count, so that two cannot both take the last place
                session.connection().execute(text("SELECT pg_advisory_xact_lock(8212001)"))
            running = session.exec(
                select(func.count()).select_from(Job).where(Job.state == RUNNING, col(Job.lease_expires_at) > now)
            ).one()
            if running >= max_running_total:
                return None
        # Queued jobs first (index state, id), then running ones whose lease ran out.
        job = None
        for condition in (Job.state == QUEUED, and_(col(Job.state) == RUNNING, col(Job.lease_expires_at) < now)):
            statement = select(Job).where(condition).order_by(col(Job.id)).limit(1)
            if kinds is not None:
                statement = statement.where(col(Job.kind).in_(list(kinds)))
            if job_id is not None:
                statement = statement.where(col(Job.id) == job_id)
            if not db.is_sqlite(engine):
                statement = statement.with_for_update(skip_locked=True)
            job = session.exec(statement).first()
            if job is not None:
                break
        if job is None:
            return None
        job.state = RUNNING
        job.lease_owner = owner
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.attempts += 1
        job.updated_at = now
        job.progress_at = now
        session.add(job)
        audit.record(session, owner, "job.claim", job.image_id, job=job.id, kind=job.kind, attempt=job.attempts)
        return job


def renew(
    engine: Engine,
    job_id: int,
    owner: str,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    *,
    progressed: bool = False,
    **fields: Any,
) -> bool:
    """Extend the lease and store progress fields; False if this worker no longer holds the job."""
    now = utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "updated_at": now}
    if progressed:
        values["progress_at"] = now
    values.update(fields)
    with db.write_session(engine) as session:
        result = session.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.lease_owner) == owner, col(Job.state) == RUNNING)
            .values(**values)
        )
        return bool(result.rowcount)


def finish(
    engine: Engine,
    job_id: int,
    owner: str,
    state: str,
    error: str | None = None,
    also: Callable[[Session], None] | None = None,
) -> bool:
    """End a job this worker holds; False if it lost the lease meanwhile.

    An `error` that is a `Msg` keeps its template and parameters in `error_detail` (core.catalog.stored_errors).
    `also` writes the job's outcome on its resource (e.g. the image's `import_failed`) in the same
    transaction, so nobody ever reads a failed job beside an image still `importing`.
    """
    now = utcnow()
    with db.write_session(engine) as session:
        result = session.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.lease_owner) == owner, col(Job.state) == RUNNING)
            .values(
                state=state,
                error=error,
                error_detail=detail_of(error),
                finished_at=now,
                updated_at=now,
                lease_expires_at=None,
            )
        )
        if result.rowcount:
            image_id = session.exec(select(Job.image_id).where(Job.id == job_id)).first()
            audit.record(session, owner, "job.finish", image_id, "ok" if state == DONE else state, error, job=job_id)
            if also is not None:
                also(session)
        return bool(result.rowcount)


def release(engine: Engine, job_id: int, owner: str) -> None:
    """Give a running job back to the queue (clean shutdown): the next worker resumes it at once."""
    with db.write_session(engine) as session:
        session.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.lease_owner) == owner, col(Job.state) == RUNNING)
            .values(state=QUEUED, lease_owner=None, lease_expires_at=None, updated_at=utcnow())
        )


def get(engine: Engine, job_id: int) -> Job | None:
    with db.read_session(engine) as session:
        return session.get(Job, job_id)


def latest_for_image(engine: Engine, image_id: str) -> Job | None:
    with db.read_session(engine) as session:
        return session.exec(select(Job).where(Job.image_id == image_id).order_by(col(Job.id).desc())).first()


def stalled(engine: Engine, stall_seconds: float) -> list[Job]:
    """Running jobs whose last progress is older than `stall_seconds`."""
    limit = utcnow() - timedelta(seconds=stall_seconds)
    with db.read_session(engine) as session:
        return list(session.exec(select(Job).where(Job.state == RUNNING, col(Job.progress_at) < limit)))


def cancel(session: Session, job: Job, now: datetime | None = None) -> None:
    """End a job without its worker (in the caller's transaction); a worker holding it loses its lease."""
    job.state = CANCELLED
    job.finished_at = now or utcnow()
    job.lease_expires_at = None
    session.add(job)
