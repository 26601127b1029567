"""HTTP(S) downloads: `GET`/`HEAD /d/{token}/{name}`, `/d/{token}/{name}.sha256`, `/healthz`; and
`/metrics` in an app of its own, served apart from the public port (`gateway.metrics_listen`).

RFC 9110 range semantics handled here rather than by aiohttp's FileResponse (which answers several
ranges with 416 and ignores an ETag in If-Range): single, suffix, open-ended and multiple ranges
(`multipart/byteranges`), `If-Range` with a strong ETag or the exact Last-Modified date,
`If-Match`/`If-None-Match`/`If-Unmodified-Since`/`If-Modified-Since`, `416` with
`Content-Range: bytes */LENGTH`. Overlapping and adjacent ranges are merged; more than 16 ranges,
or ranges adding up to more than the file, get the whole file once (nginx's `max_ranges`). Bodies
go out with `loop.sendfile` (zero-copy on plain TCP) in chunks, so bytes are counted as they go and
a revoked link is cut between chunks as well as by aborting the transport. The token is checked on
every request; refusals are one generic `403`. A link has at most
`gateway.max_connections_per_link` downloads running (with its FTP/SFTP sessions); one more gets
`429`. Log records of the HTTP server have tokens redacted (`TokenRedactor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.links.links import REFUSAL_MESSAGE, Refused, Served
from gateway.http_upload import PUT_METHODS, TUS_METHODS, Uploads
from gateway.throttle import counts_as_failed_login, host_of
from gateway.transfers import Registry, reset_on_close

SENDFILE_CHUNK = 8 * 1024 * 1024  # also the granularity of bytes accounted for a cut transfer
MAX_RANGES = 16  # nginx's max_ranges: past this many ranges the whole file is sent once
# 1 to 19 ASCII digits: int() also takes '²' or '٣' and refuses more than 4,300 digits.
_POSITION = re.compile(r"[0-9]{1,19}")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-transform",
}


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges as inclusive (first, last) pairs clipped to `size`, in the order asked for.

    None: the header is not a valid byte-range set (then it is ignored, RFC 9110 §14.2).
    []: valid but none is satisfiable (416); so is a position written in digits that are not 1 to
    19 ASCII digits (`²`, `٣`, thousands of digits): no byte of any file here has such an offset
    (nginx answers these with 416 too).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    out: list[tuple[int, int]] = []
    parts = [p.strip() for p in spec.split(",")]
    if not any(parts):
        return None
    for part in parts:
        if not part:
            continue
        first, dash, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not (first or last) or not all(t.isdigit() for t in (first, last) if t):
            return None
        if not all(_POSITION.fullmatch(t) for t in (first, last) if t):
            return []
        if first:
            start = int(first)
            end = int(last) if last else size - 1
            if last and end < start:
                return None
            if start >= size:
                continue
            out.append((start, min(end, size - 1)))
        else:
            length = int(last)
            if length == 0 or size == 0:
                continue
            out.append((max(0, size - length), size - 1))
    return out


def plan_ranges(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]] | None:
    """The parts to send for satisfiable `ranges`; None: send the whole file once, with 200.

    As nginx: more than MAX_RANGES ranges, or ranges adding up to more than the file, get the whole
    file (a few bytes of headers must not buy gigabytes of body). Overlapping and adjacent ranges
    are merged (RFC 9110 §14.3 allows it); the parts keep the order in which they were asked for.
    """
    if len(ranges) > MAX_RANGES or sum(last - first + 1 for first, last in ranges) > size:
        return None
    merged: list[list[int]] = []  # [first, last, index of the earliest range merged in]
    for index in sorted(range(len(ranges)), key=ranges.__getitem__):
        first, last = ranges[index]
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
            merged[-1][2] = min(merged[-1][2], index)
        else:
            merged.append([first, last, index])
    merged.sort(key=lambda part: part[2])
    return [(first, last) for first, last, _ in merged]


TOO_MANY_MESSAGE = "too many downloads of this link at once; try again shortly\n"


def _http_date(value: float) -> str:
    return email.utils.formatdate(value, usegmt=True)


def _parse_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed.timestamp()


def _etag_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _refusal(status: int = 403) -> web.Response:
    return web.Response(status=status, text=REFUSAL_MESSAGE + "\n", headers=dict(SECURITY_HEADERS))


class Downloads:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def peer(self, request: web.BaseRequest) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else "-"

    async def download(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        name = request.match_info["name"]
        peer = self.peer(request)
        try:
            served = await asyncio.to_thread(self.registry.validate, token, name, "http", peer)
        except Refused as exc:
            if counts_as_failed_login(exc.reason):  # answered late once this address keeps failing
                address = host_of(request.transport.get_extra_info("peername") if request.transport else None)
                await asyncio.sleep(self.registry.throttle.failed(address, "http"))
            return _refusal()
        if not served.ready:
            headers = {"Retry-After": "10", **SECURITY_HEADERS}
            return web.Response(status=503, text="the file is being prepared; try again shortly\n", headers=headers)
        if name == served.sum_name:
            return await self._sum_file(request, served)
        return await self._file(request, served, peer)

    async def _sum_file(self, request: web.Request, served: Served) -> web.StreamResponse:
        try:
            body = await asyncio.to_thread(served.sum_path.read_bytes)
        except OSError:
            return _refusal(404)
        headers = {
            "Content-Disposition": f'attachment; filename="{served.sum_name}"',
            **SECURITY_HEADERS,
        }
        return web.Response(body=body, content_type="text/plain", charset="us-ascii", headers=headers)

    async def _file(self, request: web.Request, served: Served, peer: str) -> web.StreamResponse:
        try:
            fobj = await asyncio.to_thread(open, served.path, "rb")
        except OSError:
            return _refusal(404)
        try:
            return await self._send(request, served, peer, fobj)
        finally:
            await asyncio.to_thread(fobj.close)

    async def _send(self, request: web.Request, served: Served, peer: str, fobj: Any) -> web.StreamResponse:
        st = os.fstat(fobj.fileno())
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        mtime = int(st.st_mtime)
        headers: dict[str, str] = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": _http_date(mtime),
            "Content-Disposition": f'attachment; filename="{served.filename}"',
            **SECURITY_HEADERS,
        }
        h = request.headers
        # Preconditions, RFC 9110 §13.2.2 order.
        if "If-Match" in h:
            tags = _etag_list(h["If-Match"])
            if "*" not in tags and etag not in tags:
                return web.Response(status=412, headers=headers)
        elif "If-Unmodified-Since" in h:
            since = _parse_date(h["If-Unmodified-Since"])
            if since is not None and mtime > since:
                return web.Response(status=412, headers=headers)
        if "If-None-Match" in h:
            tags = [t.removeprefix("W/") for t in _etag_list(h["If-None-Match"])]
            if "*" in tags or etag in tags:
                return web.Response(status=304, headers=headers)
        elif "If-Modified-Since" in h:
            since = _parse_date(h["If-Modified-Since"])
            if since is not None and mtime <= since:
                return web.Response(status=304, headers=headers)

        ranges: list[tuple[int, int]] | None = None
        if "Range" in h and self._if_range_holds(h.get("If-Range"), etag, mtime):
            ranges = parse_ranges(h["Range"], size)
            if ranges == []:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if ranges is not None:
                ranges = plan_ranges(ranges, size)

        if not ranges:
            return await self._respond(request, served, peer, fobj, 200, headers, [(0, size, b"")], size, b"")
        if len(ranges) == 1:
            first, last = ranges[0]
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            return await self._respond(
                request, served, peer, fobj, 206, headers, [(first, last - first + 1, b"")], 0, b""
            )
        boundary = secrets.token_hex(12)
        parts = []
        for first, last in ranges:
            head = (
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
            ).encode("ascii")
            parts.append((first, last - first + 1, head))
        tail = f"\r\n--{boundary}--\r\n".encode("ascii")
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        return await self._respond(request, served, peer, fobj, 206, headers, parts, 0, tail)

    @staticmethod
    def _if_range_holds(value: str | None, etag: str, mtime: int) -> bool:
        """RFC 9110 §13.1.5: serve the range only if the validator still matches exactly."""
        if value is None:
            return True
        value = value.strip()
        if value.startswith('"'):
            return value == etag
        if value.startswith("W/"):
            return False
        since = _parse_date(value)
        return since is not None and int(since) == mtime

    async def _respond(
        self,
        request: web.Request,
        served: Served,
        peer: str,
        fobj: Any,
        status: int,
        headers: dict[str, str],
        parts: list[tuple[int, int, bytes]],
        whole: int,
        tail: bytes,
    ) -> web.StreamResponse:
        if whole:
            parts = [(0, whole, b"")]
        response = web.StreamResponse(status=status, headers=headers)
        if "Content-Type" not in headers:
            response.content_type = "application/octet-stream"
        response.content_length = sum(len(head) + count for _, count, head in parts) + len(tail)
        if request.method == "HEAD":
            await response.prepare(request)
            return response
        loop = asyncio.get_running_loop()
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")

        cut_waiter: asyncio.Future[None] = loop.create_future()

        def do_cut() -> None:
            # Only wake the handler: aborting the transport under a running loop.sendfile corrupts
            # asyncio's selector state. The handler cancels the sendfile first, then resets.
            if not cut_waiter.done():
                cut_waiter.set_result(None)

        def cut(_reason: str) -> None:
            loop.call_soon_threadsafe(do_cut)

        registry = self.registry
        try:
            conn = registry.open_conn(served.link_id, "http", peer, cut)
        except Refused:
            headers = {"Retry-After": "5", **SECURITY_HEADERS}
            return web.Response(status=429, text=TOO_MANY_MESSAGE, headers=headers)
        transfer = registry.begin(conn, served.link_id, "http", peer, served.filename)
        status_text = str(status)
        try:
            await response.prepare(request)
            for offset, count, head in parts:
                if head:
                    await response.write(head)
                while count > 0:
                    if conn.cut_reason is not None:
                        raise ConnectionResetError(conn.cut_reason)
                    n = min(SENDFILE_CHUNK, count)
                    send = asyncio.ensure_future(loop.sendfile(transport, fobj, offset, n))
                    waiters: set[asyncio.Future[Any]] = {send, cut_waiter}
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    if not send.done():
                        send.cancel()
                        with contextlib.suppress(BaseException):
                            await send
                        reset_on_close(transport.get_extra_info("socket"))
                        raise ConnectionResetError(conn.cut_reason or "cut")
                    send.result()
                    offset += n
                    count -= n
                    transfer.add(n)
            if tail:
                await response.write(tail)
            await response.write_eof()
            return response
        except (ConnectionError, asyncio.CancelledError, RuntimeError) as exc:
            status_text = f"{status}-aborted" if conn.cut_reason is None else f"cut-{conn.cut_reason}"
            if isinstance(exc, asyncio.CancelledError):
                raise
            transport.abort()
            return response
        finally:
            if not cut_waiter.done():
                cut_waiter.cancel()
            registry.end(transfer, status_text)
            registry.close_conn(conn)


def make_app(registry: Registry) -> web.Application:
    downloads = Downloads(registry)

    def catalog_reachable() -> bool:
        try:
            with registry.catalog.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    async def healthz(_request: web.Request) -> web.Response:
        """200 while this node serves and reaches the catalog; 503 otherwise (load balancers)."""
        if await asyncio.to_thread(catalog_reachable):
            return web.Response(text="ok\n")
        return web.Response(status=503, text="catalog unreachable\n")

    @web.middleware
    async def no_leaks(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        """Unknown paths get the same 403 as bad tokens under /d/, /u/ and /tus/, a plain 404 elsewhere."""
        try:
            return await handler(request)
        except web.HTTPNotFound:
            if request.path.startswith(("/d/", "/u/", "/tus/")):
                return _refusal()
            raise
        except web.HTTPMethodNotAllowed:
            for prefix, allowed in (("/d/", "GET, HEAD"), ("/u/", PUT_METHODS), ("/tus/", TUS_METHODS)):
                if request.path.startswith(prefix):
                    return web.Response(status=405, headers={"Allow": allowed, **SECURITY_HEADERS})
            raise

    app = web.Application(middlewares=[no_leaks])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/d/{token}/{name}", downloads.download)
    Uploads(registry).add_routes(app)
    return app


def make_metrics_app(registry: Registry) -> web.Application:
    """`GET /metrics` (Prometheus), for `gateway.metrics_listen` only: refusal reasons stay off the public port."""

    async def metrics(_request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


# A token in a path (/d/TOKEN/, /u/TOKEN/, /tus/TOKEN) or on its own (lnk-ID.RANDOM.TIME.SIGNATURE).
_TOKEN_IN_PATH = re.compile(r"(/[du]/|/tus/)[^/\s'\"?#]+")
_TOKEN = re.compile(r"\b(lnk-[A-Za-z0-9_-]+)\.[A-Za-z0-9_.-]+")
# Loggers through which aiohttp and asyncio may print a request line or a request's path.
SERVER_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "asyncio")


def redact(text: str) -> str:
    """`text` with every download or upload token replaced (the link id, not secret, is kept)."""
    return _TOKEN.sub(r"\1.<redacted>", _TOKEN_IN_PATH.sub(r"\1<redacted>", text))


class TokenRedactor(logging.Filter):
    """Redacts tokens in a record's message, traceback and stack (docs/security.md T8).

    aiohttp logs a request line that is too long (more than 8 KiB) with the line itself, and an
    unhandled error's traceback may quote a path: neither may put a link's token in a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep it, redacted
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
