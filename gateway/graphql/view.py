"""The `/graphql` HTTP and WebSocket endpoint: strawberry's ASGI view, made to follow
the GraphQL-over-HTTP spec where plain strawberry does not.

- A caller that accepts `application/graphql-response+json` gets that media type, and
  a request refused before execution (parse, validation, variables, arguments) answers
  400 without `data`; plain `application/json` callers get 200 with `errors`.
- A mutation sent over GET answers 405, not 400.
- Responses are serialised with orjson.
- A POSTed query whose document the app already knows (`gateway.graphql.known`) is answered
  from `__call__` as two ASGI messages: no strawberry hooks, sub-response or Starlette
  response object (4-7 % of a one-listing request's CPU).
- A malformed request (not UTF-8 JSON, not one object, wrong content type, variables nested
  too deep) is refused by `gateway.graphql.request` with a 4xx and a coded GraphQL error.
- A browser asking for `/graphql` gets our GraphiQL page, whose assets the gateway serves
  itself (the HTTP edge hands the view its `ide_page`), not strawberry's, which loads them
  from a CDN.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

import orjson
from cross_web import HTTPException
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from gateway.access.admission import AdmissionControl
from gateway.domain.models import caller_of
from gateway.graphql.context import GatewayContext
from gateway.graphql.errors import REQUEST_REFUSALS, translate
from gateway.graphql.persisted import PersistedDocuments
from gateway.graphql.request import (
    RequestRefused,
    check_content_type,
    check_params,
    decode_json,
    is_graphiql_page,
)
from gateway.graphql.websocket import (
    TRY_AGAIN_LATER_CODE,
    BoundedWebSocketAdapter,
    LegacyWSHandler,
    OpenSockets,
    TransportWSHandler,
)
from gateway.live.bus import EventBus
from gateway.live.changes import ChangeFeed
from gateway.live.webhooks import Webhooks
from gateway.observability.record import current_record
from gateway.observability.spans import inner_span
from gateway.service.listings import ListingService

GRAPHQL_RESPONSE = "application/graphql-response+json"
_GRAPHQL_RESPONSE_TYPE: Final = GRAPHQL_RESPONSE.encode()
_JSON_TYPE: Final = b"application/json"
# The name of a document's first operation, for logs and metrics when the caller names none.
SUBSCRIPTIONS_OVER_WEBSOCKET: Final = (
    "subscriptions are served over WebSocket at /graphql (graphql-transport-ws or graphql-ws)"
)
_OPERATION_NAME: Final = re.compile(r"\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")


def _wants_graphql_response(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return GRAPHQL_RESPONSE in accept


class GatewayGraphQL(GraphQL[GatewayContext, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler
    websocket_adapter_class = BoundedWebSocketAdapter

    def __init__(
        self,
        schema: Any,
        service: ListingService,
        *,
        events: EventBus,
        webhooks: Webhooks,
        changes: ChangeFeed | None = None,
        max_variable_depth: int = 16,
        max_message_bytes: int = 1024 * 1024,
        max_operations_per_socket: int = 20,
        max_sockets: int = 5000,
        admission: AdmissionControl | None = None,
        documents: PersistedDocuments | None = None,
        tracer: trace.Tracer | None = None,
        ide_page: Callable[[], Response] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, **kwargs)
        self.ide_page = ide_page
        self.documents = documents if documents is not None else PersistedDocuments()
        self.service = service
        self.events = events
        self.webhooks = webhooks
        self.changes = changes
        self.max_variable_depth = max_variable_depth
        # WebSocket operations (`gateway.graphql.websocket`): their messages are bounded as
        # HTTP bodies, and they take their turns from the budget HTTP requests draw on.
        self.max_message_bytes = max_message_bytes
        # Refused with the gateway's own OVERLOADED error (gateway.graphql.websocket), not
        # strawberry's uncoded one.
        self.max_operations_per_socket = max_operations_per_socket
        self.max_subscriptions_per_connection = None
        self.sockets = OpenSockets(max_sockets)
        self.admission = admission
        self.tracer = tracer or trace.NoOpTracer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        known = await self._run_known(request)
        if known is not None:
            status, media_type, body = known
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-length", str(len(body)).encode()),
                        (b"content-type", media_type),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        # What strawberry's own __call__ does, with the request whose body is read already.
        try:
            response = await self.run(request)
        except HTTPException as exc:
            response = PlainTextResponse(exc.reason, status_code=exc.status_code)
        await response(scope, receive, send)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        if isinstance(request, Request):
            try:
                return await self._run_http(request, context, root_value)
            finally:
                # The context refers to the request and the request's state to the context:
                # a cycle, which would keep everything the request read alive until a full
                # collection, and a serving process runs those rarely (process/garbage.py).
                request.scope.get("state", {}).pop("gateway_context", None)
        if isinstance(request, WebSocket):
            if not self.sockets.take():
                # Accepted first: a close before the handshake is an HTTP 403 to the client,
                # which says nothing of trying again.
                await request.accept(subprotocol=await self.pick_websocket_subprotocol(request))
                await request.close(TRY_AGAIN_LATER_CODE, "Too many WebSocket connections")
                return request
            try:
                return await super().run(request, context, root_value)
            finally:
                self.sockets.give_back()
        return await super().run(request, context, root_value)

    async def _run_http(self, request: Request, context: Any, root_value: Any) -> Any:
        try:
            return await super().run(request, context, root_value)
        except RequestRefused as refused:
            record = current_record.get()
            if record is not None:
                record.outcome = "rejected"
            return refusal_response(request, refused)

    async def _run_known(self, request: Request) -> tuple[int, bytes, bytes] | None:
        """(status, media type, body) of a POSTed query whose document the app already
        knows, answered without strawberry's HTTP plumbing and extension hooks
        (`gateway.graphql.known`) nor a response object; None for anything else, which then
        takes the whole path (and gets its refusals there)."""
        try:
            check_content_type(request.headers.get("content-type"))
            params = check_params(
                self.decode_json(await request.body()), max_depth=self.max_variable_depth
            )
            query = self.documents.resolve(params)
        except RequestRefused:
            return None
        variables = params.get("variables")
        name = params.get("operationName")
        schema: Any = self.schema
        document = schema.known_document(query, variables, name)
        if document is None:
            return None
        context = self._context(request, None)
        operation = _name_of(name, query)
        record = current_record.get()
        if record is not None:
            record.operation = operation
        with inner_span(self.tracer, f"graphql {operation}", {"graphql.operation.name": operation}):
            result: ExecutionResult = await schema.execute_document(
                document, variable_values=variables, context_value=context, operation_name=name
            )
        processed = self._processed(result, context)
        if _wants_graphql_response(request):
            status = 200 if "data" in processed else 400
            return status, _GRAPHQL_RESPONSE_TYPE, orjson.dumps(processed)
        return 200, _JSON_TYPE, orjson.dumps(processed)

    def decode_json(self, data: str | bytes) -> object:
        return decode_json(data)

    async def parse_http_body(self, request: Any) -> GraphQLRequestData:
        if request.method == "GET":
            data: object = self.parse_query_params(request.query_params)
        else:
            check_content_type(request.content_type)
            data = self.decode_json(await request.get_body())
        params = check_params(data, max_depth=self.max_variable_depth)
        return GraphQLRequestData(
            query=self.documents.resolve(params),
            variables=params.get("variables"),
            operation_name=params.get("operationName"),
            extensions=params.get("extensions"),
            protocol="http",
        )

    def should_render_graphql_ide(self, request: Any) -> bool:
        # The one predicate the client-token guard also lets through without a token.
        return bool(self.graphql_ide) and is_graphiql_page(
            request.method, request.query_params, request.headers.get("accept", "")
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        if self.ide_page is None:
            return Response("GraphiQL is not served here", status_code=404)
        return self.ide_page()

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GatewayContext:
        context = self._context(request, response)
        if isinstance(request, Request):
            request.state.gateway_context = context
        return context

    def _context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> GatewayContext:
        return GatewayContext(
            request=request,
            response=response,
            listings=self.service.request(caller_of(request.headers)),
            max_listings=self.service.max_listings,
            events=self.events,
            webhooks=self.webhooks,
            changes=self.changes,
        )

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        if isinstance(request, Request) and _wants_graphql_response(request):
            sub_response.headers["content-type"] = GRAPHQL_RESPONSE
        return sub_response

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        operation = _operation_name(kwargs.get("request_data"))
        record = current_record.get()
        if record is not None:
            record.operation = operation
        try:
            with inner_span(
                self.tracer, f"graphql {operation}", {"graphql.operation.name": operation}
            ):
                # A POST was offered to the known-document path already (`_run_known`).
                if getattr(kwargs.get("request_adapter"), "method", "") != "POST":
                    request_data = kwargs.get("request_data")
                    schema: Any = self.schema
                    known: ExecutionResult | None = await schema.execute_known(
                        getattr(request_data, "query", None),
                        variable_values=getattr(request_data, "variables", None),
                        context_value=kwargs.get("context"),
                        operation_name=getattr(request_data, "operation_name", None),
                    )
                    if known is not None:
                        return known
                return await super().execute_single(*args, **kwargs)
        except HTTPException as exc:
            # strawberry's refusals of the request's shape, answered as JSON with the code
            # the same refusal carries over WebSocket.
            cause = exc.__cause__
            if isinstance(cause, InvalidOperationTypeError):
                adapter = kwargs.get("request_adapter")
                if cause.operation_type is OperationType.SUBSCRIPTION:
                    raise RequestRefused(400, SUBSCRIPTIONS_OVER_WEBSOCKET) from cause
                if getattr(adapter, "method", "") == "GET":
                    raise RequestRefused(
                        405, "Mutations must be sent with POST.", headers={"Allow": "POST"}
                    ) from cause
            if isinstance(cause, REQUEST_REFUSALS):
                raise RequestRefused(exc.status_code, exc.reason) from cause
            raise

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        return self._processed(result, getattr(request.state, "gateway_context", None))

    def _processed(
        self, result: ExecutionResult, context: GatewayContext | None
    ) -> GraphQLHTTPResponse:
        if result.errors:
            # A parse error escapes the schema's ErrorCodes extension (strawberry raises it
            # from the parser cache's hook, outside the operation): code it here as well.
            result.errors = [translate(error) for error in result.errors]
        processed = process_result(result)
        if (context is not None and context.request_error) or (
            result.data is None and _is_request_error(result)
        ):
            processed.pop("data", None)
        if context is not None and context.listings.stale:
            # Stale-if-error: say which classifieds were answered from a past-TTL page.
            processed["extensions"] = {
                **(processed.get("extensions") or {}),
                "stale": [
                    {"classifiedId": classified_id, "ageSeconds": math.floor(age)}
                    for classified_id, age in sorted(context.listings.stale.items())
                ],
            }
        record = current_record.get()
        if record is not None and result.errors:
            record.outcome = "partial" if processed.get("data") is not None else "error"
        return processed

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        graphql_response = sub_response.headers.get("content-type") == GRAPHQL_RESPONSE
        status = 200
        if graphql_response and isinstance(response_data, dict) and "data" not in response_data:
            status = 400
        response = Response(
            orjson.dumps(response_data),
            status_code=sub_response.status_code or status,
            media_type=GRAPHQL_RESPONSE if graphql_response else "application/json",
        )
        for key, value in sub_response.headers.items():
            if key.lower() not in ("content-type", "content-length"):
                response.headers[key] = value
        return response

    def encode_json(self, data: object) -> str:
        # Used for WebSocket messages: bytes would go out as binary frames, which the
        # GraphQL-over-WebSocket protocols do not allow and browser clients cannot parse.
        return orjson.dumps(data).decode()


def refusal_response(request: Request, refused: RequestRefused) -> Response:
    """The answer to a request refused before execution, in the media type it accepts."""
    graphql_response = _wants_graphql_response(request)
    status = refused.status
    if status == 200 and graphql_response:
        status = 400
    return Response(
        orjson.dumps(refused.body()),
        status_code=status,
        media_type=GRAPHQL_RESPONSE if graphql_response else "application/json",
        headers=refused.headers,
    )


def _operation_name(request_data: Any) -> str:
    return _name_of(
        getattr(request_data, "operation_name", None), getattr(request_data, "query", None)
    )


def _name_of(name: object, query: object) -> str:
    """The operation's name for metrics and logs: the one asked for, else the document's
    first, else "anonymous"."""
    if isinstance(name, str) and name:
        return name[:100]
    if isinstance(query, str):
        match = _OPERATION_NAME.search(query[:2000])
        if match:
            return match[1][:100]
    return "anonymous"


def _is_request_error(result: ExecutionResult) -> bool:
    # Parse and validation errors have no path: nothing was executed.
    return bool(result.errors) and all(error.path is None for error in result.errors or ())
