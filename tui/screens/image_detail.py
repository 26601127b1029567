"""One image, whole (Enter or v on the list): every field of `image show`, both sizes and both
checksums (the source as imported; the file each link serves), the work under way, the failure
reason, the VMs made from it, its links, its history, and every action that applies to it.

Core gathers it all (core.compute.image_detail) and says which action applies and why not; a key
whose action does not apply is shown dimmed in the footer and, pressed, answers with core's reason.
While something is under way the screen looks again every `refresh_seconds`, only while it is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.timer import Timer
from textual.widgets import Header, Static

from core.catalog.models import Status
from core.compute.drivers import DEFINED
from core.compute.image_detail import ImageDetail, ServedFile, image_detail
from core.rules.display import visible
from core.rules.lifecycle import Operation
from tui.i18n import N_, _, tr
from tui.screens.audit import OUTCOME_STYLES, action_label, actor_label, outcome_label
from tui.screens.base import BaseScreen, report_error
from tui.screens.links import STATE_STYLES, format_label, kind_label, state_word
from tui.screens.vms import vm_status_label
from tui.widgets.footer import FittingFooter
from tui.widgets.format import (
    human_size,
    plain,
    progress_line,
    short_time,
    status_cell,
    status_label,
)

# The actions of the screen that core may refuse, by the operation it checks.
OPERATIONS: dict[str, Operation] = {
    "edit": Operation.EDIT,
    "delete": Operation.DELETE,
    "link": Operation.DOWNLOAD,
    "create_vm": Operation.CREATE_VM,
}


def _grid(rows: Iterable[tuple[str, RenderableType]]) -> Table:
    """Label and value, the value folded onto more lines when the screen is narrow."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, value)
    return table


def _listing(headers: Iterable[str], rows: list[list[Text]], wrap_last: bool = True) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold dim", show_edge=False)
    titles = list(headers)
    for index, title in enumerate(titles):
        last = index == len(titles) - 1
        table.add_column(title, no_wrap=not (last and wrap_last), overflow="fold" if last else "ellipsis")
    for row in rows:
        table.add_row(*row)
    return table


def _section(title: str, *body: RenderableType) -> Group:
    return Group(Text(title, style="bold underline"), *body)


def _bytes(size: int | None) -> str:
    """`20G (21,474,836,480 bytes)`, or `-` when unknown."""
    if size is None:
        return "-"
    return _("{size} ({n} bytes)").format(size=human_size(size), n=f"{size:,}")


class ImageDetailScreen(BaseScreen):
    """The detail of one image; dismissed with None (the list reloads behind it)."""

    DEFAULT_CSS = """
    ImageDetailScreen #detail { height: 1fr; padding: 0 1; }
    ImageDetailScreen #detail > Static { margin: 0 0 1 0; height: auto; }
    ImageDetailScreen #detail-state { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """

    BINDINGS = [
        Binding("e", "edit", N_("Edit"), id="detail.edit", tooltip=N_("Change the name and remark")),
        Binding("d", "delete", N_("Delete"), id="detail.delete", tooltip=N_("Move the image to the recycle bin")),
        Binding("g", "link", N_("Download"), id="detail.link", tooltip=N_("Generate download links")),
        Binding("c", "create_vm", N_("Create VM"), id="detail.vm", tooltip=N_("Create a VM from the image")),
        Binding("m", "vms", N_("VMs"), id="detail.vms", tooltip=N_("The VMs: start, stop, delete, console")),
        Binding("ctrl+r", "reload", N_("Refresh"), id="detail.refresh", tooltip=N_("Look again"), show=False),
        Binding("escape,q", "back", N_("Back"), id="detail.back", tooltip=N_("Back to the images")),
    ]

    def __init__(self, image: dict[str, Any], refresh_seconds: float = 2.0) -> None:
        super().__init__()
        self.image_id: str = image["id"]
        self.image = image  # the list's row until the detail arrives
        self.refresh_seconds = refresh_seconds
        self.detail: ImageDetail | None = None
        self.fetching = False
        self._timer: Timer | None = None
        self._closed = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield VerticalScroll(id="detail")  # the sections, mounted with their content when it first arrives
        yield Static(_("loading…"), id="detail-state")
        yield FittingFooter()

    def on_mount(self) -> None:
        self.title = "imagehub"
        self._update_title()
        self.query_one("#detail", VerticalScroll).focus()
        self.reload()
        if self.refresh_seconds:
            self._timer = self.set_interval(self.refresh_seconds, self._tick, pause=True)

    def on_unmount(self) -> None:
        self._closed = True

    def _update_title(self) -> None:
        self.sub_title = visible(_("Image {name} ({id})").format(name=self.image["name"], id=self.image_id))

    # ---- loading ---------------------------------------------------------------------------

    def reload(self) -> None:
        self.fetching = True
        self._load()

    def _tick(self) -> None:
        if self.is_current and not self.fetching:
            self.reload()

    @work(thread=True, exclusive=True, group="image-detail", exit_on_error=False)
    def _load(self) -> None:
        app: Any = self.app
        try:
            detail = image_detail(app.catalog, app.actor, self.image_id)
        except Exception as exc:
            app.call_from_thread(self._load_failed, exc)
            return
        app.call_from_thread(self._loaded, detail)

    def _load_failed(self, exc: Exception) -> None:
        self.fetching = False
        if self._closed:
            return
        report_error(self, exc, _("Image detail"))
        self.query_one("#detail-state", Static).update(plain(_("could not be read; ctrl+r tries again")))

    def _loaded(self, detail: ImageDetail) -> None:
        self.fetching = False
        if self._closed:
            return
        self.detail = detail
        self.image = detail.image
        self._update_title()
        self._render_detail(detail)
        self.refresh_bindings()
        if self._timer is not None:
            if detail.under_way:
                self._timer.resume()
            else:
                self._timer.pause()

    # ---- the sections ----------------------------------------------------------------------

    def _render_detail(self, detail: ImageDetail) -> None:
        sections: dict[str, RenderableType | None] = {
            "image": self._image_section(detail),
            "work": self._work_section(detail),
            "failure": self._failure_section(detail),
            "sizes": self._sizes_section(detail),
            "vms": self._vms_section(detail),
            "links": self._links_section(detail),
            "audit": self._audit_section(detail),
            "actions": self._actions_section(detail),
        }
        scroll = self.query_one("#detail", VerticalScroll)
        if not scroll.children:
            # Mounted with their content: a Static updated before its first layout may keep the empty
            # content's height (Textual caches its box model until the next layout request).
            scroll.mount_all(Static(content or "", id=f"detail-{name}") for name, content in sections.items())
        else:
            for name, content in sections.items():
                scroll.query_one(f"#detail-{name}", Static).update(content or "")
        for name, content in sections.items():
            scroll.query_one(f"#detail-{name}", Static).display = content is not None
        if not detail.under_way:
            state = _("nothing under way · ctrl+r looks again")
        elif self.refresh_seconds:
            state = _("work under way: looking again every {n} s").format(n=f"{self.refresh_seconds:g}")
        else:
            state = _("work under way · ctrl+r looks again")
        self.query_one("#detail-state", Static).update(plain(state))

    def _image_section(self, detail: ImageDetail) -> Group:
        image = detail.image
        rows: list[tuple[str, RenderableType]] = [
            (_("Name"), plain(image["name"], "bold")),
            (_("ID"), plain(image["id"])),
            (_("Remark"), plain(image.get("description") or "-")),
            (_("Tenant"), plain(image["tenant"])),
            (_("System type"), plain(image["os_type"])),
            (_("OS"), plain(image["os_name"])),
            (_("Status"), plain(status_label(image["status"]))),
            (_("Imported from"), plain(image.get("source") or "-")),
            (_("Created"), plain(short_time(image["created_at"]) + " UTC")),
            (_("Updated"), plain(short_time(image["updated_at"]) + " UTC")),
        ]
        if image.get("deleted_at"):
            rows.append((_("Deleted"), plain(short_time(image["deleted_at"]) + " UTC")))
        return _section(_("Image"), _grid(rows))

    def _work_section(self, detail: ImageDetail) -> Group | None:
        progress = detail.image.get("progress")
        if progress is None:
            return None
        bar = status_cell(detail.image["status"], progress, 30)
        return _section(_("Work under way"), bar, plain(progress_line(progress)))

    def _failure_section(self, detail: ImageDetail) -> Group | None:
        error = detail.image.get("error")
        if not error:
            return None
        title = _("Why the import failed") if detail.image["status"] == Status.IMPORT_FAILED else _("Last failure")
        return _section(title, plain(tr(error), "red"))

    def _sizes_section(self, detail: ImageDetail) -> Group:
        image = detail.image
        rows: list[tuple[str, RenderableType]] = [
            (_("Target size GB"), plain(str(image["target_size_gb"]))),
            (_("Virtual size"), plain(_bytes(image.get("virtual_size")))),
        ]
        if image.get("disk_format"):
            fmt = format_label(image["disk_format"])
            stored = _("{format}, {size}").format(format=fmt, size=_bytes(detail.stored_size))
            if detail.allocated is not None:
                stored += " · " + _("{size} used on disk").format(size=human_size(detail.allocated))
            rows.append((_("Stored file"), plain(stored)))
        else:
            rows.append((_("Stored file"), plain(_("none yet"), "dim")))
        for served in detail.served:
            label = _("Download as {format}").format(format=format_label(served.format))
            rows.append((label, self._served_size(served)))
        return _section(_("Sizes and checksums"), _grid(rows), self._checksums(detail))

    @staticmethod
    def _checksums(detail: ImageDetail) -> Text:
        """Each checksum under the name of what it covers, on a line of its own (64 characters fit at 80 columns)."""
        entries = [(_("SHA-256 of the source as imported"), detail.image.get("sha256"), _("not known"))]
        for served in detail.served:
            label = _("SHA-256 of the {format} file a link serves").format(format=format_label(served.format))
            entries.append((label, served.sha256, _("computed when the first link is made")))
        lines = [
            Text.assemble((label, "bold"), "\n  ", (visible(value), "") if value else (missing, "dim"))
            for label, value, missing in entries
        ]
        return Text("\n").join(lines)

    @staticmethod
    def _served_size(served: ServedFile) -> Text:
        if served.size is not None:
            return plain(_bytes(served.size))
        return plain(_("made when a link asks for it"), "dim")

    def _vms_section(self, detail: ImageDetail) -> Group:
        title = _("VMs made from this image ({n})").format(n=len(detail.vms))
        if not detail.vms:
            return _section(title, plain(_("none"), "dim"))
        rows = [
            [
                plain(vm["name"]),
                plain(vm["id"]),
                plain(vm_status_label(vm["status"])),
                plain(short_time(vm["created_at"])),
            ]
            for vm in detail.vms
        ]
        headers = (_("Name"), _("ID"), _("Status"), _("Created"))
        hint = plain(_("m: the VMs screen (start, stop, console)"), "dim")
        return _section(title, _listing(headers, rows), hint)

    def _links_section(self, detail: ImageDetail) -> Group:
        title = _("Links ({n})").format(n=len(detail.links))
        if not detail.links:
            return _section(title, plain(_("none"), "dim"))
        rows = []
        for link in detail.links:  # in the links screen's words (l on the image list has the whole sentences)
            rows.append(
                [
                    plain(link["id"]),
                    plain(kind_label(link["kind"])),
                    plain(format_label(link["format"])),
                    plain(human_size(link.get("size"))),
                    plain(short_time(link.get("expires_at"))),
                    plain(link.get("created_by") or "-"),
                    plain(state_word(link), STATE_STYLES.get(link["state"], "")),
                ]
            )
        headers = (_("ID"), _("Kind"), _("Format"), _("Size"), _("Expires"), _("By"), _("State"))
        return _section(title, _listing(headers, rows))

    def _audit_section(self, detail: ImageDetail) -> Group:
        if detail.audit is None:
            return _section(_("History"), plain(tr(detail.audit_hidden or ""), "dim"))
        title = _("History ({n})").format(n=len(detail.audit))
        if not detail.audit:
            return _section(title, plain(_("none"), "dim"))
        rows = []
        for event in detail.audit:
            outcome = event["outcome"]
            rows.append(
                [
                    plain(short_time(event["at"])),
                    plain(actor_label(event["actor"])),
                    plain(action_label(event["action"])),
                    plain(outcome_label(outcome), OUTCOME_STYLES.get(outcome, "")),
                    plain(event.get("reason") or ""),
                ]
            )
        headers = (_("When (UTC)"), _("Who"), _("What"), _("Outcome"), _("Reason"))
        return _section(title, _listing(headers, rows))

    def _actions_section(self, detail: ImageDetail) -> Group:
        rows: list[tuple[str, RenderableType]] = []
        for key, binding in self._action_bindings():
            refusal = detail.refusals.get(OPERATIONS[binding.action])
            if refusal is None:
                rows.append((key, plain(binding.description)))
            else:
                rows.append((key, Text.assemble((binding.description, "dim"), ": ", (visible(tr(refusal)), "dim"))))
        rows.append(("m", plain(_("the VMs screen: start, stop, delete, console"))))
        return _section(_("Actions"), _grid(rows))

    def _action_bindings(self) -> list[tuple[str, Binding]]:
        return [(key, binding) for key, binding in self._bindings if binding.action in OPERATIONS]

    # ---- refusals: dimmed in the footer, and the reason when pressed ----------------------------

    def _refusal(self, action: str) -> Any:
        operation = OPERATIONS.get(action)
        if operation is None or self.detail is None:
            return None
        return self.detail.refusals.get(operation)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self._refusal(action) is not None else True

    def _refuse(self, action: str) -> bool:
        """Say why `action` does not apply (core's reason); False when it applies."""
        refusal = self._refusal(action)
        if refusal is None:
            return False
        report_error(self, refusal)
        return True

    def on_key(self, event: events.Key) -> None:
        """A dimmed key still answers: with the reason its action does not apply."""
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if self._refuse(binding.action):
                event.stop()
                event.prevent_default()
                return

    async def run_action(self, action: str, namespaces: Mapping[str, DOMNode] | None = None) -> None:
        """The command palette's way in: a refused action answers with its reason too."""
        if not self._refuse(action):
            await super().run_action(action, namespaces)

    # ---- actions ---------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss(None)

    def action_reload(self) -> None:
        self.reload()

    def _after(self, notice: Callable[[Any], str | None]) -> Callable[[Any], None]:
        """A callback for a pushed screen: notify what it returned (if anything), then look again."""

        def done(result: Any) -> None:
            message = notice(result)
            if message:
                self.app.notify(message)
            if not self._closed:
                self.reload()

        return done

    def action_edit(self) -> None:
        from tui.screens.edit import EditScreen

        saved = self._after(lambda result: _("Saved {name}.").format(name=result["name"]) if result else None)
        self.app.push_screen(EditScreen(self.image), saved)

    def action_link(self) -> None:
        from tui.screens.link import LinkScreen

        self.app.push_screen(LinkScreen(self.image), self._after(lambda _result: None))

    def action_create_vm(self) -> None:
        from tui.screens.vm_create import VmCreateScreen

        self.app.push_screen(VmCreateScreen(self.image), self._after(_vm_created))

    def action_vms(self) -> None:
        from tui.screens.vms import VmsScreen

        self.app.push_screen(VmsScreen(refresh_seconds=self.refresh_seconds), self._after(lambda _result: None))

    def action_delete(self) -> None:
        from tui.screens.confirm import ConfirmScreen

        image = self.image

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete()

        self.app.push_screen(
            ConfirmScreen(
                _("Move {n} image(s) to the recycle bin?").format(n=1),
                [f"{image['id']}  {image['name']}"],
                question=_("Only available or failed images not used by a VM can be deleted."),
                yes=_("Delete"),
            ),
            answered,
        )

    @work(thread=True, exclusive=True, group="image-detail-delete", exit_on_error=False)
    def _delete(self) -> None:
        from core.images.images import delete_images

        app: Any = self.app
        [result] = delete_images(app.catalog, app.actor, [self.image_id])
        app.call_from_thread(self._deleted, result)

    def _deleted(self, result: Any) -> None:
        if not result.ok:
            self.app.notify(visible(tr(result.error)), title=_("Delete"), severity="error", timeout=8)
            if not self._closed:
                self.reload()
            return
        self.app.notify(_("Moved {name} to the recycle bin.").format(name=self.image["name"]))
        if not self._closed and self.is_current:
            self.dismiss(None)


def _vm_created(vm: dict[str, Any] | None) -> str | None:
    if not vm:
        return None
    if vm.get("status") == DEFINED:  # the none driver: nothing runs it here
        message = _("Created VM {name} ({id}): defined (no compute driver), it does not run here.")
        return message.format(name=vm.get("name"), id=vm.get("id"))
    return _("Created VM {name} ({id}).").format(name=vm.get("name"), id=vm.get("id"))
