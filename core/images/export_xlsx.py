"""The image list as an Excel workbook, read from the catalog (SQLAlchemy): for the TUI, workbook
links and any catalog the command line cannot read with sqlite3. The workbook itself, and where it
may be written, are core.images.workbook's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from core.catalog.catalog import Catalog
from core.images.images import ImageQuery, iter_images
from core.images.workbook import HEADERS, check_target, checked_first, write_file, write_rows, write_stream
from core.rules.access import Actor


def _rows(catalog: Catalog, actor: Actor, query: ImageQuery | None) -> Iterator[dict[str, Any]]:
    return checked_first(iter_images(catalog, actor, query))


def write_workbook(
    catalog: Catalog,
    actor: Actor,
    target: Path,
    query: ImageQuery | None = None,
    headers: Sequence[str] = HEADERS,
    status_label: dict[str, str] | None = None,
) -> int:
    """Write the workbook to `target`, a file of imagehub's own choosing (no rule on where); the row count."""
    return write_rows(target, _rows(catalog, actor, query), headers, status_label)


def export_stream(
    catalog: Catalog,
    actor: Actor,
    out: IO[bytes],
    query: ImageQuery | None = None,
    headers: Sequence[str] = HEADERS,
    status_label: dict[str, str] | None = None,
) -> int:
    """Write the workbook to a stream (standard output); nothing is written when the query is refused."""
    return write_stream(_rows(catalog, actor, query), out, headers, status_label)


def export_xlsx(
    catalog: Catalog,
    actor: Actor,
    path: Path,
    query: ImageQuery | None = None,
    headers: Sequence[str] = HEADERS,
    status_label: dict[str, str] | None = None,
) -> int:
    """Write the images the caller may see to `path` (atomically; where `check_target` allows); the row count."""
    path = check_target(catalog.settings, actor, str(path))
    return write_file(path, _rows(catalog, actor, query), headers, status_label)
