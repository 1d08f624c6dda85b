"""The per-request GraphQL context: who is asking and that request's service scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from gateway.live.bus import EventBus
from gateway.live.changes import ChangeFeed
from gateway.live.webhooks import Webhooks
from gateway.service.listings import ListingRequest


@dataclass(slots=True)
class GatewayContext:
    request: Request | WebSocket
    response: Response | WebSocket | None
    listings: ListingRequest
    max_listings: int
    events: EventBus
    webhooks: Webhooks
    # Set when the request was refused before execution (parse, validation, arguments):
    # the HTTP edge answers such requests with 400 under graphql-response+json.
    request_error: bool = False
    # What the gather step read per root response key, for the root resolvers to project.
    gathered: dict[str, Any] | None = None
    # Listing changes of both providers (`listingChanged`).
    changes: ChangeFeed | None = None
