"""A VM's serial console log, followed as it grows.

What the guest prints is untrusted: it is decoded as UTF-8 (bad bytes replaced), its terminal escape
sequences are dropped and any other control character is shown escaped (`\\x07`), so nothing the guest
sends reaches the admin's terminal as a command. The log widget shows it as plain text, never as markup.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Log, Static

from core.compute.vms import Console
from core.rules.display import visible
from tui.i18n import N_, _
from tui.screens.base import BaseScreen, report_error
from tui.widgets.footer import FittingFooter
from tui.widgets.format import plain

POLL_SECONDS = 0.5
READ_LIMIT = 256 * 1024  # bytes read per poll; a longer backlog is read on the next polls
MAX_LINES = 5000

# ESC sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks), and the two-byte ones.
ESCAPE_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")
# An ESC sequence cut at the end of a read: kept until the next read completes it.
UNFINISHED_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[ -/]*)?\Z")
UNFINISHED_LIMIT = 256  # a longer "sequence" is not one: show it escaped


class ConsoleText:
    """Turns the console's bytes, read in pieces, into safe plain text (lines end with \\n)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> str:
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        unfinished = UNFINISHED_ESCAPE.search(text)
        if unfinished and len(text) - unfinished.start() <= UNFINISHED_LIMIT:
            text, self._pending = text[: unfinished.start()], text[unfinished.start() :]
        return self._clean(text)

    @staticmethod
    def _clean(text: str) -> str:
        text = ESCAPE_SEQUENCE.sub("", text)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
        return visible(text, newlines=True)


class ConsoleScreen(BaseScreen):
    """The console log of one VM, from its first byte, following what the guest prints."""

    DEFAULT_CSS = """
    ConsoleScreen #console-state { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    ConsoleScreen Log { height: 1fr; }
    """

    BINDINGS = [
        Binding("escape,q", "back", N_("Back"), id="console.back", tooltip=N_("Back to the VMs")),
        Binding("end", "follow", N_("Follow"), id="console.follow", tooltip=N_("Jump to the end and follow")),
    ]

    def __init__(self, vm: dict[str, Any], console: Console, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self.vm = vm
        self.console = console
        self.poll_seconds = poll_seconds
        self.read_offset = 0
        self.live: bool | None = None
        self.text = ConsoleText()
        self._reading = False
        self._closed = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield Static("", id="console-state")
        yield Log(max_lines=MAX_LINES, id="console-log")
        yield FittingFooter()

    @property
    def log_widget(self) -> Log:
        return self.query_one("#console-log", Log)

    def on_mount(self) -> None:
        self.title = "imagehub"
        self.sub_title = _("console of VM {name} ({id})").format(name=visible(self.vm["name"]), id=self.vm["id"])
        self._show_state()
        self.log_widget.focus()
        self.poll()
        self.set_interval(self.poll_seconds, self.poll)

    def on_unmount(self) -> None:
        self._closed = True

    def poll(self) -> None:
        """Read what the guest printed since the last read (one read at a time)."""
        if self._reading or self._closed:
            return
        self._reading = True
        self._read(self.read_offset)

    @work(thread=True, group="console-read", exit_on_error=False)
    def _read(self, offset: int) -> None:
        app: Any = self.app
        try:
            data = self.console.read(offset, READ_LIMIT)
            live = self.console.live()
        except Exception as exc:
            app.call_from_thread(self._failed, exc)
            return
        app.call_from_thread(self._append, offset, data, live)

    def _failed(self, exc: Exception) -> None:
        self._reading = False
        if self._closed:
            return
        report_error(self, exc, _("Console"))

    def _append(self, offset: int, data: bytes, live: bool) -> None:
        self._reading = False
        if self._closed or offset != self.read_offset:
            return
        self.read_offset += len(data)
        text = self.text.feed(data)
        if text:
            self.log_widget.write(text)
        if data or live != self.live:
            self.live = live
            self._show_state()
        if len(data) == READ_LIMIT:  # more is waiting: read on at once
            self.poll()

    def _show_state(self) -> None:
        if self.live is None:
            state = _("reading the console…")
        elif self.live:
            state = _("running: what the guest prints appears here")
        else:
            state = _("not running: this is what the guest printed")
        line = _("{name} · {state} · {size} bytes").format(name=self.vm["name"], state=state, size=self.read_offset)
        self.query_one("#console-state", Static).update(plain(line))

    def console_text(self) -> str:
        """What the log widget holds, as lines joined by \\n (for tests and copy)."""
        return "\n".join(self.log_widget.lines)

    def action_follow(self) -> None:
        self.log_widget.auto_scroll = True
        self.log_widget.scroll_end(animate=False)

    def action_back(self) -> None:
        self.dismiss(None)
