"""The Server service (status, reload) and the grpc.Server that hosts the control plane."""
from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from stalwart_mp.control.auth import BearerTokenInterceptor, audit
from stalwart_mp.control.config_service import ConfigServicer
from stalwart_mp.control.domains_service import DnsServicer, DomainsServicer
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    config_pb2_grpc,
    dns_pb2_grpc,
    domains_pb2_grpc,
    principals_pb2_grpc,
    queue_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)
from stalwart_mp.control.principals_service import DirectoryBackend, PrincipalsServicer
from stalwart_mp.control.queue_service import QueueServicer
from stalwart_mp.control.status import (
    StatusUnavailable,
    read_status,
    reload_result_to_proto,
    status_to_proto,
)

log = logging.getLogger("stalwart_mp.control")

RELOAD_TIMEOUT = 30.0  # seconds the master may take to finish a reload
_POLL = 0.05
BIND_WAIT = 5.0  # seconds to wait for a busy address (the previous control child closing it)
BIND_RETRY = 0.1


class BindError(Exception):
    """The control plane cannot listen on its address; the message says which and why."""


class ServerServicer(server_pb2_grpc.ServerServicer):
    """Server.GetStatus and Server.Reload, answered from the master's status file."""

    def __init__(
        self,
        run_dir: Path,
        master_pid: int,
        reload_timeout: float = RELOAD_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ):
        self.run_dir = Path(run_dir)
        self.master_pid = master_pid
        self.reload_timeout = reload_timeout
        self.clock = clock
        self._reload_lock = threading.Lock()  # one reload at a time: the master coalesces HUPs

    def GetStatus(  # gRPC method name
        self, request: server_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> server_pb2.ServerStatus:
        try:
            return status_to_proto(read_status(self.run_dir), now=self.clock())
        except StatusUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise  # unreachable: abort raises

    def Reload(  # gRPC method name
        self, request: server_pb2.ReloadRequest, context: grpc.ServicerContext
    ) -> server_pb2.ReloadResult:
        with self._reload_lock:
            asked_at = self.clock()
            try:
                os.kill(self.master_pid, signal.SIGHUP)
            except ProcessLookupError:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the master (pid {self.master_pid}) is not running: nothing to reload",
                )
            except PermissionError:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the control process may not signal the master (pid {self.master_pid}); "
                    "send SIGHUP to it as root or the server's user",
                )
            log.info("reload requested", extra={"fields": {"master_pid": self.master_pid}})
            audit("server.reload", master_pid=self.master_pid)
            timeout = self.reload_timeout
            remaining = context.time_remaining()
            if remaining is not None:
                timeout = min(timeout, remaining)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and context.is_active():
                last = self._last_reload()
                if last is not None and last["at"] > asked_at:
                    return reload_result_to_proto(last)
                time.sleep(_POLL)
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the master (pid {self.master_pid}) did not report the end of the reload "
                f"within {timeout:.0f}s of SIGHUP; see its log, then `stalwart-mp-admin status`",
            )
            raise AssertionError("unreachable: abort raises")

    def _last_reload(self) -> dict | None:
        try:
            return read_status(self.run_dir).get("last_reload")
        except StatusUnavailable:
            return None  # between master restarts or mid-replace on odd filesystems: retry


def build_server(
    run_dir: Path,
    master_pid: int,
    bind: str,
    token: str,
    max_workers: int = 8,
    reload_timeout: float = RELOAD_TIMEOUT,
    bind_wait: float = BIND_WAIT,
    directory: DirectoryBackend | None = None,
    config_path: Path | None = None,
) -> tuple[grpc.Server, int]:
    """A grpc.Server (not started yet) listening on ``bind``; returns it and the bound port.

    ``bind`` is "HOST:PORT" (port 0 picks a free one) or "unix:/path"; the port is 0 for a
    unix socket. A busy address is retried for ``bind_wait`` seconds: on reload the master
    starts the new control child before the old one has closed its socket. Raises BindError
    if the address cannot be used. ``directory`` serves the Principals service (None: its
    calls are UNAVAILABLE, for a control plane run without a configuration) and checks
    admins' Basic credentials; ``config_path`` is the file the Config service reads.
    """
    deadline = time.monotonic() + bind_wait
    while True:
        problem = _remove_stale_socket(Path(bind[5:])) if bind.startswith("unix:") else None
        if problem is not None:
            if time.monotonic() >= deadline:
                raise BindError(f"control.bind = {bind!r}: {problem}")
            time.sleep(BIND_RETRY)
            continue
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="control"),
            interceptors=[BearerTokenInterceptor(
                token, directory.check_admin if directory is not None else None)],
            options=[("grpc.so_reuseport", 0)],  # a second control plane must fail, not share
        )
        server_servicer = ServerServicer(run_dir, master_pid, reload_timeout)
        server_pb2_grpc.add_ServerServicer_to_server(server_servicer, server)
        config_pb2_grpc.add_ConfigServicer_to_server(
            ConfigServicer(directory, config_path, run_dir, server_servicer), server)
        principals_pb2_grpc.add_PrincipalsServicer_to_server(PrincipalsServicer(directory), server)
        domains_pb2_grpc.add_DomainsServicer_to_server(DomainsServicer(directory), server)
        dns_pb2_grpc.add_DnsServicer_to_server(DnsServicer(directory), server)
        queue_pb2_grpc.add_QueueServicer_to_server(QueueServicer(directory), server)
        try:
            port = server.add_insecure_port(bind)
            if port or bind.startswith("unix:"):
                return server, port
            problem = "address in use?"
        except RuntimeError as exc:
            problem = str(exc)
        server.stop(None)
        if time.monotonic() >= deadline:
            raise BindError(
                f"control.bind = {bind!r}: cannot listen there ({problem}; "
                f"retried for {bind_wait:.0f}s)"
            )
        time.sleep(BIND_RETRY)


def _remove_stale_socket(path: Path) -> str | None:
    """Remove a socket file left by a dead process; return why it cannot be used, or None.

    Raises BindError if ``path`` is something else than a socket (never removed).
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        raise BindError(f"control.bind = 'unix:{path}': {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens
            return None
    return (
        f"another process is listening on {path} "
        "(is another `stalwart-mp serve` running with this address?)"
    )
