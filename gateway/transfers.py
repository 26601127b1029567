"""What every protocol server shares: token checks, connection limits, cutting, accounting, metrics, access log.

- `validate` checks a token (core.links.links) and counts refusals by reason.
- `open_conn` registers a connection of a link (FTP/SFTP sessions, HTTP downloads): the per-link
  connection limit is enforced there, and `cut` is how the connection is closed from outside.
- `begin`/`end` bracket one file transfer; `end` writes the access-log line (link id, never the token).
- `open_token` tells a download token from an upload token (FTP and SFTP take both); `receiver`
  takes an upload for one writer (core.importer.receiver), its bytes counted by protocol.
- `tick`, called about once a second from a thread, re-checks every link with open connections and
  cuts those no longer valid (revoked, expired, image deleted, access lost), closes idle connections,
  and adds the bytes sent since the last tick to `link.bytes_served` in one transaction.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Job, Link
from core.importer.receiver import Receiver, UploadRefused, open_receiver, poll_release_requests
from core.jobs import jobs
from core.links import links, uploads
from core.links.links import Refused, Served
from core.links.uploads import Receiving
from gateway.throttle import LoginThrottle

access_log = logging.getLogger("imagehub.access")
log = logging.getLogger("imagehub.gateway")

PROTOCOLS = ("http", "ftp", "sftp")


def reset_on_close(sock: Any) -> None:
    """Make the next close send RST, dropping what the kernel still holds for the client."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class JobsCollector(Collector):
    """Import/export jobs by kind, state and phase, read from the catalog at scrape time."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "imagehub_jobs", "Queued and running jobs by kind and phase", labels=["kind", "phase"]
        )
        try:
            with db.read_session(self.catalog.engine) as session:
                rows = session.exec(
                    select(Job.kind, Job.state, Job.phase, func.count())
                    .where(col(Job.state).in_(jobs.ACTIVE_STATES))
                    .group_by(col(Job.kind), col(Job.state), col(Job.phase))
                ).all()
        except Exception:  # a busy catalog must not break the scrape
            rows = []
        for kind, state, phase, count in rows:
            family.add_metric([kind, phase or state], count)
        yield family


class UploadsCollector(Collector):
    """Uploads started, finished, expired and cancelled, read from the catalog at scrape time: they
    end in the gateway, the worker's sweep or `link revoke`, in any process."""

    ENDED_EARLY = {
        str(uploads.EXPIRED): "imagehub_uploads_expired",
        str(uploads.CANCELLED): "imagehub_uploads_cancelled",
    }
    HELP = {
        "imagehub_uploads_started": "Upload links made",
        "imagehub_uploads_finished": "Uploads whose every byte arrived",
        "imagehub_uploads_expired": "Uploads whose link expired before their last byte",
        "imagehub_uploads_cancelled": "Uploads cancelled (their link revoked) before their last byte",
    }

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def collect(self) -> Iterator[Metric]:
        counts = dict.fromkeys(self.HELP, 0)
        try:
            with db.read_session(self.catalog.engine) as session:
                rows = session.exec(
                    select(Job.state, Job.error, func.count())
                    .join(Link, col(Link.image_id) == col(Job.image_id))
                    .where(Link.kind == links.UPLOAD, Job.kind == uploads.IMPORT_KIND)
                    .group_by(col(Job.state), col(Job.error))
                ).all()
        except Exception:  # a busy catalog must not break the scrape
            rows = []
        for state, error, count in rows:
            counts["imagehub_uploads_started"] += count
            if state != jobs.WAITING:  # an upload whose import failed later (a hostile file) did finish
                counts[self.ENDED_EARLY.get(error or "", "imagehub_uploads_finished")] += count
        for name, count in counts.items():
            yield GaugeMetricFamily(name, self.HELP[name], value=count)


class Metrics:
    def __init__(self, catalog: Catalog) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.bytes = Counter("imagehub_bytes_served", "Bytes of image files sent", ["protocol"], registry=r)
        self.received = Counter("imagehub_bytes_received", "Bytes received by uploads", ["protocol"], registry=r)
        self.transfers = Counter("imagehub_transfers", "File transfers ended", ["protocol", "status"], registry=r)
        self.active = Gauge("imagehub_active_transfers", "File transfers in progress", ["protocol"], registry=r)
        self.refusals = Counter("imagehub_refusals", "Refused requests and logins", ["protocol", "reason"], registry=r)
        self.connections = Gauge("imagehub_connections", "Open link connections", ["protocol"], registry=r)
        self.failed_logins = Counter(
            "imagehub_failed_logins",
            "Failed logins by protocol (refused tokens, unknown admin keys)",
            ["protocol"],
            registry=r,
        )
        for protocol in (*PROTOCOLS, "admin_ssh"):
            self.failed_logins.labels(protocol)
        for protocol in PROTOCOLS:
            self.bytes.labels(protocol)
            self.received.labels(protocol)
            self.active.labels(protocol)
            self.connections.labels(protocol)
        r.register(JobsCollector(catalog))
        r.register(UploadsCollector(catalog))


@dataclass(eq=False)
class Conn:
    link_id: str
    protocol: str
    peer: str
    cut: Callable[[str], None]
    opened: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    cut_reason: str | None = None
    limited: bool = True
    upload: bool = False  # writes an upload: cut when idle on every protocol (HTTP downloads are not)

    def touch(self) -> None:
        self.last_active = time.monotonic()


@dataclass(eq=False)
class Transfer:
    conn: Conn | None
    link_id: str
    protocol: str
    peer: str
    filename: str
    started: float = field(default_factory=time.monotonic)
    bytes: int = 0
    reported: int = 0
    ended: bool = False
    upload: bool = False  # bytes received, not served

    def add(self, count: int) -> None:
        self.bytes += count
        if self.conn is not None:
            self.conn.last_active = time.monotonic()


class Registry:
    def __init__(self, catalog: Catalog, metrics: Metrics | None = None) -> None:
        self.catalog = catalog
        self.metrics = metrics or Metrics(catalog)
        self.settings = catalog.settings.gateway
        self.throttle = LoginThrottle.from_settings(self.settings, self.metrics.failed_logins)
        self._lock = threading.Lock()
        self._conns: set[Conn] = set()
        self._transfers: set[Transfer] = set()
        self._ended: list[Transfer] = []

    # ---- tokens ----
    def validate(self, token: str, filename: str | None, protocol: str, peer: str = "-") -> Served:
        try:
            served = links.validate_token(self.catalog, token, filename)
        except Refused as exc:
            self.refused(protocol, exc.reason, links.link_id_of(token), peer)
            raise
        if not served.ready:
            try:
                links.ensure_prepared(self.catalog, served)
            except Exception:
                log.exception("queueing the preparation of link %s failed", served.link_id)
        return served

    def open_token(self, token: str, protocol: str, peer: str = "-") -> Served | Receiving:
        """What a login's token opens (FTP and SFTP take download and upload tokens alike)."""
        try:
            opened = links.open_token(self.catalog, token)
        except Refused as exc:
            self.refused(protocol, exc.reason, links.link_id_of(token), peer)
            raise
        if isinstance(opened, Served) and not opened.ready:
            try:
                links.ensure_prepared(self.catalog, opened)
            except Exception:
                log.exception("queueing the preparation of link %s failed", opened.link_id)
        return opened

    def validate_upload(self, token: str, protocol: str, peer: str = "-") -> Receiving:
        try:
            return links.validate_upload_token(self.catalog, token)
        except Refused as exc:
            self.refused(protocol, exc.reason, links.link_id_of(token), peer)
            raise

    def receiver(self, receiving: Receiving, transfer: Transfer) -> Receiver:
        """Take the upload for one writer (blocking: call it from a worker thread); UploadRefused if
        another writer has it. Its bytes count on `transfer`."""
        transfer.upload = True
        conn = transfer.conn
        if conn is not None:
            conn.upload = True

        def release() -> None:  # a new writer asked for this quiet writer's upload
            if conn is not None and conn.cut_reason is None:
                conn.cut_reason = "taken_over"
                log.info("link=%s proto=%s client=%s cut: taken_over", conn.link_id, conn.protocol, conn.peer)
                conn.cut("taken_over")

        try:
            return open_receiver(
                self.catalog,
                receiving,
                transfer.protocol,
                transfer.peer,
                transfer.add,
                release if conn else None,
                (lambda: conn.last_active) if conn else None,  # faces touch it on every chunk they gather
            )
        except UploadRefused:
            self.metrics.refusals.labels(transfer.protocol, "upload_busy").inc()
            raise

    def refused(self, protocol: str, reason: str, link_id: str | None, peer: str) -> None:
        self.metrics.refusals.labels(protocol, reason).inc()
        access_log.info("link=%s proto=%s client=%s refused reason=%s", link_id or "-", protocol, peer, reason)

    # ---- connections ----
    def open_conn(
        self, link_id: str, protocol: str, peer: str, cut: Callable[[str], None], *, limited: bool = True
    ) -> Conn:
        with self._lock:
            if limited:
                count = sum(1 for c in self._conns if c.link_id == link_id and c.limited)
                if count >= self.settings.max_connections_per_link:
                    self.metrics.refusals.labels(protocol, "too_many_connections").inc()
                    raise Refused("too_many_connections")
            conn = Conn(link_id, protocol, peer, cut, limited=limited)
            self._conns.add(conn)
        self.metrics.connections.labels(protocol).inc()
        return conn

    def close_conn(self, conn: Conn) -> None:
        with self._lock:
            if conn not in self._conns:
                return
            self._conns.discard(conn)
        self.metrics.connections.labels(conn.protocol).dec()

    def conns(self) -> list[Conn]:
        with self._lock:
            return list(self._conns)

    # ---- transfers ----
    def begin(self, conn: Conn | None, link_id: str, protocol: str, peer: str, filename: str) -> Transfer:
        transfer = Transfer(conn, link_id, protocol, peer, filename)
        with self._lock:
            self._transfers.add(transfer)
        self.metrics.active.labels(protocol).inc()
        return transfer

    def end(self, transfer: Transfer, status: str) -> None:
        with self._lock:
            if transfer.ended:
                return
            transfer.ended = True
            self._transfers.discard(transfer)
            self._ended.append(transfer)
        self.metrics.active.labels(transfer.protocol).dec()
        self.metrics.transfers.labels(transfer.protocol, status).inc()
        access_log.info(
            "link=%s proto=%s client=%s file=%s bytes=%d status=%s duration=%.3fs",
            transfer.link_id,
            transfer.protocol,
            transfer.peer,
            transfer.filename,
            transfer.bytes,
            status,
            time.monotonic() - transfer.started,
        )

    # ---- periodic work ----
    def tick(self) -> None:
        """Cut connections of links no longer valid, close idle ones, account bytes. Runs in a thread."""
        conns = self.conns()
        link_ids = {c.link_id for c in conns}
        try:
            verdicts = links.check_links(self.catalog, link_ids) if link_ids else {}
        except Exception:
            log.exception("re-checking links failed")
            verdicts = {}
        idle = self.settings.idle_timeout_seconds
        now = time.monotonic()
        for conn in conns:
            reason = verdicts.get(conn.link_id)
            if reason is None and idle and (conn.protocol != "http" or conn.upload) and now - conn.last_active > idle:
                reason = "idle"
            if reason is not None and conn.cut_reason is None:
                conn.cut_reason = reason
                log.info("link=%s proto=%s client=%s cut: %s", conn.link_id, conn.protocol, conn.peer, reason)
                try:
                    conn.cut(reason)
                except Exception:
                    log.exception("cutting a connection failed")
        try:
            poll_release_requests()
        except Exception:
            log.exception("handing quiet uploads over failed")
        self.flush()

    def flush(self) -> None:
        with self._lock:
            current = list(self._transfers) + self._ended
            self._ended = []
        counts: dict[str, int] = {}
        for transfer in current:
            done = transfer.bytes
            delta = done - transfer.reported
            if delta > 0 and transfer.upload:
                transfer.reported = done
                self.metrics.received.labels(transfer.protocol).inc(delta)
            elif delta > 0:
                transfer.reported = done
                counts[transfer.link_id] = counts.get(transfer.link_id, 0) + delta
                self.metrics.bytes.labels(transfer.protocol).inc(delta)
        if counts:
            try:
                links.add_bytes_served(self.catalog, counts)
            except Exception:
                log.exception("recording bytes served failed")

    def cut_all(self, reason: str = "shutdown") -> None:
        for conn in self.conns():
            conn.cut_reason = conn.cut_reason or reason
            try:
                conn.cut(reason)
            except Exception:
                log.exception("cutting a connection failed")
