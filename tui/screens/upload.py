"""An upload link, right after the import wizard made it: one ready command per tool (curl over FTP,
lftp, sftp, curl over HTTP and how it resumes, the tus URL), each copyable as download links are
(tui.screens.link.CopyField, OSC 52), the bytes received as they arrive and the link's expiry.

The screen polls the link (core.links.links.get_link) and the image about once a second while it is
open: the bar fills as the bytes land, says `uploaded` once all are in, and then follows the import
to `available` or `import failed`. Polling stops when the screen closes or the import has ended.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.timer import Timer
from textual.widgets import Header, ProgressBar, Static

from core.catalog.errors import ImagehubError
from core.catalog.models import Status
from core.catalog.vocabulary import LinkState
from tui.i18n import N_, _, tr
from tui.screens.link import CopyField, CopyFieldsScreen
from tui.widgets.footer import FittingFooter
from tui.widgets.format import (
    STATUS_STYLES,
    human_size,
    plain,
    progress_line,
    short_time,
    status_label,
    upload_state_label,
    visible,
)

# core.links.links.upload_commands key -> what the field is called; the keys 1-7 copy them in this order
COMMANDS = (
    ("curl_ftp", N_("curl over FTP (run it again to resume)")),
    ("lftp", N_("lftp (run it again to resume)")),
    ("sftp", N_("sftp (run it again to resume)")),
    ("curl_http", N_("curl over HTTP")),
    ("offset", N_("HTTP resume, step 1: the bytes received so far (Upload-Offset)")),
    ("curl_http_resume", N_("HTTP resume, step 2: go on from there (OFFSET = that number)")),
    ("tus", N_("tus URL (for tus clients; they resume by themselves)")),
)


class UploadScreen(CopyFieldsScreen):
    """Shows the upload link of `image` (the view core.importer.upload.submit_upload returns)."""

    DEFAULT_CSS = """
    UploadScreen #upload-state { padding: 0 1; height: auto; }
    UploadScreen #received { padding: 0 1; height: 1; }
    UploadScreen #received-text { padding: 0 1; height: auto; }
    UploadScreen #import-state { padding: 0 1; height: auto; }
    UploadScreen #upload-note { padding: 0 1; height: auto; color: $text-muted; }
    UploadScreen #fields { height: 1fr; margin: 1 0 0 0; }
    """
    BINDINGS = [
        Binding("escape", "back", N_("Back"), id="upload.back", tooltip=N_("Back to the image list")),
        *(
            Binding(str(number), f"copy('{key}')", N_("Copy"), id=f"upload.copy_{key}", show=False)
            for number, (key, _label) in enumerate(COMMANDS, start=1)
        ),
    ]

    def __init__(self, image: dict[str, Any], poll_seconds: float = 1.0) -> None:
        super().__init__()
        self.image = image
        self.upload: dict[str, Any] = dict(image["upload"])
        self.poll_seconds = poll_seconds
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield Static("", id="upload-state")
        yield ProgressBar(total=max(1, int(self.upload.get("size") or 1)), show_eta=False, id="received")
        yield Static("", id="received-text")
        yield Static("", id="import-state")
        yield Static(
            plain(
                _("FILE is the path of the file on your computer; it must be exactly {size} bytes.").format(
                    size=self.upload.get("size")
                )
            ),
            id="upload-note",
        )
        with VerticalScroll(id="fields"):
            for key, label in COMMANDS:
                yield CopyField(key, _(label))
        yield FittingFooter()

    def on_mount(self) -> None:
        from tui.screens.links import remember_urls

        remember_urls(self.app, self.upload)  # the links screen shows them again during this session
        self.title = "imagehub"
        self.sub_title = visible(_("Upload {name} ({id})").format(name=self.image["name"], id=self.image["id"]))
        commands: dict[str, str] = self.upload.get("commands") or {}
        for field in self.query(CopyField):
            field.set_value(commands.get(field.key))
        self._show(self.upload, self.image)
        self.query(CopyField).first().focus()
        self._timer = self.set_interval(self.poll_seconds, self._poll, name="upload-poll")

    def on_unmount(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _poll(self) -> None:
        self._fetch(str(self.upload["id"]), str(self.image["id"]))

    @work(thread=True, exclusive=True, group="upload-poll", exit_on_error=False)
    def _fetch(self, link_id: str, image_id: str) -> None:
        from core.images.images import get_image
        from core.links.links import get_link

        app: Any = self.app
        try:
            link = get_link(app.catalog, app.actor, link_id)
            image = get_image(app.catalog, app.actor, image_id)
        except ImagehubError as exc:  # the image or the link is gone (deleted, tenant changed)
            app.call_from_thread(self._gone, exc)
            return
        app.call_from_thread(self._show, link, image)

    def _gone(self, exc: ImagehubError) -> None:
        if not self.is_attached:
            return
        self._stop()
        self.query_one("#import-state", Static).update(Text(tr(exc), style="red"))

    def _show(self, link: dict[str, Any], image: dict[str, Any]) -> None:
        if not self.is_attached:  # a poll that ended after the screen closed
            return
        size = int(link.get("size") or 0)
        received = int(link.get("bytes_received") or 0)
        state = str(link.get("state") or "")
        uploaded = state == LinkState.UPLOADED or (size > 0 and received >= size)
        words = self._state_words(state, received)
        self.query_one("#upload-state", Static).update(
            Text.assemble((str(link["id"]), "bold"), " · ", human_size(size), " · ", (words, "italic"))
        )
        self.query_one("#received", ProgressBar).update(total=max(1, size), progress=received)
        counted = _("{done} of {size} bytes received").format(done=received, size=size)
        expires = _("expires {time} UTC").format(time=short_time(link.get("expires_at")))
        self.query_one("#received-text", Static).update(
            Text.assemble((_("uploaded"), "bold green"), " · ", counted, " · ", expires)
            if uploaded
            else Text.assemble(counted, " · ", expires)
        )
        self.query_one("#import-state", Static).update(self._import_line(image))
        if image.get("status") != Status.IMPORTING:
            self._stop()  # the import has ended: nothing more to follow

    @staticmethod
    def _state_words(state: str, received: int) -> str:
        """The link's state; an open link that has bytes already is receiving, no longer waiting."""
        if state == LinkState.ACTIVE and received > 0:
            return _("open: receiving the file's bytes")
        return upload_state_label(state)

    @staticmethod
    def _import_line(image: dict[str, Any]) -> Text:
        status = str(image.get("status") or "")
        line = Text(status_label(status), style=STATUS_STYLES.get(status, ""))
        if status == Status.IMPORT_FAILED and image.get("error"):
            line.append(" · " + _("failed: {reason}").format(reason=visible(tr(image["error"]))), style="red")
        elif image.get("progress"):
            line.append(" · " + progress_line(image["progress"]))
        return line
