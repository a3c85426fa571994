"""Bearer-token authentication of every control-plane call (a gRPC server interceptor)."""
from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

AUTH_METADATA = "authorization"
_HOW = (
    "send the metadata 'authorization: Bearer <token>' with the token from control.token "
    "in the run directory of `stalwart-mp serve` (stalwart-mp-admin: --token-file)"
)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, any call whose bearer token is missing or wrong."""

    def __init__(self, token: str):
        self._token = token.encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        problem = self.problem(handler_call_details.invocation_metadata or ())
        if handler is None or problem is None:
            return handler
        return _refusing(handler, problem)

    def problem(self, metadata: Any) -> str | None:
        """Why the call's metadata does not authenticate it, or None if it does."""
        values = [v for k, v in metadata if k == AUTH_METADATA]
        if not values:
            return f"no credentials: {_HOW}"
        if len(values) > 1:
            return f"more than one 'authorization' metadata entry: {_HOW}"
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return f"unsupported authorization scheme {scheme!r}: {_HOW}"
        if not hmac.compare_digest(token.strip().encode(), self._token):
            return (
                "invalid control token: it does not match control.token in the run directory "
                "of the running server (the file is read when the control process starts)"
            )
        return None


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""

    def refuse(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
