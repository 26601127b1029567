"""The console script end to end (subprocess): --json parsed, exit codes checked, on a temporary catalog."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from openpyxl import load_workbook

from tests.conftest import IMAGEHUB, write_config

IMAGE_FIELDS = {
    "id", "name", "description", "tenant", "os_type", "platform", "os_version", "arch", "os_name", "status",
    "error", "disk_format", "virtual_size", "sha256", "created_at", "updated_at",
}  # fmt: skip


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """`init --demo` once per module (it runs real imports: seconds); each test gets a copy of its data folder."""
    folder = tmp_path_factory.mktemp("demo-template")
    config = write_config(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")} | {"IMAGEHUB_CONFIG": str(config)}

    def run(*args: str) -> list[dict[str, str]]:
        done = subprocess.run([*IMAGEHUB, *args], capture_output=True, text=True, env=env, cwd=folder, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    created = run("init", "--demo", "--json")
    assert len(created["demo_images"]) == 12  # type: ignore[call-overload]
    every = run("image", "list", "--json") + run("image", "list", "--status", "deleted", "--json")
    return folder / "var", {i["name"]: i["id"] for i in every}


@pytest.fixture
def demo(demo_template: tuple[Path, dict[str, str]], config_path: Path) -> dict[str, str]:
    """The demo catalog (`init --demo`) in this test's data folder; returns the demo images by name."""
    data, names = demo_template
    # cp keeps the images sparse (copytree would write their terabytes of holes out) and their modes
    subprocess.run(["cp", "-a", "--sparse=always", str(data), str(config_path.parent / "var")], check=True)
    return names


def test_init_twice(cli):
    first = cli("init")
    assert first.code == 0 and "created account admin" in first.out
    second = cli("init")
    assert second.code == 0
    assert "nothing changed" in second.out
    assert cli("init", "--json").json()["changed"] is False


def test_commands_before_init_fail_with_one_line(cli):
    result = cli("image", "list")
    assert result.code == 1
    assert result.err.strip().count("\n") == 0 and "run imagehub init" in result.err


def test_list_and_show_json_carry_the_contract_fields(cli, demo):
    images = cli("image", "list", "--json").json()
    assert len(images) == 10  # twelve, less the two in the recycle bin
    assert {i["status"] for i in images} == {"available", "importing", "creating", "import_failed"}
    for image in images:
        assert image.keys() >= IMAGE_FIELDS
        assert image["id"].startswith("img-") and len(image["id"]) == 12
    shown = cli("image", "show", demo["db-primary"], "--json").json()
    assert shown["os_name"] == "CentOS 7.6 x86_64" and shown["virtual_size"] == 40 * 1024**3
    assert shown["tenant"] == "demo"
    text = cli("image", "show", demo["db-primary"])
    assert (
        text.code == 0 and "\nOS:               CentOS 7.6\n" in text.out and "\narchitecture:     x86_64\n" in text.out
    )
    assert "\nsize (GB):        40 (42949672960 bytes)\n" in text.out


def test_filters(cli, demo):
    found = cli("image", "list", "--status", "available", "--filter", "UBUNTU", "--json").json()
    assert {i["name"] for i in found} == {"ubuntu-base", "ubuntu-arm"}
    by_prefix = cli("image", "list", "--filter", demo["win-ad"][:9], "--json").json()
    assert demo["win-ad"] in {i["id"] for i in by_prefix}
    bad = cli("image", "list", "--status", "gone")
    assert bad.code == 2 and "status gone is unknown" in bad.err


def test_edit_any_status_and_validation_exit_2(cli, demo):
    importing = demo["win-iis"]
    edited = cli("image", "edit", importing, "--name", "iis-2016", "--description", "new remark", "--json")
    assert edited.code == 0 and edited.json()["name"] == "iis-2016" and edited.json()["status"] == "importing"
    too_long = cli("image", "edit", importing, "--name", "x" * 65)
    assert too_long.code == 2
    assert too_long.err.strip() == "imagehub: error: name is 65 characters long; at most 64 are allowed"
    assert cli("image", "edit", importing).code == 2
    assert cli("image", "edit", "img-zzzzzzzz", "--name", "x").code == 3


def test_batch_delete_reports_each_and_exits_non_zero(cli, demo):
    ids = [demo["web-frontend"], demo["win-iis"], demo["broken-upload"]]
    result = cli("image", "delete", *ids, "--json")
    assert result.code == 5
    report = {r["id"]: r for r in result.json()}
    assert report[demo["web-frontend"]]["ok"] and report[demo["broken-upload"]]["ok"]
    assert not report[demo["win-iis"]]["ok"] and "importing" in report[demo["win-iis"]]["error"]
    assert demo["win-iis"] in result.err
    binned = {i["id"] for i in cli("image", "list", "--status", "deleted", "--json").json()}
    assert {demo["web-frontend"], demo["broken-upload"]} <= binned
    restored = cli("image", "restore", demo["broken-upload"])
    assert restored.code == 0
    assert cli("image", "show", demo["broken-upload"], "--json").json()["status"] == "import_failed"
    destroyed = cli("image", "destroy", demo["web-frontend"])
    assert destroyed.code == 0
    assert cli("image", "show", demo["web-frontend"]).code == 3


def test_access_through_the_command_line(cli, demo):
    assert cli("tenant", "create", "acme").code == 0
    assert cli("tenant", "create", "acme").code == 5
    assert cli("account", "create", "acme-owner", "--tenant", "acme", "--role", "owner").code == 0
    # the demo tenant's images are invisible to acme: "not found", never "forbidden"
    foreign = cli("image", "show", demo["db-primary"], account="acme-owner")
    assert foreign.code == 3 and "not found" in foreign.err
    assert cli("image", "delete", demo["db-primary"], account="acme-owner").code == 3
    assert cli("image", "list", "--json", account="acme-owner").json() == []
    # a viewer sees but may not change
    viewer = cli("image", "delete", demo["db-primary"], account="demo-viewer")
    assert viewer.code == 4 and "may view but not change" in viewer.err
    assert cli("tenant", "create", "evil", account="demo-owner").code == 4
    assert cli("image", "list", "--as", "nobody").code == 4
    tenants = cli("tenant", "list", "--json", "--as", "demo-viewer").json()
    assert [t["name"] for t in tenants] == ["demo"]


def test_export_xlsx(cli, demo, tmp_path: Path):
    path = tmp_path / "var" / "exports" / "list.xlsx"  # a non-admin writes only under exports/ (L6)
    result = cli("image", "export-xlsx", str(path), "--json", account="demo-viewer")
    assert result.code == 0 and result.json()["rows"] == 10
    rows = list(load_workbook(path).active.iter_rows(values_only=True))
    assert rows[0][:2] == ("Name", "ID") and len(rows) == 11
    assert cli("image", "export-xlsx", str(tmp_path / "x.txt")).code == 2


def test_usage_errors_exit_2_with_one_line(cli):
    for args in (["image"], ["image", "frobnicate"], ["image", "list", "--limit", "many"], []):
        result = cli(*args)
        assert result.code == 2, args
        assert len(result.err.strip().splitlines()) == 1, (args, result.err)
        assert result.err.startswith("imagehub: error:")


def test_global_options_after_the_subcommand(cli, demo, tmp_path: Path):
    assert cli("image", "list", "--as", "demo-viewer", "--json").code == 0
    assert cli("--as", "demo-viewer", "image", "list", "--json").code == 0
    missing = cli("--config", str(tmp_path / "none.toml"), "image", "list")
    assert missing.code == 2 and "does not exist" in missing.err


def test_audit_trail_lists_changes_and_refusals(cli, demo):
    cli("image", "edit", demo["db-primary"], "--name", "db-renamed")
    cli("image", "delete", demo["win-iis"])
    events = cli("audit", "list", "--json").json()
    edit = next(e for e in events if e["action"] == "image.edit")
    assert edit["target"] == demo["db-primary"] and edit["actor"] == "admin" and edit["outcome"] == "ok"
    assert edit["detail"]["name"] == ["db-primary", "db-renamed"]
    refused = cli("audit", "list", "--target", demo["win-iis"], "--action", "image.delete", "--json").json()
    assert refused[0]["outcome"] == "refused" and "importing" in refused[0]["reason"]
    owners = cli("audit", "list", "--json", account="demo-owner")  # a tenant owner reads its tenant's trail
    assert owners.code == 0 and edit["id"] in {e["id"] for e in owners.json()}
    assert cli("audit", "list", account="demo-viewer").code == 4
    assert cli("audit", "list", "--limit", "0").code == 2


def test_demo_is_seeded_once(cli, demo):
    again = cli("init", "--demo", "--json")
    assert again.code == 0 and again.json()["changed"] is False and again.json()["demo_images"] == []
    # what the user destroys stays destroyed (an interrupted seeding: tests/core/test_demo.py)
    assert cli("image", "destroy", demo["old-test"]).code == 0
    assert cli("init", "--demo", "--json").json()["demo_images"] == []
    names = {i["name"] for i in cli("image", "list", "--status", "deleted", "--json").json()}
    assert "old-test" not in names


def test_files_are_not_readable_by_other_users(cli, demo, config_path):
    import stat

    data = config_path.parent / "var"
    made = [data / "catalog.db", *sorted((data / "images").iterdir())]
    assert len(made) > 5
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, path
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600


def test_list_json_is_compact_and_parses_equal_to_the_indented_form(cli, demo):
    import json

    assert cli("image", "edit", demo["db-primary"], "--description", 'naïve "café" ✓\n2').code == 0
    compact = cli("image", "list", "--json")
    pretty = cli("image", "list", "--json", "--pretty")
    assert compact.code == pretty.code == 0
    document = json.loads(compact.out)
    assert json.loads(pretty.out) == document and len(document) == 10
    # The same document and bytes apart from whitespace: compact for scripts, indented with --pretty.
    assert compact.out == json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"
    assert pretty.out == json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    assert 'naïve \\"café\\" ✓\\n2' in compact.out  # non-ASCII as UTF-8, as before
    empty = cli("image", "list", "--status", "deleted", "--filter", "no-such-image", "--json")
    assert empty.code == 0 and empty.out == "[]\n"
    assert cli("image", "list", "--json", "--pretty", "--filter", "no-such-image").out == "[]\n"


def test_list_json_on_a_terminal_is_indented(cli, demo, config_path: Path):
    import json
    import os
    import pty
    import subprocess

    from tests.conftest import IMAGEHUB

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env["IMAGEHUB_CONFIG"] = str(config_path)
    process = subprocess.Popen([*IMAGEHUB, "image", "list", "--json"], stdout=follower, env=env, cwd=config_path.parent)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    shown = b"".join(chunks).decode().replace("\r\n", "\n")
    document = json.loads(shown)
    assert shown == json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    assert document == cli("image", "list", "--json").json()


def test_an_error_echoing_hostile_input_is_one_escaped_line_of_bounded_length(cli, demo):
    """What a caller passes (an ID with ESC sequences, line breaks, 50,000 characters) comes back in the
    error as one line: controls escaped as `\\x1b`, `\\x0a`, cut with `…`; the terminal never sees them."""
    hostile = "lnk-\x1b[31mred\nsecond line\u202e" + "x" * 50_000
    for command in (("link", "show", hostile), ("image", "show", hostile), ("vm", "show", hostile)):
        result = cli(*command)
        assert result.code == 3, result.err
        assert result.err.count("\n") == 1 and result.err.endswith("…\n"), result.err[:200]
        assert "\x1b" not in result.err and "\u202e" not in result.err
        assert "lnk-\\x1b[31mred\\x0asecond line\\u202e" in result.err
        assert len(result.err) < 1100
