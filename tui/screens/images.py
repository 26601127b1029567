"""The image list and the actions on it: filter, status tabs, sort, tenant, edit, delete, export."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Input, Tab, Tabs

from core.accounts.accounts import list_tenants
from core.catalog.errors import ImagehubError
from core.catalog.models import Status
from core.compute.drivers import DEFINED
from core.images.images import ImageQuery, delete_images
from core.rules import lifecycle
from core.rules.lifecycle import Operation
from tui.i18n import N_, _
from tui.screens.base import BaseScreen, report_error
from tui.screens.batch import names_list, result_lines, summary
from tui.screens.confirm import ChooseScreen, ConfirmScreen, ResultsScreen
from tui.widgets.footer import FittingFooter
from tui.widgets.format import status_labels
from tui.widgets.image_list import COLUMNS, SORT_KEYS, ImageList

STATUS_TABS = ("all", Status.AVAILABLE, Status.IMPORTING, Status.CREATING, Status.IMPORT_FAILED, Status.DELETING)
SORT_CYCLE = [SORT_KEYS[key] for key, *_rest in COLUMNS]


class ImagesScreen(BaseScreen):
    """The list of the images the account may see, one page at a time."""

    DEFAULT_CSS = """
    ImagesScreen #filter { display: none; height: 1; border: none; padding: 0 1; background: $boost; }
    ImagesScreen #filter.-shown { display: block; }
    ImagesScreen Tabs { height: 2; }
    """

    BINDINGS = [
        Binding("slash", "filter", N_("Filter"), id="images.filter", tooltip=N_("Filter by name or ID as you type")),
        Binding("i", "import", N_("Import"), id="images.import", tooltip=N_("Import an image from a file or a URL")),
        Binding("e", "edit", N_("Edit"), id="images.edit", tooltip=N_("Change the name and remark")),
        Binding("d", "delete", N_("Delete"), id="images.delete", tooltip=N_("Move the selected images to the bin")),
        Binding("b", "recycle_bin", N_("Bin"), id="images.bin", tooltip=N_("The recycle bin: restore or destroy")),
        Binding("m", "vms", N_("VMs"), id="images.vms", tooltip=N_("The VMs: start, stop, delete, console")),
        Binding(
            "u", "accounts", N_("Accounts"), id="images.accounts", tooltip=N_("Tenants, accounts, SSH keys"), show=False
        ),
        Binding("l", "links", N_("Links"), id="images.links", tooltip=N_("Every download and upload link"), show=False),
        Binding("a", "audit", N_("Audit"), id="images.audit", tooltip=N_("The audit trail"), show=False),
        Binding("v", "detail", N_("Detail"), id="images.detail", tooltip=N_("All about the image (Enter)"), show=False),
        Binding("space", "select", N_("Select"), id="images.select", tooltip=N_("Select or unselect")),
        Binding("g", "link", N_("Download"), id="images.link", tooltip=N_("Generate download links")),
        Binding("c", "create_vm", N_("Create VM"), id="images.vm", tooltip=N_("Create a VM from the image")),
        Binding("x", "export", N_("Export"), id="images.export", tooltip=N_("Export the list to Excel")),
        Binding("s", "sort", N_("Sort"), id="images.sort", tooltip=N_("Sort by the next column")),
        Binding("S", "reverse", N_("Reverse"), id="images.reverse", tooltip=N_("Reverse the order")),
        Binding("t", "tenant", N_("Tenant"), id="images.tenant", tooltip=N_("Switch tenant (admins)")),
        Binding("right_square_bracket", "next_page", N_("Next page"), id="images.next", show=False),
        Binding("left_square_bracket", "previous_page", N_("Previous page"), id="images.previous", show=False),
        Binding("tab", "next_status", N_("Next status"), id="images.status", show=False),
        Binding("ctrl+r", "reload", N_("Refresh"), id="images.refresh", tooltip=N_("Reload the list"), show=False),
        Binding(
            "escape", "clear", N_("Clear"), id="images.clear", tooltip=N_("Clear filter and selection"), show=False
        ),
    ]

    def __init__(self, tenant: str | None = None, refresh_seconds: float = 2.0) -> None:
        super().__init__()
        self.tenant = tenant
        self.refresh_seconds = refresh_seconds

    def compose(self) -> ComposeResult:
        labels = status_labels()
        yield Header(show_clock=False, icon="▣")
        yield Tabs(
            *[Tab(_("all") if s == "all" else labels[s], id=f"status-{s}") for s in STATUS_TABS], id="status-tabs"
        )
        yield Input(placeholder=_("filter: name or ID…"), id="filter")
        yield ImageList(ImageQuery(tenant=self.tenant), refresh_seconds=self.refresh_seconds)
        yield FittingFooter()  # the keys that fit the width; `?` lists them all

    @property
    def image_list(self) -> ImageList:
        return self.query_one(ImageList)

    def on_mount(self) -> None:
        self.query_one(Tabs).can_focus = False
        self.image_list.table.focus()
        self._update_title()

    def _update_title(self) -> None:
        app: Any = self.app
        tenant = self.tenant or (app.actor_tenant or _("all tenants"))
        self.sub_title = _("tenant {tenant} · account {account}").format(tenant=tenant, account=app.actor.name)
        self.title = "imagehub"

    def _set_query(self, **changes: Any) -> None:
        self.image_list.set_query(replace(self.image_list.image_query, **changes))

    # ---- list controls -------------------------------------------------------------------

    @on(Tabs.TabActivated)
    def _status_tab(self, event: Tabs.TabActivated) -> None:
        status = (event.tab.id or "status-all").removeprefix("status-")
        new = None if status == "all" else status
        if new != self.image_list.image_query.status:
            self._set_query(status=new)

    def action_next_status(self) -> None:
        self.query_one(Tabs).action_next_tab()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._set_query(text=event.value.strip() or None)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("-shown")
        self.image_list.table.focus()

    def action_clear(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus or box.value:
            box.value = ""
            box.remove_class("-shown")
            self._set_query(text=None)
            self.image_list.table.focus()
        elif self.image_list.selected:
            self.image_list.clear_selection()

    def action_sort(self) -> None:
        current = self.image_list.image_query.sort
        index = SORT_CYCLE.index(current) if current in SORT_CYCLE else -1
        sort = SORT_CYCLE[(index + 1) % len(SORT_CYCLE)]
        self._set_query(sort=sort, descending=sort in ("created_at", "size"))

    @on(ImageList.SortRequested)
    def _sort_by(self, event: ImageList.SortRequested) -> None:
        query = self.image_list.image_query
        if event.sort == query.sort:
            self._set_query(descending=not query.descending)
        else:
            self._set_query(sort=event.sort, descending=event.sort in ("created_at", "size"))

    def action_reverse(self) -> None:
        self._set_query(descending=not self.image_list.image_query.descending)

    def action_next_page(self) -> None:
        self.image_list.next_page()

    def action_previous_page(self) -> None:
        self.image_list.previous_page()

    def action_reload(self) -> None:
        self.image_list.reload()

    def action_select(self) -> None:
        self.image_list.toggle_selection()

    def action_tenant(self) -> None:
        app: Any = self.app
        if not app.actor.is_admin:
            app.notify(_("Only platform admins can switch tenant."), severity="warning")
            return
        self._load_tenants()

    @work(thread=True, exclusive=True, group="tenants", exit_on_error=False)
    def _load_tenants(self) -> None:
        app: Any = self.app
        tenants = list_tenants(app.catalog, app.actor)
        choices = [("*", _("All tenants"))] + [(t["name"], t["name"]) for t in tenants]
        app.call_from_thread(
            app.push_screen, ChooseScreen(_("Switch tenant"), choices, self.tenant or "*"), self._tenant_chosen
        )

    def _tenant_chosen(self, value: str | None) -> None:
        if value is None:
            return
        self.tenant = None if value == "*" else value
        self.image_list.selected.clear()
        self._set_query(tenant=self.tenant)
        self._update_title()

    # ---- actions on images ----------------------------------------------------------------

    def action_edit(self) -> None:
        from tui.screens.edit import EditScreen

        image = self.image_list.current()
        if image is None:
            self.app.notify(_("No image here."), severity="warning")
            return

        def edited(result: dict[str, Any] | None) -> None:
            if result is not None:
                self.app.notify(_("Saved {name}.").format(name=result["name"]))
                self.image_list.reload()

        self.app.push_screen(EditScreen(image), edited)

    def action_delete(self) -> None:
        names = self.image_list.targets()
        if not names:
            self.app.notify(_("No image here."), severity="warning")
            return
        title = _("Move {n} image(s) to the recycle bin?").format(n=len(names))

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(names)

        self.app.push_screen(
            ConfirmScreen(
                title,
                names_list(names),
                question=_("Only available or failed images not used by a VM can be deleted."),
                yes=_("Delete"),
            ),
            answered,
        )

    @work(thread=True, exclusive=True, group="batch", exit_on_error=False)
    def _delete(self, names: dict[str, str]) -> None:
        app: Any = self.app
        results = delete_images(app.catalog, app.actor, list(names))
        app.call_from_thread(self._batch_done, results, names, _("Delete"), _("in the recycle bin"))

    def _batch_done(self, results: list[Any], names: dict[str, str], action: str, done: str) -> None:
        for result in results:
            if result.ok:
                self.image_list.selected.pop(result.id, None)
        self.image_list.reload()
        self.app.push_screen(ResultsScreen(summary(results, action), result_lines(results, names, done)))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    def action_detail(self) -> None:
        from tui.screens.image_detail import ImageDetailScreen

        image = self._current_or_warn()
        if image is not None:
            screen = ImageDetailScreen(image, refresh_seconds=self.refresh_seconds)
            self.app.push_screen(screen, lambda _result: self.image_list.reload())

    def action_recycle_bin(self) -> None:
        from tui.screens.recycle_bin import RecycleBinScreen

        def back(_result: Any) -> None:
            self.image_list.reload()

        self.app.push_screen(RecycleBinScreen(self.tenant), back)

    def action_vms(self) -> None:
        from tui.screens.vms import VmsScreen

        self.app.push_screen(VmsScreen(refresh_seconds=self.refresh_seconds))

    def action_accounts(self) -> None:
        from tui.screens.accounts import AccountsScreen

        self.app.push_screen(AccountsScreen())

    def action_links(self) -> None:
        from tui.screens.links import LinksScreen

        self.app.push_screen(LinksScreen(refresh_seconds=self.refresh_seconds))

    def action_audit(self) -> None:
        from tui.screens.audit import AuditScreen

        self.app.push_screen(AuditScreen(refresh_seconds=self.refresh_seconds))

    def action_export(self) -> None:
        # A link, never a path: over the SSH door this process runs on the server (docs/security.md L6).
        app: Any = self.app
        if app.links_refused():
            return
        self.app.notify(_("Exporting…"), timeout=3)
        self._export()

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export(self) -> None:
        from core.links.workbooks import create_workbook_link
        from tui.screens.workbook_link import WorkbookLinkScreen

        app: Any = self.app
        query = replace(self.image_list.image_query, limit=None, offset=0)
        headers = [_(h) for h in (N_("Name"), N_("ID"), N_("System type"), N_("OS"), N_("Status"), N_("Size (GB)"))]
        headers += [_(h) for h in (N_("Remark"), N_("Created"), N_("Tenant"))]
        try:
            created = create_workbook_link(app.catalog, app.actor, query, headers, status_labels())
        except Exception as exc:
            app.call_from_thread(report_error, self, exc, _("Export"))
            return
        app.call_from_thread(app.push_screen, WorkbookLinkScreen(created.view))

    def _current_or_warn(self, operation: Operation | None = None) -> dict[str, Any] | None:
        """The image under the cursor, if `operation` is allowed in its status (core's rule and message)."""
        image = self.image_list.current()
        if image is None:
            self.app.notify(_("No image here."), severity="warning")
            return None
        if operation is not None:
            try:
                lifecycle.require(image["id"], image["status"], operation)
            except ImagehubError as exc:
                report_error(self, exc)
                return None
        return image

    def action_import(self) -> None:
        from tui.screens.import_wizard import ImportWizard

        def started(image: dict[str, Any] | None) -> None:
            if image and image.get("upload"):
                from tui.screens.upload import UploadScreen

                self.app.push_screen(UploadScreen(image), lambda _result: self.image_list.reload())
            elif image:
                self.app.notify(_("Importing {name} ({id}).").format(name=image["name"], id=image["id"]))
                app: Any = self.app
                app.wake_worker()
            self.image_list.reload()

        self.app.push_screen(ImportWizard(tenant=self.tenant), started)

    def action_link(self) -> None:
        image = self._current_or_warn(Operation.DOWNLOAD)
        if image is None:
            return
        from tui.screens.link import LinkScreen

        self.app.push_screen(LinkScreen(image))

    def action_create_vm(self) -> None:
        image = self._current_or_warn(Operation.CREATE_VM)
        if image is None:
            return
        from tui.screens.vm_create import VmCreateScreen

        def created(vm: dict[str, Any] | None) -> None:
            if vm and vm.get("status") == DEFINED:  # the none driver: nothing runs it here
                message = _("Created VM {name} ({id}): defined (no compute driver), it does not run here.")
                self.app.notify(message.format(name=vm.get("name"), id=vm.get("id")))
            elif vm:
                self.app.notify(_("Created VM {name} ({id}).").format(name=vm.get("name"), id=vm.get("id")))
            self.image_list.reload()

        self.app.push_screen(VmCreateScreen(image), created)
