"""An image as the contract's JSON object, from one row of a listing (`core.images.query.VIEW_COLUMNS`)
or of a loaded image (`core.images.images.image_view`). Plain Python: no SQLAlchemy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from core.catalog.stored_errors import stored_reason
from core.rules.redaction import redact


def shown_source(source: str | None) -> str | None:
    """A URL source redacted once more on the way out (password, query, fragment), so that rows
    stored before the query string was redacted show none of it either."""
    return redact(source) if source and "://" in source else source


def stamp(value: datetime | str | None) -> str | None:
    """`core.catalog.clock.iso` without strftime: the same `YYYY-MM-DDTHH:MM:SSZ` string (a string from SQL as is)."""
    if value is None or value.__class__ is str:
        return value
    assert isinstance(value, datetime)
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="seconds")[:19] + "Z"


def row_view(row: Sequence[Any]) -> dict[str, Any]:
    """The contract's JSON object from one row of `VIEW_COLUMNS` (the list, the export, the TUI's pages)."""
    (
        image_id,
        name,
        description,
        tenant_name,
        os_type,
        platform,
        os_version,
        arch,
        status,
        error,
        error_detail,
        disk_format,
        virtual_size,
        target_size_gb,
        sha256,
        source,
        created_at,
        updated_at,
        deleted_at,
    ) = row
    return {
        "id": image_id,
        "name": name,
        "description": description,
        "tenant": tenant_name,
        "os_type": os_type,
        "platform": platform,
        "os_version": os_version,
        "arch": arch,
        "os_name": f"{platform} {os_version} {arch}",
        "status": status,
        "error": error if error_detail is None else stored_reason(error, error_detail),  # a Msg: same text
        "disk_format": disk_format,
        "virtual_size": virtual_size,
        "target_size_gb": target_size_gb,
        "sha256": sha256,
        "source": shown_source(source),
        "created_at": stamp(created_at),
        "updated_at": stamp(updated_at),
        "deleted_at": stamp(deleted_at),
    }
