"""One gateway process serving HTTP (and gRPC) on a listener it was handed.

`serve_on(settings, listener)` is what `gateway serve` runs in its only process, and what
each worker of `gateway serve --workers N` runs in its own (`gateway.process.supervisor`). The stop is
graceful: at the first SIGTERM or SIGINT `/readyz` answers 503 and gRPC health says
NOT_SERVING while uvicorn closes the listener and lets requests in flight finish (within
`GATEWAY_SHUTDOWN_GRACE_S`); a second SIGINT stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app, server_options
from gateway.config import Settings
from gateway.process.garbage import tune_for_serving


class GatewayServer(uvicorn.Server):
    """uvicorn, telling the app that it stops before it drains, and saying when it serves."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        app: Starlette,
        on_serving: Callable[[], None] | None,
        parent_sentinel: int | None,
    ) -> None:
        super().__init__(config)
        self._app = app
        self._on_serving = on_serving
        self._parent_sentinel = parent_sentinel

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # /readyz answers 503 from the first signal on, while in-flight requests finish.
        state = self._app.state
        state.shutting_down = True
        if getattr(state, "grpc", None) is not None:
            state.grpc.begin_shutdown()  # gRPC health says NOT_SERVING as well
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        tune_for_serving()
        if self._parent_sentinel is not None:
            # Readable once the supervising process is gone, however it ended: a worker
            # must not go on serving on its own.
            sentinel = self._parent_sentinel
            loop = asyncio.get_running_loop()

            def orphaned() -> None:
                loop.remove_reader(sentinel)
                self.handle_exit(signal.SIGTERM, None)

            loop.add_reader(sentinel, orphaned)
        if self._on_serving is not None:
            self._on_serving()


def serve_on(
    settings: Settings,
    listener: socket.socket,
    *,
    log_level: str,
    shared_grpc_port: bool = False,
    on_serving: Callable[[], None] | None = None,
    parent_sentinel: int | None = None,
) -> bool:
    """Serve the gateway on `listener` until a stop signal; returns after a graceful stop,
    True, or False at once if the app could not start.

    `shared_grpc_port`: other processes serve gRPC on the same port (SO_REUSEPORT).
    `on_serving` is called once the app has started and accepts connections;
    `parent_sentinel`, a file descriptor that becomes readable when the supervising process
    ends, stops this one gracefully then.
    """
    app = create_app(settings, grpc=True, shared_grpc_port=shared_grpc_port)
    server = GatewayServer(
        uvicorn.Config(
            app,
            log_level=log_level,
            lifespan="on",
            log_config=None,  # the root logger's JSON handler takes uvicorn's records too
            access_log=False,  # the gateway writes its own line per request
            timeout_graceful_shutdown=settings.shutdown_grace_s,
            **server_options(settings),
        ),
        app=app,
        on_serving=on_serving,
        parent_sentinel=parent_sentinel,
    )
    # uvicorn re-raises the signal it stopped for; after a graceful stop, SIGTERM and
    # Ctrl-C are a normal end of the process (exit status 0), not a kill.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listener])
    return server.started
