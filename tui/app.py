"""The imagehub Textual app: wires the screens, the embedded job worker and logging.

Business rules live in `core`; screens call it from thread workers and turn its errors into
notifications. Logs go to a file (set up by `cli.tui`), never to the screen; an unexpected
exception is logged and shown as one line, never as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Tenant
from core.rules.access import Actor
from tui.i18n import N_, _, set_language, tr
from tui.screens.base import report_error, translate_bindings
from tui.widgets.format import plain, visible

log = logging.getLogger("imagehub.tui")

GATEWAY_CHECK_SECONDS = 3.0  # how often the TUI checks that the gateway it relies on still runs
BANNER_SECONDS = 365 * 86400.0  # a notification that stays

WORKER_POLL_SECONDS = 2.0  # the embedded worker's look for jobs queued elsewhere (the CLI, another TUI)

# Screen actions offered in the command palette (binding id prefix -> screen class name).
PALETTE_SKIP = {"images.next", "images.previous", "images.status", "bin.next", "bin.previous"}


# Textual's own palette commands, translated when the palette lists them.
TEXTUAL_COMMANDS = (
    N_("Bell"),
    N_("Ring the bell"),
    N_("Theme"),
    N_("Change the current theme"),
    N_("Quit"),
    N_("Quit the application as soon as possible"),
    N_("Keys"),
    N_("Hide the keys and widget help panel"),
    N_("Show help for the focused widget and a summary of available keys"),
    N_("Minimize"),
    N_("Minimize the widget and restore to normal size"),
    N_("Maximize"),
    N_("Maximize the focused widget"),
    N_("Screenshot"),
    N_("Save an SVG 'screenshot' of the current screen"),
    N_("palette"),
    N_("Open the command palette"),
)


class ImagehubApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "imagehub"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("question_mark", "keys", N_("Keys"), id="app.keys", tooltip=N_("Show the keys of this screen")),
        Binding("h,f1", "guide", N_("Guide"), id="app.guide", tooltip=N_("The custom image guide"), key_display="h"),
        Binding("q", "quit", N_("Quit"), id="app.quit", tooltip=N_("Leave imagehub")),
    ]

    def __init__(
        self,
        catalog: Catalog,
        actor: Actor,
        *,
        language: str | None = None,
        embedded_worker: bool = False,
        log_path: Path | None = None,
        refresh_seconds: float = 2.0,
        strict: bool = False,
        watch_gateway: bool = False,
        gateway_check_seconds: float = GATEWAY_CHECK_SECONDS,
    ) -> None:
        self.ui_language = set_language(catalog.settings.tui.language if language is None else language)
        super().__init__()
        translate_bindings(self)
        self.catalog = catalog
        self.actor = actor
        self.actor_tenant = self._tenant_name(actor)
        self.log_path = log_path
        self.refresh_seconds = refresh_seconds
        self.strict = strict
        self.embedded_worker = embedded_worker
        self.watch_gateway = watch_gateway
        self.gateway_check_seconds = gateway_check_seconds
        self.gateway_problem: str | None = None  # set once the gateway this app relied on is gone
        self.worker: Any = None
        self._worker_thread: threading.Thread | None = None
        self._prefetched: dict[Any, Future[Any]] = {}
        self._prefetch_first_page()

    def _prefetch_first_page(self) -> None:
        """Query the list's first page while Textual starts (the list takes it when it mounts)."""
        from core.images.images import ImageQuery, list_images
        from tui.widgets.image_list import PAGE

        query = ImageQuery(limit=PAGE)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagehub-prefetch")

        def timed() -> Any:
            started = time.perf_counter()
            try:
                return list_images(self.catalog, self.actor, query)
            finally:
                self.prefetch_ms = (time.perf_counter() - started) * 1000

        self.prefetch_ms = 0.0
        self._prefetched[query] = executor.submit(timed)
        executor.shutdown(wait=False)

    def take_prefetched(self, query: Any) -> Future[Any] | None:
        """The prefetched result of `query` (once), or None."""
        return self._prefetched.pop(query, None)

    def _tenant_name(self, actor: Actor) -> str | None:
        if actor.tenant_id is None:
            return None
        with db.read_session(self.catalog.engine) as session:
            tenant = session.get(Tenant, actor.tenant_id)
            return tenant.name if tenant else None

    def on_mount(self) -> None:
        from tui.screens.images import ImagesScreen

        self.push_screen(ImagesScreen(refresh_seconds=self.refresh_seconds))
        if self.embedded_worker:
            self.start_worker()
        if self.watch_gateway:
            self._gateway_timer = self.set_interval(self.gateway_check_seconds, self._check_gateway)

    # ---- the gateway this app relies on ------------------------------------------------------

    def _check_gateway(self) -> None:
        self.run_worker(self._gateway_status, thread=True, group="gateway-watch", exclusive=True, exit_on_error=False)

    def _gateway_status(self) -> None:
        from core.links.gateway_status import gateway_status

        status = gateway_status(self.catalog.settings)
        if not status.running:
            self.call_from_thread(self._gateway_gone, tr(status.reason or ""))

    def _gateway_gone(self, reason: str) -> None:
        """Say so on every screen, for as long as the app runs, and run the jobs here instead."""
        if self.gateway_problem is not None:
            return
        self.gateway_problem = reason
        self._gateway_timer.stop()
        log.warning("gateway not running: %s; starting the embedded worker", reason)
        banner = _("gateway not running: {reason}.").format(reason=reason)
        banner += " " + _("Jobs now run in this TUI. Links name ports nobody answers until imagehub serve runs again.")
        self.notify(banner, severity="error", timeout=BANNER_SECONDS)
        self.start_worker()

    def links_refused(self) -> bool:
        """True (and says why) when links must not be made: the gateway this app relied on is gone, so
        their addresses would name ports nobody answers."""
        if self.gateway_problem is None:
            return False
        message = _("No links while the gateway is not running: {reason}.").format(reason=self.gateway_problem)
        self.notify(message, severity="error")
        return True

    # ---- the embedded worker ---------------------------------------------------------------

    def start_worker(self) -> None:
        """Run core's job worker in a thread, so imports started here progress without `imagehub serve`."""
        from core.jobs.worker import Worker

        if self._worker_thread is not None:
            return
        settings = self.catalog.settings
        # Jobs started here wake it at once; polling for others' jobs every 2 s keeps an idle TUI light.
        self.worker = Worker(
            self.catalog,
            label="tui",
            max_running_total=settings.import_.max_concurrent,
            poll_seconds=WORKER_POLL_SECONDS,
        )
        self._worker_thread = threading.Thread(target=self._run_worker, name="imagehub-worker", daemon=True)
        self._worker_thread.start()
        log.info("embedded worker %s started", self.worker.owner)

    def _run_worker(self) -> None:
        try:
            self.worker.run_forever()
        except Exception:
            log.exception("embedded worker stopped")

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def stop_worker(self, timeout: float = 30.0) -> None:
        """Stop claiming; running jobs give their lease back so that the next worker resumes them."""
        if self.worker is None or self._worker_thread is None:
            return
        self.worker.stop.set()
        self.worker.wake()
        self._worker_thread.join(timeout)
        log.info("embedded worker stopped")
        self._worker_thread = None

    async def action_quit(self) -> None:
        if self.worker is not None and self.worker.running:
            self.notify(_("Pausing running jobs; the next worker resumes them…"), timeout=10)
            await asyncio.sleep(0)  # let the notification show before waiting
        await asyncio.to_thread(self.stop_worker, 10.0)
        self.exit()

    def on_unmount(self) -> None:
        self.stop_worker()

    # ---- app-wide actions -------------------------------------------------------------------

    def action_command_palette(self) -> None:
        """Textual's palette, with its search prompt in the user's language."""
        from textual.command import CommandPalette

        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(CommandPalette(placeholder=_("Search for commands…"), id="--command-palette"))

    def action_keys(self) -> None:
        from tui.screens.help import HelpScreen

        if type(self.screen).__name__ == "HelpScreen":
            return
        self.push_screen(HelpScreen(self.screen))

    def action_guide(self) -> None:
        from tui.screens.guide import GuideScreen

        if isinstance(self.screen, GuideScreen):
            return
        self.push_screen(GuideScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every action of the current screen and of the app, translated, then Textual's own."""
        seen: set[str] = set()
        for node in (screen, self):
            for _key, binding in node._bindings:
                if not binding.id or binding.id in PALETTE_SKIP or binding.action in seen or not binding.description:
                    continue
                seen.add(binding.action)
                yield SystemCommand(
                    binding.description,
                    binding.tooltip or binding.description,
                    partial(node.run_action, binding.action),
                )
        for command in super().get_system_commands(screen):
            yield command._replace(title=_(command.title), help=_(command.help))

    # ---- notifications ----------------------------------------------------------------------

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Textual's notification with markup off unless asked for: messages carry user text (image
        names, reasons) that must show as typed (docs/security.md L7), and never a terminal control code."""
        if not markup:
            message = visible(message)
        super().notify(message, title=visible(title), severity=severity, timeout=timeout, markup=markup)

    def action_help_quit(self) -> None:
        """Textual's ctrl+c hint, whose markup is its own."""
        for key, active in self.active_bindings.items():
            if active.binding.action in ("quit", "app.quit"):
                self.notify(f"Press [b]{key}[/b] to quit the app", title="Do you want to quit?", markup=True)
                return

    # ---- errors -----------------------------------------------------------------------------

    def report(self, error: BaseException, doing: str = "") -> None:
        report_error(self, error, doing)

    def _handle_exception(self, error: Exception) -> None:
        """No traceback on the screen: log it; in a terminal, leave with one line naming the log."""
        log.error("unexpected error", exc_info=error)
        if self.strict or self.is_headless:
            super()._handle_exception(error)
            return
        self._return_code = 1
        where = f" (details in {self.log_path})" if self.log_path else ""
        text = _("imagehub: internal error: {error}").format(error=error) + where
        self.exit(return_code=1, message=plain(text))
