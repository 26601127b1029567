"""The image list as an Excel workbook (openpyxl write-only: constant memory for any size), from any
stream of listing views (core.images.views): no catalog, no ORM here, so that the command line can
feed it rows read with sqlite3 (cli/images.py) and the TUI and links rows read with SQLAlchemy
(core.images.export_xlsx).

Where a workbook may go (docs/security.md L6): to a stream (the CLI's standard output), to a workbook link
(core.links.links), or to a file on this server that the account names: a platform admin anywhere, any
other account only inside `<data_dir>/exports/` (symlinks resolved, no `..`), so that no account can
overwrite the store's files or learn from the answer whether a server file exists.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import to_excel

from core.catalog.errors import Failed, Forbidden, Invalid
from core.rules.actor import Actor

if TYPE_CHECKING:
    from core.catalog.settings import Settings

HEADERS = ("Name", "ID", "System type", "OS", "Status", "Size (GB)", "Remark", "Created", "Tenant")
WIDTHS = (32, 14, 12, 26, 14, 10, 48, 20, 16)
DATE_FORMAT = "yyyy-mm-dd hh:mm:ss"
GIB = 1 << 30


def _text(sheet: Any, value: str) -> object:
    """User text as a cell: never a formula (a name like `=HYPERLINK(...)` stays text in Excel).

    Only a leading `=` makes openpyxl write a formula; text starting with `+`, `-` or `@` is already
    written as a typed string (`inlineStr`), which Excel shows and never evaluates."""
    if value[:1] == "=":
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"
        return cell
    return value


def check_path(value: str) -> Path:
    """The export target's rules, for the CLI and the TUI's prompt as you type."""
    if not value.strip():
        raise Invalid("a path is required")
    path = Path(value.strip()).expanduser()
    if path.suffix.lower() != ".xlsx":
        raise Invalid("export path {path} must end in .xlsx", path=path)
    if not path.parent.is_dir():
        raise Invalid("folder {folder} does not exist", folder=path.parent)
    return path


def check_target(settings: Settings, actor: Actor, value: str) -> Path:
    """Where `actor` may write a workbook named `value` on this server, or Invalid/Forbidden.

    A platform admin: anywhere (`check_path`). Anyone else: only inside `<data_dir>/exports/`, checked
    on the resolved path before anything about the file system is said, so that the answer is the
    same whether the path exists or not."""
    if not value.strip():
        raise Invalid("a path is required")
    path = Path(value.strip()).expanduser()
    if path.suffix.lower() != ".xlsx":
        raise Invalid("export path {path} must end in .xlsx", path=path)
    if actor.is_admin:
        return check_path(value)
    exports = Path(os.path.realpath(settings.data_dir / "exports"))
    resolved = Path(os.path.realpath(path))
    if ".." in path.parts or exports not in resolved.parents:
        raise Forbidden("account {account} may write exports only inside {folder}", account=actor.name, folder=exports)
    check_path(str(resolved))
    return resolved


def checked_first(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`rows`, its first one read now: a refused query (unknown tenant...) fails here, before any file exists."""
    first = next(rows, None)
    return itertools.chain([first] if first else [], rows)


@contextlib.contextmanager
def _staged(
    rows: Iterable[dict[str, Any]], headers: Sequence[str], status_label: dict[str, str] | None
) -> Iterator[tuple[Path, int]]:
    """The workbook written to a temporary file (a zip is written with seeks), and its row count."""
    with tempfile.TemporaryDirectory(prefix="imagehub-xlsx-") as folder:
        staged = Path(folder) / "images.xlsx"
        yield staged, write_rows(staged, rows, headers, status_label)


def write_stream(
    rows: Iterable[dict[str, Any]],
    out: IO[bytes],
    headers: Sequence[str] = HEADERS,
    status_label: dict[str, str] | None = None,
) -> int:
    """Write the workbook to a stream (standard output); the row count."""
    with _staged(rows, headers, status_label) as (staged, count), staged.open("rb") as handle:
        shutil.copyfileobj(handle, out, 1024 * 1024)
    out.flush()
    return count


def write_file(
    path: Path,
    rows: Iterable[dict[str, Any]],
    headers: Sequence[str] = HEADERS,
    status_label: dict[str, str] | None = None,
) -> int:
    """Write the workbook to `path`, checked by `check_target` already (atomically); the row count."""
    with _staged(rows, headers, status_label) as (staged, count):
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(staged, temporary)
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise Failed("cannot write {path}: {reason}", path=path, reason=exc.strerror or exc) from exc
    return count


def write_rows(
    target: Path,
    images: Iterable[dict[str, Any]],
    headers: Sequence[str] = HEADERS,
    status_label: dict[str, str] | None = None,
) -> int:
    """Write `images` (listing views) to the workbook `target`; the row count."""
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
    # One styled cell for the Created column, reused row after row: the date style is defined once
    # and each row is one plain tuple (the write-only sheet writes a row out before the next append).
    created = WriteOnlyCell(sheet)
    created.number_format = DATE_FORMAT
    append = sheet.append
    parse = datetime.fromisoformat
    label = status_label.get if status_label else None
    count = 0
    for image in images:
        # The view's seconds, naive UTC (Excel has no zones), as the serial number openpyxl would write for
        # the datetime: the same XML without openpyxl's per-cell type and date-format checks.
        created.value = to_excel(parse(image["created_at"][:19]))  # type: ignore[no-untyped-call]  # openpyxl's own
        name = image["name"]
        description = image["description"]
        status = image["status"]
        size = image["virtual_size"]
        append(
            (
                _text(sheet, name) if name[:1] == "=" else name,
                image["id"],
                image["os_type"],
                image["os_name"],
                label(status, status) if label else status,
                None if size is None else round(size / GIB, 2),
                _text(sheet, description) if description[:1] == "=" else description,
                created,
                image["tenant"],
            )
        )
        count += 1
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{count + 1}"
    workbook.save(target)
    return count
