"""Client tokens on the gRPC edge: `authorization: Bearer <token>` metadata.

The same `ClientTokens` judge the HTTP and WebSocket edges use. Only the listing service
is guarded: health checking and reflection stay open, so probes and tools work without a
token. A refused call ends UNAUTHENTICATED through the edge's one error mapping, before
the servicer (and so any upstream) is reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from gateway.access.client_tokens import UNAUTHENTICATED_MESSAGE, ClientTokens
from gateway.domain.errors import Unauthenticated
from gateway.grpc.errors import abort

# A string: grpc's classes are generic only in grpc-stubs, not at run time.
Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]]"
)


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await abort(context, Unauthenticated(UNAUTHENTICATED_MESSAGE))


async def _refuse_stream(
    request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    await abort(context, Unauthenticated(UNAUTHENTICATED_MESSAGE))
    yield  # pragma: no cover - abort never returns; this makes it a stream handler


class ClientTokenGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls to `service` whose `authorization` metadata no client token admits."""

    def __init__(self, tokens: ClientTokens, service: str) -> None:
        self._tokens = tokens
        self._prefix = f"/{service}/"

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or not self._tokens.required
            or not handler_call_details.method.startswith(self._prefix)
        ):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        authorization = metadata.get("authorization")
        if self._tokens.allows(authorization if isinstance(authorization, str) else None):
            return handler
        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        behaviour = _refuse_stream if handler.response_streaming else _refuse
        return make(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
