"""systemd integration for the master: sd_notify and socket activation.

Pure standard library, no asyncio: the master imports this before it forks its workers.

- Notifications follow sd_notify(3): one datagram of newline-separated ``KEY=VALUE`` lines
  sent to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
  abstract namespace).
- Socket activation follows sd_listen_fds(3): fds 3 .. 3+LISTEN_FDS-1 belong to us only when
  ``LISTEN_PID`` is our pid; ``LISTEN_FDNAMES`` names them (FileDescriptorName= in the unit).
"""
from __future__ import annotations

import logging
import os
import socket
import time

__all__ = [
    "SD_LISTEN_FDS_START",
    "SocketActivationError",
    "inherited_sockets",
    "notify_extend_timeout",
    "notify_ready",
    "notify_reloading",
    "notify_status",
    "notify_stopping",
    "notify_watchdog",
    "sd_notify",
    "watchdog_interval",
]

log = logging.getLogger(__name__)

# sd_listen_fds(3): "SD_LISTEN_FDS_START ... currently 3"
SD_LISTEN_FDS_START = 3

_LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class SocketActivationError(RuntimeError):
    """systemd passed a file descriptor we cannot use as a listening socket."""


# -- sd_notify ----------------------------------------------------------------------------


def _notify_address(value: str) -> str | bytes | None:
    """Socket address for a ``$NOTIFY_SOCKET`` value, or None if unsupported.

    sd_notify(3): a leading "@" means the Linux abstract namespace (first byte NUL).
    ``vsock:`` addresses (systemd 253, VMs) are not used by a mail server on a host.
    """
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    return None


def sd_notify(state: str) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` lines) to systemd.

    Returns False when not running under systemd (no ``$NOTIFY_SOCKET``), when the address
    is not supported, or when sending fails; a failure is logged, never raised, because a
    notification must not take the server down.
    """
    value = os.environ.get("NOTIFY_SOCKET")
    if not value:
        return False
    address = _notify_address(value)
    if address is None:
        log.warning("systemd notify: unsupported NOTIFY_SOCKET address %r", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("systemd notify to %r failed: %s", value, exc)
        return False
    return True


def _with_status(lines: list[str], status: str | None) -> str:
    if status is not None:
        # STATUS= is one line; a newline would start a new (bogus) assignment.
        lines.append("STATUS=" + " ".join(status.splitlines()))
    return "\n".join(lines)


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def notify_ready(status: str | None = None) -> bool:
    """READY=1: startup finished, or a reload finished (after :func:`notify_reloading`)."""
    return sd_notify(_with_status(["READY=1"], status))


def notify_reloading(status: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload requires (systemd 253+).

    Older systemd ignores MONOTONIC_USEC. Send :func:`notify_ready` when the reload is done.
    """
    lines = ["RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}"]
    return sd_notify(_with_status(lines, status))


def notify_stopping(status: str | None = None) -> bool:
    """STOPPING=1: a graceful shutdown has begun."""
    return sd_notify(_with_status(["STOPPING=1"], status))


def notify_status(status: str) -> bool:
    """STATUS=...: free-form text shown by ``systemctl status``."""
    return sd_notify(_with_status([], status))


def notify_watchdog() -> bool:
    """WATCHDOG=1: keep-alive ping; send it at about half of :func:`watchdog_interval`."""
    return sd_notify("WATCHDOG=1")


def notify_extend_timeout(seconds: float) -> bool:
    """EXTEND_TIMEOUT_USEC: ask for more time during a long start, reload or stop."""
    return sd_notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (WatchdogSec=), or None when it is not enabled for us.

    sd_watchdog_enabled(3): WATCHDOG_USEC must be a positive integer, and WATCHDOG_PID, when
    set, must be our pid.
    """
    usec = _positive_int(os.environ.get("WATCHDOG_USEC"))
    if usec is None:
        return None
    pid_text = os.environ.get("WATCHDOG_PID")
    if pid_text is not None and _positive_int(pid_text) != os.getpid():
        return None
    return usec / 1_000_000


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    value = int(text)
    return value if value > 0 else None


# -- socket activation --------------------------------------------------------------------


def inherited_sockets() -> list[tuple[str | None, socket.socket]]:
    """Sockets passed by systemd socket activation, as ``(name, socket)`` pairs.

    Empty when not socket-activated or when the variables are meant for another process
    (LISTEN_PID differs). The variables are unset afterwards either way, so they never leak
    into workers or helpers (sd_listen_fds(3) with unset_environment=1). Like sd_listen_fds,
    the fds get FD_CLOEXEC; forked workers still inherit them. Names come from
    LISTEN_FDNAMES (systemd 227+); when absent or when the count disagrees, names are None.

    Raises SocketActivationError if a passed fd is not a socket (e.g. ListenFIFO=).
    """
    env = {key: os.environ.pop(key, None) for key in _LISTEN_ENV}
    pid = _positive_int(env["LISTEN_PID"])
    count = _positive_int(env["LISTEN_FDS"])
    if pid != os.getpid() or count is None:
        return []
    names = _fd_names(env["LISTEN_FDNAMES"], count)
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    return [(name, _socket_from_fd(fd, name)) for fd, name in zip(fds, names)]


def _fd_names(value: str | None, count: int) -> list[str | None]:
    if value is None:
        return [None] * count
    names = value.split(":")
    if len(names) != count:
        log.warning(
            "LISTEN_FDNAMES has %d names for LISTEN_FDS=%d; ignoring the names",
            len(names), count,
        )
        return [None] * count
    return [name or None for name in names]


def _socket_from_fd(fd: int, name: str | None) -> socket.socket:
    label = f"fd {fd}" + (f" ({name})" if name else "")
    try:
        os.set_inheritable(fd, False)
        # family, type and protocol are read from the fd itself (getsockopt SO_DOMAIN...)
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketActivationError(
            f"systemd passed {label}, which is not a usable socket: {exc.strerror or exc}"
        ) from exc
