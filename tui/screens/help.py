"""`?`: the keys of the screen underneath, with what each does."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static

from tui.i18n import N_, _
from tui.screens.base import BaseModal
from tui.screens.confirm import DIALOG_CSS


def key_rows(app: Any, screen: Screen[Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for node in (screen, app):
        for _key, binding in node._bindings:
            if not binding.id or not binding.description or binding.action in seen:
                continue
            seen.add(binding.action)
            keys = ", ".join(app.get_key_display(Binding(k.strip(), binding.action)) for k in binding.key.split(","))
            if binding.key_display:
                keys = binding.key_display
            rows.append((keys, binding.description, binding.tooltip))
    return rows


class HelpScreen(BaseModal):
    DEFAULT_CSS = DIALOG_CSS.format(name="HelpScreen") + "HelpScreen > Vertical { width: 90; }"
    BINDINGS = [Binding("escape,question_mark,q", "close", N_("Close"), id="help.close", tooltip=N_("Close"))]

    def __init__(self, screen: Screen[Any]) -> None:
        super().__init__()
        self.under = screen

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(style="dim")
        for keys, description, tooltip in key_rows(self.app, self.under):
            table.add_row(keys, description, tooltip)
        with Vertical():
            yield Label(_("Keys"), classes="dialog-title")
            with VerticalScroll():
                yield Static(table)

    def action_close(self) -> None:
        self.dismiss(None)
