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
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc

from stalwart_mp.auth import totp
from stalwart_mp.control.auth import Caller, Verdict, audit
from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2, principals_pb2_grpc
from stalwart_mp.control.status import StatusUnavailable, read_status, timestamp
from stalwart_mp.directory import dkim_keys
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


def on_data_store(backend: DirectoryBackend | None, context: grpc.ServicerContext,
                  call: Callable[[Any], Awaitable[T]]) -> T:
    """``await call(data store)`` for a gRPC call, on the backend's loop: UNAVAILABLE
    without a configuration or when the stores cannot be opened, DEADLINE_EXCEEDED when
    they do not answer in time (the Config and Queue services)."""
    if backend is None:
        context.abort(grpc.StatusCode.UNAVAILABLE,
                      "this control plane runs without a configuration: no data store")
    try:
        return backend.run_services(lambda services: call(services.data))
    except BackendUnavailable as exc:
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except TimeoutError:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                      f"the data store did not answer within {CALL_TIMEOUT:.0f}s")
    raise AssertionError("unreachable: abort raises")


class DirectoryBackend:
    """The control child's stores, used from gRPC threads through one background event loop.

    ``cfg`` is the server's Config; ``run_dir`` holds events.sock. Create it in the control
    child (after fork), ``start()`` it, and ``close()`` it when the server has stopped.
    """

    def __init__(self, cfg: Any, run_dir: Path, config_path: Path | None = None):
        self._cfg = cfg
        self.run_dir = Path(run_dir)
        self.config_path = Path(config_path) if config_path is not None else None
        self._cfg_at = time.time()   # the master loaded ``cfg`` before it forked us
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="control-directory", daemon=True)
        self._services: Any = None
        self._events: Any = None
        self._open_lock: asyncio.Lock | None = None

    @property
    def cfg(self) -> Any:
        """The configuration in force. After the master applies a reload that did not
        restart this process (the stores and the control plane's own settings unchanged),
        it is read again (the file and the stored settings), so e.g. the DNS records
        follow a new host name or listener at once."""
        if self.config_path is None:
            return self._cfg
        try:
            loaded_at = read_status(self.run_dir)["config_loaded_at"]
        except StatusUnavailable:
            return self._cfg
        if loaded_at > self._cfg_at:
            from stalwart_mp.config.loader import ConfigInvalid
            from stalwart_mp.config.stored import load_with_stored

            try:
                self._cfg = load_with_stored(self.config_path)
            except (ConfigInvalid, OSError) as exc:  # the master has it; keep ours meanwhile
                log.warning("control: cannot read the reloaded config",
                            extra={"fields": {"error": str(exc)}})
            self._cfg_at = time.time()
        return self._cfg

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

    def run_services(self, call: Callable[[Any], Awaitable[T]],
                     timeout: float = CALL_TIMEOUT) -> T:
        """Run ``await call(services)`` on the loop (``services``: the process's Services)."""
        async def job() -> T:
            return await call(await self._open())

        future: Future[T] = asyncio.run_coroutine_threadsafe(job(), self.loop)
        return future.result(timeout)

    def check_admin(self, user: str, password: str, ip: str) -> Verdict:
        """Basic credentials of a control-plane call, through the server's Authenticator
        (failures count toward the IP ban and the account throttle): allowed only for an
        account with the role "admin"."""
        from stalwart_mp.directory.auth import Failure

        try:
            result = self.run_services(lambda s: s.auth.authenticate(user, password, ip))
        except (BackendUnavailable, DirectoryUnavailable, TimeoutError) as exc:
            return Verdict(grpc.StatusCode.UNAVAILABLE,
                           f"the credentials cannot be checked now: {exc or 'timeout'}")
        if result.ok:
            if result.principal.is_admin:
                return Verdict(None, caller=Caller(result.principal.name, ip))
            log.warning("control: refused a non-admin",
                        extra={"fields": {"user": user, "ip": ip}})
            return Verdict(grpc.StatusCode.PERMISSION_DENIED,
                           f'"{user}" is not an administrator: the control plane needs an '
                           'account with the role "admin", or the control token')
        if result.failure == Failure.BANNED:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED,
                           f"{ip} is banned after too many failed logins; try again later")
        if result.failure == Failure.THROTTLED:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED,
                           f'too many failed logins for "{user}"; try again later')
        if result.failure == Failure.UNAVAILABLE:
            return Verdict(grpc.StatusCode.UNAVAILABLE,
                           "the directory cannot check the credentials now; try again")
        return Verdict(grpc.StatusCode.UNAUTHENTICATED,
                       "invalid user name or password (or the account is disabled)")

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
        app_passwords=[a.name for a in p.app_passwords], totp=p.has_totp,
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


# which request field an INVALID_ARGUMENT from the directory is about, by its wording
_FIELD_HINTS = (
    ("e-mail address", "emails"), ("does not exist: create it first", "emails"),
    ("has no address", "remove_emails"), ("not a valid name", "name"),
    ("is not a domain name", "name"), ("password must not be empty", "password"),
    ("not a principal type", "type"), ("it has no members", "members"),
    ("is not a member of", "remove_members"), ("is not a principal", "members"),
    ("is the group itself", "members"),
    ("is not a role name", "roles"), ("app password", "label"),
)


def field_of(error: DirectoryError, renames: dict[str, str] | None = None) -> str | None:
    """The request field a directory error is about (``renames`` maps the generic name to
    the request's, e.g. emails -> add_emails), or None."""
    text = str(error)
    for needle, name in _FIELD_HINTS:
        if needle in text:
            return (renames or {}).get(name, name)
    return None


class PrincipalsServicer(principals_pb2_grpc.PrincipalsServicer):
    """Principals.* on the internal directory's DirectoryManager (through ``backend``).

    ``backend`` is None when the control plane runs without a configuration (tests,
    ``python -m stalwart_mp.control.main``): every call is then UNAVAILABLE. Each change
    is audit-logged (control/auth.py ``audit``) with the caller, never with a secret.
    """

    def __init__(self, backend: DirectoryBackend | None):
        self.backend = backend

    def _do(self, context: grpc.ServicerContext, call: Callable[[Any], Awaitable[T]],
            renames: dict[str, str] | None = None, manager: bool = True) -> T:
        """Run ``call(manager)`` (or ``call(services)`` with ``manager=False``) and turn
        its errors into statuses; INVALID_ARGUMENT messages start with the field name."""
        if self.backend is None:
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          "this control plane runs without a configuration: no directory")

        async def checked(target: Any) -> T:
            if target is None:
                raise _External()
            return await call(target)

        try:
            if manager:
                return self.backend.run(checked)
            return self.backend.run_services(checked)
        except _External:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, EXTERNAL)
        except DirectoryError as exc:
            code = status_of(exc)
            field = field_of(exc, renames) if code == grpc.StatusCode.INVALID_ARGUMENT else None
            context.abort(code, f"{field}: {exc}" if field else str(exc))
        except (BackendUnavailable, DirectoryUnavailable) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"the directory did not answer within {CALL_TIMEOUT:.0f}s")
        raise AssertionError("unreachable: abort raises")

    @staticmethod
    def _required(context: grpc.ServicerContext, **values: str) -> None:
        for name, value in values.items():
            if not value.strip():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: required")

    def _get(self, context: grpc.ServicerContext, name: str) -> Principal:
        p = self._do(context, lambda m: m.directory.principal(name))
        if p is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f'no principal named "{name}"')
        return p

    def CreateDomain(  # gRPC method name
        self, request: principals_pb2.CreateDomainRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        self._required(context, name=request.name)
        p = self._do(context, lambda m: m.create_domain(request.name, request.description))
        audit("domain.create", name=p.name)
        return principal_to_proto(p)

    def CreatePrincipal(  # gRPC method name
        self, request: principals_pb2.CreatePrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        self._required(context, name=request.name)
        kind = request.type or PrincipalType.INDIVIDUAL.value
        if kind == PrincipalType.DOMAIN.value:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "type: create a domain with CreateDomain")
        p = self._do(context, lambda m: m.create_principal(
            request.name, kind, password=request.password or None,
            emails=list(request.emails), description=request.description,
            quota_bytes=request.quota_bytes, quota_messages=request.quota_messages,
            roles=list(request.roles) or None, members=list(request.members),
        ))
        audit("principal.create", name=p.name, type=p.type.value, emails=list(p.emails),
              roles=list(p.roles), members=list(p.members), quota_bytes=p.quota_bytes,
              password_set=bool(request.password))
        return principal_to_proto(p)

    def GetPrincipal(  # gRPC method name
        self, request: principals_pb2.GetPrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        self._required(context, name=request.name)
        return principal_to_proto(self._get(context, request.name))

    def ListPrincipals(  # gRPC method name
        self, request: principals_pb2.ListPrincipalsRequest, context: grpc.ServicerContext
    ) -> principals_pb2.ListPrincipalsResponse:
        kind = None
        if request.type:
            try:
                kind = PrincipalType(request.type)
            except ValueError:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f'type: "{request.type}" is not a principal type '
                              "(individual, group, list, domain)")
        if request.page_size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size: must not be negative")
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
        self._required(context, name=request.name, password=request.password)
        self._do(context, lambda m: m.set_password(request.name, request.password))
        audit("principal.password", name=request.name)
        return principals_pb2.SetPasswordResponse()

    def DeletePrincipal(  # gRPC method name
        self, request: principals_pb2.DeletePrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.DeletePrincipalResponse:
        self._required(context, name=request.name)

        async def delete(m: Any) -> None:
            p = await m.directory.principal(request.name)
            await m.delete(request.name)
            if p is not None and p.type == PrincipalType.DOMAIN:
                await dkim_keys.delete_keys(m.store, p.name)  # a domain goes with its keys

        self._do(context, delete)
        audit("principal.delete", name=request.name)
        return principals_pb2.DeletePrincipalResponse()

    def UpdatePrincipal(  # gRPC method name
        self, request: principals_pb2.UpdatePrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        self._required(context, name=request.name)
        changes: dict[str, Any] = {
            "add_emails": list(request.add_emails), "remove_emails": list(request.remove_emails),
            "add_members": list(request.add_members),
            "remove_members": list(request.remove_members),
        }
        for name in ("description", "quota_bytes", "quota_messages", "disabled"):
            if request.HasField(name):
                changes[name] = getattr(request, name)
        if request.HasField("roles"):
            changes["roles"] = list(request.roles.values)
        p = self._do(context, lambda m: m.update(request.name, **changes),
                     renames={"emails": "add_emails", "members": "add_members"})
        audit("principal.update", name=p.name,
              **{k: v for k, v in changes.items() if v or v == 0 or v is False})
        return principal_to_proto(p)

    def RenamePrincipal(  # gRPC method name
        self, request: principals_pb2.RenamePrincipalRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Principal:
        self._required(context, name=request.name, new_name=request.new_name)
        p = self._do(context, lambda m: m.rename(request.name, request.new_name),
                     renames={"name": "new_name"})
        audit("principal.rename", name=request.name, new_name=p.name)
        return principal_to_proto(p)

    def _account(self, context: grpc.ServicerContext, name: str) -> Principal:
        p = self._get(context, name)
        if p.type != PrincipalType.INDIVIDUAL:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f'name: "{name}" is a {p.type.value}, not an account')
        return p

    def CreateAppPassword(  # gRPC method name
        self, request: principals_pb2.CreateAppPasswordRequest, context: grpc.ServicerContext
    ) -> principals_pb2.CreateAppPasswordResponse:
        self._required(context, name=request.name, label=request.label)
        self._account(context, request.name)
        secret = self._do(context, lambda m: m.add_app_password(request.name, request.label))
        audit("app-password.create", name=request.name, label=request.label.strip())
        return principals_pb2.CreateAppPasswordResponse(label=request.label.strip(),
                                                        secret=secret)

    def ListAppPasswords(  # gRPC method name
        self, request: principals_pb2.ListAppPasswordsRequest, context: grpc.ServicerContext
    ) -> principals_pb2.ListAppPasswordsResponse:
        self._required(context, name=request.name)
        p = self._account(context, request.name)
        return principals_pb2.ListAppPasswordsResponse(app_passwords=[
            principals_pb2.AppPassword(label=a.name, created_at=timestamp(a.created_at))
            for a in sorted(p.app_passwords, key=lambda a: a.created_at)
        ])

    def RevokeAppPassword(  # gRPC method name
        self, request: principals_pb2.RevokeAppPasswordRequest, context: grpc.ServicerContext
    ) -> principals_pb2.RevokeAppPasswordResponse:
        self._required(context, name=request.name, label=request.label)
        p = self._account(context, request.name)
        if not any(a.name == request.label for a in p.app_passwords):
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f'"{p.name}" has no app password named "{request.label}"')
        self._do(context, lambda m: m.remove_app_password(request.name, request.label))
        audit("app-password.revoke", name=request.name, label=request.label)
        return principals_pb2.RevokeAppPasswordResponse()

    def EnableTotp(  # gRPC method name
        self, request: principals_pb2.EnableTotpRequest, context: grpc.ServicerContext
    ) -> principals_pb2.EnableTotpResponse:
        self._required(context, name=request.name)
        self._account(context, request.name)
        assert self.backend is not None  # _account aborts without one
        # the issuer authenticator apps show next to the code: this server's host name
        issuer = str(self.backend.cfg.get("server.hostname") or "") or "stalwart-mp"
        uri = self._do(context, lambda m: m.enable_totp(request.name, issuer))
        audit("totp.enable", name=request.name)  # never the secret
        return principals_pb2.EnableTotpResponse(otpauth_uri=uri,
                                                 secret=totp.parse_uri(uri).secret)

    def DisableTotp(  # gRPC method name
        self, request: principals_pb2.DisableTotpRequest, context: grpc.ServicerContext
    ) -> principals_pb2.DisableTotpResponse:
        self._required(context, name=request.name)
        p = self._account(context, request.name)
        if not p.has_totp:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f'"{p.name}" has no two-factor authentication')
        self._do(context, lambda m: m.disable_totp(request.name))
        audit("totp.disable", name=request.name)
        return principals_pb2.DisableTotpResponse()

    def GetUsage(  # gRPC method name
        self, request: principals_pb2.GetUsageRequest, context: grpc.ServicerContext
    ) -> principals_pb2.Usage:
        self._required(context, name=request.name)

        async def usage(services: Any) -> tuple[Principal | None, Any]:
            from stalwart_mp.directory.ids import account_id

            p = await services.directory.principal(request.name)
            if p is None or p.type != PrincipalType.INDIVIDUAL:
                return p, None
            return p, await services.mail.state(await account_id(services.data, p))

        p, state = self._do(context, usage, manager=False)
        if p is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f'no principal named "{request.name}"')
        if p.type != PrincipalType.INDIVIDUAL:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f'name: "{p.name}" is a {p.type.value}, not an account')
        return principals_pb2.Usage(
            name=p.name, quota_bytes=p.quota_bytes or 0, quota_messages=p.quota_messages or 0,
            used_bytes=state.used_bytes if state else 0,
            used_messages=state.used_count if state else 0,
        )


class _External(Exception):
    """The directory is external: no manager."""
