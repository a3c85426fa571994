"""The Principals service (domains, accounts, groups, lists) of the control plane.

The gRPC server is synchronous (a thread pool) while the directory is asyncio code: a
:class:`DirectoryBackend` owns ONE event loop, run by a dedicated thread, on which every
directory call runs (``asyncio.run_coroutine_threadsafe``). The stores and the event bus
(``<run_dir>/events.sock``, so that the workers' directory caches are cleared on changes)
are opened on that loop at the first call, and again after a failure to open them.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc

from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2, principals_pb2_grpc
from stalwart_mp.directory.base import (
    DirectoryError,
    DirectoryUnavailable,
    Principal,
    PrincipalType,
)

log = logging.getLogger("stalwart_mp.control")

T = TypeVar("T")

CALL_TIMEOUT = 60.0  # seconds a directory call may take (argon2 hashing, a slow store)
DEFAULT_PAGE = 100
MAX_PAGE = 1000
EXTERNAL = "the directory is external (sql/ldap): manage accounts there"


class BackendUnavailable(Exception):
    """The stores cannot be opened (the message says why)."""


class DirectoryBackend:
    """The control child's stores, used from gRPC threads through one background event loop.

    ``cfg`` is the server's Config; ``run_dir`` holds events.sock. Create it in the control
    child (after fork), ``start()`` it, and ``close()`` it when the server has stopped.
    """

    def __init__(self, cfg: Any, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="control-directory", daemon=True)
        self._services: Any = None
        self._events: Any = None
        self._open_lock: asyncio.Lock | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, call: Callable[[Any], Awaitable[T]], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``await call(manager)`` on the loop and return its result (from any thread).

        ``manager`` is the DirectoryManager, or None when the directory is external.
        Raises what ``call`` raises, or BackendUnavailable.
        """
        async def job() -> T:
            services = await self._open()
            return await call(services.manager)

        future: Future[T] = asyncio.run_coroutine_threadsafe(job(), self.loop)
        return future.result(timeout)

    async def _open(self) -> Any:
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._services is not None:
                return self._services
            from stalwart_mp.events.bus import LocalEventBus
            from stalwart_mp.services import Services
            from stalwart_mp.store.data import StoreError

            if self._events is None:
                self._events = LocalEventBus(self.run_dir / "events.sock")
                await self._events.start()
            try:
                self._services = await Services.open(self.cfg, self._events)
            except (StoreError, DirectoryUnavailable, OSError) as exc:
                log.error("control: stores unavailable", extra={"fields": {"error": str(exc)}})
                raise BackendUnavailable(f"the stores cannot be opened: {exc}") from None
            return self._services

    def close(self, timeout: float = 10.0) -> None:
        """Close the stores and the event bus, then stop the loop and its thread."""
        async def shutdown() -> None:
            if self._services is not None:
                await self._services.close()
                self._services = None
            if self._events is not None:
                await self._events.close()
                self._events = None

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout)
            except Exception as exc:  # noqa: BLE001 - closing: log, never fail the stop
                log.warning("control: closing the stores failed",
                            extra={"fields": {"error": repr(exc)}})
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


def principal_to_proto(p: Principal) -> principals_pb2.Principal:
    """The Principal message of ``p``, without secrets nor hashes."""
    return principals_pb2.Principal(
        id=p.id, name=p.name, type=PrincipalType(p.type).value, description=p.description,
        emails=list(p.emails), quota_bytes=p.quota_bytes or 0,
        quota_messages=p.quota_messages or 0, roles=list(p.roles),
        member_of=list(p.member_of), members=list(p.members), disabled=p.disabled,
        app_passwords=[a.name for a in p.app_passwords],
    )


def status_of(error: DirectoryError) -> grpc.StatusCode:
    """The gRPC status for a DirectoryError, from its message."""
    text = str(error)
    if "already exists" in text or "already belongs" in text or "already has" in text:
        return grpc.StatusCode.ALREADY_EXISTS
    if text.startswith("no principal named"):
        return grpc.StatusCode.NOT_FOUND
    if "kept changing" in text or "changed while being written" in text:
        return grpc.StatusCode.ABORTED
    return grpc.StatusCode.INVALID_ARGUMENT


class PrincipalsServicer(principals_pb2_grpc.PrincipalsServicer):
    """Principals.* on the internal directory's DirectoryManager (through ``backend``).

    ``backend`` is None when the control plane runs without a configuration (tests,
    ``python -m stalwart_mp.control.main``): every call is then UNAVAILABLE.
    """

    def __init__(self, backend: DirectoryBackend | None):
        self.backend = backend

    def _do(self, context: grpc.ServicerContext, call: Callable[[Any], Awaitable[T]]) -> T:
        if self.backend is None:
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          "this control plane runs without a configuration: no directory")

        async def checked(manager: Any) -> T:
            if manager is None:
                raise _External()
            return await call(manager)

        try:
            return self.backend.run(checked)
        except _External:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, EXTERNAL)
        except DirectoryError as exc:
            context.abort(status_of(exc), str(exc))
        except (BackendUnavailable, DirectoryUnavailable) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"the directory did not answer within {CALL_TIMEOUT:.0f}s")
        raise AssertionError("unreachable: abort raises")

    def CreateDomain(  # gRPC method name
        self, request: principals_pb2.CreateDomainRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        p = self._do(context, lambda m: m.create_domain(request.name, request.description))
        return principal_to_proto(p)

    def CreatePrincipal(  # gRPC method name
        self, request: principals_pb2.CreatePrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        kind = request.type or PrincipalType.INDIVIDUAL.value
        if kind == PrincipalType.DOMAIN.value:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "create a domain with CreateDomain")
        p = self._do(context, lambda m: m.create_principal(
            request.name, kind, password=request.password or None,
            emails=list(request.emails), description=request.description,
            quota_bytes=request.quota_bytes, quota_messages=request.quota_messages,
            roles=list(request.roles) or None, members=list(request.members),
        ))
        return principal_to_proto(p)

    def GetPrincipal(  # gRPC method name
        self, request: principals_pb2.GetPrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        p = self._do(context, lambda m: m.directory.principal(request.name))
        if p is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f'no principal named "{request.name}"')
        return principal_to_proto(p)

    def ListPrincipals(  # gRPC method name
        self, request: principals_pb2.ListPrincipalsRequest, context: grpc.ServicerContext
    ) -> principals_pb2.ListPrincipalsResponse:
        kind = None
        if request.type:
            try:
                kind = PrincipalType(request.type)
            except ValueError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f'"{request.type}" is not a principal type '
                              "(individual, group, list, domain)")
        if request.page_size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        # one more than asked tells whether there is a next page
        found = self._do(context, lambda m: m.directory.list_principals(
            type=kind, search=request.search, after=request.page_token, limit=size + 1))
        page = found[:size]
        more = len(found) > size
        return principals_pb2.ListPrincipalsResponse(
            principals=[principal_to_proto(p) for p in page],
            next_page_token=page[-1].name if more and page else "",
        )

    def SetPassword(  # gRPC method name
        self, request: principals_pb2.SetPasswordRequest, context: grpc.ServicerContext
    ) -> principals_pb2.SetPasswordResponse:
        self._do(context, lambda m: m.set_password(request.name, request.password))
        return principals_pb2.SetPasswordResponse()

    def DeletePrincipal(  # gRPC method name
        self, request: principals_pb2.DeletePrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.DeletePrincipalResponse:
        self._do(context, lambda m: m.delete(request.name))
        return principals_pb2.DeletePrincipalResponse()


class _External(Exception):
    """The directory is external: no manager."""
