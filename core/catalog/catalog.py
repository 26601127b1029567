"""The open catalog: settings, engine and store of one process, brought up to date on open."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import Engine

from core.catalog import db
from core.catalog.errors import Failed
from core.catalog.osmatrix import OsMatrix, load_os_matrix
from core.catalog.settings import Settings
from core.catalog.storage import Store

SECRET_FILE = "secret.key"


@dataclass
class Catalog:
    settings: Settings
    engine: Engine
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store(self.settings.data_dir)

    @cached_property
    def os_matrix(self) -> OsMatrix:
        return load_os_matrix(self.settings.images.os_matrix)

    @property
    def secret_path(self) -> Path:
        return self.settings.data_dir / SECRET_FILE

    def secret(self) -> bytes:
        try:
            return self.secret_path.read_bytes().strip()
        except FileNotFoundError as exc:
            raise Failed(
                "signing secret {secret_path} is missing; run imagehub init", secret_path=self.secret_path
            ) from exc

    def dispose(self) -> None:
        self.engine.dispose()


def connect(settings: Settings) -> Catalog:
    """An engine for the configured catalog, without checking or migrating it."""
    return Catalog(settings, db.make_engine(settings.database_url, settings.database.busy_timeout_seconds))


def open_catalog(settings: Settings) -> Catalog:
    """Open an initialised catalog and bring an older schema up to date."""
    if settings.database_url.startswith("sqlite:///"):
        path = Path(settings.database_url[len("sqlite:///") :])
        if not path.exists():
            raise Failed("no catalog at {path}; run imagehub init first", path=path)
    catalog = connect(settings)
    revision = db.current_revision(catalog.engine)
    if revision is None:
        catalog.dispose()
        raise Failed("the catalog is not initialised; run imagehub init first")
    if revision != db.head_revision():
        db.upgrade(catalog.engine)
    return catalog
