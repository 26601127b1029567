"""The TUI's message catalog: gettext domain `imagehub`, English built in, `zh_CN` shipped.

`_()` translates at call time with the language chosen by `set_language` (config `tui.language`,
else `$LANGUAGE`/`$LC_ALL`/`$LC_MESSAGES`/`$LANG`). `N_()` only marks a string for extraction;
translate it later with `_()`. `tr()` translates what comes from `core`: an error or a `Msg` by its
template and parameters, and a stored English text (an image's failure reason) by matching it
against the catalog's templates. `compile_po` turns a .po file into a .mo (the logic of CPython's
`Tools/i18n/msgfmt.py`), so the catalog builds without GNU gettext.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import gettext
import os
import re
import string
import struct
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
    """A text from core (an error, a `Msg`, a stored English reason) in the current language."""
    if isinstance(message, ImagehubError):
        message = message.message
    if isinstance(message, Msg):
        return _render(message.template, {name: _param(value) for name, value in message.params.items()}, str(message))
    if isinstance(message, Either):
        return _(" or ").join(tr(word) for word in message)
    if isinstance(message, str):
        return _translate_text(message, 3) if _language != "en" else message
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


def _translate_text(text: str, depth: int) -> str:
    if not text:
        return text
    direct = _translations.gettext(text)
    if direct != text or depth <= 0:
        return direct
    for pattern, msgid in _text_patterns(_language):
        found = pattern.match(text)
        if found is None:
            continue
        params = {name: _translate_text(value, depth - 1) for name, value in found.groupdict().items()}
        pieces = []
        for literal, field, _spec, _conversion in string.Formatter().parse(_(msgid)):
            pieces.append(literal)
            if field is not None:
                if field not in params:
                    return text
                pieces.append(params[field])
        return "".join(pieces)
    return text


@functools.cache
def _text_patterns(language: str) -> list[tuple[re.Pattern[str], str]]:
    """Every translated template with placeholders as a pattern, the most literal text first."""
    po = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    try:
        msgids = list(parse_po(po.read_text(encoding="utf-8")))
    except OSError:
        return []
    patterns: list[tuple[int, re.Pattern[str], str]] = []
    for msgid in msgids:
        try:
            parsed = list(string.Formatter().parse(msgid))
        except ValueError:
            continue
        fields = [field for _literal, field, _spec, _conversion in parsed if field]
        literal = "".join(piece for piece, *_rest in parsed)
        if not fields or len(literal) < 4 or not all(field.isidentifier() for field in fields):
            continue
        regex, seen = [], set()
        for piece, field, _spec, _conversion in parsed:
            regex.append(re.escape(piece))
            if field:
                regex.append(f"(?P={field})" if field in seen else f"(?P<{field}>.+?)")
                seen.add(field)
        patterns.append((len(literal), re.compile("".join(regex) + r"\Z", re.DOTALL), msgid))
    patterns.sort(key=lambda item: -item[0])
    return [(pattern, msgid) for _length, pattern, msgid in patterns]


# ---- .po -> .mo ---------------------------------------------------------------------------


def parse_po(text: str) -> dict[str, str]:
    """msgid -> msgstr of a .po file (no plural forms, no contexts: the TUI uses neither).

    Fuzzy and untranslated entries are left out, so that English shows instead.
    """
    messages: dict[str, str] = {}
    entry: dict[str, list[str] | bool | None] = {"id": None, "str": None, "fuzzy": False}
    section = ""

    def flush() -> None:
        ids, strs = entry["id"], entry["str"]
        if isinstance(ids, list) and isinstance(strs, list):
            key, value = "".join(ids), "".join(strs)
            if value and not (entry["fuzzy"] and key):
                messages[key] = value
        entry.update(id=None, str=None, fuzzy=False)

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#,") or line.startswith("msgid "):
            if entry["str"] is not None:
                flush()
            if line.startswith("#,"):
                entry["fuzzy"] = "fuzzy" in line
                continue
            entry["id"], section = [ast.literal_eval(line[6:])], "id"
        elif not line or line.startswith("#"):
            continue
        elif line.startswith("msgstr "):
            entry["str"], section = [ast.literal_eval(line[7:])], "str"
        elif line.startswith('"'):
            target = entry["id"] if section == "id" else entry["str"]
            if isinstance(target, list):
                target.append(ast.literal_eval(line))
    if entry["str"] is not None:
        flush()
    return messages


def mo_bytes(messages: dict[str, str]) -> bytes:
    keys = sorted(messages)
    ids = b""
    strs = b""
    offsets: list[tuple[int, int, int, int]] = []
    for key in keys:
        kb, vb = key.encode("utf-8"), messages[key].encode("utf-8")
        offsets.append((len(ids), len(kb), len(strs), len(vb)))
        ids += kb + b"\0"
        strs += vb + b"\0"
    count = len(keys)
    keystart = 7 * 4 + 16 * count
    valuestart = keystart + len(ids)
    koffsets: list[int] = []
    voffsets: list[int] = []
    for o1, l1, o2, l2 in offsets:
        koffsets += [l1, o1 + keystart]
        voffsets += [l2, o2 + valuestart]
    header = struct.pack("Iiiiiii", 0x950412DE, 0, count, 7 * 4, 7 * 4 + count * 8, 0, 0)
    return (
        header + struct.pack(f"{len(koffsets)}i", *koffsets) + struct.pack(f"{len(voffsets)}i", *voffsets) + ids + strs
    )


def compile_po(po: Path, mo: Path) -> None:
    data = mo_bytes(parse_po(po.read_text(encoding="utf-8")))
    temporary = mo.with_suffix(".mo.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, mo)


if __name__ == "__main__":  # python -m tui.i18n: rebuild every shipped catalog
    for po_file in sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        compile_po(po_file, po_file.with_suffix(".mo"))
        print(f"compiled {po_file.with_suffix('.mo')}")
