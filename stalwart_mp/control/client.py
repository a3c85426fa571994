"""Client side of the control plane: an authenticated Server stub (admin CLI, admin web, tests).

The token travels as ``authorization: Bearer <token>`` metadata on every call, or an
administrator's credentials as ``authorization: Basic base64(user:password)`` (RFC 7617).
The channel is plain text (loopback or a unix socket, the default), or TLS with
:class:`ClientTls` when the server sets ``control.tls.*`` (with a client certificate when it
asks for one).
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import grpc

from stalwart_mp.control.auth import AUTH_METADATA, CLIENT_IP_METADATA, ON_BEHALF_METADATA
from stalwart_mp.control.gen.stalwart_mp.v1 import server_pb2_grpc


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the authorization metadata to every call of the channel."""

    def __init__(self, token: str, scheme: str = "Bearer",
                 extra: tuple[tuple[str, str], ...] = ()):
        self._entries = [(AUTH_METADATA, f"{scheme} {token}"), *extra]
        self._keys = {k for k, _ in self._entries}

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0] not in self._keys]
        return details._replace(metadata=[*metadata, *self._entries])  # type: ignore[attr-defined]

    def _call(self, continuation: Callable, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


class ControlStub(server_pb2_grpc.ServerStub):
    """A Server stub that owns its channel: ``close()`` it, or use it in a ``with`` block."""

    def __init__(self, channel: grpc.Channel):
        super().__init__(channel)
        self.channel = channel

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def basic_credentials(user: str, password: str) -> str:
    """The Basic credentials of RFC 7617 §2 (UTF-8, §2.1)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS towards a control plane with ``control.tls.*`` set: the CA that issued its
    certificate (None: the system's), this client's certificate and key for mutual TLS,
    and the name to verify when ``bind`` is an address the certificate does not name."""

    ca: bytes | None = None
    certificate: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None


def connect(bind: str, token: str | None = None, *, user: str | None = None,
            password: str | None = None, tls: ClientTls | None = None,
            on_behalf_of: str | None = None, client_ip: str | None = None) -> ControlStub:
    """An authenticated Server stub for the control plane at ``bind``, with the control
    ``token`` or an administrator's ``user`` and ``password``.

    ``bind`` is the control.bind value: "HOST:PORT" or "unix:/path" (both are gRPC targets).
    The connection is made lazily on the first call; an unreachable server shows up as
    grpc.StatusCode.UNAVAILABLE on that call. A local front end (the web admin) passes
    ``on_behalf_of`` (the administrator it acts for, in the audit log) and ``client_ip``
    (the browser's address, which bans apply to; honoured from loopback only).
    """
    extra = tuple((k, v) for k, v in ((ON_BEHALF_METADATA, on_behalf_of),
                                       (CLIENT_IP_METADATA, client_ip)) if v)
    if user is not None:
        auth = _BearerToken(basic_credentials(user, password or ""), scheme="Basic",
                            extra=extra)
    elif token is not None:
        auth = _BearerToken(token, extra=extra)
    else:
        raise ValueError("connect() needs a token or a user and password")
    if tls is None:
        channel = grpc.insecure_channel(bind)
    else:
        options = ([("grpc.ssl_target_name_override", tls.server_name)]
                   if tls.server_name else [])
        channel = grpc.secure_channel(bind, grpc.ssl_channel_credentials(
            root_certificates=tls.ca, private_key=tls.private_key,
            certificate_chain=tls.certificate), options=options)
    return ControlStub(grpc.intercept_channel(channel, auth))
