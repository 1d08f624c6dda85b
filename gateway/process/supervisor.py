"""`gateway serve --workers N`: N worker processes, each listening on the one port.

The parent reserves the HTTP and gRPC ports once with SO_REUSEPORT (bound, not listening, so
port 0 and the banner work as with one process); then it starts N workers with
multiprocessing's *forkserver* method. The fork server is a fresh interpreter that imports
the libraries every worker needs once (`PRELOAD`: pydantic, graphql-core, strawberry,
uvicorn, ~0.5 s of CPU with bytecode compiled), then forks each worker from that state; a
worker imports the rest (~0.1 s, gRPC among it) and builds its own app (runtime, sessions, tracer provider,
gRPC server). Nothing that holds threads or sockets exists before the fork: gRPC must not
be loaded in a process that forks (its own guidance), and OpenTelemetry's exporters and
the app are made in the worker. So N workers import once, not N times, and a worker that
dies is replaced in a fraction of the time. Every worker listens on both ports with a socket of its own
(SO_REUSEPORT), and the kernel spreads new connections over the workers' sockets. With one
socket shared by all, whichever worker woke first accepted a whole burst: 32 keep-alive
connections all landed on one worker in 3 of 6 benchmark runs. The price: a worker that
hangs still gets its share of new connections until it is replaced.

uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) is not used: its workers run
a plain `uvicorn.Server`, so `/readyz` and gRPC health could not turn before the drain, it
has no hook to tell prometheus-client that a worker died, and it restarts a worker that
fails at start-up in a loop only uvicorn's own CLI path breaks.

- SIGTERM or SIGINT to the parent: it sends SIGTERM to every worker, which stops gracefully (`gateway.process.serve`); the parent exits 0 once all
  have, or 1 if one of them did not end cleanly. A second signal stops the workers at once.
- A worker that dies while serving, or that a signal ends at any time (the OOM killer, an
  operator; while it starts too), is logged and replaced; more than `MAX_DEATHS` deaths
  within `DEATH_WINDOW_S` stop the whole gateway with status 1. A worker that exits by itself
  before it serves says that the app cannot start (bad settings, a port in use: status
  `STARTUP_FAILURE`, or 1 for an exception before the app existed): that stops the others,
  and the parent exits with that worker's status, since another would fail the same way.
- A worker whose parent is gone (killed) stops by itself.
- With `GATEWAY_WEBHOOK_SUBSCRIBE`, worker 1 alone subscribes the receiver at V3 (and
  unsubscribes it when the gateway stops); callbacks reach whichever worker accepts them.
- Metrics: the parent points PROMETHEUS_MULTIPROC_DIR at a fresh private directory, removed
  at exit, and marks each ended worker dead there; `/metrics` on any worker then answers
  for all of them (`gateway.observability.multiprocess`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Final

from gateway.config import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Workers dying more often than this are not a passing accident: stop instead of churning.
MAX_DEATHS: Final = 5
# What the fork server imports before it forks workers: what `gateway.app` needs, but not
# gRPC (never loaded before a fork) nor anything that starts a thread at import.
PRELOAD: Final = ("gateway.runtime", "gateway.graphql.view", "gateway.http.connections")
DEATH_WINDOW_S: Final = 60.0
# A worker's exit status when its app could not start (uvicorn's own CLI uses 3 as well).
STARTUP_FAILURE: Final = 3


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to `host:port` with SO_REUSEPORT, kept by the parent
    so the port, chosen once (0: any free), stays the workers' while they run."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )[0]  # fmt: skip
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def work(settings: Settings, ready: Connection, log_level: str) -> None:
    """A worker process: serve until told to stop (runs in a process the fork server made)."""
    from gateway.infra.listener import bind_listener
    from gateway.observability import configure_logging
    from gateway.process.serve import serve_on

    configure_logging(json=True, level=log_level.upper())
    parent = multiprocessing.parent_process()
    try:
        listener = bind_listener(settings.host, settings.http_port, reuse_port=True)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.http_port, exc.strerror)
        sys.exit(STARTUP_FAILURE)

    def serving() -> None:
        ready.send(os.getpid())
        ready.close()

    started = serve_on(
        settings,
        listener,
        log_level=log_level,
        shared_grpc_port=True,
        on_serving=serving,
        parent_sentinel=None if parent is None else parent.sentinel,
    )
    if not started:
        sys.exit(STARTUP_FAILURE)


@dataclass(eq=False, slots=True)
class _Worker:
    number: int
    process: BaseProcess
    ready: Connection  # readable once the worker serves (or EOF if it died first)
    serving: bool = False


@dataclass(slots=True)
class _Signals:
    """Stop signals received, and the socket pair that wakes the supervisor's wait."""

    received: list[int] = field(default_factory=list)
    wake_read: socket.socket | None = None
    wake_write: socket.socket | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def take(self) -> list[int]:
        if self.wake_read is not None:
            try:
                while self.wake_read.recv(64):
                    pass
            except BlockingIOError:
                pass
        taken, self.received[:] = list(self.received), []
        return taken


class Supervisor:
    """Starts the workers, replaces the ones that die, stops them all on a signal."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int,
        log_level: str,
        on_serving: Callable[[], None] | None = None,
        on_all_serving: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_serving = on_serving
        self.on_all_serving = on_all_serving
        self.count = workers
        self.log_level = log_level
        self.metrics_dir = ""
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(PRELOAD))
        self._workers: list[_Worker] = []
        self._deaths: deque[float] = deque()
        self._stopping = False
        self._status = 0

    def run(self) -> int:
        """Serve until a stop signal; the exit status of the whole gateway."""
        self.metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[MULTIPROC_ENV] = self.metrics_dir  # inherited by every worker
        signals = _Signals()
        signals.wake_read, signals.wake_write = socket.socketpair()
        signals.wake_read.setblocking(False)
        signals.wake_write.setblocking(False)
        previous = {
            sig: signal.signal(sig, signals.handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        old_wakeup = signal.set_wakeup_fd(signals.wake_write.fileno(), warn_on_full_buffer=False)
        try:
            for number in range(1, self.count + 1):
                self._workers.append(self._start(number))
            self._supervise(signals)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signals.wake_read.close()
            signals.wake_write.close()
            for worker in self._workers:  # only if supervising failed itself
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return self._status

    def _start(self, number: int) -> _Worker:
        settings = self.settings
        if number > 1:
            # One V3 webhook subscription for the gateway (any worker may receive the
            # callbacks): the others neither subscribe nor unsubscribe it when they stop.
            settings = settings.model_copy(update={"webhook_subscribe": False})
        ready, ready_end = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=work,
            args=(settings, ready_end, self.log_level),
            name=f"gateway-worker-{number}",
        )
        process.start()
        ready_end.close()  # the worker holds the other copy: EOF here if it dies first
        log.info(
            "worker %d starting (pid %d)",
            number,
            process.pid,
            extra={"worker": number, "worker_pid": process.pid},
        )
        return _Worker(number, process, ready)

    def _supervise(self, signals: _Signals) -> None:
        while self._workers:
            waiting: list[object] = [signals.wake_read]
            for worker in self._workers:
                waiting.append(worker.process.sentinel)
                if not worker.serving:
                    waiting.append(worker.ready)
            wait(waiting)  # type: ignore[arg-type]
            for signum in signals.take():
                self._on_signal(signum)
            for worker in list(self._workers):
                if not worker.serving and worker.ready.poll():
                    self._on_ready(worker)
                if worker.process.exitcode is not None:
                    self._on_exit(worker)

    def _on_signal(self, signum: int) -> None:
        if not self._stopping:
            log.info("stopping %d workers (%s)", len(self._workers), signal.Signals(signum).name)
            self._stop(signal.SIGTERM)
        else:
            log.warning("stopping the workers at once")
            self._stop(signal.SIGINT)  # a second stop signal: uvicorn exits without waiting

    def _stop(self, signum: int) -> None:
        # Each worker closes its own listening socket as it stops: then nothing accepts more.
        self._stopping = True
        for worker in self._workers:
            if worker.process.pid is not None and worker.process.exitcode is None:
                os.kill(worker.process.pid, signum)

    def _on_ready(self, worker: _Worker) -> None:
        try:
            worker.ready.recv()
        except EOFError:
            return  # died before serving: its sentinel says so
        worker.serving = True
        worker.ready.close()
        if self.on_serving is not None:
            # The first worker listens: connections made from now on are accepted.
            self.on_serving()
            self.on_serving = None
        log.info(
            "worker %d serving (pid %d)",
            worker.number,
            worker.process.pid,
            extra={"worker": worker.number, "worker_pid": worker.process.pid},
        )
        if (
            self.on_all_serving is not None
            and len(self._workers) == self.count
            and all(w.serving for w in self._workers)
        ):
            # Connections made from now on spread over every worker; before, the ones
            # still starting had no socket for the kernel to give them to.
            self.on_all_serving()
            self.on_all_serving = None

    def _on_exit(self, worker: _Worker) -> None:
        process = worker.process
        process.join()
        self._workers.remove(worker)
        if not worker.serving:
            worker.ready.close()
        self._mark_dead(process)
        code = process.exitcode
        if self._stopping:
            if worker.serving and code != 0:
                log.error(
                    "worker %d (pid %s) ended with status %s", worker.number, process.pid, code
                )
                self._status = 1
            return
        # A negative exitcode is the signal that ended the worker: something outside it
        # (the OOM killer, an operator), not a sign that its app cannot start.
        killed = code is not None and code < 0
        if not worker.serving and not killed:
            log.error(
                "worker %d (pid %s) failed to start (status %s): stopping the gateway",
                worker.number,
                process.pid,
                code,
            )
            self._status = code if code and code > 0 else 1
            self._stop(signal.SIGTERM)
            return
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - DEATH_WINDOW_S:
            self._deaths.popleft()
        if len(self._deaths) > MAX_DEATHS:
            log.error(
                "%d workers died within %.0f s: stopping the gateway",
                len(self._deaths),
                DEATH_WINDOW_S,
            )
            self._status = 1
            self._stop(signal.SIGTERM)
            return
        log.error(
            "worker %d (pid %s) %s (%s): starting another",
            worker.number,
            process.pid,
            "died" if worker.serving else "was ended while starting",
            _ending(code),
        )
        self._workers.append(self._start(worker.number))

    def _mark_dead(self, process: BaseProcess) -> None:
        from prometheus_client import multiprocess

        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]


def _ending(code: int | None) -> str:
    """How a process ended, for the log: `SIGKILL`, or `status 1`."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"status {code}"


def supervise(
    settings: Settings,
    *,
    workers: int,
    log_level: str,
    on_serving: Callable[[], None] | None = None,
    on_all_serving: Callable[[], None] | None = None,
) -> int:
    """Run `workers` worker processes on the settings' ports until a stop signal; the exit
    status. `on_serving` is called once, when the first worker accepts connections, and
    `on_all_serving` once, when all of them first do."""
    return Supervisor(
        settings,
        workers=workers,
        log_level=log_level,
        on_serving=on_serving,
        on_all_serving=on_all_serving,
    ).run()
