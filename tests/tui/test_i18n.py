"""The message catalog: every marked string of the TUI, every message template of core and every word
of core's enums (statuses, job states, phases) has a Chinese translation, core writes its templates
as literals, and the .mo is Babel's compilation of the .po."""

from __future__ import annotations

import ast
import functools
import gettext
import os
import shutil
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from core.catalog.models import JobState, Phase, Status
from core.catalog.vocabulary import LinkState
from tui import i18n
from tui.widgets import format

TUI = Path(i18n.__file__).resolve().parent
PO = i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "imagehub.po"


def has_cjk(text: str) -> bool:
    return any("\u4e00" <= char <= "\u9fff" for char in text)


def po_translations() -> dict[str, str]:
    """msgid -> msgstr of every translated entry of the shipped .po, as Babel reads it."""
    with PO.open("rb") as handle:
        return {message.id: message.string for message in read_po(handle) if message.id and message.string}


@functools.cache
def compiled(po: Path = PO) -> gettext.GNUTranslations:
    """The .po compiled by `i18n.compile_po` (Babel) into a fresh .mo, loaded as gettext loads it."""
    import tempfile

    mo = Path(tempfile.mkdtemp(prefix="imagehub-mo-")) / "imagehub.mo"
    i18n.compile_po(po, mo)
    with mo.open("rb") as handle:
        translations = gettext.GNUTranslations(handle)
    shutil.rmtree(mo.parent)
    return translations


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
    ("core/catalog/stored_errors.py", "template"),  # a stored reason's template, read back
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
    translated = po_translations()
    missing = sorted(marked_strings() - set(translated))
    assert missing == []


def test_core_messages_are_literal_templates_with_a_chinese_translation() -> None:
    templates, not_literal = core_templates()
    assert len(templates) > 200
    assert not_literal == [], "core messages must be literal templates with keyword parameters, not f-strings"
    translated = po_translations()
    assert sorted(templates - set(translated)) == []


def test_placeholders_survive_translation() -> None:
    import string

    translated = po_translations()
    for msgid, msgstr in translated.items():
        if not msgid:
            continue
        names = {f[1] for f in string.Formatter().parse(msgid) if f[1]}
        assert names == {f[1] for f in string.Formatter().parse(msgstr) if f[1]}, msgid


def test_shipped_mo_is_babels_compilation_of_the_po(tmp_path: Path) -> None:
    mo = tmp_path / "imagehub.mo"
    i18n.compile_po(PO, mo)
    assert PO.with_suffix(".mo").read_bytes() == mo.read_bytes(), "rebuild it: python -m tui.i18n"


def test_the_babel_catalog_translates_what_the_po_says() -> None:
    translations = compiled()
    # a handful checked by hand, as the hand-written compiler gave them
    assert translations.gettext("Keys") == "按键"
    assert translations.gettext("import failed") == "导入失败"
    assert translations.gettext("imagehub: internal error: {error}") == "imagehub：内部错误：{error}"
    assert translations.gettext("HTTP {status} from source") == "导入源返回 HTTP {status}"
    # and every entry of the .po, the same through the .mo; what has no entry stays English
    assert {msgid: translations.gettext(msgid) for msgid in po_translations()} == po_translations()
    assert translations.gettext("a text nobody translated") == "a text nobody translated"


def test_set_language_compiles_a_missing_or_older_mo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "zh_CN" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po = folder / "imagehub.po"
    shutil.copy(PO, po)
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    try:
        assert i18n.set_language("zh_CN") == "zh_CN"
        assert po.with_suffix(".mo").is_file() and i18n._("Keys") == "按键"
        # a .po edited after the .mo was built is compiled again
        po.write_text(po.read_text(encoding="utf-8").replace('msgstr "按键"', 'msgstr "键位"'), encoding="utf-8")
        mo_time = po.with_suffix(".mo").stat().st_mtime_ns
        os.utime(po, ns=(mo_time + 1_000_000_000, mo_time + 1_000_000_000))
        i18n.set_language("zh_CN")
        assert i18n._("Keys") == "键位"
    finally:
        i18n.set_language("en")


ENUM_WORDS = sorted({member.value for enum in (Status, JobState, Phase) for member in enum})


@pytest.mark.parametrize("word", ENUM_WORDS)
def test_every_status_job_state_and_phase_has_a_chinese_entry(word: str) -> None:
    """Core's own words (a status, a job state, a phase) as msgids: what `Msg(status)` and stored
    progress carry."""
    assert has_cjk(compiled().gettext(word)), f"{word!r} has no zh_CN entry"


def test_the_tui_labels_every_member_of_core_s_enums_in_chinese() -> None:
    assert set(format.STATUS_LABELS) == set(Status) and set(format.STATUS_STYLES) == set(Status)
    assert set(format.JOB_STATE_LABELS) == set(JobState)
    assert set(format.PHASE_LABELS) == set(Phase)
    labels = [*format.STATUS_LABELS.values(), *format.JOB_STATE_LABELS.values(), *format.PHASE_LABELS.values()]
    assert [label for label in labels if not has_cjk(compiled().gettext(label))] == []


def test_the_link_screen_says_every_link_state_in_chinese() -> None:
    """Each state `link_state` can give (the gateway's own reasons) has its sentence, translated."""
    assert set(format.LINK_STATE_LABELS) == set(LinkState)
    missing = [state for state, label in format.LINK_STATE_LABELS.items() if not has_cjk(compiled().gettext(label))]
    assert missing == []
    i18n.set_language("zh_CN")
    try:
        assert format.link_state_label(LinkState.ACCESS_LOST) == "生成者已无权查看该镜像：下载地址不再可用"
    finally:
        i18n.set_language("en")
    assert format.link_state_label("access_lost").startswith("its maker can no longer see the image")


def test_phases_and_statuses_show_in_chinese() -> None:
    i18n.set_language("zh_CN")
    try:
        assert format.phase_label(Phase.DOWNLOADING) == "下载中"
        assert format.phase_label("checksum") == "计算校验和"
        assert format.status_label(Status.IMPORT_FAILED) == "导入失败"
        line = format.progress_line({"phase": "verifying", "bytes_done": 1, "bytes_total": 2})
        assert line.startswith("校验中 · 50%")
        assert format.progress_line({"phase": None, "state": "queued"}) == "排队中"
        assert format.phase_label("a phase from a newer core") == "a phase from a newer core"
    finally:
        i18n.set_language("en")
    assert format.phase_label(Phase.DOWNLOADING) == "downloading"
    assert format.status_label(Status.IMPORT_FAILED) == "import failed"


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
