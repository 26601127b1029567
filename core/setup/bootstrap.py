"""`imagehub init`: data folder, catalog schema, signing secret, SSH host keys and the admin account.

Idempotent: a second run changes nothing (but brings an older schema up to date) and says so.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlmodel import select

from core.catalog import audit, db
from core.catalog.catalog import Catalog, connect
from core.catalog.models import Account, Role
from core.catalog.settings import Settings

HOST_KEY_FILES = ("ssh_host_ed25519_key", "admin_ssh_host_ed25519_key")


@dataclass
class InitReport:
    data_dir: Path
    created: list[str] = field(default_factory=list)
    migrated_from: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created) or self.migrated_from is not None


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only, never replacing an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _host_key_pem() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def initialise(settings: Settings) -> tuple[Catalog, InitReport]:
    report = InitReport(settings.data_dir)
    data_dir = settings.data_dir
    if not data_dir.exists():
        report.created.append(f"data folder {data_dir}")
    catalog = connect(settings)
    catalog.store.ensure()
    catalog_file = data_dir / "catalog.db"
    sqlite_new = settings.database_url.startswith("sqlite") and not catalog_file.exists()
    before = db.current_revision(catalog.engine)
    if before != db.head_revision():
        db.upgrade(catalog.engine)
        if before is None:
            report.created.append("catalog" + (f" {catalog_file}" if sqlite_new else ""))
        else:
            report.migrated_from = before
    if not catalog.secret_path.exists():
        _write_private(catalog.secret_path, secrets.token_hex(32).encode("ascii") + b"\n")
        report.created.append(f"signing secret {catalog.secret_path}")
    for name in HOST_KEY_FILES:
        path = data_dir / name
        if not path.exists():
            _write_private(path, _host_key_pem())
            report.created.append(f"SSH host key {path}")
    incoming = settings.tui.import_root  # the import wizard's file browser starts there
    if not incoming.exists() and incoming.resolve().is_relative_to(data_dir.resolve()):
        incoming.mkdir(parents=True, exist_ok=True)
        report.created.append(f"import folder {incoming}")
    with db.write_session(catalog.engine) as session:
        if session.exec(select(Account).where(Account.name == "admin")).first() is None:
            session.add(Account(name="admin", role=Role.ADMIN))
            audit.record(session, "imagehub init", "account.create", "admin", role="admin")
            report.created.append("account admin")
    return catalog, report
