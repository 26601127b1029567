"""Workbook links: the image list as an Excel file behind a 24-hour link (docs/security.md L6).

Instead of writing a path on the server, the TUI's export makes the workbook here and records a link
of kind `workbook` (core.links.links): the same signed token (only its hash kept), the same HTTP, FTP and
SFTP URLs the gateway serves, expiry (links.ttl_seconds), revocation and `link list`. Its file lives
in `<data_dir>/workbooks/<link id>/` with its `.sha256`; folders of links that are gone, revoked or
expired are removed whenever a new workbook is made.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence

from sqlmodel import col, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.clock import utcnow
from core.catalog.errors import ImagehubError
from core.catalog.ids import issue_id
from core.catalog.models import Link
from core.images import exports
from core.images.images import ImageQuery
from core.links import links
from core.links.links import WORKBOOK, WORKBOOKS_DIR, Created
from core.rules.access import Actor

# A folder with no link row yet may be a workbook another process is still writing.
UNCLAIMED_GRACE_SECONDS = 3600


def purge(catalog: Catalog) -> int:
    """Remove the files of workbook links that are gone, revoked or expired; the number removed."""
    root = catalog.settings.data_dir / WORKBOOKS_DIR
    if not root.is_dir():
        return 0
    now = utcnow()
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.is_symlink()}
    if not folders:
        return 0
    with db.read_session(catalog.engine) as session:
        statement = select(Link).where(Link.kind == WORKBOOK, col(Link.id).in_(list(folders)))
        rows = {link.id: link for link in session.exec(statement)}
    removed = 0
    for name, folder in folders.items():
        link = rows.get(name)
        if link is None:
            stale = time.time() - folder.stat().st_mtime > UNCLAIMED_GRACE_SECONDS
        else:
            stale = link.revoked_at is not None or links._aware(link.expires_at) <= now
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def create_workbook_link(
    catalog: Catalog,
    actor: Actor,
    query: ImageQuery | None = None,
    headers: Sequence[str] | None = None,
    status_label: dict[str, str] | None = None,
) -> Created:
    """Write the images `actor` may see (filtered by `query`) to a workbook and record a link to it."""
    from core.images.export_xlsx import write_workbook
    from core.images.workbook import HEADERS

    try:
        ttl = links.check_ttl(catalog, None)
        purge(catalog)
        # The workbook is written outside any write transaction: 100k rows take seconds.
        with db.write_session(catalog.engine) as session:
            link_id = issue_id(session, "lnk")
        filename = f"images-{utcnow().strftime('%Y%m%d-%H%M%S')}.xlsx"
        path = links.workbook_file(catalog, link_id, filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            staged = path.with_name(f".{filename}.tmp")
            count = write_workbook(catalog, actor, staged, query, headers or HEADERS, status_label)
            os.replace(staged, path)
            exports.write_checksum(path)
            with db.write_session(catalog.engine) as session:
                link, token = links.new_link(
                    catalog,
                    session,
                    actor,
                    kind=WORKBOOK,
                    image_id=None,
                    tenant_id=None if actor.is_admin else actor.tenant_id,
                    fmt="xlsx",
                    filename=filename,
                    ttl=ttl,
                    link_id=link_id,
                )
                session.flush()
                audit.record(session, actor.name, "link.create", link_id, kind=WORKBOOK, rows=count, ttl=ttl)
                view = links.link_view(catalog, session, link, token)
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        view["rows"] = count
        return Created(view, token, None)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "link.create", WORKBOOK, str(exc))
        raise
