"""The image list: one page of a catalog query at a time in a DataTable, refreshed in place.

The table never holds more than `PAGE` rows: moving past the last row (or page down there) loads the
next page from SQL, past the first the previous one. Row keys are image IDs, so a periodic refresh
updates changed cells in place without moving the cursor or losing the selection. The refresh
queries only when something was committed to the catalog since the last look (core's
CatalogWatch), so an idle list costs no query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState, get_current_worker

from core.catalog.models import Status
from core.catalog.watch import CatalogWatch
from core.images.images import ImageQuery, count_images, list_images
from core.images.listing import active_progress
from core.rules.display import os_words, size_in_gb
from tui.i18n import N_, _, tr
from tui.screens.base import report_error
from tui.widgets.format import (
    TRANSIENT,
    fit,
    plain,
    progress_line,
    short_time,
    status_cell,
    status_label,
    visible,
)

log = logging.getLogger("imagehub.tui")

PAGE = 100
COUNT_DELAY = 0.15  # seconds after the page is shown before the total is counted
WIDE = 118  # from this many columns on, the table shows every column at full width

# column key -> (title, width narrow, width wide); width 0 hides the column. Each cell has a space
# either side, and a long list a 2-cell scrollbar: narrow is 78 cells wide, wide 118 (80 and 120
# columns). The OS column says the system type (CentOS, Windows), so narrow leaves that out.
COLUMNS: tuple[tuple[str, str, int, int], ...] = (
    ("name", N_("Name"), 15, 18),
    ("id", N_("ID"), 12, 12),
    ("os_type", N_("Type"), 0, 7),
    ("os", N_("OS"), 14, 15),
    ("arch", N_("Arch"), 7, 7),
    ("status", N_("Status"), 13, 18),
    ("size", N_("Size (GB)"), 5, 9),
    ("created", N_("Created"), 0, 16),
)
# A narrow column's shorter title.
NARROW_TITLES = {"size": N_("GB")}
SORT_KEYS = {
    "name": "name",
    "id": "id",
    "os_type": "os_type",
    "os": "os",
    "arch": "arch",
    "status": "status",
    "size": "size",
    "created": "created_at",
}


class ImageTable(DataTable[Any]):
    """A DataTable that asks for the next or previous page at its edges."""

    class PageRequested(Message):
        """The cursor tried to leave the page: `step` is +1 (next) or -1 (previous)."""

        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = step

    def _at_end(self) -> bool:
        return self.row_count > 0 and self.cursor_row >= self.row_count - 1

    def action_cursor_down(self) -> None:
        if self._at_end():
            self.post_message(self.PageRequested(+1))
        else:
            super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self.row_count > 0 and self.cursor_row <= 0:
            self.post_message(self.PageRequested(-1))
        else:
            super().action_cursor_up()

    def action_page_down(self) -> None:
        if self._at_end():
            self.post_message(self.PageRequested(+1))
        else:
            super().action_page_down()

    def action_page_up(self) -> None:
        if self.row_count > 0 and self.cursor_row <= 0:
            self.post_message(self.PageRequested(-1))
        else:
            super().action_page_up()


class ImageList(Vertical):
    """A paged, live view of the images matching `query`, with a multi-selection."""

    DEFAULT_CSS = """
    ImageList { height: 1fr; }
    ImageList > ImageTable { height: 1fr; }
    ImageList > .list-status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    ImageList > .list-detail { height: 2; padding: 0 1; }
    """

    count_delay = COUNT_DELAY

    class Loaded(Message):
        """A page was shown (after a query change, a page move or a refresh)."""

        def __init__(self, image_list: ImageList) -> None:
            super().__init__()
            self.image_list = image_list

    def __init__(self, query: ImageQuery, *, id: str | None = None, refresh_seconds: float = 2.0) -> None:
        super().__init__(id=id)
        self.image_query = query
        self.page_offset = 0
        self.total: int | None = None
        self.rows: list[dict[str, Any]] = []
        self.progress: dict[str, dict[str, Any]] = {}
        self.selected: dict[str, str] = {}  # id -> name, kept across pages
        self.refresh_seconds = refresh_seconds
        self._wide: bool | None = None
        self._generation = 0
        self.loading_page = False
        self._count_wanted = False
        self._count_timer: Timer | None = None
        self.mounted_at = 0.0  # perf_counter() at mount and when the first page was shown (bench/tui.py)
        self.first_shown_at = 0.0
        self.query_ms = 0.0  # how long the last page query took (bench/tui.py)
        # Refresh ticks and catalog queries so far, and an event set at each tick (tests, bench/tui.py).
        self.ticks = 0
        self.queries = 0
        self.ticked = asyncio.Event()
        self._watch: CatalogWatch | None = None

    def compose(self) -> ComposeResult:
        table = ImageTable(cursor_type="row", zebra_stripes=True, id="images-table")
        yield table
        yield Static("", classes="list-status", id="list-status")
        yield Static("", classes="list-detail", id="list-detail")

    @property
    def table(self) -> ImageTable:
        return self.query_one(ImageTable)

    def on_mount(self) -> None:
        self.mounted_at = time.perf_counter()
        self._setup_columns()
        if self.refresh_seconds:
            app: Any = self.app
            self._watch = CatalogWatch(app.catalog.settings.database_url)
            self._watch.changed()  # the baseline: what the first page is read after
            self.set_interval(self.refresh_seconds, self._tick)
        self.reload()

    def on_unmount(self) -> None:
        if self._watch is not None:
            self._watch.close()

    def on_resize(self) -> None:
        wide = self.size.width >= WIDE
        if wide != self._wide:
            self._setup_columns()
            self._render_rows(self.rows, self.progress, keep_cursor=True, force=True)

    def _setup_columns(self) -> None:
        self._wide = self.size.width >= WIDE if self.size.width else False
        table = self.table
        table.clear(columns=True)
        for key, title, narrow, wide in COLUMNS:
            width = wide if self._wide else narrow
            if width:
                table.add_column(self._column_title(key, title), width=width, key=key)

    def _column_title(self, key: str, title: str) -> Text:
        label = _(NARROW_TITLES[key]) if key in NARROW_TITLES and not self._wide else _(title)
        if SORT_KEYS.get(key) == self.image_query.sort:
            label += " ▼" if self.image_query.descending else " ▲"
        return Text(label, justify="right" if key == "size" else "left")  # over its right-aligned numbers

    def _columns(self) -> list[tuple[str, int]]:
        return [
            (key, wide if self._wide else narrow)
            for key, _t, narrow, wide in COLUMNS
            if (wide if self._wide else narrow)
        ]

    def _cells(self, image: dict[str, Any], progress: dict[str, Any] | None) -> list[Any]:
        cells: list[Any] = []
        for key, width in self._columns():
            if key == "name":
                mark = "● " if image["id"] in self.selected else ""
                cells.append(Text(fit(mark + visible(image["name"]), width), style="bold" if mark else ""))
            elif key == "id":
                cells.append(plain(image["id"]))
            elif key == "os_type":
                cells.append(plain(fit(visible(image["os_type"]), width)))
            elif key == "os":
                cells.append(plain(fit(visible(os_words(image["platform"], image["os_version"])), width)))
            elif key == "arch":
                cells.append(plain(fit(visible(image["arch"]), width)))
            elif key == "status":
                cells.append(status_cell(image["status"], progress, width))
            elif key == "size":
                cells.append(Text(size_in_gb(image["virtual_size"]), justify="right"))
            elif key == "created":
                cells.append(plain(short_time(image["created_at"])))
        return cells

    # ---- loading -------------------------------------------------------------------------

    def set_query(self, query: ImageQuery) -> None:
        """Show the first page of a new query (filter, status tab, sort, tenant)."""
        sort_changed = (query.sort, query.descending) != (self.image_query.sort, self.image_query.descending)
        self.image_query = query
        self.page_offset = 0
        self.total = None
        if sort_changed:
            self._setup_columns()
        self.reload(cursor_row=0)

    def reload(self, *, cursor_row: int | None = None, counts: bool = True) -> None:
        self._generation += 1
        self.loading_page = True
        if counts:
            self._count_wanted = True
        app: Any = self.app
        query = replace(self.image_query, limit=PAGE, offset=self.page_offset)
        prefetched = app.take_prefetched(query) if hasattr(app, "take_prefetched") else None
        if prefetched is not None and prefetched.done() and prefetched.exception() is None:
            # The app started this query while Textual was starting: show it now, no thread hop.
            page = prefetched.result()
            known = {r["id"]: self.progress[r["id"]] for r in page if r["id"] in self.progress}
            self._show(self._generation, page, known, cursor_row)
            self._load_progress(self._generation, page, known)
            return
        if prefetched is not None and prefetched.done():
            prefetched = None  # it failed: ask again, and let that report the error
        self._load(self._generation, self.image_query, self.page_offset, cursor_row, prefetched)

    def _tick(self) -> None:
        self.ticks += 1
        self.ticked.set()
        if not self.screen.is_current or self.loading_page:
            return
        if self._watch is None or not self._watch.can_tell:
            # No way to know what changed (PostgreSQL): the page every tick, the total only while
            # something is under way (a count of a million rows every 2 s would be the load itself).
            self.reload(counts=any(r["status"] in TRANSIENT for r in self.rows))
        elif self._watch.changed():
            self.reload()
        # else nothing was committed since the last look: an idle list queries nothing

    @work(thread=True, exclusive=True, group="image-page", exit_on_error=False)
    def _load(
        self, generation: int, query: ImageQuery, offset: int, cursor_row: int | None, prefetched: Any = None
    ) -> None:
        app: Any = self.app
        started = time.perf_counter()
        if prefetched is not None:
            page = prefetched.result()
        else:
            self.queries += 1
            page = list_images(app.catalog, app.actor, replace(query, limit=PAGE, offset=offset))
        self.query_ms = (time.perf_counter() - started) * 1000
        if get_current_worker().is_cancelled:
            return
        # Rows first (with the progress already known), then the fresh progress of the running jobs.
        known = {r["id"]: self.progress[r["id"]] for r in page if r["id"] in self.progress}
        self.app.call_from_thread(self._show, generation, page, known, cursor_row)
        self._fetch_progress(generation, page, known)

    @work(thread=True, exclusive=True, group="image-progress", exit_on_error=False)
    def _load_progress(self, generation: int, page: list[dict[str, Any]], known: dict[str, Any]) -> None:
        self._fetch_progress(generation, page, known)

    def _fetch_progress(self, generation: int, page: list[dict[str, Any]], known: dict[str, Any]) -> None:
        """In a worker thread: the progress of the page's running jobs, then update those cells."""
        app: Any = self.app
        transient = [r["id"] for r in page if r["status"] in TRANSIENT]
        if not transient and not known:
            return
        self.queries += 1
        progress = active_progress(app.catalog, app.actor, transient)
        if get_current_worker().is_cancelled:
            return
        self.app.call_from_thread(self._show_progress, generation, page, progress)

    def _show_progress(self, generation: int, page: list[dict[str, Any]], progress: dict[str, dict[str, Any]]) -> None:
        if generation == self._generation and [r["id"] for r in self.rows] == [r["id"] for r in page]:
            self._render_rows(self.rows, progress, keep_cursor=True)

    @work(thread=True, exclusive=True, group="image-count", exit_on_error=False)
    def _count(self, query: ImageQuery) -> None:
        app: Any = self.app
        self.queries += 1
        total = count_images(app.catalog, app.actor, replace(query, limit=None, offset=0))
        if get_current_worker().is_cancelled:
            return
        self.app.call_from_thread(self._show_total, query, total)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.loading_page = False
            if event.worker.error is not None:
                report_error(self, event.worker.error)

    def _show_total(self, query: ImageQuery, total: int) -> None:
        if query == self.image_query:
            self.total = total
            self._update_status()

    def _show(
        self, generation: int, page: list[dict[str, Any]], progress: dict[str, dict[str, Any]], cursor_row: int | None
    ) -> None:
        if generation != self._generation:
            return
        self.loading_page = False
        if not page and self.page_offset > 0:  # the page emptied under us (deletions): step back
            self.page_offset = max(0, self.page_offset - PAGE)
            self.reload(cursor_row=PAGE - 1)
            return
        self._render_rows(page, progress, keep_cursor=cursor_row is None, cursor_row=cursor_row)
        if not self.first_shown_at:
            self.first_shown_at = time.perf_counter()
        if self._count_wanted:
            # Count once typing pauses: a count scans every match and would slow the next keystroke.
            self._count_wanted = False
            if self._count_timer is not None:
                self._count_timer.stop()
            if self.count_delay <= 0:
                self._count(self.image_query)
            else:
                self._count_timer = self.set_timer(self.count_delay, lambda: self._count(self.image_query))
        self.post_message(self.Loaded(self))

    def _render_rows(
        self,
        page: list[dict[str, Any]],
        progress: dict[str, dict[str, Any]],
        *,
        keep_cursor: bool,
        cursor_row: int | None = None,
        force: bool = False,
    ) -> None:
        table = self.table
        self._announce_finished(page)
        old_keys = [r["id"] for r in self.rows]
        new_keys = [r["id"] for r in page]
        if not force and old_keys == new_keys and table.row_count == len(new_keys):
            column_keys = [key for key, _w in self._columns()]
            for old, new in zip(self.rows, page, strict=True):
                if old != new or self.progress.get(old["id"]) != progress.get(new["id"]):
                    for key, cell in zip(column_keys, self._cells(new, progress.get(new["id"])), strict=True):
                        table.update_cell(new["id"], key, cell)
            self.rows, self.progress = page, progress
        else:
            current = self.current_id() if keep_cursor else None
            previous_row = table.cursor_row
            self.rows, self.progress = page, progress
            table.clear()
            for image in page:
                table.add_row(*self._cells(image, progress.get(image["id"])), key=image["id"])
            if page:
                if current is not None and current in new_keys:
                    row = new_keys.index(current)
                elif cursor_row is not None:
                    row = cursor_row
                else:
                    row = previous_row
                table.move_cursor(row=max(0, min(row, len(page) - 1)), animate=False)
        self._update_status()
        self.update_detail()

    def _announce_finished(self, page: list[dict[str, Any]]) -> None:
        """An image in view that leaves `importing`/`creating` gets a notification (live status)."""
        before = {r["id"]: r["status"] for r in self.rows}
        for image in page:
            old = before.get(image["id"])
            if old in (Status.IMPORTING, Status.CREATING) and image["status"] != old:
                failed = image["status"] == Status.IMPORT_FAILED
                message = (
                    _("{name} failed: {reason}").format(name=image["name"], reason=tr(image.get("error") or ""))
                    if failed
                    else _("{name} is now {status}.").format(name=image["name"], status=status_label(image["status"]))
                )
                self.app.notify(message, severity="error" if failed else "information", timeout=8)

    # ---- paging, selection ---------------------------------------------------------------

    @on(ImageTable.PageRequested)
    def _page(self, event: ImageTable.PageRequested) -> None:
        event.stop()
        if event.step > 0:
            more = len(self.rows) == PAGE and (self.total is None or self.page_offset + PAGE < self.total)
            if more:
                self.page_offset += PAGE
                self.reload(cursor_row=0, counts=False)
        elif self.page_offset > 0:
            self.page_offset = max(0, self.page_offset - PAGE)
            self.reload(cursor_row=PAGE - 1, counts=False)

    def next_page(self) -> None:
        self._page(ImageTable.PageRequested(+1))

    def previous_page(self) -> None:
        self._page(ImageTable.PageRequested(-1))

    class SortRequested(Message):
        """A column header was clicked: sort by it (again: reverse)."""

        def __init__(self, sort: str) -> None:
            super().__init__()
            self.sort = sort

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        sort = SORT_KEYS.get(str(event.column_key.value))
        if sort:
            self.post_message(self.SortRequested(sort))

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.update_detail()

    def current_id(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        row = table.cursor_row
        return self.rows[row]["id"] if 0 <= row < len(self.rows) else None

    def current(self) -> dict[str, Any] | None:
        image_id = self.current_id()
        return next((r for r in self.rows if r["id"] == image_id), None)

    def toggle_selection(self) -> None:
        image = self.current()
        if image is None:
            return
        if image["id"] in self.selected:
            del self.selected[image["id"]]
        else:
            self.selected[image["id"]] = image["name"]
        self._refresh_row(image)
        self._update_status()

    def clear_selection(self) -> None:
        self.selected.clear()
        self._render_rows(self.rows, self.progress, keep_cursor=True, force=True)

    def _refresh_row(self, image: dict[str, Any]) -> None:
        column_keys = [key for key, _w in self._columns()]
        for key, cell in zip(column_keys, self._cells(image, self.progress.get(image["id"])), strict=True):
            self.table.update_cell(image["id"], key, cell)

    def targets(self) -> dict[str, str]:
        """The selected images, else the current one: id -> name."""
        if self.selected:
            return dict(self.selected)
        image = self.current()
        return {image["id"]: image["name"]} if image else {}

    # ---- status and detail lines ----------------------------------------------------------

    def _update_status(self) -> None:
        shown = len(self.rows)
        if shown:
            span = _("{first}–{last} of {total}").format(
                first=self.page_offset + 1,
                last=self.page_offset + shown,
                total="…" if self.total is None else f"{self.total:,}",
            )
        else:
            span = (
                _("no images")
                if not self.image_query.text
                else _("no image matches “{text}”").format(text=self.image_query.text)
            )
        parts = [span]
        if self.selected:
            parts.append(_("{n} selected").format(n=len(self.selected)))
        if self.image_query.text:
            parts.append(_("filter: {text}").format(text=self.image_query.text))
        column = next((title for key, title, *_w in COLUMNS if SORT_KEYS.get(key) == self.image_query.sort), None)
        if column is not None and not self._wide:
            arrow = "▼" if self.image_query.descending else "▲"
            parts.append(_("sorted by {column} {arrow}").format(column=_(column), arrow=arrow))
        self.query_one("#list-status", Static).update(plain(" · ".join(parts)))  # the filter is user text

    def update_detail(self) -> None:
        image = self.current()
        detail = self.query_one("#list-detail", Static)
        if image is None:
            detail.update("")
            return
        first = Text.assemble(
            (visible(image["id"]), "bold"),
            " · ",
            visible(image["os_name"]),
            " · ",
            _("created {time}").format(time=short_time(image["created_at"])),
        )
        if image.get("description"):
            first.append(" · " + visible(image["description"].replace("\n", " ")), style="italic")
        progress = self.progress.get(image["id"])
        if image["status"] == Status.IMPORT_FAILED and image.get("error"):
            second = plain(_("failed: {reason}").format(reason=tr(image["error"])), style="red")
        elif progress is not None:
            second = Text.assemble(status_cell(image["status"], progress, 30), "  ", progress_line(progress))
        else:
            second = Text("")
        joined = Text("\n").join([first, second])
        joined.no_wrap = True
        joined.overflow = "ellipsis"
        detail.update(joined)
