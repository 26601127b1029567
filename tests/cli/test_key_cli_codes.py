"""`imagehub account key list|remove NAME`: another tenant's account answers exactly as a name that
does not exist (exit 3, same message), so the command is no oracle for account names."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import People


@pytest.mark.parametrize("action", [("list",), ("remove", "SHA256:AAAA")])
def test_another_tenants_account_answers_3_like_a_missing_one(
    cli: Any, people: People, action: tuple[str, ...]
) -> None:
    other = cli("account", "key", action[0], "globex-owner", *action[1:], account="acme-owner")
    missing = cli("account", "key", action[0], "nobody-here", *action[1:], account="acme-owner")
    assert other.code == 3, other.err
    assert missing.code == 3, missing.err
    assert other.err.strip().endswith("account globex-owner not found")
    assert other.err.replace("globex-owner", "NAME") == missing.err.replace("nobody-here", "NAME")
    assert other.out == missing.out == ""
    mine = cli("account", "key", "list", "acme-viewer", "--json", account="acme-owner")
    assert mine.code == 0 and mine.json() == []  # the own tenant's accounts stay visible to the owner
