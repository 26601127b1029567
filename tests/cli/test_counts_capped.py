"""A count or a time a client sends is capped before it reaches SQL or a wait: a number too large for
SQLite's integers, inf or nan gets one line and exit 2, never a traceback (the SSH door passes stderr on)."""

from __future__ import annotations

from typing import Any

import pytest

HUGE = "9" * 20  # 20 digits: past SQLite's 2**63
SECONDS = "is out of range; choose 0 to 3600 seconds"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("image", "list", "--limit", HUGE), f"argument --limit: {HUGE} is out of range; choose 1 to 1000000000000"),
        (("image", "list", "--offset", HUGE), f"argument --offset: {HUGE} is out of range; choose 0 to 1000000000000"),
        (("image", "list", "--limit", "9" * 30), f"argument --limit: not a whole number: '{'9' * 30}'"),
        (("audit", "list", "--limit", HUGE), f"argument --limit: {HUGE} is out of range; choose 1 to 1000000000000"),
        (("vm", "stop", "vm-x", "--timeout", "inf"), f"argument --timeout: inf {SECONDS}"),
        (("vm", "stop", "vm-x", "--timeout", "nan"), f"argument --timeout: nan {SECONDS}"),
    ],
)
def test_a_count_past_the_cap_is_one_line_and_exit_2(cli: Any, args: tuple[str, ...], message: str) -> None:
    assert cli("init").code == 0
    done = cli(*args)
    assert (done.code, done.err, done.out) == (2, f"imagehub: error: {message}\n", "")


def test_the_largest_offset_allowed_lists_nothing(cli: Any) -> None:
    assert cli("init").code == 0
    done = cli("image", "list", "--offset", "1000000000000", "--limit", "1000000000000", "--json")
    assert (done.code, done.err, done.json()) == (0, "", [])
