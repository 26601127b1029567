"""Fetching a source into staging: a local file, HTTP/HTTPS (http.client) or FTP (ftplib).

Every URL hop is checked by the network policy and the connection goes to the very address that
was checked (the host name is used only for the Host header, SNI and certificate checks). The
bytes stream into a `StagedFile`, which hashes them (SHA-256 of the source as received, one pass),
enforces the size cap as they arrive (Content-Length may be absent or false), and keeps runs of
zeros as holes so a sparse source stays sparse on disk.

Resume: a cut connection is taken up again at once from the bytes received (HTTP `Range` with
`If-Range` on the validator of the first response; FTP `REST`). A source that ignores the range
(HTTP 200) or refuses REST is fetched again from the start. A worker that died leaves the partial
file in staging: the next worker hashes what is on disk once (hashlib's state cannot be saved) and
continues from there.
"""

from __future__ import annotations

import base64
import contextlib
import ftplib
import hashlib
import http.client
import json
import logging
import mmap
import os
import queue
import re
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin

from core.catalog.errors import Failed
from core.importer.netpolicy import MAX_REDIRECTS, IPAddress, Policy, SourceUrl

log = logging.getLogger("imagehub.import")

CHUNK = 1 << 20
MAX_RETRIES = 5
USER_AGENT = "imagehub-import/1"
_REDIRECTS = (301, 302, 303, 307, 308)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

Progress = Callable[[int, int | None], None]


class Restart(Exception):
    """The source cannot continue where we stopped: fetch it again from its first byte."""


class Interrupted(Exception):
    """The transfer broke off after some bytes; it may be resumed."""


@dataclass
class FetchMeta:
    """What the first response said, kept in staging so a resumed fetch can ask for the same version."""

    validator: str | None = None
    total: int | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"validator": self.validator, "total": self.total}))

    @classmethod
    def load(cls, path: Path) -> FetchMeta:
        try:
            data = json.loads(path.read_text())
            return cls(data.get("validator"), data.get("total"))
        except (OSError, ValueError):
            return cls()


class StagedFile:
    """The staged copy of the source: hashed as written, capped, holes kept.

    Receiving, hashing and writing overlap: the caller fills buffers (`buffer`, then `commit`) while
    two threads of this object hash and write the ones already filled, in order (hashlib and file
    writes release the GIL), so a download costs about max(receive, hash, write), not their sum.
    The file goes through the page cache on purpose: qemu-img reads it right after, usually from
    memory (that is the pass over the file that hashing while streaming saves). `written` counts the
    bytes committed;
    after `drain` they are all hashed and in the file.
    """

    DEPTH = 16

    def __init__(self, path: Path, cap: int, progress: Progress) -> None:
        self.path = path
        self.cap = cap
        self.progress = progress
        self.hasher: Any = hashlib.sha256()
        self.written = 0
        self.total: int | None = None
        self._fd = -1
        self._zeros = memoryview(bytes(CHUNK))
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        self._queues: list[queue.Queue[tuple[mmap.mmap, int] | None]] = [queue.Queue(), queue.Queue()]
        self._pending: dict[int, int] = {}
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._pos = 0
        self.guard: Callable[[], None] | None = None  # raises to stop writing (e.g. the job's lease is lost)

    def open(self, rehash: Callable[[int], None] | None = None) -> None:
        """Open for appending; what is already on disk is hashed once (a resumed import)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        self.hasher = hashlib.sha256()
        self.written = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while self.written < size:
            n = os.preadv(self._fd, [view[: min(CHUNK, size - self.written)]], self.written)
            if not n:
                break
            self.hasher.update(view[:n])
            self.written += n
            if rehash is not None:
                rehash(self.written)
        self._pos = self.written
        for _ in range(self.DEPTH):
            self._free.put(mmap.mmap(-1, CHUNK))
        self._threads = [
            threading.Thread(target=self._consume, args=(self._queues[0], self._hash), name="import-hash", daemon=True),
            threading.Thread(
                target=self._consume, args=(self._queues[1], self._write), name="import-write", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _hash(self, view: memoryview) -> None:
        self.hasher.update(view)

    def _write(self, view: memoryview) -> None:
        if self.guard is not None:
            self.guard()
        n = len(view)
        if n >= 65536 and view == self._zeros[:n]:
            pass  # a hole: nothing written
        else:
            os.pwrite(self._fd, view, self._pos)
        self._pos += n

    def _consume(self, jobs: queue.Queue[tuple[mmap.mmap, int] | None], work: Callable[[memoryview], None]) -> None:
        while (item := jobs.get()) is not None:
            buf, n = item
            try:
                if self._error is None:
                    # Both views released on the way out, even when `work` raises: a traceback kept
                    # in `_error` must not hold the buffer exported, or it cannot be closed.
                    with memoryview(buf) as view, view[:n] as part:
                        work(part)
            except BaseException as exc:
                self._error = exc
            finally:
                with self._lock:
                    self._pending[id(buf)] -= 1
                    done = self._pending[id(buf)] == 0
                if done:
                    self._free.put(buf)
                jobs.task_done()
        jobs.task_done()

    def _check(self) -> None:
        if self._error is not None:
            error = self._error
            if not isinstance(error, OSError):
                raise error  # the guard's own reason (lease lost, staging quota)
            reason = error.strerror or type(error).__name__
            raise Failed("cannot write the staged source: {reason}", reason=reason.lower()) from error

    def buffer(self) -> mmap.mmap:
        """An empty, page-aligned buffer of `CHUNK` bytes to receive into."""
        self._check()
        return self._free.get()

    def give_back(self, buf: mmap.mmap) -> None:
        self._free.put(buf)

    def commit(self, buf: mmap.mmap, n: int) -> None:
        """The first `n` bytes of `buf` are the next bytes of the source."""
        if self.written + n > self.cap:
            self._free.put(buf)
            raise Failed("source is larger than the {limit} allowed for this target size", limit=_human(self.cap))
        self._check()
        with self._lock:
            self._pending[id(buf)] = len(self._queues)
        for jobs in self._queues:
            jobs.put((buf, n))
        self.written += n
        self.progress(self.written, self.total)

    def drain(self) -> None:
        """Wait until every committed byte is hashed and in the file."""
        for jobs in self._queues:
            jobs.join()
        self._check()

    def reset(self) -> None:
        self.drain()
        os.ftruncate(self._fd, 0)
        self.hasher = hashlib.sha256()
        self.written = 0
        self._pos = 0

    def finish(self) -> str:
        """Fix the length (trailing holes) and return the SHA-256.

        Not flushed to disk (that would cost a whole write-back wait): after a crash, a resumed job
        hashes the staged file again before trusting it (see core.importer.job)."""
        self.drain()
        os.ftruncate(self._fd, self.written)
        return str(self.hasher.hexdigest())

    def close(self) -> None:
        for jobs in self._queues:
            if self._threads:
                jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        while not self._free.empty():
            self._free.get().close()


def read_full(read: Callable[[memoryview], int], buf: mmap.mmap) -> int:
    """Fill `buf` from `read` (recv_into, readinto) until it is full or the source ends."""
    view = memoryview(buf)
    done = 0
    try:
        while done < CHUNK:
            n = read(view[done:])
            if not n:
                break
            done += n
    finally:
        view.release()
    return done


def _human(size: int) -> str:
    gib = size / (1 << 30)
    return f"{gib:.0f} GB" if gib >= 1 else f"{size} bytes"  # GB as --size-gb counts them (1024³ bytes)


# ---- local files ------------------------------------------------------------------------------


def fetch_file(path: Path, sink: StagedFile) -> None:
    """Copy a local file into staging (from the offset already staged)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise Failed("source file {path} does not exist", path=path) from exc
    except OSError as exc:
        raise Failed("source file {path} cannot be read: {reason}", path=path, reason=exc.strerror or exc) from exc
    with os.fdopen(fd, "rb", buffering=0) as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Failed("source file {path} is not a regular file", path=path)
        if info.st_nlink > 1:  # checked on the open file too: a link made after the path check
            raise Failed("source file {path} has other hard links; import a copy of it", path=path)
        sink.total = info.st_size
        if sink.written > info.st_size:
            sink.reset()
        src.seek(sink.written)
        while True:
            buf = sink.buffer()
            n = read_full(src.readinto, buf)
            if not n:
                sink.give_back(buf)
                break
            sink.commit(buf, n)


# ---- HTTP and HTTPS -------------------------------------------------------------------------


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to a checked address; `host` is used for Host, SNI and the certificate."""

    def __init__(self, source: SourceUrl, address: IPAddress, timeout: float, tls: ssl.SSLContext | None) -> None:
        super().__init__(source.host, source.port, timeout=timeout)
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        sock = socket.create_connection((str(self._address), self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock


def tls_context(ca_bundle: str = "") -> ssl.SSLContext:
    """Verify certificates against the system's CAs plus `import.ca_bundle`."""
    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise Failed("import.ca_bundle {ca_bundle} cannot be loaded", ca_bundle=ca_bundle) from exc
    return context


def _connect(
    policy: Policy, source: SourceUrl, timeout: float, tls: ssl.SSLContext | None, log_hop: bool = False
) -> _PinnedConnection:
    addresses = policy.resolve(source)
    last: BaseException | None = None
    for address in addresses:
        conn = _PinnedConnection(source, address, timeout, tls if source.scheme == "https" else None)
        try:
            conn.connect()
            return conn
        except ssl.SSLError:
            conn.close()
            raise
        except OSError as exc:
            conn.close()
            last = exc
    assert last is not None
    raise last


def _http_once(
    policy: Policy,
    source: SourceUrl,
    sink: StagedFile,
    meta: FetchMeta,
    timeout: float,
    tls: ssl.SSLContext | None,
    on_meta: Callable[[FetchMeta], None],
) -> None:
    url = source
    for _hop in range(MAX_REDIRECTS + 1):
        conn = _connect(policy, url, timeout, tls)
        try:
            conn.putrequest("GET", url.request_target, skip_accept_encoding=True)
            conn.putheader("User-Agent", USER_AGENT)
            conn.putheader("Accept", "*/*")
            conn.putheader("Accept-Encoding", "identity")
            if url.username is not None:
                token = f"{url.username}:{url.password or ''}".encode()
                conn.putheader("Authorization", "Basic " + base64.b64encode(token).decode("ascii"))
            offset = sink.written
            match = None
            if offset:
                conn.putheader("Range", f"bytes={offset}-")
                if meta.validator:
                    conn.putheader("If-Range", meta.validator)
            conn.endheaders()
            response = conn.getresponse()
            status = response.status
            if status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise Failed("HTTP {status} from source without a Location", status=status)
                target = urljoin(url.geturl(with_credentials=False), location.strip())
                nxt = policy.parse(target)
                if nxt.scheme not in ("http", "https"):
                    raise Failed(
                        "source redirected to a {nxt_scheme} URL; only http and https redirects are followed",
                        nxt_scheme=nxt.scheme,
                    )
                # Credentials go only to the host they were given for.
                if url.username is not None and nxt.host == url.host and nxt.port == url.port:
                    nxt = SourceUrl(nxt.scheme, nxt.host, nxt.port, nxt.path, nxt.query, url.username, url.password)
                url = nxt
                continue
            if status == 416 and offset and meta.total == offset:
                return  # everything is already here
            if status == 200:
                if offset:
                    sink.reset()  # the source ignored the range (or If-Range failed): start over
            elif status == 206 and offset:
                match = _CONTENT_RANGE.match(response.getheader("Content-Range", "").strip())
                if not match or int(match.group(1)) != offset:
                    raise Restart()
            else:
                raise Failed("HTTP {status} from source", status=status)
            ctype = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
            if ctype in ("text/html", "application/xhtml+xml"):
                raise Failed("source sent a web page ({ctype}), not a disk image", ctype=ctype)
            length = response.getheader("Content-Length")
            expected_end = sink.written + int(length) if length and length.isdigit() else None
            if status == 200:
                meta.validator = _validator(response)
                meta.total = expected_end
                on_meta(meta)
            elif match is not None and match.group(3) != "*":
                meta.total = int(match.group(3))
            sink.total = meta.total
            if expected_end is not None and expected_end > sink.cap:
                raise Failed("source is larger than the {limit} allowed for this target size", limit=_human(sink.cap))
            _stream(response, sink)
            if expected_end is not None and sink.written != expected_end:
                raise Interrupted(f"got {sink.written} of {expected_end} bytes")
            return
        finally:
            conn.close()
    raise Failed("source redirected more than {MAX_REDIRECTS} times", MAX_REDIRECTS=MAX_REDIRECTS)


def _validator(response: http.client.HTTPResponse) -> str | None:
    etag = response.getheader("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.getheader("Last-Modified")


def _stream(response: Any, sink: StagedFile) -> None:
    while True:
        buf = sink.buffer()
        try:
            n = read_full(response.readinto, buf)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            sink.give_back(buf)
            raise Interrupted(str(exc) or type(exc).__name__) from exc
        except BaseException:
            sink.give_back(buf)
            raise
        if not n:
            sink.give_back(buf)
            return
        sink.commit(buf, n)


# ---- FTP ------------------------------------------------------------------------------------


class CheckedFTP(ftplib.FTP):
    """ftplib.FTP whose data connections obey the network policy like the control connection: to
    the control connection's own (checked) address whatever host a PASV reply names, as curl does,
    and only to a port on `import.allowed_ports` (docs/security.md U2) — else refused before connecting."""

    def __init__(self, policy: Policy, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.policy = policy
        self.trust_server_pasv_ipv4_address = False

    def makepasv(self) -> tuple[str, int]:
        host, port = super().makepasv()  # PASV: the control peer's address; EPSV carries no address
        if self.sock is None or host != self.sock.getpeername()[0]:
            raise Failed("FTP source named another host for its data connection")
        if port not in self.policy.allowed_ports:
            allowed = ", ".join(str(p) for p in self.policy.allowed_ports)
            raise Failed(
                "FTP source data port {port} is not allowed (import.allowed_ports); allowed: {allowed}",
                port=port,
                allowed=allowed,
            )
        return host, port


def _ftp_once(policy: Policy, source: SourceUrl, sink: StagedFile, timeout: float) -> None:
    path = unquote(source.path)
    if path.startswith("/"):
        path = path[1:]
    if not path or any(ord(ch) < 32 for ch in path):
        raise Failed("ftp source path is empty or invalid")
    addresses = policy.resolve(source)
    ftp = CheckedFTP(policy, timeout)
    last: BaseException | None = None
    for address in addresses:
        try:
            ftp.connect(str(address), source.port)
            last = None
            break
        except OSError as exc:
            last = exc
    if last is not None:
        raise last
    try:
        try:
            ftp.login(source.username or "anonymous", source.password or "anonymous@")
        except ftplib.error_perm as exc:
            raise Failed("FTP login refused by source ({code})", code=_ftp_code(exc)) from exc
        ftp.voidcmd("TYPE I")
        try:
            size: int | None = ftp.size(path)
        except ftplib.error_perm:
            size = None
        if size is not None and size > sink.cap:
            raise Failed("source is larger than the {limit} allowed for this target size", limit=_human(sink.cap))
        sink.total = size
        if size is not None and sink.written == size:
            return
        if size is not None and sink.written > size:
            sink.reset()
        try:
            conn = ftp.transfercmd(f"RETR {path}", rest=sink.written or None)
        except ftplib.error_perm as exc:
            code = _ftp_code(exc)
            if sink.written and code in ("500", "501", "502", "504"):
                raise Restart() from exc  # REST not supported
            raise Failed("FTP {code} from source", code=code) from exc
        with conn:
            while True:
                buf = sink.buffer()
                try:
                    n = read_full(conn.recv_into, buf)
                except (ConnectionError, TimeoutError) as exc:
                    sink.give_back(buf)
                    raise Interrupted(str(exc)) from exc
                if not n:
                    sink.give_back(buf)
                    break
                sink.commit(buf, n)
        if size is not None and sink.written != size:
            raise Interrupted(f"got {sink.written} of {size} bytes")  # no need to wait for the reply
        try:
            ftp.voidresp()
        except (ftplib.Error, EOFError, OSError) as exc:
            raise Interrupted("transfer not confirmed") from exc
    finally:
        with contextlib.suppress(OSError):
            ftp.close()


def _ftp_code(exc: BaseException) -> str:
    text = str(exc)
    return text[:3] if text[:3].isdigit() else "error"


# ---- the fetch loop ---------------------------------------------------------------------------


def fetch_url(
    policy: Policy,
    source: SourceUrl,
    sink: StagedFile,
    meta_path: Path,
    *,
    timeout: float = 60.0,
    ca_bundle: str = "",
) -> None:
    """Fetch `source` into `sink` (already opened at the staged offset), resuming after cuts."""
    meta = FetchMeta.load(meta_path) if sink.written else FetchMeta()
    tls = tls_context(ca_bundle) if source.scheme == "https" else None
    failures = 0
    while True:
        sink.drain()  # every byte received so far is in the file: the offset to resume from
        before = sink.written
        try:
            try:
                if source.scheme == "ftp":
                    _ftp_once(policy, source, sink, timeout)
                else:
                    _http_once(policy, source, sink, meta, timeout, tls, lambda m: m.save(meta_path))
                return
            except Restart:
                log.info("source cannot resume at %s; fetching again from the start", sink.written)
                sink.reset()
                meta = FetchMeta()
                failures += 1
                if failures > MAX_RETRIES:
                    raise Failed("source unreachable: transfer keeps breaking off") from None
                continue
        except Interrupted as exc:
            failures = 0 if sink.written > before else failures + 1
            log.info("transfer interrupted at %s bytes (%s); resuming", sink.written, exc)
            if failures > MAX_RETRIES:
                raise Failed(
                    "source unreachable: transfer broke off at byte {sink_written}", sink_written=sink.written
                ) from None
            continue
        except ssl.SSLCertVerificationError as exc:
            raise Failed(
                "source TLS certificate not trusted: {exc_verify_message}", exc_verify_message=exc.verify_message
            ) from None
        except ssl.SSLError as exc:
            raise Failed("source TLS handshake failed: {reason}", reason=exc.reason or "error") from None
        except ConnectionRefusedError:
            raise Failed("source unreachable: connection refused") from None
        except TimeoutError:
            if sink.written > before:
                continue
            raise Failed("source unreachable: timed out") from None
        except ftplib.Error as exc:
            raise Failed("FTP {code} from source", code=_ftp_code(exc)) from None
        except (ConnectionError, EOFError, http.client.HTTPException) as exc:
            failures = 0 if sink.written > before else failures + 1
            if failures > MAX_RETRIES:
                raise Failed("source unreachable: {reason}", reason=_os_reason(exc)) from None
            continue
        except OSError as exc:
            raise Failed("source unreachable: {reason}", reason=_os_reason(exc)) from None


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, http.client.HTTPException):
        return "invalid HTTP response"
    return "connection lost"
