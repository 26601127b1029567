"""TUI fixtures: a catalog with fixed images (IDs and times) and helpers that await workers."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, IssuedId, Job, Tenant
from tests.conftest import People
from tui.app import ImagehubApp

BASE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# (id, name, tenant, os_type, platform, version, arch, status, size_gb, description, error)
IMAGES = [
    ("img-acme0001", "web-frontend", "acme", "Linux", "CentOS", "7.9", "x86_64", "available", 20, "nginx + app", None),
    ("img-acme0002", "db-primary", "acme", "Linux", "CentOS", "7.6", "x86_64", "available", 40, "PostgreSQL", None),
    ("img-acme0003", "win-iis", "acme", "Windows", "Windows", "2016", "x86_64", "importing", 50, "IIS", None),
    ("img-acme0004", "broken-upload", "acme", "Linux", "CentOS", "7.2", "x86_64", "import_failed", 20, "", "HTTP 404"),
    ("img-acme0005", "snapshot-app01", "acme", "Linux", "CentOS", "7.4", "x86_64", "creating", 20, "from app01", None),
    ("img-acme0006", "数据库镜像", "acme", "Linux", "Ubuntu", "16.04", "x86_64", "available", 30, "中文备注", None),
    ("img-acme0007", "old-test", "acme", "Linux", "Ubuntu", "14.04", "x86_64", "deleted", 20, "retired", None),
    ("img-acme0008", "win-2008", "acme", "Windows", "Windows", "2008R2", "x86_64", "deleted", 40, "EOL", None),
    ("img-glbx0001", "globex-only", "globex", "Linux", "Ubuntu", "18.04", "aarch64", "available", 25, "", None),
]


def add_images(catalog: Catalog, rows: list[tuple[Any, ...]] = IMAGES, start: datetime = BASE) -> None:
    from datetime import timedelta

    with db.write_session(catalog.engine) as session:
        tenants = {t.name: t.id for t in session.exec(select(Tenant))}
        for index, (image_id, name, tenant, os_type, platform, version, arch, status, size, desc, error) in enumerate(
            rows
        ):
            when = start + timedelta(minutes=index)
            has_file = status in ("available", "deleted")
            session.add(IssuedId(id=image_id))
            session.add(
                Image(
                    id=image_id,
                    name=name,
                    description=desc,
                    tenant_id=tenants[tenant],
                    os_type=os_type,
                    platform=platform,
                    os_version=version,
                    arch=arch,
                    status=status,
                    status_before_delete="available" if status == "deleted" else None,
                    error=error,
                    disk_format="raw" if has_file else None,
                    virtual_size=size * 1024**3 if has_file else None,
                    target_size_gb=size,
                    created_at=when,
                    updated_at=when,
                    deleted_at=when if status == "deleted" else None,
                )
            )
            if has_file:
                path = catalog.store.image_path(image_id, "raw")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\0" * 512)
            if status == "importing":
                session.add(
                    Job(
                        kind="noop-test",
                        image_id=image_id,
                        state="running",
                        phase="downloading",
                        bytes_done=42 * 1024**2,
                        bytes_total=100 * 1024**2,
                        rate=2 * 1024**2,
                        lease_owner="test",
                        lease_expires_at=datetime(2099, 1, 1, tzinfo=UTC),
                        created_at=when,
                        updated_at=when,
                        progress_at=when,
                    )
                )


@pytest.fixture(autouse=True)
def _count_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count totals as soon as a page is shown (the app waits for typing to pause first)."""
    from tui.widgets.image_list import ImageList

    monkeypatch.setattr(ImageList, "count_delay", 0)


@pytest.fixture
def images(catalog: Catalog, people: People) -> Catalog:
    add_images(catalog)
    return catalog


def make_app(catalog: Catalog, actor: Any, language: str = "en", **kwargs: Any) -> ImagehubApp:
    kwargs.setdefault("refresh_seconds", 0)
    kwargs.setdefault("strict", True)
    return ImagehubApp(catalog, actor, language=language, **kwargs)


async def wait_for_workers(app: Any) -> None:
    """Await the app's workers, except DirectoryTree's loader, which lives as long as its tree."""
    from textual.worker import WorkerCancelled

    pending = [w for w in app.workers if w.group != "_loader" and not w.is_finished]
    for worker in pending:
        # a failed worker is reported by the app; the tests check what the user sees
        with contextlib.suppress(WorkerCancelled, Exception):
            await worker.wait()


async def settle(pilot: Any, rounds: int = 3) -> None:
    """Let workers finish and their results reach the screen (no sleeping)."""
    for _ in range(rounds):
        await pilot.pause()
        await wait_for_workers(pilot.app)
        await pilot.pause()


def image_list(app: ImagehubApp) -> Any:
    from tui.widgets.image_list import ImageList

    return app.screen.query_one(ImageList)


def shown_ids(app: ImagehubApp) -> list[str]:
    return [row["id"] for row in image_list(app).rows]


def move_to(app: ImagehubApp, image_id: str) -> None:
    ids = shown_ids(app)
    image_list(app).table.move_cursor(row=ids.index(image_id), animate=False)


def status_of(catalog: Catalog, image_id: str) -> str | None:
    with db.read_session(catalog.engine) as session:
        image = session.get(Image, image_id)
        return image.status if image else None
