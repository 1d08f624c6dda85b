"""`gateway serve --workers 2` beside one worker: do the workers share the load?

    uv run python -m bench.workers [--runs 6] [--connections 32] [--duration 8] [--slices 8]
                                   [--workload W1] [--mode warm-shared] [--client raw]

Starts the simulator (20 ms per answer) and, in each run, two `gateway serve` at once: one
with one worker, one with two (`GATEWAY_WORKERS`). The same load generator then asks each
in turn for a cached `--workload` query from `--connections` keep-alive connections opened
at once, `--slices` times, alternating which goes first, for `--duration` seconds per
configuration in all. Only the one measured is busy; the other waits idle. Prints
requests/s per run for both, their ratio, and the share of the two cores the load
generator and the simulator took meanwhile.

What is measured by default is the gateway's own work: `--mode warm-shared` (the default
settings: V3 pages and legacy answers cached, so the simulator is idle) driven by the lean
`--client raw` (`bench.rawhttp`, which writes the next request from the callback that read
the answer, as `wrk` does), itself run under `--load-policy batch` (SCHED_BATCH), so that it
does not preempt a worker at every answer. With `--mode warm` every request also makes a legacy call, and
the simulator's share of the same two cores is then what bounds two workers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .processes import Gateway, Load, ProcessLauncher, Simulator, Tally
from .run import COMMON, MODES, _command
from .workloads import WORKLOADS


@dataclass
class _Measured(Tally):
    """One configuration's share of a run: its slices added up."""

    gateway: Gateway
    target: dict[str, Any]
    load_cpu_s: float = 0.0
    sim_cpu_s: float = 0.0
    gateway_cpu_s: float = 0.0


async def _one_run(
    args: argparse.Namespace,
    launch: ProcessLauncher,
    load: Load,
    sim: Simulator,
    body: bytes,
) -> tuple[float, str]:
    """Both gateways at once, each measured in turn, slice by slice: the machine's speed
    drifts by 10-30 % within seconds here, and measuring one gateway's eight seconds after
    the other's put that drift into the ratio (1.32-2.14x over six runs of the same code)."""
    measured: dict[int, _Measured] = {}
    try:
        for workers in (1, 2):
            settings = COMMON | MODES[args.mode] | {"GATEWAY_WORKERS": str(workers)}
            gateway = await launch.gateway(f"workers-{workers}", sim, settings)
            measured[workers] = _Measured(
                gateway,
                {
                    "kind": "gateway",
                    "url": gateway.url,
                    "body": body.decode(),
                    "client": args.client,
                },
            )
            if workers > 1 and gateway.wait_for_line is not None:
                # Until every worker listens, new connections all go to the first.
                await gateway.wait_for_line(f"All {workers} workers serving")
        for one in measured.values():
            # Fills the cache and compiles the query in every worker.
            await load.run(_command(one.target, args.connections, 200, 0.0, 200))
        slice_s = args.duration / args.slices
        for number in range(args.slices):
            # Each slice opens its connections anew, so two workers get a fresh spread of them.
            order = (1, 2) if number % 2 == 0 else (2, 1)
            for workers in order:
                one = measured[workers]
                sim_cpu = sim.meter.cpu_s() if sim.meter is not None else 0.0
                gateway_cpu = one.gateway.meter.tree_cpu_s()
                result = await load.run(
                    _command(one.target, args.connections, 10**7, slice_s, args.connections)
                )
                one.add(result, f"{workers} workers: ")
                one.load_cpu_s += result["cpu_s"]
                one.gateway_cpu_s += one.gateway.meter.tree_cpu_s() - gateway_cpu
                if sim.meter is not None:
                    one.sim_cpu_s += sim.meter.cpu_s() - sim_cpu
    finally:
        for one in measured.values():
            await one.gateway.stop()
    single, double = measured[1], measured[2]
    ratio = double.rps / single.rps
    return ratio, (
        f"1 worker {single.rps:7.1f} req/s, 2 workers {double.rps:7.1f} req/s: {ratio:.2f}x "
        f"(gateway CPU per request {_us(single)} and {_us(double)} µs, "
        f"cores taken by the gateway {single.gateway_cpu_s / single.wall_s:.2f} and "
        f"{double.gateway_cpu_s / double.wall_s:.2f}, by the load generator {single.load_cpu_s / single.wall_s:.2f} and "
        f"{double.load_cpu_s / double.wall_s:.2f}, by the simulator "
        f"{single.sim_cpu_s / single.wall_s:.2f} and {double.sim_cpu_s / double.wall_s:.2f})"
    )


def _us(one: _Measured) -> str:
    return f"{one.gateway_cpu_s / one.answers * 1e6:.0f}"


async def run(args: argparse.Namespace) -> int:
    workload = WORKLOADS[args.workload]
    logs = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    ratios: list[float] = []
    async with aiohttp.ClientSession() as http:
        launch = ProcessLauncher(logs, http)
        sim = await launch.simulator(args.latency_ms)
        try:
            listings = await sim.add_listings(http, workload.listings, workload.users)
            load = await launch.load("load-workers")
            if args.load_policy == "batch":
                # Linux's SCHED_BATCH: the generator keeps its fair share of the cores but
                # no longer preempts a worker each time an answer wakes it (~3,000 times a
                # second with two workers); it reads its answers in larger batches, in half
                # the CPU (0.19 -> 0.10 of a core at ~4,000 requests/s).
                os.sched_setscheduler(load.pid, os.SCHED_BATCH, os.sched_param(0))
            try:
                for number in range(1, args.runs + 1):
                    ratio, line = await _one_run(args, launch, load, sim, workload.body(listings))
                    ratios.append(ratio)
                    print(f"run {number}: {line}", flush=True)
            finally:
                await load.stop()
        finally:
            await sim.stop()
    print(
        f"{args.workload} {args.mode}, {args.client} client ({args.load_policy} policy), "
        f"{args.connections} keep-alive "
        f"connections, {args.duration:g} s each in {args.slices} slices: "
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
    parser.add_argument(
        "--duration", type=float, default=8.0, help="seconds of load for each configuration"
    )
    parser.add_argument(
        "--slices", type=int, default=8, help="turns the two configurations take in a run"
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="W1")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--mode", choices=sorted(MODES), default="warm-shared")
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="raw")
    parser.add_argument(
        "--load-policy",
        choices=["batch", "normal"],
        default="batch",
        help="the load generator's CPU scheduling policy (Linux): SCHED_BATCH or SCHED_OTHER",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.connections < 1 or args.duration <= 0 or args.slices < 1:
        parser.error("--runs, --connections, --duration and --slices must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
