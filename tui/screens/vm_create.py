"""Create a VM from an image: the image preselected, a name, and the new admin password
typed twice. The password rules and their messages are core's (core.compute.seed.check_password); the
strength bar only helps choose a better one. The password is passed to core and not kept here.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from core.rules.validation import check_name
from tui.i18n import N_, _
from tui.screens.base import CheckedForm, field_problem, report_error, show_field_problems
from tui.screens.confirm import DIALOG_CSS
from tui.widgets.format import visible

STRENGTH = (N_("weak"), N_("fair"), N_("good"), N_("strong"))
STRENGTH_STYLE = ("red", "yellow", "green", "bold green")


def strength(password: str) -> int:
    """0 (weak) to 3 (strong): character classes and length, for the meter only."""
    if not password:
        return 0
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    score = (classes >= 3) + (classes == 4) + (len(password) >= 12)
    return min(3, score if len(password) >= 8 else 0)


class VmCreateScreen(CheckedForm):
    """Returns the new VM (dict) or None."""

    DEFAULT_CSS = DIALOG_CSS.format(name="VmCreateScreen") + "VmCreateScreen .dialog-message { height: auto; }"
    BINDINGS = [
        Binding("escape,q", "cancel", N_("Cancel"), id="vm.cancel", tooltip=N_("Close without creating")),
        Binding("ctrl+s", "create", N_("Create"), id="vm.create", tooltip=N_("Create the VM")),
    ]

    SUBMIT = "create"

    def __init__(self, image: dict[str, Any]) -> None:
        super().__init__()
        self.image = image

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(_("Create a VM from an image"), classes="dialog-title")
            yield Static(
                Text.assemble(
                    _("Image: "),
                    (visible(self.image["name"]), "bold"),
                    visible(f"  {self.image['id']} · {self.image['os_name']}"),
                ),
                id="vm-image",
            )
            yield Label(_("VM name"))
            yield Input(id="vm-name", compact=True, max_length=200)
            yield Static("", classes="dialog-message", id="vm-name-message")
            yield Label(_("Admin password (replaces the one inside the image)"))
            yield Input(id="password", password=True, compact=True, max_length=64)
            yield Static("", id="strength")
            yield Static("", classes="dialog-message", id="password-message")
            yield Label(_("Password again"))
            yield Input(id="password2", password=True, compact=True, max_length=64)
            yield Static("", classes="dialog-message", id="password2-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(_("Cancel"), id="cancel", compact=True)
                yield Button(_("Create"), id="create", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#vm-name", Input).focus()

    def _values(self) -> tuple[str, str, str]:
        return (
            self.query_one("#vm-name", Input).value,
            self.query_one("#password", Input).value,
            self.query_one("#password2", Input).value,
        )

    def _validate(self, everything: bool = False) -> bool:
        from core.compute.seed import check_password

        name, password, again = self._values()
        problems = {
            "vm-name": field_problem(check_name, name),
            "password": field_problem(check_password, password, self.image["os_type"]),
            "password2": None if password == again else _("the two passwords differ"),
        }
        ok = show_field_problems(self, problems, self.touched, everything=everything)
        score = strength(password)
        bar = "█" * (score + 1) * 3 + "░" * (3 - score) * 3
        self.query_one("#strength", Static).update(
            Text.assemble((bar, STRENGTH_STYLE[score]), " ", _(STRENGTH[score])) if password else ""
        )
        return ok

    def action_create(self) -> None:
        if not self._validate(everything=True):
            return
        name, password, _again = self._values()
        self.query_one("#create", Button).disabled = True
        self._create(name, password)

    @work(thread=True, exclusive=True, group="vm-create", exit_on_error=False)
    def _create(self, name: str, password: str) -> None:
        from core.compute.vms import create_vm

        app: Any = self.app
        try:
            vm = create_vm(app.catalog, app.actor, self.image["id"], name, password)
        except Exception as exc:
            app.call_from_thread(self._failed, exc)
            return
        app.call_from_thread(self.dismiss, vm)

    def _failed(self, exc: Exception) -> None:
        self.query_one("#create", Button).disabled = False
        report_error(self, exc, _("Create VM"))
