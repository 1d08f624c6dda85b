"""A private `redis-server` for tests: a unix socket in a temporary directory, no TCP.

`redis-server` logs a line when it accepts connections; the harness waits for that line
(and one PING) instead of polling a port. `stop()` and `start()` let a test take Redis away
and bring it back on the same socket.

The server is Debian's `redis-server` (as in CI). A fresh machine may not have it: then it is
installed once for the run where the tests are root beside apt-get, and otherwise the Redis
tests skip with the line saying what to install; in CI (`CI=true`) they fail instead, so CI
keeps running all of them (see `system_parts.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from system_parts import missing, require_program

READY_LINE = b"ready to accept connections"
INSTALL = "apt-get install redis-server"


def find_redis_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """redis-server's path, installed once for the run if it can be; else skip (fail in CI)."""
    return require_program(
        "redis-server", INSTALL, apt_package="redis-server", tmp_path_factory=tmp_path_factory
    )


class RunningRedis:
    """One redis-server process on `socket`; `url` is what GATEWAY_REDIS_URL takes."""

    def __init__(self, directory: Path, executable: str | None = None) -> None:
        self.directory = directory
        self.executable = executable
        self.socket = directory / "redis.sock"
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url)

    async def start(self) -> None:
        executable = self.executable or shutil.which("redis-server")
        if executable is None:
            missing("redis-server", INSTALL)
        process = await asyncio.create_subprocess_exec(
            executable,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert process.stdout is not None
        seen = b""
        while READY_LINE not in seen.lower():
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"redis-server exited before it was ready:\n{seen.decode()}")
            seen += line
        self._process = process
        self._drain = asyncio.create_task(self._read_rest(process))
        async with self.client() as client:
            assert await client.ping()

    @staticmethod
    async def _read_rest(process: asyncio.subprocess.Process) -> None:
        # Keeps the pipe from filling up while the server runs.
        assert process.stdout is not None
        while await process.stdout.readline():
            pass

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
        if self._drain is not None:
            await self._drain


@asynccontextmanager
async def run_redis(directory: Path, executable: str | None = None) -> AsyncIterator[RunningRedis]:
    running = RunningRedis(directory, executable)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
