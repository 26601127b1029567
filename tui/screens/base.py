"""What every screen shares: translated bindings and one way to report errors."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from textual.binding import BindingsMap
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from core.catalog.errors import ImagehubError
from tui.i18n import _, tr

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
