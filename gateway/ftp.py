"""FTP downloads and uploads (pyftpdlib): the token is the user name, any password.

pyftpdlib drives its sessions from an IOLoop, one thread; one loop sends with one core only. So
the gateway runs `gateway.ftp_threads` loops (0: one per usable CPU core), each a thread of its
own. The first loop also holds the listening socket: each new connection is handed to the loop
with the fewest sessions (through that loop's eventfd, so it starts at once) and lives there to
its end: its commands, its data connection, its idle timer, its cut. A loop polls only its own
sessions (bytes accounting, cuts requested by `Registry.tick`), so a session is only ever closed
by its own loop's thread. One listening socket: port 0 needs no care, connections are spread
evenly (SO_REUSEPORT siblings would leave it to a hash: 8 connections split 6/2 or worse about
one time in three).

With a TLS certificate configured, explicit FTPS (`AUTH TLS`) is offered too, when pyOpenSSL is
installed (pyftpdlib's TLS support needs it); plain FTP stays available for stock clients.

After login the session sees a read-only root holding only the link's file and its `.sha256`:
`LIST`, `NLST`, `MLSD`, `MLST`, `SIZE`, `MDTM`, `REST`, `RETR` work (with sendfile); every write
(`STOR`, `APPE`, `STOU`, `DELE`, `MKD`, `RMD`, `RNFR`/`RNTO`, `MFMT`) is refused with 550 and
`SITE` is not offered. A bad, expired or revoked token gets `530` at login, after pyftpdlib's
half-second delay or the address's longer backoff (gateway/throttle.py). The token never reaches a
log line (pyftpdlib's own lines carry the link id instead).

An upload token's session sees one writable file instead (gateway/ftp_upload.py): any plain name
is the upload; `SIZE` answers the bytes received so far; `STOR` writes from byte 0 (only while
nothing has arrived), `REST n` + `STOR` and `APPE` resume at the upload's offset (n must equal it:
no gaps, no overwriting); `RETR` and every other change are refused. The Receiver is opened in a
thread of its own (it may hash the bytes already on disk first: after a restart, tens of seconds
for a large upload) while the session reads no command; the writes themselves run in the loop, in
1 MiB batches. Bytes beyond the upload's size abort the data connection with 552.

One login per session (docs/security.md T16): once logged in, `USER` is refused with
`530 Can't change to another user.` and `REIN` with `502` (as vsftpd does), so a session holds at
most one connection slot of its link, released when it closes. Before that, a session may fail
`max_login_attempts` (2) times and is then closed: a client cannot try tokens forever on one
connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS, FilesystemError
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.handlers.ftp.control import proto_cmds as _PROTO_CMDS
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from core.importer.receiver import Receiver, UploadRefused, current_offset
from core.links.links import UPLOADED, Refused, Served
from core.links.uploads import Receiving
from gateway.ftp_upload import NOT_HERE, NOT_READABLE, UPLOAD_PERMS, UploadDTPMixin, UploadFile, UploadFS
from gateway.throttle import counts_as_failed_login
from gateway.transfers import Conn, Registry, Transfer, reset_on_close

log = logging.getLogger("imagehub.gateway.ftp")
READ_PERMS = "elr"
REFUSED_CMDS = ("SITE", "SITE CHMOD", "SITE HELP")
POLL_SECONDS = 0.25  # how often a loop accounts bytes and closes cut sessions
LOOP_TIMEOUT = 0.5  # longest wait of a loop's epoll; scheduled calls (idle timers) run after it
# Bytes asked of one sendfile() call. pyftpdlib's 64 KiB costs a pass of the loop per 64 KiB; measured
# here (8 lftp streams writing to disk, 2 loops): 256 KiB-1 MiB best, 4 MiB and more as slow as 64 KiB.
SENDFILE_CHUNK = 512 * 1024


class OneFileFS(AbstractedFS):
    """A virtual root `/` holding only the served file and its `.sha256`; nothing can change."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        served: Served = cmd_channel.served
        super().__init__(str(served.path.parent), cmd_channel)
        self.served = served

    def _names(self) -> tuple[str, ...]:
        return self.served.names()

    def _name_of(self, path: str) -> str | None:
        """The visible name a real path stands for; "" for the root; None for anything else."""
        path = os.path.normpath(path)
        if path == os.path.normpath(self.root):
            return ""
        parent, name = os.path.split(path)
        if parent == os.path.normpath(self.root) and name in self._names():
            return name
        return None

    def validpath(self, path: str) -> bool:
        return self._name_of(path) is not None

    def realpath(self, path: str) -> str:
        return path

    def _require(self, path: str) -> str:
        name = self._name_of(path)
        if name is None:
            raise FilesystemError("No such file or directory")
        return name

    def open(self, filename: str, mode: str) -> Any:
        if any(flag in mode for flag in "wax+"):
            raise FilesystemError("Read-only")
        name = self._require(filename)
        if not name:
            raise FilesystemError("Is a directory")
        return open(filename, "rb")

    def mkstemp(self, *args: Any, **kwargs: Any) -> Any:
        raise FilesystemError("Read-only")

    def chdir(self, path: str) -> None:
        if self._name_of(path) != "":
            raise FilesystemError("No such directory")
        self.cwd = "/"

    def mkdir(self, path: str) -> None:
        raise FilesystemError("Read-only")

    def rmdir(self, path: str) -> None:
        raise FilesystemError("Read-only")

    def remove(self, path: str) -> None:
        raise FilesystemError("Read-only")

    def rename(self, src: str, dst: str) -> None:
        raise FilesystemError("Read-only")

    def chmod(self, path: str, mode: Any) -> None:
        raise FilesystemError("Read-only")

    def utime(self, path: str, timeval: Any) -> None:
        raise FilesystemError("Read-only")

    def listdir(self, path: str) -> list[str]:
        if self._require(path) != "":
            raise FilesystemError("Not a directory")
        return list(self._names())

    listdirinfo = listdir

    def stat(self, path: str) -> os.stat_result:
        self._require(path)
        return os.stat(path)

    lstat = stat

    def readlink(self, path: str) -> str:
        raise FilesystemError("Not a symbolic link")

    def isfile(self, path: str) -> bool:
        return bool(self._name_of(path))

    def islink(self, path: str) -> bool:
        return False

    def isdir(self, path: str) -> bool:
        return self._name_of(path) == ""

    def getsize(self, path: str) -> int:
        self._require(path)
        return os.path.getsize(path)

    def getmtime(self, path: str) -> float:
        self._require(path)
        return os.path.getmtime(path)

    def lexists(self, path: str) -> bool:
        return self._name_of(path) is not None

    def get_user_by_uid(self, uid: int) -> str:
        return "imagehub"

    def get_group_by_gid(self, gid: int) -> str:
        return "imagehub"


class TokenAuthorizer(DummyAuthorizer):
    """Logins are tokens (any password); a download session gets read-only rights only (an upload
    session's handler switches to UploadAuthorizer)."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.registry = registry

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        peer = f"{handler.remote_ip}:{handler.remote_port}"
        try:
            opened = self.registry.open_token(username, "ftp", peer)
            conn = self.registry.open_conn(opened.link_id, "ftp", peer, handler.request_cut)
        except Refused as exc:
            message = "Too many connections for this link." if exc.reason == "too_many_connections" else str(exc)
            if counts_as_failed_login(exc.reason):
                handler.login_delay = self.registry.throttle.failed(handler.remote_ip, "ftp")
            raise AuthenticationFailed(message) from None
        handler.attach(opened, conn)

    def get_home_dir(self, username: str) -> str:
        return "/"

    def has_user(self, username: str) -> bool:
        return True

    def get_msg_login(self, username: str) -> str:
        return "Read-only access to one image file."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def get_perms(self, username: str) -> str:
        return READ_PERMS

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in READ_PERMS

    def impersonate_user(self, username: str, password: str) -> None:
        return None

    def terminate_impersonation(self, username: str) -> None:
        return None


class UploadAuthorizer(TokenAuthorizer):
    """An upload session's rights: every command reaches the handler, which takes STOR and APPE of
    the one file and refuses the rest with a message that says why."""

    def get_msg_login(self, username: str) -> str:
        return "Upload access: one file, written with STOR or APPE (REST to resume)."

    def get_perms(self, username: str) -> str:
        return UPLOAD_PERMS

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return True


class GatewayFTPHandler(FTPHandler):
    """One FTP session of one link."""

    abstracted_fs = OneFileFS
    use_sendfile = True
    permit_foreign_addresses = False
    permit_privileged_ports = False
    auth_failed_timeout = 0.5
    max_login_attempts = 2
    log_prefix = "%(remote_ip)s:%(remote_port)s"
    proto_cmds = {k: v for k, v in _PROTO_CMDS.items() if k not in REFUSED_CMDS}
    registry: Registry
    gateway: FtpGateway
    upload_authorizer: UploadAuthorizer
    username: str  # pyftpdlib's: the name the client gave to USER
    _restart_position: int  # pyftpdlib's: the offset of a pending REST
    loop: FtpLoop  # set on the per-loop subclass the session was made from
    _received_seen = 0  # an upload's data channel bytes at the last poll

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self.served: Served | None = None
        self.receiving: Receiving | None = None  # an upload session's upload
        self.upload_done = False  # this session brought the upload's last byte
        self._opening: Transfer | None = None  # a STOR/APPE whose Receiver a thread is opening
        self._held: list[tuple[str, str, str]] = []  # commands that came while it opens
        self.link_conn: Conn | None = None
        self.transfer: Transfer | None = None
        self.cut_reason: str | None = None
        self.counted = True  # in `loop.load` (the acceptor counted the connection in)
        self.login_delay = 0.0  # the address's backoff owed by the failed login being answered
        self._auth_reply: Any = None  # the delayed 530 of a failed login, while it waits
        self.loop.sessions.add(self)  # before pyftpdlib's __init__, which may close the session at once
        super().__init__(conn, server, ioloop)

    def attach(self, opened: Served | Receiving, conn: Conn) -> None:
        if self.link_conn is not None and self.link_conn is not conn:
            self.registry.close_conn(self.link_conn)  # never two slots for one session (T16)
        if isinstance(opened, Receiving):
            self.receiving = opened
            self.authorizer = self.upload_authorizer
            self.abstracted_fs = UploadFS
        else:
            self.served = opened
        self.link_conn = conn

    # --- logins: one per session, a bounded number of failures, failures answered late
    def ftp_USER(self, line: str) -> None:
        if self.authenticated:
            self.respond("530 Can't change to another user.")
            return
        super().ftp_USER(line)

    def ftp_REIN(self, line: str) -> None:
        self.respond("502 REIN not implemented.")

    def handle_auth_failed(self, msg: str, password: str) -> None:
        """pyftpdlib's, with the address's backoff if longer than `auth_failed_timeout`, and the
        delayed reply cancelled if the session closes first (e.g. cut at shutdown)."""
        delay, self.login_delay = max(self.auth_failed_timeout, self.login_delay), 0.0
        self.del_channel()  # nothing is read from the client until the reply is sent
        username, self.username = self.username, ""
        message = msg.capitalize() if msg else "Authentication failed."
        self._auth_reply = self.ioloop.call_later(
            delay, self._answer_auth_failed, username, password, message, _errback=self.handle_error
        )

    def _answer_auth_failed(self, username: str, password: str, message: str) -> None:
        self._auth_reply = None
        if self._closed:
            return
        self.add_channel()
        self.attempted_logins += 1
        if self.attempted_logins >= self.max_login_attempts:
            self.respond(f"530 {message} Disconnecting.")
            self.close_when_done()
        else:
            self.respond(f"530 {message}")
        self.log("failed login.")
        self.on_login_failed(username, password)

    def request_cut(self, reason: str) -> None:
        """Called from any thread; the session's own loop closes it on its next poll."""
        self.cut_reason = reason

    # --- never log the token
    def _redact(self, msg: str) -> str:
        name = getattr(self, "username", "")
        if name and name in msg:
            msg = msg.replace(name, self.link_conn.link_id if self.link_conn else "<token>")
        return msg

    def log(self, msg: str, logfun: Any = log.info) -> None:
        log.debug("%s:%s %s", self.remote_ip, self.remote_port, self._redact(msg))

    def logline(self, msg: str, logfun: Any = None) -> None:
        return None

    def logerror(self, msg: str) -> None:
        log.error("%s:%s %s", self.remote_ip, self.remote_port, self._redact(msg))

    def log_cmd(self, cmd: str, arg: str, respcode: int, respstr: str) -> None:
        return None

    # --- every write but an upload's STOR/APPE is refused here too, whatever the permissions say
    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        if self.receiving is not None:
            self.respond(NOT_HERE)
        else:
            self.respond("550 Read-only: this server only serves one file for download.")

    ftp_STOU = ftp_DELE = ftp_MKD = ftp_RMD = _read_only
    ftp_RNFR = ftp_RNTO = ftp_MFMT = ftp_SITE_CHMOD = _read_only

    def ftp_STOR(self, file: str, mode: str = "w") -> None:
        if self.receiving is None:
            self._read_only()
        else:
            self._upload(file, "STOR")

    def ftp_APPE(self, file: str) -> None:
        if self.receiving is None:
            self._read_only()
        elif self._restart_position:
            self.respond("450 Can't APPE while REST request is pending.")
        else:
            self._upload(file, "APPE")

    # --- uploads
    def upload_offset(self) -> int:
        """The upload's bytes so far (SIZE, listings)."""
        assert self.receiving is not None
        if self.upload_done:
            return self.receiving.size
        return current_offset(self.registry.catalog, self.receiving)

    def ftp_SIZE(self, path: str) -> None:
        if isinstance(self.fs, UploadFS) and self.fs.isfile(path):
            self.fs.shown = posixpath.basename(self.fs.fs2ftp(path))
        super().ftp_SIZE(path)

    def _upload(self, file: str, cmd: str) -> None:
        """STOR (at byte 0, or after `REST n`) or APPE of the upload: the offset rule is checked here
        against the bytes on disk, then the Receiver is opened in a thread; `_upload_opened` goes on."""
        assert self.link_conn is not None
        rest: int = self._restart_position
        self._restart_position = 0
        if not isinstance(self.fs, UploadFS) or not self.fs.isfile(file):
            self.respond("553 The upload is one file: give it a plain file name.")
            return
        if self._current_type != "i":
            self.respond("550 Uploads need binary mode: send TYPE I first.")
            return
        peer = f"{self.remote_ip}:{self.remote_port}"
        try:
            receiving = self.registry.validate_upload(self.username, "ftp", peer)
        except Refused as exc:
            if exc.reason == UPLOADED:
                self.respond("550 This upload is complete: every byte has arrived; it takes no more.")
            else:
                self.respond("550 This upload link is no longer valid.")
            return
        offset = current_offset(self.registry.catalog, receiving)
        asked = offset if cmd == "APPE" else rest
        if asked != offset:
            self.respond(self._wrong_offset(offset, asked, cmd, rest))
            return
        name = posixpath.basename(self.fs.fs2ftp(file))
        self.fs.shown = name
        transfer = self.registry.begin(self.link_conn, receiving.link_id, "ftp", peer, name)
        self._opening = transfer
        self.del_channel()  # no command is read until the Receiver is open
        opener = threading.Thread(
            target=self._open_receiver,
            args=(receiving, transfer, name, cmd, asked),
            name="ftp-upload-open",
            daemon=True,
        )
        opener.start()

    @staticmethod
    def _wrong_offset(offset: int, asked: int, cmd: str, rest: int) -> str:
        if cmd == "STOR" and not rest:
            return (
                f"553 This upload already has {offset} bytes: resume with REST {offset} then STOR, or with APPE"
                " (no overwriting)."
            )
        return (
            f"553 This upload has {offset} bytes; a write must continue at byte {offset}, not {asked}"
            " (no gaps, no overwriting)."
        )

    def _open_receiver(self, receiving: Receiving, transfer: Transfer, name: str, cmd: str, asked: int) -> None:
        """In a thread of its own: take the upload (maybe hashing its bytes on disk), then hand it to
        the session's loop."""
        result: Receiver | UploadRefused
        try:
            result = self.registry.receiver(receiving, transfer)
        except UploadRefused as exc:
            result = exc
        except Exception:
            log.exception("opening the upload of link %s failed", receiving.link_id)
            result = UploadRefused("the upload could not be opened here; try again later")
        if not self.loop.call_soon(lambda: self._upload_opened(result, transfer, name, cmd, asked)):
            if isinstance(result, Receiver):
                result.close()
            self.registry.end(transfer, "cut-shutdown")

    def _upload_opened(
        self, result: Receiver | UploadRefused, transfer: Transfer, name: str, cmd: str, asked: int
    ) -> None:
        """In the session's loop: the Receiver is open (or refused); start the transfer."""
        self._opening = None
        receiver = result if isinstance(result, Receiver) else None
        if self._closed:
            if receiver is not None:
                receiver.close()
            self.registry.end(transfer, "cut-" + self.cut_reason if self.cut_reason else "incomplete")
            return
        self.add_channel()
        try:
            if receiver is None:
                self.respond(f"450 {str(result).capitalize()}.")
                self.registry.end(transfer, "refused")
            elif receiver.offset != asked:  # another writer moved it meanwhile
                receiver.close()
                self.respond(self._wrong_offset(receiver.offset, asked, cmd, asked))
                self.registry.end(transfer, "refused")
            else:
                self._start_upload(UploadFile(receiver, name), transfer, cmd)
        finally:
            self._run_held()

    def _start_upload(self, upload: UploadFile, transfer: Transfer, cmd: str) -> None:
        """pyftpdlib's ftp_STOR from its file object on."""
        self.transfer = transfer
        if self.data_channel is not None:
            self.respond("125 Data connection already open. Transfer starting.")
            self.data_channel.file_obj = upload
            self.data_channel.enable_receiving(self._current_type, cmd)
        else:
            self.respond("150 File status okay. About to open data connection.")
            self._in_dtp_queue = (upload, cmd)

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if self._opening is not None:
            self._held.append((line, cmd, arg))  # answered in order once the upload is open
            return
        super().pre_process_command(line, cmd, arg)

    def _run_held(self) -> None:
        while self._held and self._opening is None and not self._closed:
            self.pre_process_command(*self._held.pop(0))

    # --- transfers
    def ftp_RETR(self, file: str) -> Any:
        if self.receiving is not None:
            self.respond(NOT_READABLE)
            return None
        assert self.served is not None and self.link_conn is not None
        peer = f"{self.remote_ip}:{self.remote_port}"
        try:
            self.registry.validate(self.username, posixpath.basename(self.fs.fs2ftp(file)), "ftp", peer)
        except Refused:
            self.respond("550 This download link is no longer valid.")
            return None
        result = super().ftp_RETR(file)
        if result:
            self.transfer = self.registry.begin(
                self.link_conn, self.served.link_id, "ftp", peer, os.path.basename(file)
            )
        return result

    def log_transfer(self, cmd: str, filename: str, receive: bool, completed: bool, elapsed: float, bytes: int) -> None:
        transfer, self.transfer = self.transfer, None
        if transfer is not None and cmd == "RETR":
            transfer.bytes = bytes
            status = "complete" if completed else ("cut-" + self.cut_reason if self.cut_reason else "incomplete")
            self.registry.end(transfer, status)
        elif transfer is not None and transfer.upload:  # its bytes are counted as the Receiver writes them
            channel = self.data_channel
            upload = channel.file_obj if channel is not None else None
            done = isinstance(upload, UploadFile) and upload.complete
            self.upload_done = self.upload_done or done
            if isinstance(upload, UploadFile) and upload.refused is not None:
                status = "refused"
            elif done:
                status = "complete"
            elif completed:  # the client closed the data connection before the upload's last byte
                status = "partial"
            else:
                status = "cut-" + self.cut_reason if self.cut_reason else "incomplete"
            self.registry.end(transfer, status)

    def poll(self) -> None:
        """In the session's loop: account bytes of the running transfer, close the session if cut."""
        transfer = self.transfer
        channel = self.data_channel
        if transfer is not None and channel is not None and not transfer.upload:
            sent = channel.get_transmitted_bytes()
            if sent > transfer.bytes:
                transfer.add(sent - transfer.bytes)
        if self.link_conn is not None and channel is not None:
            if self.receiving is None:
                self.link_conn.touch()
            else:  # an upload is active while bytes arrive: a stalled one gives way and is cut when idle
                received = int(getattr(channel, "tot_bytes_received", 0))
                if received != self._received_seen:
                    self._received_seen = received
                    self.link_conn.touch()
        if self.cut_reason is not None and not self._closed:
            kind = "upload" if self.receiving is not None else "download"
            with contextlib.suppress(Exception):
                self.respond(f"421 This {kind} link is no longer valid; closing.")
            if channel is not None:
                reset_on_close(channel.socket)
            self.close()

    def close(self) -> None:
        if self._auth_reply is not None:
            self._auth_reply, reply = None, self._auth_reply
            with contextlib.suppress(Exception):
                reply.cancel()
        if not self._closed:
            super().close()
            if self.transfer is not None and self.transfer.upload:  # a STOR whose data never connected
                transfer, self.transfer = self.transfer, None
                self.registry.end(transfer, "cut-" + self.cut_reason if self.cut_reason else "incomplete")
            if self.link_conn is not None:
                self.registry.close_conn(self.link_conn)
        self.loop.sessions.discard(self)
        if self.counted:
            self.counted = False
            self.loop.release()


class Waker:
    """An eventfd in one loop: `wake`, from any thread, makes that loop run `on_wake` at once."""

    def __init__(self, ioloop: Any, on_wake: Any) -> None:
        self.ioloop = ioloop
        self.on_wake = on_wake
        self._lock = threading.Lock()  # no write to a closed (and maybe reused) descriptor
        self._fileno: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ioloop.register(self._fileno, self, ioloop.READ)

    def wake(self) -> None:
        with self._lock:
            if self._fileno is not None:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_write(self._fileno, 1)

    # what pyftpdlib's IOLoop asks of what it polls
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:
        with self._lock:
            if self._fileno is None:
                return
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._fileno)
        self.on_wake()

    def handle_error(self) -> None:
        log.exception("FTP loop wake-up failed")

    def handle_close(self) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            fileno, self._fileno = self._fileno, None
        if fileno is not None:
            self.ioloop.unregister(fileno)
            os.close(fileno)


class FtpLoop:
    """One pyftpdlib IOLoop in a thread of its own, and the sessions it drives."""

    def __init__(self, gateway: FtpGateway, index: int, handler: type[GatewayFTPHandler]) -> None:
        self.gateway = gateway
        self.index = index
        self.ioloop = IOLoop()
        self.handler: type[GatewayFTPHandler] = type(f"{handler.__name__}{index}", (handler,), {"loop": self})
        self.sessions: set[GatewayFTPHandler] = set()
        self.inbox: deque[tuple[socket.socket, Any]] = deque()  # connections handed over, not yet taken
        self.calls: deque[Callable[[], None]] = deque()  # work handed over by other threads
        self._calls_lock = threading.Lock()
        self.load = 0  # connections given to this loop and not closed yet (sessions, inbox)
        self._load_lock = threading.Lock()
        self.closed = False
        self.waker = Waker(self.ioloop, self._take)
        self.thread = threading.Thread(target=self._run, name=f"ftp-gateway-{index}", daemon=True)

    def assign(self) -> None:
        """From the acceptor's thread: a new connection is this loop's."""
        with self._load_lock:
            self.load += 1

    def release(self) -> None:
        with self._load_lock:
            self.load -= 1

    def hand(self, sock: socket.socket, addr: Any) -> None:
        """From the acceptor's thread: this loop takes the connection over."""
        self.inbox.append((sock, addr))
        self.waker.wake()

    def call_soon(self, call: Callable[[], None]) -> bool:
        """From any thread: run `call` in this loop; False if the loop has closed (it never runs)."""
        with self._calls_lock:
            if self.closed:
                return False
            self.calls.append(call)
        self.waker.wake()
        return True

    def _run_calls(self) -> None:
        while self.calls:
            call = self.calls.popleft()
            try:
                call()
            except Exception:
                log.exception("FTP loop call failed")

    def _take(self) -> None:
        self._run_calls()
        while self.inbox:
            sock, addr = self.inbox.popleft()
            if self.gateway.stopping.is_set():
                sock.close()
                self.release()
            else:
                self.accept(sock, addr)
        if self.gateway.stopping.is_set():
            self.close_all()

    def accept(self, sock: socket.socket, addr: Any) -> None:
        """In this loop: a session for a new connection (pyftpdlib's FTPServer.handle_accepted).
        The session's close releases the connection's count in `load`."""
        server = self.gateway.server
        session = None
        try:
            session = self.handler(sock, server, ioloop=self.ioloop)
            if not session.connected:
                return
            if not server._accept_new_cons():
                session.handle_max_cons()
                return
            session.handle()
        except Exception:
            log.exception("FTP connection from %s failed", addr)
            if session is not None:
                session.close()
            else:
                sock.close()
                self.release()

    def _run(self) -> None:
        self.ioloop.call_every(POLL_SECONDS, self._poll)
        try:
            self.ioloop.loop(LOOP_TIMEOUT, blocking=True)
        except Exception:
            log.exception("FTP loop %d stopped on an error", self.index)
        finally:
            self.close_all()

    def _poll(self) -> None:
        for session in list(self.sessions):
            try:
                session.poll()
            except Exception:
                log.exception("FTP session poll failed")
        if self.gateway.stopping.is_set():
            self.close_all()

    def close_all(self) -> None:
        """Close every session, the listening socket if here, and the loop (which then ends)."""
        with self._calls_lock:
            self.closed = True
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                session.close()
        self._run_calls()  # e.g. uploads opened meanwhile: their sessions have closed, they let go
        with contextlib.suppress(Exception):
            self.ioloop.close()
        self.waker.close()
        while self.inbox:
            sock, _addr = self.inbox.popleft()
            sock.close()
            self.release()


class Acceptor(FTPServer):
    """The listening socket, in the first loop; each connection goes to the loop with the fewest sessions."""

    loops: list[FtpLoop]

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        target = min((loop for loop in self.loops if not loop.closed), key=lambda loop: loop.load, default=None)
        if target is None:
            sock.close()
            return
        target.assign()
        if target.ioloop is self.ioloop:
            target.accept(sock, addr)
        else:
            target.hand(sock, addr)

    def _map_len(self) -> int:
        """Open channels in all loops (pyftpdlib compares it with `max_cons`)."""
        return sum(len(loop.ioloop.socket_map) for loop in self.loops)


def loop_count(configured: int) -> int:
    """`gateway.ftp_threads`; 0: one per CPU core this process may use."""
    if configured > 0:
        return configured
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class FtpGateway:
    """The FTP server: its listening socket and its loops."""

    def __init__(self, registry: Registry, host: str, port: int) -> None:
        settings = registry.catalog.settings.gateway
        self.registry = registry
        self.stopping = threading.Event()
        attributes: dict[str, Any] = {
            "registry": registry,
            "gateway": self,
            "authorizer": TokenAuthorizer(registry),
            "upload_authorizer": UploadAuthorizer(registry),
            "timeout": settings.idle_timeout_seconds or None,
            "passive_ports": parse_port_range(settings.ftp_passive_ports),
            "banner": "imagehub gateway ready.",
        }
        masquerade = passive_address(registry.catalog.settings.public_host, host)
        if masquerade:
            attributes["masquerade_address"] = masquerade
        bases: tuple[type, ...] = (GatewayFTPHandler,)
        dtp_base: type = DTPHandler
        self.tls = False
        if settings.tls_cert and settings.tls_key:
            try:  # explicit FTPS (AUTH TLS) needs pyOpenSSL, an optional dependency of pyftpdlib
                from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler
            except ImportError:
                log.warning("FTP stays plain: FTPS (AUTH TLS) needs the pyOpenSSL package")
            else:
                bases = (GatewayFTPHandler, TLS_FTPHandler)
                dtp_base = TLS_DTPHandler
                attributes.update(
                    certfile=settings.tls_cert,
                    keyfile=settings.tls_key,
                    tls_control_required=False,
                    tls_data_required=False,
                    proto_cmds={k: v for k, v in TLS_FTPHandler.proto_cmds.items() if k not in REFUSED_CMDS},
                )
                self.tls = True
        attributes["dtp_handler"] = type(
            "ImagehubDTPHandler",
            (UploadDTPMixin, dtp_base),
            # uploads read 256 KiB at a time: a quarter of pyftpdlib's events per GB
            {
                "timeout": settings.idle_timeout_seconds,
                "ac_out_buffer_size": SENDFILE_CHUNK,
                "ac_in_buffer_size": 1 << 18,
            },
        )
        handler = type("ImagehubFTPHandler", bases, attributes)
        self.handler = handler
        self.loops = [FtpLoop(self, index, handler) for index in range(loop_count(settings.ftp_threads))]
        try:
            self.server = Acceptor((host, port), handler, ioloop=self.loops[0].ioloop)
        except BaseException:
            for loop in self.loops:
                loop.close_all()
            raise
        self.server.loops = self.loops
        self.server.max_cons = 1024
        self.port = self.server.socket.getsockname()[1]

    def start(self) -> None:
        for loop in self.loops:
            loop.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every session and the listening socket; wait for every loop's thread to end."""
        self.stopping.set()
        for loop in self.loops:
            loop.waker.wake()
        deadline = time.monotonic() + timeout
        for loop in self.loops:
            if loop.thread.ident is not None:
                loop.thread.join(max(0.0, deadline - time.monotonic()))
            if not loop.thread.is_alive():
                loop.close_all()  # a connection handed over as the loop ended; or never started
            else:
                log.warning("FTP loop %d did not stop within %.0f s", loop.index, timeout)


def passive_address(public_host: str, host: str) -> str | None:
    """The IPv4 address announced in PASV replies when links name another host than the bound one
    (a load balancer or NAT); None to announce the bound address."""
    if not public_host or public_host == host:
        return None
    try:
        return socket.gethostbyname(public_host)
    except OSError:
        log.warning("gateway.public_host %s does not resolve; PASV announces %s", public_host, host)
        return None


def parse_port_range(text: str) -> list[int] | None:
    """ "30000-30099" -> that range; "" or "0" -> any free port chosen by the system."""
    text = (text or "").strip()
    if not text or text == "0":
        return None
    first, _, last = text.partition("-")
    low, high = int(first), int(last or first)
    if not (0 < low <= high < 65536):
        raise ValueError(f"bad passive port range {text!r}")
    return list(range(low, high + 1))
