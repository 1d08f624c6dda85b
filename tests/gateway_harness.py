"""Starts the real gateway (uvicorn, real sockets) against a running simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app, server_options
from gateway.config import Settings
from gateway.infra.listener import bind_listener
from gateway.infra.started import Started
from gateway.process.demo import demo_settings
from gateway.simulator import (
    SIM_AUDIENCE,
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    SIM_LEGACY_API_KEY,
    RunningSimulator,
    Simulator,
)
from gateway.upstreams import RetryPolicy

# httpx loads the system CA bundle for every client it makes (~25 ms of CPU); the tests
# speak plain HTTP on loopback, so one context is made once and shared.
LOOPBACK_TLS = ssl.create_default_context()

# For upstream clients built directly: retries are made and counted without the pause
# between them, which is tested with a recorded sleep (test_http_errors.py).
NO_PAUSE = RetryPolicy(backoff_s=0)


class PromptServer(uvicorn.Server):
    """uvicorn, stopped as soon as asked.

    uvicorn looks at `should_exit` every 100 ms and sleeps another 100 ms before it waits
    for connections to close; a suite that starts and stops hundreds of servers spends a
    minute in those naps. `stop()` wakes the main loop at once, and shutdown waits only
    while connections or requests remain, in the same order as uvicorn's own.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the Date header once
        await self._stop.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        # uvicorn signals neither event; a connection leaves the set when its transport closes.
        while self.server_state.connections or self.server_state.tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


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
async def serve_app(
    app: Any, sock: socket.socket | None = None, **options: Any
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port (or `sock`); yields its base URL.

    The socket is bound (port 0) and listening before uvicorn starts, and the URL is
    handed out once the app's lifespan startup has completed: nothing is polled. `options`
    are more `uvicorn.Config` arguments (`gateway.app.server_options`).
    """
    listener = sock if sock is not None else bind_listener("127.0.0.1", 0)
    started = Started(app)
    server = PromptServer(uvicorn.Config(started, log_level="warning", lifespan="on", **options))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await started.wait_or_fail(task)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.stop()
        await task
        listener.close()


def settings_for(running_sim: RunningSimulator, **overrides: Any) -> Settings:
    """`demo_settings` without the pause between retries.

    Retries still happen and are counted; the wait between them is tested with an injected
    sleep (test_http_errors.py) instead of being napped through in every retrying test.
    """
    overrides.setdefault("upstream_backoff_s", 0.0)
    # On a loaded machine a process may not run for half a second (the default): Redis then
    # counts as down and replicas stop sharing, which only the tests that stop Redis expect
    # (a stopped Redis refuses at once, whatever the timeout).
    overrides.setdefault("redis_timeout_s", 10.0)
    return demo_settings(running_sim, **overrides)


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
            sock = stack.enter_context(bind_listener("127.0.0.1", 0))
            overrides.setdefault("public_url", f"http://127.0.0.1:{sock.getsockname()[1]}")
        settings = settings_for(running_sim, **overrides)
        app = create_app(settings, grpc=grpc)
        async with (
            serve_app(app, sock, **server_options(settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=30, verify=LOOPBACK_TLS) as client,
        ):
            yield RunningGateway(url=url, client=client, running_sim=running_sim, app=app)


def serve_env(running_sim: RunningSimulator, **extra: str) -> dict[str, str]:
    """The environment of a `gateway serve` process wired to `running_sim` (agency-1, ports 0),
    without the caller's own GATEWAY_* and OTEL_* variables; `extra` adds or replaces."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env |= {
        "GATEWAY_V3_URL": running_sim.v3_url,
        "GATEWAY_V3_TOKEN_URL": running_sim.token_url,
        "GATEWAY_V3_CLIENT_ID": SIM_CLIENT_ID,
        "GATEWAY_V3_CLIENT_SECRET": SIM_CLIENT_SECRET,
        "GATEWAY_V3_AUDIENCE": SIM_AUDIENCE,
        "GATEWAY_V3_INTERMEDIARY_ID": "agency-1",
        "GATEWAY_LEGACY_URL": running_sim.legacy_url,
        "GATEWAY_LEGACY_API_KEY": SIM_LEGACY_API_KEY,
        "GATEWAY_HTTP_PORT": "0",  # the banner names the port it bound
        "GATEWAY_GRPC_PORT": "0",
    }
    return env | extra


async def read_until(stream: asyncio.StreamReader, marker: str) -> str:
    """A child's output up to and including the line holding `marker`."""
    seen = ""
    async with asyncio.timeout(30):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"stream ended before {marker!r}:\n{seen}")
            seen += line.decode()
    return seen
