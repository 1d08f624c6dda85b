"""Starts the real gateway (uvicorn, real sockets) against a running simulator."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from gateway.demo import demo_settings
from gateway.lifespan import Started
from gateway.simulator import RunningSimulator, Simulator
from gateway.web import create_app


@dataclass
class RunningGateway:
    url: str
    client: httpx.AsyncClient
    running_sim: RunningSimulator
    app: Any

    @property
    def sim(self) -> Simulator:
        return self.running_sim.sim

    async def query(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST a query; returns the decoded body (asserting a JSON answer)."""
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.headers["content-type"].startswith("application/"), response.text
        body: dict[str, Any] = response.json()
        return body

    def calls(self, upstream: str, endpoint: str | None = None) -> int:
        return self.sim.state.calls(upstream, endpoint)

    @property
    def grpc_address(self) -> str:
        """Where the gRPC server listens (started with `run_gateway(..., grpc=True)`)."""
        return str(self.app.state.grpc.address)


@asynccontextmanager
async def serve_app(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port (or `sock`); yields its base URL.

    The socket is bound (port 0) and listening before uvicorn starts, and the URL is
    handed out once the app's lifespan startup has completed: nothing is polled.
    """
    listener = sock if sock is not None else socket.create_server(("127.0.0.1", 0))
    started = Started(app)
    server = uvicorn.Server(uvicorn.Config(started, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await started.wait_or_fail(task)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        listener.close()


@asynccontextmanager
async def run_gateway(
    running_sim: RunningSimulator, *, public: bool = False, grpc: bool = False, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    """The gateway in oauth mode for agency-1, pointed at `running_sim`.

    With `public`, its own address is its GATEWAY_PUBLIC_URL (the port is bound first), so
    the simulator can post webhooks to it. With `grpc`, its gRPC server too, on a free port
    (`app.state.grpc.address`).
    """
    if grpc:
        overrides.setdefault("grpc_port", 0)
    with contextlib.ExitStack() as stack:
        sock = None
        if public:
            sock = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
            overrides.setdefault("public_url", f"http://127.0.0.1:{sock.getsockname()[1]}")
        settings = demo_settings(running_sim, **overrides)
        app = create_app(settings, grpc=grpc)
        async with (
            serve_app(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            yield RunningGateway(url=url, client=client, running_sim=running_sim, app=app)
