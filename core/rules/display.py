"""What user text may send to a terminal: no control characters (ESC sequences, line breaks, bidi
overrides) and, in one-line errors, no unbounded length. Used by the TUI and the command line."""

from __future__ import annotations

import re

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
