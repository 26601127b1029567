"""A screen that lists rows keyed by ID in a DataTable: narrow or wide columns by the terminal's width,
read off the UI thread and re-read every `refresh_seconds` while the screen is the current one.

A screen built on it composes its own DataTable (id `TABLE_ID`), names its columns (`COLUMNS`), and says
how to read the rows (`_fetch`, in a thread), what a row's cells are (`_cells`) and what the status and
detail lines under the table say (`_update_status`, `_update_detail`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from textual import on
from textual.widgets import DataTable

from tui.i18n import _
from tui.screens.base import BaseScreen, report_error

WIDE = 118  # from this many columns on, every column shows (as in the image list)

# column key, title (N_), width narrow, width wide; width 0 hides the column
Column = tuple[str, str, int, int]


class LiveTableScreen(BaseScreen):
    """The shared scaffolding; call `_start_live_table()` from the screen's `on_mount`."""

    TABLE_ID: ClassVar[str]  # the DataTable's id
    COLUMNS: ClassVar[tuple[Column, ...]]
    LIST_GROUP: ClassVar[str]  # the load worker's group (a newer load cancels an older one)
    LIST_NAME: ClassVar[str]  # N_(): the title of a failed load's notification

    def __init__(self, refresh_seconds: float = 2.0) -> None:
        super().__init__()
        self.refresh_seconds = refresh_seconds
        self.rows: list[dict[str, Any]] = []
        self.fetching = False  # a load under way (not `loading`: Textual's indicator would hide the screen)
        self._wide: bool | None = None
        self._closed = False

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one(f"#{self.TABLE_ID}", DataTable)

    def _start_live_table(self) -> None:
        self._setup_columns()
        self.table.focus()
        self.reload()
        if self.refresh_seconds:
            self.set_interval(self.refresh_seconds, self._tick)

    def on_unmount(self) -> None:
        self._closed = True

    def on_resize(self) -> None:
        if (self.size.width >= WIDE) != self._wide:
            self._setup_columns()
            self._render_rows(self.rows, force=True)
        else:
            self._update_detail()

    # ---- the table ------------------------------------------------------------------------

    def _columns(self) -> list[tuple[str, str, int]]:
        chosen = [(key, title, wide if self._wide else narrow) for key, title, narrow, wide in self.COLUMNS]
        return [column for column in chosen if column[2]]

    def _setup_columns(self) -> None:
        self._wide = self.size.width >= WIDE if self.size.width else False
        self.table.clear(columns=True)
        for key, title, width in self._columns():
            self.table.add_column(_(title), width=width, key=key)

    @staticmethod
    def row_key(row: dict[str, Any]) -> str:
        return str(row["id"])

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    def _render_rows(self, rows: list[dict[str, Any]], *, force: bool = False) -> None:
        """The same rows (by key) are updated in place, cell by changed cell; other rows rebuild the
        table, the cursor staying on the row it was on (or at its place when that row is gone)."""
        table = self.table
        keys = [self.row_key(row) for row in rows]
        if not force and keys == [self.row_key(row) for row in self.rows] and table.row_count == len(keys):
            column_keys = [key for key, _title, _width in self._columns()]
            for old, new in zip(self.rows, rows, strict=True):
                if old != new:
                    for key, cell in zip(column_keys, self._cells(new), strict=True):
                        table.update_cell(self.row_key(new), key, cell)
        else:
            current = self.current_id()
            previous_row = table.cursor_row
            table.clear()
            for row in rows:
                table.add_row(*self._cells(row), key=self.row_key(row))
            if rows:
                row_index = keys.index(current) if current in keys else min(previous_row, len(rows) - 1)
                table.move_cursor(row=max(0, row_index), animate=False)
        self.rows = rows
        self._update_status()
        self._update_detail()

    def _update_status(self) -> None:
        raise NotImplementedError

    def _update_detail(self) -> None:
        raise NotImplementedError

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._update_detail()

    def current_id(self) -> str | None:
        row = self.table.cursor_row
        return self.row_key(self.rows[row]) if self.table.row_count and 0 <= row < len(self.rows) else None

    def current(self) -> dict[str, Any] | None:
        row_id = self.current_id()
        return next((row for row in self.rows if self.row_key(row) == row_id), None)

    # ---- loading --------------------------------------------------------------------------

    def reload(self) -> None:
        self.fetching = True
        query = self._query()
        self.run_worker(
            partial(self._load, query),
            name="_load",
            group=self.LIST_GROUP,
            exclusive=True,
            exit_on_error=False,
            thread=True,
        )

    def _query(self) -> object:
        """What a load reads (filters, a page), taken on the UI thread; a load whose query is no longer
        the screen's when it ends is dropped: a newer one is on its way."""
        return None

    def _refreshes(self) -> bool:
        """Whether the timer re-reads the list now (besides the screen being current and idle)."""
        return True

    def _tick(self) -> None:
        if self.is_current and not self.fetching and self._refreshes():
            self.reload()

    def _fetch(self, query: Any) -> list[dict[str, Any]]:
        """The rows (called in a thread worker)."""
        raise NotImplementedError

    def _load(self, query: object) -> None:
        app: Any = self.app
        try:
            rows = self._fetch(query)
        except Exception as exc:
            app.call_from_thread(self._load_failed, exc)
            return
        app.call_from_thread(self._loaded, rows, query)

    def _loaded(self, rows: list[dict[str, Any]], query: object) -> None:
        self.fetching = False
        if not self._closed and query == self._query():
            self._show_rows(rows)

    def _show_rows(self, rows: list[dict[str, Any]]) -> None:
        self._render_rows(rows)

    def _load_failed(self, exc: Exception) -> None:
        self.fetching = False
        if not self._closed:
            self._show_load_error(exc)

    def _show_load_error(self, exc: Exception) -> None:
        report_error(self, exc, _(self.LIST_NAME))

    def action_reload(self) -> None:
        self.reload()
