"""`init`, settings resolution, SQLite pragmas and schema upgrades with Alembic."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from core.catalog import db
from core.catalog.catalog import open_catalog
from core.catalog.errors import Failed, Invalid
from core.catalog.settings import load_settings
from core.setup.bootstrap import initialise
from tests.conftest import write_config


def test_init_creates_everything_and_a_second_run_changes_nothing(tmp_path: Path):
    settings = load_settings(write_config(tmp_path))
    catalog, report = initialise(settings)
    data = tmp_path / "var"
    assert settings.data_dir == data
    assert any("catalog" in item for item in report.created)
    assert "account admin" in report.created
    assert (data / "incoming").is_dir() and f"import folder {data / 'incoming'}" in report.created
    secret = data / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes().strip()) == 64
    assert stat.S_IMODE((data / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    first_secret = secret.read_bytes()
    catalog.dispose()
    again, second = initialise(settings)
    assert not second.changed and second.created == []
    assert secret.read_bytes() == first_secret
    again.dispose()


def test_sqlite_pragmas(catalog):
    with catalog.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_write_transactions_are_immediate(catalog):
    """A second writer waits (busy timeout) instead of failing with "database is locked" midway."""
    import threading

    from core.catalog.models import Tenant

    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with db.write_session(catalog.engine) as session:
            session.add(Tenant(name="t1"))
            session.flush()
            inside.set()
            release.wait(5)
            order.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    from sqlmodel import select

    with db.write_session(catalog.engine) as session:
        # read, then write: without BEGIN IMMEDIATE this fails at once with "database is locked"
        names = [t.name for t in session.exec(select(Tenant))]
        session.add(Tenant(name="t2"))
        session.flush()
        order.append("second-wrote")
    thread.join()
    timer.cancel()
    assert order == ["first", "second-wrote"]
    assert names == ["t1"]


def test_every_start_upgrades_an_older_catalog(tmp_path: Path):
    """A catalog at revision 0001 (the first schema) is brought to head on open; its rows survive."""
    settings = load_settings(write_config(tmp_path))
    (tmp_path / "var").mkdir()
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO tenant (name, created_at) VALUES ('old', '2020-01-01 00:00:00')"))
    assert db.current_revision(engine) == "0001"
    engine.dispose()
    catalog = open_catalog(settings)
    assert db.current_revision(catalog.engine) == db.head_revision()
    with catalog.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM tenant")).scalars().all() == ["old"]
        connection.execute(text("SELECT count(*) FROM job")).scalar()
    catalog.dispose()


def test_0006_keeps_old_failure_reasons_as_their_english_text(tmp_path: Path):
    """A row that failed before error_detail existed upgrades with no detail and reads as its English
    text (a plain str, not a Msg); a downgrade drops the column and keeps `error`."""
    from alembic import command

    from core.catalog.models import Image
    from core.images.images import image_view

    settings = load_settings(write_config(tmp_path))
    (tmp_path / "var").mkdir()
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine, "0005")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO tenant (id, name, created_at) VALUES (1, 'old', '2020-01-01 00:00:00')"))
        connection.execute(
            text(
                "INSERT INTO image (id, name, description, tenant_id, os_type, platform, os_version, arch, status,"
                " error, target_size_gb, created_at, updated_at) VALUES ('img-old00001', 'old', '', 1, 'Linux',"
                " 'CentOS', '7.2', 'x86_64', 'import_failed', 'HTTP 404 from source', 20,"
                " '2020-01-01 00:00:00', '2020-01-01 00:00:00')"
            )
        )
    engine.dispose()
    catalog = open_catalog(settings)
    with db.read_session(catalog.engine) as session:
        image = session.get(Image, "img-old00001")
        assert image is not None and image.error_detail is None
        error = image_view(image, "old")["error"]
    assert error == "HTTP 404 from source" and type(error) is str
    command.downgrade(db.alembic_config(catalog.engine), "0005")
    with catalog.engine.connect() as connection:
        assert connection.execute(text("SELECT error FROM image")).scalars().all() == ["HTTP 404 from source"]
        columns = [row[1] for row in connection.execute(text("PRAGMA table_info(job)"))]
        assert "error" in columns and "error_detail" not in columns
    catalog.dispose()


def test_init_upgrades_an_empty_older_schema(tmp_path: Path):
    settings = load_settings(write_config(tmp_path))
    (tmp_path / "var").mkdir()
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine, "0001")
    engine.dispose()
    catalog, report = initialise(settings)
    assert report.migrated_from == "0001"
    assert db.current_revision(catalog.engine) == db.head_revision()
    catalog.dispose()


def test_opening_without_init_says_what_to_do(tmp_path: Path):
    with pytest.raises(Failed, match="run imagehub init"):
        open_catalog(load_settings(write_config(tmp_path)))


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    config = folder / "imagehub.toml"
    config.write_text('[storage]\ndata_dir = "../data"\n[gateway]\nhttp_port = 9000\n')
    monkeypatch.chdir("/")
    settings = load_settings(config)
    assert settings.data_dir == tmp_path / "data"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'catalog.db'}"
    assert settings.gateway.http_port == 9000


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = write_config(tmp_path, "[gateway]\nhttp_port = 9000\n")
    monkeypatch.setenv("IMAGEHUB_GATEWAY__HTTP_PORT", "9100")
    monkeypatch.setenv("IMAGEHUB_IMPORT__MAX_CONCURRENT", "7")
    monkeypatch.setenv("IMAGEHUB_STORAGE__DATA_DIR", "elsewhere")
    settings = load_settings(config)
    assert settings.gateway.http_port == 9100
    assert settings.import_.max_concurrent == 7
    assert settings.data_dir == tmp_path / "elsewhere"


def test_config_from_environment_variable_and_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = write_config(tmp_path)
    monkeypatch.setenv("IMAGEHUB_CONFIG", str(config))
    assert load_settings().config_path == config
    monkeypatch.setenv("IMAGEHUB_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(Invalid, match="does not exist"):
        load_settings()
    monkeypatch.setenv("IMAGEHUB_CONFIG", str(config))
    monkeypatch.setenv("IMAGEHUB_GATEWAY__HTTP_PORT", "many")
    with pytest.raises(Invalid, match="^invalid configuration: gateway.http_port"):
        load_settings()


def test_the_shipped_config_is_complete_and_valid():
    repo = Path(__file__).resolve().parents[2]
    settings = load_settings(repo / "config" / "imagehub.toml")
    assert settings.data_dir == repo / "var"
    assert settings.links.ttl_seconds == 86400
    assert settings.import_.allow_private_networks is False


def test_the_same_migrations_upgrade_a_postgresql_catalog(tmp_path: Path, pg_cluster):
    name = pg_cluster.create_database()
    settings = load_settings(write_config(tmp_path), database={"url": pg_cluster.url(name)})
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO tenant (name, created_at) VALUES ('old', now())"))
    engine.dispose()
    catalog, report = initialise(settings)
    assert report.migrated_from == "0001"
    assert db.current_revision(catalog.engine) == db.head_revision()
    with catalog.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM tenant")).scalars().all() == ["old"]
    catalog.dispose()
    pg_cluster.drop_database(name)


def test_nodes_starting_at_once_migrate_a_postgresql_catalog_once(tmp_path: Path, pg_cluster):
    """Four processes (nodes) upgrade one empty PostgreSQL catalog at once: one migrates, none fails."""
    import subprocess
    import sys

    name = pg_cluster.create_database()
    url = pg_cluster.url(name)
    code = (
        "import sys; from core.catalog import db; engine = db.make_engine(sys.argv[1]); engine.connect().close(); "
        "print('ready', flush=True); sys.stdin.read(1); db.upgrade(engine)"
    )
    repo = Path(__file__).resolve().parents[2]
    nodes = [
        subprocess.Popen(
            [sys.executable, "-c", code, url],
            cwd=repo,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for node in nodes:  # all connected and imported: release them together
        assert node.stdout.readline().strip() == "ready"
    for node in nodes:
        node.stdin.write("x")
        node.stdin.flush()
    failures = [node.stderr.read() for node in nodes if node.wait(timeout=120) != 0]
    assert failures == []
    engine = db.make_engine(url)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
    pg_cluster.drop_database(name)


def test_a_stall_timeout_shorter_than_the_job_lease_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IMAGEHUB_IMPORT__STALL_TIMEOUT_SECONDS", "8")
    with pytest.raises(Invalid, match="stall_timeout_seconds must be longer than job_lease_seconds"):
        load_settings(write_config(tmp_path))


def test_schema_head_constant_matches_the_newest_migration() -> None:
    """Opening a catalog compares against db.SCHEMA_HEAD without importing Alembic; a new migration must bump it."""
    from core.catalog import db

    assert db.head_revision() == db.alembic_head_revision()


# What `image list` on an up-to-date SQLite catalog must not import (each costs every call start-up time):
# Alembic (only to migrate), Textual (only `tui`), SQLAlchemy and SQLModel (the listing runs its one query
# through sqlite3), the other command groups' modules, the gateway and the Excel writer.
NOT_FOR_IMAGE_LIST = (
    "alembic",
    "textual",
    "sqlalchemy",
    "sqlmodel",
    "core.catalog.models",
    "core.images.images",
    "core.jobs",
    "cli.accounts",
    "cli.jobs",
    "cli.links",
    "cli.vms",
    "cli.serve",
    "cli.tui",
    "gateway",
    "openpyxl",
    "cryptography",
    "aiohttp",
    "asyncssh",
)


def _loaded_after(config_path: Path, argv: list[str]) -> tuple[str, list[str], int]:
    """Run the CLI in a fresh interpreter: its stdout, the modules of NOT_FOR_IMAGE_LIST it loaded, its exit status."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, cli.main\n"
        "try:\n"
        f"    code = cli.main.main({argv!r})\n"
        "except SystemExit as exit:\n"  # --help
        "    code = exit.code\n"
        # a package is in sys.modules as soon as any module of it is
        f"loaded = [name for name in {NOT_FOR_IMAGE_LIST!r} if name in sys.modules]\n"
        "print('LOADED', ','.join(loaded), code, file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")} | {"IMAGEHUB_CONFIG": str(config_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    _, loaded, status = done.stderr.strip().splitlines()[-1].split(" ")
    return done.stdout, [m for m in loaded.split(",") if m], int(status)


def test_image_list_imports_neither_alembic_nor_textual(config_path: Path) -> None:
    """`image list` on an up-to-date catalog pays for Alembic only when migrating, never for Textual, and
    reads a SQLite catalog without SQLAlchemy: none of NOT_FOR_IMAGE_LIST is imported."""
    initialise(load_settings(config_path))
    for argv in (["image", "list", "--json"], ["image", "list"], ["--help"]):
        out, loaded, status = _loaded_after(config_path, argv)
        assert (loaded, status) == ([], 0), argv
        assert out.strip() == "[]" if "--json" in argv else out


def test_image_export_xlsx_on_sqlite_imports_only_the_excel_writer(config_path: Path, tmp_path: Path) -> None:
    """`image export-xlsx` reads an up-to-date SQLite catalog as `image list` does (no SQLAlchemy, no
    SQLModel, no ORM): of NOT_FOR_IMAGE_LIST it loads only openpyxl, and the workbook is written."""
    from openpyxl import load_workbook

    initialise(load_settings(config_path))
    target = tmp_path / "images.xlsx"
    out, loaded, status = _loaded_after(config_path, ["image", "export-xlsx", str(target)])
    assert (loaded, status) == (["openpyxl"], 0)
    assert out.startswith("wrote 0 images to ")
    rows = list(load_workbook(target).active.iter_rows(values_only=True))
    assert rows[0][:6] == ("Name", "ID", "System type", "OS", "Status", "Size (GB)") and len(rows) == 1
