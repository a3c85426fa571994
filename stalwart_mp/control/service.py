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
from stalwart_mp.control.queue_service import QueueServicer, queue_size
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
MAX_WORKERS = 512            # as server.workers allows
SET_WORKERS_TIMEOUT = 60.0   # seconds for workers to start or drain
STATUS_STORE_TIMEOUT = 5.0   # the queue size is left out rather than a status delayed


def _metric_totals() -> dict:
    """The processes' shared metrics (empty outside a server: no metrics folder)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return {}
    from stalwart_mp import metrics

    try:
        return metrics.totals()
    except (OSError, ValueError) as exc:  # a file being written or removed right now
        log.debug("status without metrics", extra={"fields": {"error": str(exc)}})
        return {}


class BindError(Exception):
    """The control plane cannot listen on its address; the message says which and why."""


class ServerServicer(server_pb2_grpc.ServerServicer):
    """Server.GetStatus, Reload and SetWorkers, answered from the master's status file, the
    processes' shared metrics and (queue size) the data store."""

    def __init__(
        self,
        run_dir: Path,
        master_pid: int,
        reload_timeout: float = RELOAD_TIMEOUT,
        clock: Callable[[], float] = time.time,
        backend: DirectoryBackend | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.master_pid = master_pid
        self.reload_timeout = reload_timeout
        self.clock = clock
        self.backend = backend
        self._reload_lock = threading.Lock()  # one reload at a time: the master coalesces HUPs

    def GetStatus(  # gRPC method name
        self, request: server_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> server_pb2.ServerStatus:
        try:
            status = status_to_proto(read_status(self.run_dir), now=self.clock(),
                                     counts=_metric_totals())
        except StatusUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise  # unreachable: abort raises
        if self.backend is not None:
            try:
                status.queue_messages = self.backend.run_services(
                    lambda services: queue_size(services.data), timeout=STATUS_STORE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the status is still worth answering
                log.debug("status without the queue size", extra={"fields": {"error": str(exc)}})
        return status

    def SetWorkers(  # gRPC method name
        self, request: server_pb2.SetWorkersRequest, context: grpc.ServicerContext
    ) -> server_pb2.ServerStatus:
        if not 1 <= request.count <= MAX_WORKERS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"count: between 1 and {MAX_WORKERS}, got {request.count}")
        with self._reload_lock:
            deadline = time.monotonic() + SET_WORKERS_TIMEOUT
            audit("server.workers", count=request.count)
            while time.monotonic() < deadline and context.is_active():
                try:
                    status = read_status(self.run_dir)
                except StatusUnavailable:
                    time.sleep(_POLL)
                    continue
                wanted = status.get("workers_wanted", 0)
                running = sum(1 for p in status["processes"] if p["kind"] == "worker"
                              and p["generation"] == status["generation"])
                if wanted == request.count and running == request.count:
                    return self.GetStatus(server_pb2.GetStatusRequest(), context)
                if wanted != request.count:
                    # one signal at a time: the master counts each, and its queue is short
                    self._signal(context, signal.SIGTTIN if wanted < request.count
                                 else signal.SIGTTOU, "change the worker count")
                    self._wait_wanted(wanted, deadline)
                else:
                    time.sleep(_POLL)
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"the master did not reach {request.count} workers within "
                          f"{SET_WORKERS_TIMEOUT:.0f}s; see its log")
            raise AssertionError("unreachable: abort raises")

    def _wait_wanted(self, before: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if read_status(self.run_dir).get("workers_wanted") != before:
                    return
            except StatusUnavailable:
                pass
            time.sleep(_POLL)

    def _signal(self, context: grpc.ServicerContext, sig: int, what: str) -> None:
        try:
            os.kill(self.master_pid, sig)
        except ProcessLookupError:
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"the master (pid {self.master_pid}) is not running: cannot {what}")
        except PermissionError:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"the control process may not signal the master "
                          f"(pid {self.master_pid}) to {what}")

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


def tls_credentials(cfg) -> grpc.ServerCredentials | None:
    """The control plane's TLS from ``control.tls.*`` (None: plain text). Raises BindError
    naming the key of a file that cannot be read."""
    if not cfg.get("control.tls.certificate"):
        return None
    pem = {}
    for key in ("control.tls.certificate", "control.tls.private-key", "control.tls.client-ca"):
        if cfg.get(key):
            try:
                pem[key] = cfg.path(key).read_bytes()
            except OSError as exc:
                raise BindError(f"{key} = {cfg.get(key)!r}: cannot read it: {exc}") from None
    client_ca = pem.get("control.tls.client-ca")
    return grpc.ssl_server_credentials(
        [(pem["control.tls.private-key"], pem["control.tls.certificate"])],
        root_certificates=client_ca, require_client_auth=client_ca is not None)


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
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int]:
    """A grpc.Server (not started yet) listening on ``bind``; returns it and the bound port.

    ``bind`` is "HOST:PORT" (port 0 picks a free one) or "unix:/path"; the port is 0 for a
    unix socket. A busy address is retried for ``bind_wait`` seconds: on reload the master
    starts the new control child before the old one has closed its socket. Raises BindError
    if the address cannot be used. ``directory`` serves the Principals service (None: its
    calls are UNAVAILABLE, for a control plane run without a configuration) and checks
    admins' Basic credentials; ``config_path`` is the file the Config service reads;
    ``credentials`` (``tls_credentials``): serve over TLS instead of plain text.
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
        server_servicer = ServerServicer(run_dir, master_pid, reload_timeout,
                                         backend=directory)
        server_pb2_grpc.add_ServerServicer_to_server(server_servicer, server)
        config_pb2_grpc.add_ConfigServicer_to_server(
            ConfigServicer(directory, config_path, run_dir, server_servicer), server)
        principals_pb2_grpc.add_PrincipalsServicer_to_server(PrincipalsServicer(directory), server)
        domains_pb2_grpc.add_DomainsServicer_to_server(DomainsServicer(directory), server)
        dns_pb2_grpc.add_DnsServicer_to_server(DnsServicer(directory), server)
        queue_pb2_grpc.add_QueueServicer_to_server(QueueServicer(directory), server)
        try:
            port = (server.add_secure_port(bind, credentials) if credentials is not None
                    else server.add_insecure_port(bind))
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
