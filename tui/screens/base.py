"""What every screen shares: translated bindings and one way to report errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from textual import on
from textual.binding import BindingsMap
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Static
from textual.worker import Worker, WorkerState

from core.catalog.errors import ImagehubError
from tui.i18n import _, tr
from tui.widgets.format import plain

log = logging.getLogger("imagehub.tui")


def translate_bindings(node: DOMNode) -> None:
    """Replace the node's bindings by copies with translated descriptions and tooltips."""
    translated = BindingsMap()
    for key, bindings in node._bindings.key_to_bindings.items():
        translated.key_to_bindings[key] = [
            replace(b, description=_(b.description), tooltip=_(b.tooltip) if b.tooltip else "") for b in bindings
        ]
    node._bindings = translated


def report_error(node: DOMNode, error: BaseException, doing: str = "") -> None:
    """A domain error becomes a notification; anything else a notification and a log entry."""
    app: Any = node.app
    if isinstance(error, ImagehubError):
        app.notify(tr(error), title=doing or _("Refused"), severity="error", timeout=8)
        return
    log.error("unexpected error%s", f" while {doing}" if doing else "", exc_info=error)
    app.notify(
        _("Unexpected error: {error}. Details are in the log.").format(error=f"{type(error).__name__}: {error}"),
        title=doing or _("Error"),
        severity="error",
        timeout=10,
    )


def field_problem(check: Callable[..., object], *args: Any) -> str | None:
    """Why core's `check(*args)` refuses the value, in the user's words; None when it passes."""
    try:
        check(*args)
    except ImagehubError as exc:
        return tr(exc)
    return None


def show_field_problems(
    node: DOMNode, problems: Mapping[str, str | None], touched: set[str], *, everything: bool = False
) -> bool:
    """Each field's problem under it (`#FIELD-message`), for the fields typed in so far or, with
    `everything`, for all; True when no field has a problem."""
    for field, message in problems.items():
        shown = message if (everything or field in touched) else None
        node.query_one(f"#{field}-message", Static).update(plain(shown or ""))
    return not any(problems.values())


class WorkerErrors:
    """Turns a failed worker of this node into a notification (workers use exit_on_error=False)."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            report_error(self, event.worker.error)  # type: ignore[arg-type]


class BaseScreen(WorkerErrors, Screen[Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        translate_bindings(self)


class BaseModal(WorkerErrors, ModalScreen[Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        translate_bindings(self)


class SubmitForm(BaseModal):
    """A dialog of fields: Enter in a field or the `SUBMIT` button runs the action of the same name;
    any other button cancels."""

    SUBMIT: ClassVar[str]  # the submit button's id, which is also its action's name

    def _submit(self) -> None:
        getattr(self, f"action_{self.SUBMIT}")()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._submit()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == self.SUBMIT:
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class CheckedForm(SubmitForm):
    """A form whose fields core checks as they are typed: a field's problem shows once the field is
    touched, every problem on submit (`_validate`)."""

    def __init__(self) -> None:
        super().__init__()
        self.touched: set[str] = set()

    def _validate(self, everything: bool = False) -> bool:
        raise NotImplementedError

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id:
            self.touched.add(event.input.id)
        self._validate()
