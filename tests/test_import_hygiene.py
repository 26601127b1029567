"""core/ imports nothing of the faces: importing it pulls in no UI or server library."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_ui_or_server_library():
    code = (
        "import sys, pkgutil, importlib, core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'):\n"
        "    if '.migrations' not in m.name: importlib.import_module(m.name)\n"
        "bad = [m for m in ('textual', 'rich', 'aiohttp', 'asyncssh', 'pyftpdlib', 'tui', 'gateway') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
