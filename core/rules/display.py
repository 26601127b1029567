"""What user text may send to a terminal: no control characters (ESC sequences, line breaks, bidi
overrides) and, in one-line errors, no unbounded length; and the words and sizes people see (statuses,
sizes, the OS column). Used by the TUI and the command line, so that both say the same."""

from __future__ import annotations

import re

from core.catalog.errors import N_
from core.catalog.vocabulary import Status

# C0 and C1 controls (ESC, CSI...), DEL and the bidirectional overrides: never sent to a terminal.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# A one-line error echoes what it was given (an ID, a name): at most this many characters of it.
LINE_LIMIT = 1000


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object, *, newlines: bool = False) -> str:
    """Control characters as visible escapes (ESC shows as `\\x1b`; line breaks too unless `newlines`),
    everything else left as it is."""
    text = str(value)
    if newlines:
        return "\n".join(UNSAFE.sub(_escaped, line) for line in text.split("\n"))
    return UNSAFE.sub(_escaped, text)


def one_line(value: object, limit: int = LINE_LIMIT) -> str:
    """`value` as one line for an error message: controls escaped, cut to `limit` characters with `…`."""
    text = visible(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the words and sizes people see (the CLI's text output and the TUI alike) ----------------------

# An image's status in people's words; JSON and the catalog keep the contract's names (`import_failed`).
STATUS_WORDS: dict[str, str] = {
    Status.CREATING: N_("creating"),
    Status.IMPORTING: N_("importing"),
    Status.IMPORT_FAILED: N_("import failed"),
    Status.AVAILABLE: N_("available"),
    Status.DELETING: N_("deleting"),
    Status.DELETED: N_("deleted"),
}

GIB = 1024**3
_UNITS = ("B", "KB", "MB", "GB", "TB")


def status_word(status: str) -> str:
    """An image status as people read it (English; the TUI translates it): `import failed`."""
    return STATUS_WORDS.get(status, status)


def human_size(size: int | None) -> str:
    """A byte count for people: `512 B`, `1.5 MB`, `42 MB`, `20 GB` (1024-based: a GB is what
    `--size-gb` and the workbook's Size (GB) count); `-` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{size} B"
            number = f"{value:.1f}".removesuffix(".0") if value < 10 else f"{value:.0f}"
            return f"{number} {unit}"
        value /= 1024
    return f"{size} B"


def size_in_gb(size: int | None) -> str:
    """A disk's virtual size as the Size (GB) columns show it: `20`, `2.5`, `<0.1`; `-` when unknown."""
    if size is None:
        return "-"
    value = size / GIB
    if value >= 10:
        return f"{value:.0f}"
    if value >= 0.1:
        return f"{value:.1f}".removesuffix(".0")
    return "<0.1" if size else "0"


def os_words(platform: str, os_version: str) -> str:
    """The OS column: platform and version (`CentOS 7.9`); the architecture has a column of its own."""
    return f"{platform} {os_version}"
