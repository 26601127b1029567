"""Everything one image's detail view shows, gathered in one call: the fields of `image show`, the
sizes and checksums of the stored file and of each file a download link serves, the VMs made from
it, its links, its audit history (for those who may read it) and, for each operation, whether it
applies or core's reason why not.

It lives in the compute layer because it reads VMs and links, which sit above `core.images` in the
layers contract; it only reads, and decides nothing that another module already decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.errors import Forbidden, ImagehubError, Invalid, Msg
from core.catalog.models import Image
from core.catalog.vocabulary import LinkState
from core.compute.vms import vms_of_image
from core.images import exports
from core.images.images import _check_not_in_use, get_image, load_for
from core.links.links import list_links
from core.rules import access, lifecycle
from core.rules.access import Actor
from core.rules.lifecycle import TRANSIENT, Operation

AUDIT_LIMIT = 200  # the newest events of the image; `imagehub audit list --target ID` has them all


@dataclass(frozen=True)
class ServedFile:
    """The file a download link of one format serves: the stored file itself, or an export made
    the first time a link asks for that format."""

    format: str
    stored: bool  # the image's own file (else an export kept in the export cache)
    size: int | None  # the bytes a download sends; None until the export is made
    sha256: str | None  # of that file; None until computed (the first link computes it)


@dataclass(frozen=True)
class ImageDetail:
    image: dict[str, Any]  # `image show --json`: the contract's fields plus `vms` and `progress`
    stored_size: int | None  # the stored file's length in bytes (a raw file: its virtual size)
    allocated: int | None  # the disk space the stored file takes (sparse files take less)
    served: list[ServedFile]
    vms: list[dict[str, Any]]
    links: list[dict[str, Any]]
    audit: list[dict[str, Any]] | None  # None: the actor may not read it (see `audit_hidden`)
    audit_hidden: Msg | None
    refusals: dict[Operation, ImagehubError | None] = field(default_factory=dict)

    @property
    def under_way(self) -> bool:
        """Whether something on the image is changing on its own (a job, a status, a file being
        prepared), so that a view of it should look again."""
        return (
            self.image["status"] in TRANSIENT
            or self.image.get("progress") is not None
            or any(link["state"] == LinkState.PREPARING for link in self.links)
        )

    def allows(self, operation: Operation) -> bool:
        return self.refusals.get(operation) is None


def image_detail(catalog: Catalog, actor: Actor, image_id: str) -> ImageDetail:
    """The detail of an image the actor sees (else NotFound, as everywhere)."""
    image = get_image(catalog, actor, image_id)
    with db.read_session(catalog.engine) as session:
        row = access.load_visible(session, actor, Image, image_id)
        refusals = {operation: _refusal(session, actor, row, operation) for operation in Operation}
        stored = _stored_file(catalog, row)
        served = _served_files(catalog, row)
    events, hidden = _history(catalog, actor, image_id)
    return ImageDetail(
        image=image,
        stored_size=stored[0],
        allocated=stored[1],
        served=served,
        vms=vms_of_image(catalog, actor, image_id),
        links=list_links(catalog, actor, image_id),
        audit=events,
        audit_hidden=hidden,
        refusals=refusals,
    )


def _refusal(session: Session, actor: Actor, image: Image, operation: Operation) -> ImagehubError | None:
    """The error the service of `operation` would raise now, or None when it would go ahead."""
    try:
        if operation == Operation.DOWNLOAD:  # a link only needs the image to be seen (core.links.links)
            lifecycle.require(image.id, image.status, operation)
        else:
            load_for(session, actor, image.id, operation)
            if operation in (Operation.DELETE, Operation.DESTROY):
                _check_not_in_use(session, image.id)
    except ImagehubError as exc:
        return exc
    return None


def _stored_file(catalog: Catalog, image: Image) -> tuple[int | None, int | None]:
    if not image.disk_format:
        return None, None
    try:
        st = catalog.store.image_path(image.id, image.disk_format).stat()
    except OSError:
        return None, None
    return st.st_size, st.st_blocks * 512


def _served_files(catalog: Catalog, image: Image) -> list[ServedFile]:
    """One entry per format a link may ask for (an ISO: only itself), the stored format first."""
    if not image.disk_format:
        return []
    found: dict[str, ServedFile] = {}
    for asked in (image.disk_format, *exports.FORMATS):
        try:
            fmt = exports.effective_format(image, asked)
        except Invalid:
            continue
        if fmt in found:
            continue
        path = exports.served_path(catalog, image, fmt)
        found[fmt] = ServedFile(fmt, fmt == image.disk_format, _size(path), exports.read_checksum(path))
    return list(found.values())


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _history(catalog: Catalog, actor: Actor, image_id: str) -> tuple[list[dict[str, Any]] | None, Msg | None]:
    """The image's audit events, newest first, as the actor may read the trail (core.rules.access.audit_scope:
    a tenant's owner reads its tenant's trail, without the refusals of accounts outside it); else None and
    why not."""
    try:
        scope = access.audit_scope(actor)
    except Forbidden as exc:
        return None, exc.message
    return audit.list_events(catalog.engine, target=image_id, tenant_id=scope, limit=AUDIT_LIMIT), None
