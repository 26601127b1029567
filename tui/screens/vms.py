"""The VMs the account may see, live: start, stop, delete, and the serial console.

Core decides what is allowed and says why not (a VM of the `none` driver is only defined: it can be
neither started nor stopped and has no console); every refusal shows as a notification with its reason.
Core calls run in thread workers: a stop may wait for the guest's ACPI shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Static

from core.catalog.models import Status
from core.compute.drivers import DEFINED, PAUSED, RUNNING, STOPPED
from core.compute.vms import Console, delete_vm, list_vms, open_console, start_vm, stop_vm
from core.rules.display import visible
from tui.i18n import N_, _
from tui.screens.base import report_error
from tui.screens.confirm import ChooseScreen, ConfirmScreen
from tui.widgets.footer import FittingFooter
from tui.widgets.format import fit, plain, short_time
from tui.widgets.live_table import Column, LiveTableScreen

CHOICES = 200  # images offered by "new VM" (the newest first; more are reached from the image list's c)

COLUMNS: tuple[Column, ...] = (
    ("name", N_("Name"), 14, 20),
    ("id", N_("ID"), 11, 12),
    ("image", N_("Image"), 12, 12),
    ("status", N_("Status"), 27, 28),
    ("driver", N_("Driver"), 0, 6),
    ("created", N_("Created"), 0, 16),
)

# The driver's words (core.compute.drivers) as users say them; `_()` at use.
VM_STATUS_LABELS: dict[str, str] = {
    RUNNING: N_("running"),
    PAUSED: N_("paused"),
    STOPPED: N_("stopped"),
    DEFINED: N_("defined (no compute driver)"),
}
VM_STATUS_STYLES: dict[str, str] = {
    RUNNING: "bold green",
    PAUSED: "yellow",
    STOPPED: "",
    DEFINED: "dim",
}


def vm_status_label(status: str) -> str:
    return _(VM_STATUS_LABELS.get(status, status))


def vm_status_cell(status: str) -> Text:
    return Text(vm_status_label(status), style=VM_STATUS_STYLES.get(status, ""))


class VmsScreen(LiveTableScreen):
    """The VM list, refreshed every `refresh_seconds` (0: only after an action or ctrl+r)."""

    DEFAULT_CSS = """
    VmsScreen DataTable { height: 1fr; }
    VmsScreen #vms-status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    VmsScreen #vms-detail { height: 2; padding: 0 1; }
    """

    BINDINGS = [
        Binding("n", "new", N_("New"), id="vms.new", tooltip=N_("Create a VM from an available image")),
        Binding("s", "start", N_("Start"), id="vms.start", tooltip=N_("Start the VM")),
        Binding("o", "stop", N_("Stop"), id="vms.stop", tooltip=N_("Power the VM off (ACPI, then hard)")),
        Binding("d", "delete", N_("Delete"), id="vms.delete", tooltip=N_("Delete the VM, its disk and its console")),
        Binding("c", "console", N_("Console"), id="vms.console", tooltip=N_("Read the VM's serial console")),
        Binding("i", "capture", N_("Capture"), id="vms.capture", tooltip=N_("Capture the stopped VM into an image")),
        Binding("ctrl+r", "reload", N_("Refresh"), id="vms.refresh", tooltip=N_("Reload the list"), show=False),
        Binding("escape,q", "back", N_("Back"), id="vms.back", tooltip=N_("Back to the images")),
    ]

    TABLE_ID = "vms-table"
    COLUMNS = COLUMNS
    LIST_GROUP = "vm-list"
    LIST_NAME = N_("VMs")

    def __init__(self, refresh_seconds: float = 2.0) -> None:
        super().__init__(refresh_seconds)
        self.working: dict[str, str] = {}  # VM ID -> what an action under way is doing ("stopping…")

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield DataTable(cursor_type="row", zebra_stripes=True, id=self.TABLE_ID)
        yield Static("", id="vms-status")
        yield Static("", id="vms-detail")
        yield FittingFooter()

    def on_mount(self) -> None:
        app: Any = self.app
        self.title = "imagehub"
        self.sub_title = _("VMs · account {account}").format(account=app.actor.name)
        self._start_live_table()

    # ---- the table ------------------------------------------------------------------------

    def _cells(self, vm: dict[str, Any]) -> list[Any]:
        values = {
            "name": lambda width: plain(fit(visible(vm["name"]), width)),
            "id": lambda width: plain(vm["id"]),
            "image": lambda width: plain(vm["image_id"]),
            "status": lambda width: self._status_cell(vm),
            "driver": lambda width: plain(vm["driver"]),
            "created": lambda width: plain(short_time(vm["created_at"])),
        }
        return [values[key](width) for key, _title, width in self._columns()]

    def _status_cell(self, vm: dict[str, Any]) -> Text:
        doing = self.working.get(vm["id"])
        return Text(doing, style="bold yellow") if doing else vm_status_cell(vm["status"])

    def _mark(self, vm_id: str, doing: str | None) -> None:
        """Show (or stop showing) the action under way in the VM's status cell: a stop may wait a minute
        for the guest, and the row must not say `running` all that time without a word."""
        if doing:
            self.working[vm_id] = doing
        else:
            self.working.pop(vm_id, None)
        vm = next((row for row in self.rows if row["id"] == vm_id), None)
        if vm is not None and not self._closed and any(key == "status" for key, _t, _w in self._columns()):
            self.table.update_cell(vm_id, "status", self._status_cell(vm))

    def _update_status(self) -> None:
        line = _("{n} VM(s)").format(n=len(self.rows)) if self.rows else _("no VMs: create one with n")
        self.query_one("#vms-status", Static).update(plain(line))

    def _update_detail(self) -> None:
        vm = self.current()
        detail = self.query_one("#vms-detail", Static)
        if vm is None:
            detail.update("")
            return
        first = Text.assemble(
            (visible(vm["name"]), "bold"),
            " · ",
            visible(vm["id"]),
            " · ",
            _("image {image}").format(image=visible(vm["image_id"])),
        )
        second = plain(
            " · ".join(
                (
                    vm_status_label(vm["status"]),
                    _("driver {driver}").format(driver=vm["driver"]),
                    vm["arch"],
                    _("tenant {tenant}").format(tenant=vm["tenant"]),
                    _("created {time}").format(time=short_time(vm["created_at"])),
                )
            )
        )
        joined = Text("\n").join([first, second])
        joined.no_wrap = True
        joined.overflow = "ellipsis"
        detail.update(joined)

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_console()

    # ---- loading --------------------------------------------------------------------------

    def _fetch(self, query: object) -> list[dict[str, Any]]:
        app: Any = self.app
        return list_vms(app.catalog, app.actor)

    # ---- actions --------------------------------------------------------------------------

    def _current_or_warn(self) -> dict[str, Any] | None:
        vm = self.current()
        if vm is None:
            self.app.notify(_("No VM here."), severity="warning")
        return vm

    def action_back(self) -> None:
        self.dismiss(None)

    def action_start(self) -> None:
        vm = self._current_or_warn()
        if vm is not None:
            self.app.notify(_("Starting {name}…").format(name=vm["name"]), timeout=3)
            self._mark(vm["id"], _("starting…"))
            self._run(start_vm, vm, _("Start VM"), _("{name} is running."))

    def action_stop(self) -> None:
        vm = self._current_or_warn()
        if vm is not None:
            self.app.notify(_("Stopping {name} (ACPI, then hard)…").format(name=vm["name"]), timeout=5)
            self._mark(vm["id"], _("stopping…"))
            self._run(stop_vm, vm, _("Stop VM"), _("{name} is stopped."))

    def action_delete(self) -> None:
        vm = self._current_or_warn()
        if vm is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._mark(vm["id"], _("deleting…"))
                self._run(delete_vm, vm, _("Delete VM"), _("Deleted VM {name}."))

        self.app.push_screen(
            ConfirmScreen(
                _("Delete VM {name}?").format(name=vm["name"]),
                [f"{vm['name']} ({vm['id']})"],
                question=_("A running VM is powered off; its disk and console log are removed."),
                yes=_("Delete"),
            ),
            answered,
        )

    def action_new(self) -> None:
        self._choose_image()

    @work(thread=True, exclusive=True, group="vm-new", exit_on_error=False)
    def _choose_image(self) -> None:
        """The images a VM can be made from (core's listing, `available` only), then the create form."""
        from core.images.images import ImageQuery, list_images

        app: Any = self.app
        try:
            images = list_images(app.catalog, app.actor, ImageQuery(status=Status.AVAILABLE, limit=CHOICES))
        except Exception as exc:
            app.call_from_thread(report_error, self, exc, _("New VM"))
            return
        app.call_from_thread(self._show_choices, images)

    def _show_choices(self, images: list[dict[str, Any]]) -> None:
        if not self.is_current:
            return
        if not images:
            self.app.notify(_("No available image to create a VM from."), severity="warning")
            return
        by_id = {image["id"]: image for image in images}
        choices = [(image["id"], f"{visible(image['name'])}  {image['id']} · {image['os_name']}") for image in images]

        def chosen(image_id: str | None) -> None:
            if image_id:
                self._create_from(by_id[image_id])

        self.app.push_screen(ChooseScreen(_("Create a VM from which image?"), choices), chosen)

    def _create_from(self, image: dict[str, Any]) -> None:
        from tui.screens.vm_create import VmCreateScreen

        def created(vm: dict[str, Any] | None) -> None:
            if vm:
                self.app.notify(_("Created VM {name} ({id}).").format(name=vm.get("name"), id=vm.get("id")))
            self.reload()

        self.app.push_screen(VmCreateScreen(image), created)

    def action_capture(self) -> None:
        vm = self._current_or_warn()
        if vm is None:
            return
        from tui.screens.vm_capture import CaptureScreen

        def captured(image: dict[str, Any] | None) -> None:
            if image:
                message = _("Capturing {vm} into image {name} ({id}); follow it in the image list.")
                self.app.notify(message.format(vm=vm["name"], name=image.get("name"), id=image.get("id")))

        self.app.push_screen(CaptureScreen(vm), captured)

    @work(thread=True, group="vm-action", exit_on_error=False)
    def _run(self, action: Callable[..., object], vm: dict[str, Any], doing: str, done: str) -> None:
        """`action(catalog, actor, vm_id)` of core off the UI thread (a stop waits for the guest);
        `done` (with `{name}`) is the notification when it worked."""
        app: Any = self.app
        try:
            action(app.catalog, app.actor, vm["id"])
        except Exception as exc:
            app.call_from_thread(self._action_failed, vm["id"], exc, doing)
            return
        app.call_from_thread(self._action_done, vm["id"], done.format(name=vm["name"]))

    def _action_done(self, vm_id: str, message: str) -> None:
        self.app.notify(message)  # also when the admin has left the screen meanwhile
        self._mark(vm_id, None)
        if not self._closed:
            self.reload()

    def _action_failed(self, vm_id: str, exc: Exception, doing: str) -> None:
        report_error(self, exc, doing)
        self._mark(vm_id, None)
        if not self._closed:
            self.reload()

    def action_console(self) -> None:
        vm = self._current_or_warn()
        if vm is not None:
            self._open_console(vm)

    @work(thread=True, exclusive=True, group="vm-console", exit_on_error=False)
    def _open_console(self, vm: dict[str, Any]) -> None:
        app: Any = self.app
        try:
            console = open_console(app.catalog, app.actor, vm["id"])
        except Exception as exc:
            app.call_from_thread(report_error, self, exc, _("Console"))
            return
        app.call_from_thread(self._show_console, vm, console)

    def _show_console(self, vm: dict[str, Any], console: Console) -> None:
        from tui.screens.console import ConsoleScreen

        if self.is_current:  # not if the admin has moved on meanwhile
            self.app.push_screen(ConsoleScreen(vm, console), lambda _result: self.reload())
