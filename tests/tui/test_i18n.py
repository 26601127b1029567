"""The message catalog: every marked string of the TUI and every message template of core has a
Chinese translation, core writes its templates as literals, and the .mo is current."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tui import i18n

TUI = Path(i18n.__file__).resolve().parent
PO = i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "imagehub.po"


def marked_strings() -> set[str]:
    found: set[str] = set()
    for path in TUI.rglob("*.py"):
        if path.name.startswith("cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("_", "N_")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


CORE = TUI.parent / "core"
# What builds a user-facing message in core: the error types and `Msg`/`N_` of core.catalog.errors.
MESSAGE_MAKERS = {
    "ImagehubError",
    "Failed",
    "Invalid",
    "NotFound",
    "Forbidden",
    "Conflict",
    "Refused",
    "PolicyRefused",
    "QmpError",
    "Msg",
    "N_",
}
# Calls whose first argument is a word chosen at run time (a status) or a template from a table.
DYNAMIC = {
    ("core/catalog/errors.py", "template"),
    ("core/rules/lifecycle.py", "value"),
    ("core/rules/lifecycle.py", "status"),
}


def core_templates() -> tuple[set[str], list[str]]:
    """Every literal template core raises or marks, and every call that passes something else."""
    found: set[str] = set()
    others: list[str] = []
    for path in sorted(CORE.rglob("*.py")):
        where = str(path.relative_to(CORE.parent))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if called not in MESSAGE_MAKERS:
                continue
            if where == "core/links/links.py" and called == "Refused":
                continue  # a refusal code for logs and metrics; the user sees one fixed message
            first = node.args[0]
            chosen_at_run_time = (isinstance(first, ast.Name) and (where, first.id) in DYNAMIC) or (
                isinstance(first, ast.Subscript) and where == "core/rules/lifecycle.py"
            )
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
            elif not chosen_at_run_time:
                others.append(f"{where}:{node.lineno}")
    return found, others


def test_every_marked_string_has_a_chinese_translation() -> None:
    translated = i18n.parse_po(PO.read_text(encoding="utf-8"))
    missing = sorted(marked_strings() - set(translated))
    assert missing == []


def test_core_messages_are_literal_templates_with_a_chinese_translation() -> None:
    templates, not_literal = core_templates()
    assert len(templates) > 200
    assert not_literal == [], "core messages must be literal templates with keyword parameters, not f-strings"
    translated = i18n.parse_po(PO.read_text(encoding="utf-8"))
    assert sorted(templates - set(translated)) == []


def test_placeholders_survive_translation() -> None:
    import string

    translated = i18n.parse_po(PO.read_text(encoding="utf-8"))
    for msgid, msgstr in translated.items():
        if not msgid:
            continue
        names = {f[1] for f in string.Formatter().parse(msgid) if f[1]}
        assert names == {f[1] for f in string.Formatter().parse(msgstr) if f[1]}, msgid


def test_shipped_mo_matches_the_po() -> None:
    mo = PO.with_suffix(".mo")
    assert mo.read_bytes() == i18n.mo_bytes(i18n.parse_po(PO.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [
        ("zh_CN", {}, "zh_CN"),
        ("en", {"LANG": "zh_CN.UTF-8"}, "en"),
        ("", {"LANG": "zh_CN.UTF-8"}, "zh_CN"),
        ("", {"LANG": "en_US.UTF-8"}, "en"),
        ("", {"LANG": "C"}, "en"),
    ],
)
def test_language_from_config_else_lang(
    configured: str, env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert i18n.detect_language(configured) == expected


def test_cjk_cells_keep_their_width() -> None:
    from rich.cells import cell_len

    from tui.widgets.format import fit

    assert cell_len(fit("数据库镜像-very-long-name", 12)) == 12
    assert cell_len(fit("数据库", 10)) == 10
