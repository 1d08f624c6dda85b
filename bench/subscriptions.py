"""Memory of idle GraphQL subscriptions in one `gateway serve`.

    uv run python -m bench.subscriptions [--sockets 100] [--per-socket 20] [--ids 1]

Starts the simulator and one `gateway serve` as separate processes, opens `--sockets`
graphql-transport-ws connections and `--per-socket` `listingChanged` and
`classifiedStatusChanged` subscriptions on each (alternately, each watching `--ids` listings),
waits until the gateway counts them all, and prints the gateway's resident memory before and
after and per idle subscription (connections included). DESIGN's bound: ≤ 8 KB each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
from pathlib import Path

import aiohttp

from .processes import ProcessLauncher

WATCH_STATUS = (
    "subscription($ids: [ID!]) { classifiedStatusChanged(classifiedIds: $ids) "
    "{ classifiedId status { status } } }"
)
WATCH_LISTINGS = (
    "subscription($refs: [ListingRef!]!) { listingChanged(refs: $refs) "
    "{ cursor provider changedPortals listing { id } } }"
)


async def _subscribed(
    http: aiohttp.ClientSession, url: str, per_socket: int, ids: int, offset: int
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url, protocols=("graphql-transport-ws",))
    await ws.send_json({"type": "connection_init", "payload": {}})
    ack = await ws.receive_json()
    assert ack["type"] == "connection_ack", ack
    for n in range(per_socket):
        chosen = [f"c-{offset + n}-{i}" for i in range(ids)]
        if n % 2:
            payload = {"query": WATCH_STATUS, "variables": {"ids": chosen}}
        else:
            refs = [{"classifiedId": c} for c in chosen]
            payload = {"query": WATCH_LISTINGS, "variables": {"refs": refs}}
        await ws.send_json({"id": str(n), "type": "subscribe", "payload": payload})
    return ws


async def _subscribers(http: aiohttp.ClientSession, metrics_url: str) -> float:
    async with http.get(metrics_url) as response:
        text = await response.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gateway_event_subscribers ")
    )


async def run(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="bench-subscriptions-"))
    wanted = args.sockets * args.per_socket
    settings = {
        "GATEWAY_MAX_SUBSCRIPTIONS_PER_CONNECTION": str(args.per_socket),
        "GATEWAY_MAX_SUBSCRIPTIONS": str(max(10_000, wanted)),
        "GATEWAY_WARM_UP": "false",
    }
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        launch = ProcessLauncher(logs, http)
        sim = await launch.simulator(0)
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        try:
            gateway = await launch.gateway("subscriptions", sim, settings)
            metrics_url = gateway.url.replace("/graphql", "/metrics")
            try:
                # One connection and one of each subscription first, so what is made once
                # per process (compiled plans, the change feed) is not counted per subscription.
                sockets.append(await _subscribed(http, gateway.url, 2, args.ids, 0))
                while await _subscribers(http, metrics_url) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                before = gateway.meter.memory_mb("VmRSS")
                for s in range(args.sockets):
                    offset = (s + 1) * args.per_socket
                    sockets.append(
                        await _subscribed(http, gateway.url, args.per_socket, args.ids, offset)
                    )
                # Nothing announces a subscription as set up but the gateway's own count.
                while await _subscribers(http, metrics_url) < wanted + 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                after = gateway.meter.memory_mb("VmRSS")
            finally:
                for ws in sockets:
                    await ws.close()
                await gateway.stop()
        finally:
            await sim.stop()
    gc.collect()
    grown_kb = (after - before) * 1024
    print(
        f"{args.sockets} sockets x {args.per_socket} idle subscriptions ({args.ids} id each): "
        f"gateway RSS {before:.1f} -> {after:.1f} MB, "
        f"{grown_kb / wanted:.1f} KB per subscription (its socket's share included)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.subscriptions", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--per-socket", type=int, default=20)
    parser.add_argument("--ids", type=int, default=1)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
