"""Smoke test: `imagehub tui` in a real pseudo-terminal shows the list and quits on `q`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pexpect
import pytest

from core.catalog.catalog import Catalog
from tests.conftest import REPO, People


def _command(args: list[str]) -> list[str]:
    script = Path(sys.executable).parent / "imagehub"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", f"import sys; from cli.main import main; sys.exit(main({args!r}))"]


@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX system")
@pytest.mark.parametrize("args", [["tui"], []], ids=["imagehub tui", "bare imagehub"])
def test_tui_in_a_real_terminal_lists_images_and_quits(
    images: Catalog, people: People, config_path: Path, args: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env.update(IMAGEHUB_CONFIG=str(config_path), IMAGEHUB_ACCOUNT="acme-owner", TERM="xterm-256color", LANG="C.UTF-8")
    command = _command(args)
    child = pexpect.spawn(
        command[0], command[1:], env=env, cwd=str(REPO), dimensions=(24, 80), encoding="utf-8", timeout=30
    )
    try:
        child.expect("web-frontend")
        child.expect("acme-owner")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in (child.before or "")
    log = config_path.parent / "var" / "logs" / "tui.log"
    assert log.is_file() and "tui started by acme-owner" in log.read_text()
