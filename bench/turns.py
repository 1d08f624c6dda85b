"""The gateway against the limit client (or a Node gateway) on one workload, measured in turns.

    uv run python -m bench.turns [--workload W1] [--mode warm] [--concurrency 16]
                                 [--runs 4] [--duration 8] [--slices 8] [--against limit]

`python -m bench` measures each mode after the other, and on a shared machine the speed
drifts by 10-30 % within seconds: a ratio of two such figures moves by as much. Here, in
each run, one fresh gateway (`--mode`) and the limit client (`bench.load`: the fewest
upstream calls a caller could make itself) take turns on the same simulator, `--slices`
times for `--duration` seconds each in all, alternating which goes first. Prints, per run,
both requests/s, their ratio, and the CPU per request of the gateway and of the limit
client; then the median and lowest ratio. The gateway is called with aiohttp's client, as
`python -m bench` calls it, and the limit client uses aiohttp too.

`--against node` puts a Node GraphQL gateway in the limit client's place
(`bench/node/server.mjs`: Apollo Server, DataLoader, undici, no cache; it answers the
same data, `tests/test_bench_node.py`), called by the same aiohttp client; its packages
come from `npm ci --prefix bench/node`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .processes import Load, ProcessLauncher, Simulator, Tally
from .run import COMMON, LIMIT, MAX_BATCH, MODES, _command
from .workloads import WORKLOADS, Listing, Workload


@dataclass
class _Side(Tally):
    load: Load
    target: dict[str, Any]
    cpu_s: float = 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.answers * 1000


async def _one_run(
    args: argparse.Namespace,
    launch: ProcessLauncher,
    loads: tuple[Load, Load],
    sim: Simulator,
    workload: Workload,
    listings: list[Listing],
) -> tuple[float, str]:
    gateway = await launch.gateway("turns", sim, COMMON | MODES[args.mode])
    node = await launch.node_gateway("turns-node", sim) if args.against == "node" else None
    try:
        if node is None:
            target: dict[str, Any] = {
                "kind": "limit",
                "v3_url": sim.v3_url,
                "legacy_url": sim.legacy_url,
                "token_url": sim.token_url,
                "listings": [[x.classified_id, x.user_id, x.ad_id] for x in listings],
                "max_batch": MAX_BATCH,
            }
        else:
            target = {"kind": "gateway", "url": node.url, "body": workload.body(listings).decode()}
        other = _Side(loads[0], target)
        ours = _Side(
            loads[1],
            {"kind": "gateway", "url": gateway.url, "body": workload.body(listings).decode()},
        )
        warmup = max(args.concurrency, 200)
        for side in (other, ours):
            # Fills the warm cache, compiles the operation, opens the connections.
            await side.load.run(_command(side.target, args.concurrency, warmup, 0.0, warmup))
        slice_s = args.duration / args.slices
        for number in range(args.slices):
            for side in (other, ours) if number % 2 == 0 else (ours, other):
                meter = gateway.meter if side is ours or node is None else node.meter
                cpu = meter.cpu_s()
                result = await side.load.run(
                    _command(side.target, args.concurrency, 10**7, slice_s, args.concurrency)
                )
                side.add(result)
                # The limit's CPU is the limit client's own; a gateway's is that gateway's.
                side.cpu_s += (
                    result["cpu_s"] if side is other and node is None else meter.cpu_s() - cpu
                )
    finally:
        await gateway.stop()
        if node is not None:
            await node.stop()
    ratio = ours.rps / other.rps
    return ratio, (
        f"{args.against} {other.rps:7.1f} req/s ({other.cpu_ms:.2f} ms CPU/req), gateway "
        f"{ours.rps:7.1f} req/s ({ours.cpu_ms:.2f} ms CPU/req): {ratio:.3f}x"
    )


async def run(args: argparse.Namespace) -> int:
    workload = WORKLOADS[args.workload]
    logs = Path(tempfile.mkdtemp(prefix="bench-turns-"))
    ratios: list[float] = []
    async with aiohttp.ClientSession() as http:
        launch = ProcessLauncher(logs, http)
        sim = await launch.simulator(args.latency_ms)
        try:
            listings = await sim.add_listings(http, workload.listings, workload.users)
            loads = (await launch.load("load-limit"), await launch.load("load-gateway"))
            try:
                for number in range(1, args.runs + 1):
                    ratio, line = await _one_run(args, launch, loads, sim, workload, listings)
                    ratios.append(ratio)
                    print(f"run {number}: {line}", flush=True)
            finally:
                for load in loads:
                    await load.stop()
        finally:
            await sim.stop()
    print(
        f"{args.workload} {args.mode} at {args.concurrency} clients, {args.duration:g} s each "
        f"in {args.slices} slices: gateway / {args.against} median {statistics.median(ratios):.3f}x, "
        f"lowest {min(ratios):.3f}x over {len(ratios)} runs"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.turns", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="W1")
    parser.add_argument("--mode", choices=sorted(set(MODES) - {LIMIT}), default="warm")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds for each side")
    parser.add_argument("--slices", type=int, default=8, help="turns each side takes in a run")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--against",
        choices=["limit", "node"],
        default="limit",
        help="the limit client, or the Node gateway of bench/node",
    )
    args = parser.parse_args(argv)
    if min(args.concurrency, args.runs, args.slices) < 1 or args.duration <= 0:
        parser.error("--concurrency, --runs, --duration and --slices must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
