"""Edit an image's name and remark (allowed in every status)."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from core.images.images import edit_image
from core.rules.validation import check_description, check_name
from tui.i18n import N_, _
from tui.screens.base import SubmitForm, field_problem, report_error
from tui.screens.confirm import DIALOG_CSS
from tui.widgets.format import plain, status_label, visible


class EditScreen(SubmitForm):
    """Returns the edited image (dict) or None when cancelled."""

    DEFAULT_CSS = DIALOG_CSS.format(name="EditScreen") + "EditScreen Input { margin-bottom: 0; }"
    BINDINGS = [
        Binding("escape,q", "cancel", N_("Cancel"), id="edit.cancel", tooltip=N_("Close without saving")),
        Binding("ctrl+s", "save", N_("Save"), id="edit.save", tooltip=N_("Save the name and remark")),
    ]

    SUBMIT = "save"

    def __init__(self, image: dict[str, Any]) -> None:
        super().__init__()
        self.image = image

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                plain(
                    _("Edit {name} ({id}, {status})").format(
                        name=self.image["name"], id=self.image["id"], status=status_label(self.image["status"])
                    )
                ),
                classes="dialog-title",
            )
            yield Label(_("Name"))
            yield Input(visible(self.image["name"]), id="name", max_length=200)  # no raw ESC to the terminal
            yield Static("", classes="dialog-message", id="name-message")
            yield Label(_("Remark"))
            yield Input(visible(self.image.get("description") or "", newlines=True), id="description", max_length=1000)
            yield Static("", classes="dialog-message", id="description-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(_("Cancel"), id="cancel")
                yield Button(_("Save"), id="save", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def _validate(self) -> bool:
        name = self.query_one("#name", Input).value
        description = self.query_one("#description", Input).value
        name_problem = field_problem(check_name, name)
        description_problem = field_problem(check_description, description)
        self.query_one("#name-message", Static).update(plain(name_problem or ""))
        self.query_one("#description-message", Static).update(plain(description_problem or ""))
        ok = name_problem is None and description_problem is None
        self.query_one("#save", Button).disabled = not ok
        return ok

    @on(Input.Changed)
    def _changed(self) -> None:
        self._validate()

    def action_save(self) -> None:
        if not self._validate():
            return
        name = self.query_one("#name", Input).value
        description = self.query_one("#description", Input).value
        self.query_one("#save", Button).disabled = True
        self._save(name, description)

    @work(thread=True, exclusive=True, group="edit", exit_on_error=False)
    def _save(self, name: str, description: str) -> None:
        app: Any = self.app
        try:
            image = edit_image(app.catalog, app.actor, self.image["id"], name=name, description=description)
        except Exception as exc:
            app.call_from_thread(self._failed, exc)
            return
        app.call_from_thread(self.dismiss, image)

    def _failed(self, exc: Exception) -> None:
        self.query_one("#save", Button).disabled = False
        report_error(self, exc, _("Edit"))
