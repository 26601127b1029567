"""Capture a stopped VM's disk into a new image (`imagehub image capture`): a name and a remark.

The new image keeps the source image's system type, OS and architecture (core.compute.capture decides,
and refuses a VM that is not stopped, or one already being captured, with its reason).
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from core.rules.validation import check_description, check_name
from tui.i18n import N_, _
from tui.screens.base import CheckedForm, field_problem, report_error, show_field_problems
from tui.screens.confirm import DIALOG_CSS
from tui.widgets.format import plain, visible


class CaptureScreen(CheckedForm):
    """Returns the new image (dict, with `job_id`) or None when cancelled."""

    DEFAULT_CSS = DIALOG_CSS.format(name="CaptureScreen") + "CaptureScreen .dialog-message { height: auto; }"
    BINDINGS = [
        Binding("escape,q", "cancel", N_("Cancel"), id="capture.cancel", tooltip=N_("Close without capturing")),
        Binding("ctrl+s", "capture", N_("Capture"), id="capture.save", tooltip=N_("Capture the VM into an image")),
    ]

    SUBMIT = "capture"

    def __init__(self, vm: dict[str, Any]) -> None:
        super().__init__()
        self.vm = vm

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                plain(_("Capture VM {name} ({id}) into an image").format(name=self.vm["name"], id=self.vm["id"])),
                classes="dialog-title",
            )
            yield Static(plain(_("The VM must be stopped. The image keeps its source image's OS and architecture.")))
            yield Label(_("Image name"))
            yield Input(visible(f"{self.vm['name']}-capture"), id="capture-name", compact=True, max_length=200)
            yield Static("", classes="dialog-message", id="capture-name-message")
            yield Label(_("Remark"))
            yield Input(id="capture-description", compact=True, max_length=1000)
            yield Static("", classes="dialog-message", id="capture-description-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(_("Cancel"), id="cancel", compact=True)
                yield Button(_("Capture"), id="capture", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#capture-name", Input).focus()

    def _values(self) -> tuple[str, str]:
        return self.query_one("#capture-name", Input).value, self.query_one("#capture-description", Input).value

    def _validate(self, everything: bool = False) -> bool:
        name, description = self._values()
        problems = {
            "capture-name": field_problem(check_name, name),
            "capture-description": field_problem(check_description, description),
        }
        return show_field_problems(self, problems, self.touched, everything=everything)

    def action_capture(self) -> None:
        if not self._validate(everything=True):
            return
        name, description = self._values()
        self.query_one("#capture", Button).disabled = True
        self._capture(name, description or None)

    @work(thread=True, exclusive=True, group="vm-capture", exit_on_error=False)
    def _capture(self, name: str, description: str | None) -> None:
        from core.compute.capture import submit_capture

        app: Any = self.app
        try:
            image = submit_capture(app.catalog, app.actor, self.vm["id"], name, description=description)
        except Exception as exc:
            app.call_from_thread(self._failed, exc)
            return
        app.wake_worker()
        app.call_from_thread(self.dismiss, image)

    def _failed(self, exc: Exception) -> None:
        self.query_one("#capture", Button).disabled = False
        report_error(self, exc, _("Capture image"))
