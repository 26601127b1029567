"""`imagehub serve`: one process running the HTTP and SFTP servers and the job worker on one asyncio
loop (the worker in a thread of its own), and the FTP server in threads of its own (one IO loop per
CPU core by default, `gateway.ftp_threads`; see gateway/ftp.py). The loop makes its sendfile copies
in a few threads (gateway/sendfile.py), so that HTTP downloads use every core.

At start it prints one line with the ports actually bound (ports configured as 0 are picked by the
system), e.g. `imagehub serve: http=127.0.0.1:8080 ftp=127.0.0.1:2121 sftp=127.0.0.1:2222
metrics=127.0.0.1:9109`, and records them in `data_dir/gateway-ports.json` so that links made
meanwhile name them. `/metrics` has a listener of its own (`gateway.metrics_listen`), never the
public HTTP port. Log records of the servers have link tokens redacted. SIGTERM and
SIGINT stop it cleanly: listeners close, running transfers are cut, the worker releases its job
leases, the last bytes are accounted, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from core.catalog.catalog import Catalog
from core.catalog.errors import Failed
from core.catalog.settings import Settings
from core.catalog.storage import SERVE_PID_FILE
from core.jobs.worker import Worker
from core.links.links import PORTS_FILE
from gateway import admin_ssh, ftp, http, sftp
from gateway.sendfile import SendfileLoop
from gateway.transfers import Metrics, Registry

log = logging.getLogger("imagehub.gateway")
TICK_SECONDS = 1.0
TRIM_EVERY_TICKS = 5


def _libc_malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None elsewhere.

    Every SFTP read reply is a fresh buffer of up to 256 KiB, and 8 OpenSSH clients keep about
    100 MB of them in flight. Once freed, glibc keeps that memory in its heaps (its mmap threshold
    grows past such sizes), so the process would hold its peak for good; trimming hands it back.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    gw = settings.gateway
    if not (gw.tls_cert and gw.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(gw.tls_cert, gw.tls_key)
    return context


def _write_ports(catalog: Catalog, ports: dict[str, int]) -> None:
    """The bound ports (for links) and the PID (for the TUI, which then leaves jobs to this worker)."""
    data_dir = catalog.settings.data_dir
    for name, text in ((PORTS_FILE, json.dumps({**ports, "pid": os.getpid()})), (SERVE_PID_FILE, f"{os.getpid()}\n")):
        tmp = data_dir / f".{name}.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, data_dir / name)


def _remove_ports(catalog: Catalog) -> None:
    data_dir = catalog.settings.data_dir
    try:
        if json.loads((data_dir / PORTS_FILE).read_text()).get("pid") == os.getpid():
            (data_dir / PORTS_FILE).unlink()
    except (OSError, ValueError):
        pass
    try:
        if int((data_dir / SERVE_PID_FILE).read_text().split()[0]) == os.getpid():
            (data_dir / SERVE_PID_FILE).unlink()
    except (OSError, ValueError, IndexError):
        pass


async def _start_metrics(registry: Registry, stack: contextlib.AsyncExitStack) -> int | None:
    """Serve /metrics on `gateway.metrics_listen` (not the public port); its bound port, or None when off."""
    gw = registry.catalog.settings.gateway
    address = gw.metrics_address
    if address is None:
        return None
    runner = web.AppRunner(http.make_metrics_app(registry), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, address[0], address[1], reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        raise Failed(f"the gateway cannot serve metrics on {gw.metrics_listen}: {exc.strerror or exc}") from exc
    server: Any = site._server  # an asyncio Server once started
    return int(server.sockets[0].getsockname()[1])


async def serve(
    catalog: Catalog,
    *,
    worker: bool = True,
    announce: bool = True,
    stop: asyncio.Event | None = None,
    started: Callable[[dict[str, int]], None] | None = None,
) -> int:
    """Serve until `stop` is set (given: embedded, e.g. tests) or SIGTERM/SIGINT arrives (not given)."""
    settings = catalog.settings
    gw = settings.gateway
    host = gw.host
    loop = asyncio.get_running_loop()
    signals = stop is None
    stop = stop or asyncio.Event()
    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    registry = Registry(catalog, Metrics(catalog))
    async with contextlib.AsyncExitStack() as stack:
        redactor = http.TokenRedactor()
        for name in http.SERVER_LOGGERS:
            logging.getLogger(name).addFilter(redactor)
            stack.callback(logging.getLogger(name).removeFilter, redactor)
        if signals:
            stack.callback(lambda: [loop.remove_signal_handler(sig) for sig in (signal.SIGTERM, signal.SIGINT)])
        stack.push_async_callback(asyncio.to_thread, registry.flush)  # the last bytes, once all has stopped
        # Started in order, stopped in reverse; a port that cannot be bound stops here with one line.
        try:
            runner = web.AppRunner(http.make_app(registry), access_log=None, handle_signals=False, shutdown_timeout=2.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, host, gw.http_port, ssl_context=_ssl_context(settings), reuse_address=True)
            await site.start()
            http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            metrics_port = await _start_metrics(registry, stack)

            host_key = settings.data_dir / "ssh_host_ed25519_key"
            acceptor = await sftp.listen(registry, host, gw.sftp_port, host_key)
            stack.push_async_callback(acceptor.wait_closed)
            stack.callback(acceptor.close)
            sftp_port = acceptor.get_port()

            ftp_gateway = ftp.FtpGateway(registry, host, gw.ftp_port)
            ftp_gateway.start()
            stack.callback(ftp_gateway.stop)

            admin_acceptor = None
            if gw.admin_ssh_port:
                admin_acceptor, admin_door = await admin_ssh.listen(catalog, host, gw.admin_ssh_port, registry.throttle)
                stack.push_async_callback(admin_door.close)
                stack.callback(admin_acceptor.close)
            # Unwinding runs backwards: transfers are cut first, then the servers close.
            stack.callback(registry.cut_all, "shutdown")
        except OSError as exc:
            raise Failed(f"the gateway cannot listen on {host}: {exc.strerror or exc}") from exc
        except ssl.SSLError as exc:
            raise Failed(f"the TLS certificate or key cannot be used: {exc}") from exc

        if worker:
            job_worker = Worker(catalog, label="serve")
            worker_thread = threading.Thread(target=job_worker.run_forever, name="job-worker", daemon=True)
            worker_thread.start()

            async def stop_worker() -> None:
                job_worker.stop.set()
                job_worker.wake()
                await asyncio.to_thread(worker_thread.join, 60)

            stack.push_async_callback(stop_worker)

        ports = {"http": http_port, "ftp": ftp_gateway.port, "sftp": sftp_port}
        line = f"imagehub serve: http={host}:{http_port} ftp={host}:{ftp_gateway.port} sftp={host}:{sftp_port}"
        if admin_acceptor is not None:
            ports["admin_ssh"] = admin_acceptor.get_port()
            line += f" admin_ssh={host}:{ports['admin_ssh']}"
        if metrics_port is not None and gw.metrics_address is not None:
            ports["metrics"] = metrics_port
            line += f" metrics={gw.metrics_address[0]}:{metrics_port}"
        _write_ports(catalog, ports)
        stack.callback(_remove_ports, catalog)
        log.info(line)
        if announce:
            print(line, flush=True)
        if started is not None:
            started(ports)

        trim = _libc_malloc_trim()

        async def ticker() -> None:
            ticks = 0
            while True:
                await asyncio.sleep(TICK_SECONDS)
                await asyncio.to_thread(registry.tick)
                ticks += 1
                if trim is not None and ticks % TRIM_EVERY_TICKS == 0:
                    await asyncio.to_thread(trim)

        tick_task = asyncio.create_task(ticker())
        try:
            await stop.wait()
        finally:
            log.info("imagehub serve: stopping")
            tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick_task
    log.info("imagehub serve: stopped")
    return 0


def run(catalog: Catalog) -> int:
    """Run until SIGTERM/SIGINT; the exit status for the CLI."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:  # whatever logger a request line reaches, no token
        handler.addFilter(http.TokenRedactor())
    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    with asyncio.Runner(loop_factory=SendfileLoop) as runner:
        return runner.run(serve(catalog))
