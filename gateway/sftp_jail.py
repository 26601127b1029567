"""What every one-file SFTP jail (a download link's, an upload link's) answers alike: no links to read,
no file system statistics, nothing to do on exit."""

from __future__ import annotations

from typing import Any

from asyncssh import SFTPNoSuchFile, SFTPOpUnsupported


class JailBasics:
    """Mixed in before asyncssh.SFTPServer."""

    def readlink(self, path: bytes) -> bytes:
        raise SFTPNoSuchFile("Not a symbolic link")

    def statvfs(self, path: bytes) -> Any:
        raise SFTPOpUnsupported("statvfs not supported")

    def fstatvfs(self, file_obj: Any) -> Any:
        raise SFTPOpUnsupported("statvfs not supported")

    def exit(self) -> None:
        return None
