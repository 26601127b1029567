"""The image list as an Excel workbook (openpyxl write-only: constant memory for any size)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from core.access import Actor
from core.catalog import Catalog
from core.errors import Failed, Invalid
from core.images import ImageQuery, iter_images

HEADERS = ("Name", "ID", "System type", "OS", "Status", "Description", "Created")
WIDTHS = (32, 14, 12, 26, 14, 48, 20)
DATE_FORMAT = "yyyy-mm-dd hh:mm:ss"


def export_xlsx(
    catalog: Catalog,
    actor: Actor,
    path: Path,
    query: ImageQuery | None = None,
    headers: Sequence[str] = HEADERS,
    status_label: dict[str, str] | None = None,
) -> int:
    """Write the images the caller may see to `path` (atomically); returns the row count."""
    if path.suffix.lower() != ".xlsx":
        raise Invalid(f"export path {path} must end in .xlsx")
    if not path.parent.is_dir():
        raise Invalid(f"folder {path.parent} does not exist")
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Images")
    for index, width in enumerate(WIDTHS, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header_cells = []
    for title in headers:
        cell = WriteOnlyCell(sheet, value=title)
        cell.font = bold
        header_cells.append(cell)
    sheet.append(header_cells)
    count = 0
    for image in iter_images(catalog, actor, query):
        created = WriteOnlyCell(sheet, value=datetime.fromisoformat(image["created_at"].rstrip("Z")))
        created.number_format = DATE_FORMAT
        status = image["status"]
        sheet.append(
            [
                image["name"],
                image["id"],
                image["os_type"],
                image["os_name"],
                status_label.get(status, status) if status_label else status,
                image["description"],
                created,
            ]
        )
        count += 1
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{count + 1}"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        workbook.save(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise Failed(f"cannot write {path}: {exc.strerror}") from exc
    return count
