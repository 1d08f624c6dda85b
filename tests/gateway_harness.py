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
    """Serve an ASGI app with uvicorn on a free loopback port (or `sock`); yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=None if sock is None else [sock]))
    while not server.started:  # uvicorn offers no event to wait on
        if task.done():
            await task
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


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
