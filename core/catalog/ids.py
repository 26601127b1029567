"""Resource IDs: a prefix and 8 lowercase base32 characters (40 random bits), never reused."""

from __future__ import annotations

import base64
import secrets

from sqlmodel import Session

from core.catalog.models import IssuedId


def random_id(prefix: str) -> str:
    return f"{prefix}-" + base64.b32encode(secrets.token_bytes(5)).decode("ascii").lower()


def issue_id(session: Session, prefix: str) -> str:
    """A fresh ID, recorded in `issued_id` so that it is never handed out again."""
    while True:
        candidate = random_id(prefix)
        if session.get(IssuedId, candidate) is None:
            session.add(IssuedId(id=candidate))
            session.flush()
            return candidate
