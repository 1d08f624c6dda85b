"""Admission control on the gRPC edge: unary listing-service calls take their turn from the
process's one `AdmissionControl`, the same budget `/graphql` HTTP requests use.

A call refused there ends RESOURCE_EXHAUSTED through the edge's one error mapping (trailing
metadata `gateway-code: OVERLOADED` and `gateway-retry-after`), before the servicer and so
any upstream is reached. The watch stream is not admitted: it lives as long as its caller
keeps it open, mostly waiting for webhook events, and would hold a turn all that time (as
GraphQL subscriptions over WebSocket are not admitted either). Health and reflection pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from gateway.access.admission import AdmissionControl
from gateway.domain.errors import Overloaded
from gateway.grpc.errors import abort

Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]]"
)


class AdmissionGate(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Runs each unary call to `service` inside a turn of `control`."""

    def __init__(self, control: AdmissionControl, service: str) -> None:
        self._control = control
        self._prefix = f"/{service}/"

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.response_streaming
            or not handler_call_details.method.startswith(self._prefix)
        ):
            return handler
        # grpc-stubs types the handlers of the threaded server; this one is a coroutine.
        unary: Any = handler.unary_unary
        control = self._control

        async def admitted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                await control.enter()
            except Overloaded as refused:
                await abort(context, refused)
            try:
                return await unary(request, context)
            finally:
                control.leave()

        return grpc.unary_unary_rpc_method_handler(
            admitted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
