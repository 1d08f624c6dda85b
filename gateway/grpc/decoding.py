"""Request bytes that are not the message they claim to be: INVALID_ARGUMENT, not a traceback.

grpc parses a request before any servicer code runs. Bytes that do not parse (a truncated or
corrupt message, another message type) make grpc end the call UNKNOWN, with the parser's own
message as details, and log an ERROR with a traceback: anyone could fill the log that way.
`UndecodableRequests`, the innermost interceptor, gives every handler with a single request a
parser that cannot fail: bytes that do not parse become `UNDECODABLE`, which the handler
answers INVALID_ARGUMENT (`gateway-code: BAD_USER_INPUT`) through the edge's one error
mapping, without reading further. Health and reflection are covered as well.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from gateway.domain.errors import InvalidInput
from gateway.grpc.errors import abort

Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]]"
)
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class _Undecodable:
    """Stands for a request whose bytes did not parse."""

    def __repr__(self) -> str:
        return "UNDECODABLE"


UNDECODABLE: Final = _Undecodable()
_MESSAGE: Final = "the request is not a valid protobuf message of the method's request type"


def _lenient(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if parse is None:
        return None

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return UNDECODABLE

    return lenient


class UndecodableRequests(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Answers a request that does not parse INVALID_ARGUMENT, for every unary-request method."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        # grpc-stubs types the handlers of the threaded server; these are coroutines.
        behaviour: Any
        if handler.response_streaming:
            make = grpc.unary_stream_rpc_method_handler
            behaviour = _streamed(handler.unary_stream)
        else:
            make = grpc.unary_unary_rpc_method_handler
            behaviour = _answered(handler.unary_unary)
        return make(
            behaviour,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


async def _refuse(context: Context) -> None:
    await abort(context, InvalidInput(_MESSAGE))


def _answered(method: Any) -> Callable[[Any, Context], Awaitable[Any]]:
    """A unary behaviour, or a streaming one that writes through `context.write`."""

    async def answered(request: Any, context: Context) -> Any:
        if request is UNDECODABLE:
            await _refuse(context)
        return await method(request, context)

    return answered


def _streamed(method: Any) -> Any:
    """A streaming behaviour: an async generator (the listing service) or a coroutine that
    writes through `context.write` (grpc's health `Watch`)."""
    if not inspect.isasyncgenfunction(method):
        return _answered(method)

    async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
        if request is UNDECODABLE:
            await _refuse(context)
        async for item in method(request, context):
            yield item

    return streamed
