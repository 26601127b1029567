"""`make run`'s launcher (`python -m cli.run`) in a real pseudo-terminal: the TUI opens only once the
gateway is up and quitting it stops that gateway; a gateway that cannot start stops make run with
its reason (exit 1), and no TUI opens."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from core.catalog.settings import load_settings
from core.links.gateway_status import pid_alive
from tests.conftest import REPO, write_config
from tests.gateway.conftest import GATEWAY_CONFIG

ALTERNATE_SCREEN = "\x1b[?1049h"  # what a full-screen app (the TUI) switches to first


def _spawn(config: Path) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env.update(IMAGEHUB_CONFIG=str(config), TERM="xterm-256color", LANG="C.UTF-8")
    return pexpect.spawn(
        sys.executable, ["-m", "cli.run"], env=env, cwd=str(REPO), dimensions=(24, 100), encoding="utf-8", timeout=120
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_http_port_stops_make_run_with_the_reason(tmp_path: Path, taken_port: int) -> None:
    config = write_config(tmp_path, GATEWAY_CONFIG.replace("http_port = 0", f"http_port = {taken_port}"))
    child = _spawn(config)
    try:
        child.expect(r"the gateway did not start: (.*)\r\n")
        reason = child.match.group(1)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert f"('127.0.0.1', {taken_port})" in reason and "address already in use" in reason
    assert "serve.log" in reason  # where the details are
    assert ALTERNATE_SCREEN not in (child.before or "")  # the TUI never opened
    data_dir = tmp_path / "var"
    assert not (data_dir / "serve.pid").exists()
    assert "address already in use" in (data_dir / "serve.log").read_text()


def test_the_tui_opens_once_the_gateway_is_up_and_quitting_stops_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, GATEWAY_CONFIG)
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "serve.log").write_text("an earlier run\n")
    child = _spawn(config)
    try:
        child.expect_exact(ALTERNATE_SCREEN)
        child.expect("account admin")  # the image list's header: the TUI is open
        serve_pid = int((data_dir / "serve.pid").read_text())  # written by serve once bound, before the TUI
        assert pid_alive(serve_pid)
        # named as the README names it, so that `pgrep -f "imagehub serve"` finds it
        command = Path(f"/proc/{serve_pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "/imagehub serve" in command, command
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert not pid_alive(serve_pid) and not (data_dir / "serve.pid").exists()
    log = (data_dir / "serve.log").read_text()
    assert log.startswith("an earlier run\n")  # appended, never overwritten
    assert "imagehub serve: http=127.0.0.1:" in log and "imagehub serve: stopped" in log


def test_make_run_opens_the_admin_door_at_the_port_the_readme_shows() -> None:
    settings = load_settings(REPO / "config" / "imagehub.toml")
    assert settings.gateway.host == "127.0.0.1" and settings.gateway.admin_ssh_port == 2200
    readme = (REPO / "README.md").read_text()
    assert "account key add admin - <" in readme and "ssh -t -p 2200 admin@127.0.0.1" in readme
