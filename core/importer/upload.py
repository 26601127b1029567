"""Starting an upload: `image import --upload --bytes N` (the spec's import of a file on the user's computer).

The image is created `importing`, its import job `waiting` (phase `waiting for upload`), and an upload
link (core.links.uploads) that takes exactly N bytes over SFTP, FTP, HTTP PUT or tus; the bytes land
in the import's staging folder and, once all are in, the job goes on as any import's would.

N must be exact: FTP and SFTP have no other way to tell a finished upload from a cut one. It is
refused at once when no source of that size could become the target (the same cap as a URL
import's), or when it is more than the tenant's staging quota.
"""

from __future__ import annotations

from typing import Any

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import ImagehubError, Invalid
from core.catalog.models import Phase
from core.images.images import get_image, resolve_tenant_for_create
from core.importer.job import GIB, size_cap
from core.importer.submit import KIND, check_fields
from core.jobs import jobs
from core.links import links
from core.rules.access import Actor


def check_bytes(catalog: Catalog, value: object, size_gb: int) -> int:
    """The upload's exact size in bytes: at least 1, at most what a source for the target may be,
    and not more than the tenant's staging quota."""
    text = str(value).strip()
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise Invalid("--bytes must be at least 1")
    if not (text.isascii() and text.isdigit()) or len(text) > 20:  # int() also takes "1_000" and "١٢٣"
        raise Invalid("--bytes must be the exact size of the file in bytes (e.g. the output of `stat -c %s FILE`)")
    size = int(text)
    if size < 1:
        raise Invalid("--bytes must be at least 1")
    cap = size_cap(size_gb * GIB)
    if size > cap:
        raise Invalid(
            "--bytes {size} is more than a source for a {size_gb} GB image may be ({cap} bytes)",
            size=size,
            size_gb=size_gb,
            cap=cap,
        )
    quota = int(catalog.settings.import_.staging_quota_gb * GIB)
    if quota > 0 and size > quota:
        raise Invalid(
            "--bytes {size} is more than the staging quota of {quota} bytes (import.staging_quota_gb)",
            size=size,
            quota=quota,
        )
    return size


def submit_upload(
    catalog: Catalog,
    actor: Actor,
    *,
    name: str | None,
    size_bytes: object,
    os_type: str | None,
    arch: str | None,
    platform: str | None,
    os_version: str | None,
    size_gb: object,
    description: str | None = None,
    sha256: str | None = None,
    ttl: int | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Create the importing image and its upload link; the image view (contract JSON) with `job_id`
    and `upload` (the link: `id`, `http`, `ftp`, `sftp`, `sftp_command`, `tus`, `expires_at`, `bytes`,
    and one ready command per tool under `commands`)."""
    try:
        fields = check_fields(
            catalog,
            name=name,
            description=description,
            os_type=os_type,
            arch=arch,
            platform=platform,
            os_version=os_version,
            size_gb=size_gb,
            sha256=sha256,
        )
        size = check_bytes(catalog, size_bytes, fields.size_gb)
        lifetime = links.check_ttl(catalog, ttl)
        with db.write_session(catalog.engine) as session:
            tenant_id = resolve_tenant_for_create(session, actor, tenant)
            image = fields.new_image(session, actor, tenant_id, source="upload")
            params = {"source": "upload", "target_size_gb": fields.size_gb, "sha256": fields.sha256, "bytes": size}
            job = jobs.submit(session, KIND, image.id, params)
            job.state = jobs.WAITING
            job.phase = Phase.WAITING_FOR_UPLOAD
            job.bytes_total = size
            session.add(job)
            link, token = links.new_link(
                catalog,
                session,
                actor,
                kind=links.UPLOAD,
                image_id=image.id,
                tenant_id=tenant_id,
                fmt="",
                filename=links.UPLOAD_FILENAME,
                ttl=lifetime,
                size=size,
            )
            image.source = f"upload {link.id}"
            session.add(image)
            session.flush()
            audit.record(
                session, actor.name, "image.import", image.id, source=image.source, size_gb=fields.size_gb, job=job.id
            )
            audit.record(session, actor.name, "upload.create", image.id, link=link.id, bytes=size, ttl=lifetime)
            image_id, job_id = image.id, job.id
            upload = links.link_view(catalog, session, link, token, image)
            upload["commands"] = links.upload_commands(catalog, token)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "image.import", None, str(exc), source="upload")
        raise
    view = get_image(catalog, actor, image_id)
    view["job_id"] = job_id
    view["upload"] = upload
    return view
