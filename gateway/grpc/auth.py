"""Client tokens on the gRPC edge: `authorization: Bearer <token>` metadata.

The same `ClientTokens` judge the HTTP and WebSocket edges use. Only the listing service
is guarded: health checking and reflection stay open, so probes and tools work without a
token. A refused call ends UNAUTHENTICATED through the edge's one error mapping, before
the servicer (and so any upstream) is reached; a token bound to other agencies than the
call's `x-intermediary-id` names ends INVALID_ARGUMENT, as an agency outside
`GATEWAY_V3_AGENCIES` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from gateway.access.client_tokens import (
    FORBIDDEN_AGENCY_MESSAGE,
    UNAUTHENTICATED_MESSAGE,
    ClientTokens,
    Verdict,
)
from gateway.domain.errors import GatewayError, InvalidInput, Unauthenticated
from gateway.grpc.errors import abort

# A string: grpc's classes are generic only in grpc-stubs, not at run time.
Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]]"
)


def _refusal(error: GatewayError, streaming: bool) -> Callable[..., Any]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await abort(context, error)

    async def refuse_stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await abort(context, error)
        yield  # pragma: no cover - abort never returns; this makes it a stream handler

    return refuse_stream if streaming else refuse


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
        agency = metadata.get("x-intermediary-id")
        verdict = self._tokens.judge(
            authorization if isinstance(authorization, str) else None,
            agency=agency if isinstance(agency, str) else "",
        )
        if verdict is Verdict.ALLOWED:
            return handler
        error: GatewayError = (
            InvalidInput(FORBIDDEN_AGENCY_MESSAGE)
            if verdict is Verdict.FORBIDDEN
            else Unauthenticated(UNAUTHENTICATED_MESSAGE)
        )
        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        return make(
            _refusal(error, handler.response_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
