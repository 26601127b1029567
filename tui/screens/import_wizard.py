"""The import wizard: source (local file under the import folder, URL, or an upload from the user's
own computer), name, remark, OS type → platform → architecture → version from the OS matrix, target
size and optional SHA-256.

Every field is checked as you type by the same functions `core` uses (core.rules.validation, the URL
policy, the upload's size in bytes), so the messages are core's own. Starting the import calls
core.importer.submit (or core.importer.upload for an upload) and returns to the list, where the new
image shows `importing`; an upload's link is shown next (tui.screens.upload).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text, TextType
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, DirectoryTree, Header, Input, Label, Select, Static

from core.accounts.accounts import list_tenants
from core.catalog.errors import ImagehubError
from core.rules.validation import check_description, check_name, check_os, check_sha256, check_size_gb
from tui.i18n import N_, _, tr
from tui.screens.base import BaseScreen, report_error
from tui.widgets.footer import FittingFooter
from tui.widgets.format import plain


def problem(check: Callable[[], object]) -> str | None:
    try:
        check()
    except ImagehubError as exc:
        return tr(exc)
    return None


class SafeDirectoryTree(DirectoryTree):
    """The file browser; a file name is user text: control characters in it are shown escaped."""

    def process_label(self, label: TextType) -> Text:
        return super().process_label(plain(label) if isinstance(label, str) else label)


class ImportWizard(BaseScreen):
    """Returns the new image (dict, `importing`) or None when cancelled."""

    DEFAULT_CSS = """
    ImportWizard #form { height: 1fr; padding: 0 1; }
    ImportWizard .row { height: auto; }
    ImportWizard .row > Label { width: 16; padding: 0 1 0 0; }
    ImportWizard .row > Input, ImportWizard .row > Select { width: 1fr; }
    ImportWizard .message { color: $error; height: auto; padding: 0 0 0 16; }
    ImportWizard .message.-empty { display: none; }
    ImportWizard .hint { color: $text-muted; padding: 0 0 0 16; height: auto; }
    ImportWizard #files { height: 7; margin: 0 0 0 16; border: none; }
    ImportWizard .-hidden { display: none; }
    ImportWizard #buttons { height: 1; align-horizontal: right; padding: 0 1; }
    ImportWizard #buttons Button { margin-left: 2; }
    ImportWizard #submit-message { color: $error; height: auto; padding: 0 1; }
    """

    BINDINGS = [
        Binding("escape", "cancel", N_("Cancel"), id="import.cancel", tooltip=N_("Back to the list, nothing imported")),
        Binding("ctrl+s", "start", N_("Start import"), id="import.start", tooltip=N_("Check every field and import")),
    ]

    def __init__(self, tenant: str | None = None) -> None:
        super().__init__()
        self.tenant = tenant
        self.touched: set[str] = set()
        self.busy = False

    # ---- layout ------------------------------------------------------------------------------

    def _row(self, field: str, label: str, widget: Any) -> ComposeResult:
        with Horizontal(classes="row", id=f"row-{field}"):
            yield Label(label)
            yield widget
        yield Static("", classes="message -empty", id=f"message-{field}")

    def compose(self) -> ComposeResult:
        app: Any = self.app
        settings = app.catalog.settings
        matrix = app.catalog.os_matrix
        root = self._browser_root(settings)
        yield Header(show_clock=False, icon="▣")
        with VerticalScroll(id="form"):
            if app.actor.is_admin:
                yield from self._row(
                    "tenant", _("Tenant"), Select([], prompt=_("choose a tenant"), id="tenant", compact=True)
                )
            yield from self._row("name", _("Name"), Input(id="name", compact=True, max_length=200))
            yield from self._row("description", _("Remark"), Input(id="description", compact=True, max_length=1000))
            yield from self._row(
                "source",
                _("Source"),
                Select(
                    [(_("Local file"), "file"), (_("URL"), "url"), (_("Upload from my computer"), "upload")],
                    value="file",
                    allow_blank=False,
                    id="source",
                    compact=True,
                ),
            )
            yield from self._row("file", _("Image file"), Input(placeholder=str(root / "…"), id="file", compact=True))
            if root.is_dir():
                hint = _("Files in {folder}:").format(folder=root)
            else:
                hint = _("{folder} does not exist (tui.import_root); showing {cwd}:").format(
                    folder=root, cwd=Path.cwd()
                )
            yield Static(plain(hint), classes="hint", id="files-hint")
            yield SafeDirectoryTree(root if root.is_dir() else Path.cwd(), id="files")
            yield from self._row(
                "url",
                _("Image URL"),
                Input(
                    placeholder="https://host/path/image.qcow2  ftp://user:password@host/path", id="url", compact=True
                ),
            )
            yield from self._row(
                "bytes",
                _("File size bytes"),
                Input(placeholder=_("the file's exact size in bytes"), id="bytes", compact=True, max_length=40),
            )
            yield Static(
                plain(
                    _("The exact size of the file on your computer: {commands}").format(
                        commands="ls -l FILE · stat -c %s FILE · PowerShell: (Get-Item FILE).Length"
                    )
                ),
                classes="hint",
                id="bytes-hint",
            )
            yield from self._row(
                "os_type",
                _("System type"),
                Select([(t, t) for t in matrix.os_types], prompt=_("choose"), id="os_type", compact=True),
            )
            yield from self._row("platform", _("Platform"), Select([], prompt=_("choose"), id="platform", compact=True))
            yield from self._row("arch", _("Architecture"), Select([], prompt=_("choose"), id="arch", compact=True))
            yield from self._row(
                "os_version", _("Version"), Select([], prompt=_("choose"), id="os_version", compact=True)
            )
            yield Static("", classes="message -empty", id="message-os")
            low, high = settings.images.min_size_gb, settings.images.max_size_gb
            yield from self._row(
                "size",
                _("Target size GB"),
                Input(placeholder=f"{low}–{high}", id="size", compact=True, restrict=r"[0-9]*"),
            )
            yield from self._row(
                "sha256", _("SHA-256"), Input(placeholder=_("optional"), id="sha256", compact=True, max_length=64)
            )
        yield Static("", id="submit-message")
        with Horizontal(id="buttons"):
            yield Button(_("Cancel"), id="cancel", compact=True)
            yield Button(_("Start import"), id="start", variant="primary", compact=True)
        yield FittingFooter()

    @staticmethod
    def _browser_root(settings: Any) -> Path:
        """The first folder files may be imported from (core.importer.localfiles), else tui.import_root."""
        try:
            from core.importer.localfiles import import_roots
        except ImportError:
            return Path(settings.tui.import_root)
        roots = import_roots(settings)
        return next((r for r in roots if r.is_dir()), roots[0] if roots else Path(settings.tui.import_root))

    def on_mount(self) -> None:
        app: Any = self.app
        self.title = "imagehub"
        self.sub_title = _("Import an image")
        self._show_source("file")
        self.query_one("#name", Input).focus()
        if app.actor.is_admin:
            self._load_tenants()

    @work(thread=True, exclusive=True, group="wizard-tenants", exit_on_error=False)
    def _load_tenants(self) -> None:
        app: Any = self.app
        names = [t["name"] for t in list_tenants(app.catalog, app.actor)]
        app.call_from_thread(self._set_tenants, names)

    def _set_tenants(self, names: list[str]) -> None:
        select = self.query_one("#tenant", Select)
        select.set_options([(plain(n), n) for n in names])
        if self.tenant in names:
            select.value = self.tenant
        elif len(names) == 1:
            select.value = names[0]

    # ---- values ------------------------------------------------------------------------------

    def _text(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value

    def _choice(self, field: str) -> str | None:
        value = self.query_one(f"#{field}", Select).value
        return None if value is Select.NULL else str(value)

    def _source(self) -> str:
        return self._choice("source") or "file"

    def _problems(self) -> dict[str, str | None]:
        app: Any = self.app
        settings = app.catalog.settings
        found: dict[str, str | None] = {
            "name": problem(lambda: check_name(self._text("name"))),
            "description": problem(lambda: check_description(self._text("description"))),
            "os": problem(
                lambda: check_os(
                    app.catalog.os_matrix,
                    self._choice("os_type"),
                    self._choice("platform"),
                    self._choice("arch"),
                    self._choice("os_version"),
                )
            ),
            "size": problem(
                lambda: check_size_gb(self._text("size"), settings.images.min_size_gb, settings.images.max_size_gb)
            ),
            "sha256": problem(lambda: check_sha256(self._text("sha256"))),
        }
        if app.actor.is_admin and self._choice("tenant") is None:
            found["tenant"] = _("choose the tenant the image belongs to")
        if self._source() == "file":
            found["file"] = self._file_problem(self._text("file"))
        elif self._source() == "url":
            found["url"] = self._url_problem(self._text("url"))
        else:
            found["bytes"] = self._bytes_problem(self._text("bytes"))
        return found

    def _bytes_problem(self, value: str) -> str | None:
        """Core's check of the upload's size; against the target size chosen, else the largest allowed."""
        from core.importer.upload import check_bytes

        app: Any = self.app
        settings = app.catalog.settings
        try:
            size_gb = check_size_gb(self._text("size"), settings.images.min_size_gb, settings.images.max_size_gb)
        except ImagehubError:
            size_gb = settings.images.max_size_gb
        return problem(lambda: check_bytes(app.catalog, value, size_gb))

    def _file_problem(self, value: str) -> str | None:
        app: Any = self.app
        if not value.strip():
            return _("choose a file below or type its path")
        try:
            from core.importer.localfiles import check_local_file
        except ImportError:  # an older core without the import-folder rule
            path = Path(value).expanduser()
            return None if path.is_file() else f"file {path} does not exist or is not a regular file"
        return problem(lambda: check_local_file(app.catalog.settings, value.strip()))

    def _url_problem(self, value: str) -> str | None:
        from core.importer.netpolicy import Policy

        app: Any = self.app
        if not value.strip():
            return _("give the URL of the image (http, https or ftp)")
        return problem(lambda: Policy.from_settings(app.catalog.settings).parse(value.strip()))

    def _show_problems(self, everything: bool = False) -> bool:
        problems = self._problems()
        for field in ("tenant", "name", "description", "file", "url", "bytes", "os", "size", "sha256"):
            widgets = self.query(f"#message-{field}")
            if not widgets:
                continue
            message = problems.get(field) if (everything or field in self.touched) else None
            widget = widgets.first(Static)
            widget.update(plain(message or ""))
            widget.set_class(not message, "-empty")
        return not any(problems.values())

    # ---- events ------------------------------------------------------------------------------

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        if event.input.id:
            self.touched.add(event.input.id)
        self._show_problems()

    @on(Select.Changed)
    def _chosen(self, event: Select.Changed) -> None:
        app: Any = self.app
        matrix = app.catalog.os_matrix
        field = event.select.id or ""
        if field == "source":
            self._show_source(self._source())
        elif field == "os_type":
            self._cascade("platform", matrix.platforms_for(self._choice("os_type") or ""))
        elif field == "platform":
            self._cascade("arch", matrix.arches_for(self._choice("platform") or ""))
        elif field == "arch":
            self._cascade("os_version", matrix.versions_for(self._choice("platform") or "", self._choice("arch") or ""))
        if field in ("os_type", "platform", "arch", "os_version"):
            self.touched.add("os")
        elif field:
            self.touched.add(field)
        self._show_problems()

    def _cascade(self, field: str, options: list[str]) -> None:
        select = self.query_one(f"#{field}", Select)
        select.set_options([(o, o) for o in options])
        if len(options) == 1:
            select.value = options[0]
        else:
            select.clear()
            following = {"platform": "arch", "arch": "os_version"}.get(field)
            if following:
                self._cascade(following, [])

    def _show_source(self, source: str) -> None:
        shown = {
            "file": ("#row-file", "#message-file", "#files-hint", "#files"),
            "url": ("#row-url", "#message-url"),
            "upload": ("#row-bytes", "#message-bytes", "#bytes-hint"),
        }
        for name, selectors in shown.items():
            for selector in selectors:
                self.query_one(selector).set_class(name != source, "-hidden")

    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#file", Input).value = str(event.path)
        self.touched.add("file")
        self._show_problems()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_start(self) -> None:
        if self.busy:
            return
        if not self._show_problems(everything=True):
            self.query_one("#submit-message", Static).update(
                plain(_("Some fields need attention (see the red lines)."))
            )
            return
        app: Any = self.app
        if self._source() == "upload" and app.links_refused():
            return
        self.busy = True
        self.query_one("#start", Button).disabled = True
        self.query_one("#submit-message", Static).update(plain(_("Starting the import…")))
        tenant = self._choice("tenant") if app.actor.is_admin else None
        fields: dict[str, Any] = {
            "name": self._text("name"),
            "description": self._text("description"),
            "os_type": self._choice("os_type"),
            "platform": self._choice("platform"),
            "arch": self._choice("arch"),
            "os_version": self._choice("os_version"),
            "size_gb": self._text("size"),
            "sha256": self._text("sha256") or None,
            "tenant": tenant,
        }
        if self._source() == "file":
            fields["file"] = str(Path(self._text("file")).expanduser())
        elif self._source() == "url":
            fields["url"] = self._text("url").strip()
        else:
            fields["size_bytes"] = self._text("bytes").strip()
        self._submit(fields)

    @work(thread=True, exclusive=True, group="wizard-submit", exit_on_error=False)
    def _submit(self, fields: dict[str, Any]) -> None:
        from core.importer.submit import submit_import
        from core.importer.upload import submit_upload

        app: Any = self.app
        try:
            if "size_bytes" in fields:
                image = submit_upload(app.catalog, app.actor, **fields)
            else:
                image = submit_import(app.catalog, app.actor, **fields)
        except Exception as exc:
            app.call_from_thread(self._failed, exc)
            return
        app.call_from_thread(self.dismiss, image)

    def _failed(self, exc: Exception) -> None:
        self.busy = False
        self.query_one("#start", Button).disabled = False
        self.query_one("#submit-message", Static).update(plain(tr(exc) if isinstance(exc, ImagehubError) else ""))
        report_error(self, exc, _("Import"))
