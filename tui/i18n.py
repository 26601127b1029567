"""The TUI's message catalog: gettext domain `imagehub`, English built in, `zh_CN` shipped.

`_()` translates at call time with the language chosen by `set_language` (config `tui.language`,
else `$LANGUAGE`/`$LC_ALL`/`$LC_MESSAGES`/`$LANG`). `N_()` only marks a string for extraction;
translate it later with `_()`. `tr()` translates what comes from `core`: an error or a `Msg` (a
stored failure reason too) by its template and parameters. `compile_po` turns a .po file into a .mo
with Babel, so the catalog builds without GNU gettext.
"""

from __future__ import annotations

import contextlib
import gettext
import os
from pathlib import Path

from core.catalog.errors import Either, ImagehubError, Msg

DOMAIN = "imagehub"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("en", "zh_CN")

_translations: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"


def N_(message: str) -> str:
    return message


def _(message: str) -> str:
    return _translations.gettext(message) if message else message


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translations.ngettext(singular, plural, n)


def detect_language(configured: str = "") -> str:
    """The language to use: the configured one, else the first of the locale variables."""
    candidates = [configured] if configured else []
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        if value:
            candidates.extend(value.split(":"))
            break
    for candidate in candidates:
        code = candidate.split(".")[0].split("@")[0].replace("-", "_")
        if code.lower().startswith("zh"):
            return "zh_CN"
        if code and code not in ("C", "POSIX"):
            return "en"
    return "en"


def set_language(language: str) -> str:
    """Switch every later `_()` to `language` ("en", "zh_CN"); returns the language in force."""
    global _translations, _language
    code = detect_language(language)
    if code == "en":
        _translations = gettext.NullTranslations()
    else:
        mo = LOCALE_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.mo"
        po = mo.with_suffix(".po")
        if not mo.is_file() or (po.is_file() and po.stat().st_mtime > mo.stat().st_mtime):
            with contextlib.suppress(OSError):
                compile_po(po, mo)
        try:
            with mo.open("rb") as handle:
                _translations = gettext.GNUTranslations(handle)
        except OSError:
            _translations = gettext.NullTranslations()
            code = "en"
    _language = code
    return code


def current_language() -> str:
    return _language


# ---- what core says ---------------------------------------------------------------------------


def tr(message: object) -> str:
    """A text from core (an error, a `Msg`) in the current language, by its template and parameters.

    Core hands stored failure reasons over as `Msg` too (`core.catalog.stored_errors`); a plain text
    (a reason stored before templates were kept) is shown as it is."""
    if isinstance(message, ImagehubError):
        message = message.message
    if isinstance(message, Msg):
        return _render(message.template, {name: _param(value) for name, value in message.params.items()}, str(message))
    if isinstance(message, Either):
        return _(" or ").join(tr(word) for word in message)
    return str(message)


def _param(value: object) -> object:
    return tr(value) if isinstance(value, (Msg, Either, ImagehubError)) else value


def _render(template: str, params: dict[str, object], fallback: str) -> str:
    translated = _(template)
    if not params:
        return translated
    try:
        return translated.format(**params)
    except (KeyError, IndexError, ValueError):
        return fallback


# ---- .po -> .mo ---------------------------------------------------------------------------


def compile_po(po: Path, mo: Path) -> None:
    """Compile `po` into `mo` with Babel (written aside, then moved in place). Fuzzy and untranslated
    entries are left out, so that English shows instead."""
    from babel.messages.mofile import write_mo  # only when a catalog is (re)built: start-up stays light
    from babel.messages.pofile import read_po

    with po.open("rb") as source:
        catalog = read_po(source)
    temporary = mo.with_suffix(".mo.tmp")
    with temporary.open("wb") as target:
        write_mo(target, catalog)
    os.replace(temporary, mo)


if __name__ == "__main__":  # python -m tui.i18n: rebuild every shipped catalog
    for po_file in sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        compile_po(po_file, po_file.with_suffix(".mo"))
        print(f"compiled {po_file.with_suffix('.mo')}")
