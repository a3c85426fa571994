"""The single-node event hub, run inside the master's selector loop.

The master has no asyncio and no threads, so the hub is entirely non-blocking and driven by
readiness callbacks: every :class:`selectors.SelectorKey` it registers carries a callable
``data(mask)`` that the master loop calls when the key is ready.

The hub never blocks and never lets one client stall the master: a client that sends a
malformed or oversized frame is disconnected, and so is a client whose outgoing buffer grows
beyond ``max_buffer`` because it does not read (a slow consumer). Its process reconnects and
re-subscribes; events are notifications, the state itself lives in the store.

Forwarding rules (see :mod:`stalwart_mp.events.frames` for topic matching): a ``pub`` goes to
every other connection with a matching subscription, at most once per connection, and never
back to the connection that published it (the publishing process delivers to its own
subscribers in-process).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import selectors
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stalwart_mp.events import frames

log = logging.getLogger("stalwart_mp.events")

DEFAULT_MAX_BUFFER = 8 << 20
RECV_SIZE = 256 << 10
ACCEPT_BATCH = 64
# The longest path a sockaddr_un holds on Linux (108 bytes, NUL included).
MAX_UNIX_PATH = 107

ReadyCallback = Callable[[int], None]


@dataclass(slots=True, eq=False)
class _Connection:
    sock: socket.socket
    number: int
    decoder: frames.FrameDecoder
    outgoing: bytearray = field(default_factory=bytearray)
    topics: set[str] = field(default_factory=set)
    events: int = selectors.EVENT_READ
    closed: bool = False


class EventHub:
    """Accepts event-bus clients on a unix socket and routes their frames."""

    def __init__(
        self,
        path: Path | str,
        max_frame: int = frames.DEFAULT_MAX_FRAME,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.path = Path(path)
        self.max_frame = max_frame
        self.max_buffer = max_buffer
        self._selector: selectors.BaseSelector | None = None
        self._connections: dict[int, _Connection] = {}
        self._subscribers: dict[str, set[_Connection]] = {}
        self._next_number = 1
        self._listener = _listen(self.path)

    # -- master integration -------------------------------------------------------------

    def register(self, sel: selectors.BaseSelector) -> None:
        """Register the listening socket; each key's data is a ``callable(mask)``."""
        self._selector = sel
        sel.register(self._listener, selectors.EVENT_READ, self._on_accept)

    def close(self) -> None:
        """Master shutdown: unregister and close every socket, then unlink the path."""
        for conn in list(self._connections.values()):
            self._drop(conn)
        self._unregister(self._listener)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close_in_child(self) -> None:
        """In a forked child: close the inherited fds, keep the path and the parent's selector.

        The selector (epoll) object is shared with the parent after fork, so unregistering here
        would remove the parent's registrations; closing our fd copies leaves them intact.
        """
        for conn in self._connections.values():
            conn.closed = True
            conn.sock.close()
        self._connections.clear()
        self._subscribers.clear()
        self._listener.close()
        self._selector = None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- accepting ----------------------------------------------------------------------

    def _on_accept(self, mask: int) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("event hub cannot accept a client: %s", exc)
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            self._add(sock)

    def _add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        conn = _Connection(sock, self._next_number, frames.FrameDecoder(self.max_frame))
        self._next_number += 1
        self._connections[conn.number] = conn
        if self._selector is not None:
            self._selector.register(sock, conn.events, functools.partial(self._on_ready, conn))
        log.debug("event hub: client %d connected", conn.number)

    # -- per-connection I/O -------------------------------------------------------------

    def _on_ready(self, conn: _Connection, mask: int) -> None:
        if not conn.closed and mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if not conn.closed and mask & selectors.EVENT_READ:
            self._read(conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("event hub: client %d read failed: %s", conn.number, exc)
            self._drop(conn)
            return
        if not data:
            log.debug("event hub: client %d disconnected", conn.number)
            self._drop(conn)
            return
        conn.decoder.feed(data)
        try:
            for body in conn.decoder.bodies():
                self._handle(conn, body)
                if conn.closed:
                    return
        except frames.FrameError as exc:
            log.warning("event hub: dropping client %d: %s", conn.number, exc)
            self._drop(conn)

    def _handle(self, conn: _Connection, body: bytes) -> None:
        match frames.parse(body):
            case frames.Publish(topic, _data):
                self._fan_out(conn, topic, frames.HEADER.pack(len(body)) + body)
            case frames.Subscribe(topics):
                self._subscribe(conn, topics)
            case frames.Unsubscribe(topics):
                self._unsubscribe(conn, topics)
            case frames.Ping(id_):
                self._send(conn, frames.encode(frames.Pong(id_)))
            case frames.Pong(_):
                raise frames.FrameError("'pong' is sent by the hub, not to it")

    def _subscribe(self, conn: _Connection, topics: tuple[str, ...]) -> None:
        for topic in topics:
            conn.topics.add(topic)
            self._subscribers.setdefault(topic, set()).add(conn)

    def _unsubscribe(self, conn: _Connection, topics: tuple[str, ...]) -> None:
        for topic in topics:
            conn.topics.discard(topic)
            members = self._subscribers.get(topic)
            if members is None:
                continue
            members.discard(conn)
            if not members:
                del self._subscribers[topic]

    def _fan_out(self, sender: _Connection, topic: str, frame: bytes) -> None:
        targets: set[_Connection] = set()
        for key in frames.topic_keys(topic):
            targets |= self._subscribers.get(key, set())
        targets.discard(sender)
        for target in targets:
            if not target.closed:
                self._send(target, frame)

    def _send(self, conn: _Connection, frame: bytes) -> None:
        if len(conn.outgoing) + len(frame) > self.max_buffer:
            log.warning(
                "event hub: dropping slow client %d: %d bytes unsent exceed the %d byte cap",
                conn.number,
                len(conn.outgoing) + len(frame),
                self.max_buffer,
            )
            self._drop(conn)
            return
        conn.outgoing += frame
        if len(conn.outgoing) == len(frame):
            self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outgoing) if conn.outgoing else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            log.debug("event hub: client %d write failed: %s", conn.number, exc)
            self._drop(conn)
            return
        del conn.outgoing[:sent]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outgoing else 0)
        if wanted != conn.events:
            conn.events = wanted
            if self._selector is not None:
                self._selector.modify(conn.sock, wanted, functools.partial(self._on_ready, conn))

    def _drop(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._unsubscribe(conn, tuple(conn.topics))
        self._connections.pop(conn.number, None)
        self._unregister(conn.sock)
        conn.sock.close()

    def _unregister(self, sock: socket.socket) -> None:
        if self._selector is None or sock.fileno() == -1:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)


def _listen(path: Path) -> socket.socket:
    """Bind a non-blocking, owner-only (0600) unix stream socket at ``path``."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ValueError(
            f"event hub socket path {str(path)!r} is {len(os.fsencode(path))} bytes; "
            f"unix sockets allow at most {MAX_UNIX_PATH}: choose a shorter path"
        )
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # no window in which the socket is reachable by others
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale(path: Path) -> None:
    """Unlink a socket left by a previous run; refuse a live hub or a file that is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(
            f"event hub socket path {str(path)!r} exists and is not a socket; "
            "remove it or configure another path"
        )
    if _is_live(path):
        raise FileExistsError(
            f"event hub socket {str(path)!r} is in use by a running process; "
            "stop the other server or configure another path"
        )
    path.unlink()


def _is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(os.fspath(path))
    except BlockingIOError:
        return True  # backlog full: somebody is listening
    except OSError:
        return False
    finally:
        probe.close()
    return True
