"""`make run` (`python -m cli.run --demo`): init, start `imagehub serve` in the background, wait until
it has bound every port, then open the TUI; quitting the TUI stops that serve.

Honest about the gateway: if serve cannot start (a port taken, a bad config), the TUI does not
open. The reason (serve's own error line, also in data_dir/serve.log) is printed on one line and
the exit status is 1. If serve dies later, the TUI says so in a banner and runs the jobs itself
(tui/app.py watches it). serve.log is appended to, never overwritten.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cli.main import PROG
from cli.main import main as imagehub

READY_SECONDS = 60.0  # how long serve may take to bind its ports
SERVE_LOG = "serve.log"
EXIT_GRACE_SECONDS = 60.0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.run", description="init, start the gateway, open the TUI")
    parser.add_argument("--config", metavar="PATH", help="else $IMAGEHUB_CONFIG, else ./config/imagehub.toml")
    parser.add_argument("--demo", action="store_true", help="seed the demo tenant (on the first run only)")
    return parser.parse_args(argv)


def imagehub_command() -> list[str]:
    """The installed `imagehub` script beside this Python (so that `ps` and `pgrep -f "imagehub serve"` name
    the gateway as the README does), else this Python running the CLI module."""
    script = Path(sys.executable).with_name(PROG)
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli.main"]


def serve_failure(log_text: str) -> str:
    """The line of serve's output that says why it stopped: its `imagehub: error:` line, else the last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(f"{PROG}: error:"):
            return line.removeprefix(f"{PROG}: error:").strip()
    return lines[-1] if lines else "it wrote nothing"


def wait_until_serving(proc: subprocess.Popen[bytes], data_dir: Path, timeout: float = READY_SECONDS) -> bool:
    """Whether serve announced itself (data_dir/serve.pid holds its PID: written once every port is
    bound); False once it has exited or `timeout` has passed. Waits on the process itself, in short
    steps, so that an exit is seen at once."""
    from core.links.gateway_status import serve_pid

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serve_pid(data_dir) == proc.pid:
            return True
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        return serve_pid(data_dir) == proc.pid
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (serve releases its jobs and closes its ports), SIGKILL if it does not end."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(EXIT_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    from core.catalog.errors import ImagehubError
    from core.catalog.settings import load_settings

    args = _parse(argv)
    config = ["--config", args.config] if args.config else []
    status = imagehub([*config, "init", *(["--demo"] if args.demo else [])])
    if status != 0:
        return status
    try:
        settings = load_settings(args.config)
    except ImagehubError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
    log_path = settings.data_dir / SERVE_LOG
    with log_path.open("ab") as log:
        start = log.tell()
        command = [*imagehub_command(), "serve", *config]
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        if not wait_until_serving(proc, settings.data_dir):
            stop(proc)
            with log_path.open("rb") as log:
                log.seek(start)
                reason = serve_failure(log.read().decode(errors="replace"))
            sys.stderr.write(f"{PROG}: the gateway did not start: {reason} (details in {log_path})\n")
            return 1
        return imagehub([*config, "tui"])
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
