"""HTTP uploads (upload links): plain `PUT /u/{token}/[name]` for curl, and tus 1.0 at `/tus/{token}`.

curl: `curl -T FILE URL` sends the whole file (taken only while nothing has arrived); `curl -C OFFSET
-T FILE URL` sends `Content-Range: bytes OFFSET-END/TOTAL` and the rest, which must start at the
upload's offset, TOTAL being its size (`--bytes`). `HEAD` (`curl -sI URL`) and `OPTIONS` tell the
offset (`Upload-Offset`); `GET` is not a download: `405` with the offset and the command to resume.

tus 1.0.0 (https://tus.io/protocols/resumable-upload): core protocol (`HEAD`, `PATCH`, `OPTIONS`) and
the extensions `creation` (a `POST` whose `Upload-Length` is the upload's size answers `201` with the
same URL, so clients given an endpoint work), `checksum` (sha1, which the protocol requires, and
sha256: a chunk that fails it is dropped and answered `460`) and `expiration` (`Upload-Expires`).

Every body goes to disk through the upload's one Receiver, in batches of at most BATCH bytes written
from a worker thread; a declared length past the bytes still missing is refused before any is read,
and `Expect: 100-continue` is answered only once the request has passed every check, so a refused
client sends no body. Token refusals are the downloads' one generic `403`; a second writer gets `423`.
A body being received is a connection of its link (gateway.transfers): counted against the link's
limit, its bytes in `imagehub_bytes_received{protocol="http"}`, cut when the registry cuts it (link
revoked or expired); what a vanished client sent before it went is kept, a checked (tus) chunk is not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import HttpVersion11, web

from core.catalog.vocabulary import LinkState
from core.importer.receiver import Receiver, UploadRefused, current_offset
from core.links.links import REFUSAL_MESSAGE, Refused, upload_urls
from core.links.uploads import Receiving
from gateway.throttle import counts_as_failed_login, host_of
from gateway.transfers import Conn, Registry, Transfer, reset_on_close

BATCH = 1 << 20  # bytes handed to the Receiver at once (it hashes and writes them in a worker thread)
_NUMBER = re.compile(r"[0-9]{1,19}")
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})")
UPLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PUT_METHODS = "PUT, HEAD, OPTIONS, GET"
TUS_METHODS = "POST, HEAD, PATCH, OPTIONS"
TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,checksum,expiration"
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OFFSET_STREAM = "application/offset+octet-stream"
CHECKSUM_MISMATCH = 460  # tus checksum extension
BUSY_MESSAGE = "too many connections to this upload at once; try again shortly"


class Answer(Exception):
    """A request the upload does not take, and how it is answered."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.reason = reason

    def response(self, extra: dict[str, str] | None = None) -> web.Response:
        headers = {**UPLOAD_HEADERS, **(extra or {}), **self.headers}
        return web.Response(status=self.status, reason=self.reason, text=str(self) + "\n", headers=headers)


@dataclass(frozen=True)
class Body:
    """What a request's body claims to be: where it starts, how long it is (None: chunked), and its
    tus checksum (algorithm, expected digest) if any."""

    offset: int
    length: int | None
    checksum: tuple[str, bytes] | None = None


def peer_of(request: web.BaseRequest) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "-"


def _http_date(value: float) -> str:
    return email.utils.formatdate(value, usegmt=True)


def _number(value: str, header: str) -> int:
    value = value.strip()
    if not _NUMBER.fullmatch(value):
        raise Answer(400, f"{header} must be a number of bytes (1 to 19 digits), not {value[:40]!r}")
    return int(value)


async def expect_later(request: web.Request) -> web.StreamResponse | None:
    """Routes that take a body answer `Expect: 100-continue` themselves, once the request passed its checks."""
    expect = request.headers.get("Expect", "")
    if request.version == HttpVersion11 and expect.lower() != "100-continue":
        return web.Response(status=417, text=f"unknown Expect: {expect[:40]}\n", headers=dict(UPLOAD_HEADERS))
    return None


async def _continue(request: web.Request) -> None:
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the body of the final answer has not started


def _close_taken(done: asyncio.Future[Receiver]) -> None:
    if not done.cancelled() and done.exception() is None:
        done.result().close()


class Uploads:
    """The handlers of `/u/...` (curl) and `/tus/...`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def add_routes(self, app: web.Application) -> None:
        for path in ("/u/{token}", "/u/{token}/", "/u/{token}/{name}"):
            resource = app.router.add_resource(path)
            resource.add_route("PUT", self.put, expect_handler=expect_later)
            resource.add_route("HEAD", self.put_status)
            resource.add_route("OPTIONS", self.put_status)
            resource.add_route("GET", self.not_a_download)
        tus = app.router.add_resource("/tus/{token}")
        tus.add_route("OPTIONS", self.tus_options)
        tus.add_route("HEAD", self.tus_head)
        tus.add_route("PATCH", self.tus_patch, expect_handler=expect_later)
        tus.add_route("POST", self.tus_create, expect_handler=expect_later)

    # ---- the token ----
    async def _receiving(self, request: web.Request) -> Receiving:
        token = request.match_info["token"]
        try:
            return await asyncio.to_thread(self.registry.validate_upload, token, "http", peer_of(request))
        except Refused as exc:
            if exc.reason == LinkState.UPLOADED:  # a valid token: its holder may know the upload is done
                if request.method == "HEAD" and exc.size is not None:  # a client resuming after the last reply
                    done = {"Upload-Offset": str(exc.size), "Upload-Length": str(exc.size)}
                    raise Answer(200, "", done) from None
                raise Answer(409, "this upload is complete: every byte has arrived, it takes no more") from None
            if counts_as_failed_login(exc.reason):  # answered late once this address keeps failing
                address = host_of(request.transport.get_extra_info("peername") if request.transport else None)
                await asyncio.sleep(self.registry.throttle.failed(address, "http"))
            raise Answer(403, REFUSAL_MESSAGE) from None

    async def _offset(self, receiving: Receiving) -> int:
        return await asyncio.to_thread(current_offset, self.registry.catalog, receiving)

    async def _resume_command(self, request: web.Request, offset: int) -> str:
        urls = await asyncio.to_thread(upload_urls, self.registry.catalog, request.match_info["token"])
        return f"curl -C {offset} -T FILE {urls['http']}"

    async def _conflict(self, request: web.Request, offset: int, extra: str = "") -> Answer:
        command = await self._resume_command(request, offset)
        return Answer(
            409,
            f"{extra}this upload has {offset} bytes; send the rest from there: {command}",
            {"Upload-Offset": str(offset)},
        )

    # ---- curl: PUT, HEAD, OPTIONS, GET on /u/{token}/[name] ----
    async def put(self, request: web.Request) -> web.StreamResponse:
        try:
            receiving = await self._receiving(request)
            body = self._put_body(request, receiving)
            offset = await self._offset(receiving)
            if body.offset != offset:
                first = "" if body.offset else "a whole-file PUT is taken only while nothing has arrived; "
                raise await self._conflict(request, offset, first)
            done = await self._receive(request, receiving, body)
        except Answer as answer:
            return answer.response()
        if done.complete:
            text = f"upload complete: {done.size} bytes; the import starts now\n"
            return web.Response(status=201, text=text, headers={**UPLOAD_HEADERS, "Upload-Offset": str(done.offset)})
        command = await self._resume_command(request, done.offset)
        text = f"received {done.offset} of {done.size} bytes; send the rest: {command}\n"
        return web.Response(status=200, text=text, headers={**UPLOAD_HEADERS, "Upload-Offset": str(done.offset)})

    def _put_body(self, request: web.Request, receiving: Receiving) -> Body:
        length = request.content_length
        value = request.headers.get("Content-Range")
        if value is None:
            return Body(0, length)
        match = _CONTENT_RANGE.fullmatch(value.strip())
        if not match:
            raise Answer(400, "Content-Range must be 'bytes FIRST-LAST/TOTAL' (what curl -C OFFSET -T FILE sends)")
        first, last, total = (int(group) for group in match.groups())
        if total != receiving.size:
            raise Answer(
                400,
                f"this upload takes exactly {receiving.size} bytes (--bytes), not {total}: is this the right file?",
            )
        if last < first or last >= total:
            raise Answer(400, f"Content-Range bytes {first}-{last} is not within the file's {total} bytes")
        if length is not None and length != last - first + 1:
            raise Answer(400, f"Content-Length {length} is not the {last - first + 1} bytes of Content-Range")
        return Body(first, last - first + 1)

    async def put_status(self, request: web.Request) -> web.StreamResponse:
        try:
            receiving = await self._receiving(request)
        except Answer as answer:
            return answer.response()
        offset = await self._offset(receiving)
        headers = {
            **UPLOAD_HEADERS,
            "Upload-Offset": str(offset),
            "Upload-Length": str(receiving.size),
            "Allow": PUT_METHODS,
        }
        return web.Response(status=200, headers=headers)

    async def not_a_download(self, request: web.Request) -> web.StreamResponse:
        try:
            receiving = await self._receiving(request)
        except Answer as answer:
            return answer.response()
        offset = await self._offset(receiving)
        urls = await asyncio.to_thread(upload_urls, self.registry.catalog, request.match_info["token"])
        text = (
            "this is an upload address, not a download.\n"
            f"received {offset} of {receiving.size} bytes.\n"
            f"send the file: curl -T FILE {urls['http']}\n"
            f"send the rest: curl -C {offset} -T FILE {urls['http']}\n"
            f"bytes received: curl -sI {urls['http']}\n"
        )
        headers = {**UPLOAD_HEADERS, "Allow": PUT_METHODS, "Upload-Offset": str(offset)}
        return web.Response(status=405, text=text, headers=headers)

    # ---- tus 1.0.0 at /tus/{token} ----
    def _tus_headers(self, receiving: Receiving | None = None) -> dict[str, str]:
        headers = {"Tus-Resumable": TUS_VERSION}
        if receiving is not None:
            headers["Upload-Expires"] = _http_date(receiving.expires_at.timestamp())
        return headers

    def _tus_version(self, request: web.Request) -> None:
        if request.headers.get("Tus-Resumable", "").strip() != TUS_VERSION:
            raise Answer(412, f"this server speaks tus {TUS_VERSION} (Tus-Resumable)", {"Tus-Version": TUS_VERSION})

    async def tus_options(self, request: web.Request) -> web.StreamResponse:
        try:
            receiving = await self._receiving(request)
        except Answer as answer:
            return answer.response(self._tus_headers())
        headers = {
            **UPLOAD_HEADERS,
            **self._tus_headers(),
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(receiving.size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            "Allow": TUS_METHODS,
        }
        return web.Response(status=204, headers=headers)

    async def tus_head(self, request: web.Request) -> web.StreamResponse:
        try:
            self._tus_version(request)
            receiving = await self._receiving(request)
        except Answer as answer:
            return answer.response(self._tus_headers())
        offset = await self._offset(receiving)
        headers = {
            **UPLOAD_HEADERS,
            **self._tus_headers(receiving),
            "Upload-Offset": str(offset),
            "Upload-Length": str(receiving.size),
        }
        return web.Response(status=200, headers=headers)

    async def tus_create(self, request: web.Request) -> web.StreamResponse:
        """The creation extension: the upload exists already (the link names it); a client that asks
        for one of its exact size is given this same URL, and resumes it from `HEAD`'s offset."""
        try:
            self._tus_version(request)
            receiving = await self._receiving(request)
            if "Upload-Defer-Length" in request.headers or "Upload-Length" not in request.headers:
                raise Answer(400, f"Upload-Length must be given: this upload takes exactly {receiving.size} bytes")
            length = _number(request.headers["Upload-Length"], "Upload-Length")
            if length != receiving.size:
                status = 413 if length > receiving.size else 400
                raise Answer(status, f"this upload takes exactly {receiving.size} bytes (--bytes), not {length}")
            if request.content_length:
                raise Answer(400, "send the bytes with PATCH (creation-with-upload is not offered)")
        except Answer as answer:
            return answer.response(self._tus_headers())
        headers = {
            **UPLOAD_HEADERS,
            **self._tus_headers(receiving),
            "Location": f"/tus/{request.match_info['token']}",
        }
        return web.Response(status=201, headers=headers)

    async def tus_patch(self, request: web.Request) -> web.StreamResponse:
        try:
            self._tus_version(request)
            receiving = await self._receiving(request)
            if request.content_type != OFFSET_STREAM:
                raise Answer(415, f"a PATCH body is Content-Type: {OFFSET_STREAM}")
            if "Upload-Offset" not in request.headers:
                raise Answer(400, "Upload-Offset must be given")
            body = Body(
                _number(request.headers["Upload-Offset"], "Upload-Offset"),
                request.content_length,
                self._checksum(request.headers.get("Upload-Checksum")),
            )
            offset = await self._offset(receiving)
            if body.offset != offset:
                raise Answer(409, f"this upload has {offset} bytes, not {body.offset}", {"Upload-Offset": str(offset)})
            done = await self._receive(request, receiving, body)
        except Answer as answer:
            return answer.response(self._tus_headers())
        headers = {**UPLOAD_HEADERS, **self._tus_headers(receiving), "Upload-Offset": str(done.offset)}
        return web.Response(status=204, headers=headers)

    @staticmethod
    def _checksum(value: str | None) -> tuple[str, bytes] | None:
        if value is None:
            return None
        algorithm, _, encoded = value.strip().partition(" ")
        if algorithm not in CHECKSUMS:
            raise Answer(400, f"Upload-Checksum algorithms taken: {', '.join(CHECKSUMS)}")
        try:
            digest = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Answer(400, "Upload-Checksum must be 'ALGORITHM BASE64'") from None
        return algorithm, digest

    # ---- the body, to disk ----
    async def _receive(self, request: web.Request, receiving: Receiving, body: Body) -> Receiver:
        """Stream the body to the upload, from `body.offset`; the Receiver afterwards (closed)."""
        missing = receiving.size - body.offset
        if body.length is not None and body.length > missing:
            raise Answer(
                413,
                f"this upload takes exactly {receiving.size} bytes (--bytes); {body.length} more at byte"
                f" {body.offset} would pass it",
                {"Upload-Offset": str(body.offset)},
            )
        registry = self.registry
        loop = asyncio.get_running_loop()
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")

        def do_cut() -> None:
            reset_on_close(transport.get_extra_info("socket"))
            transport.abort()  # the body's reader then raises ConnectionResetError

        def cut(_reason: str) -> None:
            loop.call_soon_threadsafe(do_cut)

        peer = peer_of(request)
        try:
            conn = registry.open_conn(receiving.link_id, "http", peer, cut)
        except Refused:
            raise Answer(429, BUSY_MESSAGE, {"Retry-After": "5"}) from None
        transfer = registry.begin(conn, receiving.link_id, "http", peer, request.match_info.get("name", "upload"))
        status = "aborted"
        receiver: Receiver | None = None
        try:
            receiver = await self._take(receiving, transfer)
            if receiver.offset != body.offset:  # bytes arrived since the check above
                raise await self._conflict(request, receiver.offset)
            await _continue(request)
            status = await self._copy(request, receiver, body, missing, conn)
            if conn.cut_reason is not None:
                status = f"cut-{conn.cut_reason}"
                raise ConnectionResetError(conn.cut_reason)
            return receiver
        except Answer as answer:
            status = str(answer.status)
            if receiver is not None:
                answer.headers["Upload-Offset"] = str(receiver.offset)
            raise
        except ConnectionError:
            if conn.cut_reason is not None:
                status = f"cut-{conn.cut_reason}"
            raise
        finally:
            if receiver is not None:
                await asyncio.shield(loop.run_in_executor(None, receiver.close))
            registry.end(transfer, status)
            registry.close_conn(conn)

    async def _take(self, receiving: Receiving, transfer: Transfer) -> Receiver:
        """The upload's Receiver, taken in a worker thread (a second writer: 423)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self.registry.receiver, receiving, transfer)
        try:
            return await asyncio.shield(future)
        except UploadRefused as exc:
            raise Answer(423, str(exc)) from None
        except asyncio.CancelledError:  # the thread still takes it: let go of it when it has
            future.add_done_callback(_close_taken)
            raise

    async def _copy(self, request: web.Request, receiver: Receiver, body: Body, missing: int, conn: Conn) -> str:
        """Read the body into batches, each written from a worker thread while the next is read (one
        batch in flight: receiving overlaps writing); the transfer's status."""
        loop = asyncio.get_running_loop()
        hasher = CHECKSUMS[body.checksum[0]]() if body.checksum else None
        begin = receiver.mark()
        mark = begin if body.checksum else None
        batch = bytearray()
        read = 0
        inflight: asyncio.Future[int] | None = None

        async def settle() -> None:
            """Wait for the batch being written (its error, if any, is raised here)."""
            nonlocal inflight
            if inflight is not None:
                pending, inflight = inflight, None
                await pending

        async def flush() -> None:
            """Start writing the batch read so far, once the one before it is written."""
            nonlocal batch, inflight
            await settle()
            if batch:
                data, batch = batch, bytearray()
                inflight = loop.run_in_executor(None, receiver.write, receiver.offset, data)

        async def quiet() -> None:  # before rolling back or closing: no thread may still be writing
            with contextlib.suppress(Exception):
                await asyncio.shield(settle())

        try:
            while chunk := await request.content.readany():
                read += len(chunk)
                conn.touch()  # a writer that receives nothing for a while may be asked to give way
                if read > missing:
                    mark = begin  # a body that passes the upload is dropped whole: it is another file
                    raise Answer(413, f"this upload takes exactly {receiver.size} bytes (--bytes); the body passes it")
                if hasher is not None:
                    hasher.update(chunk)
                batch += chunk
                # with a checksum, the bytes that would end the upload wait until the body is checked
                if len(batch) >= BATCH and not (hasher is not None and read == missing):
                    await flush()
            if hasher is not None and body.checksum is not None and hasher.digest() != body.checksum[1]:
                raise Answer(
                    CHECKSUM_MISMATCH,
                    f"the body's {body.checksum[0]} is not Upload-Checksum: chunk dropped",
                    reason="Checksum Mismatch",
                )
            await flush()
            await settle()
        except UploadRefused as exc:
            await quiet()
            await asyncio.shield(loop.run_in_executor(None, self._drop, receiver, mark))
            raise Answer(409, str(exc)) from None
        except ConnectionError:
            await quiet()
            if mark is None and conn.cut_reason is None:  # the client went away: what arrived is a valid start
                with contextlib.suppress(UploadRefused, OSError):
                    await asyncio.shield(flush())
                await quiet()
            else:
                await asyncio.shield(loop.run_in_executor(None, self._drop, receiver, mark))
            raise
        except BaseException:
            await quiet()
            await asyncio.shield(loop.run_in_executor(None, self._drop, receiver, mark))
            raise
        return "201" if receiver.complete else "200"

    @staticmethod
    def _drop(receiver: Receiver, mark: int | None) -> None:
        """A checked (tus) chunk that did not arrive whole and right leaves nothing behind."""
        if mark is not None:
            with contextlib.suppress(OSError):
                receiver.rollback(mark)
