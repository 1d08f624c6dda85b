"""The child processes: the simulator, gateways and load generators, each on its own.

Each child binds its own port (port 0) and prints its address; nothing probes for a free
port. A child's stderr goes to a log file beside the results, for when one fails.
`Launcher` is what a run needs from them; `ProcessLauncher` is the real one (a test may run
the same parts in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import aiohttp
import orjson

from gateway.simulator import SIM_AUDIENCE, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_LEGACY_API_KEY

from .workloads import Listing

GATEWAY = str(Path(sys.executable).parent / "gateway")
# A Node GraphQL gateway over the same upstreams (bench/node, `npm ci --prefix bench/node`).
NODE_GATEWAY = Path(__file__).parent / "node" / "server.mjs"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_S = 120


@dataclass(frozen=True, slots=True)
class Meter:
    """CPU time and memory of one process, from /proc."""

    pid: int

    def cpu_s(self) -> float:
        """User plus system CPU time so far."""
        with open(f"/proc/{self.pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def tree_cpu_s(self) -> float:
        """`cpu_s` of this process and all its descendants (`gateway serve --workers N`'s
        fork server and the workers it forked)."""
        children: dict[int, list[tuple[int, float]]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            children.setdefault(int(fields[1]), []).append((int(entry), cpu))
        total = self.cpu_s()
        parents = [self.pid]
        while parents:
            for child, cpu in children.get(parents.pop(), ()):
                total += cpu
                parents.append(child)
        return total

    def memory_mb(self, field: str = "VmHWM") -> float:
        """`VmHWM` (peak resident set) or `VmRSS` (now), in MB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"{field} not in /proc/{self.pid}/status")


@dataclass
class Simulator:
    base_url: str
    stop: Callable[[], Awaitable[None]]
    meter: Meter | None = None  # its process, when it has one of its own

    async def add_listings(
        self, http: aiohttp.ClientSession, count: int, users: int
    ) -> list[Listing]:
        """`count` new listings of `users` legacy users, made by the simulator."""
        body = {"count": count, "users": users, "tenant": "agency-1"}
        async with http.post(f"{self.base_url}/_sim/listings", json=body) as response:
            response.raise_for_status()
            made = (await response.json())["listings"]
        return [Listing(m["classifiedId"], m["userId"], m["adId"]) for m in made]

    @property
    def v3_url(self) -> str:
        return f"{self.base_url}/v3"

    @property
    def legacy_url(self) -> str:
        return f"{self.base_url}/legacy/rest/v1"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    def gateway_env(self) -> dict[str, str]:
        """The settings `gateway demo` uses, as GATEWAY_* variables."""
        return {
            "GATEWAY_V3_URL": self.v3_url,
            "GATEWAY_V3_AUTH": "oauth",
            "GATEWAY_V3_TOKEN_URL": self.token_url,
            "GATEWAY_V3_CLIENT_ID": SIM_CLIENT_ID,
            "GATEWAY_V3_CLIENT_SECRET": SIM_CLIENT_SECRET,
            "GATEWAY_V3_AUDIENCE": SIM_AUDIENCE,
            "GATEWAY_V3_INTERMEDIARY_ID": "agency-1",
            "GATEWAY_LEGACY_URL": self.legacy_url,
            "GATEWAY_LEGACY_API_KEY": SIM_LEGACY_API_KEY,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_HTTP_PORT": "0",
            "GATEWAY_GRPC_PORT": "0",
        }


@dataclass
class Gateway:
    url: str  # .../graphql
    started_s: float  # from start to its first answer (GET /healthz)
    meter: Meter
    stop: Callable[[], Awaitable[None]]
    # Reads the gateway's output until a line matches (e.g. "All 2 workers serving").
    wait_for_line: Callable[[str], Awaitable[object]] | None = None


@dataclass(kw_only=True)
class Tally:
    """One side of a comparison measured in slices: its answers and their wall time."""

    answers: int = 0
    wall_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.answers / self.wall_s

    def add(self, result: dict[str, Any], who: str = "") -> None:
        """Count one slice's `bench.load` answer; an error spoils the comparison."""
        if result["errors"]:
            raise RuntimeError(f"{who}{result['first_error']}")
        self.answers += len(result["latencies_ms"])
        self.wall_s += result["wall_s"]


class Load(Protocol):
    """A load generator: runs one `bench.load` command at a time."""

    async def run(self, command: dict[str, Any]) -> dict[str, Any]: ...

    async def stop(self) -> None: ...


class Launcher(Protocol):
    async def simulator(self, latency_ms: float) -> Simulator: ...

    async def gateway(self, name: str, sim: Simulator, settings: dict[str, str]) -> Gateway: ...

    async def load(self, name: str) -> Load: ...


@dataclass
class Child:
    """A running child process."""

    name: str
    process: asyncio.subprocess.Process
    log: IO[bytes]

    async def read_until(self, pattern: str) -> re.Match[str]:
        """Read stdout lines until one matches `pattern` (the child's banner)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(STARTUP_S):
            while line := await self.process.stdout.readline():
                if match := re.search(pattern, line.decode()):
                    return match
        raise RuntimeError(f"{self.name} stopped before saying {pattern!r}: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as log:
            return log.read()[-2000:].decode(errors="replace")

    async def stop(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.log.close()


def _log_file(logs: Path, name: str) -> IO[bytes]:
    logs.mkdir(parents=True, exist_ok=True)
    return open(logs / f"{name}.log", "wb")  # closed by Child.stop


class ProcessLauncher:
    """Every part in its own process: `gateway simulate`, `gateway serve`, `bench.load`."""

    def __init__(self, logs: Path, http: aiohttp.ClientSession) -> None:
        self.logs = logs
        self.http = http

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = _log_file(self.logs, name)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
            limit=64 * 1024 * 1024,
        )
        return Child(name, process, log)

    async def simulator(self, latency_ms: float) -> Simulator:
        child = await self._spawn(
            "simulator", [GATEWAY, "simulate", "--port", "0", "--latency-ms", str(latency_ms)]
        )
        match = await child.read_until(r"Simulator listening on (http://127\.0\.0\.1:\d+)")
        await child.read_until("Press Ctrl-C")
        return Simulator(match.group(1), child.stop, Meter(child.process.pid))

    async def gateway(self, name: str, sim: Simulator, settings: dict[str, str]) -> Gateway:
        """`gateway serve` against `sim`; returns once it has answered GET /healthz."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env |= sim.gateway_env() | settings
        loop = asyncio.get_running_loop()
        begun = loop.time()
        child = await self._spawn(name, [GATEWAY, "serve", "--log-level", "warning"], env)
        try:
            match = await child.read_until(r"listening on (http://127\.0\.0\.1:\d+)/graphql")
            base = match.group(1)
            # The socket is bound before the banner: this waits for the app, it does not probe.
            async with self.http.get(f"{base}/healthz") as response:
                response.raise_for_status()
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
            await child.stop()
            raise RuntimeError(f"gateway {name} did not start ({exc}): {child.tail()}") from exc
        return Gateway(
            f"{base}/graphql",
            loop.time() - begun,
            Meter(child.process.pid),
            child.stop,
            child.read_until,
        )

    async def node_gateway(self, name: str, sim: Simulator) -> Gateway:
        """`bench/node/server.mjs` against `sim`; returns once it accepts connections."""
        modules = NODE_GATEWAY.parent / "node_modules"
        if shutil.which("node") is None or not modules.is_dir():
            raise RuntimeError(
                "the Node gateway needs node and its packages: npm ci --prefix bench/node"
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_GATEWAY_")}
        env |= {
            "NODE_ENV": "production",
            "NODE_GATEWAY_PORT": "0",
            **{
                "NODE_" + key: value
                for key, value in sim.gateway_env().items()
                if key.startswith(("GATEWAY_V3_", "GATEWAY_LEGACY_")) and key != "GATEWAY_V3_AUTH"
            },
        }
        loop = asyncio.get_running_loop()
        begun = loop.time()
        child = await self._spawn(name, ["node", str(NODE_GATEWAY)], env)
        try:
            match = await child.read_until(r"listening on (http://127\.0\.0\.1:\d+/graphql)")
        except (RuntimeError, TimeoutError) as exc:
            await child.stop()
            raise RuntimeError(
                f"Node gateway {name} did not start ({exc}): {child.tail()}"
            ) from exc
        return Gateway(
            match.group(1), loop.time() - begun, Meter(child.process.pid), child.stop, None
        )

    async def load(self, name: str) -> LoadProcess:
        return LoadProcess(await self._spawn(name, [sys.executable, "-m", "bench.load"]))


class LoadProcess:
    """`python -m bench.load` in its own process, one command at a time."""

    def __init__(self, child: Child) -> None:
        self.child = child

    @property
    def pid(self) -> int:
        return self.child.process.pid

    async def run(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.child.process.stdin, self.child.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(orjson.dumps(command) + b"\n")
        await stdin.drain()
        line = await stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator stopped: {self.child.tail()}")
        result: dict[str, Any] = orjson.loads(line)
        return result

    async def stop(self) -> None:
        stdin = self.child.process.stdin
        if stdin is not None:
            stdin.close()  # its end of input: it closes its sessions and exits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.child.process.wait(), 10)
        await self.child.stop()
