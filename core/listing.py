"""Cheap read-only queries for list views: counts per status and the progress of running jobs.

Used by the TUI to label its status tabs and to draw progress bars without loading whole images.
Access is checked the same way as `core.images` (an actor sees only its tenants).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from core import access, db
from core.access import Actor
from core.catalog import Catalog
from core.images import ImageQuery, _filtered, job_progress
from core.models import Image, Job


def status_counts(catalog: Catalog, actor: Actor, query: ImageQuery | None = None) -> dict[str, int]:
    """status -> number of images matching `query` (its status is ignored; `deleted` included)."""
    query = replace(query or ImageQuery(), status=None, limit=None, offset=0)
    with db.read_session(catalog.engine) as session:
        statement = _filtered(session, actor, query)
        # _filtered hides deleted images when no status is asked for: count them separately.
        subquery = statement.subquery()
        counts = {
            str(status): int(n)
            for status, n in session.exec(
                select(subquery.c.status, func.count()).group_by(subquery.c.status)  # type: ignore[call-overload]
            )
        }
        deleted = _filtered(session, actor, replace(query, status="deleted")).subquery()
        counts["deleted"] = int(session.exec(select(func.count()).select_from(deleted)).one())
        return counts


def active_progress(catalog: Catalog, actor: Actor, image_ids: list[str]) -> dict[str, dict[str, Any]]:
    """image id -> progress of its newest queued or running job, for the visible images among `image_ids`."""
    if not image_ids:
        return {}
    visible = access.visible_tenant_ids(actor)
    with db.read_session(catalog.engine) as session:
        statement = (
            select(Job)
            .join(Image, col(Image.id) == col(Job.image_id))
            .where(col(Job.image_id).in_(image_ids), col(Job.state).in_(("queued", "running")))
            .order_by(col(Job.id))
        )
        if visible is not None:
            statement = statement.where(col(Image.tenant_id).in_(visible))
        found: dict[str, dict[str, Any]] = {}
        for job in session.exec(statement):
            if job.image_id is not None:
                found[job.image_id] = job_progress(job)  # the newest wins (ordered by id)
        return found
