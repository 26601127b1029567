"""The recycle bin: deleted images, restored with `r` or destroyed after a typed confirmation."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Static

from core.catalog.models import Status
from core.images.images import ImageQuery, destroy_images, restore_images
from tui.i18n import N_, _
from tui.screens.base import BaseScreen
from tui.screens.batch import names_list, result_lines, summary
from tui.screens.confirm import ConfirmScreen, ResultsScreen
from tui.widgets.footer import FittingFooter
from tui.widgets.image_list import ImageList


class RecycleBinScreen(BaseScreen):
    DEFAULT_CSS = """
    RecycleBinScreen #bin-title { height: 1; padding: 0 1; background: $warning 20%; text-style: bold; }
    """
    BINDINGS = [
        Binding("escape,b", "back", N_("Back"), id="bin.back", tooltip=N_("Back to the image list")),
        Binding("space", "select", N_("Select"), id="bin.select", tooltip=N_("Select or unselect")),
        Binding("r", "restore", N_("Restore"), id="bin.restore", tooltip=N_("Restore the selected images")),
        Binding(
            "D,delete", "destroy", N_("Destroy"), id="bin.destroy", tooltip=N_("Destroy for good"), key_display="D"
        ),
        Binding("e", "edit", N_("Edit"), id="bin.edit", tooltip=N_("Change the name and remark"), show=False),
        Binding("right_square_bracket", "next_page", N_("Next page"), id="bin.next", show=False),
        Binding("left_square_bracket", "previous_page", N_("Previous page"), id="bin.previous", show=False),
    ]

    def __init__(self, tenant: str | None = None, refresh_seconds: float = 5.0) -> None:
        super().__init__()
        self.tenant = tenant
        self.refresh_seconds = refresh_seconds

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield Static(_("Recycle bin — deleted images can be restored or destroyed"), id="bin-title")
        query = ImageQuery(tenant=self.tenant, status=Status.DELETED, sort="updated_at")
        yield ImageList(query, refresh_seconds=self.refresh_seconds)
        yield FittingFooter()

    @property
    def image_list(self) -> ImageList:
        return self.query_one(ImageList)

    def on_mount(self) -> None:
        app: Any = self.app
        tenant = self.tenant or (app.actor_tenant or _("all tenants"))
        self.title = "imagehub"
        self.sub_title = _("recycle bin · tenant {tenant} · account {account}").format(
            tenant=tenant, account=app.actor.name
        )
        self.image_list.table.focus()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_select(self) -> None:
        self.image_list.toggle_selection()

    def action_next_page(self) -> None:
        self.image_list.next_page()

    def action_previous_page(self) -> None:
        self.image_list.previous_page()

    def action_edit(self) -> None:
        from tui.screens.edit import EditScreen

        image = self.image_list.current()
        if image is None:
            self.app.notify(_("The recycle bin is empty."), severity="warning")
            return

        def edited(result: dict[str, Any] | None) -> None:
            if result is not None:
                self.image_list.reload()

        self.app.push_screen(EditScreen(image), edited)

    def action_restore(self) -> None:
        names = self.image_list.targets()
        if not names:
            self.app.notify(_("The recycle bin is empty."), severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._run(restore_images, names, _("Restore"), _("restored"))

        self.app.push_screen(
            ConfirmScreen(_("Restore {n} image(s)?").format(n=len(names)), names_list(names), yes=_("Restore")),
            answered,
        )

    def action_destroy(self) -> None:
        names = self.image_list.targets()
        if not names:
            self.app.notify(_("The recycle bin is empty."), severity="warning")
            return
        typed = next(iter(names.values())) if len(names) == 1 else _("destroy {n} images").format(n=len(names))

        def answered(yes: bool | None) -> None:
            if yes:
                self._run(destroy_images, names, _("Destroy"), _("destroyed"))

        self.app.push_screen(
            ConfirmScreen(
                _("Destroy {n} image(s) for good?").format(n=len(names)),
                names_list(names),
                question=_("Their files are removed; this cannot be undone."),
                yes=_("Destroy"),
                typed=typed,
            ),
            answered,
        )

    @work(thread=True, exclusive=True, group="batch", exit_on_error=False)
    def _run(self, function: Any, names: dict[str, str], action: str, done: str) -> None:
        app: Any = self.app
        results = function(app.catalog, app.actor, list(names))
        app.call_from_thread(self._done, results, names, action, done)

    def _done(self, results: list[Any], names: dict[str, str], action: str, done: str) -> None:
        for result in results:
            if result.ok:
                self.image_list.selected.pop(result.id, None)
        self.image_list.reload()
        self.app.push_screen(ResultsScreen(summary(results, action), result_lines(results, names, done)))
