"""A footer that shows as many of the screen's keys as its width holds, and always `?` (every key).

Textual's Footer lays every shown binding out in one row and scrolls what does not fit out of
sight. This one picks, in binding order, the keys that fit the terminal's width (their `show`
means "offer in the footer"), keeps the keys in `ALWAYS` whatever the width, and adds the command
palette's key only when room is left. It chooses again when the width changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Binding ids shown at any width: `?` lists the keys the footer has no room for; `q` leaves.
ALWAYS = ("app.keys", "app.quit")
PALETTE_WIDTH = 12  # "▏^p palette": its border, key, description and padding


def key_width(key_display: str, description: str) -> int:
    """Cells one key takes in a compact footer: key, a space, description, and a space after it."""
    return cell_len(key_display) + 1 + cell_len(description) + 1


def fitting(offered: list[tuple[Binding, str]], width: int) -> list[Binding]:
    """The bindings (with their key display) the footer shows in `width` cells: every one in
    `ALWAYS`, then the others in order while they fit; shown in their own order."""
    room = width - sum(key_width(shown, b.description) for b, shown in offered if b.id in ALWAYS)
    chosen: set[int] = set()
    full = False
    for index, (binding, shown) in enumerate(offered):
        if binding.id in ALWAYS:
            chosen.add(index)
            continue
        needed = key_width(shown, binding.description)
        full = full or needed > room
        if not full:
            room -= needed
            chosen.add(index)
    return [binding for index, (binding, _shown) in enumerate(offered) if index in chosen]


class FittingFooter(Footer):
    """Footer(compact=True) that shows the keys of the screen that fit, the rest being in `?`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("compact", True)
        super().__init__(**kwargs)
        self.fitted_width = 0
        self.shown_keys: list[str] = []  # the keys in the footer now (tests, bench)

    def _offered(self) -> Iterator[tuple[Binding, bool, str]]:
        seen: set[str] = set()
        for _key, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.description and binding.action not in seen:
                seen.add(binding.action)
                yield binding, enabled, tooltip

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        width = self.size.width or self.app.size.width
        self.fitted_width = width
        offered = list(self._offered())
        display = {id(b): self.app.get_key_display(b) for b, _enabled, _tip in offered}
        chosen = fitting([(b, display[id(b)]) for b, _enabled, _tip in offered], width - 1)
        ids = {id(b) for b in chosen}
        used = 0
        self.shown_keys = []
        for binding, enabled, tooltip in offered:
            if id(binding) not in ids:
                continue
            used += key_width(display[id(binding)], binding.description)
            self.shown_keys.append(binding.key)
            yield FooterKey(
                binding.key,
                display[id(binding)],
                binding.description,
                binding.action,
                disabled=not enabled,
                tooltip=tooltip,
            ).data_bind(compact=Footer.compact)
        if len(chosen) == len(offered) and width - used >= PALETTE_WIDTH:
            yield from self._palette_key()

    def _palette_key(self) -> Iterator[FooterKey]:
        if not (self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE):
            return
        found = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        if found is None:
            return
        _node, binding, enabled, _tooltip = found
        yield FooterKey(
            binding.key,
            self.app.get_key_display(binding),
            binding.description,
            binding.action,
            classes="-command-palette",
            disabled=not enabled,
            tooltip=binding.tooltip or binding.description,
        )

    def on_resize(self, event: events.Resize) -> None:
        if self._bindings_ready and event.size.width != self.fitted_width:
            self.call_after_refresh(self.recompose)
