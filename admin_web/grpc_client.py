"""The one place where the web admin talks to the control plane.

Every view calls the control plane through ``ControlPlane``: typed stubs of each service,
a deadline on every call, and gRPC failures turned into exceptions whose message a person
can act on:

- ``ControlDown``: nothing answers at the address, or no answer in time (the error page
  says where the admin looked and what to check);
- ``ControlRefused``: the control plane refused the credentials (UNAUTHENTICATED) or the
  account is not an administrator (PERMISSION_DENIED);
- ``ControlError``: the request itself was refused (invalid input, not found, already
  exists, a precondition): the server's message names the field and what is expected.

Channels are opened per ``ControlPlane`` (one per request) and closed after it: gunicorn
forks its workers, and a gRPC channel must never cross a fork.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc

from stalwart_mp.control.client import ControlStub, connect
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    config_pb2_grpc,
    dns_pb2_grpc,
    domains_pb2_grpc,
    principals_pb2_grpc,
    queue_pb2_grpc,
)
from stalwart_mp.control.token import TokenError, read_control_token

RELOAD_TIMEOUT = 40.0  # the master may take 30 s to finish a reload

_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class ControlError(Exception):
    """The control plane refused a request; ``str()`` is its message, ``code`` its status."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


class ControlDown(ControlError):
    """The control plane cannot be reached or did not answer in time."""


class ControlRefused(ControlError):
    """The credentials were refused, or they are not an administrator's."""

    @property
    def forbidden(self) -> bool:
        return self.code == grpc.StatusCode.PERMISSION_DENIED


def _translate(exc: grpc.RpcError, address: str) -> ControlError:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    if code in _DOWN:
        what = ("did not answer in time" if code == grpc.StatusCode.DEADLINE_EXCEEDED
                else "cannot be reached")
        return ControlDown(
            f"The control plane of the mail server at {address} {what}. Check that "
            f"`stalwart-mp serve` is running and that its control.bind is {address}"
            + (f" ({details})" if details else "") + ".", code)
    if code in _REFUSED:
        return ControlRefused(details or "the control plane refused the credentials", code)
    return ControlError(details or f"the control plane answered {code}", code)


class _Service:
    """Wraps a generated stub: each method call gets a deadline and translated errors."""

    def __init__(self, stub: Any, address: str, timeout: float):
        self._stub = stub
        self._address = address
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, timeout: float | None = None) -> Any:
            try:
                return method(request, timeout=timeout or self._timeout)
            except grpc.RpcError as exc:
                raise _translate(exc, self._address) from None

        return call


@dataclass(frozen=True, slots=True)
class Credentials:
    """How calls authenticate: the control token, or an admin's user name and password."""

    token: str | None = None
    user: str | None = None
    password: str | None = None
    on_behalf_of: str | None = None   # the signed-in administrator (the audit log's caller)
    client_ip: str | None = None      # the browser's address (bans apply to it)


class ControlPlane:
    """The services of the control plane at ``address``, for one request.

    Use as a context manager (the channel is closed at the end)."""

    def __init__(self, address: str, credentials: Credentials, timeout: float = 10.0):
        self.address = address
        self._stub: ControlStub = connect(address, credentials.token, user=credentials.user,
                                          password=credentials.password,
                                          on_behalf_of=credentials.on_behalf_of,
                                          client_ip=credentials.client_ip)
        channel = self._stub.channel
        self.server = _Service(self._stub, address, timeout)
        self.principals = _Service(principals_pb2_grpc.PrincipalsStub(channel), address, timeout)
        self.domains = _Service(domains_pb2_grpc.DomainsStub(channel), address, timeout)
        self.dns = _Service(dns_pb2_grpc.DnsStub(channel), address, timeout)
        self.config = _Service(config_pb2_grpc.ConfigStub(channel), address, timeout)
        self.queue = _Service(queue_pb2_grpc.QueueStub(channel), address, timeout)

    def close(self) -> None:
        self._stub.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def token_credentials(token_file: Path | None) -> Credentials:
    """The control token read from ``token_file`` (read on every request, so a server
    restarted with a new token is picked up); ControlRefused if it cannot be read."""
    if token_file is None:
        raise ControlRefused(
            "the web admin has no control token: set STALWART_MP_TOKEN_FILE to the "
            "control.token file in the run directory of `stalwart-mp serve`")
    try:
        return Credentials(token=read_control_token(token_file))
    except TokenError as exc:
        raise ControlRefused(str(exc)) from None
