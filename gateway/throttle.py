"""Failed-login backoff per client address, shared by the HTTP, FTP, SFTP and admin SSH ports.

Like OpenSSH's and vsftpd's delay after a failed login, with memory across connections: once an
address has failed `gateway.login_backoff_after` times, each further *failure* is answered only after
a delay that doubles (1 s, 2 s, 4 s ...) up to `gateway.login_backoff_max_seconds`. An address that
stops failing for `gateway.login_backoff_window_seconds` starts afresh.

A success is never delayed and never looks at the count, so a valid link (or admin key) gets through
at once even from an address that is backing off; nor does a success clear the count (a guesser
holding one valid link of their own could otherwise reset it between guesses). IPv6 clients are
counted per /64 (one host commonly holds the whole prefix). Memory is bounded: at most
`MAX_ADDRESSES` addresses are remembered, the least recently failing forgotten first.

Every failure is counted in `imagehub_failed_logins_total{protocol}`, whether or not it is delayed.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from core.catalog.settings import GatewaySettings

MAX_ADDRESSES = 10_000
FIRST_DELAY = 1.0  # seconds: the first delayed failure; each further one doubles it
# Refusals that are not failed logins: the token itself was good.
NOT_LOGIN_FAILURES = frozenset({"too_many_connections", "wrong_file"})


def address_key(address: str) -> str:
    """What failures are counted under: the IPv4 address (also when IPv4-mapped), or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def host_of(peername: Any) -> str:
    """The address part of a socket's peer name ((host, port[, ...]) or None)."""
    if isinstance(peername, tuple | list) and peername:
        return str(peername[0])
    return "-"


class LoginThrottle:
    """Failures per address, and the delay owed before answering the next one. Thread-safe (the FTP
    loops run in threads of their own; HTTP and SSH on the asyncio loop)."""

    def __init__(
        self,
        after: int,
        max_delay: float,
        window: float,
        *,
        counter: Any = None,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.after = after
        self.max_delay = max_delay
        self.window = window
        self.counter = counter  # a prometheus Counter labelled by protocol, or None
        self.max_addresses = max_addresses
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (count, last failure)

    @classmethod
    def from_settings(cls, settings: GatewaySettings, counter: Any = None) -> LoginThrottle:
        return cls(
            settings.login_backoff_after,
            settings.login_backoff_max_seconds,
            settings.login_backoff_window_seconds,
            counter=counter,
        )

    def _delay_for(self, count: int) -> float:
        """The delay owed for an address's `count`-th failure."""
        excess = count - self.after
        if excess <= 0 or self.max_delay <= 0:
            return 0.0
        return min(self.max_delay, FIRST_DELAY * 2.0 ** min(excess - 1, 32))

    def _expire(self, now: float) -> None:
        # Oldest failures first: stop at the first address still within its window.
        while self._failures:
            key, (_count, last) = next(iter(self._failures.items()))
            if now - last <= self.window:
                return
            del self._failures[key]

    def failed(self, address: str, protocol: str) -> float:
        """Record a failed login from `address`; the seconds to wait before answering it."""
        if self.counter is not None:
            self.counter.labels(protocol).inc()
        key = address_key(address)
        with self._lock:
            now = self.clock()
            self._expire(now)
            count = self._failures.pop(key, (0, now))[0] + 1
            self._failures[key] = (count, now)  # now the most recent, at the end
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        return self._delay_for(count)

    def pending(self, address: str) -> float:
        """The delay the next failure from `address` would owe, without recording anything."""
        key = address_key(address)
        with self._lock:
            self._expire(self.clock())
            count = self._failures.get(key, (0, 0.0))[0]
        return self._delay_for(count + 1)

    def failures(self, address: str) -> int:
        """Failures remembered for `address` (for tests and diagnosis)."""
        key = address_key(address)
        with self._lock:
            self._expire(self.clock())
            return self._failures.get(key, (0, 0.0))[0]

    def tracked(self) -> int:
        """Addresses remembered (at most `max_addresses`)."""
        with self._lock:
            return len(self._failures)


def counts_as_failed_login(reason: str) -> bool:
    """Whether a refusal (core.links.links.Refused.reason) is a failed login rather than a refused request."""
    return reason not in NOT_LOGIN_FAILURES
