"""Shared fixtures: a running upstream simulator on a free loopback port."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis_harness import RunningRedis, run_redis

from gateway.simulator import RunningSimulator, Simulator

from gateway_harness import RunningGateway, run_gateway

# pytest keeps its assertion-rewritten test modules in __pycache__, unless the environment
# says PYTHONDONTWRITEBYTECODE (as on the CI machines): then every worker would rewrite all
# test files again, ~5 s of CPU each. Only this process's test modules are concerned.
sys.dont_write_bytecode = False

# Tests count upstream calls from the first request on; the start-up warm-up (a V3 token
# fetch) is tested on its own in test_warmup.py.
os.environ.setdefault("GATEWAY_WARM_UP", "false")


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    """Both upstream APIs served over real HTTP (seed 7); `.sim` reaches the `Simulator`."""
    async with Simulator(seed=7).serve() as running:
        yield running


@pytest.fixture
async def gateway(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    """The real gateway (uvicorn on a free loopback port) wired to `simulator`, agency-1."""
    async with run_gateway(simulator) as running:
        yield running


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RunningRedis]:
    """A private redis-server on a unix socket under `tmp_path` (no TCP port)."""
    async with run_redis(tmp_path) as running:
        yield running
