"""Download links: choose a format, generate, then the HTTP, FTP and SFTP URLs, the `sftp`
command, the expiry and the SHA-256 — each copyable (OSC 52 clipboard) and selectable.

Before anything is generated the screen says what each format costs to download (qcow2: about the
data the disk holds; raw: the whole virtual disk, mostly zeros), and the format offered first is
links.default_format; an ISO is offered only as it is.

The link is made by core.links.links; when the file still has to be prepared (an export or its checksum),
the screen polls the link until it is ready while the worker does the work.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Header, Label, Select, Static

from tui.i18n import N_, _
from tui.screens.base import BaseScreen, report_error, translate_bindings
from tui.widgets.footer import FittingFooter
from tui.widgets.format import human_size, link_state_label, short_time, visible

FORMAT_NAMES = {"qcow2": "QCOW2", "raw": "RAW", "iso": "ISO"}

FIELDS = (
    ("http", N_("HTTP")),
    ("ftp", N_("FTP")),
    ("sftp", N_("SFTP")),
    ("sftp_command", N_("sftp command")),
    ("sha256", N_("SHA-256")),
    ("expires_at", N_("Expires")),
)


class CopyField(Static, can_focus=True):
    """One value of the link: focus it and press Enter or c to copy it."""

    DEFAULT_CSS = """
    CopyField { height: auto; padding: 0 1; margin: 0 0 1 0; }
    CopyField:focus { background: $boost; }
    """
    BINDINGS = [Binding("enter,c", "copy", N_("Copy"), id="link.copy", tooltip=N_("Copy to the clipboard (OSC 52)"))]

    def __init__(self, key: str, label: str) -> None:
        super().__init__("", id=f"field-{key}")
        self.key = key
        self.label = label
        self.value = ""
        translate_bindings(self)

    def set_value(self, value: str | None, shown: str | None = None) -> None:
        self.value = value or ""
        text = Text.assemble((self.label, "bold"), "\n", visible(shown if shown is not None else (value or "-")))
        self.update(text)

    def action_copy(self) -> None:
        if not self.value:
            self.app.notify(_("Nothing to copy yet."), severity="warning")
            return
        self.app.copy_to_clipboard(self.value)
        self.app.notify(_("{what} copied to the clipboard.").format(what=self.label), timeout=3)


class CopyFieldsScreen(BaseScreen):
    """A screen of CopyFields: `copy('key')` copies the one named, `back` closes it."""

    def action_copy(self, key: str) -> None:
        fields = [f for f in self.query(CopyField) if f.key == key]
        if fields:
            fields[0].action_copy()

    def action_back(self) -> None:
        self.dismiss(None)


def size_words(found: dict[str, Any], choices: dict[str, Any]) -> str:
    """What a link in one format costs to download, in users' words: "QCOW2 · about 64 MB to
    download (virtual disk 20 GB)", "RAW · 20 GB to download (mostly zeros)"."""
    name = FORMAT_NAMES.get(found["format"], found["format"].upper())
    size = human_size(found["size"])
    virtual = human_size(choices.get("virtual_size"))
    if found["format"] == "qcow2":
        if found["exact"]:
            return _("{format} · {size} to download (virtual disk {virtual})").format(
                format=name, size=size, virtual=virtual
            )
        return _("{format} · about {size} to download (virtual disk {virtual})").format(
            format=name, size=size, virtual=virtual
        )
    if found["mostly_zeros"]:
        return _("{format} · {size} to download (mostly zeros)").format(format=name, size=size)
    return _("{format} · {size} to download").format(format=name, size=size)


def _size_line(found: dict[str, Any], choices: dict[str, Any], chosen: bool) -> Text:
    """One format's line; the chosen format's is marked and bold."""
    return Text.assemble("▸ " if chosen else "  ", (size_words(found, choices), "bold" if chosen else ""))


class LinkScreen(CopyFieldsScreen):
    DEFAULT_CSS = """
    LinkScreen #choose { height: auto; padding: 1 1 0 1; }
    LinkScreen #choose > Label { padding: 0 1 0 0; }
    LinkScreen #choose > Select { width: 24; }
    LinkScreen #choose > Label { padding: 0 1 0 0; width: auto; }
    LinkScreen #choose > Button { margin-left: 2; }
    LinkScreen #link-state { padding: 0 1; height: auto; }
    LinkScreen #sizes { padding: 0 1 1 1; height: auto; }
    LinkScreen #fields { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "back", N_("Back"), id="link.back", tooltip=N_("Back to the image list")),
        Binding("ctrl+g", "generate", N_("Generate"), id="link.generate", tooltip=N_("Generate the download links")),
        Binding("1", "copy('http')", N_("Copy HTTP"), id="link.copy_http", show=False),
        Binding("2", "copy('ftp')", N_("Copy FTP"), id="link.copy_ftp", show=False),
        Binding("3", "copy('sftp')", N_("Copy SFTP"), id="link.copy_sftp", show=False),
        Binding("4", "copy('sftp_command')", N_("Copy sftp command"), id="link.copy_command", show=False),
    ]

    def __init__(self, image: dict[str, Any], poll_seconds: float = 1.0) -> None:
        super().__init__()
        self.image = image
        self.poll_seconds = poll_seconds
        self.link: dict[str, Any] | None = None
        self.token: str | None = None
        self.choices: dict[str, Any] | None = None  # what each format costs (core.links.download_choices)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        with Horizontal(id="choose"):
            yield Label(_("Format"))
            yield Select(
                self._format_options(),
                value=self._default_format(),
                allow_blank=False,
                id="format",
                compact=True,
            )
            yield Button(_("Generate links"), id="generate", variant="primary", compact=True)
        yield Static("", id="sizes")
        yield Static(
            _("Links are valid for 24 hours and resume with curl -C -, wget -c, lftp or sftp."), id="link-state"
        )
        with VerticalScroll(id="fields"):
            for key, label in FIELDS:
                yield CopyField(key, _(label))
        yield FittingFooter()

    def _format_options(self) -> list[tuple[str, str]]:
        if self.image.get("disk_format") == "iso":
            return [("ISO", "iso")]
        return [(_("QCOW2 (smaller)"), "qcow2"), ("RAW", "raw")]

    def _default_format(self) -> str:
        if self.image.get("disk_format") == "iso":
            return "iso"
        app: Any = self.app
        return str(app.catalog.settings.links.default_format)

    def on_mount(self) -> None:
        self.title = "imagehub"
        self.sub_title = visible(_("Download {name} ({id})").format(name=self.image["name"], id=self.image["id"]))
        for field in self.query(CopyField):
            field.display = False
        self.query_one("#generate", Button).focus()
        self._load_sizes()

    @work(thread=True, exclusive=True, group="link-sizes", exit_on_error=False)
    def _load_sizes(self) -> None:
        from core.links.links import download_choices

        app: Any = self.app
        try:
            choices = download_choices(app.catalog, app.actor, self.image["id"])
        except Exception:  # the image went away: Generate says why
            return
        app.call_from_thread(self._show_sizes, choices)

    def _show_sizes(self, choices: dict[str, Any]) -> None:
        self.choices = choices
        chosen = self.query_one("#format", Select).value
        lines = [_size_line(found, choices, found["format"] == chosen) for found in choices["formats"]]
        self.query_one("#sizes", Static).update(Text("\n").join(lines))

    @on(Select.Changed, "#format")
    def _format_changed(self) -> None:
        if self.choices is not None:
            self._show_sizes(self.choices)

    @on(Button.Pressed, "#generate")
    def action_generate(self) -> None:
        problem = getattr(self.app, "gateway_problem", None)
        if problem:  # the gateway the TUI relied on is gone: no URLs that nobody answers
            self.app.notify(
                _("No download links while the gateway is not running: {reason}.").format(reason=problem),
                severity="error",
            )
            return
        value = self.query_one("#format", Select).value
        self.query_one("#generate", Button).disabled = True
        self._create(str(value))

    @work(thread=True, exclusive=True, group="link-create", exit_on_error=False)
    def _create(self, fmt: str) -> None:
        from core.links.links import create_link

        app: Any = self.app
        try:
            created = create_link(app.catalog, app.actor, self.image["id"], fmt)
        except Exception as exc:
            app.call_from_thread(self._failed, exc)
            return
        app.call_from_thread(self._created, created.view, created.token, created.job_id)

    def _failed(self, exc: Exception) -> None:
        self.query_one("#generate", Button).disabled = False
        report_error(self, exc, _("Download links"))

    def _created(self, view: dict[str, Any], token: str, job_id: int | None) -> None:
        from tui.screens.links import remember_urls

        self.token = token
        remember_urls(self.app, view)
        self._show(view)
        app: Any = self.app
        if job_id is not None:
            app.wake_worker()
        if view.get("sha256") is None:
            self.set_interval(self.poll_seconds, self._poll, name="link-poll")
        fields = list(self.query(CopyField))
        if fields:
            fields[0].focus()

    def _poll(self) -> None:
        if self.link is not None and self.link.get("sha256") is None:
            self._describe(self.link["id"])

    @work(thread=True, exclusive=True, group="link-poll", exit_on_error=False)
    def _describe(self, link_id: str) -> None:
        from core.links.links import describe

        app: Any = self.app
        view = describe(app.catalog, link_id, self.token)
        app.call_from_thread(self._show, view)

    def _show(self, view: dict[str, Any]) -> None:
        self.link = view
        state = view.get("state") or ""
        size = f" · {human_size(view['size'])}" if view.get("size") else ""
        self.query_one("#link-state", Static).update(
            Text.assemble(
                (view["id"], "bold"),
                " · ",
                visible(view["filename"]),
                size,
                " · ",
                (link_state_label(state), "italic"),
            )
        )
        for field in self.query(CopyField):
            field.display = True
            if field.key == "expires_at":
                field.set_value(
                    view.get("expires_at"), _("{time} UTC (24 hours)").format(time=short_time(view.get("expires_at")))
                )
            elif field.key == "sha256":
                field.set_value(view.get("sha256"), view.get("sha256") or _("being computed…"))
            else:
                field.set_value(view.get(field.key))
