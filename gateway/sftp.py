"""SFTP downloads (asyncssh): the token is the SSH user name and no password is asked.

A valid token skips authentication entirely (OpenSSH `sftp` runs without a prompt); for clients
that cannot put it in the user name, any user name with the token as password is accepted too.
The host key is the one `imagehub init` made. The session sees a read-only root holding only the
link's file and its `.sha256`: `stat`, `opendir`/`readdir`, `open` for reading and reads at any
offset: at most 256 KiB each, as OpenSSH's sftp-server (a longer READ is answered short), read on
the event loop when the page cache holds the bytes, else with `os.pread` in a thread, and only while
the connection holds little unsent (`_Outflow`). Writes, removes, renames, `mkdir`/`rmdir`, links
and `setstat` are refused (an upload token opens gateway/sftp_upload.py's one writable file instead).
Only the `sftp` subsystem is offered: no shell, exec, scp or forwarding.
asyncssh's empty SSH_MSG_IGNORE before every packet (a CBC countermeasure) is skipped: no CBC
cipher is offered. The data a session channel sends is sealed by `_Wire` (AES-GCM, or AES-CTR with an
encrypt-then-MAC) without asyncssh's copies, and each flush leaves as one write to the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import posixpath
import stat as stat_mod
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPName, SFTPNoSuchFile, SFTPPermissionDenied
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA, MSG_IGNORE
from asyncssh.crypto.cipher import BasicCipher, GCMCipher
from asyncssh.encryption import ETMEncryption, GCMEncryption
from asyncssh.mac import _UMAC
from asyncssh.packet import String, UInt32
from asyncssh.sftp import SFTPLimits, SFTPServerHandler
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.modes import CTR

try:
    from asyncssh.crypto.umac import _nettle  # absent without libnettle: asyncssh offers no UMAC then
except ImportError:
    _nettle = None  # type: ignore[assignment]  # the module's CDLL or nothing: read as "no UMAC" below

from core.links.links import Refused, Served, link_id_of
from gateway.sftp_jail import JailBasics
from gateway.sftp_upload import UploadSession, UploadSFTPServer
from gateway.throttle import counts_as_failed_login, host_of
from gateway.transfers import Conn, Registry, Transfer

log = logging.getLogger("imagehub.gateway.sftp")

# Stock OpenSSH clients pick the first of *their* ciphers the server offers: leaving out
# chacha20-poly1305 makes them use AES-GCM (AES-NI), much cheaper for asyncssh; CTR stays for libssh2.
ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"]
_WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_EXCL
_READ_ACCESS = 0x1 | 0x8 | 0x80 | 0x20000 | 0x100000  # ACE4 read data/named attrs/attributes/ACL, synchronize


# An empty string: the payload of the SSH_MSG_IGNORE asyncssh puts before every packet.
_IGNORE_PAYLOAD = String(b"")
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_ENCRYPT_INTO = hasattr(AESGCM, "encrypt_into")  # absent in older cryptography releases: asyncssh seals then

# The most one READ is answered with: OpenSSH's sftp-server answers at most 256 KiB (SFTP allows a
# short read), and its client asks 255 KiB at most. asyncssh would read whatever length is asked.
MAX_READ = 256 * 1024
# What the channels of one connection may hold unsent before its reads wait (see _Outflow).
QUEUE_LIMIT = 1024 * 1024
# Session channels one connection may have open at once (OpenSSH's MaxSessions is 10; its sftp,
# curl, lftp and FileZilla open one).
MAX_SESSIONS = 4
# The longest SFTP request a channel takes (a 256 KiB WRITE with its header); asyncssh would receive
# up to 4 MiB per request. Longer ones close the channel.
MAX_REQUEST = 257 * 1024
# The longest WRITE the server's limits@openssh.com answer allows (asyncssh says 4 MiB, which its own
# client then sends); OpenSSH's sftp writes at most 255 KiB anyway.
MAX_WRITE = 256 * 1024
# The SSH window of a session channel: what a client may send before the server has read it. Requests
# are a few dozen bytes (OpenSSH's sftp keeps 64 in flight); asyncssh's default is 2 MiB.
RECV_WINDOW = 256 * 1024
_MAX_OFFSET = 2**63 - 1 - MAX_READ  # past this, pread cannot even be asked (off_t)


class _RequestGuard:
    """Wraps a session's `data_received`: closes the channel when an SFTP request says it is longer
    than MAX_REQUEST, before asyncssh gathers it (a request is a 4-byte length, then that many bytes)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], data_received: Any) -> None:
        self.chan = chan
        self.data_received = data_received
        self.header = b""
        self.body_left = 0

    def __call__(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.chan.is_closing():
            return
        at = 0
        while at < len(data):
            if self.body_left:
                step = min(self.body_left, len(data) - at)
                self.body_left -= step
                at += step
                continue
            need = 4 - len(self.header)
            self.header += data[at : at + need]
            at += need
            if len(self.header) == 4:
                self.body_left = int.from_bytes(self.header, "big")
                self.header = b""
                if self.body_left > MAX_REQUEST:
                    peer = self.chan.get_extra_info("peername") or ("-", 0)
                    log.info("client=%s:%s SFTP request of %d bytes: channel closed", *peer[:2], self.body_left)
                    self.chan.close()
                    return
        self.data_received(data, datatype)


def _skip_cbc_ignores(conn: asyncssh.SSHServerConnection) -> None:
    """Stop `conn` sending an empty SSH_MSG_IGNORE before each of its packets.

    asyncssh does so once keys are in use: RFC 4251 9.3.1's countermeasure against predictable CBC
    IVs. No CBC cipher is offered here (ENCRYPTION_ALGS); with GCM or CTR these packets protect
    nothing and double the packets to encrypt, send and decrypt (measured with AES-GCM, the server's
    CPU per GB sent: 1.6 s with them, 1.3 s without, 1.0 s with the reads below too). asyncssh sends
    MSG_IGNORE nowhere else.
    """
    send_packet = conn.send_packet

    def send_packet_without_ignores(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (_IGNORE_PAYLOAD,):
            return
        send_packet(pkttype, *args, handler=handler)

    conn.send_packet = send_packet_without_ignores  # type: ignore[method-assign]  # the measured send path (module docstring)


def _pread_cached(fd: int, size: int, offset: int) -> bytearray | None:
    """The `size` bytes at `offset` if the page cache holds them all, else None (the caller reads in a thread).

    A read from the page cache costs microseconds (about 16 us for 255 KiB here): far less than a hop
    to a thread and back, which the event loop pays for every read. RWF_NOWAIT makes the kernel
    answer EAGAIN, or stop short, rather than wait for the disk. A short read may also be the end of
    the file: the thread's plain `pread` tells which.
    """
    if not _RWF_NOWAIT:
        return None
    buf = bytearray(size)
    try:
        got = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: this file system cannot tell
        return None
    return buf if got == size else None


class _Wire:
    """The send side of one SSH connection for its session channels' data: each flush of a channel
    leaves as one write to the socket, and its data packets are sealed by this class rather than
    asyncssh's `send_packet`, when the keys are AES-GCM or AES-CTR with an encrypt-then-MAC.

    Serving a download, asyncssh copies every byte about a dozen times on its way from a channel's
    buffer to the socket (slices, joins, `header + ciphertext`, `packet + mac`), makes a new AES-GCM
    key schedule (or a new UMAC key) for every 32 KiB packet, and writes each packet to the socket on
    its own: that was most of the event loop's time (py-spy). Here a channel keeps what it is given
    (`write` takes no copy), a flush cuts its packets as views, and they are encrypted straight into
    one buffer with keyed contexts made once per key. The wire format, sequence numbers, GCM nonces,
    CTR stream and rekey accounting are asyncssh's own state, updated as its `send_packet` would;
    anything else (key exchange, rekey due, compression, other ciphers) goes through asyncssh.
    """

    def __init__(self, conn: asyncssh.SSHServerConnection, sent: Any) -> None:
        self.conn = conn
        self.sent = sent  # called once packets were handed to the transport
        self.send: Callable[[bytes | memoryview], None] = conn._send  # type: ignore[assignment]  # takes any buffer
        self.parts: list[Any] | None = None
        self.enc: Any = None  # the asyncssh encryption the contexts below were made for
        self.kind = ""
        self.aead: Any = None
        self.ctr: Any = None
        self.umac: Any = None
        self.recv_enc: Any = None

        def send_or_hold(data: bytes) -> None:
            if self.parts is None:
                self.send(data)
            else:
                self.parts.append(data)

        conn._send = send_or_hold  # type: ignore[method-assign]  # the measured send path (module docstring)

    def _kind(self, enc: Any) -> str:
        """How this class seals packets under the encryption `enc`: "gcm", "etm", or "" (asyncssh does)."""
        if enc is self.enc:
            return self.kind
        self.enc, self.kind, self.umac = enc, "", None
        if type(enc) is GCMEncryption and type(enc._cipher) is GCMCipher and _ENCRYPT_INTO:
            self.aead = AESGCM(enc._cipher._key)
            self.kind = "gcm"
        elif (
            type(enc) is ETMEncryption
            and type(enc._cipher) is BasicCipher
            and isinstance(enc._cipher._cipher.mode, CTR)
            and enc._mac is not None
        ):
            enc._cipher.encrypt(b"")  # makes asyncssh's encryptor: the same CTR stream continues here
            self.ctr = enc._cipher._encryptor
            if type(enc._mac) is _UMAC and _nettle is not None:
                # Keyed once (asyncssh keys a new one per packet); nettle's digest resets it for the next.
                umac = enc._mac._umac_alg(enc._mac._key)
                calls = [getattr(_nettle, f"nettle_{umac.name}_{step}") for step in ("set_nonce", "update", "digest")]
                self.umac = (umac, *calls)
            self.kind = "etm"
        return self.kind

    def corked(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        """Give `chan` the flush and write below."""

        def write(data: Any, datatype: asyncssh.DataType = None) -> None:
            if chan._send_state != "open":
                raise BrokenPipeError("Channel not open for sending")
            if datatype is not None and datatype not in chan._write_datatypes:
                raise OSError("Invalid extended data type")
            if not data:
                return
            if chan._encoding:
                encoder: Any = chan._encoder  # set whenever _encoding is
                data = encoder.encode(data)
            view = memoryview(data if type(data) is bytes else bytes(data))  # bytes cannot change under it
            chan._send_buf.append((view, datatype))  # type: ignore[arg-type]  # declared bytearray; only sliced and measured
            chan._send_buf_len += len(view)
            chan._flush_send_buf()

        def flush() -> None:
            # asyncssh's SSHChannel._flush_send_buf, cutting views and sending the packets together.
            packets: list[tuple[int, tuple[Any, ...]]] = []
            while chan._send_buf and chan._send_window:
                pktsize = min(chan._send_window, chan._send_pktsize)
                buf, datatype = chan._send_buf[0]
                if len(buf) > pktsize:
                    data = buf[:pktsize]
                    chan._send_buf[0] = (buf[pktsize:], datatype)
                else:
                    data = buf
                    del chan._send_buf[0]
                chan._send_buf_len -= len(data)
                chan._send_window -= len(data)
                if datatype is None:
                    packets.append((MSG_CHANNEL_DATA, (UInt32(len(data)), data)))
                else:
                    packets.append((MSG_CHANNEL_EXTENDED_DATA, (UInt32(datatype), UInt32(len(data)), data)))
            if packets:
                self.send_channel_packets(chan, packets)
            chan._pause_resume_writing()
            if not chan._send_buf:
                if chan._send_state == "eof_pending":
                    chan.send_packet(MSG_CHANNEL_EOF)
                    chan._send_state = "eof"
                elif chan._send_state == "close_pending":
                    chan._close_send()

        chan.write = write  # type: ignore[method-assign]  # the measured send path (module docstring)
        chan._flush_send_buf = flush  # type: ignore[method-assign]  # the measured send path (module docstring)

    def send_channel_packets(
        self, chan: asyncssh.SSHServerChannel[bytes], packets: list[tuple[int, tuple[Any, ...]]]
    ) -> None:
        if chan._send_chan is None:
            return
        head = UInt32(chan._send_chan)
        if self.parts is not None or not self._seal(head, packets):
            outer = self.parts is None
            if outer:
                self.parts = []
            try:
                for pkttype, args in packets:
                    chan.send_packet(pkttype, b"".join(args))
            finally:
                if outer:
                    parts, self.parts = self.parts, None
                    if parts:
                        self.send(parts[0] if len(parts) == 1 else b"".join(parts))

    def _quicken_receive(self, enc: Any) -> None:
        """Give the receive side's GCM cipher or UMAC a context made once per key: asyncssh makes a
        new one for every packet a client sends (a READ, a window adjust)."""
        self.recv_enc = enc
        if type(enc) is GCMEncryption and type(enc._cipher) is GCMCipher:
            cipher, aead = enc._cipher, AESGCM(enc._cipher._key)

            def verify_and_decrypt(header: bytes, data: bytes, mac: bytes) -> bytes | None:
                try:
                    plain: bytes | None = aead.decrypt(cipher._iv, data + mac, header)
                except InvalidTag:
                    plain = None
                cipher._update_iv()
                return plain

            cipher.verify_and_decrypt = verify_and_decrypt  # type: ignore[method-assign]  # the measured fast path
        elif type(enc) is ETMEncryption and type(enc._mac) is _UMAC:
            umac = enc._mac._umac_alg(enc._mac._key)

            def sign(seq: int, packet: bytes) -> bytes:
                umac.set_nonce(seq.to_bytes(8, "big"))
                umac.update(packet)
                digest: bytes = umac.digest()  # and resets it for the next
                return digest

            enc._mac.sign = sign  # type: ignore[method-assign]  # the measured fast path

    def _seal(self, head: bytes, packets: list[tuple[int, tuple[Any, ...]]]) -> bool:
        """Encrypt `packets` of one channel into one buffer and write it; False if asyncssh must."""
        conn = self.conn
        if conn._recv_encryption is not self.recv_enc:
            self._quicken_receive(conn._recv_encryption)
        enc: Any = conn._send_encryption  # asyncssh's Encryption internals (_cipher, _mac): see _kind
        if not (conn._kex_complete and conn._auth_complete and conn._transport) or conn._compressor is not None:
            return False
        kind = self._kind(enc)
        if not kind:
            return False
        hdrlen, blocksize = conn._send_enchdrlen, conn._send_blocksize
        maclen = 16 if kind == "gcm" else enc._mac._hash_size
        sizes = []
        for _, args in packets:
            length = 5 + sum(map(len, args))  # type byte and channel number, then args
            padlen = -(hdrlen + length) % blocksize
            if padlen < 4:
                padlen += blocksize
            sizes.append((padlen, 1 + length + padlen))
        plain_total = sum(size for _, size in sizes)
        if conn._rekey_bytes_sent + plain_total >= conn._rekey_bytes or (
            conn._rekey_seconds and time.monotonic() >= conn._rekey_time
        ):
            return False  # asyncssh starts the key exchange
        out = bytearray(sum(4 + size + maclen for _, size in sizes) + 16)  # 16: room update_into asks
        view = memoryview(out)
        seq = conn._send_seq
        pos = 0
        if kind == "gcm":
            cipher = enc._cipher
            fixed, invocation = cipher._iv[:4], int.from_bytes(cipher._iv[4:], "big")
        else:
            pinned = (ctypes.c_char * len(out)).from_buffer(out)  # the UMAC reads and writes `out` in place
            base = ctypes.addressof(pinned)
        for (pkttype, args), (padlen, pktlen) in zip(packets, sizes, strict=True):
            header = pktlen.to_bytes(4, "big")
            out[pos : pos + 4] = header
            if kind == "gcm":
                plain = b"".join((bytes((padlen, pkttype)), head, *args, os.urandom(padlen)))
                nonce = fixed + invocation.to_bytes(8, "big")
                self.aead.encrypt_into(nonce, plain, header, view[pos + 4 : pos + 4 + pktlen + 16])
                invocation = (invocation + 1) & 0xFFFFFFFFFFFFFFFF
            else:
                # CTR is a stream: the pieces are encrypted where they go, the data without a copy first.
                at = pos + 4
                for piece in (b"".join((bytes((padlen, pkttype)), head, *args[:-1])), args[-1], os.urandom(padlen)):
                    at += self.ctr.update_into(piece, view[at:])
                signed = pos + 4 + pktlen
                if self.umac is not None:
                    umac, set_nonce, update, digest = self.umac
                    set_nonce(umac._ctx, ctypes.c_size_t(8), seq.to_bytes(8, "big"))
                    update(umac._ctx, ctypes.c_size_t(signed - pos), ctypes.c_void_p(base + pos))
                    digest(umac._ctx, ctypes.c_size_t(maclen), ctypes.c_void_p(base + signed))
                else:
                    out[signed : signed + maclen] = enc._mac.sign(seq, bytes(view[pos:signed]))
            pos += 4 + pktlen + maclen
            seq = (seq + 1) & 0xFFFFFFFF
        if kind == "gcm":
            cipher._iv = fixed + invocation.to_bytes(8, "big")
        conn._send_seq = seq
        conn._rekey_bytes_sent += plain_total
        self.send(view[:pos])
        self.sent()
        return True


class _Outflow:
    """The bytes one SSH connection holds unsent; its SFTP reads wait while they are too many. It
    also refuses a session channel past MAX_SESSIONS, and guards each one's requests (_RequestGuard).

    asyncssh's SFTP server answers the requests of a channel one after another and writes each
    answer without waiting for it to leave, so a client that pipelines READs and reads nothing would
    make it queue answers without end. They wait in two places: a channel's send buffer, while the
    client's SSH window is shut, and the connection's transport buffer, while the client does not
    read its socket (its window may be as large as it likes). So before reading, a READ waits until
    this connection's channels hold at most QUEUE_LIMIT bytes and asyncio has not paused the transport
    (past its 64 KiB high-water mark). The reads of a connection take turns: at most one answer is
    being read at a time. The buffers shrink only when a packet is sent (a channel's close too: it
    drops the channel's buffer), the transport resumes or the connection is lost, and each of these
    wakes the waiting read.
    """

    def __init__(self, conn: asyncssh.SSHServerConnection) -> None:
        self.transport_paused = False
        self.closed = False
        self._turn = asyncio.Lock()
        self._wakeup: asyncio.Future[None] | None = None
        self.sessions: set[asyncssh.SSHServerChannel[bytes]] = set()
        self.wire = _Wire(conn, self._wake)
        send_packet, pause_writing, resume_writing = conn.send_packet, conn.pause_writing, conn.resume_writing
        open_session = conn._process_session_open  # asyncssh finds a channel type's opener by name

        def open_capped_session(packet: Any) -> Any:
            # A closing channel has dropped what it held (and sent its close, which woke any read).
            self.sessions = {chan for chan in self.sessions if not chan.is_closing()}
            if len(self.sessions) >= MAX_SESSIONS:
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "Too many sessions")
            chan, session = open_session(packet)
            self.sessions.add(chan)
            self.wire.corked(chan)
            session.data_received = _RequestGuard(chan, session.data_received)  # type: ignore[method-assign]  # caps requests
            return chan, session

        def send_packet_and_wake(pkttype: int, *args: bytes, handler: Any = None) -> None:
            send_packet(pkttype, *args, handler=handler)
            self._wake()

        def pause() -> None:
            self.transport_paused = True
            pause_writing()

        def resume() -> None:
            self.transport_paused = False
            resume_writing()
            self._wake()

        # The transport calls its protocol's methods, looked up on the instance at each call.
        conn.send_packet = send_packet_and_wake  # type: ignore[method-assign]  # the measured send path (module docstring)
        conn.pause_writing = pause  # type: ignore[method-assign]  # the measured send path (module docstring)
        conn.resume_writing = resume  # type: ignore[method-assign]  # the measured send path (module docstring)
        conn._process_session_open = open_capped_session  # type: ignore[method-assign]  # the measured send path (module docstring)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def queued(self) -> int:
        """Bytes in this connection's channel send buffers."""
        return sum(chan.get_write_buffer_size() for chan in self.sessions)

    def full(self) -> bool:
        return not self.closed and (self.transport_paused or self.queued() > QUEUE_LIMIT)

    def close(self) -> None:
        self.closed = True
        self._wake()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for room to read an answer, and hold the connection's turn while reading it."""
        async with self._turn:
            while self.full():
                self._wakeup = asyncio.get_running_loop().create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
            yield


class Session:
    """One SSH connection of one link."""

    def __init__(
        self, registry: Registry, served: Served, conn: Conn, ssh: asyncssh.SSHServerConnection, token: str
    ) -> None:
        self.registry = registry
        self.served = served
        self.conn = conn
        self.ssh = ssh
        self.peer = conn.peer
        self.token = token


class _Handle:
    def __init__(self, fd: int, transfer: Transfer | None) -> None:
        self.fd = fd
        self.transfer = transfer
        self.eof_reached = False

    def seek(self, offset: int, whence: int) -> int:
        """asyncssh answers a client's ranges@asyncssh.com (where the data is, SEEK_DATA/SEEK_HOLE) with it:
        asyncssh's `SFTPClient.get` asks before reading."""
        return os.lseek(self.fd, offset, whence)


class GatewaySSHServer(asyncssh.SSHServer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.ssh: asyncssh.SSHServerConnection | None = None
        self.session: Session | UploadSession | None = None
        self.outflow: _Outflow | None = None
        self.peer = "-"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.ssh = conn
        _skip_cbc_ignores(conn)
        self.outflow = _Outflow(conn)
        conn.set_extra_info(imagehub_outflow=self.outflow)
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "-"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.outflow is not None:
            self.outflow.close()
        if self.session is not None:
            self.registry.close_conn(self.session.conn)
            if isinstance(self.session, UploadSession):
                self.session.lost()
            self.session = None

    async def _attach(self, token: str, *, login: bool = True) -> bool:
        """Open the session of the link `token` names; False if it is refused. A refused `login` is a
        failed login (gateway/throttle.py): counted, and answered late once the address keeps failing."""
        ssh = self.ssh
        assert ssh is not None
        try:
            opened = await asyncio.to_thread(self.registry.open_token, token, "sftp", self.peer)
            loop = asyncio.get_running_loop()

            def cut(reason: str) -> None:
                loop.call_soon_threadsafe(ssh.close)

            conn = self.registry.open_conn(opened.link_id, "sftp", self.peer, cut)
        except Refused as exc:
            if login and counts_as_failed_login(exc.reason):
                address = host_of(ssh.get_extra_info("peername"))
                await asyncio.sleep(self.registry.throttle.failed(address, "sftp"))
            return False
        if isinstance(opened, Served):
            self.session = Session(self.registry, opened, conn, ssh, token)
        else:
            self.session = UploadSession(self.registry, opened, conn, ssh, token)
        ssh.set_extra_info(imagehub_session=self.session)
        return True

    async def begin_auth(self, username: str) -> bool:
        """A valid token as user name needs no authentication at all."""
        if self.session is not None:
            return False
        # Any user name is fine for password clients: only one shaped like a token is a login.
        return not await self._attach(username, login=link_id_of(username) is not None)

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        """For clients that cannot use the token as user name: any user name, the token as password."""
        if self.session is not None:
            return True
        return await self._attach(password)

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False


def _attrs(path: Path) -> SFTPAttrs:
    attrs = SFTPAttrs.from_local(os.stat(path))
    attrs.uid = attrs.gid = 0
    attrs.owner = attrs.group = "imagehub"
    return attrs


class OneFileSFTPServer(JailBasics, asyncssh.SFTPServer):
    """A read-only root `/` holding only the served file and its `.sha256`."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        super().__init__(chan)
        ssh = chan.get_connection()
        session = ssh.get_extra_info("imagehub_session")
        if session is None:
            raise SFTPPermissionDenied("not authorised")
        self.s: Session = session
        self.outflow: _Outflow = ssh.get_extra_info("imagehub_outflow")

    # ---- names
    def _resolve(self, path: bytes) -> str:
        """The visible name `path` stands for: "" for the root; raises for anything else."""
        text = path.decode("utf-8", "replace")
        norm = posixpath.normpath("/" + text)
        if norm in ("/", "//", "/."):
            return ""
        name = norm.lstrip("/")
        if name in self.s.served.names():
            return name
        raise SFTPNoSuchFile("No such file")

    def _real(self, name: str) -> Path:
        served = self.s.served
        return served.path if name == served.filename else served.sum_path

    def _check_cut(self) -> None:
        if self.s.conn.cut_reason is not None:
            raise SFTPPermissionDenied("This download link is no longer valid")

    def realpath(self, path: bytes) -> bytes:
        text = path.decode("utf-8", "replace")
        return posixpath.normpath("/" + text).replace("//", "/").encode()

    def stat(self, path: bytes) -> SFTPAttrs:
        self._check_cut()
        name = self._resolve(path)
        if not name:
            attrs = SFTPAttrs.from_local(os.stat(self.s.served.path.parent))
            attrs.permissions = stat_mod.S_IFDIR | 0o555
            attrs.uid = attrs.gid = 0
            attrs.owner = attrs.group = "imagehub"
            return attrs
        attrs = _attrs(self._real(name))
        attrs.permissions = stat_mod.S_IFREG | 0o444
        return attrs

    lstat = stat

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        self._check_cut()
        if self._resolve(path) != "":
            raise SFTPNoSuchFile("Not a directory")
        yield SFTPName(b".", attrs=self.stat(b"/"))
        yield SFTPName(b"..", attrs=self.stat(b"/"))
        for name in self.s.served.names():
            yield SFTPName(name.encode(), attrs=self.stat(b"/" + name.encode()))

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> Any:
        if pflags & _WRITE_FLAGS:
            raise SFTPPermissionDenied("Read-only")
        return self._open(path)

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs) -> Any:
        if desired_access & ~_READ_ACCESS or (flags & 0x7) != asyncssh.FXF_OPEN_EXISTING:
            raise SFTPPermissionDenied("Read-only")
        return self._open(path)

    async def _open(self, path: bytes) -> _Handle:
        self._check_cut()
        name = self._resolve(path)
        if not name:
            raise SFTPPermissionDenied("Is a directory")
        s = self.s
        try:
            await asyncio.to_thread(s.registry.validate, s.token, None, "sftp", s.peer)
        except Refused:
            raise SFTPPermissionDenied("This download link is no longer valid") from None
        fd = await asyncio.to_thread(os.open, self._real(name), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        transfer = None
        if name == s.served.filename:
            transfer = s.registry.begin(s.conn, s.served.link_id, "sftp", s.peer, name)
        return _Handle(fd, transfer)

    async def read(self, file_obj: _Handle, offset: int, size: int) -> bytes | bytearray:  # type: ignore[override]  # our handles
        """At most MAX_READ bytes at `offset`, read once the connection has room for them (_Outflow)."""
        self._check_cut()
        size = min(size, MAX_READ)
        if offset > _MAX_OFFSET:
            return b""  # past any file's end: EOF
        async with self.outflow.turn():
            self._check_cut()
            data: bytes | bytearray | None = _pread_cached(file_obj.fd, size, offset)
            if data is None:
                data = await asyncio.to_thread(os.pread, file_obj.fd, size, offset)
        if file_obj.transfer is not None:
            file_obj.transfer.add(len(data))
        else:
            self.s.conn.touch()
        return data

    def close(self, file_obj: _Handle) -> None:  # type: ignore[override]  # our handles
        with contextlib.suppress(OSError):
            os.close(file_obj.fd)
        if file_obj.transfer is not None:
            status = "closed" if self.s.conn.cut_reason is None else f"cut-{self.s.conn.cut_reason}"
            self.s.registry.end(file_obj.transfer, status)
            file_obj.transfer = None

    def fstat(self, file_obj: _Handle) -> SFTPAttrs:  # type: ignore[override]  # our handles
        attrs = SFTPAttrs.from_local(os.fstat(file_obj.fd))
        attrs.permissions = stat_mod.S_IFREG | 0o444
        attrs.uid = attrs.gid = 0
        attrs.owner = attrs.group = "imagehub"
        return attrs

    # ---- everything that would change something is refused
    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise SFTPPermissionDenied("Read-only")

    write = _refuse
    setstat = _refuse
    lsetstat = _refuse
    fsetstat = _refuse
    remove = _refuse
    mkdir = _refuse
    rmdir = _refuse
    rename = _refuse
    posix_rename = _refuse
    symlink = _refuse
    link = _refuse
    fsync = _refuse


def _sftp_server(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
    """A download token's read-only file, or an upload token's writable one."""
    if isinstance(chan.get_connection().get_extra_info("imagehub_session"), UploadSession):
        return UploadSFTPServer(chan)
    return OneFileSFTPServer(chan)


def _cap_advertised_writes() -> None:
    """Make asyncssh's limits@openssh.com answer say MAX_WRITE (clients that follow it send no longer
    WRITE than MAX_REQUEST lets in). asyncssh has no option for it: its handler table is changed once."""
    handlers: dict[Any, Any] = SFTPServerHandler._packet_handlers
    asyncssh_limits = handlers[b"limits@openssh.com"]
    if getattr(asyncssh_limits, "imagehub", False):
        return

    async def limits(handler: SFTPServerHandler, packet: Any) -> SFTPLimits:
        answer: SFTPLimits = await asyncssh_limits(handler, packet)
        answer.max_write_len = min(answer.max_write_len, MAX_WRITE)
        return answer

    limits.imagehub = True  # type: ignore[attr-defined]  # marks the table as changed
    handlers[b"limits@openssh.com"] = limits


async def listen(registry: Registry, host: str, port: int, host_key: Path) -> asyncssh.SSHAcceptor:
    settings = registry.catalog.settings.gateway
    _cap_advertised_writes()
    return await asyncssh.listen(
        host,
        port,
        server_factory=lambda: GatewaySSHServer(registry),
        server_host_keys=[str(host_key)],
        sftp_factory=_sftp_server,
        allow_scp=False,
        encryption_algs=ENCRYPTION_ALGS,
        login_timeout=30,
        window=RECV_WINDOW,
        line_editor=False,
        keepalive_interval=min(60, settings.idle_timeout_seconds or 60),
        agent_forwarding=False,
        allow_pty=False,
        x11_forwarding=False,
        process_factory=None,
        reuse_address=True,
    )
