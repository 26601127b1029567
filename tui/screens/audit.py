"""The audit trail (`a` on the image list), for platform admins and tenant owners: who did what to which
resource, when, and whether it was allowed; newest first, one page at a time, filtered by image,
account and action.

Core decides who reads which trail (core.accounts.trail: admins all of it, an owner its tenant's) and
pages it; a member is refused with core's reason. The first page refreshes while the screen is shown,
keeping the cursor on its event; older pages stay as they were read.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Header, Input, Select, Static

from core.accounts.trail import PAGE, read_trail, trail_actions
from core.catalog.audit import REFUSED
from core.catalog.errors import ImagehubError
from tui.i18n import N_, _, tr
from tui.screens.base import report_error
from tui.screens.confirm import ResultsScreen
from tui.screens.links import one_line_each
from tui.widgets.footer import FittingFooter
from tui.widgets.format import fit, job_state_label, plain, short_time, visible
from tui.widgets.live_table import Column, LiveTableScreen

COLUMNS: tuple[Column, ...] = (
    ("at", N_("Time"), 11, 16),
    ("actor", N_("Account"), 12, 14),
    ("action", N_("Action"), 18, 22),
    ("target", N_("On"), 13, 14),
    ("outcome", N_("Outcome"), 9, 10),
    ("reason", N_("Reason"), 0, 26),
)

# core's action names (core.catalog.audit.record callers) in people's words; others show as they are.
ACTION_LABELS: dict[str, str] = {
    "image.import": N_("import image"),
    "image.edit": N_("edit image"),
    "image.delete": N_("delete image"),
    "image.restore": N_("restore image"),
    "image.destroy": N_("destroy image"),
    "image.register": N_("register image"),
    "image.capture": N_("capture VM"),
    "image.capture.done": N_("capture finished"),
    "image.capture.failed": N_("capture failed"),
    "job.claim": N_("job started"),
    "job.finish": N_("job ended"),
    "link.create": N_("make link"),
    "link.revoke": N_("revoke link"),
    "upload.create": N_("open upload"),
    "upload.receive": N_("upload bytes received"),
    "upload.finish": N_("upload complete"),
    "upload.cancel": N_("upload cancelled"),
    "upload.expire": N_("upload expired"),
    "vm.create": N_("create VM"),
    "vm.start": N_("start VM"),
    "vm.stop": N_("stop VM"),
    "vm.delete": N_("delete VM"),
    "tenant.create": N_("create tenant"),
    "account.create": N_("create account"),
    "account.delete": N_("delete account"),
    "account.set": N_("change account"),
    "account.key.add": N_("add SSH key"),
    "account.key.remove": N_("remove SSH key"),
    "admin_ssh.login": N_("SSH login"),
    "admin_ssh.cut": N_("SSH session ended"),
    "admin_ssh.command": N_("SSH command"),
    "demo.seed": N_("seed the demo"),
    "demo.seeded": N_("demo seeded"),
}
# A job worker's name (core.jobs.jobs.worker_id: label@host:pid:suffix), said as the worker it is.
WORKER_NAME = re.compile(r"^(?P<label>[\w.-]+)@[^:@\s]+:\d+:[0-9a-f]{6}$")
OUTCOME_STYLES = {"ok": "green", REFUSED: "bold red"}


def action_label(action: str) -> str:
    return _(ACTION_LABELS.get(action, action))


def actor_label(actor: str) -> str:
    """An account's name as it is; a job worker as "serve worker" (the detail shows its whole name)."""
    worker = WORKER_NAME.match(actor)
    return _("{label} worker").format(label=worker["label"]) if worker else actor


def outcome_label(outcome: str) -> str:
    """`ok`, `refused`, or the state a job ended in (job.finish, image.import)."""
    if outcome == "ok":
        return _("done")
    if outcome == REFUSED:
        return _("refused")
    return job_state_label(outcome)


def detail_text(detail: dict[str, Any] | None) -> str:
    return " · ".join(f"{key}={value}" for key, value in (detail or {}).items())


class AuditScreen(LiveTableScreen):
    """One page of the trail; `refresh_seconds` re-reads the first page while shown (0: never)."""

    DEFAULT_CSS = """
    AuditScreen #audit-filters { height: 1; }
    AuditScreen #audit-filters Input { width: 1fr; height: 1; border: none; padding: 0 1; background: $boost; }
    AuditScreen #audit-filters Select { width: 1fr; }
    AuditScreen DataTable { height: 1fr; }
    AuditScreen #audit-status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    AuditScreen #audit-detail { height: 2; padding: 0 1; }
    """

    BINDINGS = [
        Binding("enter", "detail", N_("Detail"), id="audit.detail", tooltip=N_("Every field of the event")),
        Binding("slash", "filter", N_("Filter"), id="audit.filter", tooltip=N_("Filter by image, account, action")),
        Binding("right_square_bracket", "older", N_("Older"), id="audit.older", tooltip=N_("The next page")),
        Binding("left_square_bracket", "newer", N_("Newer"), id="audit.newer", tooltip=N_("The previous page")),
        Binding("ctrl+r", "reload", N_("Refresh"), id="audit.refresh", tooltip=N_("Reload the list"), show=False),
        Binding("escape", "back", N_("Back"), id="audit.back", tooltip=N_("Back to the images")),
    ]

    TABLE_ID = "audit-table"
    COLUMNS = COLUMNS
    LIST_GROUP = "audit-list"
    LIST_NAME = N_("Audit trail")

    def __init__(self, refresh_seconds: float = 2.0, page_size: int = PAGE) -> None:
        super().__init__(refresh_seconds)
        self.page_size = page_size
        self.pages: list[int | None] = [None]  # the `before_id` of each page read so far; the last is shown
        self.refused: str | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        with Horizontal(id="audit-filters"):
            yield Input(placeholder=_("image ID…"), id="audit-image")
            yield Input(placeholder=_("account…"), id="audit-account")
            yield Select[str]([], prompt=_("every action"), id="audit-action", compact=True)
        yield DataTable(cursor_type="row", zebra_stripes=True, id=self.TABLE_ID)
        yield Static("", id="audit-status")
        yield Static("", id="audit-detail")
        yield FittingFooter()

    def on_mount(self) -> None:
        app: Any = self.app
        self.title = "imagehub"
        tenant = app.actor_tenant or _("all tenants")
        self.sub_title = _("Audit trail · tenant {tenant} · account {account}").format(
            tenant=tenant, account=app.actor.name
        )
        self._start_live_table()
        self._load_actions()

    # ---- the filters ----------------------------------------------------------------------

    def filters(self) -> dict[str, str | None]:
        action = self.query_one("#audit-action", Select).value
        return {
            "image": self.query_one("#audit-image", Input).value.strip() or None,
            "account": self.query_one("#audit-account", Input).value.strip() or None,
            "action": action if isinstance(action, str) else None,
        }

    @on(Input.Changed)
    @on(Select.Changed)
    def _filter_changed(self) -> None:
        self.pages = [None]
        self.reload()

    @on(Input.Submitted)
    def _filter_done(self) -> None:
        self.table.focus()

    def action_filter(self) -> None:
        self.query_one("#audit-image", Input).focus()

    @work(thread=True, exclusive=True, group="audit-actions", exit_on_error=False)
    def _load_actions(self) -> None:
        app: Any = self.app
        try:
            actions = trail_actions(app.catalog, app.actor)
        except Exception:  # refused: the list's own load says so
            return
        app.call_from_thread(self._actions_loaded, actions)

    def _actions_loaded(self, actions: list[str]) -> None:
        if not self._closed:
            choices = sorted((action_label(action), action) for action in actions)
            self.query_one("#audit-action", Select).set_options(choices)

    # ---- the table ------------------------------------------------------------------------

    def _cells(self, event: dict[str, Any]) -> list[Any]:
        at = short_time(event["at"])
        values = {
            "at": lambda width: plain(at if width >= 16 else at[5:]),
            "actor": lambda width: plain(fit(visible(actor_label(event["actor"])), width)),
            "action": lambda width: plain(fit(action_label(event["action"]), width)),
            "target": lambda width: plain(fit(visible(event["target"] or "-"), width)),
            "outcome": lambda width: Text(
                fit(outcome_label(event["outcome"]), width), style=OUTCOME_STYLES.get(event["outcome"], "yellow")
            ),
            "reason": lambda width: plain(fit(visible(event["reason"] or ""), width)),
        }
        return [values[key](width) for key, _title, width in self._columns()]

    def _update_status(self) -> None:
        if self.refused is not None:
            line = self.refused
        elif not self.rows:
            line = _("no events match") if any(self.filters().values()) else _("no events yet")
        else:
            line = _("{n} event(s), newest first · page {page}").format(n=len(self.rows), page=len(self.pages))
            line += " · " + _("Enter: every field")
            if len(self.rows) >= self.page_size:
                line += " · " + _("] older")
            if len(self.pages) > 1:
                line += " · " + _("[ newer")
        self.query_one("#audit-status", Static).update(plain(line))

    def _update_detail(self) -> None:
        event = self.current()
        detail = self.query_one("#audit-detail", Static)
        if event is None:
            detail.update("")
            return
        first = Text.assemble(
            (short_time(event["at"]), "bold"),
            " · ",
            visible(event["actor"]),
            " · ",
            action_label(event["action"]),
            " · ",
            visible(event["target"] or "-"),
            " · ",
            outcome_label(event["outcome"]),
        )
        second = plain(event["reason"] or detail_text(event["detail"]))
        detail.update(one_line_each([first, second], detail.content_size.width))

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_detail()

    # ---- loading --------------------------------------------------------------------------

    def _query(self) -> tuple[dict[str, str | None], int | None]:
        return self.filters(), self.pages[-1]

    def _refreshes(self) -> bool:
        return len(self.pages) == 1 and self.refused is None  # only the first page, and not after a refusal

    def _fetch(self, query: tuple[dict[str, str | None], int | None]) -> list[dict[str, Any]]:
        app: Any = self.app
        filters, before_id = query
        return read_trail(app.catalog, app.actor, before_id=before_id, limit=self.page_size, **filters)

    def _show_rows(self, rows: list[dict[str, Any]]) -> None:
        self.refused = None
        self._render_rows(rows)

    def _show_load_error(self, exc: Exception) -> None:
        self.refused = tr(exc) if isinstance(exc, ImagehubError) else None
        report_error(self, exc, _(self.LIST_NAME))
        self._render_rows([])

    # ---- actions --------------------------------------------------------------------------

    def action_older(self) -> None:
        if len(self.rows) < self.page_size:
            self.app.notify(_("This is the oldest page."), severity="warning")
            return
        self.pages.append(int(self.rows[-1]["id"]))
        self.reload()

    def action_newer(self) -> None:
        if len(self.pages) == 1:
            self.app.notify(_("This is the newest page."), severity="warning")
            return
        self.pages.pop()
        self.reload()

    def action_back(self) -> None:
        if isinstance(self.focused, Input | Select):
            self.table.focus()
            return
        self.dismiss(None)

    def action_detail(self) -> None:
        event = self.current()
        if event is None:
            self.app.notify(_("No event here."), severity="warning")
            return
        lines = [
            plain(_("Time: {time} UTC").format(time=short_time(event["at"]))),
            plain(_("Account: {account}").format(account=event["actor"])),
            plain(_("Action: {action}").format(action=action_label(event["action"]))),
            plain(_("On: {target}").format(target=event["target"] or "-")),
            plain(_("Outcome: {outcome}").format(outcome=outcome_label(event["outcome"]))),
        ]
        if event["reason"]:
            lines.append(plain(_("Reason: {reason}").format(reason=event["reason"])))
        lines += [plain(f"{key}: {value}") for key, value in (event["detail"] or {}).items()]
        self.app.push_screen(ResultsScreen(_("Event {id}").format(id=event["id"]), lines))
