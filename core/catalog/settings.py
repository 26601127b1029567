"""Typed configuration: a TOML file plus environment overrides (IMAGEHUB_SECTION__KEY).

Where the file comes from: `--config PATH`, else `$IMAGEHUB_CONFIG`, else `config/imagehub.toml`
under the current directory if present, else built-in defaults. Relative paths resolve against
the config file's folder (the current directory when there is no file).

pydantic-settings reads the environment (core.catalog.env_settings). It is imported only when an
environment variable could override a setting: without one it would add nothing to the file, and
its import costs every command line call about a third of its start-up.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from core.catalog.errors import Invalid


class StorageSettings(BaseModel):
    """Where imagehub keeps its files.

    data_dir: folder holding the SQLite catalog, the image store (`images/`), staging
        (`staging/`), export caches (`exports/`), the signing secret and SSH host keys.
    """

    model_config = ConfigDict(extra="forbid")
    data_dir: Path = Path("var")


class DatabaseSettings(BaseModel):
    """The catalog database.

    url: SQLAlchemy URL; empty means SQLite `catalog.db` inside storage.data_dir.
    busy_timeout_seconds: how long a SQLite writer waits for the lock.
    """

    model_config = ConfigDict(extra="forbid")
    url: str = ""
    busy_timeout_seconds: float = 30.0


class ImagesSettings(BaseModel):
    """Rules for image metadata.

    os_matrix: TOML file listing platform -> architecture -> versions offered at import.
    min_size_gb, max_size_gb: bounds of the target size (GiB).
    """

    model_config = ConfigDict(extra="forbid")
    os_matrix: Path = Path(__file__).resolve().parents[2] / "config" / "os_matrix.toml"
    min_size_gb: int = 20
    max_size_gb: int = 500


def split_host_port(value: str) -> tuple[str, int] | None:
    """(host, port) from "HOST:PORT" or "[IPV6]:PORT"; None for ""; ValueError otherwise."""
    if not value:
        return None
    host, colon, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f'expected "HOST:PORT" (port 0 to 65535) or "", not {value!r}')
    return host, int(port)


class GatewaySettings(BaseModel):
    """The bundled download servers.

    host: bind address. public_host: host name put into links (empty: host).
    http_port, ftp_port, sftp_port: listening ports (0: pick a free port).
    ftp_passive_ports: passive data port range "first-last".
    ftp_threads: FTP I/O loops, each a thread sending with a core of its own; new sessions go to
        the loop with the fewest (0: one per CPU core the process may use).
    admin_ssh_port: SSH front door running the TUI for admins (0: off); its own port and host key.
    admin_ssh_login_timeout_seconds: an admin SSH client must authenticate within this.
    admin_ssh_idle_timeout_seconds: an admin session without keyboard input this long is closed.
    admin_ssh_max_sessions: concurrent admin SSH sessions; more are refused.
    tls_cert, tls_key: PEM files; when set, HTTP is served as HTTPS and FTP offers AUTH TLS.
    idle_timeout_seconds: idle FTP/SFTP sessions are closed after this.
    max_connections_per_link: concurrent connections per link: FTP/SFTP sessions and running HTTP
        downloads together (one more download is answered 429).
    metrics_listen: where `GET /metrics` (Prometheus) is served, "HOST:PORT" ("[::1]:9109" for
        IPv6; port 0: pick a free one), never on the public HTTP port; empty: not served.
    login_backoff_after: failed logins (bad tokens, unknown admin keys) one client address may make
        on the HTTP, FTP, SFTP and admin SSH ports before each further failure is answered late.
    login_backoff_max_seconds: the longest such delay (1 s, doubling per failure, up to this);
        0 turns the delay off (failures are still counted in the metrics). Successes never wait.
    login_backoff_window_seconds: an address without a failure this long starts afresh.
    """

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    public_host: str = ""
    http_port: int = 8080
    ftp_port: int = 2121
    ftp_passive_ports: str = "30000-30099"
    ftp_threads: int = Field(default=0, ge=0)
    sftp_port: int = 2222
    admin_ssh_port: int = 0
    admin_ssh_login_timeout_seconds: int = 30
    admin_ssh_idle_timeout_seconds: int = 1800
    admin_ssh_max_sessions: int = 16
    tls_cert: str = ""
    tls_key: str = ""
    idle_timeout_seconds: int = 300
    max_connections_per_link: int = 8
    metrics_listen: str = "127.0.0.1:9109"
    login_backoff_after: int = Field(default=5, ge=0)
    login_backoff_max_seconds: float = Field(default=16.0, ge=0)
    login_backoff_window_seconds: float = Field(default=600.0, gt=0)

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen_is_host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """`metrics_listen` as (host, port); None when /metrics is off."""
        return split_host_port(self.metrics_listen)


class LinksSettings(BaseModel):
    """Download links.

    ttl_seconds: default lifetime of a link (24 h); `--ttl` may only shorten it.
    default_format: what a link to a disk image serves when no format is asked for: "qcow2"
        (compact: about the data the disk holds) or "raw" (the whole virtual disk, zeros included).
        An ISO is always served as it is. An import hashes the file it stores when default links
        serve it (core.images.exports.hashed_at_import).
    """

    model_config = ConfigDict(extra="forbid")
    ttl_seconds: int = 86400
    default_format: Literal["qcow2", "raw"] = "qcow2"


class ImportSettings(BaseModel):
    """The import pipeline.

    allow_private_networks: accept URL sources resolving to loopback/private/link-local
        addresses (SSRF guard off; labs and tests only).
    allowed_schemes, allowed_ports: what a source URL may use; an FTP source's passive data port
        must be on allowed_ports too.
    ca_bundle: extra CA certificates (PEM) trusted for HTTPS sources.
    max_concurrent: import jobs run at once by one worker.
    max_concurrent_total: jobs run at once across every worker sharing the catalog (0: no cap).
    job_lease_seconds: a worker renews its job lease this often (about a third of it); a worker that
        dies loses its jobs to another after this long.
    local_roots: folders whose files may be imported with --file (empty: tui.import_root only);
        the store, staging, exports and keys under data_dir are never importable.
    require_disk_structure: a source must carry a partition table, a file system or volume
        signature, or a boot sector (libblkid probing; docs/security.md F14), else the import fails as
        "not a disk image"; false accepts any bytes as a raw disk.
    stall_timeout_seconds: an import receiving no data this long fails as stalled.
    staging_quota_gb: what one tenant's running imports may hold in staging at once, counted on
        disk across every node (Glance's image_stage_total); an import passing it fails (0: none).
    store_format: format images are stored in: "raw" or "qcow2".
    convert_memory_mb: address space one `qemu-img convert` may use (import, export, capture).
    convert_timeout_seconds, convert_min_mib_per_second: one `qemu-img convert` may run (wall clock,
        and as much CPU time) this long plus the time its source's allocated data takes at this rate;
        then it is stopped and the job fails.
    """

    model_config = ConfigDict(extra="forbid")
    allow_private_networks: bool = False
    allowed_schemes: list[str] = Field(default_factory=lambda: ["http", "https", "ftp"])
    allowed_ports: list[int] = Field(default_factory=lambda: [80, 443, 21])
    ca_bundle: str = ""
    max_concurrent: int = 2
    max_concurrent_total: int = 0
    job_lease_seconds: float = 30.0
    local_roots: list[Path] = Field(default_factory=list)
    require_disk_structure: bool = True
    stall_timeout_seconds: int = 600
    staging_quota_gb: float = Field(default=0, ge=0)
    store_format: str = "raw"
    convert_memory_mb: int = Field(default=4096, ge=1)
    convert_timeout_seconds: float = Field(default=600.0, ge=0)
    convert_min_mib_per_second: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _stall_outlasts_lease(self) -> ImportSettings:
        # A worker that dies must lose its job (lease) before the job could be called stalled,
        # so that it is resumed elsewhere rather than failed.
        if self.stall_timeout_seconds <= self.job_lease_seconds:
            raise ValueError("stall_timeout_seconds must be longer than job_lease_seconds")
        return self


class ComputeSettings(BaseModel):
    """VMs made from images (`imagehub vm ...`).

    driver: "auto" runs each VM with qemu when qemu-system for the image's architecture is
        installed, else only records it ("none"); "qemu" runs them with qemu-system-x86_64 /
        qemu-system-aarch64, driven through a QMP socket; "none" records VMs without running them
        (they are `defined`, never `running`).
    accel: qemu accelerator: "auto" (KVM when /dev/kvm is usable for the VM's architecture, else
        TCG), "kvm" or "tcg".
    memory_mb, cpus: memory and virtual CPUs of each VM.
    start_timeout_seconds: how long qemu may take to start.
    stop_timeout_seconds: how long `vm stop` waits for the guest to power off before a hard stop.
    """

    model_config = ConfigDict(extra="forbid")
    driver: Literal["auto", "none", "qemu"] = "auto"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    memory_mb: int = Field(default=1024, ge=64)
    cpus: int = Field(default=1, ge=1)
    start_timeout_seconds: float = 30.0
    stop_timeout_seconds: float = 60.0


class TuiSettings(BaseModel):
    """The terminal UI.

    import_root: folder the import wizard's file browser starts in.
    language: "en", "zh_CN", or empty to follow $LANG.
    """

    model_config = ConfigDict(extra="forbid")
    import_root: Path = Path("var/incoming")
    language: str = ""


class Settings(BaseModel):
    """All of imagehub's configuration; see config/imagehub.toml for every key, commented."""

    # pydantic-settings' validation (its BaseSettings defaults, and ours): the same with or without it.
    model_config = ConfigDict(
        populate_by_name=True, extra="ignore", validate_default=True, arbitrary_types_allowed=True
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    images: ImagesSettings = Field(default_factory=ImagesSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    links: LinksSettings = Field(default_factory=LinksSettings)
    # "import" is a keyword: the TOML section is [import], the environment IMAGEHUB_IMPORT__KEY.
    import_: ImportSettings = Field(
        default_factory=ImportSettings, validation_alias=AliasChoices("import", "imagehub_import")
    )
    tui: TuiSettings = Field(default_factory=TuiSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    config_path: Path | None = Field(default=None, exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.config_path.parent if self.config_path else Path.cwd()

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.data_dir / 'catalog.db'}"

    @property
    def public_host(self) -> str:
        return self.gateway.public_host or self.gateway.host


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: explicit, else $IMAGEHUB_CONFIG, else ./config/imagehub.toml."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise Invalid("config file {path} does not exist", path=path)
        return path.resolve()
    env = os.environ.get("IMAGEHUB_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise Invalid("config file {path} (from IMAGEHUB_CONFIG) does not exist", path=path)
        return path.resolve()
    local = Path.cwd() / "config" / "imagehub.toml"
    return local.resolve() if local.is_file() else None


def _resolve(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else (base / value).resolve()


def _resolve_sqlite_url(base: Path, url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return prefix + str(_resolve(base, Path(url[len(prefix) :])))
    return url


# IMAGEHUB_ variables that are not settings: the config file, the acting account, the SSH door's mark.
NOT_SETTINGS = frozenset({"imagehub_config", "imagehub_account", "imagehub_via_ssh"})


def environment_overrides_settings() -> bool:
    """Whether pydantic-settings could read a setting from the environment: it reads, ignoring case,
    IMAGEHUB_<FIELD> and IMAGEHUB_<FIELD>__<KEY>, and for [import] its aliases IMPORT... and
    IMAGEHUB_IMPORT.... Any other IMAGEHUB_ variable counts too (it then only costs the import)."""
    for name in os.environ:
        lowered = name.lower()
        if lowered.startswith("imagehub_") and lowered not in NOT_SETTINGS:
            return True
        if lowered == "import" or lowered.startswith("import__"):
            return True
    return False


def _deep_update(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """`base` with `updates` merged in, table by table (pydantic-settings' deep_update)."""
    merged = base.copy()
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


# The names of the [import] section: its field, its TOML table and its environment alias.
IMPORT_NAMES = frozenset({"import_", "import", "imagehub_import"})


def read_toml(path: Path | None) -> dict[str, Any]:
    """The config file's tables, its [import] table keyed by field name (`import_`)."""
    if path is None:
        return {}
    with path.open("rb") as file:
        data = tomllib.load(file)
    if "import" in data:
        data["import_"] = data.pop("import")
    return data


def _build(path: Path | None, overrides: dict[str, Any]) -> Settings:
    if environment_overrides_settings():
        from core.catalog.env_settings import settings_with_environment

        return settings_with_environment(path, overrides)
    data = read_toml(path)
    for key, value in overrides.items():
        if key in IMPORT_NAMES:  # keyed by its alias, pydantic-settings lets it replace the file's [import]
            data["import_"] = value
        else:
            data = _deep_update(data, {key: value})
    return Settings.model_validate(data)


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the configuration and resolve every relative path against the config file's folder."""
    path = find_config_path(config)
    try:
        settings = _build(path, overrides)
    except Exception as exc:  # pydantic's ValidationError, a TOML syntax error: one line for the user
        raise Invalid("invalid configuration: {reason}", reason=_first_error(exc)) from exc
    settings.config_path = path
    base = settings.base_dir
    settings.storage.data_dir = _resolve(base, settings.storage.data_dir)
    settings.images.os_matrix = _resolve(base, settings.images.os_matrix)
    settings.tui.import_root = _resolve(base, settings.tui.import_root)
    settings.database.url = _resolve_sqlite_url(base, settings.database.url)
    for key in ("tls_cert", "tls_key"):
        value = getattr(settings.gateway, key)
        if value:
            setattr(settings.gateway, key, str(_resolve(base, Path(value))))
    settings.import_.local_roots = [_resolve(base, root) for root in settings.import_.local_roots]
    if settings.import_.ca_bundle:
        settings.import_.ca_bundle = str(_resolve(base, Path(settings.import_.ca_bundle)))
    return settings


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}"
    return str(exc).splitlines()[0]
