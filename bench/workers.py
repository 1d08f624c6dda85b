"""`gateway serve --workers 2` beside one worker: do the workers share the load?

    uv run python -m bench.workers [--runs 6] [--connections 32] [--duration 8] [--workload W1]
                                   [--mode warm-shared] [--client raw]

Starts the simulator (20 ms per answer) and, in each run, one `gateway serve` with one
worker and then one with two (`GATEWAY_WORKERS`), each measured with the same load
generator: `--connections` keep-alive connections opened at once, asking a cached
`--workload` query for `--duration` seconds. Prints requests/s per run for both, their
ratio, and the share of the two cores the load generator and the simulator took meanwhile.

What is measured by default is the gateway's own work: `--mode warm-shared` (the default
settings: V3 pages and legacy answers cached, so the simulator is idle) driven by the lean
`--client raw` (`bench.rawhttp`, ~0.03 ms of CPU per request where aiohttp's client takes
~0.3 ms). With `--mode warm` every request also makes a legacy call, and the simulator's
share of the same two cores is then what bounds two workers.
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
        sim_meter = sim.meter
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
                    shares: dict[int, tuple[float, float]] = {}
                    for workers in (1, 2):
                        settings = COMMON | MODES[args.mode] | {"GATEWAY_WORKERS": str(workers)}
                        gateway = await launch.gateway(f"workers-{workers}", sim, settings)
                        try:
                            if workers > 1 and gateway.wait_for_line is not None:
                                # Until every worker listens, new connections all go to the
                                # first: keep-alive ones would stay there for the whole run.
                                await gateway.wait_for_line(f"All {workers} workers serving")
                            target = {
                                "kind": "gateway",
                                "url": gateway.url,
                                "body": workload.body(listings).decode(),
                                "client": args.client,
                            }
                            # Fills the cache and compiles the query in every worker.
                            await load.run(_command(target, args.connections, 200, 0.0, 200))
                            sim_cpu = sim_meter.cpu_s() if sim_meter is not None else 0.0
                            result = await load.run(
                                _command(
                                    target, args.connections, 10**7, args.duration, args.connections
                                )
                            )
                            wall = result["wall_s"]
                            rps[workers] = len(result["latencies_ms"]) / wall
                            sim_share = (
                                (sim_meter.cpu_s() - sim_cpu) / wall if sim_meter is not None else 0
                            )
                            shares[workers] = (result["cpu_s"] / wall, sim_share)
                        finally:
                            await gateway.stop()
                    ratios.append(rps[2] / rps[1])
                    print(
                        f"run {number}: 1 worker {rps[1]:7.1f} req/s, 2 workers {rps[2]:7.1f} "
                        f"req/s: {ratios[-1]:.2f}x (cores taken by the load generator "
                        f"{shares[1][0]:.2f} and {shares[2][0]:.2f}, by the simulator "
                        f"{shares[1][1]:.2f} and {shares[2][1]:.2f})",
                        flush=True,
                    )
            finally:
                await load.stop()
        finally:
            await sim.stop()
    print(
        f"{args.workload} {args.mode}, {args.client} client, {args.connections} keep-alive "
        f"connections, {args.duration:g} s: "
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
    parser.add_argument("--mode", choices=sorted(MODES), default="warm-shared")
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="raw")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.connections < 1 or args.duration <= 0:
        parser.error("--runs, --connections and --duration must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
