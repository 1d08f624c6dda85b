"""`uv run python -m bench [--quick]`: the gateway measured beside the direct-call limit.

Starts the upstream simulator (`gateway simulate`, 20 ms per answer), one `gateway serve`
per mode and a load generator (`python -m bench.load`) as separate processes on 127.0.0.1,
prints a line per measurement, then the table; writes results.json, results.md and
latency.png to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .report import markdown, results, write
from .run import MODES, Options, run
from .workloads import WORKLOADS


def _names(allowed: Mapping[str, object]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)}; known: {', '.join(allowed)}"
            )
        return names

    return parse


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short measurements, no W1000, c>1 and naive mode up to 50 listings (under 2 minutes)",
    )
    parser.add_argument(
        "--workloads", type=_names(WORKLOADS), help=f"comma-separated: {','.join(WORKLOADS)}"
    )
    parser.add_argument("--modes", type=_names(MODES), help=f"comma-separated: {','.join(MODES)}")
    parser.add_argument("--concurrency", type=_ints, default=(1, 16), help="comma-separated (1,16)")
    parser.add_argument("--duration", type=float, help="seconds per measurement (5; quick 0.7)")
    parser.add_argument(
        "--requests", type=int, help="most requests per measurement (2000; quick 300)"
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated upstream latency")
    parser.add_argument(
        "--cached-pages",
        type=int,
        help="pages cached for the memory figure (10000; quick 1000; 0: skip)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where results go")
    parser.add_argument(
        "--client",
        choices=["aiohttp", "raw"],
        default="aiohttp",
        help="how the load generator calls the gateway: aiohttp's client, or the lean raw "
        "HTTP/1.1 client that takes a tenth of its CPU (bench/rawhttp.py)",
    )
    args = parser.parse_args(argv)
    workloads = args.workloads or tuple(w for w in WORKLOADS if not args.quick or w != "W1000")
    return Options(
        latency_ms=args.latency_ms,
        workloads=workloads,
        modes=args.modes or tuple(MODES),
        concurrency=args.concurrency,
        duration_s=args.duration if args.duration is not None else (0.7 if args.quick else 5.0),
        requests=args.requests or (300 if args.quick else 2000),
        first_request=("W50",) if args.quick else workloads,
        cached_pages=args.cached_pages
        if args.cached_pages is not None
        else (1000 if args.quick else 10_000),
        out=args.out,
        client=args.client,
        warmup=1 if args.quick else 2,
        min_requests=1 if args.quick else 3,
        wide_max_listings=50 if args.quick else None,
        naive_max_listings=50 if args.quick else None,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    command = "uv run python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s  {line}", flush=True)

    say(f"simulator latency {options.latency_ms:g} ms; modes {', '.join(options.modes)}")
    bench = asyncio.run(run(options, say))
    data = results(bench, options, command.strip())
    paths = write(data, options.out)
    print()
    print(markdown(data))
    say(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
