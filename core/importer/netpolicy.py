"""The network policy for URL sources (the SSRF guard, docs/security.md, B.1 U1-U4, U6).

A source URL must use an allowed scheme and port. Its host is resolved here, every address it
resolves to is checked, and the caller connects to one of those checked addresses itself (never
to the name again), so DNS rebinding between the check and the connection cannot pass. Refused:
loopback, private (RFC 1918, ULA), link-local (169.254.169.254 included), multicast, unspecified,
reserved and shared (CGNAT) ranges, and the same hidden in IPv6 transition forms (IPv4-mapped,
IPv4-compatible, 6to4, NAT64, Teredo). Numeric host spellings other than a dotted quad
(`2130706433`, `0x7f.1`, `127.1`) are refused outright, as Glance does since OSSA-2026-004.
Redirects are followed by the sources module, each hop checked again here, `MAX_REDIRECTS` at most.

A refusal says the same thing whatever is (or is not) behind the address: no probing oracle.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from core.catalog.errors import Failed, Invalid
from core.rules.redaction import redact

if TYPE_CHECKING:
    from core.catalog.settings import Settings

MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$", re.IGNORECASE)


class PolicyRefused(Invalid):
    """The destination is not allowed by the network policy (said before any connection)."""


@dataclass(frozen=True)
class SourceUrl:
    """A parsed source URL. `display` never holds a password or the query; `username`/`password` are decoded."""

    scheme: str
    host: str
    port: int
    path: str
    query: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        return redact(self.geturl())

    def geturl(self, with_credentials: bool = True) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if self.port == DEFAULT_PORTS.get(self.scheme) else f"{host}:{self.port}"
        if with_credentials and self.username is not None:
            userinfo = quote(self.username, safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            netloc = f"{userinfo}@{netloc}"
        return urlunsplit((self.scheme, netloc, self.path or "/", self.query, ""))

    @property
    def request_target(self) -> str:
        return (self.path or "/") + (f"?{self.query}" if self.query else "")


@dataclass(frozen=True)
class Policy:
    """What URL sources may reach. Built from `import.*` settings by `from_settings`."""

    allowed_schemes: tuple[str, ...] = ("http", "https", "ftp")
    allowed_ports: tuple[int, ...] = (80, 443, 21)
    allow_private_networks: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        imp = settings.import_
        return cls(
            allowed_schemes=tuple(s.lower() for s in imp.allowed_schemes),
            allowed_ports=tuple(int(p) for p in imp.allowed_ports),
            allow_private_networks=bool(imp.allow_private_networks),
        )

    # -- the URL itself ------------------------------------------------------------------------

    def parse(self, url: str) -> SourceUrl:
        """Check scheme, port and host spelling; no network access."""
        text = (url or "").strip()
        if any(ch.isspace() or ord(ch) < 32 for ch in text):
            raise Invalid("url may not contain spaces or control characters")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise Invalid("url is not valid: {url}", url=redact(text)) from exc
        scheme = parts.scheme.lower()
        if not scheme or "://" not in text:
            raise Invalid("url needs a scheme: http://, https:// or ftp://")
        if scheme not in self.allowed_schemes:
            raise Invalid(
                "url scheme {scheme} is not allowed; allowed: {allowed}",
                scheme=scheme,
                allowed=", ".join(self.allowed_schemes),
            )
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise Invalid("url has no host: {url}", url=redact(text))
        port = port if port is not None else DEFAULT_PORTS.get(scheme)
        if port is None or port not in self.allowed_ports:
            allowed = ", ".join(str(p) for p in self.allowed_ports)
            raise Invalid("url port {port} is not allowed; allowed: {allowed}", port=port, allowed=allowed)
        _check_host_spelling(host)
        return SourceUrl(
            scheme=scheme,
            host=host,
            port=port,
            path=parts.path or "/",
            query=parts.query,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    # -- addresses ------------------------------------------------------------------------------

    def address_allowed(self, address: IPAddress, source: SourceUrl) -> bool:
        """Whether a resolved address of `source` may be connected to."""
        return self.allow_private_networks or is_public(address)

    def resolve(self, source: SourceUrl) -> list[IPAddress]:
        """Every address of the host, each checked; refused if any one is not allowed."""
        addresses = resolve_host(source.host, source.port)
        for address in addresses:
            if not self.address_allowed(address, source):
                raise PolicyRefused(
                    "source refused by the network policy: {host} is not an allowed destination "
                    "(private, loopback, link-local and metadata addresses are refused)",
                    host=source.host,
                )
        return addresses


def _check_host_spelling(host: str) -> None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError as exc:
            raise Invalid("url host {host} is not a valid IPv6 address", host=host) from exc
        if "%" in host:
            raise Invalid("url host may not carry an IPv6 zone")
        return
    if _NUMERIC_HOST.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise Invalid("url host {host} is not a dotted-quad IPv4 address", host=host) from exc
        return
    labels = host.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        try:
            host.encode("idna")
        except UnicodeError as exc:
            raise Invalid("url host {host} is not a valid host name", host=host) from exc


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (deprecated)
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (and whatever IPv4 it hides is public too)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None and not is_public(inner):
            return False
        if address.ipv4_mapped is not None:
            return True
    if address.is_multicast or address.is_unspecified or address.is_loopback or address.is_link_local:
        return False
    if address.is_private or address.is_reserved or not address.is_global:
        return False
    return not (isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"))


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The host's addresses (a literal is its own); `source unreachable` if the name is unknown."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise Failed("source unreachable: host name {host} not found", host=host) from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Failed("source unreachable: host name {host} not found", host=host)
    return addresses
