"""Credentials given in a source URL (`ftp://user:password@host/...`, or a signed query string such as
`?X-Amz-Signature=...`), kept encrypted in the job.

The catalog keeps only the redacted URL in clear (image.source, job params); the real URL is
encrypted with Fernet under a key derived (HKDF-SHA256) from the catalog's secret, and decrypted
only by the worker, in memory, to log in. Never put on a command line, in a log or an error.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.catalog.errors import Failed

_INFO = b"imagehub import source credentials v1"


def _fernet(catalog_secret: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(catalog_secret)
    return Fernet(base64.urlsafe_b64encode(key))


def seal(catalog_secret: bytes, url: str) -> str:
    return _fernet(catalog_secret).encrypt(url.encode("utf-8")).decode("ascii")


def unseal(catalog_secret: bytes, token: str) -> str:
    try:
        return _fernet(catalog_secret).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError) as exc:
        raise Failed("the source credentials cannot be decrypted (was the catalog secret changed?)") from exc
