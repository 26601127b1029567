"""Which server files may be imported as a "local file": only those inside the import folders.

A local-file import reads a file as the service's user, and the image can then be downloaded: without
this rule anyone allowed to import could read the catalog, the signing secret or another tenant's
image. The path is resolved (symlinks followed) before the check, at submission and again right
before the worker opens it; the answer does not say whether a file outside the folders exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.catalog.errors import Invalid
from core.catalog.settings import Settings

PROTECTED_FOLDERS = ("images", "staging", "exports", "workbooks", "vms", "logs")


def import_roots(settings: Settings) -> list[Path]:
    roots = settings.import_.local_roots or [settings.tui.import_root]
    return [Path(os.path.realpath(root)) for root in roots]


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_local_file(settings: Settings, given: str | os.PathLike[str], *, internal: bool = False) -> Path:
    """The real path of an importable regular file, or Invalid with one line.

    `internal`: a file imagehub made itself in staging (the demo data); never reachable from a face.
    """
    path = Path(os.path.realpath(os.path.expanduser(os.fspath(given))))
    roots = import_roots(settings)
    data_dir = Path(os.path.realpath(settings.data_dir))
    protected = path.parent == data_dir or any(_within(path, data_dir / name) for name in PROTECTED_FOLDERS)
    if internal:
        allowed = _within(path, data_dir / "staging")
    else:
        allowed = not protected and any(_within(path, root) for root in roots)
    if not allowed:
        folders = ", ".join(str(root) for root in roots)
        raise Invalid(
            "file {given} is not in an import folder ({folders}); copy it there first", given=given, folders=folders
        )
    if not path.is_file():
        raise Invalid("file {given} does not exist or is not a regular file", given=given)
    if path.stat().st_nlink > 1:  # a hard link may name a file of the store under an import folder
        raise Invalid("file {given} has other hard links; import a copy of it", given=given)
    if not os.access(path, os.R_OK):
        raise Invalid("file {given} cannot be read", given=given)
    return path
