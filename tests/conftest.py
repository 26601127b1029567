"""Shared fixtures: a fresh catalog in a temporary folder, accounts of every role, the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.accounts.accounts import create_account, create_tenant
from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.settings import load_settings
from core.rules.access import Actor, resolve_actor
from core.setup.bootstrap import initialise

REPO = Path(__file__).resolve().parent.parent

# A suite started in the background (`make test &`) has SIGINT ignored, and so would every client the tests
# interrupt as a user would (Ctrl-C): an ignored signal is inherited across exec, a handler is not.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
IMAGEHUB = [sys.executable, "-m", "cli.main"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's config or account from the environment."""
    for key in list(os.environ):
        if key.startswith("IMAGEHUB_"):
            monkeypatch.delenv(key)


def write_config(folder: Path, extra: str = "") -> Path:
    """A config file in `folder` whose data_dir is `folder/var` (relative, as users write it)."""
    path = folder / "imagehub.toml"
    path.write_text(
        '[storage]\ndata_dir = "var"\n'
        f'[images]\nos_matrix = "{REPO / "config" / "os_matrix.toml"}"\n'
        "[import]\nallow_private_networks = true\nstall_timeout_seconds = 600\n"
        # fixtures are made in the test's folder: local imports are allowed from there (data_dir excepted)
        'local_roots = ["."]\n' + ("" if "[compute]" in extra else '[compute]\ndriver = "none"\n') + extra
        # VMs are only recorded unless a test asks for qemu: a test's dummy disks boot nothing
    )
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def qemu_catalog(catalog: Catalog) -> Iterator[Catalog]:
    """`catalog` whose VMs really run: qemu under TCG, 128 MiB, 1 s for ACPI (the test disks boot
    nothing, so stop falls back to QMP quit). Every qemu the test left running is killed after it."""
    from core.catalog.settings import ComputeSettings
    from tests.vmdata import needs_qemu_system, qemu_pids

    if not needs_qemu_system:
        pytest.skip("qemu-system-x86_64 is not installed (.ci/run installs it)")
    before = qemu_pids(catalog.settings.data_dir)
    catalog.settings.compute = ComputeSettings(driver="qemu", accel="tcg", memory_mb=128, stop_timeout_seconds=1)
    yield catalog
    for pid in qemu_pids(catalog.settings.data_dir) - before:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the whole run (see tests/postgres.py)."""
    from tests.postgres import server_bin, start_cluster

    if server_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (.ci/run installs package postgresql)")
    yield from start_cluster()


@pytest.fixture
def catalog(request: pytest.FixtureRequest, config_path: Path) -> Iterator[Catalog]:
    """An initialised catalog: SQLite by default; `parametrize("catalog", ["sqlite", "postgresql"],
    indirect=True)` runs a test against a fresh PostgreSQL database as well."""
    backend = getattr(request, "param", "sqlite")
    database = None
    overrides: dict[str, Any] = {}
    if backend == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        database = cluster.create_database()
        overrides["database"] = {"url": cluster.url(database)}
    cat, _ = initialise(load_settings(config_path, **overrides))
    yield cat
    cat.dispose()
    if database is not None:
        cluster.drop_database(database)


BACKENDS = pytest.mark.parametrize("catalog", ["sqlite", "postgresql"], indirect=True)


@dataclass
class People:
    """Two tenants (acme, globex) and an account of every role."""

    admin: Actor
    owner: Actor
    manager: Actor
    viewer: Actor
    other_owner: Actor


def actor(catalog: Catalog, name: str) -> Actor:
    with db.read_session(catalog.engine) as session:
        return resolve_actor(session, name)


@pytest.fixture
def people(catalog: Catalog) -> People:
    admin = actor(catalog, "admin")
    create_tenant(catalog, admin, "acme")
    create_tenant(catalog, admin, "globex")
    create_account(catalog, admin, "acme-owner", tenant="acme", role="owner")
    create_account(catalog, admin, "acme-manager", tenant="acme", role="member", perm="manage")
    create_account(catalog, admin, "acme-viewer", tenant="acme", role="member", perm="view")
    create_account(catalog, admin, "globex-owner", tenant="globex", role="owner")
    return People(
        admin=admin,
        owner=actor(catalog, "acme-owner"),
        manager=actor(catalog, "acme-manager"),
        viewer=actor(catalog, "acme-viewer"),
        other_owner=actor(catalog, "globex-owner"),
    )


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(config_path: Path) -> Any:
    """Run the console script in a subprocess against the temporary catalog."""

    def run(
        *args: str, account: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
    ) -> CliResult:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
        full_env["IMAGEHUB_CONFIG"] = str(config_path)
        if account:
            full_env["IMAGEHUB_ACCOUNT"] = account
        full_env.update(env or {})
        done = subprocess.run(
            [*IMAGEHUB, *args], capture_output=True, text=True, env=full_env, cwd=config_path.parent, timeout=timeout
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run
