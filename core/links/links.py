"""Download links: signed 24-hour tokens for one file of one image, checked the same way by every protocol.

A token is `LINKID.RANDOM.TIMESTAMP.SIGNATURE` (itsdangerous `TimestampSigner`, HMAC-SHA256 with the
secret made by `imagehub init`): it names its link, carries 128 random bits, and is URL-safe, a valid
FTP user and SSH user name. The catalog keeps only SHA-256(token). A token is accepted while its
signature holds, its link is neither expired nor revoked, the image is still `available` in the
link's tenant, and the account that made the link still exists and still sees that tenant.
Every refusal is a `Refused` carrying a reason for logs and metrics; users see one generic message
that never says whether an image exists. A transfer already running when its link stops being valid
(revoked, expired, image deleted, access lost) is cut by the gateway within seconds: `check_links`
is what it re-asks periodically.

A link of kind `workbook` (core.links.workbooks) serves an Excel export of the image list instead of an
image: the same tokens, URLs, expiry and revocation; valid while its maker still sees what it lists.

A link of kind `upload` (core.links.uploads) is the way in for an importing image's bytes: the same
tokens and lifetime, opened with `validate_upload_token`; a download token never opens an upload and an
upload token never serves a file.

A link's state is decided once, by `link_state`: what the gateway serves or refuses (the refusal
reason is the state) is what `link list`, `download-link --json` and the TUI show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, TimestampSigner
from sqlalchemy import update
from sqlmodel import Session, col, select

from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.clock import iso, utcnow
from core.catalog.errors import ImagehubError, Invalid, NotFound
from core.catalog.ids import issue_id
from core.catalog.models import Account, Image, Link
from core.catalog.vocabulary import LinkState
from core.images import exports
from core.jobs import jobs
from core.links import uploads
from core.links.uploads import Receiving
from core.rules import access, lifecycle
from core.rules.access import Actor
from core.rules.lifecycle import Operation

SALT = "imagehub.download-link"
DOWNLOAD = "download"
WORKBOOK = "workbook"
UPLOAD = uploads.UPLOAD
UPLOAD_FILENAME = "upload"  # what `link list` names an upload link's file: the client picks its own name
WORKBOOKS_DIR = "workbooks"
PORTS_FILE = "gateway-ports.json"
REFUSAL_MESSAGE = "this download link is not valid (expired, revoked or unknown)"

# A link's states. Served: `active` (its file is ready) and `preparing` (its export or checksum is
# under way, or is started by the next request; HTTP answers 503 with Retry-After meanwhile).
# Every other state is refused, and is the refusal's reason in the gateway's logs and metrics.
ACTIVE, PREPARING, REVOKED, EXPIRED = LinkState.ACTIVE, LinkState.PREPARING, LinkState.REVOKED, LinkState.EXPIRED
IMAGE_UNAVAILABLE, TENANT_CHANGED, ACCESS_LOST = (
    LinkState.IMAGE_UNAVAILABLE,
    LinkState.TENANT_CHANGED,
    LinkState.ACCESS_LOST,
)
FILE_MISSING, EXPORT_FAILED, UPLOADED = LinkState.FILE_MISSING, LinkState.EXPORT_FAILED, LinkState.UPLOADED
SERVED_STATES = (ACTIVE, PREPARING)


class Refused(Exception):
    """A token or file request that is refused. `reason` is for logs and metrics only."""

    def __init__(self, reason: str, size: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.size = size  # a complete upload's size (`uploaded`): its offset, for a client that asks

    def __str__(self) -> str:
        return REFUSAL_MESSAGE


@dataclass(frozen=True)
class Served:
    """What a valid token opens: one file (and its `.sha256`)."""

    link_id: str
    image_id: str
    tenant_id: int | None
    format: str
    filename: str
    path: Path
    sha256: str | None
    expires_at: datetime

    @property
    def ready(self) -> bool:
        return self.sha256 is not None

    @property
    def sum_name(self) -> str:
        return self.filename + exports.SUM_SUFFIX

    @property
    def sum_path(self) -> Path:
        return exports.sum_path(self.path)

    def names(self) -> tuple[str, ...]:
        return (self.filename, self.sum_name) if self.ready else ()


@dataclass(frozen=True)
class Created:
    view: dict[str, Any]
    token: str
    job_id: int | None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _signer(catalog: Catalog) -> TimestampSigner:
    return TimestampSigner(catalog.secret(), salt=SALT, digest_method=hashlib.sha256)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def workbook_file(catalog: Catalog, link_id: str, filename: str) -> Path:
    """Where a workbook link's file lives: a folder of its own, so FTP and SFTP see only that file."""
    return catalog.settings.data_dir / WORKBOOKS_DIR / link_id / filename


# ---- URLs ---------------------------------------------------------------------------------------


def gateway_ports(catalog: Catalog) -> dict[str, int]:
    """The ports links name: the configured ones, or those a running `serve` bound (configured 0)."""
    gw = catalog.settings.gateway
    ports = {"http": gw.http_port, "ftp": gw.ftp_port, "sftp": gw.sftp_port}
    if 0 in ports.values():
        try:
            bound = json.loads((catalog.settings.data_dir / PORTS_FILE).read_text())
        except (OSError, ValueError):
            bound = {}
        for key, value in ports.items():
            if value == 0 and isinstance(bound.get(key), int):
                ports[key] = bound[key]
    return ports


def _where(catalog: Catalog) -> tuple[str, str, dict[str, int]]:
    """The scheme, host (bracketed if IPv6) and ports that links name."""
    settings = catalog.settings
    host = settings.public_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if settings.gateway.tls_cert and settings.gateway.tls_key else "http"
    return scheme, host, gateway_ports(catalog)


SFTP_OPTIONS = "-o StrictHostKeyChecking=accept-new -o PreferredAuthentications=none,password"
LOCAL_FILE = "FILE"  # in an upload's ready commands: the path of the file on the user's computer


def upload_urls(catalog: Catalog, token: str) -> dict[str, str]:
    """Where an upload's bytes go, one address per protocol, and the ready command for OpenSSH sftp.

    The HTTP, FTP and SFTP addresses end with `/`: curl appends the local file's name, and any name
    written there is the upload."""
    scheme, host, ports = _where(catalog)
    return {
        "http": f"{scheme}://{host}:{ports['http']}/u/{token}/",
        "tus": f"{scheme}://{host}:{ports['http']}/tus/{token}",
        "ftp": f"ftp://{token}@{host}:{ports['ftp']}/",
        "sftp": f"sftp://{token}@{host}:{ports['sftp']}/",
        "sftp_command": f"echo 'reput {LOCAL_FILE}' | sftp -b - -P {ports['sftp']} {SFTP_OPTIONS} {token}@{host}",
    }


def upload_commands(catalog: Catalog, token: str) -> dict[str, str]:
    """One ready command per tool (FILE: the file on the user's computer); each resumes when run again,
    except plain curl over HTTP, which resumes with the offset `curl -I` shows (`Upload-Offset`)."""
    _scheme, host, ports = _where(catalog)
    found = upload_urls(catalog, token)
    return {
        "curl_ftp": f"curl -T {LOCAL_FILE} -C - {found['ftp']}",
        "lftp": f"lftp -u {token}, -p {ports['ftp']} -e 'put -c {LOCAL_FILE}; bye' {host}",
        "sftp": found["sftp_command"],
        "curl_http": f"curl -T {LOCAL_FILE} {found['http']}",
        "curl_http_resume": f"curl -C OFFSET -T {LOCAL_FILE} {found['http']}",
        "offset": f"curl -sI {found['http']}",
        "tus": found["tus"],
    }


def urls(catalog: Catalog, token: str, filename: str) -> dict[str, str]:
    scheme, host, ports = _where(catalog)
    return {
        "http": f"{scheme}://{host}:{ports['http']}/d/{token}/{filename}",
        "ftp": f"ftp://{token}@{host}:{ports['ftp']}/{filename}",
        "sftp": f"sftp://{token}@{host}:{ports['sftp']}/{filename}",
        "sftp_command": (f"sftp -P {ports['sftp']} {SFTP_OPTIONS} {token}@{host}:{filename} ."),
    }


# ---- views --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A link's state and, when it is served, what it serves."""

    state: str
    served: Served | None = None
    receiving: Receiving | None = None


def link_state(catalog: Catalog, session: Session, link: Link, now: datetime, image: Image | None = None) -> Verdict:
    """The one decision on a link, for the gateway and for every view of it. `image`: the link's
    image when the caller has it already."""
    if link.kind == UPLOAD:
        return _upload_state(session, link, now, image)
    if link.revoked_at is not None:
        return Verdict(REVOKED)
    expires_at = _aware(link.expires_at)
    if expires_at <= now:
        return Verdict(EXPIRED)
    if link.kind == WORKBOOK:
        if _maker_lost(session, link, link.tenant_id):
            return Verdict(ACCESS_LOST)
        path = workbook_file(catalog, link.id, link.filename)
        sha = exports.read_checksum(path)
        if sha is None:
            return Verdict(FILE_MISSING)
        return Verdict(ACTIVE, Served(link.id, "", link.tenant_id, "xlsx", link.filename, path, sha, expires_at))
    if image is None or image.id != link.image_id:
        image = session.get(Image, link.image_id)
    if image is None or not lifecycle.allows(image.status, Operation.DOWNLOAD) or not image.disk_format:
        return Verdict(IMAGE_UNAVAILABLE)
    if image.tenant_id != link.tenant_id:
        return Verdict(TENANT_CHANGED)
    if _maker_lost(session, link, image.tenant_id):
        return Verdict(ACCESS_LOST)
    path = exports.served_path(catalog, image, link.format)
    sha = exports.read_checksum(path)
    served = Served(link.id, image.id, image.tenant_id, link.format, link.filename, path, sha, expires_at)
    if sha is not None:
        return Verdict(ACTIVE, served)
    if not catalog.store.image_path(image.id, image.disk_format).is_file():
        return Verdict(FILE_MISSING)
    if exports.active_job(session, image.id, link.format) is None:
        latest = exports.latest_job(session, image.id, link.format)
        if latest is not None and latest.state == jobs.FAILED:
            return Verdict(EXPORT_FAILED)
    return Verdict(PREPARING, served)


def _upload_state(session: Session, link: Link, now: datetime, image: Image | None) -> Verdict:
    if image is None or image.id != link.image_id:
        image = session.get(Image, link.image_id) if link.image_id else None
    job = uploads.import_job(session, link.image_id)
    state = uploads.state_of(link, image, job, now)
    if state != ACTIVE:
        return Verdict(state)
    assert image is not None and job is not None  # an active upload has both
    if image.tenant_id != link.tenant_id:
        return Verdict(TENANT_CHANGED)
    if _maker_lost(session, link, image.tenant_id):
        return Verdict(ACCESS_LOST)
    return Verdict(ACTIVE, receiving=uploads.receiving_of(link, job))


def link_view(
    catalog: Catalog, session: Session, link: Link, token: str | None = None, image: Image | None = None
) -> dict[str, Any]:
    if image is None and link.image_id is not None:
        image = session.get(Image, link.image_id)
    verdict = link_state(catalog, session, link, utcnow(), image)
    sha = None
    size = None
    path = None
    if link.kind == WORKBOOK:
        path = workbook_file(catalog, link.id, link.filename)
    elif link.kind == UPLOAD:
        path = None
    elif image is not None and image.disk_format:
        path = exports.served_path(catalog, image, link.format)
    if path is not None:
        sha = exports.read_checksum(path)
        if sha is not None:
            size = path.stat().st_size
    virtual_size = image.virtual_size if link.kind == DOWNLOAD and image is not None else None
    account = session.get(Account, link.account_id) if link.account_id else None
    view: dict[str, Any] = {
        "id": link.id,
        "kind": link.kind,
        "image_id": link.image_id,
        "format": link.format,
        "filename": link.filename,
        "sha256": sha,
        "size": size,
        "virtual_size": virtual_size,
        "state": verdict.state,
        "created_by": account.name if account else None,
        "created_at": iso(link.created_at),
        "expires_at": iso(link.expires_at),
        "revoked_at": iso(link.revoked_at),
        "bytes_served": link.bytes_served,
        "bytes_received": None,
    }
    if link.kind == UPLOAD:
        view["size"] = link.size
        view["bytes_received"] = uploads.bytes_received(catalog, link, uploads.import_job(session, link.image_id))
    if token is not None:
        view.update(upload_urls(catalog, token) if link.kind == UPLOAD else urls(catalog, token, link.filename))
    return view


# ---- services -----------------------------------------------------------------------------------


def _downloadable(
    catalog: Catalog, session: Session, actor: Actor, image_id: str, fmt: str | None
) -> tuple[Image, str]:
    """The image (visible, `available`, with a file) and the format a link to it serves (`fmt`, or
    when None links.default_format; an ISO as it is)."""
    image = _downloadable_image(session, actor, image_id)
    return image, exports.requested_format(catalog.settings, image, fmt)


def _downloadable_image(session: Session, actor: Actor, image_id: str) -> Image:
    image = access.load_visible(session, actor, Image, image_id)
    lifecycle.require(image_id, image.status, Operation.DOWNLOAD)
    if not image.disk_format:
        raise ImagehubError("image {image_id} has no stored file", image_id=image_id)
    return image


def download_choices(catalog: Catalog, actor: Actor, image_id: str) -> dict[str, Any]:
    """What a link to `image_id` would serve, before one is made: the format given when none is
    asked for, the disk's `virtual_size`, and per format (`formats`, the default first) the bytes to
    download (`size`; `exact` false: an estimate, the export is not made yet) and whether they are
    `mostly_zeros` (a raw disk's empty space)."""
    with db.read_session(catalog.engine) as session:
        image = _downloadable_image(session, actor, image_id)
        default = exports.requested_format(catalog.settings, image, None)
        sizes = sorted(exports.download_sizes(catalog, image), key=lambda found: found.format != default)
        return {
            "image_id": image.id,
            "default_format": default,
            "virtual_size": image.virtual_size,
            "formats": [
                {"format": s.format, "size": s.size, "exact": s.exact, "mostly_zeros": s.mostly_zeros} for s in sizes
            ],
        }


def prepare(catalog: Catalog, actor: Actor, image_id: str, fmt: str | None = None) -> int | None:
    """Start making what a link to (image, fmt) serves (an export, the checksum); the job to wait for
    (None: the file and its checksum are ready). `fmt` None: links.default_format.

    Faces wait for it before `create_link`, so that a link's lifetime starts when it can be used."""
    with db.write_session(catalog.engine) as session:
        image, served = _downloadable(catalog, session, actor, image_id, fmt)
        job = exports.ensure(catalog, session, image, served)
        return job.id if job is not None else None


def check_ttl(catalog: Catalog, ttl: int | None) -> int:
    """The lifetime a link gets: `ttl` (1 s up to links.ttl_seconds), or links.ttl_seconds."""
    max_ttl = catalog.settings.links.ttl_seconds
    if ttl is None:
        return max_ttl
    if ttl < 1 or ttl > max_ttl:
        raise Invalid("--ttl must be between 1 and {max_ttl} seconds", max_ttl=max_ttl)
    return ttl


def new_link(
    catalog: Catalog,
    session: Session,
    actor: Actor,
    *,
    kind: str,
    image_id: str | None,
    tenant_id: int | None,
    fmt: str,
    filename: str,
    ttl: int,
    size: int | None = None,
    link_id: str | None = None,
) -> tuple[Link, str]:
    """Add a link and make its token (returned once: the catalog keeps only its hash), in the caller's
    transaction. `ttl` is already checked (`check_ttl`); `link_id`: one issued earlier (a workbook's,
    whose folder is named before the link is recorded)."""
    link_id = link_id or issue_id(session, "lnk")
    token = _signer(catalog).sign(f"{link_id}.{secrets.token_urlsafe(16)}").decode("ascii")
    now = utcnow()
    link = Link(
        id=link_id,
        kind=kind,
        image_id=image_id,
        tenant_id=tenant_id,
        account_id=actor.account_id,
        format=fmt,
        filename=filename,
        token_hash=token_hash(token),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        size=size,
    )
    session.add(link)
    return link, token


def create_link(
    catalog: Catalog, actor: Actor, image_id: str, fmt: str | None = None, ttl: int | None = None
) -> Created:
    """Record a link to `image_id` in format `fmt` (None: links.default_format; an ISO as it is),
    valid `ttl` seconds (at most links.ttl_seconds)."""
    try:
        ttl = check_ttl(catalog, ttl)
        with db.write_session(catalog.engine) as session:
            image, fmt = _downloadable(catalog, session, actor, image_id, fmt)
            link, token = new_link(
                catalog,
                session,
                actor,
                kind=DOWNLOAD,
                image_id=image_id,
                tenant_id=image.tenant_id,
                fmt=fmt,
                filename=exports.served_path(catalog, image, fmt).name,
                ttl=ttl,
            )
            link_id = link.id
            job = exports.ensure(catalog, session, image, fmt)
            session.flush()
            audit.record(session, actor.name, "link.create", image_id, link=link_id, format=fmt, ttl=ttl)
            view = link_view(catalog, session, link, token, image)
            return Created(view, token, job.id if job is not None else None)
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "link.create", image_id, str(exc))
        raise


def get_link(catalog: Catalog, actor: Actor, link_id: str) -> dict[str, Any]:
    with db.read_session(catalog.engine) as session:
        link = access.load_visible(session, actor, Link, link_id)
        return link_view(catalog, session, link)


def list_links(catalog: Catalog, actor: Actor, image_id: str | None = None) -> list[dict[str, Any]]:
    """Links of the tenants the caller sees, newest first."""
    with db.read_session(catalog.engine) as session:
        statement = select(Link).order_by(col(Link.created_at).desc(), col(Link.id))
        visible = access.visible_tenant_ids(actor)
        if visible is not None:
            statement = statement.where(col(Link.tenant_id).in_(visible))
        if image_id:
            statement = statement.where(Link.image_id == image_id)
        images: dict[str | None, Image | None] = {None: None}
        out = []
        for link in session.exec(statement):
            if link.image_id not in images:
                images[link.image_id] = session.get(Image, link.image_id)
            out.append(link_view(catalog, session, link, image=images[link.image_id]))
        return out


def revoke_link(catalog: Catalog, actor: Actor, link_id: str) -> dict[str, Any]:
    """Revoke a link (its maker, or anyone who may manage its tenant); transfers are cut within seconds."""
    try:
        with db.write_session(catalog.engine) as session:
            link = access.load_visible(session, actor, Link, link_id)
            access.require_may_revoke_link(actor, link)
            cancelled = False
            if link.revoked_at is None:
                link.revoked_at = utcnow()
                session.add(link)
                audit.record(session, actor.name, "link.revoke", link.image_id or link.id, link=link_id)
                if link.kind == UPLOAD:
                    cancelled = uploads.end_in_session(session, link, uploads.CANCELLED, actor.name, link.revoked_at)
                    if cancelled:
                        audit.record(session, actor.name, "upload.cancel", link.image_id, link=link_id)
            view = link_view(catalog, session, link)
        if cancelled:
            uploads.remove_staged(catalog, link.image_id)
        return view
    except ImagehubError as exc:
        audit.record_refusal(catalog.engine, actor.name, "link.revoke", link_id, str(exc))
        raise


def revoke_links_of(session: Session, account_id: int, now: datetime) -> int:
    """Revoke every link `account_id` made (its account is being deleted), in the caller's
    transaction; running transfers are cut by the gateway's next check. The number revoked."""
    result = session.exec(
        update(Link).where(col(Link.account_id) == account_id, col(Link.revoked_at).is_(None)).values(revoked_at=now)
    )
    return int(result.rowcount or 0)


# ---- checking tokens ----------------------------------------------------------------------------


def _maker_lost(session: Session, link: Link, tenant_id: int | None) -> bool:
    """The account that made the link is deleted or no longer sees `tenant_id` (moved away; None: a
    workbook of every tenant, which only an admin sees). A download link recorded without a maker
    keeps working; a workbook lists what its maker saw, so without one it serves nothing."""
    if link.account_id is None:
        return link.kind == WORKBOOK
    return not access.maker_sees(session.get(Account, link.account_id), tenant_id)


def _check(catalog: Catalog, session: Session, link: Link, now: datetime) -> Verdict:
    """What the gateway serves or receives for `link`, or Refused with the link's state as the reason."""
    verdict = link_state(catalog, session, link, now)
    if verdict.served is None and verdict.receiving is None:
        raise Refused(verdict.state, link.size if verdict.state == UPLOADED else None)
    return verdict


def link_id_of(token: str) -> str | None:
    """The link a token claims to name (unverified), for logs; None if it is not shaped like one."""
    head = token.split(".", 1)[0]
    return head if head.startswith("lnk-") and len(head) <= 32 else None


def open_token(catalog: Catalog, token: str) -> Served | Receiving:
    """What a token opens: a file to serve (download and workbook links) or an upload to receive;
    else `Refused`. Faces that take both kinds (FTP, SFTP) decide by the type."""
    if not token or len(token) > 256:
        raise Refused("bad_token")
    try:
        value = _signer(catalog).unsign(token).decode("ascii")
    except (BadSignature, UnicodeDecodeError) as exc:
        raise Refused("bad_token") from exc
    link_id = value.split(".", 1)[0]
    with db.read_session(catalog.engine) as session:
        link = session.get(Link, link_id)
        if link is None or not hmac.compare_digest(link.token_hash, token_hash(token)):
            raise Refused("bad_token")
        verdict = _check(catalog, session, link, utcnow())
    if verdict.receiving is not None:
        return verdict.receiving
    assert verdict.served is not None
    return verdict.served


def validate_token(catalog: Catalog, token: str, filename: str | None = None) -> Served:
    """The file a token opens, or `Refused` (an upload token opens none: `wrong_kind`). With
    `filename`, it must be the link's file or its .sha256."""
    served = open_token(catalog, token)
    if not isinstance(served, Served):
        raise Refused("wrong_kind")
    if filename is not None and filename not in (served.filename, served.sum_name):
        raise Refused("wrong_file")
    return served


def validate_upload_token(catalog: Catalog, token: str) -> Receiving:
    """The upload a token opens, or `Refused` (a download token opens none: `wrong_kind`)."""
    receiving = open_token(catalog, token)
    if not isinstance(receiving, Receiving):
        raise Refused("wrong_kind")
    return receiving


def check_links(catalog: Catalog, link_ids: list[str] | set[str]) -> dict[str, str | None]:
    """For running transfers: each link's refusal reason, or None while it is still valid."""
    result: dict[str, str | None] = {}
    if not link_ids:
        return result
    now = utcnow()
    with db.read_session(catalog.engine) as session:
        for link_id in link_ids:
            link = session.get(Link, link_id)
            if link is None:
                result[link_id] = "bad_token"
                continue
            try:
                _check(catalog, session, link, now)
                result[link_id] = None
            except Refused as exc:
                # a finished upload refuses more bytes but need not end the session that sent them
                result[link_id] = None if exc.reason == UPLOADED else exc.reason
    return result


def add_bytes_served(catalog: Catalog, counts: dict[str, int]) -> None:
    """Add the bytes sent since the last call, per link, in one transaction."""
    counts = {k: v for k, v in counts.items() if v > 0}
    if not counts:
        return
    with db.write_session(catalog.engine) as session:
        for link_id, count in counts.items():
            session.exec(update(Link).where(col(Link.id) == link_id).values(bytes_served=Link.bytes_served + count))


def describe(catalog: Catalog, link_id: str, token: str | None = None) -> dict[str, Any]:
    """A link's view (with its URLs when the token is given), without an access check: for its maker."""
    with db.read_session(catalog.engine) as session:
        link = session.get(Link, link_id)
        if link is None:
            raise NotFound("link {link_id} not found", link_id=link_id)
        return link_view(catalog, session, link, token)


def ensure_prepared(catalog: Catalog, served: Served) -> None:
    """Queue the export/checksum job for a link whose file is not ready and has no job under way
    (e.g. an export cache removed by hand): the link then answers once the job is done."""
    if served.ready:
        return
    with db.write_session(catalog.engine) as session:
        image = session.get(Image, served.image_id)
        if image is not None and lifecycle.allows(image.status, Operation.DOWNLOAD):
            exports.ensure(catalog, session, image, served.format)
