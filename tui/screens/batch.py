"""Batch outcomes (delete, restore, destroy) as lines for the results dialog."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from core.images.images import BatchResult
from tui.i18n import _, tr
from tui.widgets.format import fit, visible


def result_lines(results: Sequence[BatchResult], names: dict[str, str], done: str) -> list[Text]:
    lines = []
    for result in results:
        name = fit(visible(names.get(result.id, "")), 20)
        if result.ok:
            lines.append(Text.assemble(("✓ ", "green"), f"{result.id}  {name}  ", (done, "green")))
        else:
            reason = visible(tr(result.error)) if result.error else _("failed")
            lines.append(Text.assemble(("✗ ", "red"), f"{result.id}  {name}  ", (reason, "red")))
    return lines


def summary(results: Sequence[BatchResult], action: str) -> str:
    ok = sum(1 for r in results if r.ok)
    refused = len(results) - ok
    if refused:
        return _("{action}: {ok} done, {refused} refused").format(action=action, ok=ok, refused=refused)
    return _("{action}: {ok} done").format(action=action, ok=ok)


def names_list(names: dict[str, str]) -> list[str]:
    return [f"{image_id}  {name}" for image_id, name in names.items()]
