"""A VM's serial console, as qemu exposes it on a unix socket chardev.

qemu's side, for example:

    -chardev socket,id=serial0,path=PATH,server=on,wait=off,logfile=LOG -serial chardev:serial0

`SerialConsole(PATH)` connects (waiting for the socket to appear), `expect()` reads until a pattern
shows, `login()` answers the getty, `run()` runs a shell command and returns its output. Everything
read is kept in `transcript`, and the errors quote its tail.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from pathlib import Path

PROMPT = re.compile(rb"[#$] $")
# Kernel and cloud-init messages may follow a prompt on its line: the prompts are not anchored at the end.
LOGIN = re.compile(rb"\blogin: ")
PASSWORD = re.compile(rb"Password: ")
LOGIN_INCORRECT = re.compile(rb"Login incorrect")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class ConsoleTimeout(TimeoutError):
    """The expected text did not come in time; the message quotes the console's last lines."""


class SerialConsole:
    def __init__(self, path: Path | str, connect_timeout: float = 30.0) -> None:
        self.path = str(path)
        self.transcript = bytearray()
        self._unread = bytearray()
        self._sock = self._connect(connect_timeout)

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)  # the socket file appears when qemu has started; nothing to await on

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tail(self, chars: int = 2000) -> str:
        return self.transcript[-chars:].decode("utf-8", "replace")

    def _read_some(self, deadline: float) -> bool:
        """Read what has come (waiting until `deadline`); False once the VM closed the console."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            return True
        if not chunk:
            return False
        self.transcript += chunk
        self._unread += ANSI.sub(b"", chunk.replace(b"\r", b""))
        return True

    def expect(self, pattern: str | bytes | re.Pattern[bytes], timeout: float, consume: bool = True) -> re.Match[bytes]:
        """Read until `pattern` matches the text not yet consumed; consume it through the match.

        With `consume=False` the text stays unread, for a later `expect` (or `login`) to match again.
        """
        regex = _compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            # A bytes copy: a match on the bytearray itself would change as it is consumed.
            match = regex.search(bytes(self._unread))
            if match is not None:
                if consume:
                    del self._unread[: match.end()]
                return match
            if time.monotonic() >= deadline:
                raise ConsoleTimeout(f"no {regex.pattern!r} within {timeout:.0f}s; console ends:\n{self.tail()}")
            if not self._read_some(deadline):
                raise ConsoleTimeout(f"console closed before {regex.pattern!r}; console ends:\n{self.tail()}")

    def send(self, text: str) -> None:
        self._sock.sendall(text.encode("utf-8"))

    def login(self, user: str, password: str, timeout: float) -> bool:
        """Log in at the getty: True when a shell prompt came, False on "Login incorrect".

        Expects the `login:` prompt to be showing (or to come); after a failed attempt the getty
        shows `login:` again, so `login()` may be called again.
        """
        deadline = time.monotonic() + timeout
        self.expect(LOGIN, timeout)
        self.send(user + "\n")
        self.expect(PASSWORD, max(1.0, deadline - time.monotonic()))
        self.send(password + "\n")
        outcome = self.expect(re.compile(PROMPT.pattern + b"|" + LOGIN_INCORRECT.pattern, re.MULTILINE),
                              max(1.0, deadline - time.monotonic()))  # fmt: skip
        if LOGIN_INCORRECT.match(outcome.group(0)):
            return False
        self.run("stty -echo; export PS1='# ' TERM=dumb", timeout=max(5.0, deadline - time.monotonic()))
        return True

    def run(self, command: str, timeout: float) -> str:
        """Run `command` in the logged-in shell; its output (stdout and stderr), without the echo."""
        marker = secrets.token_hex(6)
        # The marker is split in the command line, so only the shell's output holds it whole.
        self.send(f"echo '{marker[:6]}''{marker[6:]}'-begin; {command}; echo '{marker[:6]}''{marker[6:]}'-end\n")
        self.expect(re.compile(re.escape(marker.encode()) + rb"-begin\n"), timeout)
        match = self.expect(re.compile(rb"(.*?)" + re.escape(marker.encode()) + rb"-end\n", re.DOTALL), timeout)
        return match.group(1).decode("utf-8", "replace")


def _compile(pattern: str | bytes | re.Pattern[bytes]) -> re.Pattern[bytes]:
    if isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, str):
        pattern = pattern.encode("utf-8")
    return re.compile(pattern, re.MULTILINE)
