"""Authentication and authorization of every control-plane call (a gRPC server interceptor),
and the audit log of changes.

A call carries one ``authorization`` metadata entry, either

- ``Bearer <token>``: the token of ``<run_dir>/control.token`` (whoever can read that file
  administers the server), or
- ``Basic base64(user:password)`` (RFC 7617 §2): an account's credentials, checked by the
  server's ``Authenticator`` like any protocol login — so failures count toward the IP ban
  and the account throttle — and accepted only if the account has the role "admin"
  (PERMISSION_DENIED otherwise).

The check runs inside the handler (not in ``intercept_service``) because only the handler's
context knows the client's address, which the ban needs. The caller is then kept in a
context variable for ``audit`` (the handler runs in the same thread).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

# set by a local front end (the web admin): who it acts for, and the browser's address
ON_BEHALF_METADATA = "x-stalwart-on-behalf-of"
CLIENT_IP_METADATA = "x-stalwart-client-ip"
AUTH_METADATA = "authorization"
_HOW = (
    "send the metadata 'authorization: Bearer <token>' with the token from control.token "
    "in the run directory of `stalwart-mp serve` (stalwart-mp-admin: --token-file), or "
    "'authorization: Basic base64(user:password)' of an administrator (--user/--password)"
)

audit_log = logging.getLogger("stalwart_mp.audit")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes the current call: "token" or an admin's name, and from where."""

    name: str
    peer: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking a call's credentials: ``code`` None means allowed."""

    code: grpc.StatusCode | None
    message: str = ""
    caller: Caller | None = None


# check_admin(user, password, ip) -> Verdict; None when there is no directory to ask
AdminCheck = Callable[[str, str, str], Verdict]

CALLER: ContextVar[Caller | None] = ContextVar("control_caller", default=None)


def current_caller() -> Caller | None:
    return CALLER.get()


def audit(action: str, **fields: Any) -> None:
    """One structured line per change made through the control plane: who, from where,
    what. Callers pass names and keys, never secrets."""
    caller = CALLER.get()
    audit_log.info("control change", extra={"fields": {
        "caller": caller.name if caller else "-", "peer": caller.peer if caller else "-",
        "action": action, **fields}})


def peer_ip(peer: str) -> str:
    """The client IP of a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5", "unix:..."),
    IPv4-mapped IPv6 addresses as IPv4; a unix-socket client is local: 127.0.0.1."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]").split("%")[0]
        try:
            addr = ipaddress.IPv6Address(host)
        except ValueError:
            return host
        return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    return "127.0.0.1"


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, any call without a valid token or admin credentials;
    with PERMISSION_DENIED the credentials of an account that is not an administrator.

    ``check_admin`` verifies Basic credentials (None: no directory, only the token works).
    """

    def __init__(self, token: str, check_admin: AdminCheck | None = None):
        self._token = token.encode()
        self._check_admin = check_admin

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        metadata = tuple(handler_call_details.invocation_metadata or ())
        return _guarded(handler, lambda context: self.verdict(metadata, context.peer()))

    def problem(self, metadata: Any) -> str | None:
        """Why the call's metadata does not carry the bearer token, or None if it does."""
        verdict = self.verdict(metadata, "unix:", basic=False)
        return verdict.message if verdict.code is not None else None

    def verdict(self, metadata: Any, peer: str, basic: bool = True) -> Verdict:
        verdict = self._verdict(metadata, peer, basic)
        on_behalf = _single(metadata, ON_BEHALF_METADATA)
        if verdict.caller is not None and verdict.caller.name == "token" and on_behalf:
            # a token holder (the web admin) names the administrator it acts for
            verdict = Verdict(None, caller=Caller(f"{on_behalf[:100]} (token)",
                                                  verdict.caller.peer))
        return verdict

    def _verdict(self, metadata: Any, peer: str, basic: bool) -> Verdict:
        values = [v for k, v in metadata if k == AUTH_METADATA]
        if not values:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED, f"no credentials: {_HOW}")
        if len(values) > 1:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED,
                           f"more than one 'authorization' metadata entry: {_HOW}")
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        scheme, _, credentials = value.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "basic" and basic and credentials:
            return self._basic(credentials, client_peer(metadata, peer))
        if scheme.lower() != "bearer" or not credentials:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED,
                           f"unsupported authorization scheme {scheme!r}: {_HOW}")
        if not hmac.compare_digest(credentials.encode(), self._token):
            return Verdict(
                grpc.StatusCode.UNAUTHENTICATED,
                "invalid control token: it does not match control.token in the run directory "
                "of the running server (the file is read when the control process starts)",
            )
        return Verdict(None, caller=Caller("token", peer_ip(peer)))

    def _basic(self, credentials: str, peer: str) -> Verdict:
        if self._check_admin is None:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED,
                           "Basic credentials cannot be checked: this control plane runs "
                           "without a configuration (no directory); use the bearer token")
        try:
            # RFC 7617 §2: user-id ":" password, UTF-8 (§2.1)
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, colon, password = decoded.partition(":")
        if not colon or not user:
            return Verdict(grpc.StatusCode.UNAUTHENTICATED,
                           "malformed Basic credentials: expected base64 of "
                           "'user:password' (RFC 7617)")
        return self._check_admin(user, password, peer_ip(peer))


def _single(metadata: Any, key: str) -> str | None:
    values = [v for k, v in metadata if k == key]
    if len(values) != 1:
        return None
    value = values[0]
    return (value if isinstance(value, str) else value.decode("latin-1")).strip() or None


def client_peer(metadata: Any, peer: str) -> str:
    """The peer whose address bans and audit lines use: the gRPC peer, or — only for a
    caller on loopback or the unix socket (the web admin) — the browser's address it
    forwards in ``x-stalwart-client-ip``, so failed web logins ban the browser, not the
    admin. Remote callers cannot pick the address they are judged by."""
    forwarded = _single(metadata, CLIENT_IP_METADATA)
    if forwarded is None or not _is_local(peer):
        return peer
    try:
        ip = ipaddress.ip_address(forwarded)
    except ValueError:
        return peer
    return f"ipv6:[{ip}]:0" if ip.version == 6 else f"ipv4:{ip}:0"


def _is_local(peer: str) -> bool:
    if peer.startswith("unix:"):
        return True
    try:
        return ipaddress.ip_address(peer_ip(peer)).is_loopback
    except ValueError:
        return False


def _guarded(handler: grpc.RpcMethodHandler,
             check: Callable[[grpc.ServicerContext], Verdict]) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that runs ``check`` first: it aborts with
    the verdict's status, or runs the original with the caller set for ``audit``."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    def admit(context: grpc.ServicerContext) -> Any:
        verdict = check(context)
        if verdict.code is not None:
            context.abort(verdict.code, verdict.message)
        return CALLER.set(verdict.caller)

    def unary(behaviour: Callable) -> Callable:
        def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            reset = admit(context)
            try:
                return behaviour(request_or_iterator, context)
            finally:
                CALLER.reset(reset)
        return run

    def streaming(behaviour: Callable) -> Callable:
        def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            reset = admit(context)
            try:
                yield from behaviour(request_or_iterator, context)
            finally:
                CALLER.reset(reset)
        return run

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
