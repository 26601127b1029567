"""The OS matrix: which platform, architecture and version an image may declare (config/os_matrix.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from core.catalog.errors import Invalid


@dataclass(frozen=True)
class Platform:
    name: str
    os_type: str
    versions: dict[str, tuple[str, ...]]  # arch -> versions


@dataclass(frozen=True)
class OsMatrix:
    platforms: dict[str, Platform]

    @property
    def os_types(self) -> list[str]:
        seen: list[str] = []
        for platform in self.platforms.values():
            if platform.os_type not in seen:
                seen.append(platform.os_type)
        return seen

    @property
    def arches(self) -> list[str]:
        seen: list[str] = []
        for platform in self.platforms.values():
            for arch in platform.versions:
                if arch not in seen:
                    seen.append(arch)
        return seen

    def platforms_for(self, os_type: str) -> list[str]:
        return [p.name for p in self.platforms.values() if p.os_type == os_type]

    def arches_for(self, platform: str) -> list[str]:
        found = self.platforms.get(platform)
        return list(found.versions) if found else []

    def versions_for(self, platform: str, arch: str) -> list[str]:
        found = self.platforms.get(platform)
        return list(found.versions.get(arch, ())) if found else []


def load_os_matrix(path: Path) -> OsMatrix:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise Invalid("OS matrix {path} does not exist", path=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise Invalid("OS matrix {path} is not valid TOML: {exc}", path=path, exc=exc) from exc
    platforms: dict[str, Platform] = {}
    for name, table in (data.get("platforms") or {}).items():
        os_type = table.get("os_type")
        versions = table.get("versions") or {}
        if not isinstance(os_type, str) or not isinstance(versions, dict) or not versions:
            raise Invalid("OS matrix {path}: platform {name} needs os_type and versions", path=path, name=name)
        platforms[name] = Platform(
            name=name,
            os_type=os_type,
            versions={arch: tuple(str(v) for v in vs) for arch, vs in versions.items()},
        )
    if not platforms:
        raise Invalid("OS matrix {path} offers no platform", path=path)
    return OsMatrix(platforms)
