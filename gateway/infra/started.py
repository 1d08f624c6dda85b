"""A readiness signal for an ASGI app served by uvicorn.

uvicorn sets `Server.started` but offers nothing to await. `Started` wraps an app and
sets an event when the app's lifespan startup has completed; the caller binds and
listens on its socket before serving (port 0 for any free port), so connections made
once the event is set wait in the socket's backlog instead of being refused.

    started = Started(app)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    await started.wait_or_fail(serving)
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Started:
    """`app`, plus `ready`: set once its lifespan startup has completed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ready = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def signalling_send(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                self.ready.set()

        await self.app(scope, receive, signalling_send)

    async def wait_or_fail(self, serving: asyncio.Task[Any]) -> None:
        """Until the app has started; re-raises (or raises) if `serving` ends first."""
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({ready, serving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self.ready.is_set():
            await serving  # re-raise why it could not start
            raise RuntimeError("the app stopped before its startup completed")
