"""Starting an import: validate every field, then create the image (`importing`) and its job together.

The URL is checked here already (scheme, port, and where its host resolves), so a refused
destination never creates an image; the worker checks again at every connection. Credentials and
the query string of the URL are kept only encrypted in the job (`core.importer.credentials`); the
image, the job's parameters and the audit trail hold the redacted URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import ImagehubError, Invalid
from core.catalog.models import Image, Status
from core.images.images import get_image, new_image, resolve_tenant_for_create
from core.importer import credentials
from core.importer.localfiles import check_local_file
from core.importer.netpolicy import Policy
from core.jobs import jobs
from core.rules.access import Actor
from core.rules.validation import OsChoice, check_description, check_name, check_os, check_sha256, check_size_gb

KIND = "import"


@dataclass(frozen=True)
class Fields:
    """An import's checked fields (every kind of source has them)."""

    name: str
    description: str
    choice: OsChoice
    size_gb: int
    sha256: str | None

    def new_image(self, session: Session, actor: Actor, tenant_id: int, *, source: str) -> Image:
        """The image row (`importing`) these fields describe, in the caller's transaction."""
        return new_image(
            session,
            actor,
            tenant_id,
            name=self.name,
            description=self.description,
            os_type=self.choice.os_type,
            platform=self.choice.platform,
            os_version=self.choice.os_version,
            arch=self.choice.arch,
            status=Status.IMPORTING,
            target_size_gb=self.size_gb,
            source=source,
        )


def check_fields(
    catalog: Catalog,
    *,
    name: str | None,
    description: str | None,
    os_type: str | None,
    arch: str | None,
    platform: str | None,
    os_version: str | None,
    size_gb: object,
    sha256: str | None,
) -> Fields:
    """Every field of an import but its source, checked in the order the user reads them."""
    clean_name = check_name(name)
    clean_description = check_description(description)
    choice = check_os(catalog.os_matrix, os_type, platform, arch, os_version)
    images_settings = catalog.settings.images
    size = check_size_gb(size_gb, images_settings.min_size_gb, images_settings.max_size_gb)
    return Fields(clean_name, clean_description, choice, size, check_sha256(sha256))


def submit_import(
    catalog: Catalog,
    actor: Actor,
    *,
    name: str | None,
    description: str | None = None,
    file: str | os.PathLike[str] | None = None,
    url: str | None = None,
    os_type: str | None,
    arch: str | None,
    platform: str | None,
    os_version: str | None,
    size_gb: object,
    sha256: str | None = None,
    tenant: str | None = None,
    internal_file: bool = False,
) -> dict[str, Any]:
    """Queue an import; returns the new image (contract JSON) with `job_id`."""
    target = "url" if url is not None else "file"
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
        size, expected = fields.size_gb, fields.sha256
        if (file is None) == (url is None) or (file is not None and not str(file).strip()):
            raise Invalid("give either --file PATH or --url URL (exactly one)")
        params: dict[str, Any] = {"target_size_gb": size, "sha256": expected}
        secret: str | None = None
        if url is not None:
            policy = Policy.from_settings(catalog.settings)
            source = policy.parse(url)
            policy.resolve(source)
            shown = source.display
            params.update(source="url", url=shown)
            if source.username is not None or source.query:  # the query may hold a signature
                secret = credentials.seal(catalog.secret(), source.geturl())
        else:
            assert file is not None  # exactly one of the two, checked above
            shown = str(check_local_file(catalog.settings, file, internal=internal_file))
            params.update(source="file", path=shown, internal=internal_file)
        target = shown
        with db.write_session(catalog.engine) as session:
            tenant_id = resolve_tenant_for_create(session, actor, tenant)
            image = fields.new_image(session, actor, tenant_id, source=shown)
            job = jobs.submit(session, KIND, image.id, params, secret)
            audit.record(session, actor.name, "image.import", image.id, source=shown, size_gb=size, job=job.id)
            image_id, job_id = image.id, job.id
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "image.import", None, str(exc), source=target)
        raise
    view = get_image(catalog, actor, image_id)
    view["job_id"] = job_id
    return view
