"""The GraphQL-over-WebSocket handlers of `/graphql`: strawberry's, with the bounds HTTP has.

- `connection_init` within the view's `connection_init_wait_timeout`
  (`GATEWAY_WS_INIT_TIMEOUT_S`), else the socket is closed with 4408 — on both protocols:
  strawberry's graphql-transport-ws handler has this timeout, its graphql-ws handler none
  (a socket that never sent `connection_init` stayed open for ever).
- A message is text, at most the view's `max_message_bytes` (`GATEWAY_MAX_BODY_BYTES`, as
  an HTTP body; uvicorn's `ws_max_size` refuses larger frames first, with 1009), one JSON
  object of the protocol's shape: a string `type`, a string `id` and an object `payload`
  where the message type has them, a string `query`, object `variables` and
  `extensions`, a string `operationName`. Anything else closes the socket with 4400 and
  the reason, on both protocols (graphql-transport-ws says so; strawberry's graphql-ws
  handler ignored non-JSON and dropped the connection, logging a traceback, on the rest).
- graphql-ws follows graphql-transport-ws where it is silent: a second `connection_init`
  closes with 4429, a `start` whose id is in use with 4409, an unknown type with 4400.
- Each operation takes a turn from the process's `AdmissionControl`, as an HTTP request
  does; a refused one gets an `error` message with `OVERLOADED` and `retryAfter`, and the
  socket stays up. A query or mutation holds its turn until its result is sent; a
  subscription gives it back once it is set up (`SubscriptionTurns`), so it holds none
  while it waits for events.
- A subscription one past the process's bound (`GATEWAY_MAX_SUBSCRIPTIONS`, the event bus's)
  gets an `error` message with `OVERLOADED` and `retryAfter`, as one past the per-socket cap;
  queries and mutations are not concerned. The subscription's own reservation stays the
  backstop, for a race at the bound: it fails once the stream runs, as a result.
- Each operation has a context of its own (`own_context`): strawberry makes one per socket,
  and its `ListingRequest` is one request's scope, so queries on one socket would otherwise
  be answered from what an earlier one had read.
- Variables nest at most `max_variable_depth` levels (`GATEWAY_MAX_VARIABLE_DEPTH`), else
  an `error` message with `BAD_USER_INPUT`. The token limit and every other check run in
  the schema's extensions, as for HTTP; a document that does not parse gets an `error`
  message with `GRAPHQL_PARSE_FAILED` (strawberry closed graphql-transport-ws sockets with
  4400 for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Final, cast

import orjson
from graphql import GraphQLError, get_operation_ast, parse
from graphql import OperationType as CoreOperationType
from starlette.websockets import WebSocketDisconnected as ClosedWebSocket
from starlette.websockets import WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.extensions import SchemaExtension
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from gateway.access.admission import AdmissionControl
from gateway.domain.errors import Overloaded
from gateway.graphql.context import GatewayContext
from gateway.graphql.request import RequestRefused, check_nesting

INIT_TIMEOUT_CODE: Final = 4408
INVALID_MESSAGE_CODE: Final = 4400
DUPLICATE_ID_CODE: Final = 4409
TOO_MANY_INITS_CODE: Final = 4429
MESSAGE_TOO_BIG_CODE: Final = 1009
TRY_AGAIN_LATER_CODE: Final = 1013

_OBJECT_FIELDS: Final = ("variables", "extensions")


# A close frame's reason is at most 123 bytes of UTF-8.
_MAX_REASON_BYTES: Final = 123


class InvalidMessage(Exception):
    """A message the protocol does not allow: the socket closes with `code` and the reason
    (cut to what a close frame holds: it may quote the client)."""

    def __init__(self, reason: str, code: int = INVALID_MESSAGE_CODE) -> None:
        super().__init__(reason)
        encoded = reason.encode()
        if len(encoded) > _MAX_REASON_BYTES:
            reason = encoded[: _MAX_REASON_BYTES - 3].decode(errors="ignore") + "…"
        self.reason = reason
        self.code = code


class OpenSockets:
    """The GraphQL WebSockets a process holds open, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


def _operations_refusal(running: int, view: Any) -> GraphQLError | None:
    """The error for one operation more than a socket may run at once."""
    limit: int = view.max_operations_per_socket
    if running < limit:
        return None
    return GraphQLError(
        f"at most {limit} operations at once on one WebSocket",
        extensions={"code": Overloaded.code},
    )


# --- messages ---------------------------------------------------------------------------------


class BoundedWebSocketAdapter(ASGIWebSocketAdapter):
    """Reads text messages of at most the view's `max_message_bytes`, decoded as strict JSON;
    anything else raises `InvalidMessage`."""

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        limit: int = getattr(self.view, "max_message_bytes", 0)
        while self.ws.application_state != WebSocketState.DISCONNECTED:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                raise InvalidMessage("WebSocket message type must be text")
            if limit and len(text) > limit:
                raise InvalidMessage("WebSocket message too big", MESSAGE_TOO_BIG_CODE)
            try:
                yield orjson.loads(text)
            except orjson.JSONDecodeError:
                raise InvalidMessage("WebSocket message must be valid JSON") from None

    async def send_json(self, message: Mapping[str, object]) -> None:
        # An operation may finish after its socket was closed (a malformed message, the
        # init deadline): nobody is there to read its answer.
        with contextlib.suppress(ClosedWebSocket):
            await super().send_json(message)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ClosedWebSocket):
            await super().close(code, reason)


def checked_message(message: object, *, types: Mapping[str, tuple[bool, bool]]) -> dict[str, Any]:
    """`message` if it is one object of a known `type` with the fields that type needs;
    `types` maps each type to (needs an `id`, carries an operation `payload`)."""
    if not isinstance(message, dict):
        raise InvalidMessage("WebSocket message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage("`type` must be a string")
    if kind not in types:
        raise InvalidMessage(f"Unknown message type: {kind}")
    needs_id, operation = types[kind]
    if needs_id and not isinstance(message.get("id"), str):
        raise InvalidMessage("`id` must be a string")
    payload = message.get("payload")
    if operation:
        if not isinstance(payload, dict):
            raise InvalidMessage("`payload` must be an object")
        query = payload.get("query")
        if not isinstance(query, str) or not query:
            raise InvalidMessage("`payload.query` must be a non-empty string")
        name = payload.get("operationName")
        if name is not None and not isinstance(name, str):
            raise InvalidMessage("`payload.operationName` must be a string")
        for name in _OBJECT_FIELDS:
            value = payload.get(name)
            if value is not None and not isinstance(value, dict):
                raise InvalidMessage(f"`payload.{name}` must be an object")
    elif payload is not None and not isinstance(payload, dict):
        raise InvalidMessage("`payload` must be an object")
    return message


def _share_text(message: dict[str, Any], view: Any) -> None:
    """Points an operation message's query at the parsed document's own text, when the app
    keeps one equal to it (`ParsedDocuments.shared_text`)."""
    known = getattr(view.schema, "known", None)
    payload = message.get("payload")
    if known is not None and isinstance(payload, dict) and isinstance(payload.get("query"), str):
        payload["query"] = known.documents.shared_text(payload["query"])


def _subscriptions_refusal(query: object, operation_name: object, view: Any) -> GraphQLError | None:
    """The error for a subscription one past the process's bound, before it starts; None
    while there is room (the usual case, which costs no parse)."""
    events = getattr(view, "events", None)
    if events is None or events.has_room() or not isinstance(query, str):
        return None
    if not _is_subscription(
        query, operation_name if isinstance(operation_name, str) else None, view
    ):
        return None
    try:
        events.check_room()
    except Overloaded as refused:
        return _overloaded(refused)
    return None


def _is_subscription(query: str, operation_name: str | None, view: Any) -> bool:
    """Whether `query`'s operation is a subscription (False for one that does not parse: its
    own run reports that)."""
    known = getattr(view.schema, "known", None)
    document = None if known is None else known.documents.get(query)
    if document is None:
        try:
            document = parse(query, no_location=True, max_tokens=getattr(known, "max_tokens", None))
        except GraphQLError:
            return False
    operation = get_operation_ast(document, operation_name)
    return operation is not None and operation.operation is CoreOperationType.SUBSCRIPTION


def _variables_refusal(variables: object, view: Any) -> GraphQLError | None:
    """The error for variables nested too deep, as HTTP refuses them."""
    try:
        check_nesting("variables", variables, max_depth=view.max_variable_depth)
    except RequestRefused as refused:
        return GraphQLError(refused.message, extensions={"code": refused.code})
    return None


# --- admission --------------------------------------------------------------------------------


class _Turn:
    """One operation's admission turn, given back once."""

    def __init__(self, control: AdmissionControl) -> None:
        self.control = control
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.control.leave()


# The turn of the WebSocket operation running in this task, for `SubscriptionTurns`.
_current_turn: ContextVar[_Turn | None] = ContextVar("websocket_turn", default=None)


async def _take_turn(control: AdmissionControl | None) -> _Turn | None:
    """A turn for the operation running in this task (`Overloaded` when refused). Each
    operation runs in its own task, so the turn is its own; the caller gives it back."""
    if control is None:
        return None
    await control.enter()
    turn = _Turn(control)
    _current_turn.set(turn)
    return turn


def _overloaded(refused: Overloaded) -> GraphQLError:
    retry_after = math.ceil(refused.retry_after)
    return GraphQLError(
        refused.message, extensions={"code": refused.code, "retryAfter": retry_after}
    )


def give_back_turn() -> None:
    """Gives back the admission turn of the WebSocket operation running in this task, if
    it holds one: a subscription that is set up waits without one."""
    turn = _current_turn.get()
    if turn is not None:
        turn.give_back()


class SubscriptionTurns(SchemaExtension):
    """A WebSocket subscription gives its admission turn back once it is set up: it was
    admitted for its parsing and validation, not for the time it waits for events."""

    def on_execute(self) -> Iterator[None]:
        turn = _current_turn.get()
        if turn is not None and self.execution_context.operation_type is (
            OperationType.SUBSCRIPTION
        ):
            turn.give_back()
        yield


# --- the two protocols ------------------------------------------------------------------------

_TRANSPORT_TYPES: Final = {
    "connection_init": (False, False),
    "ping": (False, False),
    "pong": (False, False),
    "subscribe": (True, True),
    "complete": (True, False),
}
_ANY_OPERATION: Final = (OperationType.QUERY, OperationType.MUTATION, OperationType.SUBSCRIPTION)
_LEGACY_TYPES: Final = {
    "connection_init": (False, False),
    "connection_terminate": (False, False),
    "start": (True, True),
    "stop": (True, False),
}


# The context of the WebSocket operation running in this task (each runs in its own).
_operation_context: ContextVar[GatewayContext | None] = ContextVar(
    "websocket_operation_context", default=None
)


def own_context(connection: GatewayContext) -> GatewayContext:
    """A context of the operation's own, from the socket's: strawberry makes one context per
    socket, and a `ListingRequest` is one request's scope (a history and a legacy answer are
    read once per request). Shared by every operation of the socket, a query answered from
    what an earlier one had read, however long ago, and never saw news."""
    scope = connection.listings
    return dataclasses.replace(
        connection,
        listings=scope.service.request(scope.caller),
        gathered=None,
        request_error=False,
    )


class _OperationScopes:
    """`context` is the running operation's own (`own_context`), and the socket's elsewhere
    (the handler's own messages, `connection_init`)."""

    _connection_context: GatewayContext

    @property
    def context(self) -> GatewayContext:
        return _operation_context.get() or self._connection_context

    @context.setter
    def context(self, value: GatewayContext) -> None:
        self._connection_context = value


class TransportWSHandler(_OperationScopes, BaseGraphQLTransportWSHandler[GatewayContext, None]):
    """graphql-transport-ws (the current protocol)."""

    async def handle(self) -> None:
        self.on_request_accepted()
        try:
            async for message in self.websocket.iter_json():
                checked = checked_message(message, types=_TRANSPORT_TYPES)
                if checked["type"] == "subscribe" and checked["id"] in self.operations:
                    # strawberry's own refusal quotes the id whole, past what a close frame
                    # holds.
                    raise InvalidMessage(
                        f"Subscriber for {checked['id']} already exists", DUPLICATE_ID_CODE
                    )
                if checked["type"] == "subscribe" and self.connection_acknowledged:
                    refusal = _operations_refusal(len(self.operations), self.view)
                    if refusal is not None:
                        await self.send_message(
                            {"type": "error", "id": checked["id"], "payload": [refusal.formatted]}
                        )
                        continue
                    _share_text(checked, self.view)
                await self.handle_message(cast(Any, checked))
        except InvalidMessage as invalid:
            await self.websocket.close(code=invalid.code, reason=invalid.reason)
        except WebSocketDisconnected:
            pass
        finally:
            await self.shutdown()

    async def run_operation(self, operation: Operation[GatewayContext, None]) -> None:
        view: Any = self.view
        refusal = _variables_refusal(operation.variables, view) or _subscriptions_refusal(
            operation.query, operation.operation_name, view
        )
        if refusal is not None:
            await operation.send_initial_errors([refusal])
            return
        try:
            turn = await _take_turn(view.admission)
        except Overloaded as refused:
            await operation.send_initial_errors([_overloaded(refused)])
            return
        # This task's own: strawberry reads `self.context` as the operation starts.
        _operation_context.set(own_context(self._connection_context))
        # No context manager around the run: its frame would wait as long as a subscription.
        try:
            await super().run_operation(operation)
        finally:
            if turn is not None:
                turn.give_back()

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        # A document that does not parse is the operation's error, not the socket's.
        return None


class LegacyWSHandler(_OperationScopes, BaseGraphQLWSHandler[GatewayContext, None]):
    """graphql-ws (the older subscriptions-transport-ws protocol)."""

    async def handle(self) -> None:
        timer = asyncio.create_task(self._close_unless_initialised())
        try:
            async for message in self.websocket.iter_json():
                checked = checked_message(message, types=_LEGACY_TYPES)
                self._check_state(checked)
                if checked["type"] == "start" and self.connection_acknowledged:
                    refusal = _operations_refusal(len(self.tasks), self.view)
                    if refusal is not None:
                        await self._send_error(checked["id"], refusal)
                        continue
                    _share_text(checked, self.view)
                await self.handle_message(cast(Any, checked))
        except InvalidMessage as invalid:
            await self.websocket.close(code=invalid.code, reason=invalid.reason)
        except WebSocketDisconnected:
            pass
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            if self.keep_alive_task:
                self.keep_alive_task.cancel()
                with contextlib.suppress(BaseException):
                    await self.keep_alive_task
            await self.cleanup()

    def _check_state(self, message: dict[str, Any]) -> None:
        if message["type"] == "connection_init" and self.connection_acknowledged:
            raise InvalidMessage("Too many initialisation requests", TOO_MANY_INITS_CODE)
        if message["type"] == "start" and message["id"] in self.tasks:
            raise InvalidMessage(
                f"Subscriber for {message['id']} already exists", DUPLICATE_ID_CODE
            )

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            await self.websocket.close(
                code=INIT_TIMEOUT_CODE, reason="Connection initialisation timeout"
            )

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        view: Any = self.view
        refusal = _variables_refusal(variables, view) or _subscriptions_refusal(
            query, operation_name, view
        )
        turn = None
        try:
            if refusal is not None:
                await self._send_error(operation_id, refusal)
                return
            turn = await _take_turn(view.admission)
            await self._run(operation_id, query, operation_name, variables)
        except Overloaded as refused:
            await self._send_error(operation_id, _overloaded(refused))
        except asyncio.CancelledError:
            await self.send_message({"type": "complete", "id": operation_id})
        finally:
            if turn is not None:
                turn.give_back()
            # As strawberry does when an operation ends: its id is free again.
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def _run(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        # strawberry's graphql-ws handler runs subscriptions only; the protocol carries
        # queries and mutations too, and graphql-transport-ws runs them: so does this one,
        # and a document refused by validation gets the same error on both.
        _operation_context.set(own_context(self._connection_context))
        results = await self.schema.stream(
            query=query,
            variable_values=variables,
            operation_name=operation_name,
            context_value=self.context,
            root_value=self.root_value,
            allowed_operation_types=_ANY_OPERATION,
        )
        self.subscriptions[operation_id] = cast(Any, results)
        first = True
        async for result in cast(AsyncGenerator[Any, None], results):
            if first and isinstance(result, PreExecutionError) and result.errors:
                await self._send_error(operation_id, result.errors[0])
                return
            await self.send_data_message(result, operation_id)
            first = False
        await self.send_message({"type": "complete", "id": operation_id})

    async def _send_error(self, operation_id: str, error: GraphQLError) -> None:
        await self.send_message(
            {"type": "error", "id": operation_id, "payload": cast(Any, error.formatted)}
        )
