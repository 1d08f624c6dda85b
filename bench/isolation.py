"""What one misbehaving client does to the others: three attacks against one gateway.

    uv run python -m bench.isolation [--stalled 8] [--short-deadlines 5] [--half-open 2000]

Serves the gateway with its default settings (timeouts shortened with `--timeout-s` so the
run takes seconds) on the built-in simulator, in this process, and prints for each attack
what a well-behaved caller got meanwhile:

1. stalled bodies: `--stalled` POSTs announce `Content-Length: 100000` and send one byte
   every second; meanwhile ten ordinary queries over HTTP and ten unary gRPC calls.
2. short deadlines: `--short-deadlines` gRPC calls with a 1 ms deadline; then what those
   callers heard, the V3 circuit's state, `/readyz`, and an ordinary gRPC call.
3. half-open sockets: `--half-open` connections that send half a request header and
   nothing more; then an ordinary query, and how many of them the gateway still holds
   after the header timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import uvicorn

from gateway.app import create_app, server_options
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.infra.listener import bind_listener
from gateway.infra.started import Started
from gateway.process.demo import demo_settings
from gateway.simulator import RunningSimulator, Simulator

LATEST = (
    "query($id: ID!) { listing(ref: {classifiedId: $id}) "
    "{ classified { latestStatus { status } } } }"
)


@dataclass
class Target:
    url: str
    host: str
    port: int
    grpc_address: str
    app: Any
    sim: Simulator
    classified_ids: list[str]

    @property
    def classified_id(self) -> str:
        return self.classified_ids[0]


@asynccontextmanager
async def serving(sim: RunningSimulator, timeout_s: float) -> AsyncIterator[Target]:
    settings = demo_settings(
        sim,
        grpc_port=0,
        body_timeout_s=timeout_s,
        header_timeout_s=timeout_s,
    )
    app = create_app(settings, grpc=True)
    listener = bind_listener("127.0.0.1", 0)
    started = Started(app)
    config = uvicorn.Config(started, log_level="error", lifespan="on", **server_options(settings))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        await started.wait_or_fail(task)
        host, port = listener.getsockname()[:2]
        yield Target(
            url=f"http://{host}:{port}/graphql",
            host=host,
            port=port,
            grpc_address=app.state.grpc.address,
            app=app,
            sim=sim.sim,
            classified_ids=list(sim.sim.data.tenants["agency-1"]),
        )
    finally:
        server.should_exit = True
        await task
        listener.close()


async def _ordinary_http(http: aiohttp.ClientSession, target: Target) -> str:
    try:
        async with http.post(
            target.url,
            json={"query": LATEST, "variables": {"id": target.classified_id}},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            body = await response.json()
            return f"{response.status}" + (" with errors" if body.get("errors") else "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def _ordinary_grpc(
    target: Target, deadline_s: float = 10, classified_id: str | None = None
) -> str:
    ref = pb.ListingRef(classified_id=classified_id or target.classified_id)
    request = pb.GetListingRequest(ref=ref)
    async with grpc.aio.insecure_channel(target.grpc_address) as channel:
        try:
            await pb_grpc.ListingStatusServiceStub(channel).GetListing(request, timeout=deadline_s)
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return "OK"


def _tally(outcomes: list[str]) -> str:
    return ", ".join(f"{count} {what}" for what, count in Counter(outcomes).most_common())


async def stalled_bodies(http: aiohttp.ClientSession, target: Target, count: int) -> None:
    async def stall() -> str:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        try:
            while True:
                try:
                    # A byte a second, until the gateway answers (or closes).
                    answer = await asyncio.wait_for(reader.read(64), 1)
                except TimeoutError:
                    writer.write(b" ")
                    await writer.drain()
                    continue
                return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
        except (ConnectionError, OSError):
            return "closed"
        finally:
            writer.close()

    stalls = [asyncio.create_task(stall()) for _ in range(count)]
    await asyncio.sleep(0.5)  # the stalled requests are in
    http_outcomes = [await _ordinary_http(http, target) for _ in range(10)]
    grpc_outcomes = [await _ordinary_grpc(target) for _ in range(10)]
    ended = await asyncio.gather(*stalls)
    print(f"1. {count} stalled bodies: meanwhile HTTP {_tally(http_outcomes)}; "
          f"gRPC {_tally(grpc_outcomes)}; the stalled ones got {_tally(ended)}")  # fmt: skip


async def short_deadlines(http: aiohttp.ClientSession, target: Target, count: int) -> None:
    # Classifieds not read yet, V3 answering in 20 ms: each call needs V3, and its
    # deadline runs out first.
    cold = target.classified_ids[1 : count + 1]
    target.sim.state.set_latency("v3", 20)
    heard = [await _ordinary_grpc(target, deadline_s=0.001, classified_id=c) for c in cold]
    target.sim.state.set_latency("v3", 0)
    states = ", ".join(
        f"{guard.upstream} {guard.breaker.state.value}"
        for guard in target.app.state.runtime.upstreams.guards
    )
    async with http.get(target.url.replace("/graphql", "/readyz")) as response:
        ready = response.status
    after = await _ordinary_grpc(target)
    print(f"2. {count} gRPC calls with a 1 ms deadline heard {_tally(heard)}; then the "
          f"circuits: {states}; /readyz {ready}; an ordinary call {after}")  # fmt: skip


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def half_open(
    http: aiohttp.ClientSession, target: Target, count: int, timeout_s: float
) -> None:
    before = _descriptors()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((target.host, target.port))
        sock.sendall(b"GET /graphql HTTP/1.1\r\nHost: gate")
        sockets.append(sock)
    started = time.monotonic()
    served = await _ordinary_http(http, target)
    grpc_served = await _ordinary_grpc(target)
    await asyncio.sleep(timeout_s + 1)
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            # The gateway's 408, or its end of the connection.
            closed += sock.recv(12) in (b"", b"HTTP/1.1 408")
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    print(f"3. {count} half-open sockets: meanwhile HTTP {served}, gRPC {grpc_served}; "
          f"{closed} of them closed by the gateway within {time.monotonic() - started:.1f} s; "
          f"descriptors of this process {before} -> {_descriptors()}")  # fmt: skip


async def run(args: argparse.Namespace) -> int:
    async with (
        Simulator(seed=7).serve() as sim,
        serving(sim, args.timeout_s) as target,
        aiohttp.ClientSession() as http,
    ):
        await stalled_bodies(http, target, args.stalled)
        await short_deadlines(http, target, args.short_deadlines)
        await half_open(http, target, args.half_open, args.timeout_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.isolation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--stalled", type=int, default=8)
    parser.add_argument("--short-deadlines", type=int, default=5)
    parser.add_argument("--half-open", type=int, default=2000)
    parser.add_argument(
        "--timeout-s", type=float, default=3.0, help="GATEWAY_BODY/HEADER_TIMEOUT_S for the run"
    )
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
