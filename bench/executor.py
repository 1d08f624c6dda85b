"""CPU per warm request inside the gateway process, with compiled execution on and off.

    uv run python bench/executor.py [--listings 50] [--repeat 200] [--profile] [--cold]

The simulator runs in a child process (its CPU is not counted); the gateway app runs in
this process and is called as ASGI directly (no HTTP parsing, no client library), so
the figure is what the gateway itself spends per request: the view, strawberry's
pipeline, the gather step (one legacy call per user, V3 from the cache) and the
projection. `--profile` prints the top of a cProfile of the compiled run. `--cold` reads
every V3 page upstream (GATEWAY_CACHE_TTL_S=0), so the figure includes the upstream clients.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from multiprocessing.connection import Connection
from typing import Any

import orjson

TENANT = "agency-1"
BASE = """id state
  portals { portal provider state since message actionRequired }
  classified { latestStatus { id status subStatus date portals } %s }
  legacy { portals { portal publish { active online startDate remoteAdId } features { feature active } } }"""
QUERIES = {
    "W": "query($refs: [ListingRef!]!) { listings(refs: $refs) { " + BASE % "" + " } }",
    "W-history": "query($refs: [ListingRef!]!) { listings(refs: $refs) { "
    + BASE % "statuses(first: 20) { nodes { id status date portals } pageInfo { endCursor } }"
    + " } }",
}


def _simulator(listings: int) -> Any:
    """The seeded simulator, with copies of real histories so one tenant has `listings`."""
    from gateway.simulator import Simulator

    sim = Simulator(seed=7, latency_ms=0)
    source = sim.data.tenants[TENANT]
    for index in range(max(0, listings - len(source))):
        record = sim.state.classified(source[index % len(source)])
        assert record is not None
        sim.state.put_classified(
            f"bench-{index:04d}", tenant=TENANT, items=[s.item for s in record.statuses]
        )
    return sim


def _run_simulator(listings: int, report: Connection) -> None:
    async def main() -> None:
        async with _simulator(listings).serve() as running:
            report.send(running.port)
            await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def simulator_process(listings: int) -> Iterator[int]:
    """The seeded simulator in a child process, so its CPU is not counted; yields its port,
    one the child chose itself (port 0) and holds."""
    receiving, sending = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.Process(target=_run_simulator, args=(listings, sending), daemon=True)
    child.start()
    sending.close()
    try:
        if not receiving.poll(60):
            raise SystemExit("the simulator did not start within 60 s")
        yield int(receiving.recv())
    finally:
        child.terminate()
        child.join()


Call = Callable[[bytes], Awaitable[tuple[int, bytes]]]


@asynccontextmanager
async def _asgi(app: Any) -> Any:
    """Run `app`'s lifespan and yield a function that POSTs a body to /graphql."""
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    done = asyncio.Event()
    started = asyncio.Event()
    await startup.put({"type": "lifespan.startup"})

    async def lifespan_receive() -> dict[str, Any]:
        return await startup.get()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.shutdown.complete":
            done.set()

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, lifespan_send)
    )
    await started.wait()

    async def post(body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/graphql", "raw_path": b"/graphql",
            "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1234),
            "headers": [(b"content-type", b"application/json"), (b"accept", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    try:
        yield post
    finally:
        await startup.put({"type": "lifespan.shutdown"})
        await done.wait()
        await task


async def measure(
    sim_port: int, compiled: bool, listings: int, repeat: int, profile: bool, cold: bool = False
) -> dict[str, float]:
    from gateway.app import create_app
    from gateway.process.demo import demo_settings
    from gateway.simulator.app import RunningSimulator

    sim = _simulator(listings)  # built as the child built it: the same catalogue
    classifieds = sim.state.tenants()[TENANT]
    ads = [(user, ad) for user, user_ads in sim.state.legacy_users().items() for ad in user_ads]
    refs = [
        {"classifiedId": classifieds[i], "legacy": {"userId": ads[i][0], "adId": ads[i][1]}}
        for i in range(listings)
    ]
    running = RunningSimulator(sim=None, host="127.0.0.1", port=sim_port)  # type: ignore[arg-type]
    settings = demo_settings(running, compiled_execution=compiled, cache_ttl_s=0 if cold else 30)
    figures: dict[str, float] = {}
    async with _asgi(create_app(settings)) as post:
        for name, query in QUERIES.items():
            body = orjson.dumps({"query": query, "variables": {"refs": refs}})
            status, answer = await post(body)  # warms the cache, the plan and the token
            assert status == 200 and b'"errors"' not in answer, answer[:500]
            profiler = cProfile.Profile(time.process_time) if profile and compiled else None
            start = time.process_time()
            if profiler is not None:
                profiler.enable()
            for _ in range(repeat):
                await post(body)
            if profiler is not None:
                profiler.disable()
            figures[name] = (time.process_time() - start) / repeat * 1000
            if profiler is not None:
                sort = os.environ.get("BENCH_PROFILE_SORT", "tottime")
                print(f"--- profile: {name}, compiled")
                pstats.Stats(profiler).sort_stats(sort).print_stats(45)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cold", action="store_true", help="no V3 page cache")
    args = parser.parse_args()
    with simulator_process(args.listings) as sim_port:
        results = {
            compiled: asyncio.run(
                measure(sim_port, compiled, args.listings, args.repeat, args.profile, args.cold)
            )
            for compiled in (True, False)
        }
    kind = "cache-cold" if args.cold else "warm"
    print(f"CPU per {kind} request, {args.listings} listings, {args.repeat} requests each (ms):")
    print(f"{'workload':<14}{'compiled':>10}{'graphql-core':>14}{'ratio':>8}")
    for name in QUERIES:
        on, off = results[True][name], results[False][name]
        label = name.replace("W", f"W{args.listings}", 1)
        print(f"{label:<14}{on:>10.2f}{off:>14.2f}{off / on:>7.1f}x")


if __name__ == "__main__":
    main()
