"""The image list as an Excel workbook behind a 24-hour link (`x` on the image list): the HTTP, FTP and
SFTP URLs, the `sftp` command, the expiry and the SHA-256, each copyable, as for an image's link.

Over the admin SSH door the TUI runs on the server, so a path typed here would name a server file
(docs/security.md L6): the workbook is made by core.links.workbooks and fetched with the user's own tools instead.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Header, Static

from tui.i18n import N_, _
from tui.screens.link import FIELDS, CopyField, CopyFieldsScreen
from tui.widgets.footer import FittingFooter
from tui.widgets.format import human_size, short_time


class WorkbookLinkScreen(CopyFieldsScreen):
    DEFAULT_CSS = """
    WorkbookLinkScreen #link-state { padding: 1 1 0 1; height: auto; }
    WorkbookLinkScreen #link-hint { padding: 0 1 1 1; height: auto; }
    WorkbookLinkScreen #fields { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "back", N_("Back"), id="workbook.back", tooltip=N_("Back to the image list")),
        Binding("1", "copy('http')", N_("Copy HTTP"), id="workbook.copy_http", show=False),
        Binding("2", "copy('ftp')", N_("Copy FTP"), id="workbook.copy_ftp", show=False),
        Binding("3", "copy('sftp')", N_("Copy SFTP"), id="workbook.copy_sftp", show=False),
        Binding("4", "copy('sftp_command')", N_("Copy sftp command"), id="workbook.copy_command", show=False),
    ]

    def __init__(self, view: dict[str, Any]) -> None:
        super().__init__()
        self.link = view

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield Static(id="link-state")
        yield Static(_("Download it with curl -O, wget, lftp or sftp; the link is valid for 24 hours."), id="link-hint")
        with VerticalScroll(id="fields"):
            for key, label in FIELDS:
                yield CopyField(key, _(label))
        yield FittingFooter()

    def on_mount(self) -> None:
        from tui.screens.links import remember_urls

        view = self.link
        remember_urls(self.app, view)  # the links screen shows them again during this session
        self.title = "imagehub"
        self.sub_title = _("Excel workbook of {n} images").format(n=view.get("rows", "?"))
        size = f" · {human_size(view['size'])}" if view.get("size") else ""
        self.query_one("#link-state", Static).update(Text.assemble((view["id"], "bold"), " · ", view["filename"], size))
        for field in self.query(CopyField):
            if field.key == "expires_at":
                shown = _("{time} UTC (24 hours)").format(time=short_time(view.get("expires_at")))
                field.set_value(view.get("expires_at"), shown)
            else:
                field.set_value(view.get(field.key))
        fields = list(self.query(CopyField))
        if fields:
            fields[0].focus()
