"""Cheap read-only queries for list views: the progress of the jobs running on a page of images.

Used by the TUI to draw progress bars without loading each image on its own.
Access is checked the same way as `core.images.images` (an actor sees only its tenants).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job
from core.images.images import job_progress
from core.jobs import jobs
from core.rules import access
from core.rules.access import Actor


def active_progress(catalog: Catalog, actor: Actor, image_ids: list[str]) -> dict[str, dict[str, Any]]:
    """image id -> progress of its newest queued or running job, for the visible images among `image_ids`."""
    if not image_ids:
        return {}
    visible = access.visible_tenant_ids(actor)
    with db.read_session(catalog.engine) as session:
        statement = (
            select(Job)
            .join(Image, col(Image.id) == col(Job.image_id))
            .where(col(Job.image_id).in_(image_ids), col(Job.state).in_(jobs.ACTIVE_STATES))
            .order_by(col(Job.id))
        )
        if visible is not None:
            statement = statement.where(col(Image.tenant_id).in_(visible))
        found: dict[str, dict[str, Any]] = {}
        for job in session.exec(statement):
            if job.image_id is not None:
                found[job.image_id] = job_progress(job)  # the newest wins (ordered by id)
        return found
