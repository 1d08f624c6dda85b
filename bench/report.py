"""The figures of a run as ratios to the limit, the targets, JSON, a markdown table and a chart."""

from __future__ import annotations

import math
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .run import LIMIT, MODE_NOTES, Options, Run

RATIOS = {  # ratio name -> row figure
    "p50": "p50_ms",
    "p95": "p95_ms",
    "p99": "p99_ms",
    "rps": "rps",
    "calls": "calls_per_request",
    "cpu": "cpu_ms_per_request",
}


def _ratio(value: float, base: float) -> float | None:
    if base == 0 or math.isnan(base) or math.isnan(value):
        return None
    return value / base


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Set each row's `ratio`: every figure divided by the limit's (same workload, concurrency)."""
    limits = {(r["workload"], r["concurrency"]): r for r in rows if r["mode"] == LIMIT}
    for row in rows:
        base = limits.get((row["workload"], row["concurrency"]))
        row["ratio"] = (
            {name: _ratio(row[key], base[key]) for name, key in RATIOS.items()} if base else {}
        )


def _row(rows: list[dict[str, Any]], mode: str, workload: str, c: int) -> dict[str, Any] | None:
    for row in rows:
        if (row["mode"], row["workload"], row["concurrency"]) == (mode, workload, c):
            return row
    return None


def targets(bench: Run) -> list[dict[str, Any]]:
    """The issue's targets that this run measured, each with its figure and verdict."""
    rows = bench.rows
    found: list[dict[str, Any]] = []

    def add(name: str, value: float | None, bound: float, *, at_least: bool = False,
            note: str = "") -> None:  # fmt: skip
        if value is None:
            return
        met = value >= bound if at_least else value <= bound
        found.append({"target": name, "value": value, "bound": bound,
                      "at_least": at_least, "met": met, "note": note})  # fmt: skip

    def calls(row: dict[str, Any], upstream: str) -> float:
        return float(row["upstream_calls"].get(upstream, 0.0))

    if row := _row(rows, "cache-cold", "W50", 1):
        add("W50 cache-cold c=1 p50 / limit", row["ratio"].get("p50"), 1.25)
        add("W50 cache-cold c=1 p95 / its p50", _ratio(row["p95_ms"], row["p50_ms"]), 1.5)
        add("W50 cache-cold c=1 gateway CPU / the limit client's", row["ratio"].get("cpu"), 3.0)
    if row := _row(rows, "cache-cold", "W200", 1):
        add("W200 cache-cold c=1 p50 / limit", row["ratio"].get("p50"), 1.5)
    if row := _row(rows, "cache-cold", "W50-history", 1):
        add("W50-history cache-cold c=1 p50 / limit", row["ratio"].get("p50"), 1.3,
            note=f"{calls(row, 'v3'):.0f} V3 reads per request for 50 listings")  # fmt: skip
    if row := _row(rows, "warm", "W50", 1):
        add("W50 warm c=1 p50 / limit", row["ratio"].get("p50"), 1.0,
            note=f"{calls(row, 'legacy'):.0f} legacy and {calls(row, 'v3'):.0f} V3 calls per request")  # fmt: skip
    if row := _row(rows, "warm", "W200", 1):
        add("W200 warm c=1 p50 / limit", row["ratio"].get("p50"), 1.5)
    if row := _row(rows, "warm", "W1", 16):
        add("W1 warm c=16 req/s / limit", row["ratio"].get("rps"), 1.0, at_least=True)
    row, before = _row(rows, "warm", "W50", 16), _row(rows, "graphql-core", "W50", 16)
    if row and before:
        add("W50 warm c=16 req/s / graphql-core execution", _ratio(row["rps"], before["rps"]),
            3.0, at_least=True, note="same run, compiled execution off")  # fmt: skip
    for entry in bench.first:
        add(f"first request {entry['workload']} / its steady p50", entry["ratio"], 2.0)
    if bench.memory:
        add(f"peak RSS MB with {bench.memory['cached_pages']} cached pages",
            bench.memory["peak_rss_mb"], 150.0)  # fmt: skip
    return found


def results(bench: Run, options: Options, command: str) -> dict[str, Any]:
    add_ratios(bench.rows)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "options": {
            "latency_ms": options.latency_ms,
            "duration_s": options.duration_s,
            "requests": options.requests,
            "concurrency": list(options.concurrency),
        },
        "modes": {mode: MODE_NOTES[mode] for mode in options.modes},
        "gateways": bench.gateways,
        "rows": bench.rows,
        "first_request": bench.first,
        "memory": bench.memory,
        "targets": targets(bench),
    }


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    try:
        with open("/proc/loadavg") as loadavg:
            load = loadavg.read().split()[:3]
    except OSError:
        load = []
    import os

    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average": load,
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "| workload | mode | c | p50 ms | p95 ms | p99 ms | req/s | errors | upstream calls/req "
        "| legacy calls/req | CPU ms/req | peak RSS MB | p50 x limit | p99 x limit "
        "| req/s x limit | CPU x limit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in data["rows"]:
        ratio = row.get("ratio", {})
        limit = row["mode"] == LIMIT
        lines.append(
            f"| {row['workload']} | {row['mode']} | {row['concurrency']} | {_fmt(row['p50_ms'])} "
            f"| {_fmt(row['p95_ms'])} | {_fmt(row['p99_ms'])} | {_fmt(row['rps'])} "
            f"| {row['errors']} | {_fmt(row['calls_per_request'])} "
            f"| {_fmt(row['upstream_calls'].get('legacy'), 3)} "
            f"| {_fmt(row['cpu_ms_per_request'])} | {_fmt(row['peak_rss_mb'], 0)} | "
            + " | ".join("" if limit else _x(ratio.get(k)) for k in ("p50", "p99", "rps", "cpu"))
            + " |"
        )
    out = ["\n".join(lines)]
    if data["first_request"]:
        out.append(
            "| first request | fresh process up in s | first ms | steady p50 ms | first x steady |\n"
            "| --- | ---: | ---: | ---: | ---: |\n"
            + "\n".join(
                f"| {e['workload']} | {_fmt(e['start_s'])} | {_fmt(e['first_ms'])} "
                f"| {_fmt(e['steady_p50_ms'])} | {_x(e['ratio'])} |"
                for e in data["first_request"]
            )
        )
    if memory := data["memory"]:
        out.append(
            f"Memory: {memory['cached_pages']} cached V3 pages ({memory['v3_reads']} V3 reads to "
            f"fill, {memory['v3_reads_when_repeated']} when 1000 of them are asked again): RSS "
            f"{memory['rss_mb']:.1f} MB, peak {memory['peak_rss_mb']:.1f} MB "
            f"(idle gateway {memory['idle_rss_mb']:.1f} MB)."
        )
    if data["targets"]:
        out.append(
            "| target | measured | bound | met |\n| --- | ---: | ---: | --- |\n"
            + "\n".join(
                f"| {t['target']}{' (' + t['note'] + ')' if t['note'] else ''} "
                f"| {t['value']:.2f} | {'≥' if t['at_least'] else '≤'} {t['bound']:g} "
                f"| {'yes' if t['met'] else '**no**'} |"
                for t in data["targets"]
            )
        )
    return "\n\n".join(out) + "\n"


def chart(data: dict[str, Any], path: Path) -> None:
    """p50 at c=1 and req/s at the highest concurrency against listings, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    levels = sorted({r["concurrency"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [(axes[0], levels[0], "p50_ms", "p50 latency, ms"),
              (axes[1], levels[-1], "rps", "requests/s")]  # fmt: skip
    for axis, level, key, label in panels:
        for mode in data["modes"]:
            points = sorted(
                (r["listings"], r[key])
                for r in rows
                if r["mode"] == mode
                and r["concurrency"] == level
                and r["workload"] != "W50-history"
            )
            if not points:
                continue
            line = axis.plot(*zip(*points, strict=True), marker="o", label=mode)[0]
            history = [r[key] for r in rows if r["mode"] == mode and r["concurrency"] == level
                       and r["workload"] == "W50-history"]  # fmt: skip
            if history:
                axis.plot([50], history, marker="^", color=line.get_color(), linestyle="none")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("listings per query (▲ = W50-history)")
        axis.set_ylabel(label)
        axis.set_title(f"{label} at concurrency {level}")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    options = data["options"]
    fig.suptitle(
        f"Listing Status Gateway vs the direct-call limit — {options['latency_ms']:g} ms upstream "
        f"latency, {data['machine']['cpus']} cores",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(data: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "chart": out / "latency.png",
    }
    paths["json"].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    paths["markdown"].write_text(markdown(data), encoding="utf-8")
    chart(data, paths["chart"])
    return paths
