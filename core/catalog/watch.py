"""Whether the catalog may have changed since the last look, for views that refresh on a timer.

On SQLite, `PRAGMA data_version` on a connection of its own: it changes when any other connection
(another process, or this one's SQLAlchemy pool) commits, and reading it touches no table. A view
then queries only when something was committed, so an idle screen costs no query. On any other
database (PostgreSQL) there is no such number: every look answers "maybe changed".
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from core.catalog.reader import SQLITE_PREFIX


class CatalogWatch:
    """`changed()` is True on the first call, then only when the catalog may have changed since the
    previous call. Safe to call from any thread."""

    def __init__(self, database_url: str) -> None:
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None
        self._lock = threading.Lock()
        if database_url.startswith(SQLITE_PREFIX):
            path = Path(database_url[len(SQLITE_PREFIX) :])
            try:
                self._connection = sqlite3.connect(
                    f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
                )
            except (sqlite3.Error, ValueError):
                self._connection = None

    @property
    def can_tell(self) -> bool:
        """False where every look answers "maybe changed" (not SQLite, or the file could not be opened)."""
        return self._connection is not None

    def changed(self) -> bool:
        if self._connection is None:
            return True
        with self._lock:
            try:
                version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                return True
            changed = version != self._version
            self._version = version
            return changed

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
