"""A burst of heavy requests against one `gateway serve` with its default admission control.

    uv run python -m bench.overload [--clients 96] [--listings 200] [--rounds 1] [--cold]

Starts the simulator (20 ms per answer) and one `gateway serve` as separate processes, makes
`--listings` listings (each client its own with `--distinct`), then has `--clients` clients
each send `--rounds` requests for them, all at once. Prints how the requests ended — whole answers, answers with some field failed
(an upstream read that timed out), fast refusals (503 `OVERLOADED`), and clients that gave
up waiting (after `--client-timeout` seconds, 30) — with their latencies, and the limit
admission control settled on. What the gateway must show: every request answered with data
or a fast 503, none left hanging. `--set NAME=VALUE` passes a GATEWAY_* setting.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

from .processes import ProcessLauncher
from .run import percentile
from .workloads import Workload


async def _one(
    http: aiohttp.ClientSession, url: str, body: bytes, timeout_s: float, listings: int
) -> tuple[str, float]:
    """How one request ended, and after how many seconds."""
    started = time.perf_counter()
    try:
        async with http.post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            answer = orjson.loads(await response.read())
            status = response.status
    except TimeoutError:
        return "client timeout", time.perf_counter() - started
    elapsed = time.perf_counter() - started
    if status == 503:
        return "503 OVERLOADED", elapsed
    data = answer.get("data") or {}
    if status != 200 or len(data.get("listings") or ()) != listings:
        errors = answer.get("errors") or [{}]
        code = (errors[0].get("extensions") or {}).get("code", "")
        why = code or f"{len(data.get('listings') or ())} of {listings} listings"
        return f"HTTP {status} {why}", elapsed
    return ("200 partial" if answer.get("errors") else "200 whole"), elapsed


async def run(args: argparse.Namespace) -> int:
    settings = {"GATEWAY_MAX_LISTINGS": str(max(200, args.listings)),
                "GATEWAY_MAX_UPSTREAM_COST": "100000"}  # fmt: skip
    if args.cold:
        settings["GATEWAY_CACHE_TTL_S"] = "0"
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name] = value
    logs = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        launch = ProcessLauncher(logs, http)
        sim = await launch.simulator(args.latency_ms)
        try:
            count = args.listings * (args.clients if args.distinct else 1)
            listings = await sim.add_listings(http, count, max(1, count // 50))
            size = args.listings
            workload = Workload("overload", size, 1)
            requests = [
                workload.body(listings[i * size : (i + 1) * size] if args.distinct else listings)
                for i in range(args.clients)
            ]
            gateway = await launch.gateway("overload", sim, settings)
            try:
                outcomes: list[tuple[str, float]] = []
                cpu_before = gateway.meter.cpu_s()
                started = time.perf_counter()
                for _ in range(args.rounds):
                    outcomes += await asyncio.gather(
                        *(
                            _one(http, gateway.url, body, args.client_timeout, size)
                            for body in requests
                        )
                    )
                wall = time.perf_counter() - started
                cpu = gateway.meter.cpu_s() - cpu_before
                async with http.get(gateway.url.replace("/graphql", "/metrics")) as response:
                    metrics = await response.text()
            finally:
                await gateway.stop()
        finally:
            await sim.stop()
    limit = next(
        (
            line.split()[-1]
            for line in metrics.splitlines()
            if line.startswith("gateway_admission_limit ")
        ),
        "?",
    )
    print(
        f"{args.clients} clients x {args.rounds} requests of {size} "
        f"{'distinct ' if args.distinct else ''}listings "
        f"({'cache-cold' if args.cold else 'V3 cache on'}, upstream {args.latency_ms:g} ms): "
        f"{wall:.1f} s, gateway CPU {cpu:.1f} s, admission limit at the end {limit}"
    )
    counts = Counter(kind for kind, _ in outcomes)
    print(f"{'outcome':<24}{'requests':>9}{'p50 s':>9}{'max s':>9}")
    for kind, count in counts.most_common():
        seconds = [s for k, s in outcomes if k == kind]
        print(f"{kind:<24}{count:>9}{statistics.median(seconds):>9.2f}{max(seconds):>9.2f}")
    answered = [s for k, s in outcomes if k != "client timeout"]
    if answered:
        print(f"all answered requests: p99 {percentile(answered, 99):.2f} s")
    return 1 if counts["client timeout"] or any(k.startswith("HTTP") for k in counts) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--clients", type=int, default=96)
    parser.add_argument("--listings", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--client-timeout", type=float, default=30.0)
    parser.add_argument("--cold", action="store_true", help="no V3 page cache")
    parser.add_argument(
        "--distinct", action="store_true", help="each client asks for listings of its own"
    )
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
