"""`gateway demo`: the simulator and the gateway wired to it, in one process.

The example query is built from the simulator's seeded catalog, so the README's copy
of it (checked by a test) names listings that exist on a fresh demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import uvicorn

from gateway.app import create_app, server_options
from gateway.config import Settings, V3AuthMode, load_settings
from gateway.infra.listener import bind_listener
from gateway.infra.started import Started
from gateway.process.garbage import tune_for_serving
from gateway.simulator import (
    SIM_AUDIENCE,
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    SIM_LEGACY_API_KEY,
    Simulator,
)
from gateway.simulator.app import RunningSimulator
from gateway.simulator.data import Catalog

DEMO_SEED = 7
DEMO_TENANT = "agency-1"
DEMO_LISTINGS = 3


def demo_refs(catalog: Catalog, count: int = DEMO_LISTINGS) -> list[tuple[str, int, int]]:
    """The first listings of the demo tenant that exist on both portal families."""
    refs = [
        (listing.classified_id, listing.user_id, listing.ad_id)
        for listing in catalog.listings
        if catalog.tenant_of(listing.classified_id) == DEMO_TENANT
    ]
    return refs[:count]


def demo_query(catalog: Catalog) -> str:
    """A ready query showing a few listings with both providers' portals."""
    refs = ",\n".join(
        f'    {{classifiedId: "{cid}", legacy: {{userId: {user}, adId: {ad}}}}}'
        for cid, user, ad in demo_refs(catalog)
    )
    return (
        "query Demo {\n"
        f"  listings(refs: [\n{refs}\n  ]) {{\n"
        "    id\n"
        "    state\n"
        "    portals { portal provider state since actionRequired }\n"
        "    classified { latestStatus { status subStatus message date } }\n"
        "    legacy { portals { portal publish { active online remoteAdId } } }\n"
        "  }\n"
        "}\n"
    )


DEMO_SUBSCRIPTION = """\
subscription Live {
  classifiedStatusChanged {
    classifiedId
    receivedAt
    status { status subStatus message date }
    listing { state portals { portal state since } }
  }
}
"""


def board_refs(catalog: Catalog) -> tuple[str, ...]:
    """The demo's listings in the board's ref syntax (URL `?ref=`, `GATEWAY_BOARD_REFS`)."""
    return tuple(f"{cid}+{user}:{ad}" for cid, user, ad in demo_refs(catalog))


def demo_settings(running: RunningSimulator, **overrides: Any) -> Settings:
    """Settings that point the gateway at a running simulator, in `oauth` mode."""
    values: dict[str, Any] = {
        "v3_url": running.v3_url,
        "v3_auth": V3AuthMode.OAUTH,
        "v3_token_url": running.token_url,
        "v3_client_id": SIM_CLIENT_ID,
        "v3_client_secret": SIM_CLIENT_SECRET,
        "v3_audience": SIM_AUDIENCE,
        "v3_intermediary_id": DEMO_TENANT,
        "legacy_url": running.legacy_url,
        "legacy_api_key": SIM_LEGACY_API_KEY,
        "introspection": True,  # the playground needs it, whatever the environment says
    }
    values.update(overrides)
    return load_settings(**values)


async def run_demo(
    *,
    host: str,
    port: int,
    sim_port: int,
    grpc_port: int = 0,
    move_every_s: float | None,
    out: TextIO = sys.stdout,
) -> None:
    # Bound before anything starts, so a busy port is one clear line, not a traceback.
    try:
        listener = bind_listener(host, port)
    except OSError as exc:
        reason = "in use" if exc.errno == errno.EADDRINUSE else "unavailable"
        raise DemoError(f"{host}:{port} is {reason}; pick another with --port") from None
    _check_free(host, grpc_port, "--grpc-port")
    simulator = Simulator(seed=DEMO_SEED, move_every_s=move_every_s)
    print("Starting the upstream simulator…", file=out, flush=True)
    async with simulator.serve(host="127.0.0.1", port=sim_port) as running:
        print(f"  simulator: {running.base_url} (V3 and legacy APIs)", file=out, flush=True)
        bound = listener.getsockname()[1]
        # The simulator posts its webhooks to this gateway's own receiver.
        own_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        own_host = f"[{own_host}]" if ":" in own_host else own_host
        settings = demo_settings(
            running,
            host=host,
            http_port=bound,
            public_url=f"http://{own_host}:{bound}",
            webhook_subscribe=True,
            grpc_port=grpc_port,
            board_refs=board_refs(simulator.data),
        )
        app = create_app(settings, grpc=True)
        started = Started(app)
        server = _Server(
            uvicorn.Config(
                started,
                host=host,
                port=port,
                log_level="warning",
                lifespan="on",
                **server_options(settings),
            )
        )
        loop = asyncio.get_running_loop()

        def stop() -> None:
            if getattr(app.state, "grpc", None) is not None:
                app.state.grpc.begin_shutdown()  # NOT_SERVING while the HTTP side drains
            server.request_exit()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            await started.wait_or_fail(serving)
        except RuntimeError:
            raise DemoError("the gateway did not start") from None
        tune_for_serving()
        base = f"http://{host}:{bound}"
        print(f"Gateway ready. GraphiQL: {base}/graphql", file=out)
        print(f"  status board: {base}/board", file=out)
        grpc_address = app.state.grpc.address
        print(f"gRPC: {grpc_address} (listing.v1.ListingStatusService, reflection on)", file=out)
        print(
            f"Live status: the simulator posts every new status of {DEMO_TENANT} to the gateway;"
            " watch them with this subscription:\n",
            file=out,
        )
        print(DEMO_SUBSCRIPTION, file=out)
        print("Paste this query into GraphiQL:\n", file=out)
        print(demo_query(simulator.data), file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        await serving
    print("Stopped.", file=out, flush=True)


def _check_free(host: str, port: int, option: str) -> None:
    """A busy port is one clear line, not a traceback from deep inside the server."""
    if port == 0:
        return
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        reason = "in use" if exc.errno == errno.EADDRINUSE else "unavailable"
        raise DemoError(f"{host}:{port} is {reason}; pick another with {option}") from None


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured Ctrl-C when it stops; the demo stops the simulator
    after the gateway instead, so it handles the signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True


class DemoError(Exception):
    """The demo cannot start; the message is one line for the command line."""
