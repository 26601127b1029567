"""Dialogs: a confirmation that defaults to No (optionally typed), a results list, a prompt, a chooser.

Titles, items and messages carry user text (image names, reasons): shown with `plain`, never as markup."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.i18n import N_, _
from tui.screens.base import BaseModal
from tui.widgets.format import plain, visible

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 72; max-width: 95%; height: auto; max-height: 90%;
    border: thick $primary; background: $surface; padding: 0 1;
}}
{name} .dialog-title {{ text-style: bold; width: 1fr; padding: 0 0 1 0; }}
{name} .dialog-list {{ height: auto; max-height: 12; border: none; padding: 0 0 1 0; }}
{name} .dialog-message {{ color: $error; height: auto; }}
{name} .dialog-text {{ width: 1fr; height: auto; }}
{name} .dialog-buttons {{ height: auto; align-horizontal: right; padding: 1 0 0 0; }}
{name} .dialog-buttons Button {{ margin-left: 2; min-width: 10; }}
"""


class ConfirmScreen(BaseModal):
    """Yes/No about `items`; No is focused. With `typed`, Yes needs that exact text typed first."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [
        Binding("escape,q", "answer(False)", N_("Cancel"), id="confirm.cancel", tooltip=N_("Do nothing")),
        Binding("n", "answer(False)", N_("No"), show=False),
        Binding("y", "answer(True)", N_("Yes"), show=False),
    ]

    def __init__(
        self, title: str, items: Sequence[str] = (), *, question: str = "", yes: str = "", typed: str | None = None
    ) -> None:
        super().__init__()
        self.title_text = title
        self.items = list(items)
        self.question = question
        self.yes_label = yes or _("Yes")
        self.typed = typed

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(self.title_text), classes="dialog-title")
            if self.items:
                with VerticalScroll(classes="dialog-list"):
                    yield Static(Text("\n").join(plain(item) for item in self.items))
            if self.question:  # a Static wraps a long question; a Label would cut it at the dialog's edge
                yield Static(plain(self.question), classes="dialog-text")
            if self.typed is not None:
                yield Static(plain(_("Type “{text}” to confirm:").format(text=self.typed)), classes="dialog-text")
                yield Input(placeholder=visible(self.typed), id="typed")
            with Horizontal(classes="dialog-buttons"):
                yield Button(_("No"), id="no", variant="primary")
                yield Button(self.yes_label, id="yes", variant="error", disabled=self.typed is not None)

    def on_mount(self) -> None:
        if self.typed is not None:
            self.query_one("#typed", Input).focus()
        else:
            self.query_one("#no", Button).focus()

    @on(Input.Changed, "#typed")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#yes", Button).disabled = event.value.strip() != self.typed

    @on(Input.Submitted, "#typed")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.typed:
            self.dismiss(True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes" and not event.button.disabled)

    def action_answer(self, yes: bool) -> None:
        if yes and self.typed is not None:
            if isinstance(self.focused, Input):
                return
            yes = self.query_one("#typed", Input).value.strip() == self.typed
        self.dismiss(yes)


class ResultsScreen(BaseModal):
    """Per-item outcomes of a batch (✓ / ✗ with the reason)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ResultsScreen")
    BINDINGS = [Binding("escape,enter,q", "close", N_("Close"), id="results.close", tooltip=N_("Back to the list"))]

    def __init__(self, title: str, lines: Sequence[Text]) -> None:
        super().__init__()
        self.title_text = title
        self.lines = list(lines)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(self.title_text), classes="dialog-title")
            with VerticalScroll(classes="dialog-list", id="results"):
                yield Static(Text("\n").join(self.lines))
            with Horizontal(classes="dialog-buttons"):
                yield Button(_("OK"), id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    @on(Button.Pressed)
    def action_close(self) -> None:
        self.dismiss(None)


class PromptScreen(BaseModal):
    """One line of input, checked as you type by `check` (returns an error message or None)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PromptScreen")
    BINDINGS = [Binding("escape,q", "cancel", N_("Cancel"), id="prompt.cancel", tooltip=N_("Do nothing"))]

    def __init__(
        self, title: str, label: str, value: str = "", *, check: Callable[[str], str | None] | None = None
    ) -> None:
        super().__init__()
        self.title_text = title
        self.label = label
        self.value = value
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(self.title_text), classes="dialog-title")
            yield Label(plain(self.label))
            yield Input(self.value, id="value")
            yield Static("", classes="dialog-message", id="message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(_("Cancel"), id="cancel")
                yield Button(_("OK"), id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#value", Input).focus()
        self._validate(self.value)

    def _validate(self, value: str) -> bool:
        message = self.check(value) if self.check else None
        self.query_one("#message", Static).update(plain(message or ""))
        self.query_one("#ok", Button).disabled = message is not None
        return message is None

    @on(Input.Changed, "#value")
    def _changed(self, event: Input.Changed) -> None:
        self._validate(event.value)

    @on(Input.Submitted, "#value")
    def _submitted(self, event: Input.Submitted) -> None:
        if self._validate(event.value):
            self.dismiss(event.value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self.dismiss(self.query_one("#value", Input).value)
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChooseScreen(BaseModal):
    """Pick one of `choices` (value, label); returns the value or None."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ChooseScreen") + "ChooseScreen OptionList { height: auto; max-height: 14; }"
    BINDINGS = [Binding("escape,q", "cancel", N_("Cancel"), id="choose.cancel", tooltip=N_("Do nothing"))]

    def __init__(self, title: str, choices: Sequence[tuple[str, str]], current: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.choices = list(choices)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(self.title_text), classes="dialog-title")
            yield OptionList(*[Option(plain(label), id=value) for value, label in self.choices], id="choices")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        for index, (value, _label) in enumerate(self.choices):
            if value == self.current:
                options.highlighted = index

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
