"""The simulator's aiohttp Application factory and the `Simulator` handle that serves it.

    sim = Simulator(seed=7)
    async with sim.serve() as running:        # a real server on a free loopback port
        settings = ..., running.v3_url, running.token_url, running.legacy_url

One server answers every path: `/oauth/token`, `/v3/...`, `/legacy/rest/v1/...` and `/_sim/...`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.log import access_logger

from . import controls, legacy, v3
from .data import Catalog, generate
from .mover import Mover
from .pipeline import STATE_KEY, v3_error
from .state import State

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator being served; the URLs are what a gateway's settings need."""

    sim: Simulator
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    @property
    def v3_url(self) -> str:
        return f"{self.base_url}/v3"

    @property
    def legacy_url(self) -> str:
        return f"{self.base_url}{legacy.PREFIX}"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}{controls.PREFIX}"


class Simulator:
    """Both upstream APIs over real HTTP, with deterministic data from `seed`.

    `latency_ms` delays every answer; `move_every_s` (demo mode) advances a few listings one
    lifecycle step every so many seconds while the app runs.
    """

    def __init__(
        self, seed: int = 7, latency_ms: float = 0, move_every_s: float | None = None
    ) -> None:
        self.seed = seed
        self.data: Catalog = generate(seed)
        self.state = State(self.data, latency_ms=latency_ms)
        self.mover = Mover(self.state, seed=seed, every_s=move_every_s)

    def app(self) -> web.Application:
        """A new Application over this simulator's state (serve one at a time)."""
        app = web.Application(middlewares=[_json_not_found])
        app[STATE_KEY] = self.state
        app[controls.MOVER_KEY] = self.mover
        app.add_routes(v3.routes)
        app.add_routes(legacy.routes)
        app.add_routes(controls.routes)
        app.cleanup_ctx.append(self._lifecycle)

        async def release_hangs(_: web.Application) -> None:
            # on_shutdown runs before the server waits for in-flight handlers.
            self.state.close()

        app.on_shutdown.append(release_hangs)
        return app

    async def _lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession()
        self.state.open(session)
        mover = asyncio.create_task(self.mover.run(), name="simulator-mover")
        try:
            yield
        finally:
            mover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mover
            self.state.close()
            await session.close()

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, log_access: bool = False
    ) -> AsyncIterator[RunningSimulator]:
        """Serve on `host:port` (0 picks a free port) until the block exits.

        `log_access` logs one line per request to the `aiohttp.access` logger (no headers).
        """
        runner = web.AppRunner(
            self.app(),
            # A client that gives up (its timeout) cancels the handler, so a hanging fault
            # does not outlive it.
            handler_cancellation=True,
            shutdown_timeout=5,
            access_log=access_logger if log_access else None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_port = runner.addresses[0][1]
            yield RunningSimulator(self, host, int(bound_port))
        finally:
            await runner.cleanup()


@web.middleware
async def _json_not_found(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Unknown paths and methods answer in the shape of the API they fall under."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        if request.path.startswith(legacy.PREFIX):
            errors = [{"code": exc.status, "message": exc.reason}]
            body = {"result": False, "errors": errors, "data": []}
            return web.json_response(body, status=exc.status, headers=headers)
        if request.path.startswith(("/v3/", "/oauth/")):
            return v3_error(exc.status, exc.reason, headers)
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
