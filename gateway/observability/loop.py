"""Event-loop lag: how late a periodic probe runs, a direct measure of a busy loop.

When the loop is busy (large responses being built), upstream deadlines and socket reads
are served late; this gauge shows it before callers time out. Standard library only.
"""

from __future__ import annotations

import asyncio

from gateway.observability.metrics import Metrics

__all__ = ["watch_loop_lag"]


async def watch_loop_lag(metrics: Metrics, interval_s: float) -> None:
    """Measure lag every `interval_s` until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        lag = max(0.0, loop.time() - started - interval_s)
        metrics.loop_lag.set(lag)
        metrics.loop_lag_seconds.observe(lag)
