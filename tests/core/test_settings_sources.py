"""Settings come from one model read two ways: plain pydantic over the TOML file when no environment
variable could override a setting (the command line's fast start), else pydantic-settings with the
environment over the file. Both give the same settings and the same refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.catalog.errors import Invalid
from core.catalog.settings import Settings, environment_overrides_settings, load_settings
from tests.conftest import REPO, write_config

EVERY_KEY = (
    (REPO / "config" / "imagehub.toml").read_text()
    + """
[tui]
language = "zh_CN"
"""
)


def both_ways(monkeypatch: pytest.MonkeyPatch, config: Path, **overrides: Any) -> tuple[Any, Any]:
    """(settings or refusal) read without and with pydantic-settings."""

    def read() -> Any:
        try:
            settings = load_settings(config, **overrides)
        except Invalid as exc:
            return str(exc)
        assert isinstance(settings, Settings)
        return settings.model_dump(), settings.config_path, settings.database_url, settings.base_dir

    assert not environment_overrides_settings()
    plain = read()
    with monkeypatch.context() as env:
        env.setenv("IMAGEHUB_NOT_A_SETTING", "1")  # any IMAGEHUB_ variable takes the pydantic-settings path
        assert environment_overrides_settings()
        return plain, read()


@pytest.mark.parametrize(
    "text",
    [
        EVERY_KEY,
        "",
        '[storage]\ndata_dir = "elsewhere"\n[import]\nlocal_roots = ["a", "/b"]\nca_bundle = "ca.pem"\n',
        '[database]\nurl = "sqlite:///rel/catalog.db"\n[gateway]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n',
        "[unknown]\nkey = 1\n",  # an unknown table is ignored
        "[gateway]\nhttp_port = 8081\nbogus = 1\n",  # an unknown key is refused
        '[gateway]\nhttp_port = "eighty"\n',
        '[gateway]\nmetrics_listen = "nowhere"\n',
        "[import]\nstall_timeout_seconds = 10\njob_lease_seconds = 30\n",
        '[compute]\ndriver = "kvm"\n',
        "[storage\n",  # not TOML
    ],
)
def test_with_and_without_pydantic_settings_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str):
    config = tmp_path / "imagehub.toml"
    config.write_text(text)
    plain, with_environment = both_ways(monkeypatch, config)
    assert plain == with_environment


def test_overrides_merge_into_the_file_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = write_config(tmp_path, "[database]\nbusy_timeout_seconds = 7\n[links]\nttl_seconds = 60\n")
    plain, with_environment = both_ways(
        monkeypatch, config, database={"url": "postgresql+psycopg://u@127.0.0.1/x"}, import_={"max_concurrent": 5}
    )
    assert plain == with_environment
    dumped = plain[0]
    assert dumped["database"] == {"url": "postgresql+psycopg://u@127.0.0.1/x", "busy_timeout_seconds": 7.0}
    # pydantic-settings keys an init value of [import] by its alias: it replaces the file's table
    assert dumped["import_"]["max_concurrent"] == 5 and dumped["import_"]["allow_private_networks"] is False
    for name in ("import", "imagehub_import"):
        plain, with_environment = both_ways(monkeypatch, config, **{name: {"max_concurrent": 3}})
        assert plain == with_environment and plain[0]["import_"]["max_concurrent"] == 3


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("IMAGEHUB_GATEWAY__HTTP_PORT", "9000", lambda s: s.gateway.http_port == 9000),
        ("imagehub_links__ttl_seconds", "60", lambda s: s.links.ttl_seconds == 60),
        ("IMAGEHUB_IMPORT__MAX_CONCURRENT", "4", lambda s: s.import_.max_concurrent == 4),
        ("IMAGEHUB_IMPORT__ALLOWED_PORTS", "[8080]", lambda s: s.import_.allowed_ports == [8080]),
        ("IMAGEHUB_STORAGE__DATA_DIR", "/srv/imagehub", lambda s: s.data_dir == Path("/srv/imagehub")),
    ],
)
def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, read: Any
):
    config = write_config(tmp_path)
    monkeypatch.setenv(variable, value)
    assert environment_overrides_settings()
    assert read(load_settings(config))


@pytest.mark.parametrize("variable", ["IMAGEHUB_CONFIG", "IMAGEHUB_ACCOUNT", "IMAGEHUB_VIA_SSH", "PATH"])
def test_variables_that_are_not_settings_keep_the_fast_path(monkeypatch: pytest.MonkeyPatch, variable: str):
    monkeypatch.setenv(variable, "x")
    assert not environment_overrides_settings()
