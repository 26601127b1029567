"""The admin front door: `ssh -p ADMIN_SSH_PORT host` lands in the TUI as the account owning the key.

- A port of its own (`gateway.admin_ssh_port`, off when 0) with its own host key
  (`admin_ssh_host_ed25519_key`, made by `imagehub init`), apart from the download SFTP port, so
  that token users and admins never share an authentication path.
- Public-key authentication only. The identity is the account of the key whose *signature* was
  verified: asyncssh calls `validate_public_key` for every offered key and again, synchronously
  followed by the signature check, for the signed request that ends authentication, so the key seen
  last before `auth_completed` is the verified one (a key merely offered never decides).
- With a PTY, each session runs `imagehub --as ACCOUNT tui` as its own child on a real pseudo-terminal
  (the client's TERM and window size; resizes forwarded). Quitting the TUI ends the session with its
  exit status; a client that hangs up ends the child; one session's crash touches no other.
- Without a PTY, `ssh host imagehub-subcommand ...` runs that CLI subcommand as the account (as
  soft-serve does); a bare `ssh -T host` gets "this service needs a terminal (use ssh -t)", exit 1.
  Its standard input and output are passed through as bytes (`image export-xlsx -`, `account key add
  NAME -`); the child knows it runs for the door (`IMAGEHUB_VIA_SSH=1`) and refuses any argument that
  names a server path (docs/security.md L6).
- A session lives only as long as its account's standing: every ACCOUNT_CHECK_SECONDS one query
  reads the accounts of the open sessions, and a session whose account was deleted, or moved to
  another tenant, or given another role or perm (`imagehub account delete|set`) ends: the child
  gets SIGHUP, the client "session closed: ..." and exit status 1. A new session on a connection
  that logged in before such a change is refused the same way (log in again).
- Port/agent/X11 forwarding and SCP are refused. Login timeout, idle timeout and a cap on
  concurrent sessions; every login and refusal goes to the audit trail with fingerprint and address.
- A connection that starts authenticating and ends without it is a failed login of its address
  (gateway/throttle.py, shared with the download ports under `imagehub serve`). Once the address
  keeps failing, the first unknown key of each new connection is answered late; a known key never
  waits (one failure per connection, so an agent offering several keys before the right one costs
  an admin nothing on an address that has not been failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shlex
import signal
import struct
import sys
import termios
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncssh

from core.accounts import accounts, keys
from core.catalog import audit, db
from core.catalog.catalog import Catalog
from gateway.throttle import LoginThrottle, host_of

log = logging.getLogger("imagehub.admin_ssh")
NEEDS_TERMINAL = "this service needs a terminal (use ssh -t)\r\n"
STANDING_LOST = "imagehub: error: this account was deleted or changed since the connection logged in; log in again\r\n"
ACCOUNT_CHECK_SECONDS = 2.0
REMOTE_REFUSED = {"serve", "tui", "init"}


def _audit(catalog: Catalog, actor: str, action: str, outcome: str, reason: str | None = None, **detail: Any) -> None:
    with db.write_session(catalog.engine) as session:
        audit.record(session, actor, action, detail.pop("target", None), outcome, reason, **detail)


async def _late(answer: bool, delay: float) -> bool:
    await asyncio.sleep(delay)
    return answer


class _AdminServer(asyncssh.SSHServer):
    def __init__(self, front_door: AdminFrontDoor) -> None:
        self.front_door = front_door
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = "?"
        self._last: tuple[str, str] | None = None  # (account, fingerprint) of the last validated key
        self.authenticated = False
        self.offered: list[str] = []
        self.host = "?"
        self.auth_started = False
        self.waited = False  # the backoff is owed once per connection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.host = host_of(peer)
        self.address = f"{peer[0]}:{peer[1]}" if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.auth_started and not self.authenticated:
            self.front_door.throttle.failed(self.host, "admin_ssh")
        if not self.authenticated and not self.offered:
            _audit(self.front_door.catalog, "-", "admin_ssh.login", "refused", "no public key offered",
                   address=self.address, fingerprints="none")  # fmt: skip

    def begin_auth(self, username: str) -> bool:
        self.auth_started = True
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool | Awaitable[bool]:
        # An awaitable only for a late refusal (asyncssh accepts both): a known key is answered at
        # once, its signature check following synchronously (see the module docstring).
        blob = key.public_data
        fingerprint = keys.fingerprint_of_blob(blob)
        self.offered.append(fingerprint)
        account = keys.account_for_key(self.front_door.catalog, blob)
        self._last = (account, fingerprint) if account else None
        if account is None:
            _audit(self.front_door.catalog, "-", "admin_ssh.login", "refused", "unknown key",
                   address=self.address, fingerprints=fingerprint)  # fmt: skip
            if not self.waited:
                self.waited = True
                delay = self.front_door.throttle.pending(self.host)
                if delay:
                    return _late(False, delay)
        return account is not None

    def auth_completed(self) -> None:
        assert self.conn is not None and self._last is not None
        account, fingerprint = self._last
        self.authenticated = True
        self.conn.set_extra_info(imagehub_account=account, imagehub_fingerprint=fingerprint,
                                 imagehub_address=self.address)  # fmt: skip
        # The rights the sessions of this connection start with; they end when these change.
        self.conn.set_extra_info(imagehub_standing=accounts.standing_of(self.front_door.catalog, account))
        _audit(self.front_door.catalog, account, "admin_ssh.login", "ok", address=self.address,
               fingerprint=fingerprint, target=account)  # fmt: skip
        log.info("admin ssh login: %s with %s from %s", account, fingerprint, self.address)

    # Forwarding of any kind is refused (asyncssh's defaults, made explicit).
    def connection_requested(self, *args: Any) -> bool:
        return False

    def server_requested(self, *args: Any) -> bool:
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        return False


def _set_winsize(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(height, 1), max(width, 1), 0, 0))


def _make_controlling_tty() -> None:
    """In the child, after setsid: make its stdin (the PTY's slave) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class AdminFrontDoor:
    """Accepts admin SSH sessions and runs each in a child process."""

    def __init__(self, catalog: Catalog, throttle: LoginThrottle | None = None) -> None:
        self.catalog = catalog
        gw = catalog.settings.gateway
        self.throttle = throttle if throttle is not None else LoginThrottle.from_settings(gw)
        self.idle_timeout = gw.admin_ssh_idle_timeout_seconds
        self.max_sessions = gw.admin_ssh_max_sessions
        self.sessions: set[asyncio.Task[None]] = set()
        self.children: set[asyncio.subprocess.Process] = set()
        self.account_check_seconds = ACCOUNT_CHECK_SECONDS
        self.watched: dict[asyncio.Task[None], tuple[str, accounts.Standing]] = {}
        self.session_child: dict[asyncio.Task[None], asyncio.subprocess.Process] = {}
        self.cut_reasons: dict[asyncio.Task[None], str] = {}
        self._watcher: asyncio.Task[None] | None = None

    def child_env(self, account: str, term: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_ACCOUNT")}
        settings = self.catalog.settings
        if settings.config_path is not None:
            env["IMAGEHUB_CONFIG"] = str(settings.config_path)
        env["IMAGEHUB_STORAGE__DATA_DIR"] = str(settings.data_dir)
        if settings.database.url:
            env["IMAGEHUB_DATABASE__URL"] = settings.database.url
        env["IMAGEHUB_ACCOUNT"] = account
        # Tells the child it runs for the door: no argument may then name a server path (docs/security.md L6).
        # The client cannot unset it: this environment is built here and no `env` request is passed on.
        env["IMAGEHUB_VIA_SSH"] = "1"
        env["TERM"] = term or "xterm-256color"
        # The size comes from the PTY (and SIGWINCH); COLUMNS/LINES would pin it.
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        return env

    def command_for(self, account: str, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "cli.main", "--as", account, *args]

    async def handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.sessions) >= self.max_sessions:
            process.stderr.write(b"too many admin sessions; try again later\r\n")
            process.exit(1)
            return
        self.sessions.add(task)
        account = process.get_extra_info("imagehub_account")
        try:
            if not await self.watch(task, account, process.get_extra_info("imagehub_standing")):
                process.stderr.write(STANDING_LOST.encode())
                process.exit(1)
            elif process.subsystem:
                process.stderr.write(f"subsystem {process.subsystem} is not offered\r\n".encode())
                process.exit(1)
            elif process.command:
                await self.run_command(process, account, process.command)
            elif process.get_terminal_type() is None:
                process.stderr.write(NEEDS_TERMINAL.encode())
                process.exit(1)
            else:
                await self.run_tui(process, account)
        except Exception:
            log.exception("admin ssh session of %s failed", account)
            with contextlib.suppress(Exception):
                process.exit(1)
        finally:
            self.sessions.discard(task)
            for table in (self.watched, self.session_child, self.cut_reasons):
                table.pop(task, None)

    # ---- sessions follow their account ----

    async def watch(self, task: asyncio.Task[None], account: str, standing: accounts.Standing | None) -> bool:
        """Follow the session's account from now on; False if it has already lost the standing its
        connection logged in with (deleted, moved, role or perm changed)."""
        if standing is None:
            return False
        current = await asyncio.to_thread(accounts.standings, self.catalog, [standing.account_id])
        if current.get(standing.account_id) != standing:
            return False
        self.watched[task] = (account, standing)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_accounts())
        return True

    async def _watch_accounts(self) -> None:
        """One query per period for every open session's account; ends the sessions that lost theirs."""
        while True:
            await asyncio.sleep(self.account_check_seconds)
            watched = dict(self.watched)
            if not watched:
                continue
            try:
                ids = {standing.account_id for _, standing in watched.values()}
                current = await asyncio.to_thread(accounts.standings, self.catalog, ids)
            except Exception:
                log.exception("re-reading the accounts of admin ssh sessions failed")
                continue
            for task, (account, standing) in watched.items():
                now = current.get(standing.account_id)
                if now != standing and task not in self.cut_reasons:
                    what = "deleted" if now is None else "changed (tenant, role or perm); log in again"
                    self.cut(task, f"account {account} was {what}")
                    _audit(self.catalog, account, "admin_ssh.cut", "ok", f"account {what.split(' ', 1)[0]}",
                           target=account)  # fmt: skip

    def adopt(self, child: asyncio.subprocess.Process) -> None:
        """A session's child process: ended by `close` and by `cut`."""
        self.children.add(child)
        task = asyncio.current_task()
        if task is not None:
            self.session_child[task] = child
            if task in self.cut_reasons:
                self._hang_up(child)

    def cut(self, task: asyncio.Task[None], reason: str) -> None:
        """End a session from outside: its child gets SIGHUP (SIGKILL 5 s later), the client `reason`."""
        log.info("admin ssh session cut: %s", reason)
        self.cut_reasons[task] = reason
        child = self.session_child.get(task)
        if child is not None:
            self._hang_up(child)

    def _hang_up(self, child: asyncio.subprocess.Process) -> None:
        def kill() -> None:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)

        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGHUP)
        asyncio.get_running_loop().call_later(5.0, kill)

    def finish(self, process: asyncssh.SSHServerProcess[bytes], status: int) -> None:
        """Report the session's end: its child's status, or 1 and why if it was cut."""
        task = asyncio.current_task()
        reason = self.cut_reasons.get(task) if task is not None else None
        if reason is not None:
            with contextlib.suppress(Exception):
                process.stderr.write(f"\r\nimagehub: session closed: {reason}\r\n".encode())
            status = 1
        process.exit(status if status >= 0 else 1)

    async def run_command(self, process: asyncssh.SSHServerProcess[bytes], account: str, command: str) -> None:
        """Run one CLI subcommand as the account; output and exit status go back to the client."""
        try:
            args = shlex.split(command)
        except ValueError as exc:
            process.stderr.write(f"imagehub: error: {exc}\n".encode())
            process.exit(2)
            return
        if args and args[0] == "imagehub":
            args = args[1:]
        for arg in args:
            if arg.split("=", 1)[0] in ("--as", "--config"):
                process.stderr.write(f"imagehub: error: {arg.split('=', 1)[0]} is not allowed over SSH\n".encode())
                process.exit(2)
                return
        if args and args[0] in REMOTE_REFUSED:
            if args[0] == "tui":
                process.stderr.write(NEEDS_TERMINAL.encode())
                process.exit(1)
                return
            process.stderr.write(f"imagehub: error: {args[0]} is not available over SSH\n".encode())
            process.exit(2)
            return
        if not args:
            process.stderr.write(NEEDS_TERMINAL.encode())
            process.exit(1)
            return
        _audit(self.catalog, account, "admin_ssh.command", "ok", command=" ".join(args[:3]), target=account)
        child = await asyncio.create_subprocess_exec(
            *self.command_for(account, args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.child_env(account, None),
            start_new_session=True,
        )
        self.adopt(child)
        feed: asyncio.Task[None] | None = None
        try:

            async def pump(source: asyncio.StreamReader, sink: Any) -> None:
                # Bytes as they are (a workbook on stdout); drain so a slow client holds the child back.
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()

            async def forward_stdin(sink: asyncio.StreamWriter) -> None:
                """The client's standard input to the child's (`account key add NAME -`), until EOF."""
                with contextlib.suppress(ConnectionError, asyncssh.Error):
                    while data := await process.stdin.read(65536):
                        sink.write(data)
                        await sink.drain()
                sink.close()

            assert child.stdin is not None and child.stdout is not None and child.stderr is not None
            feed = asyncio.create_task(forward_stdin(child.stdin))
            await asyncio.gather(pump(child.stdout, process.stdout), pump(child.stderr, process.stderr))
            status = await child.wait()
        finally:
            if feed is not None:
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await feed
            self.children.discard(child)
            if child.returncode is None:
                child.kill()
                await child.wait()
        self.finish(process, status)

    async def run_tui(self, process: asyncssh.SSHServerProcess[bytes], account: str) -> None:
        width, height, _, _ = process.get_terminal_size()
        master, slave = os.openpty()
        _set_winsize(slave, width or 80, height or 24)
        try:
            child = await asyncio.create_subprocess_exec(
                *self.command_for(account, ["tui"]),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self.child_env(account, process.get_terminal_type()),
                start_new_session=True,
                preexec_fn=_make_controlling_tty,
            )
        finally:
            os.close(slave)
        self.adopt(child)
        loop = asyncio.get_running_loop()
        output_done = asyncio.Event()
        last_input = time.monotonic()

        def on_output() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if data:
                process.stdout.write(data)
            else:
                loop.remove_reader(master)
                output_done.set()

        loop.add_reader(master, on_output)

        async def forward_input() -> None:
            nonlocal last_input
            while True:
                try:
                    data = await process.stdin.read(65536)
                except asyncssh.TerminalSizeChanged as change:
                    _set_winsize(master, change.width, change.height)
                    continue
                except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                    continue
                except (asyncssh.DisconnectError, asyncssh.ConnectionLost, BrokenPipeError):
                    data = b""
                if not data:
                    return  # the client hung up
                last_input = time.monotonic()
                os.write(master, data)

        async def idle_watch() -> None:
            while True:
                await asyncio.sleep(min(5.0, self.idle_timeout / 2))
                if time.monotonic() - last_input > self.idle_timeout:
                    return

        input_task = asyncio.create_task(forward_input())
        idle_task = asyncio.create_task(idle_watch())
        wait_task = asyncio.create_task(child.wait())
        try:
            done, _ = await asyncio.wait({input_task, idle_task, wait_task}, return_when=asyncio.FIRST_COMPLETED)
            if wait_task not in done:
                reason = "idle timeout" if idle_task in done else "client hung up"
                log.info("admin ssh session of %s: %s; ending its TUI", account, reason)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGHUP)
                try:
                    await asyncio.wait_for(asyncio.shield(wait_task), 5)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
                    await wait_task
                if idle_task in done:
                    process.stderr.write(b"\r\nimagehub: session closed after idle timeout\r\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(output_done.wait(), 2)
            status = wait_task.result()
            self.finish(process, status)
        finally:
            for task in (input_task, idle_task):
                task.cancel()
            loop.remove_reader(master)
            os.close(master)
            self.children.discard(child)

    async def close(self, timeout: float = 5.0) -> None:
        """End every session's child (SIGHUP, as a terminal hang-up does) and wait for them."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        children = list(self.children)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGHUP)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                await child.wait()


async def listen(
    catalog: Catalog, host: str, port: int, throttle: LoginThrottle | None = None
) -> tuple[asyncssh.SSHAcceptor, AdminFrontDoor]:
    """Start the admin SSH listener; returns the acceptor (for its port and close) and the front door.
    `throttle`: the failed-login backoff shared with other ports (else one of its own)."""
    front_door = AdminFrontDoor(catalog, throttle)
    gw = catalog.settings.gateway
    host_key = Path(catalog.settings.data_dir) / "admin_ssh_host_ed25519_key"
    acceptor = await asyncssh.create_server(
        lambda: _AdminServer(front_door),
        host,
        port,
        server_host_keys=[str(host_key)],
        process_factory=front_door.handle,
        encoding=None,
        line_editor=False,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
        login_timeout=gw.admin_ssh_login_timeout_seconds,
        keepalive_interval=30,
    )
    return acceptor, front_door
