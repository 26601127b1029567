"""What `account key add` (CLI, door, TUI) says about text that is not one OpenSSH public key line: a
private key is named as such and never echoed, damaged key data is said in words, a real key is read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.accounts.keys import parse_public_key
from core.catalog.errors import Invalid


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", str(key)], check=True)
    return key


def test_a_private_key_is_named_and_not_echoed(keypair: Path) -> None:
    private = keypair.read_text()
    with pytest.raises(Invalid) as caught:
        parse_public_key(private)
    message = str(caught.value)
    assert message == "this is a private key, which stays on your computer: give its public key (the .pub file)"
    assert not any(line in message for line in private.splitlines()[1:-1])
    with pytest.raises(Invalid, match="this is a private key"):
        parse_public_key("-----BEGIN OPENSSH PRIVATE KEY-----")  # the first line alone, as a one-line paste


def test_damaged_key_data_is_said_in_words() -> None:
    with pytest.raises(Invalid) as caught:
        parse_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI=== me@laptop")
    assert str(caught.value) == "not a valid OpenSSH public key: its key data is not base64"


def test_the_public_key_is_read_with_its_fingerprint(keypair: Path) -> None:
    line, fingerprint, comment = parse_public_key(keypair.with_suffix(".pub").read_text())
    shown = subprocess.run(["ssh-keygen", "-l", "-f", str(keypair.with_suffix(".pub"))], capture_output=True, text=True)
    assert fingerprint in shown.stdout and comment == "me@laptop" and line.startswith("ssh-ed25519 ")
