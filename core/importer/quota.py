"""The staging quota (docs/security.md U8, Glance's `image_stage_total`): what a tenant's running imports
may hold in staging at once.

Counted on disk, as allocated blocks (holes are free), over the staging folders of the tenant's
images that are `importing` — whichever node runs them, since nodes share the data folder. A
download checks it before every 16 MiB it writes (or once a second), and again once converted; an
import that passes it fails with the reason, and its staging is removed like any failure's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Failed
from core.catalog.models import Image, Status

GIB = 1 << 30


def allocated(folder: Path) -> int:
    """Bytes the files under `folder` take on disk (sparse regions excluded)."""
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += allocated(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue  # removed meanwhile
    return total


def tenant_usage(catalog: Catalog, tenant_id: int) -> int:
    """Staging bytes held by the tenant's running imports."""
    with db.read_session(catalog.engine) as session:
        image_ids = session.exec(
            select(Image.id).where(Image.tenant_id == tenant_id, Image.status == Status.IMPORTING)
        ).all()
    staging = catalog.store.staging_dir
    return sum(allocated(staging / f"{image_id}.import") for image_id in image_ids)


def _gib(size: float) -> str:
    return f"{size / GIB:.2f} GB"  # GB as --size-gb counts them (1024³ bytes)


class StagingQuota:
    """`check()` raises Failed once the tenant's staging passes the quota (0: no quota)."""

    EVERY = 16 << 20  # bytes written between two counts

    def __init__(self, catalog: Catalog, tenant_id: int, quota_gb: float, interval: float = 1.0) -> None:
        self.catalog = catalog
        self.tenant_id = tenant_id
        self.quota = int(quota_gb * GIB)
        self.interval = interval
        self._checked = float("-inf")
        self._unchecked = 0

    def check(self, *, now: bool = False, coming: int = 1 << 20) -> None:
        """Before `coming` more bytes are written: count the tenant's staging once `EVERY` bytes or
        `interval` seconds passed since the last count (at once if `now`)."""
        if self.quota <= 0:
            return
        self._unchecked += coming
        moment = time.monotonic()
        if not now and self._unchecked < self.EVERY and moment - self._checked < self.interval:
            return
        self._checked = moment
        self._unchecked = 0
        used = tenant_usage(self.catalog, self.tenant_id)
        if used > self.quota:
            raise Failed(
                "the tenant's running imports hold {used} in staging, more than its quota of {quota}; "
                "import fewer images at once or ask the operator for a larger import.staging_quota_gb",
                used=_gib(used),
                quota=_gib(self.quota),
            )
