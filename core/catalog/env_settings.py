"""Settings read with pydantic-settings: init values, then the environment (IMAGEHUB_SECTION__KEY), then
the TOML file. core.catalog.settings imports this only when an environment variable could override
a setting (`environment_overrides_settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from core.catalog.settings import Settings


class _TomlSource(TomlConfigSettingsSource):
    """The TOML file, with its [import] section keyed by field name so the environment can override it."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        if "import" in data:
            data["import_"] = data.pop("import")
        return data


class EnvSettings(BaseSettings, Settings):
    """`Settings` with the environment read over the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEHUB_",
        env_nested_delimiter="__",
        populate_by_name=True,
        extra="ignore",
    )
    _toml_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(_TomlSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


def settings_with_environment(path: Path | None, overrides: dict[str, Any]) -> Settings:
    EnvSettings._toml_file = path
    try:
        return EnvSettings(**overrides)
    finally:
        EnvSettings._toml_file = None
