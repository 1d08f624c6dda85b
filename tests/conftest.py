"""Shared fixtures: a running upstream simulator on a free loopback port."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from system_parts import summary

if TYPE_CHECKING:
    from redis_harness import RunningRedis

    from gateway.simulator import RunningSimulator

    from gateway_harness import RunningGateway

# The gateway, the simulator and the harnesses are imported by the fixtures that use them,
# not here: the xdist controller, which runs no test, loads this file before it starts the
# workers, and importing them there held every worker back by ~0.8 s.

# pytest keeps its assertion-rewritten test modules in __pycache__, unless the environment
# says PYTHONDONTWRITEBYTECODE (as on the CI machines): then every worker would rewrite all
# test files again, ~5 s of CPU each. Only this process's test modules are concerned.
sys.dont_write_bytecode = False

# Tests count upstream calls from the first request on; the start-up warm-up (a V3 token
# fetch) is tested on its own in test_warmup.py.
os.environ.setdefault("GATEWAY_WARM_UP", "false")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (the default in pyproject.toml): one worker per core, and one more.

    With a worker per core, a worker ran on its own CPU for about half the time its tests
    took; the rest it waited for other processes (Chromium, `gateway` commands, Node) and for
    deadlines on real sockets. A worker more fills those waits: on two cores, three workers
    ran the suite in 55-65 s where two took 63-74 s (three pairs, alternating), and four in
    60-64 s."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own reading of the variable
    return len(os.sched_getaffinity(0)) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # A plain machine skips the tests whose program it lacks: say once what to install.
    summary(terminalreporter)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    """Both upstream APIs served over real HTTP (seed 7); `.sim` reaches the `Simulator`."""
    from gateway.simulator import Simulator

    async with Simulator(seed=7).serve() as running:
        yield running


@pytest.fixture
async def gateway(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    """The real gateway (uvicorn on a free loopback port) wired to `simulator`, agency-1."""
    from gateway_harness import run_gateway

    async with run_gateway(simulator) as running:
        yield running


@pytest.fixture(scope="session")
def redis_executable(tmp_path_factory: pytest.TempPathFactory) -> str:
    """redis-server's path: found, or installed once for the run; else the test is skipped
    with what to install (failed in CI, which installs it)."""
    from redis_harness import find_redis_server

    return find_redis_server(tmp_path_factory)


@pytest.fixture
async def redis_server(redis_executable: str, tmp_path: Path) -> AsyncIterator[RunningRedis]:
    """A private redis-server on a unix socket under `tmp_path` (no TCP port)."""
    from redis_harness import run_redis

    async with run_redis(tmp_path, redis_executable) as running:
        yield running
