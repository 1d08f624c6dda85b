"""CPU per upstream read: the gateway's V3 client beside a bare aiohttp loop.

    uv run python -m bench.upstream_call [--calls 2000] [--concurrency 1] [--profile]

The simulator runs in a child process (no latency, its CPU not counted). This process reads
the same classified status pages N times, one after another (or `--concurrency` at a
time), first with a bare `aiohttp` session (`GET`, `orjson.loads`), then with the gateway's
own HTTP/1.1 pool bare (`gateway.upstreams.wire`, `orjson.loads`), then through the
product's `ClassifiedsV3Client` built as `gateway serve` builds it: its guard, retry policy,
metrics observer and, when OTEL_EXPORTER_OTLP_ENDPOINT is set, a span per call; the items
parsed into domain records. It prints microseconds of this process's CPU per call
for each and their ratio. `--profile` prints the top of a cProfile of the product's run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import orjson
import yarl

from .executor import TENANT, _simulator, simulator_process

Read = Callable[[str], Awaitable[object]]


async def _cpu_per_call(read: Read, ids: Sequence[str], calls: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call of `read` over `calls` calls."""
    for classified_id in ids[:20]:  # connections opened, token fetched, code paths warm
        await read(classified_id)
    queue = [ids[i % len(ids)] for i in range(calls)]

    async def worker(start: int) -> None:
        for index in range(start, calls, concurrency):
            await read(queue[index])

    started = time.process_time()
    await asyncio.gather(*(worker(start) for start in range(concurrency)))
    return (time.process_time() - started) / calls * 1e6


async def measure(port: int, calls: int, concurrency: int, profile: bool) -> dict[str, float]:
    from opentelemetry.trace import NoOpTracer

    from gateway.domain.models import Caller
    from gateway.observability import TRACER_NAME, Metrics, build_tracer_provider, exporting
    from gateway.process.demo import demo_settings
    from gateway.runtime import upstream_options
    from gateway.simulator.app import RunningSimulator
    from gateway.upstreams import open_upstreams
    from gateway.upstreams.wire import Pool

    ids = list(_simulator(50).state.tenants()[TENANT])
    running = RunningSimulator(sim=None, host="127.0.0.1", port=port)  # type: ignore[arg-type]
    settings = demo_settings(running)
    provider = build_tracer_provider()
    # As `create_app` does: upstream calls get spans only when something exports them.
    tracer = provider.get_tracer(TRACER_NAME) if exporting() else NoOpTracer()
    figures: dict[str, float] = {}
    caller = Caller()
    async with open_upstreams(
        upstream_options(settings), observer=Metrics(), tracer=tracer
    ) as upstreams:
        client = upstreams.v3
        authorization = await client.credentials.authorization(caller)
        base = settings.v3_url.rstrip("/")
        headers = {
            "Authorization": authorization,
            "User-Agent": settings.user_agent,
            "Accept": "application/json",
        }
        async with aiohttp.ClientSession() as session:

            async def bare(classified_id: str) -> object:
                url = f"{base}/classifieds/{classified_id}/statuses"
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    assert response.status == 200, body[:200]
                return orjson.loads(body)

            figures["bare aiohttp + orjson"] = await _cpu_per_call(bare, ids, calls, concurrency)

        async with Pool(limit=100) as pool:

            async def narrow(classified_id: str) -> object:
                url = yarl.URL(f"{base}/classifieds/{classified_id}/statuses", encoded=True)
                answer = await pool.request("GET", url, headers, None)
                assert answer.status == 200, answer.body[:200]
                return orjson.loads(answer.body)

            figures["bare wire pool + orjson"] = await _cpu_per_call(
                narrow, ids, calls, concurrency
            )

        async def product(classified_id: str) -> object:
            return await client.classified_statuses(caller, classified_id)

        profiler = cProfile.Profile(time.process_time) if profile else None
        if profiler is not None:
            profiler.enable()
        figures["gateway V3 client"] = await _cpu_per_call(product, ids, calls, concurrency)
        if profiler is not None:
            profiler.disable()
            print("--- profile: gateway V3 client")
            sort = os.environ.get("BENCH_PROFILE_SORT", "tottime")
            pstats.Stats(profiler).sort_stats(sort).print_stats(40)
    provider.shutdown()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.upstream_call", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--calls", type=int, default=2000, help="reads per client (2000)")
    parser.add_argument("--concurrency", type=int, default=1, help="reads at once (1)")
    parser.add_argument("--profile", action="store_true", help="cProfile the product's run")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1:
        parser.error("--calls and --concurrency must be at least 1")
    with simulator_process(50) as port:
        figures = asyncio.run(measure(port, args.calls, args.concurrency, args.profile))
    bare = figures["bare aiohttp + orjson"]
    print(
        f"CPU per V3 status read, {args.calls} reads, {args.concurrency} at a time "
        f"(load average {os.getloadavg()[0]:.2f}):"
    )
    for name, value in figures.items():
        print(f"  {name:<24}{value:>9.0f} µs   {value / bare:>5.2f}x bare")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
