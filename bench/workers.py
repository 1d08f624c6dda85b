"""`gateway serve --workers 2` beside one worker: do the workers share the load?

    uv run python -m bench.workers [--runs 6] [--connections 32] [--duration 8] [--workload W1]

Starts the simulator (20 ms per answer) and, in each run, one `gateway serve` with one
worker and then one with two (`GATEWAY_WORKERS`), each measured with the same load
generator: `--connections` keep-alive connections opened at once, asking a cached
`--workload` query for `--duration` seconds. Prints requests/s per run for both and their
ratio; on 2 cores two workers that share the load reach well over 1.5x one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import aiohttp

from .processes import ProcessLauncher
from .run import COMMON, MODES, _command
from .workloads import WORKLOADS, Listing


async def run(args: argparse.Namespace) -> int:
    workload = WORKLOADS[args.workload]
    logs = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    ratios: list[float] = []
    async with aiohttp.ClientSession() as http:
        launch = ProcessLauncher(logs, http)
        sim = await launch.simulator(args.latency_ms)
        try:
            body = {"count": workload.listings, "users": workload.users, "tenant": "agency-1"}
            async with http.post(f"{sim.base_url}/_sim/listings", json=body) as response:
                response.raise_for_status()
                made = (await response.json())["listings"]
            listings = [Listing(m["classifiedId"], m["userId"], m["adId"]) for m in made]
            load = await launch.load("load-workers")
            try:
                for number in range(1, args.runs + 1):
                    rps: dict[int, float] = {}
                    for workers in (1, 2):
                        settings = COMMON | MODES["warm"] | {"GATEWAY_WORKERS": str(workers)}
                        gateway = await launch.gateway(f"workers-{workers}", sim, settings)
                        try:
                            target = {
                                "kind": "gateway",
                                "url": gateway.url,
                                "body": workload.body(listings).decode(),
                            }
                            # Fills the cache and compiles the query in every worker.
                            await load.run(_command(target, args.connections, 200, 0.0, 200))
                            result = await load.run(
                                _command(
                                    target, args.connections, 10**7, args.duration, args.connections
                                )
                            )
                            rps[workers] = len(result["latencies_ms"]) / result["wall_s"]
                        finally:
                            await gateway.stop()
                    ratios.append(rps[2] / rps[1])
                    print(
                        f"run {number}: 1 worker {rps[1]:7.1f} req/s, 2 workers {rps[2]:7.1f} "
                        f"req/s: {ratios[-1]:.2f}x",
                        flush=True,
                    )
            finally:
                await load.stop()
        finally:
            await sim.stop()
    print(
        f"{args.workload}, {args.connections} keep-alive connections, {args.duration:g} s: "
        f"2 workers / 1 worker median {statistics.median(ratios):.2f}x, "
        f"lowest {min(ratios):.2f}x over {len(ratios)} runs"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="W1")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.connections < 1 or args.duration <= 0:
        parser.error("--runs, --connections and --duration must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
