"""Listener sockets: bound once by the master, before forking, and shared by every worker.

The kernel spreads ``accept`` among the workers waiting on the same socket (gunicorn's
``sock.py``). Under systemd socket activation the sockets come from ``LISTEN_FDS`` instead
and are matched to the configured listeners by their bound address.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field

from stalwart_mp.config.schema import parse_host_port

log = logging.getLogger("stalwart_mp.master")


@dataclass(slots=True)
class Listener:
    """A configured listener and the sockets bound for it."""

    name: str
    protocol: str
    implicit_tls: bool
    settings: dict
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return list(self.settings["bind"])


def address_key(addr: str) -> tuple[str, int]:
    """Canonical (ip, port) for an "ADDR:PORT" string, comparable with getsockname()."""
    host, port = parse_host_port(addr)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = socket.gethostbyname(host)
    return host, port


def bind(addr: str, backlog: int) -> socket.socket:
    host, port = address_key(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]:25" and "0.0.0.0:25" may both be configured: keep the v6 socket v6-only.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {addr}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def bound_key(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return str(ipaddress.ip_address(name[0])), name[1]


class SocketPool:
    """The master's listening sockets, by address, reused across reloads."""

    def __init__(self, inherited: list[socket.socket] | None = None):
        self._by_addr: dict[tuple[str, int], socket.socket] = {}
        for sock in inherited or []:
            sock.setblocking(False)  # workers accept with loop.sock_accept
            self._by_addr[bound_key(sock)] = sock

    def assign(self, listeners: list[Listener]) -> None:
        """Give every listener its sockets, binding new addresses and closing unused ones."""
        wanted: dict[tuple[str, int], socket.socket] = {}
        for listener in listeners:
            listener.sockets = []
            for addr in listener.addresses:
                key = address_key(addr)
                sock = self._by_addr.get(key) or wanted.get(key)
                if sock is None:
                    sock = bind(addr, listener.settings.get("backlog", 1024))
                    log.info("listening", extra={"fields": {"listener": listener.name,
                                                            "address": addr}})
                wanted[key] = sock
                listener.sockets.append(sock)
        self._unused = [s for k, s in self._by_addr.items() if k not in wanted]
        self._by_addr = wanted

    def close_unused(self) -> None:
        """Close sockets no listener uses any more (after the old workers are gone)."""
        for sock in getattr(self, "_unused", []):
            sock.close()
        self._unused = []

    def close_all(self) -> None:
        for sock in self._by_addr.values():
            sock.close()
        self._by_addr = {}
        self.close_unused()


def listeners_from(cfg) -> list[Listener]:
    return [
        Listener(
            name=name,
            protocol=cfg.get(("server", "listener", name, "protocol")),
            implicit_tls=bool(cfg.get(("server", "listener", name, "tls", "implicit"))),
            settings=cfg.table(("server", "listener", name)),
        )
        for name in cfg.names("server.listener")
    ]
