"""What the worker knows about one accepted connection, and the per-IP accounting.

Limits are checked at accept, before any protocol work (as Stalwart's network security
does): per listener and per client IP, IPv4-mapped IPv6 addresses normalized first and IPv6
clients grouped by /64 (one host usually owns a whole /64).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("stalwart_mp.worker")


@dataclass(slots=True)
class ConnectionInfo:
    id: str
    listener: str
    protocol: str
    remote_ip: str
    remote_port: int
    local_ip: str
    local_port: int
    tls: bool
    proxied: bool = False


def normalize_ip(ip: str) -> str:
    """"::ffff:1.2.3.4" -> "1.2.3.4"; other addresses in their canonical form."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


def ip_group(ip: str) -> str:
    """The key connections are counted under: the IPv4 address, or the IPv6 /64."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return ip


class ConnectionLimits:
    """Connections open in this worker: in all, per listener, per listener and IP group."""

    def __init__(self, max_total: int):
        self.max_total = max_total
        self.total = 0
        self.per_listener: Counter[str] = Counter()
        self.per_ip: Counter[tuple[str, str]] = Counter()

    def admit(self, listener: str, ip: str, max_listener: int, max_ip: int) -> str | None:
        """Count the connection in, or return why it is refused."""
        key = (listener, ip_group(ip))
        if self.total >= self.max_total:
            return "worker-full"
        if self.per_listener[listener] >= max_listener:
            return "listener-full"
        if self.per_ip[key] >= max_ip:
            return "too-many-from-ip"
        self.total += 1
        self.per_listener[listener] += 1
        self.per_ip[key] += 1
        return None

    def release(self, listener: str, ip: str) -> None:
        key = (listener, ip_group(ip))
        self.total -= 1
        self.per_listener[listener] -= 1
        self.per_ip[key] -= 1
        if self.per_ip[key] <= 0:
            del self.per_ip[key]


class TrackedProtocol(asyncio.Protocol):
    """Wraps a session protocol so the worker learns when the connection ends."""

    def __init__(self, inner: asyncio.Protocol, on_made: Callable, on_lost: Callable):
        self.inner = inner
        self._on_made = on_made
        self._on_lost = on_lost
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._on_made(transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self._on_lost(self._transport)


def outer_protocol(transport: asyncio.BaseTransport, session: asyncio.BaseProtocol
                   ) -> asyncio.BaseProtocol:
    """The protocol the worker attached to ``transport``: its :class:`TrackedProtocol`,
    which releases the connection's counts (per-IP limits, the active gauge) when it ends.
    Hand THIS to ``loop.start_tls`` for STARTTLS, not the session, or the end of every
    upgraded connection goes unseen and its counts leak."""
    protocol = transport.get_protocol()
    return protocol if protocol is not None else session


async def upgrade_to_tls(transport: asyncio.BaseTransport, session: asyncio.BaseProtocol,
                         context, handshake_timeout: float) -> asyncio.BaseTransport | None:
    """STARTTLS on the server side (SMTP RFC 3207, IMAP RFC 9051 §6.2.1): the new transport,
    or None when the handshake failed (logged; the caller closes the connection)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.start_tls(transport, outer_protocol(transport, session), context,
                                    server_side=True, ssl_handshake_timeout=handshake_timeout)
    except (TimeoutError, OSError) as exc:
        log.info("TLS handshake failed", extra={"fields": {"error": str(exc)}})
        return None
