"""One benchmark run: the limit and each gateway mode over every workload and concurrency.

Order: the simulator starts once and makes each workload's listings; then, one mode at a
time, a fresh gateway process (none for the limit) and a fresh load generator; then the
first request on fresh processes; then the memory of a gateway holding many cached pages.
Upstream calls are the simulator's own counters, reset around each measurement; CPU and
peak RSS are read from /proc for the gateway and from the load generator for the limit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .processes import Gateway, Launcher, Load, ProcessLauncher, Simulator
from .workloads import WORKLOADS, Listing, Workload

LIMIT = "limit"
# Gateway settings per mode; every gateway also takes COMMON.
MODES: dict[str, dict[str, str]] = {
    LIMIT: {},
    # Legacy read for every request, as before answers were shared: comparable with earlier
    # runs, and the "before" of `warm-shared`.
    "cache-cold": {"GATEWAY_CACHE_TTL_S": "0", "GATEWAY_LEGACY_CACHE_TTL_S": "0"},
    "warm": {"GATEWAY_CACHE_TTL_S": "3600", "GATEWAY_LEGACY_CACHE_TTL_S": "0"},
    "warm-shared": {"GATEWAY_CACHE_TTL_S": "3600"},
    "graphql-core": {
        "GATEWAY_CACHE_TTL_S": "3600",
        "GATEWAY_LEGACY_CACHE_TTL_S": "0",
        "GATEWAY_COMPILED_EXECUTION": "false",
    },
    "naive": {
        "GATEWAY_COMPILED_EXECUTION": "false",
        "GATEWAY_CACHE_TTL_S": "0",
        "GATEWAY_LEGACY_CACHE_TTL_S": "0",
        "GATEWAY_LEGACY_MAX_BATCH": "1",
    },
}
MODE_NOTES = {
    LIMIT: "direct aiohttp client, fewest upstream calls, all at once",
    "cache-cold": "every V3 page read upstream (GATEWAY_CACHE_TTL_S=0)",
    "warm": "V3 pages cached, legacy read every time (GATEWAY_LEGACY_CACHE_TTL_S=0)",
    "warm-shared": "V3 pages cached, legacy answers shared for the default 5 s",
    "graphql-core": "warm, compiled execution off (GATEWAY_COMPILED_EXECUTION=false)",
    "naive": "compiled execution, cache and batching off",
}
# W1000 asks for more listings, and more upstream reads, than one query may by default;
# requests past admission's limit queue until served rather than fail after 2 s.
COMMON = {
    "GATEWAY_MAX_LISTINGS": "1000",
    "GATEWAY_MAX_UPSTREAM_COST": "100000",
    "GATEWAY_QUEUE_TIMEOUT_S": "120",
}
MAX_BATCH = 100  # the gateway's default GATEWAY_LEGACY_MAX_BATCH, which the limit uses too

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Options:
    latency_ms: float = 20.0
    workloads: tuple[str, ...] = tuple(WORKLOADS)
    modes: tuple[str, ...] = tuple(MODES)
    concurrency: tuple[int, ...] = (1, 16)
    duration_s: float = 5.0
    requests: int = 2000
    first_request: tuple[str, ...] = tuple(WORKLOADS)
    cached_pages: int = 10_000
    out: Path = Path("bench/results")
    client: str = "aiohttp"  # how the load generator calls the gateway (bench.rawhttp: "raw")
    warmup: int = 2  # unmeasured requests before each measurement
    min_requests: int = 3  # per measurement, even past duration_s (at least one per client)
    # Concurrency above 1 only for workloads of at most this many listings (None: all).
    wide_max_listings: int | None = None
    naive_max_listings: int | None = None  # naive mode only up to this many listings


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Run:
    def __init__(
        self, options: Options, say: Progress, http: aiohttp.ClientSession, launcher: Launcher
    ) -> None:
        self.options = options
        self.say = say
        self.http = http
        self.launch = launcher
        self.sim: Simulator
        self.pools: dict[str, list[Listing]] = {}
        self.rows: list[dict[str, Any]] = []
        self.gateways: dict[str, dict[str, Any]] = {}
        self.first: list[dict[str, Any]] = []
        self.memory: dict[str, Any] | None = None

    @property
    def workloads(self) -> list[Workload]:
        return [WORKLOADS[name] for name in self.options.workloads]

    def plan(self, mode: str) -> list[tuple[Workload, int]]:
        """The (workload, concurrency) pairs measured in `mode`."""
        options = self.options
        return [
            (workload, concurrency)
            for workload in self.workloads
            if mode != "naive" or workload.listings <= (options.naive_max_listings or 10**9)
            for concurrency in options.concurrency
            if concurrency == 1 or workload.listings <= (options.wide_max_listings or 10**9)
        ]

    async def execute(self) -> None:
        self.sim = await self.launch.simulator(self.options.latency_ms)
        try:
            for workload in self.workloads:
                if workload.pool not in self.pools:
                    self.pools[workload.pool] = await self.add_listings(
                        workload.listings, workload.users
                    )
            steps = sum(len(self.plan(mode)) for mode in self.options.modes)
            for mode in self.options.modes:
                await self.run_mode(mode, steps)
            for name in self.options.first_request:
                if name in self.options.workloads:
                    await self.first_request(WORKLOADS[name])
            if self.options.cached_pages:
                await self.cached_pages(self.options.cached_pages)
        finally:
            await self.sim.stop()

    async def add_listings(self, count: int, users: int) -> list[Listing]:
        return await self.sim.add_listings(self.http, count, users)

    def target(self, mode: str, workload: Workload, gateway: Gateway | None) -> dict[str, Any]:
        listings = self.pools[workload.pool]
        if gateway is None:
            return {
                "kind": "limit",
                "v3_url": self.sim.v3_url,
                "legacy_url": self.sim.legacy_url,
                "token_url": self.sim.token_url,
                "listings": [[x.classified_id, x.user_id, x.ad_id] for x in listings],
                "max_batch": MAX_BATCH,
            }
        return {
            "kind": "gateway",
            "url": gateway.url,
            "body": workload.body(listings).decode(),
            "client": self.options.client,
        }

    async def start_gateway(self, name: str, mode: str) -> Gateway:
        return await self.launch.gateway(name, self.sim, COMMON | MODES[mode])

    async def run_mode(self, mode: str, steps: int) -> None:
        gateway = None if mode == LIMIT else await self.start_gateway(mode, mode)
        load = await self.launch.load(f"load-{mode}")
        try:
            if gateway is not None:
                self.gateways[mode] = {
                    "settings": COMMON | MODES[mode],
                    "start_s": round(gateway.started_s, 2),
                    "idle_rss_mb": round(gateway.meter.memory_mb("VmRSS"), 1),
                }
            for workload, concurrency in self.plan(mode):
                target = self.target(mode, workload, gateway)
                row = await self.measure(load, target, gateway, concurrency)
                row |= {"workload": workload.name, "listings": workload.listings,
                        "mode": mode, "concurrency": concurrency}  # fmt: skip
                self.rows.append(row)
                self.say(
                    f"[{len(self.rows)}/{steps}] {mode:<12} {workload.name:<11} c={concurrency:<2} "
                    f"p50 {row['p50_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms  "
                    f"{row['rps']:7.1f} req/s  {row['calls_per_request']:6.1f} calls/req  "
                    f"errors {row['errors']}"
                )
            if gateway is not None:
                self.gateways[mode]["peak_rss_mb"] = round(gateway.meter.memory_mb(), 1)
        finally:
            await load.stop()
            if gateway is not None:
                await gateway.stop()

    async def counters(self, reset: bool = False) -> dict[str, int]:
        if reset:
            async with self.http.post(f"{self.sim.base_url}/_sim/counters/reset") as response:
                response.raise_for_status()
            return {}
        async with self.http.get(f"{self.sim.base_url}/_sim/counters") as response:
            counted = await response.json()
        return {upstream: sum(endpoints.values()) for upstream, endpoints in counted.items()}

    async def measure(
        self,
        load: Load,
        target: dict[str, Any],
        gateway: Gateway | None,
        concurrency: int,
    ) -> dict[str, Any]:
        # Unmeasured: fills the warm cache, compiles the operation, opens connections.
        warmup = self.options.warmup
        if warmup:
            await load.run(_command(target, min(concurrency, warmup), warmup, 0.0, warmup))
        await self.counters(reset=True)
        cpu_before = gateway.meter.cpu_s() if gateway is not None else 0.0
        options = self.options
        result = await load.run(
            _command(target, concurrency, options.requests, options.duration_s,
                     max(options.min_requests, concurrency))
        )  # fmt: skip
        cpu_s = gateway.meter.cpu_s() - cpu_before if gateway is not None else result["cpu_s"]
        counted = await self.counters()
        latencies: list[float] = result["latencies_ms"]
        n = len(latencies)
        peak_mb = gateway.meter.memory_mb() if gateway is not None else result["peak_rss_kb"] / 1024
        return {
            "requests": n,
            "errors": result["errors"],
            "first_error": result["first_error"],
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies),
            "rps": n / result["wall_s"],
            "upstream_calls": {upstream: calls / n for upstream, calls in counted.items()},
            "calls_per_request": sum(counted.values()) / n,
            "cpu_ms_per_request": cpu_s * 1000 / n,
            "peak_rss_mb": peak_mb,
        }

    async def first_request(self, workload: Workload) -> None:
        """The first request on a fresh process (cache-cold settings), then its steady state."""
        gateway = await self.start_gateway(f"first-{workload.name}", "cache-cold")
        load = await self.launch.load(f"load-first-{workload.name}")
        try:
            # The load generator's own first request (threads, resolver, code paths) goes to
            # the simulator, so the figure below is the gateway's alone.
            await load.run(_command(self.target(LIMIT, workload, None), 1, 1, 0.0, 1))
            target = self.target("cache-cold", workload, gateway)
            first = await load.run(_command(target, 1, 1, 0.0, 1))
            steady = await self.measure(load, target, gateway, 1)
        finally:
            await load.stop()
            await gateway.stop()
        entry = {
            "workload": workload.name,
            "start_s": gateway.started_s,
            "first_ms": first["latencies_ms"][0],
            "errors": first["errors"],
            "steady_p50_ms": steady["p50_ms"],
        }
        entry["ratio"] = entry["first_ms"] / entry["steady_p50_ms"]
        self.first.append(entry)
        self.say(
            f"first request {workload.name}: {entry['first_ms']:.1f} ms on a fresh process, "
            f"{entry['steady_p50_ms']:.1f} ms p50 after ({entry['ratio']:.2f}x); "
            f"process up in {entry['start_s']:.1f} s"
        )

    async def cached_pages(self, pages: int) -> None:
        """Peak RSS of a gateway after reading `pages` V3 pages into its cache."""
        per_request = 1000
        listings = await self.add_listings(pages, max(1, pages // per_request * 10))
        gateway = await self.start_gateway("cached-pages", "warm")
        load = await self.launch.load("load-cached-pages")
        idle = gateway.meter.memory_mb("VmRSS")
        workload = Workload("fill", per_request, 10)
        try:
            await self.counters(reset=True)
            errors = 0
            for start in range(0, pages, per_request):
                body = workload.body(listings[start : start + per_request]).decode()
                target = {"kind": "gateway", "url": gateway.url, "body": body}
                errors += (await load.run(_command(target, 1, 1, 0.0, 1)))["errors"]
            read = (await self.counters()).get("v3", 0)
            await self.counters(reset=True)
            body = workload.body(listings[:per_request]).decode()
            target = {"kind": "gateway", "url": gateway.url, "body": body}
            errors += (await load.run(_command(target, 1, 1, 0.0, 1)))["errors"]
            again = (await self.counters()).get("v3", 0)
            self.memory = {
                "cached_pages": pages,
                "v3_reads": read,
                "v3_reads_when_repeated": again,
                "errors": errors,
                "idle_rss_mb": idle,
                "rss_mb": gateway.meter.memory_mb("VmRSS"),
                "peak_rss_mb": gateway.meter.memory_mb("VmHWM"),
            }
        finally:
            await load.stop()
            await gateway.stop()
        self.say(
            f"{pages} cached pages ({read} V3 reads, {again} when repeated): "
            f"RSS {self.memory['rss_mb']:.1f} MB, peak {self.memory['peak_rss_mb']:.1f} MB "
            f"(idle {idle:.1f} MB)"
        )


def _command(
    target: dict[str, Any], concurrency: int, requests: int, duration_s: float, minimum: int
) -> dict[str, Any]:
    return {
        "target": target,
        "concurrency": concurrency,
        "requests": requests,
        "duration_s": duration_s,
        "min_requests": minimum,
    }


async def run(options: Options, say: Progress, launcher: Launcher | None = None) -> Run:
    """Measure everything `options` asks for; the Run holds the figures.

    Without a `launcher`, every part runs in its own process.
    """
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        bench = Run(options, say, http, launcher or ProcessLauncher(options.out / "logs", http))
        await bench.execute()
    return bench
