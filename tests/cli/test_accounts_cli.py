"""`imagehub account delete|set` on the command line (exit codes, one-line errors, JSON), and what a
real gateway does with the links of a deleted or moved account: curl is refused at once, a running
download is cut, and `link list` says the same as the gateway."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Gateway

ACCOUNT_FIELDS = {"id", "name", "tenant", "role", "perm", "created_at"}

gw = gateway_fixtures.gw  # one `imagehub serve` on ports 0 for the module


@pytest.fixture
def acme(cli, config_path) -> None:  # type: ignore[no-untyped-def]
    """The catalog the commands below act on, made in-process (seven CLI start-ups cost 7 s a test)."""
    from core.accounts.accounts import create_account, create_tenant
    from core.catalog.settings import load_settings
    from core.setup.bootstrap import initialise
    from tests.conftest import actor

    catalog, _ = initialise(load_settings(config_path))
    try:
        admin = actor(catalog, "admin")
        create_tenant(catalog, admin, "acme")
        create_tenant(catalog, admin, "globex")
        create_account(catalog, admin, "alice", tenant="acme", role="owner")
        create_account(catalog, admin, "bob", tenant="acme", role="member", perm="view")
        create_account(catalog, admin, "carol", tenant="acme", role="member", perm="manage")
        create_account(catalog, admin, "gus", tenant="globex", role="member")
    finally:
        catalog.dispose()


def listing(cli) -> list[dict]:  # type: ignore[no-untyped-def]
    done = cli("account", "list", "--json")
    assert done.code == 0, done.err
    return done.json()


def test_set_and_delete_print_the_account_and_list_keeps_its_fields(cli, acme) -> None:  # type: ignore[no-untyped-def]
    changed = cli("account", "set", "bob", "--perm", "manage", "--json", account="alice")
    assert changed.code == 0, changed.err
    assert changed.json() == {**changed.json(), "name": "bob", "tenant": "acme", "role": "member", "perm": "manage"}
    assert set(changed.json()) == ACCOUNT_FIELDS
    moved = cli("account", "set", "bob", "--tenant", "globex")
    assert moved.code == 0 and moved.out == "account bob: tenant globex, role member, perm manage\n"
    deleted = cli("account", "delete", "bob", "--json")
    assert deleted.code == 0, deleted.err
    view = deleted.json()
    assert set(view) == ACCOUNT_FIELDS | {"deleted_at", "keys_removed", "links_revoked"}
    assert view["name"] == "bob" and view["deleted_at"] and view["keys_removed"] == 0
    rows = listing(cli)
    assert [r["name"] for r in rows] == ["admin", "alice", "carol", "gus"]
    assert all(set(r) == ACCOUNT_FIELDS for r in rows)
    # The name is free again; the audit trail still tells the old bob's story.
    assert cli("account", "create", "bob", "--tenant", "acme", "--role", "member").code == 0
    trail = cli("audit", "list", "--target", "bob", "--json").json()
    assert [e["action"] for e in trail][:3] == ["account.create", "account.delete", "account.set"]
    # Deleted, the old account cannot act any more (the new bob is a different account).
    assert cli("account", "delete", "carol").code == 0
    gone = cli("image", "list", account="carol")
    assert gone.code == 4 and gone.err == "imagehub: error: account carol does not exist\n"


@pytest.mark.parametrize(
    ("who", "args", "code", "message"),
    [
        ("alice", ("delete", "gus"), 3, "account gus not found"),
        ("alice", ("delete", "nobody"), 3, "account nobody not found"),
        ("alice", ("set", "bob", "--tenant", "globex"), 4, "only platform admins may move accounts between tenants"),
        ("alice", ("delete", "alice"), 4, "only platform admins may delete account alice: alice is a tenant owner"),
        ("carol", ("delete", "bob"), 4, "account carol may not delete account bob"),
        ("bob", ("set", "bob", "--perm", "manage"), 4, "account bob may not change account bob"),
        ("admin", ("delete", "admin"), 5, "account admin cannot delete itself; another platform admin may"),
        ("admin", ("set", "bob"), 2, "nothing to change; give --perm or --tenant"),
        ("admin", ("set", "alice", "--perm", "view"), 2,
         "--perm applies to members only (owners and admins manage everything they see)"),
        ("admin", ("set", "bob", "--tenant", "initech"), 3, "tenant initech not found"),
        ("admin", ("set", "bob", "--perm", "root"), 2,
         "argument --perm: invalid choice: 'root' (choose from 'view', 'manage')"),
        ("admin", ("delete",), 2, "the following arguments are required: name"),
    ],
)  # fmt: skip
def test_refusals_exit_with_the_contract_code_one_line_and_nothing_changed(  # type: ignore[no-untyped-def]
    cli, acme, who: str, args: tuple[str, ...], code: int, message: str
) -> None:
    before = listing(cli)
    done = cli("account", *args, account=who)
    assert (done.code, done.out) == (code, "")
    assert done.err == f"imagehub: error: {message}\n"
    assert listing(cli) == before


def test_an_owner_cannot_register_a_key_on_its_member(cli, acme, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    public = tmp_path / "k.pub"
    asyncssh.generate_private_key("ssh-ed25519").write_public_key(str(public))
    refused = cli("account", "key", "add", "bob", str(public), account="alice")
    assert refused.code == 4
    assert refused.err == "imagehub: error: only platform admins may register SSH keys on another account\n"
    assert cli("account", "key", "list", "bob", "--json", account="alice").json() == []
    assert cli("account", "key", "add", "alice", str(public), account="alice").code == 0


# ---- against a real gateway --------------------------------------------------------------------

SIZE = 48 * 1024 * 1024
RATE = "2M"


def new_member(gw: Gateway, name: str) -> None:
    done = gw.cli("account", "create", name, "--tenant", "acme", "--role", "member", account="admin")
    assert done.returncode == 0, done.stderr


def curl(gw: Gateway, url: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--fail", "-k", "-o", str(out), url],
        capture_output=True,
        text=True,
        env=gw.env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def state_in_link_list(gw: Gateway, link_id: str) -> str:
    done = gw.cli("link", "list", "--json", account="acme-owner")
    assert done.returncode == 0, done.stderr
    return next(lk["state"] for lk in json.loads(done.stdout) if lk["id"] == link_id)


def test_t4_deleting_an_account_cuts_its_running_download_and_refuses_its_links(gw: Gateway, tmp_path: Path) -> None:
    new_member(gw, "leaver")
    link = gw.link(gw.image(size=SIZE), account="leaver")
    out = tmp_path / "part"
    download = subprocess.Popen(
        ["curl", "-sS", "--fail", "--limit-rate", RATE, "-o", str(out), link.http],
        env=gw.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size > 1024 * 1024):
            assert download.poll() is None, "curl ended before the account was deleted"
            assert time.monotonic() < deadline, "curl made no progress"
            time.sleep(0.05)
        deleted = gw.cli("account", "delete", "leaver", "--json", account="acme-owner")
        assert deleted.returncode == 0, deleted.stderr
        assert json.loads(deleted.stdout)["links_revoked"] == 1
        cut_from = time.monotonic()
        code = download.wait(20)
        took = time.monotonic() - cut_from
    finally:
        if download.poll() is None:
            download.kill()
            download.wait()
        assert download.stderr is not None
        download.stderr.close()
    assert code != 0 and out.stat().st_size < SIZE, "the download finished instead of being cut"
    assert took < 5, f"cut only after {took:.1f} s"
    for proto in ("http", "ftp", "sftp"):  # the next request, on every protocol
        again = curl(gw, getattr(link, proto), tmp_path / f"again-{proto}")
        assert again.returncode != 0, proto
    assert state_in_link_list(gw, link.id) == "revoked"
    assert f"link={link.id} proto=http" in gw.log_text()


def test_t4_moving_an_account_stops_its_links_to_the_old_tenant(gw: Gateway, tmp_path: Path) -> None:
    new_member(gw, "mover")
    link = gw.link(gw.image(size=100_000), account="mover")
    owners = gw.link(gw.image(size=100_000), account="acme-owner")
    assert curl(gw, link.http, tmp_path / "before").returncode == 0
    assert state_in_link_list(gw, link.id) == "active"
    moved = gw.cli("account", "set", "mover", "--tenant", "globex", account="admin")
    assert moved.returncode == 0, moved.stderr
    for proto in ("http", "ftp", "sftp"):
        refused = curl(gw, getattr(link, proto), tmp_path / f"after-{proto}")
        assert refused.returncode != 0, proto
        assert not (tmp_path / f"after-{proto}").exists() or (tmp_path / f"after-{proto}").stat().st_size == 0
    http = curl(gw, link.http, tmp_path / "after-http")
    assert "403" in http.stderr
    assert state_in_link_list(gw, link.id) == "access_lost"  # what the gateway enforces, link list says
    assert curl(gw, owners.http, tmp_path / "owners").returncode == 0  # other links of the tenant go on
    # An owner may not move it back (only admins move accounts); the link stays refused.
    refused = gw.cli("account", "set", "mover", "--tenant", "acme", account="acme-owner")
    assert refused.returncode == 3 and refused.stderr == "imagehub: error: account mover not found\n"
    assert "reason=access_lost" in gw.log_text()
