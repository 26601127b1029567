"""Every link the account may see (`l` on the image list): downloads, uploads and Excel workbooks, live.

Core decides which links show (core.links.links.list_links), each link's state (the gateway's own
verdict) and who may revoke; the screen shows them, revokes behind a confirmation and shows core's
reason for a refusal. Enter opens a link's detail, where every address and command is copyable (OSC 52).

A link's addresses carry its secret token, which the catalog never keeps (only its hash): they can be
shown for the links made in this TUI session, which remembers them in memory (`remember_urls`), and
for no other; the detail says so instead of showing a wrong or partial address.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Header, Input, Static

from core.catalog.vocabulary import LinkState
from core.links.links import DOWNLOAD, UPLOAD, WORKBOOK, list_links, revoke_link
from tui.i18n import N_, _
from tui.screens.base import report_error
from tui.screens.confirm import ConfirmScreen
from tui.screens.link import FIELDS, CopyField, CopyFieldsScreen
from tui.widgets.footer import FittingFooter
from tui.widgets.format import fit, human_size, link_state_label, plain, short_time, upload_state_label, visible
from tui.widgets.live_table import Column, LiveTableScreen

COLUMNS: tuple[Column, ...] = (
    ("id", N_("ID"), 0, 12),
    ("kind", N_("Kind"), 8, 10),
    ("image", N_("Image"), 12, 12),
    ("format", N_("Format"), 6, 6),
    ("state", N_("State"), 12, 15),
    ("expires", N_("Expires"), 11, 16),
    ("moved", N_("Transferred"), 15, 16),
    ("by", N_("Made by"), 0, 12),
)

KIND_LABELS: dict[str, str] = {
    DOWNLOAD: N_("download"),
    UPLOAD: N_("upload"),
    WORKBOOK: N_("workbook"),
}
# A state in a table cell: a word or two (the detail line says the whole sentence, from tui.widgets.format).
STATE_WORDS: dict[str, str] = {
    LinkState.ACTIVE: N_("ready"),
    LinkState.PREPARING: N_("preparing"),
    LinkState.REVOKED: N_("revoked"),
    LinkState.EXPIRED: N_("expired"),
    LinkState.IMAGE_UNAVAILABLE: N_("image unavailable"),
    LinkState.TENANT_CHANGED: N_("tenant changed"),
    LinkState.ACCESS_LOST: N_("access lost"),
    LinkState.FILE_MISSING: N_("file missing"),
    LinkState.EXPORT_FAILED: N_("preparing failed"),
    LinkState.UPLOADED: N_("uploaded"),
}
UPLOAD_STATE_WORDS: dict[str, str] = {LinkState.ACTIVE: N_("open")}
STATE_STYLES: dict[str, str] = {
    LinkState.ACTIVE: "green",
    LinkState.PREPARING: "bold cyan",
    LinkState.UPLOADED: "green",
    LinkState.REVOKED: "dim",
    LinkState.EXPIRED: "dim",
}
FORMAT_LABELS: dict[str, str] = {"raw": "RAW", "qcow2": "QCOW2", "xlsx": "XLSX"}
# The protocols each kind of link answers on (docs/contract.md, Gateway).
PROTOCOLS: dict[str, str] = {
    DOWNLOAD: "HTTP · FTP · SFTP",
    WORKBOOK: "HTTP · FTP · SFTP",
    UPLOAD: "HTTP · tus · FTP · SFTP",
}
URL_KEYS = ("http", "tus", "ftp", "sftp", "sftp_command", "commands")

# The addresses of the links this TUI session made, by app: a link's token is shown once, when it is made.
_REMEMBERED: WeakKeyDictionary[App[Any], dict[str, dict[str, Any]]] = WeakKeyDictionary()


def remember_urls(app: App[Any], view: dict[str, Any]) -> None:
    """Keep a newly made link's addresses (they carry its token) for the links screen, in memory only."""
    urls = {key: view[key] for key in URL_KEYS if view.get(key)}
    if urls:
        _REMEMBERED.setdefault(app, {})[str(view["id"])] = urls


def remembered_urls(app: App[Any], link_id: str) -> dict[str, Any]:
    return dict(_REMEMBERED.get(app, {}).get(link_id, {}))


def one_line_each(lines: list[Text], width: int) -> Text:
    """`lines` one under the other, each cut to `width` cells with an ellipsis (never wrapped)."""
    for line in lines:
        if width > 0:  # 0: not laid out yet
            line.truncate(width, overflow="ellipsis")
    return Text("\n").join(lines)


def kind_label(kind: str) -> str:
    return _(KIND_LABELS.get(kind, kind))


def state_word(link: dict[str, Any]) -> str:
    state = link.get("state") or ""
    if link.get("kind") == UPLOAD and state in UPLOAD_STATE_WORDS:
        return _(UPLOAD_STATE_WORDS[state])
    return _(STATE_WORDS.get(state, state))


def state_sentence(link: dict[str, Any]) -> str:
    state = link.get("state") or ""
    return upload_state_label(state) if link.get("kind") == UPLOAD else link_state_label(state)


def moved(link: dict[str, Any]) -> str:
    """Bytes served, or for an upload the bytes received of its size."""
    if link.get("kind") == UPLOAD:
        size = int(link.get("size") or 0)
        received = int(link.get("bytes_received") or 0)
        pct = f" {100 * received // size}%" if size else ""
        return _("{received} of {size}").format(received=human_size(received), size=human_size(size)) + pct
    return human_size(int(link.get("bytes_served") or 0))


def format_label(fmt: str | None) -> str:
    return FORMAT_LABELS.get(fmt or "", (fmt or "-").upper())


class LinksScreen(LiveTableScreen):
    """The link list, refreshed every `refresh_seconds` while shown (0: only after an action or ctrl+r)."""

    DEFAULT_CSS = """
    LinksScreen DataTable { height: 1fr; }
    LinksScreen #links-filter { display: none; height: 1; border: none; padding: 0 1; background: $boost; }
    LinksScreen #links-filter.-shown { display: block; }
    LinksScreen #links-status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    LinksScreen #links-detail { height: 2; padding: 0 1; }
    """

    BINDINGS = [
        Binding("enter", "detail", N_("Addresses"), id="links.detail", tooltip=N_("The link's addresses, to copy")),
        Binding("r,delete", "revoke", N_("Revoke"), id="links.revoke", tooltip=N_("Revoke the link: it stops")),
        Binding("slash", "filter", N_("Filter"), id="links.filter", tooltip=N_("Filter the links as you type")),
        Binding("ctrl+r", "reload", N_("Refresh"), id="links.refresh", tooltip=N_("Reload the list"), show=False),
        Binding("escape,q", "back", N_("Back"), id="links.back", tooltip=N_("Back to the images")),
    ]

    TABLE_ID = "links-table"
    COLUMNS = COLUMNS
    LIST_GROUP = "link-list"
    LIST_NAME = N_("Links")

    def __init__(self, refresh_seconds: float = 2.0) -> None:
        super().__init__(refresh_seconds)
        self.all_rows: list[dict[str, Any]] = []
        self.text = ""

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield Input(placeholder=_("filter: ID, image, kind, state or maker…"), id="links-filter")
        yield DataTable(cursor_type="row", zebra_stripes=True, id=self.TABLE_ID)
        yield Static("", id="links-status")
        yield Static("", id="links-detail")
        yield FittingFooter()

    def on_mount(self) -> None:
        app: Any = self.app
        self.title = "imagehub"
        self.sub_title = _("Links · account {account}").format(account=app.actor.name)
        self._start_live_table()

    # ---- the table ------------------------------------------------------------------------

    def _cells(self, link: dict[str, Any]) -> list[Any]:
        expires = short_time(link.get("expires_at"))
        values = {
            "id": lambda width: plain(link["id"]),
            "kind": lambda width: plain(fit(kind_label(link["kind"]), width)),
            "image": lambda width: plain(link.get("image_id") or "-"),
            "format": lambda width: plain(format_label(link.get("format"))),
            "state": lambda width: Text(fit(state_word(link), width), style=STATE_STYLES.get(link["state"], "yellow")),
            "expires": lambda width: plain(expires if width >= 16 else expires[5:]),
            "moved": lambda width: plain(fit(moved(link), width)),
            "by": lambda width: plain(fit(visible(link.get("created_by") or "-"), width)),
        }
        return [values[key](width) for key, _title, width in self._columns()]

    def _update_status(self) -> None:
        if not self.all_rows:
            line = _("no links yet: g on an image makes a download link")
        elif self.text:
            line = _("{n} of {total} link(s) match “{text}”").format(
                n=len(self.rows), total=len(self.all_rows), text=self.text
            )
        else:
            line = _("{n} link(s)").format(n=len(self.rows))
        if self.rows:
            line += " · " + _("Enter: the addresses")
        self.query_one("#links-status", Static).update(plain(line))

    def _update_detail(self) -> None:
        link = self.current()
        detail = self.query_one("#links-detail", Static)
        if link is None:
            detail.update("")
            return
        size = human_size(link["size"]) if link.get("size") else ""
        what = " · ".join(
            part
            for part in (
                visible(link["filename"]) if link["kind"] != UPLOAD else "",
                size,
                PROTOCOLS.get(link["kind"], ""),
                _("made by {account} {time}").format(
                    account=visible(link.get("created_by") or "-"), time=short_time(link.get("created_at"))
                ),
            )
            if part
        )
        first = Text.assemble((link["id"], "bold"), " · ", what)
        second = Text(state_sentence(link), style="italic")
        detail.update(one_line_each([first, second], detail.content_size.width))

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_detail()

    # ---- filter ---------------------------------------------------------------------------

    def _matching(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        text = self.text.casefold()
        if not text:
            return rows
        return [link for link in rows if text in self._haystack(link)]

    @staticmethod
    def _haystack(link: dict[str, Any]) -> str:
        words = (link["id"], link.get("image_id"), kind_label(link["kind"]), state_word(link), link.get("created_by"))
        return " ".join(str(word) for word in words if word).casefold()

    def action_filter(self) -> None:
        box = self.query_one("#links-filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#links-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.text = event.value.strip()
        self._render_rows(self._matching(self.all_rows))

    @on(Input.Submitted, "#links-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("-shown")
        self.table.focus()

    # ---- loading --------------------------------------------------------------------------

    def _fetch(self, query: object) -> list[dict[str, Any]]:
        app: Any = self.app
        return list_links(app.catalog, app.actor)

    def _show_rows(self, rows: list[dict[str, Any]]) -> None:
        self.all_rows = rows
        self._render_rows(self._matching(rows))

    # ---- actions --------------------------------------------------------------------------

    def _current_or_warn(self) -> dict[str, Any] | None:
        link = self.current()
        if link is None:
            self.app.notify(_("No link here."), severity="warning")
        return link

    def action_back(self) -> None:
        box = self.query_one("#links-filter", Input)
        if box.has_focus or box.value:
            box.value = ""
            box.remove_class("-shown")
            self.table.focus()
            return
        self.dismiss(None)

    def action_detail(self) -> None:
        link = self._current_or_warn()
        if link is not None:
            self.app.push_screen(LinkDetailScreen(link, remembered_urls(self.app, link["id"])))

    def action_revoke(self) -> None:
        link = self._current_or_warn()
        if link is None:
            return
        if link["state"] == LinkState.REVOKED:
            self.app.notify(
                _("{id} is already revoked: it no longer answers.").format(id=link["id"]), severity="warning"
            )
            return
        if link["kind"] == UPLOAD:
            question = _("Its upload is cancelled and the import ends (import failed).")
        else:
            question = _("Downloads under way stop within seconds; the addresses answer no more.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._revoke(link)

        item = " · ".join(part for part in (link["id"], kind_label(link["kind"]), link.get("image_id")) if part)
        self.app.push_screen(
            ConfirmScreen(_("Revoke link {id}?").format(id=link["id"]), [item], question=question, yes=_("Revoke")),
            answered,
        )

    @work(thread=True, group="link-revoke", exit_on_error=False)
    def _revoke(self, link: dict[str, Any]) -> None:
        app: Any = self.app
        try:
            revoke_link(app.catalog, app.actor, link["id"])
        except Exception as exc:
            app.call_from_thread(self._revoke_failed, exc)
            return
        app.call_from_thread(self._revoked, link["id"])

    def _revoked(self, link_id: str) -> None:
        self.app.notify(_("Revoked {id}.").format(id=link_id))
        if not self._closed:
            self.reload()

    def _revoke_failed(self, exc: Exception) -> None:
        report_error(self, exc, _("Revoke link"))
        if not self._closed:
            self.reload()


class LinkDetailScreen(CopyFieldsScreen):
    """One link: what it is, its state, and its addresses and commands, each copyable."""

    DEFAULT_CSS = """
    LinkDetailScreen #link-state { padding: 1 1 0 1; height: auto; }
    LinkDetailScreen #link-note { padding: 0 1 1 1; height: auto; color: $text-muted; }
    LinkDetailScreen #fields { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape,q", "back", N_("Back"), id="linkdetail.back", tooltip=N_("Back to the links")),
        Binding("1", "copy('http')", N_("Copy HTTP"), id="linkdetail.copy_http", show=False),
        Binding("2", "copy('ftp')", N_("Copy FTP"), id="linkdetail.copy_ftp", show=False),
        Binding("3", "copy('sftp')", N_("Copy SFTP"), id="linkdetail.copy_sftp", show=False),
        Binding("4", "copy('sftp_command')", N_("Copy sftp command"), id="linkdetail.copy_command", show=False),
    ]

    def __init__(self, link: dict[str, Any], urls: dict[str, Any]) -> None:
        super().__init__()
        self.link = link
        self.urls = urls

    def _fields(self) -> list[tuple[str, str, str | None]]:
        """(key, label, value) of each copyable field, addresses first when this session knows them."""
        from tui.screens.upload import COMMANDS

        link = self.link
        fields: list[tuple[str, str, str | None]] = []
        if self.urls and link["kind"] == UPLOAD:
            commands = self.urls.get("commands") or {}
            fields += [(key, _(label), commands.get(key)) for key, label in COMMANDS]
        elif self.urls:
            fields += [(key, _(label), self.urls.get(key)) for key, label in FIELDS if key in self.urls]
        fields.append(("link_id", _("Link ID"), link["id"]))
        if link.get("sha256"):
            fields.append(("sha256", _("SHA-256"), link["sha256"]))
        return fields

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield Static("", id="link-state")
        yield Static("", id="link-note")
        with VerticalScroll(id="fields"):
            for key, label, _value in self._fields():
                yield CopyField(key, label)
        yield FittingFooter()

    def on_mount(self) -> None:
        link = self.link
        self.title = "imagehub"
        self.sub_title = _("Link {id}").format(id=link["id"])
        self.query_one("#link-state", Static).update(self._summary())
        self.query_one("#link-note", Static).update(plain(self._note()))
        values = {key: value for key, _label, value in self._fields()}
        for field in self.query(CopyField):
            field.set_value(values.get(field.key))
        self.query(CopyField).first().focus()

    def _summary(self) -> Text:
        link = self.link
        lines = [
            Text.assemble(
                (kind_label(link["kind"]), "bold"),
                " · ",
                visible(link.get("image_id") or "-"),
                " · ",
                format_label(link.get("format")),
                " · ",
                PROTOCOLS.get(link["kind"], ""),
            ),
            Text(state_sentence(link), style="italic"),
            plain(
                _("Expires {time} UTC · transferred {moved} · made by {account} {made}").format(
                    time=short_time(link.get("expires_at")),
                    moved=moved(link),
                    account=link.get("created_by") or "-",
                    made=short_time(link.get("created_at")),
                )
            ),
        ]
        return Text("\n").join(lines)

    def _note(self) -> str:
        if self.urls:
            return _("Enter or c copies the field in focus (OSC 52); the addresses carry the link's secret.")
        return _(
            "The addresses carry a secret that is shown only when the link is made, and imagehub keeps only "
            "a fingerprint of it: they cannot be shown again here. Make a new link (g on the image list) "
            "if you need them."
        )
