"""The image store on disk: where each image, staging area and export cache lives.

Every publish is an atomic rename within `data_dir`, so a partial file is never visible under its
final name. No `.gz`/`.br` sibling may ever sit beside a stored file (aiohttp would serve it).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# `imagehub serve` writes its PID here, in data_dir: while it runs, its worker runs the jobs.
SERVE_PID_FILE = "serve.pid"


@dataclass(frozen=True)
class Store:
    data_dir: Path

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def vms_dir(self) -> Path:
        return self.data_dir / "vms"

    def ensure(self) -> None:
        for folder in (self.data_dir, self.images_dir, self.staging_dir, self.exports_dir, self.vms_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def image_path(self, image_id: str, disk_format: str) -> Path:
        return self.images_dir / f"{image_id}.{disk_format}"

    def export_path(self, image_id: str, disk_format: str) -> Path:
        return self.exports_dir / f"{image_id}.{disk_format}"

    def staging_path(self, name: str) -> Path:
        return self.staging_dir / name

    def import_staging(self, image_id: str) -> Path:
        """The folder an import works in (its source as received, then the converted disk)."""
        return self.staging_dir / f"{image_id}.import"

    def files_of_image(self, image_id: str) -> list[Path]:
        """Every stored file that belongs to an image (store, exports, staging)."""
        found: list[Path] = []
        for folder in (self.images_dir, self.exports_dir, self.staging_dir):
            if folder.is_dir():
                found.extend(p for p in folder.iterdir() if p.name.split(".", 1)[0] == image_id)
        return found

    def remove_image_files(self, image_id: str) -> None:
        for path in self.files_of_image(image_id):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    @staticmethod
    def publish(staged: Path, final: Path) -> None:
        """Atomically move a finished file into place (same file system)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    @staticmethod
    def publish_once(staged: Path, final: Path) -> bool:
        """Put a finished file in place unless one is there already (made by another node meanwhile,
        and perhaps being hashed or served): that one is kept, never replaced. True if ours went in."""
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(staged, final)
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)
        return True
