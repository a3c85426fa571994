"""A worker process: one uvloop event loop serving every listener on the shared sockets.

Per listener the worker runs one accept loop per socket. An accepted connection is checked
against the limits, gets its PROXY header read if the listener expects one, is wrapped in TLS
when the listener is implicit-TLS, and is handed to the protocol's server
(``worker.registry``). A heartbeat coroutine touches the heartbeat file every second: if the
loop blocks, the heartbeat stops and the master replaces this worker.

Signals: TERM = drain (stop accepting, finish sessions up to server.graceful-timeout, exit 0);
QUIT/INT = exit now; USR1 = reopen logs.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import signal
import socket
import ssl

from stalwart_mp import logs
from stalwart_mp.master.children import BOOT_ERROR, ChildContext, master_alive
from stalwart_mp.master.sockets import Listener
from stalwart_mp.worker.connection import (
    ConnectionInfo,
    ConnectionLimits,
    TrackedProtocol,
    normalize_ip,
)
from stalwart_mp.worker.registry import server_class

log = logging.getLogger("stalwart_mp.worker")

PROXY_HEADER_TIMEOUT = 10.0
PROXY_MAX_HEADER = 4096 + 16
ACCEPT_BATCH = 1  # one accept per wake-up spreads load over workers (nginx multi_accept off)


def run_worker(ctx: ChildContext) -> int:
    import uvloop

    return uvloop.run(Worker(ctx).serve())


class WorkerBootError(Exception):
    pass


class Worker:
    def __init__(self, ctx: ChildContext):
        self.ctx = ctx
        self.cfg = ctx.config
        self.draining = False
        self.limits = ConnectionLimits(self.cfg.get("server.max-connections"))
        self.servers: dict[str, object] = {}
        self.tls = None
        self.events = None
        self.services = None
        self.services_error: str | None = None
        self._services_task: asyncio.Task | None = None
        self._conn_ids = itertools.count(1)
        self._conn_info: dict[asyncio.BaseTransport, ConnectionInfo] = {}
        self._accepting: list[socket.socket] = []
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._fast_exit = False

    # --- life cycle -------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGQUIT, self._exit_now)
        loop.add_signal_handler(signal.SIGINT, self._exit_now)
        loop.add_signal_handler(signal.SIGUSR1, logs.reopen)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the master reloads, not us
        try:
            await self._boot()
        except WorkerBootError as exc:
            log.error("worker cannot start", extra={"fields": {"error": str(exc)}})
            return BOOT_ERROR
        from stalwart_mp import metrics

        metrics.worker_processes.inc()
        heartbeat = asyncio.create_task(self._heartbeat())
        await self._stop.wait()
        heartbeat.cancel()
        if self._fast_exit:
            return 0
        await self._drain()
        return 0

    async def _boot(self) -> None:
        self.tls = self._tls_contexts()
        from stalwart_mp.events.bus import LocalEventBus

        self.events = LocalEventBus(self.ctx.run_dir / "events.sock")
        await self.events.start()
        if not await self._open_services():
            # Serve what does not need the stores (health, metrics) and keep trying.
            self._services_task = asyncio.create_task(self._retry_services())
        for listener in self.ctx.listeners:
            server = server_class(listener.protocol)(listener, self)
            await server.start()
            self.servers[listener.name] = server
            for sock in listener.sockets:
                self._start_accepting(listener, server, sock)

    async def _open_services(self) -> bool:
        """Open the stores and directory; on failure log which one and why (it names the
        store and its address) and report it through /healthz/ready."""
        from stalwart_mp.directory.base import DirectoryUnavailable
        from stalwart_mp.services import Services
        from stalwart_mp.store.data import StoreError

        try:
            self.services = await Services.open(self.cfg, self.events)
        except (StoreError, DirectoryUnavailable, OSError) as exc:
            if self.services_error != str(exc):
                log.error("stores unavailable; retrying", extra={"fields": {"error": str(exc)}})
            self.services_error = str(exc)
            return False
        if self.services_error:
            log.info("stores available again")
        self.services_error = None
        return True

    async def _retry_services(self) -> None:
        delay = 1.0
        while not await self._open_services():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _tls_contexts(self):
        from stalwart_mp.tls.contexts import TlsConfigError, TlsContexts
        from stalwart_mp.tls.served import certificate_specs

        try:
            return TlsContexts(certificate_specs(self.cfg),
                               min_version=self.cfg.get("tls.min-version"))
        except TlsConfigError as exc:
            raise WorkerBootError(str(exc)) from exc

    def _exit_now(self) -> None:
        self._fast_exit = True
        self._stop.set()

    async def _heartbeat(self) -> None:
        fd = self.ctx.heartbeat.fileno() if self.ctx.heartbeat else None
        while True:
            if fd is not None:
                os.utime(fd)
            if not master_alive(self.ctx):
                log.warning("master is gone; stopping")
                self._stop.set()
                return
            await asyncio.sleep(1.0)

    async def _drain(self) -> None:
        """Stop accepting, close our copies of the listening sockets, finish sessions."""
        self.draining = True
        self._stop_accepting()
        timeout = self.cfg.get("server.graceful-timeout")
        shutdowns = [server.shutdown() for server in self.servers.values()]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*shutdowns, return_exceptions=True)
        except TimeoutError:
            log.warning("drain timeout: closing remaining connections")
        if self._services_task is not None:
            self._services_task.cancel()
        if self.services is not None:
            await self.services.close()
        if self.events is not None:
            await self.events.close()

    # --- connections ------------------------------------------------------------------

    def _start_accepting(self, listener: Listener, server, sock: socket.socket) -> None:
        """Accept in a reader callback: removing the reader stops it without losing a
        connection (cancelling a pending ``sock_accept`` can drop one already accepted)."""
        loop = asyncio.get_running_loop()

        def on_readable() -> None:
            for _ in range(ACCEPT_BATCH):
                try:
                    conn, _addr = sock.accept()
                except (BlockingIOError, InterruptedError):
                    return  # another worker took it, or the queue is empty
                except OSError as exc:  # EMFILE, ENFILE, ECONNABORTED...: keep serving
                    log.warning("accept failed", extra={"fields": {
                        "listener": listener.name, "error": exc.strerror}})
                    return
                conn.setblocking(False)
                task = loop.create_task(self._open(listener, server, conn))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        loop.add_reader(sock.fileno(), on_readable)
        self._accepting.append(sock)

    def _stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._accepting:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._accepting = []

    async def _open(self, listener: Listener, server, conn: socket.socket) -> None:
        from stalwart_mp import metrics

        settings = listener.settings
        try:
            remote = conn.getpeername()
            local = conn.getsockname()
        except OSError:
            conn.close()
            return
        info = ConnectionInfo(
            id=f"{os.getpid():x}.{next(self._conn_ids)}",
            listener=listener.name,
            protocol=listener.protocol,
            remote_ip=normalize_ip(remote[0]),
            remote_port=remote[1],
            local_ip=normalize_ip(local[0]),
            local_port=local[1],
            tls=listener.implicit_tls,
        )
        logs.conn_id.set(info.id)
        if settings.get("proxy-protocol") and not await self._read_proxy_header(
                listener, conn, info):
            conn.close()
            return
        if self.services is not None and await self.services.auth.is_banned(info.remote_ip):
            # dropped before any protocol work (Stalwart's network security does the same)
            metrics.connections_rejected_total.labels(listener.name, "banned").inc()
            conn.close()
            return
        refused = self.limits.admit(listener.name, info.remote_ip,
                                    settings["max-connections"],
                                    settings["max-connections-per-ip"])
        if refused:
            metrics.connections_rejected_total.labels(listener.name, refused).inc()
            log.info("connection refused", extra={"fields": {"reason": refused,
                                                             "ip": info.remote_ip}})
            conn.close()
            return
        metrics.connections_total.labels(listener.name, listener.protocol).inc()
        metrics.connections_active.labels(listener.name).inc()
        released = False

        def on_made(transport):
            self._conn_info[transport] = info

        def on_lost(transport):
            nonlocal released
            if not released:
                released = True
                self._conn_info.pop(transport, None)
                self.limits.release(listener.name, info.remote_ip)
                metrics.connections_active.labels(listener.name).dec()

        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: TrackedProtocol(server.protocol_factory(info), on_made, on_lost),
                conn,
                ssl=self.tls.server_context() if listener.implicit_tls else None,
                ssl_handshake_timeout=(self.cfg.get("tls.handshake-timeout")
                                       if listener.implicit_tls else None),
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.info("connection failed before the session",
                     extra={"fields": {"ip": info.remote_ip, "error": str(exc)}})
            on_lost(None)
            conn.close()

    def connection_info(self, transport) -> ConnectionInfo | None:
        return self._conn_info.get(transport)

    async def _read_proxy_header(self, listener: Listener, conn: socket.socket,
                                 info: ConnectionInfo) -> bool:
        """Read exactly the PROXY header (peeking, so no protocol byte is consumed)."""
        from stalwart_mp.worker.proxy_protocol import ProxyProtocolError, parse_proxy_header

        trusted = listener.settings.get("proxy-trusted-networks") or []
        if trusted and not any(ipaddress.ip_address(info.remote_ip)
                               in ipaddress.ip_network(n, strict=False) for n in trusted):
            log.warning("PROXY header from an untrusted address",
                        extra={"fields": {"ip": info.remote_ip}})
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROXY_HEADER_TIMEOUT
        while True:
            if not await _readable(loop, conn, deadline - loop.time()):
                return False
            data = conn.recv(PROXY_MAX_HEADER, socket.MSG_PEEK)
            if not data:
                return False
            try:
                result = parse_proxy_header(data)
            except ProxyProtocolError as exc:
                log.warning("bad PROXY header", extra={"fields": {"ip": info.remote_ip,
                                                                  "error": str(exc)}})
                return False
            if result is not None:
                conn.recv(result.consumed)
                if result.source is not None:
                    info.remote_ip, info.remote_port = normalize_ip(result.source[0]), \
                        result.source[1]
                    info.proxied = True
                return True
            await asyncio.sleep(0.01)  # partial header: the rest is still on its way


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket,
                    timeout: float) -> bool:
    if timeout <= 0:
        return False
    fut = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: fut.done() or fut.set_result(True))
    try:
        async with asyncio.timeout(timeout):
            return await fut
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(conn.fileno())
