"""SSH public keys that let an account into the admin front door (`ssh -p PORT host` -> the TUI).

A key belongs to one account; its SHA256 fingerprint (as OpenSSH prints it) is unique. Keys are
parsed and checked with `cryptography`, never trusted as text.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from sqlmodel import col, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.clock import iso
from core.catalog.errors import Conflict, ImagehubError, Invalid, NotFound
from core.catalog.models import Account, AccountKey
from core.rules import access
from core.rules.access import Actor


def fingerprint_of_blob(blob: bytes) -> str:
    """OpenSSH's `SHA256:...` fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def parse_public_key(text: str) -> tuple[str, str, str]:
    """(normalised `type base64` line, fingerprint, comment) of one OpenSSH public key line."""
    if "PRIVATE KEY" in text:  # the file without .pub: say so, and never echo a byte of it back
        raise Invalid("this is a private key, which stays on your computer: give its public key (the .pub file)")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise Invalid("the key file must hold exactly one OpenSSH public key line")
    fields = lines[0].split(None, 2)
    if len(fields) < 2:
        raise Invalid("not an OpenSSH public key (expected 'TYPE BASE64 [COMMENT]')")
    key_type, encoded = fields[0], fields[1]
    comment = fields[2] if len(fields) > 2 else ""
    try:
        blob = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise Invalid("not a valid OpenSSH public key: its key data is not base64") from exc
    try:
        load_ssh_public_key(f"{key_type} {encoded}".encode("ascii"))
    except Exception as exc:
        raise Invalid("not a valid OpenSSH public key: {exc}", exc=exc) from exc
    return f"{key_type} {encoded}", fingerprint_of_blob(blob), comment[:256]


def _account(session: Any, actor: Actor, name: str, *, registering: bool = False) -> Account:
    """The live account `name` whose keys the actor may see or remove (itself; an owner its tenant's
    accounts; an admin all), or, `registering`, add to (itself; an admin any)."""
    account: Account | None = session.exec(
        select(Account).where(Account.name == name, col(Account.deleted_at).is_(None))
    ).first()
    if account is None:
        raise NotFound("account {name} not found", name=name)
    access.require_may_manage_keys(actor, account, registering=registering)
    return account


# A public key line is well under 1 KiB (RSA 16384 bits: about 2.8 KiB); the cap is read, never more.
MAX_KEY_BYTES = 16 * 1024


def _decode_key(data: bytes) -> str:
    if len(data) > MAX_KEY_BYTES:
        raise Invalid("key too large (max 16 KiB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("not an OpenSSH public key (expected 'TYPE BASE64 [COMMENT]')") from exc


def read_key_stream(stream: IO[bytes]) -> str:
    """A key sent on standard input (`account key add NAME -`): at most MAX_KEY_BYTES are read."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_KEY_BYTES:
        chunk = stream.read(MAX_KEY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return _decode_key(b"".join(chunks))


def read_key_file(key_file: Path) -> str:
    """A key file on this server: a regular file (never a device, FIFO or folder), read up to the cap."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the file type is checked on the open file.
        fd = os.open(key_file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise Invalid("cannot read {key_file}: {reason}", key_file=key_file, reason=exc.strerror or exc) from exc
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Invalid("{key_file} is not a regular file", key_file=key_file)
        os.set_blocking(fd, True)
        return read_key_stream(handle)


def add_key(catalog: Catalog, actor: Actor, account_name: str, key: Path | IO[bytes]) -> dict[str, Any]:
    """Register the public key read from `key` (a file on this server, or a stream such as stdin)."""
    try:
        with db.read_session(catalog.engine) as session:
            _account(session, actor, account_name, registering=True)  # may the caller? before anything is read
        text = read_key_file(key) if isinstance(key, Path) else read_key_stream(key)
        line, fingerprint, comment = parse_public_key(text)
        with db.write_session(catalog.engine) as session:
            account = _account(session, actor, account_name, registering=True)
            if session.exec(select(AccountKey).where(AccountKey.fingerprint == fingerprint)).first():
                raise Conflict("key {fingerprint} is already registered", fingerprint=fingerprint)
            assert account.id is not None
            session.add(AccountKey(account_id=account.id, fingerprint=fingerprint, public_key=line, comment=comment))
            audit.record(session, actor.name, "account.key.add", account_name, fingerprint=fingerprint)
            return {"account": account_name, "fingerprint": fingerprint, "comment": comment}
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "account.key.add", account_name, str(exc))
        raise


def list_keys(catalog: Catalog, actor: Actor, account_name: str) -> list[dict[str, Any]]:
    with db.read_session(catalog.engine) as session:
        account = _account(session, actor, account_name)
        keys = session.exec(select(AccountKey).where(AccountKey.account_id == account.id).order_by(col(AccountKey.id)))
        return [
            {
                "account": account_name,
                "fingerprint": k.fingerprint,
                "type": k.public_key.split()[0],
                "comment": k.comment,
                "created_at": iso(k.created_at),
            }
            for k in keys
        ]


def remove_key(catalog: Catalog, actor: Actor, account_name: str, fingerprint: str) -> None:
    try:
        with db.write_session(catalog.engine) as session:
            account = _account(session, actor, account_name)
            key = session.exec(
                select(AccountKey).where(AccountKey.account_id == account.id, AccountKey.fingerprint == fingerprint)
            ).first()
            if key is None:
                raise NotFound(
                    "key {fingerprint} of {account_name} not found", fingerprint=fingerprint, account_name=account_name
                )
            session.delete(key)
            audit.record(session, actor.name, "account.key.remove", account_name, fingerprint=fingerprint)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "account.key.remove", account_name, str(exc))
        raise


def account_for_key(catalog: Catalog, blob: bytes) -> str | None:
    """The account name owning this public key blob, or None (checked at every login)."""
    fingerprint = fingerprint_of_blob(blob)
    with db.read_session(catalog.engine) as session:
        row = session.exec(
            select(Account.name)
            .join(AccountKey, col(AccountKey.account_id) == col(Account.id))
            .where(AccountKey.fingerprint == fingerprint, col(Account.deleted_at).is_(None))
        ).first()
        return row
