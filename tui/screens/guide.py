"""The custom image guide: a Markdown document shipped with the project, shown in the app."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, MarkdownViewer

from tui.i18n import N_, _, current_language
from tui.screens.base import BaseScreen
from tui.widgets.footer import FittingFooter

_HERE = Path(__file__).resolve().parent.parent


def guide_path(language: str | None = None) -> Path | None:
    """The guide in `language` if there is one, else in English (docs/ in a checkout, tui/ when installed)."""
    language = language or current_language()
    names = ([f"image-guide.{language}.md"] if language != "en" else []) + ["image-guide.md"]
    for name in names:
        for folder in (_HERE.parent / "docs", _HERE):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


class GuideScreen(BaseScreen):
    BINDINGS = [
        Binding("escape,q,h", "back", N_("Back"), id="guide.back", tooltip=N_("Back to the image list")),
        Binding("t", "toc", N_("Contents"), id="guide.toc", tooltip=N_("Show or hide the table of contents")),
    ]

    def compose(self) -> ComposeResult:
        path = guide_path()
        text = path.read_text(encoding="utf-8") if path else _("The guide is missing from this installation.")
        yield Header(show_clock=False, icon="▣")
        yield MarkdownViewer(text, show_table_of_contents=False, id="guide")
        yield FittingFooter()

    def on_mount(self) -> None:
        self.title = "imagehub"
        self.sub_title = _("Custom image guide")
        self.query_one(MarkdownViewer).document.focus()

    def action_toc(self) -> None:
        viewer = self.query_one(MarkdownViewer)
        viewer.show_table_of_contents = not viewer.show_table_of_contents

    def action_back(self) -> None:
        self.dismiss(None)
