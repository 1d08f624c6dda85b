"""The GraphQL-over-WebSocket handlers of `/graphql`: strawberry's, with the bounds HTTP has.

- `connection_init` within the view's `connection_init_wait_timeout`
  (`GATEWAY_WS_INIT_TIMEOUT_S`), else the socket is closed with 4408 — on both protocols:
  strawberry's graphql-transport-ws handler has this timeout, its graphql-ws handler none
  (a socket that never sent `connection_init` stayed open for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from gateway.graphql.context import GatewayContext

INIT_TIMEOUT_CODE: Final = 4408


class TransportWSHandler(BaseGraphQLTransportWSHandler[GatewayContext, None]):
    """graphql-transport-ws (the current protocol)."""


class LegacyWSHandler(BaseGraphQLWSHandler[GatewayContext, None]):
    """graphql-ws (the older subscriptions-transport-ws protocol)."""

    async def handle(self) -> None:
        timer = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            await self.websocket.close(
                code=INIT_TIMEOUT_CODE, reason="Connection initialisation timeout"
            )
